import t from 'tap';
import {
  BundleError,
  BundleSet,
  SpiffeIdError,
  TrustDomain,
  VerificationError,
  X509Bundle,
  verifyX509Svid,
} from '../../src/spiffe/index.js';
import { createCa, createLeaf, type Issued } from '../fixtures/certs.js';

function bundleProblem(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof BundleError) return e.problem;
    throw e;
  }
  return undefined;
}

const b64 = (c: Issued) => c.der.toString('base64');
const fps = (b: X509Bundle) => b.authorities.map((c) => c.fingerprint256);

let ca: Issued;
let ca2: Issued;
let rsaCa: Issued;
t.before(async () => {
  ca = await createCa({ trustDomain: 'example.org' });
  ca2 = await createCa({ trustDomain: 'example.org' });
  rsaCa = await createCa({ trustDomain: 'example.org', keyAlgorithm: 'RSA-2048' });
});

t.test('PEM bundles', async (t) => {
  const one = X509Bundle.fromPem('example.org', ca.pem);
  t.equal(one.trustDomain.name, 'example.org');
  t.same(fps(one), [ca.cert.fingerprint256]);
  const two = X509Bundle.fromPem(TrustDomain.parse('example.org'), `${ca.pem}\n${ca2.pem}`);
  t.same(fps(two), [ca.cert.fingerprint256, ca2.cert.fingerprint256]);
  t.same(fps(X509Bundle.fromPem('example.org', ca.pem + ca.pem)), [ca.cert.fingerprint256], 'duplicates collapse');
  t.same(fps(X509Bundle.fromPem('example.org', two.toPem())), fps(two), 'toPem round-trips');
  t.ok(Object.isFrozen(two.authorities));

  t.equal(bundleProblem(() => X509Bundle.fromPem('example.org', '')), 'pem');
  t.equal(bundleProblem(() => X509Bundle.fromPem('example.org', 'garbage')), 'pem');
  t.equal(bundleProblem(() => X509Bundle.fromPem('example.org', ca.keyPem)), 'pem');
  t.equal(
    bundleProblem(() => X509Bundle.fromPem('example.org', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----')),
    'pem',
  );
  t.throws(() => X509Bundle.fromPem('Example.org', ca.pem), SpiffeIdError, 'trust domain is validated');
});

t.test('SPIFFE JWKS bundles', async (t) => {
  const doc = {
    keys: [
      { use: 'x509-svid', kty: 'EC', crv: 'P-256', x: 'ignored', y: 'ignored', x5c: [b64(ca)] },
      { use: 'jwt-svid', kty: 'EC', kid: 'k1', crv: 'P-256', x: 'AAAA', y: 'AAAA' },
      { use: 'x509-svid', kty: 'RSA', n: 'ignored', e: 'AQAB', x5c: [b64(rsaCa)] },
      // Unknown key type and unknown use are ignored entirely, even with unusable contents.
      { use: 'x509-svid', kty: 'PQC-FUTURE', x5c: ['!!!not base64', 'second'] },
      { use: 'x509-svid-v2', kty: 'EC', x5c: [] },
      { use: 'jwt-svid', kty: 'OKP', crv: 'Ed25519', x: 'AAAA' },
    ],
    spiffe_sequence: 42,
    spiffe_refresh_hint: 300,
    unknown_top_level: true,
  };
  for (const input of [doc, JSON.stringify(doc)]) {
    const b = X509Bundle.fromJwks('example.org', input);
    t.same(fps(b), [ca.cert.fingerprint256, rsaCa.cert.fingerprint256]);
    t.equal(b.sequence, 42);
    t.equal(b.refreshHint, 300);
  }
  const parsed = X509Bundle.parse('example.org', `\n  ${JSON.stringify(doc)}\n`);
  t.same(fps(parsed), [ca.cert.fingerprint256, rsaCa.cert.fingerprint256], 'parse() detects JSON');
  t.same(fps(X509Bundle.parse('example.org', ca.pem)), [ca.cert.fingerprint256], 'parse() falls back to PEM');
});

t.test('toJwks produces the SPIFFE format and round-trips', async (t) => {
  const b = new X509Bundle('example.org', [ca.cert, rsaCa.cert], { sequence: 7, refreshHint: 60 });
  const jwks = b.toJwks() as { keys: Array<Record<string, unknown>>; spiffe_sequence: number; spiffe_refresh_hint: number };
  t.equal(jwks.spiffe_sequence, 7);
  t.equal(jwks.spiffe_refresh_hint, 60);
  t.equal(jwks.keys.length, 2);
  t.match(jwks.keys[0], { use: 'x509-svid', kty: 'EC', crv: 'P-256', x: String, y: String, x5c: [b64(ca)] });
  t.match(jwks.keys[1], { use: 'x509-svid', kty: 'RSA', n: String, e: 'AQAB', x5c: [b64(rsaCa)] });
  t.notOk('d' in jwks.keys[0]!, 'no private material');
  const back = X509Bundle.fromJwks('example.org', JSON.stringify(jwks));
  t.same(fps(back), fps(b));
  t.equal(back.sequence, 7);
  t.same(Object.keys(new X509Bundle('example.org', []).toJwks()), ['keys'], 'optional fields omitted');
});

t.test('empty bundles trust nothing', async (t) => {
  const empties = [
    X509Bundle.fromJwks('example.org', { keys: [] }),
    X509Bundle.fromJwks('example.org', { keys: [{ use: 'jwt-svid', kty: 'EC', crv: 'P-256', x: 'A', y: 'A' }] }),
    X509Bundle.parse('example.org', '{"keys":[]}'),
  ];
  const leaf = await createLeaf(ca, 'spiffe://example.org/agent/a');
  for (const empty of empties) {
    t.equal(empty.authorities.length, 0);
    t.throws(() => verifyX509Svid([leaf.cert], new BundleSet([empty])), { code: 'trust_domain_unknown' });
  }
  // Positive control: the same leaf verifies once the bundle holds its CA.
  const real = X509Bundle.fromJwks('example.org', { keys: [{ use: 'x509-svid', kty: 'EC', x5c: [b64(ca)] }] });
  t.equal(verifyX509Svid([leaf.cert], new BundleSet([real])).id.toString(), 'spiffe://example.org/agent/a');
});

t.test('malformed JWKS', async (t) => {
  const x = (extra: object) => ({ keys: [{ use: 'x509-svid', kty: 'EC', ...extra }] });
  const cases: Array<[string, string | object, string]> = [
    ['invalid JSON', '{"keys": [', 'json'],
    ['JSON array', '[]', 'not_object'],
    ['JSON null', 'null', 'not_object'],
    ['no keys', {}, 'missing_keys'],
    ['keys not an array', { keys: {} }, 'missing_keys'],
    ['key entry not an object', { keys: ['x'] }, 'bad_key_entry'],
    ['x509-svid entry without kty', { keys: [{ use: 'x509-svid', x5c: [b64(ca)] }] }, 'bad_key_entry'],
    // x5c set but not an array (RFC 7517 §4.7) is malformed, unlike a missing or empty one.
    ['x509-svid with x5c not an array', x({ x5c: b64(ca) }), 'bad_x5c'],
    // The first value is the authority (X509-SVID §6.2); a corrupt one is an error, even when a
    // later (ignored) value is a good certificate.
    ['first x5c corrupt, second valid', x({ x5c: ['***', b64(ca)] }), 'bad_x5c'],
    ['x5c not base64', x({ x5c: ['***'] }), 'bad_x5c'],
    ['x5c base64url', x({ x5c: [b64(ca).replace(/\+/g, '-').replace(/\//g, '_') + '-_'] }), 'bad_x5c'],
    ['x5c not a certificate', x({ x5c: [Buffer.from('hello').toString('base64')] }), 'bad_x5c'],
    ['x5c entry not a string', x({ x5c: [42] }), 'bad_x5c'],
    ['negative sequence', { keys: [], spiffe_sequence: -1 }, 'bad_sequence'],
    ['string sequence', { keys: [], spiffe_sequence: '1' }, 'bad_sequence'],
    ['fractional refresh hint', { keys: [], spiffe_refresh_hint: 1.5 }, 'bad_refresh_hint'],
  ];
  for (const [name, input, problem] of cases) {
    t.equal(bundleProblem(() => X509Bundle.fromJwks('example.org', input)), problem, `${name} → ${problem}`);
  }
  t.equal(bundleProblem(() => X509Bundle.parse('example.org', '{ not json')), 'json', 'parse() on broken JSON object');
  t.equal(bundleProblem(() => X509Bundle.parse('example.org', '')), 'pem', 'parse() on empty input');
  t.equal(bundleProblem(() => X509Bundle.parse('example.org', '[1,2]')), 'pem', 'a JSON array is not a bundle');
  // Positive control for the x() helper itself.
  t.equal(X509Bundle.fromJwks('example.org', x({ x5c: [b64(ca)] })).authorities.length, 1);
});

// X509-SVID §6.2: "If x5c is not set, or is empty, then the entry MUST be ignored."
t.test('x509-svid entries with a missing or empty x5c are ignored, not errors', async (t) => {
  const leaf = await createLeaf(ca, 'spiffe://example.org/agent/a');
  const good = { use: 'x509-svid', kty: 'EC', x5c: [b64(ca)] };
  const ignorable: Array<[string, object]> = [
    ['x5c absent', { use: 'x509-svid', kty: 'EC', crv: 'P-256', x: 'A', y: 'A' }],
    ['x5c empty', { use: 'x509-svid', kty: 'EC', x5c: [] }],
    ['x5c null', { use: 'x509-svid', kty: 'RSA', x5c: null }],
  ];
  for (const [name, entry] of ignorable) {
    // Negative vector: the entry alone yields no authority, so nothing verifies.
    const alone = X509Bundle.fromJwks('example.org', { keys: [entry] });
    t.equal(alone.authorities.length, 0, `${name}: entry ignored`);
    t.throws(() => verifyX509Svid([leaf.cert], new BundleSet([alone])), { code: 'trust_domain_unknown' }, `${name}: trusts nothing`);
    // Positive control: next to a good entry, the good one is still used.
    const mixed = X509Bundle.fromJwks('example.org', JSON.stringify({ keys: [entry, good, entry] }));
    t.same(fps(mixed), [ca.cert.fingerprint256], `${name}: other entries still used`);
    t.equal(verifyX509Svid([leaf.cert], new BundleSet([mixed])).id.toString(), 'spiffe://example.org/agent/a');
  }
});

// X509-SVID §6.2: "If the x5c parameter contains multiple values, then all but the first MUST be
// ignored."
t.test('only the first x5c value is used', async (t) => {
  const byFirst = await createLeaf(ca, 'spiffe://example.org/agent/a');
  const bySecond = await createLeaf(ca2, 'spiffe://example.org/agent/b');
  const cases: Array<[string, unknown[]]> = [
    ['two certificates', [b64(ca), b64(ca2)]],
    ['second value not base64', [b64(ca), '***']],
    ['second value not a string', [b64(ca), 42, null]],
  ];
  for (const [name, x5c] of cases) {
    const b = X509Bundle.fromJwks('example.org', { keys: [{ use: 'x509-svid', kty: 'EC', x5c }] });
    t.same(fps(b), [ca.cert.fingerprint256], `${name}: first value only`);
    // Positive control: the first certificate anchors.
    t.equal(verifyX509Svid([byFirst.cert], new BundleSet([b])).id.toString(), 'spiffe://example.org/agent/a', name);
    // Negative vector: the ignored second certificate is not trusted.
    t.throws(() => verifyX509Svid([bySecond.cert], new BundleSet([b])), { code: 'chain_invalid' }, `${name}: rest ignored`);
  }
});

t.test('BundleError shape', async (t) => {
  try {
    X509Bundle.fromJwks('example.org', '{');
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof BundleError);
    t.equal((e as BundleError).code, 'bundle_invalid');
    t.equal((e as BundleError).problem, 'json');
  }
});

t.test('BundleSet', async (t) => {
  const org = X509Bundle.fromPem('example.org', ca.pem);
  const partner = X509Bundle.fromPem('partner.example', ca2.pem);
  const set = new BundleSet([org]);
  t.equal(set.get('example.org'), org);
  t.equal(set.get(TrustDomain.parse('example.org')), org);
  t.equal(set.get('spiffe://example.org/agent/a'), org, 'an ID string selects its trust domain');
  t.equal(set.get('partner.example'), undefined);
  t.equal(set.get('Not Valid'), undefined, 'invalid names are simply absent');

  const both = set.with(partner);
  t.not(both, set);
  t.equal(set.get('partner.example'), undefined, 'with() does not mutate');
  t.equal(both.get('partner.example'), partner);
  t.same(both.trustDomains().map((d) => d.name).sort(), ['example.org', 'partner.example']);
  t.same(both.allAuthorities().map((c) => c.fingerprint256).sort(), [ca.cert.fingerprint256, ca2.cert.fingerprint256].sort());

  const replaced = both.with(X509Bundle.fromPem('example.org', rsaCa.pem));
  t.same(fps(replaced.get('example.org')!), [rsaCa.cert.fingerprint256], 'a newer bundle replaces the old one');
  t.equal(replaced.trustDomains().length, 2);
  t.same(new BundleSet().trustDomains(), []);
  t.ok(new VerificationError('chain_invalid', 'x') instanceof Error);
});
