// Revocation entries: the one parser every source (admin API, NATS record, file) goes through,
// the normalization of each kind, and the SVID keys a live certificate is looked up by.
import { createHash, webcrypto, X509Certificate } from 'node:crypto';
import t from 'tap';
import {
  REVOCATION_KINDS,
  RevocationInputError,
  entryToJson,
  isEntryId,
  parseRevocationEntry,
  svidKeys,
  type RevocationEntry,
} from '../../src/revocation/index.js';
import { x509 } from '../../src/spiffe/peculiar.js';
import { createCa, createLeaf } from '../fixtures/certs.js';

const NOW = Date.parse('2030-06-01T12:00:00.000Z');
const DEFAULTS = { id: 'default-id-0001', revokedBy: 'admin:alice', now: NOW };
const FP = 'ab'.repeat(32);

function parse(input: unknown): RevocationEntry {
  return parseRevocationEntry(input, DEFAULTS);
}

/** The field named by the RevocationInputError `fn` throws; fails the test when it does not throw one. */
function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof RevocationInputError) return err.field;
    throw err;
  }
  return '(accepted)';
}

const valueOf = (kind: string, value: unknown): string => parse({ kind, value }).value;

t.test('REVOCATION_KINDS lists the six kinds', async (t) => {
  t.same([...REVOCATION_KINDS].sort(), ['agent', 'svid', 'task', 'token', 'trust_domain', 'user']);
});

t.test('defaults fill id, revokedBy and revokedAt; reason defaults to empty', async (t) => {
  const e = parse({ kind: 'task', value: 'task-1' });
  t.same(e, { id: DEFAULTS.id, kind: 'task', value: 'task-1', reason: '', revokedBy: 'admin:alice', revokedAt: NOW });
  t.notOk('expiresAt' in e, 'no expiresAt unless given');
});

t.test('input id, revokedBy, revokedAt and expiresAt override the defaults', async (t) => {
  const e = parse({
    id: 'entry_from-record-1',
    kind: 'user',
    value: 'alice@example.org',
    reason: 'left the company',
    revokedBy: 'spiffe://example.org/ops/admin',
    revokedAt: '2030-01-01T00:00:00Z',
    expiresAt: Date.parse('2030-02-01T00:00:00Z'),
  });
  t.same(e, {
    id: 'entry_from-record-1',
    kind: 'user',
    value: 'alice@example.org',
    reason: 'left the company',
    revokedBy: 'spiffe://example.org/ops/admin',
    revokedAt: Date.parse('2030-01-01T00:00:00Z'),
    expiresAt: Date.parse('2030-02-01T00:00:00Z'),
  });
});

t.test('svid values normalize', async (t) => {
  const upperColons = FP.toUpperCase().match(/../g)!.join(':');
  t.equal(valueOf('svid', FP), `sha256:${FP}`, 'bare 64 hex digits → sha256:');
  t.equal(valueOf('svid', FP.toUpperCase()), `sha256:${FP}`, 'upper-case bare fingerprint → lower-case');
  t.equal(valueOf('svid', upperColons), `sha256:${FP}`, 'colon-separated upper-case fingerprint (as openssl prints it)');
  t.equal(valueOf('svid', `SHA256:${upperColons}`), `sha256:${FP}`, 'prefix in any case, colons removed');
  t.equal(valueOf('svid', `sha256:${FP}`), `sha256:${FP}`, 'already normalized: unchanged');
  t.equal(valueOf('svid', '0001AB'), 'serial:1ab', 'short bare hex is a serial: leading zeros dropped, lower-cased');
  t.equal(valueOf('svid', 'serial:00:0A:BC'), 'serial:abc', 'serial with colons and leading zeros');
  t.equal(valueOf('svid', 'SERIAL:7F'), 'serial:7f');
  t.equal(valueOf('svid', '0000'), 'serial:0', 'an all-zero serial keeps one digit');
  t.equal(valueOf('svid', 'f'.repeat(40)), `serial:${'f'.repeat(40)}`, 'a 20-byte serial is accepted');
  t.equal(valueOf('svid', `serial:${'0'.repeat(24)}${'1'.repeat(16)}`), `serial:${'1'.repeat(16)}`);
});

t.test('svid values that name nothing are refused (field: value)', async (t) => {
  const bad: Array<[string, string]> = [
    ['not hex', 'xyz'],
    ['sha256 with 63 digits', `sha256:${FP.slice(1)}`],
    ['sha256 with 65 digits', `sha256:${FP}a`],
    ['sha256 with no digits', 'sha256:'],
    ['serial with no digits', 'serial:'],
    ['serial longer than 20 bytes', `serial:${'1'.repeat(41)}`],
    ['bare hex of 41..63 digits is neither', '1'.repeat(50)],
    ['unknown prefix', 'md5:abcd'],
    ['whitespace', 'ab cd'],
    ['base64 fingerprint', Buffer.from(FP, 'hex').toString('base64')],
  ];
  for (const [what, value] of bad) t.equal(fieldOf(() => parse({ kind: 'svid', value })), 'value', what);
  // Positive control: the same parser accepts a well-formed value in the same call shape.
  t.equal(fieldOf(() => parse({ kind: 'svid', value: `sha256:${FP}` })), '(accepted)');
});

t.test('agent values: exact IDs and patterns, verbatim', async (t) => {
  for (const v of [
    'spiffe://example.org/agent/a',
    'spiffe://example.org/agent/*',
    'spiffe://example.org/agent/**',
    'spiffe://example.org/*/worker',
    'spiffe://example.org/**',
    'spiffe://example.org',
  ]) {
    t.equal(valueOf('agent', v), v, v);
  }
  for (const v of [
    'example.org/agent/a',
    'spiffe://*/agent/a',
    'spiffe://example.org/agent/a*',
    'spiffe://example.org/**/a',
    'spiffe://EXAMPLE.org/agent/a',
    'spiffe://example.org/agent/a/',
    'spiffe://example.org/agent/../b',
    'https://example.org/agent/a',
  ]) {
    t.equal(fieldOf(() => parse({ kind: 'agent', value: v })), 'value', `refused: ${v}`);
  }
});

t.test('trust_domain values: a name, or the trust domain of a SPIFFE ID', async (t) => {
  t.equal(valueOf('trust_domain', 'partner.example'), 'partner.example');
  t.equal(valueOf('trust_domain', 'spiffe://partner.example'), 'partner.example');
  t.equal(valueOf('trust_domain', 'spiffe://partner.example/agent/a'), 'partner.example', 'an ID names its trust domain');
  for (const v of ['Partner.Example', 'partner.example/agent', 'partner.example:443', 'user@partner.example', 'spiffe://*/x']) {
    t.equal(fieldOf(() => parse({ kind: 'trust_domain', value: v })), 'value', `refused: ${v}`);
  }
});

t.test('task, token and user values are kept verbatim', async (t) => {
  for (const kind of ['task', 'token', 'user'] as const) {
    for (const v of ['Task-ABC', '  spaced  ', 'ünïcödé ✓', 'a.b*c>d', '0001', 'x'.repeat(512)]) {
      t.equal(valueOf(kind, v), v, `${kind} ${JSON.stringify(v.slice(0, 20))}`);
    }
    t.equal(fieldOf(() => parse({ kind, value: 'x'.repeat(513) })), 'value', `${kind}: 513 characters is too long`);
  }
});

t.test('invalid entries name the offending field', async (t) => {
  const ok = { kind: 'task', value: 'task-1' };
  const cases: Array<[string, unknown, string]> = [
    ['not an object', 'task-1', 'entry'],
    ['null', null, 'entry'],
    ['an array', [ok], 'entry'],
    ['unknown field', { ...ok, comment: 'x' }, 'comment'],
    ['unknown field even when undefined-looking', { ...ok, extra: undefined }, 'extra'],
    ['missing kind', { value: 'x' }, 'kind'],
    ['bad kind', { kind: 'spiffe', value: 'x' }, 'kind'],
    ['kind in the wrong case', { kind: 'TASK', value: 'x' }, 'kind'],
    ['kind not a string', { kind: 1, value: 'x' }, 'kind'],
    ['missing value', { kind: 'task' }, 'value'],
    ['empty value', { kind: 'task', value: '' }, 'value'],
    ['value not a string', { kind: 'task', value: 42 }, 'value'],
    ['value with a newline', { kind: 'task', value: 'a\nb' }, 'value'],
    ['value with NUL', { kind: 'user', value: 'a\u0000b' }, 'value'],
    ['value with DEL', { kind: 'token', value: 'a\u007fb' }, 'value'],
    ['agent value over 2048 characters', { kind: 'agent', value: 'spiffe://example.org/' + 'a'.repeat(2048) }, 'value'],
    ['id too short', { ...ok, id: 'short' }, 'id'],
    ['id too long', { ...ok, id: 'a'.repeat(65) }, 'id'],
    ['id with a dot (a NATS token separator)', { ...ok, id: 'abc.defgh' }, 'id'],
    ['id with a wildcard', { ...ok, id: 'abcdefg*' }, 'id'],
    ['id with a space', { ...ok, id: 'abcd efgh' }, 'id'],
    ['id not a string', { ...ok, id: 12345678 }, 'id'],
    ['reason not a string', { ...ok, reason: 1 }, 'reason'],
    ['reason too long', { ...ok, reason: 'r'.repeat(257) }, 'reason'],
    ['reason with control characters', { ...ok, reason: 'bad\r\nInjected: yes' }, 'reason'],
    ['revokedBy empty', { ...ok, revokedBy: '' }, 'revokedBy'],
    ['revokedBy too long', { ...ok, revokedBy: 'b'.repeat(513) }, 'revokedBy'],
    ['revokedBy with control characters', { ...ok, revokedBy: 'a\tb' }, 'revokedBy'],
    ['revokedBy not a string', { ...ok, revokedBy: {} }, 'revokedBy'],
    ['revokedAt not a time', { ...ok, revokedAt: 'yesterday' }, 'revokedAt'],
    ['revokedAt negative', { ...ok, revokedAt: -1 }, 'revokedAt'],
    ['revokedAt NaN', { ...ok, revokedAt: NaN }, 'revokedAt'],
    ['revokedAt Infinity', { ...ok, revokedAt: Infinity }, 'revokedAt'],
    ['revokedAt a boolean', { ...ok, revokedAt: true }, 'revokedAt'],
    ['revokedAt null', { ...ok, revokedAt: null }, 'revokedAt'],
    ['expiresAt not a time', { ...ok, expiresAt: '2030-13-45' }, 'expiresAt'],
    ['expiresAt an object', { ...ok, expiresAt: {} }, 'expiresAt'],
    ['expiresAt before revokedAt', { ...ok, revokedAt: NOW, expiresAt: NOW - 1 }, 'expiresAt'],
    ['expiresAt equal to revokedAt', { ...ok, revokedAt: NOW, expiresAt: NOW }, 'expiresAt'],
    ['expiresAt before the default revocation time', { ...ok, expiresAt: new Date(NOW - 60_000).toISOString() }, 'expiresAt'],
  ];
  for (const [what, input, field] of cases) {
    let err: unknown;
    try {
      parse(input);
    } catch (e) {
      err = e;
    }
    t.type(err, RevocationInputError, `${what}: RevocationInputError`);
    const e = err as RevocationInputError;
    t.equal(e?.field, field, `${what}: field ${field}`);
    t.equal(e?.code, 'revocation_invalid', `${what}: code`);
    t.match(e?.message, new RegExp(`^${field}: `), `${what}: message starts with the field`);
  }
});

t.test('positive controls at the boundaries of each rule', async (t) => {
  const ok = { kind: 'task', value: 'task-1' };
  const accepted: Array<[string, unknown]> = [
    ['8-character id', { ...ok, id: 'abcdefgh' }],
    ['64-character id', { ...ok, id: 'a'.repeat(64) }],
    ['UUID id', { ...ok, id: '123e4567-e89b-12d3-a456-426614174000' }],
    ['256-character reason', { ...ok, reason: 'r'.repeat(256) }],
    ['unicode reason', { ...ok, reason: 'compromis — clé fuitée' }],
    ['512-character revokedBy', { ...ok, revokedBy: 'b'.repeat(512) }],
    ['revokedAt 0', { ...ok, revokedAt: 0 }],
    ['expiresAt 1 ms after revokedAt', { ...ok, revokedAt: NOW, expiresAt: NOW + 1 }],
    ['expiresAt as ISO string', { ...ok, expiresAt: '2031-01-01T00:00:00.000Z' }],
    ['2048-character agent pattern', { kind: 'agent', value: 'spiffe://example.org/' + 'a'.repeat(2048 - 'spiffe://example.org/'.length) }],
  ];
  for (const [what, input] of accepted) t.equal(fieldOf(() => parse(input)), '(accepted)', what);
});

t.test('the parser does not mutate its input', async (t) => {
  const input = { kind: 'svid', value: FP.toUpperCase(), reason: 'x' };
  const copy = structuredClone(input);
  parse(input);
  t.same(input, copy);
});

t.test('isEntryId', async (t) => {
  t.ok(isEntryId('abcdefgh'));
  t.ok(isEntryId('file-' + '0'.repeat(32)));
  t.notOk(isEntryId('abc'));
  t.notOk(isEntryId('abcdefgh.lift'));
  t.notOk(isEntryId('abcdefg>'));
  t.notOk(isEntryId(''));
});

t.test('entryToJson: ISO times, expiresAt only when set; round-trips through the parser', async (t) => {
  const e = parse({ id: 'round-trip-01', kind: 'svid', value: FP, reason: 'leaked', revokedAt: NOW, expiresAt: NOW + 3_600_123 });
  const json = entryToJson(e);
  t.same(json, {
    id: 'round-trip-01',
    kind: 'svid',
    value: `sha256:${FP}`,
    reason: 'leaked',
    revokedBy: 'admin:alice',
    revokedAt: '2030-06-01T12:00:00.000Z',
    expiresAt: '2030-06-01T13:00:00.123Z',
  });
  t.same(parseRevocationEntry(JSON.parse(JSON.stringify(json)), { id: 'other-default', revokedBy: 'other', now: 0 }), e, 'parse(entryToJson(e)) = e');
  const noExpiry = entryToJson(parse({ kind: 'agent', value: 'spiffe://example.org/agent/*' }));
  t.notOk('expiresAt' in noExpiry);
  t.same(Object.keys(noExpiry), ['id', 'kind', 'value', 'reason', 'revokedBy', 'revokedAt']);
});


t.test('a time the parser accepts can be serialized', async (t) => {
  // 1e16 ms is finite and positive, so parseTime accepts it, but it is outside the ECMAScript
  // time range: new Date(1e16).toISOString() throws. Either the parser must refuse it or
  // entryToJson must not throw on an entry the parser produced.
  const ok = parse({ kind: 'task', value: 't', expiresAt: 8.64e15 });
  t.doesNotThrow(() => entryToJson(ok), 'positive control: the last representable time');
  for (const input of [
    { kind: 'task', value: 't', expiresAt: 1e16 },
    { kind: 'task', value: 't', revokedAt: 8.64e15 + 1, expiresAt: 9e15 },
  ]) {
    let parsed: RevocationEntry | undefined;
    try {
      parsed = parse(input);
    } catch (err) {
      t.type(err, RevocationInputError, 'refused at parse time');
      continue;
    }
    t.doesNotThrow(() => entryToJson(parsed!), `entryToJson of a parsed entry (${JSON.stringify(input)})`);
  }
});

t.test('svidKeys matches the svid normalization for a real certificate', async (t) => {
  const ca = await createCa({ trustDomain: 'example.org' });
  const leaf = await createLeaf(ca, 'spiffe://example.org/agent/a');
  const cert = leaf.cert;
  const [serialKey, fpKey] = svidKeys(cert.serialNumber, cert.fingerprint256);
  t.match(cert.fingerprint256, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, 'Node reports colon-separated upper-case hex');
  t.equal(fpKey, `sha256:${createHash('sha256').update(leaf.der).digest('hex')}`, 'fingerprint key is SHA-256 of the DER');
  t.equal(valueOf('svid', cert.fingerprint256), fpKey, 'fingerprint as Node prints it');
  t.equal(valueOf('svid', fpKey.slice(7)), fpKey, 'bare fingerprint hex');
  t.equal(valueOf('svid', cert.serialNumber), serialKey, 'serial as Node prints it');
  t.equal(valueOf('svid', `serial:${cert.serialNumber.toLowerCase()}`), serialKey, 'serial with prefix, lower-case');
  t.equal(valueOf('svid', `00${cert.serialNumber}`), serialKey, 'serial with extra leading zeros');
  t.not(serialKey, fpKey);
  // Negative control: another certificate's keys differ.
  const other = await createLeaf(ca, 'spiffe://example.org/agent/a');
  const otherKeys = svidKeys(other.cert.serialNumber, other.cert.fingerprint256);
  t.not(otherKeys[0], serialKey);
  t.not(otherKeys[1], fpKey);
});

t.test('svidKeys and the parser agree on a serial with a leading zero nibble', async (t) => {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const generated = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '0a1b2c3d4e5f',
    name: 'CN=leading zero serial',
    notBefore: new Date(NOW - 60_000),
    notAfter: new Date(NOW + 60_000),
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  const cert = new X509Certificate(Buffer.from(generated.rawData));
  t.equal(cert.serialNumber.toUpperCase(), '0A1B2C3D4E5F', 'Node keeps the leading zero nibble');
  const [serialKey, fpKey] = svidKeys(cert.serialNumber, cert.fingerprint256);
  t.equal(serialKey, 'serial:a1b2c3d4e5f');
  t.equal(valueOf('svid', cert.serialNumber), serialKey);
  t.equal(valueOf('svid', 'a1b2c3d4e5f'), serialKey, 'the serial written without the zero');
  t.equal(valueOf('svid', cert.fingerprint256), fpKey);
});

t.test('svidKeys on plain hex input', async (t) => {
  t.same(svidKeys('00:0A:FF', 'AA:' + 'bb'.repeat(31)), ['serial:aff', `sha256:aa${'bb'.repeat(31)}`]);
  t.same(svidKeys('0', FP), ['serial:0', `sha256:${FP}`]);
});
