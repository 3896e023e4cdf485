import t from 'tap';
import { SpiffeId, SpiffeIdError, TrustDomain, MAX_SPIFFE_ID_BYTES, MAX_TRUST_DOMAIN_BYTES } from '../../src/spiffe/index.js';

function problemOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof SpiffeIdError) return e.problem;
    throw e;
  }
  return undefined;
}

const td255 = 'a'.repeat(251) + '.org'; // 255 bytes
const prefix = `spiffe://example.org`;
// Fill a path so that the whole ID is exactly `n` bytes.
function idOfLength(n: number): string {
  const room = n - prefix.length - 1;
  return `${prefix}/${'x'.repeat(room)}`;
}

const valid: Array<[string, string, string]> = [
  // [input, trust domain, path]
  ['spiffe://example.org', 'example.org', ''],
  ['spiffe://example.org/agent', 'example.org', '/agent'],
  ['spiffe://example.org/agent/a', 'example.org', '/agent/a'],
  ['spiffe://example.org/Agent/A-b_c.d', 'example.org', '/Agent/A-b_c.d'],
  ['spiffe://td', 'td', ''],
  ['spiffe://1.2.3.4/x', '1.2.3.4', '/x'],
  ['spiffe://my-td_01.example/ns/default/sa/web', 'my-td_01.example', '/ns/default/sa/web'],
  ['spiffe://example.org/...', 'example.org', '/...'],
  ['spiffe://example.org/.hidden', 'example.org', '/.hidden'],
  ['spiffe://example.org/a..b', 'example.org', '/a..b'],
  ['spiffe://example.org/-/_/.x', 'example.org', '/-/_/.x'],
  ['spiffe://example.org/0123456789', 'example.org', '/0123456789'],
  [`spiffe://${td255}/x`, td255, '/x'],
  [`spiffe://${td255}`, td255, ''],
  [idOfLength(MAX_SPIFFE_ID_BYTES), 'example.org', idOfLength(MAX_SPIFFE_ID_BYTES).slice(prefix.length)],
];

const invalid: Array<[string, string]> = [
  ['', 'empty'],
  ['example.org/agent', 'wrong_scheme'],
  ['SPIFFE://example.org/agent', 'wrong_scheme'],
  ['Spiffe://example.org/agent', 'wrong_scheme'],
  ['https://example.org/agent', 'wrong_scheme'],
  ['spiffe:/example.org/agent', 'wrong_scheme'],
  ['spiffe:example.org', 'wrong_scheme'],
  [' spiffe://example.org/a', 'wrong_scheme'],
  ['spiffe://', 'missing_trust_domain'],
  ['spiffe:///agent', 'missing_trust_domain'],
  ['spiffe://Example.org/agent', 'bad_trust_domain_char'],
  ['spiffe://EXAMPLE.ORG', 'bad_trust_domain_char'],
  ['spiffe://exa mple.org/a', 'bad_trust_domain_char'],
  ['spiffe://exämple.org/a', 'bad_trust_domain_char'],
  ['spiffe://example.org*/a', 'bad_trust_domain_char'],
  ['spiffe://[::1]/a', 'port'],
  ['spiffe://user@example.org/a', 'userinfo'],
  ['spiffe://user:pass@example.org/a', 'userinfo'],
  ['spiffe://example.org:8443/a', 'port'],
  ['spiffe://example.org:/a', 'port'],
  ['spiffe://example.org/a?x=1', 'query'],
  ['spiffe://example.org?x', 'query'],
  ['spiffe://example.org/a#frag', 'fragment'],
  ['spiffe://example.org#', 'fragment'],
  ['spiffe://example.org/a%20b', 'percent_encoding'],
  ['spiffe://example.org/%2e%2e', 'percent_encoding'],
  ['spiffe://exa%6dple.org/a', 'percent_encoding'],
  ['spiffe://example.org/', 'trailing_slash'],
  ['spiffe://example.org/agent/', 'trailing_slash'],
  ['spiffe://example.org//agent', 'empty_segment'],
  ['spiffe://example.org/agent//a', 'empty_segment'],
  ['spiffe://example.org/.', 'dot_segment'],
  ['spiffe://example.org/..', 'dot_segment'],
  ['spiffe://example.org/agent/../admin', 'dot_segment'],
  ['spiffe://example.org/agent/./a', 'dot_segment'],
  ['spiffe://example.org/a b', 'bad_path_char'],
  ['spiffe://example.org/a*', 'bad_path_char'],
  ['spiffe://example.org/ä', 'bad_path_char'],
  ['spiffe://example.org/a:b', 'bad_path_char'],
  ['spiffe://example.org/a@b', 'bad_path_char'],
  ['spiffe://example.org/a+b', 'bad_path_char'],
  ['spiffe://example.org/a~b', 'bad_path_char'],
  ['spiffe://example.org/a\\b', 'bad_path_char'],
  [`spiffe://${'a'.repeat(252)}.org/x`, 'trust_domain_too_long'],
  [`spiffe://${'a'.repeat(252)}.org`, 'trust_domain_too_long'],
  [idOfLength(MAX_SPIFFE_ID_BYTES + 1), 'too_long'],
  [`${prefix}/${'é'.repeat(1100)}`, 'too_long'], // > 2048 bytes though < 2048 UTF-16 units
];

t.test('boundary fixtures are the sizes they claim', async (t) => {
  t.equal(Buffer.byteLength(td255), MAX_TRUST_DOMAIN_BYTES);
  t.equal(Buffer.byteLength(idOfLength(2048)), 2048);
  t.equal(Buffer.byteLength(idOfLength(2049)), 2049);
});

t.test('valid SPIFFE IDs', async (t) => {
  for (const [input, td, path] of valid) {
    const id = SpiffeId.parse(input);
    t.equal(id.trustDomain.name, td, `${input.slice(0, 60)}: trust domain`);
    t.equal(id.path, path, `${input.slice(0, 60)}: path`);
    t.equal(id.toString(), input, 'round-trips');
    t.equal(id.isRoot(), path === '');
  }
});

t.test('invalid SPIFFE IDs', async (t) => {
  for (const [input, problem] of invalid) {
    t.equal(problemOf(() => SpiffeId.parse(input)), problem, `${JSON.stringify(input.slice(0, 60))} → ${problem}`);
  }
});

t.test('non-string input', async (t) => {
  t.equal(problemOf(() => SpiffeId.parse(undefined as unknown as string)), 'not_a_string');
});

t.test('error shape', async (t) => {
  try {
    SpiffeId.parse('spiffe://example.org/../x');
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof SpiffeIdError);
    const err = e as SpiffeIdError;
    t.equal(err.code, 'invalid_spiffe_id');
    t.equal(err.problem, 'dot_segment');
    t.equal(err.name, 'SpiffeIdError');
    t.ok(err.message.length > 0);
  }
});

t.test('equality is exact and case-sensitive in the path', async (t) => {
  const a = SpiffeId.parse('spiffe://example.org/agent/a');
  t.ok(a.equals(SpiffeId.parse('spiffe://example.org/agent/a')));
  t.notOk(a.equals(SpiffeId.parse('spiffe://example.org/agent/A')));
  t.notOk(a.equals(SpiffeId.parse('spiffe://example.org/Agent/a')));
  t.notOk(a.equals(SpiffeId.parse('spiffe://example.com/agent/a')));
  t.notOk(a.equals(SpiffeId.parse('spiffe://example.org/agent/a/b')));
  t.notOk(a.equals('spiffe://example.org/agent/a'));
  t.same(a.segments(), ['agent', 'a']);
  t.same(SpiffeId.parse('spiffe://example.org').segments(), []);
});

t.test('TrustDomain', async (t) => {
  const td = TrustDomain.parse('example.org');
  t.equal(td.name, 'example.org');
  t.equal(td.idString(), 'spiffe://example.org');
  t.equal(td.toString(), 'example.org');
  t.ok(td.equals(TrustDomain.parse('spiffe://example.org')));
  t.ok(td.equals(TrustDomain.parse('spiffe://example.org/agent/a')), 'an ID names its trust domain');
  t.notOk(td.equals(TrustDomain.parse('example.com')));
  t.notOk(td.equals('example.org'));
  t.equal(TrustDomain.parse(td255).name, td255);
  const bad: Array<[string, string]> = [
    ['', 'missing_trust_domain'],
    ['Example.org', 'bad_trust_domain_char'],
    ['example.org/agent', 'bad_trust_domain_char'],
    ['example.org:443', 'port'],
    ['u@example.org', 'userinfo'],
    ['ex%41mple.org', 'percent_encoding'],
    ['a'.repeat(256), 'trust_domain_too_long'],
    ['spiffe://example.org/', 'trailing_slash'],
    ['SPIFFE://example.org', 'bad_trust_domain_char'],
  ];
  for (const [input, problem] of bad) {
    t.equal(problemOf(() => TrustDomain.parse(input)), problem, `${JSON.stringify(input.slice(0, 40))} → ${problem}`);
  }
});
