// The hand-written scanners and encoders the envelope relies on, checked against JSON.parse,
// JSON.stringify and Buffer on generated inputs (seeded, so failures reproduce).
import t from 'tap';
import { base64urlLength, decodeBase64, decodeBase64url, duplicateMember, jsonString, memberCount } from '../../src/bus/envelope/encoding.js';

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = Number(process.env.ENVELOPE_JSON_SEED ?? 7);
const rnd = prng(SEED);
const int = (n: number): number => Math.floor(rnd() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

const ws = (): string => (rnd() < 0.7 ? '' : pick([' ', '\n', '\t', '\r\n  ', '   ']));
const PIECES = ['a', 'Z', '0', ' ', '"', '\\', '/', '\n', '\t', '\u0001', 'é', '€', '😀', '{', '}', '[', ']', ',', ':', '\\\\', '\\"'];

/** A random JS string, often with characters that need escaping; sometimes long (crosses the inline scan). */
function rawString(): string {
  const long = rnd() < 0.15;
  const n = long ? 60 + int(400) : int(12);
  let s = '';
  for (let i = 0; i < n; i++) s += rnd() < 0.6 ? 'x' : pick(PIECES);
  return s;
}

/** JSON text for a string, sometimes with gratuitous \\u escapes of ASCII letters. */
function stringText(s: string): string {
  const json = JSON.stringify(s);
  if (rnd() < 0.3) return json.replace(/[a-z]/g, (c) => (rnd() < 0.5 ? '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0') : c));
  return json;
}

function valueText(depth: number): string {
  const r = rnd();
  if (depth > 0 && r < 0.2) {
    const n = int(5);
    return '[' + ws() + Array.from({ length: n }, () => valueText(depth - 1)).join(ws() + ',' + ws()) + ws() + ']';
  }
  if (depth > 0 && r < 0.4) {
    const n = int(5);
    return '{' + ws() + Array.from({ length: n }, () => stringText(pick(['a', 'b', 'sub', 'iss', rawString()])) + ws() + ':' + ws() + valueText(depth - 1)).join(ws() + ',' + ws()) + ws() + '}';
  }
  if (r < 0.55) return pick(['0', '-1', '1.5e3', '12345678901234', 'true', 'false', 'null', '-0.25E-2']);
  return stringText(rawString());
}

const NAMES = ['iss', 'sub', 'aud', 'iat', 'exp', 'jti', 'dlg', 'data', 'data_b64', 'x', 'a"b', 'é', 'back\\slash'];

t.test('memberCount and duplicateMember agree with the generated structure', async (t) => {
  let withDup = 0;
  for (let c = 0; c < 3000; c++) {
    const n = int(9);
    const names: string[] = [];
    const members: string[] = [];
    for (let i = 0; i < n; i++) {
      const name = rnd() < 0.1 && names.length > 0 ? pick(names) : pick(NAMES);
      names.push(name);
      members.push(stringText(name) + ws() + ':' + ws() + valueText(3));
    }
    const text = ws() + '{' + ws() + members.join(ws() + ',' + ws()) + ws() + '}' + ws();
    const parsed = JSON.parse(text) as object;
    const distinct = new Set(names);
    const firstDup = names.find((nm, i) => names.indexOf(nm) !== i);
    if (firstDup !== undefined) withDup++;
    const count = memberCount(Buffer.from(text, 'utf8'));
    if (count !== n || Object.keys(parsed).length !== distinct.size || duplicateMember(text) !== firstDup) {
      t.fail(`case ${c} (seed ${SEED}): memberCount ${count} want ${n}; duplicateMember ${duplicateMember(text)} want ${firstDup}\n${text}`);
      return;
    }
  }
  t.ok(withDup > 100, `${withDup} texts had duplicates`);
});

t.test('memberCount: escapes at the inline/indexOf boundary', async (t) => {
  // Escaped quotes and backslash runs placed around the 64-byte switch to indexOf jumps, in
  // top-level and nested strings.
  for (let len = 55; len < 75; len++) {
    for (const tail of ['\\"', '\\\\', '\\\\\\"', '\\\\\\\\', 'x']) {
      const str = `"${'y'.repeat(len)}${tail}z"`;
      const text = `{"a":${str},"b":[${str},{"c":${str}}],"a":2}`;
      t.equal(Object.keys(JSON.parse(text) as object).length, 2);
      t.equal(memberCount(Buffer.from(text)), 3, `${len} ${tail}`);
    }
  }
});

t.test('jsonString is exactly JSON.stringify', async (t) => {
  const samples = ['', 'plain', 'x'.repeat(5000), '"quoted"'.repeat(40), 'back\\slash'.repeat(30), 'ctl\u0001\u001f'.repeat(30), '\u2028\u2029'.repeat(100), 'é€😀'.repeat(100), '\ud800' + 'a'.repeat(200), 'a'.repeat(200) + '\udfff', '\u007f'.repeat(300)];
  for (let i = 0; i < 500; i++) samples.push(rawString().repeat(1 + int(20)));
  for (const s of samples) {
    if (jsonString(s) !== JSON.stringify(s)) {
      t.fail(`jsonString differs for ${JSON.stringify(s).slice(0, 80)}`);
      return;
    }
  }
  t.pass(`${samples.length} strings`);
});

t.test('strict base64url / base64 decoding', async (t) => {
  for (let n = 0; n < 70; n++) {
    const bytes = Buffer.from(Array.from({ length: n }, () => int(256)));
    const u = bytes.toString('base64url');
    t.same(decodeBase64url(u), bytes);
    t.equal(base64urlLength(u), n);
    t.same(decodeBase64(bytes.toString('base64')), bytes);
    if (n > 0) {
      t.equal(decodeBase64url(u + '='), undefined, 'padding');
      t.equal(decodeBase64url(bytes.toString('base64').replace(/=+$/, '')) === undefined, /[+/]/.test(bytes.toString('base64')), 'standard alphabet refused');
      if (/[-_]/.test(u) || u.length % 4 !== 0) t.equal(decodeBase64(u), undefined, 'base64url is not base64 (alphabet, padding)');
      else t.same(decodeBase64(u), bytes, 'the same text in both alphabets');
      t.equal(base64urlLength(u + '.'), -1);
      t.equal(base64urlLength(' ' + u), -1);
    }
  }
  // Non-zero unused bits in the last character.
  t.equal(decodeBase64url('AB'), undefined);
  t.equal(base64urlLength('AB'), -1);
  t.equal(base64urlLength('AQ'), 1);
  t.equal(base64urlLength('AAB'), -1);
  t.equal(base64urlLength('AAE'), 2);
  t.equal(base64urlLength('A'), -1, 'length 1 mod 4');
  t.equal(decodeBase64url('AAAA\u0141AAA'), undefined, 'non-ASCII character with a base64 low byte');
  t.equal(decodeBase64url('AA AA'), undefined);
});
