// Response validation: what a Workload API client must discard (one case per mandatory field),
// what it must accept (positive controls), selection, and bundle handling.
import t from 'tap';
import { TrustDomain } from '../../src/spiffe/index.js';
import {
  parseJwtBundlesResponse,
  parseJwtSvidResponse,
  parseX509BundlesResponse,
  parseX509SvidResponse,
  WorkloadApiResponseError,
  WorkloadApiSelectionError,
} from '../../src/identity/workload-api/index.js';
import type { X509SvidMessage, X509SvidResponse } from '../../src/identity/workload-api/proto.js';
import { createCa, createIntermediate, createLeaf, type Issued } from '../fixtures/certs.js';

const TD = TrustDomain.parse('example.org');
const der = (...certs: Issued[]): Buffer => Buffer.concat(certs.map((c) => c.der));
const keyDer = (c: Issued): Buffer => c.privateKey.export({ format: 'der', type: 'pkcs8' });

const ca = await createCa({ trustDomain: 'example.org' });
const partner = await createCa({ trustDomain: 'partner.org' });
const a = await createLeaf(ca, 'spiffe://example.org/agent/a');
const b = await createLeaf(ca, 'spiffe://example.org/agent/b');

function entry(leaf: Issued, id: string, hint = '', chain: Issued[] = [leaf]): X509SvidMessage {
  return { spiffe_id: id, x509_svid: der(...chain), x509_svid_key: keyDer(leaf), bundle: der(ca), hint };
}

function response(overrides: Partial<X509SvidResponse> = {}): X509SvidResponse {
  return { svids: [entry(a, 'spiffe://example.org/agent/a')], crl: [], federated_bundles: { 'spiffe://partner.org': der(partner) }, ...overrides };
}

t.test('a complete response gives the default SVID, its bundle and the federated ones', async (t) => {
  const { svid, bundles } = parseX509SvidResponse(response(), {}, TD);
  t.equal(svid.id.toString(), 'spiffe://example.org/agent/a');
  t.equal(svid.serial, a.cert.serialNumber);
  t.same(bundles.trustDomains().map((d) => d.name).sort(), ['example.org', 'partner.org']);
  t.equal(bundles.get('example.org')!.authorities[0]!.fingerprint256, ca.cert.fingerprint256);
  t.match(svid.privateKeyPem, /BEGIN PRIVATE KEY/);
});

t.test('chains are leaf first and intermediates are kept', async (t) => {
  const mid = await createIntermediate(ca, { trustDomain: 'example.org' });
  const leaf = await createLeaf(mid, 'spiffe://example.org/agent/m');
  const { svid } = parseX509SvidResponse(response({ svids: [entry(leaf, 'spiffe://example.org/agent/m', '', [leaf, mid])] }), {}, TD);
  t.equal(svid.certificates.length, 2);
  t.throws(
    () => parseX509SvidResponse(response({ svids: [entry(leaf, 'spiffe://example.org/agent/m', '', [mid, leaf])] }), {}, TD),
    /svids\[0\]\.x509_svid/,
    'intermediate first is refused',
  );
});

t.test('one discard per mandatory field', async (t) => {
  const ok = entry(a, 'spiffe://example.org/agent/a');
  const cases: [string, Partial<X509SvidResponse>, RegExp][] = [
    ['svids empty', { svids: [] }, /^svids: is empty/],
    ['spiffe_id missing', { svids: [{ ...ok, spiffe_id: '' }] }, /svids\[0\]\.spiffe_id: is missing/],
    ['x509_svid missing', { svids: [{ ...ok, x509_svid: Buffer.alloc(0) }] }, /svids\[0\]\.x509_svid: is missing/],
    ['x509_svid_key missing', { svids: [{ ...ok, x509_svid_key: Buffer.alloc(0) }] }, /svids\[0\]\.x509_svid_key: is missing/],
    ['bundle missing', { svids: [{ ...ok, bundle: Buffer.alloc(0) }] }, /svids\[0\]\.bundle: is missing/],
    ['a second SVID missing its key', { svids: [ok, { ...entry(b, 'spiffe://example.org/agent/b'), x509_svid_key: Buffer.alloc(0) }] }, /svids\[1\]\.x509_svid_key/],
    ['spiffe_id not a SPIFFE ID', { svids: [{ ...ok, spiffe_id: 'https://example.org/a' }] }, /spiffe_id/],
    ['spiffe_id not the leaf', { svids: [{ ...ok, spiffe_id: 'spiffe://example.org/agent/b' }] }, /is not the SVID's own ID/],
    ['x509_svid garbage', { svids: [{ ...ok, x509_svid: Buffer.from('not der') }] }, /x509_svid: .*not a valid certificate/],
    ['x509_svid with trailing bytes', { svids: [{ ...ok, x509_svid: Buffer.concat([a.der, Buffer.from([0x30, 0x03, 0x02])]) }] }, /x509_svid/],
    ['key is PEM, not DER', { svids: [{ ...ok, x509_svid_key: Buffer.from(a.keyPem) }] }, /PKCS#8 DER/],
    ['key of another SVID', { svids: [{ ...ok, x509_svid_key: keyDer(b) }] }, /does not match/],
    ['bundle that does not sign the SVID', { svids: [{ ...ok, bundle: der(partner) }] }, /does not verify against its bundle/],
    ['federated bundle empty', { federated_bundles: { 'spiffe://partner.org': Buffer.alloc(0) } }, /federated_bundles\["spiffe:\/\/partner.org"\]: is empty/],
    ['federated key not a trust domain', { federated_bundles: { 'spiffe://Bad Domain': der(partner) } }, /not a trust domain/],
  ];
  for (const [name, overrides, reason] of cases) {
    t.throws(() => parseX509SvidResponse(response(overrides), {}, TD), reason, name);
    let caught: unknown;
    try {
      parseX509SvidResponse(response(overrides), {}, TD);
    } catch (err) {
      caught = err;
    }
    t.ok(caught instanceof WorkloadApiResponseError, `${name}: typed error`);
  }
});

t.test('selection: first by default, or by SPIFFE ID / hint; our SVID not offered is a selection error naming what was', async (t) => {
  const two = response({ svids: [entry(a, 'spiffe://example.org/agent/a', 'external'), entry(b, 'spiffe://example.org/agent/b', 'internal')] });
  const pick = (sel: object) => parseX509SvidResponse(two, sel, TD).svid.id.toString();
  t.equal(pick({}), 'spiffe://example.org/agent/a', 'first is the default');
  t.equal(pick({ spiffeId: 'spiffe://example.org/agent/b' }), 'spiffe://example.org/agent/b');
  t.equal(pick({ hint: 'internal' }), 'spiffe://example.org/agent/b');
  t.equal(pick({ spiffeId: 'spiffe://example.org/agent/a', hint: 'external' }), 'spiffe://example.org/agent/a');
  const selectionError = (sel: object, tdName = 'example.org'): unknown => {
    try {
      parseX509SvidResponse(two, sel, TrustDomain.parse(tdName));
    } catch (err) {
      return err;
    }
    return undefined;
  };
  const missing = selectionError({ spiffeId: 'spiffe://example.org/agent/c' });
  t.ok(missing instanceof WorkloadApiSelectionError && missing.code === 'workload_api_svid_not_offered', 'a redacted selected SVID is a selection error (withdraw), not a malformed response');
  t.match((missing as Error).message, /no SVID with SPIFFE ID spiffe:\/\/example.org\/agent\/c is offered \(offered: .*agent\/a.*agent\/b/);
  t.ok(selectionError({ spiffeId: 'spiffe://example.org/agent/a', hint: 'internal' }) instanceof WorkloadApiSelectionError, 'ID and hint must both match');
  const otherTd = selectionError({}, 'other.org');
  t.ok(otherTd instanceof WorkloadApiSelectionError, 'the default SVID outside the configured trust domain: not offered');
  t.match((otherTd as Error).message, /not in the configured trust domain other.org/);
});

t.test('SVIDs not presented are checked for their mandatory fields only', async (t) => {
  const expired = await createLeaf(ca, 'spiffe://example.org/agent/old', { notAfter: new Date(Date.now() - 60_000), notBefore: new Date(Date.now() - 3_600_000) });
  const withBadSecond = response({ svids: [entry(a, 'spiffe://example.org/agent/a'), entry(expired, 'spiffe://example.org/agent/old')] });
  t.equal(parseX509SvidResponse(withBadSecond, {}, TD).svid.id.toString(), 'spiffe://example.org/agent/a', 'an expired SVID we do not use does not hold up the one we do');
  t.throws(() => parseX509SvidResponse(withBadSecond, { spiffeId: 'spiffe://example.org/agent/old' }, TD), /svids\[1\]\.x509_svid/, 'positive control: the same SVID, selected, is validated and refused');
});

t.test('our own trust domain is never taken from the federation map', async (t) => {
  const rogue = await createCa({ trustDomain: 'example.org' });
  const { bundles } = parseX509SvidResponse(response({ federated_bundles: { 'spiffe://example.org': der(rogue), 'partner.org': der(partner) } }), {}, TD);
  t.same(bundles.get('example.org')!.authorities.map((c) => c.fingerprint256), [ca.cert.fingerprint256]);
  t.ok(bundles.get('partner.org'), 'bare trust domain names are accepted as keys');
});

t.test('a response without federated bundles trusts only our own domain', async (t) => {
  const { bundles } = parseX509SvidResponse(response({ federated_bundles: {} }), {}, TD);
  t.same(bundles.trustDomains().map((d) => d.name), ['example.org']);
});

t.test('X509 bundles, JWT bundles and JWT-SVID responses', async (t) => {
  const set = parseX509BundlesResponse({ crl: [], bundles: { 'spiffe://example.org': der(ca), 'spiffe://partner.org': der(partner) } });
  t.same(set.trustDomains().map((d) => d.name).sort(), ['example.org', 'partner.org']);
  t.throws(() => parseX509BundlesResponse({ crl: [], bundles: {} }), /^bundles: is empty/);

  const jwks = { keys: [{ kty: 'EC', crv: 'P-256', x: 'x', y: 'y', kid: 'k1', use: 'jwt-svid' }, { kty: 'EC', use: 'x509-svid', x5c: [] }] };
  const jwt = parseJwtBundlesResponse({ bundles: { 'spiffe://example.org': Buffer.from(JSON.stringify(jwks)) } });
  t.same(jwt.get('example.org')!.keys.map((k) => k.kid), ['k1'], 'only jwt-svid keys are kept');
  t.throws(() => parseJwtBundlesResponse({ bundles: {} }), /bundles: is empty/);
  t.throws(() => parseJwtBundlesResponse({ bundles: { 'spiffe://example.org': Buffer.from('nope') } }), /is not JSON/);
  t.throws(() => parseJwtBundlesResponse({ bundles: { 'spiffe://example.org': Buffer.from('{}') } }), /JWK Set/);

  const svids = parseJwtSvidResponse({ svids: [{ spiffe_id: 'spiffe://example.org/agent/a', svid: 'a.b.c', hint: '' }] });
  t.equal(svids[0]!.spiffeId.toString(), 'spiffe://example.org/agent/a');
  t.throws(() => parseJwtSvidResponse({ svids: [] }), /svids: is empty/);
  t.throws(() => parseJwtSvidResponse({ svids: [{ spiffe_id: 'spiffe://example.org/a', svid: '', hint: '' }] }), /svid: is missing/);
});
