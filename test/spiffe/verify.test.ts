import t from 'tap';
import {
  BundleSet,
  MAX_INTERMEDIATES,
  VerificationError,
  X509Bundle,
  verifyX509Svid,
  type VerificationCode,
} from '../../src/spiffe/index.js';
import type { X509Certificate } from 'node:crypto';
import { x509 } from '../../src/spiffe/peculiar.js';
import {
  EKU_SERVER_AUTH,
  createCa,
  createCert,
  createIntermediate,
  createLeaf,
  tamperSignature,
  type CertOptions,
  type Issued,
} from '../fixtures/certs.js';

const ORG = 'example.org';
const PARTNER = 'partner.example';
const A = 'spiffe://example.org/agent/a';
const P = 'spiffe://partner.example/agent/p';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

// Async so that fixtures can be awaited inline; verifyX509Svid itself is synchronous.
async function code(fn: () => Promise<unknown>): Promise<VerificationCode | 'ok'> {
  try {
    await fn();
    return 'ok';
  } catch (e) {
    if (e instanceof VerificationError) return e.code;
    throw e;
  }
}

const certs = (...xs: Issued[]): X509Certificate[] => xs.map((x) => x.cert);
const bundleOf = (td: string, ...cas: Issued[]) => new X509Bundle(td, certs(...cas));

let orgCa: Issued;
let partnerCa: Issued;
let orgBundles: BundleSet;
let federated: BundleSet;
t.before(async () => {
  orgCa = await createCa({ trustDomain: ORG });
  partnerCa = await createCa({ trustDomain: PARTNER });
  orgBundles = new BundleSet([bundleOf(ORG, orgCa)]);
  federated = orgBundles.with(bundleOf(PARTNER, partnerCa));
});

t.test('leaf directly under the root', async (t) => {
  const leaf = await createLeaf(orgCa, A);
  const v = verifyX509Svid([leaf.cert], orgBundles);
  t.equal(v.id.toString(), A);
  t.equal(v.leaf, leaf.cert);
  t.same(v.path.map((c) => c.fingerprint256), [leaf.cert.fingerprint256, orgCa.cert.fingerprint256]);
  t.equal(await code(async () => verifyX509Svid([leaf.cert], orgBundles)), 'ok', 'second run (cached) agrees');
});

t.test('paths through intermediates, presented in any order', async (t) => {
  const i1 = await createIntermediate(orgCa, { trustDomain: ORG });
  const i2 = await createIntermediate(i1);
  const viaOne = await createLeaf(i1, A);
  const viaTwo = await createLeaf(i2, A);
  const unrelated = await createCa({ trustDomain: ORG });

  const one = verifyX509Svid(certs(viaOne, i1), orgBundles);
  t.same(one.path.map((c) => c.fingerprint256), certs(viaOne, i1, orgCa).map((c) => c.fingerprint256));

  for (const order of [
    [i2, i1],
    [i1, i2],
    [unrelated, i1, i2],
    [i1, unrelated, i2, i2],
  ]) {
    const v = verifyX509Svid(certs(viaTwo, ...order), orgBundles);
    t.same(
      v.path.map((c) => c.fingerprint256),
      certs(viaTwo, i2, i1, orgCa).map((c) => c.fingerprint256),
      `order ${order.map((o) => (o === i1 ? 'i1' : o === i2 ? 'i2' : 'x')).join(',')}`,
    );
  }
  t.equal(await code(async () => verifyX509Svid(certs(viaTwo, i2), orgBundles)), 'chain_invalid', 'missing intermediate');
  t.equal(await code(async () => verifyX509Svid(certs(viaTwo, i1), orgBundles)), 'chain_invalid', 'wrong intermediate');
  t.equal(await code(async () => verifyX509Svid(certs(viaTwo), orgBundles)), 'chain_invalid', 'no intermediates');
});

t.test('no bundle pooling across trust domains', async (t) => {
  // The example.org CA signs a leaf claiming partner.example: valid signature, wrong authority.
  const forged = await createLeaf(orgCa, P);
  t.equal(await code(async () => verifyX509Svid([forged.cert], federated)), 'chain_invalid', 'both bundles loaded');
  t.equal(await code(async () => verifyX509Svid([forged.cert], orgBundles)), 'trust_domain_unknown', 'only the signer’s bundle');
  // The same via an intermediate of example.org.
  const orgInter = await createIntermediate(orgCa, { trustDomain: ORG });
  const forgedViaInter = await createLeaf(orgInter, P);
  t.equal(await code(async () => verifyX509Svid(certs(forgedViaInter, orgInter), federated)), 'chain_invalid');
  // Positive controls: the partner CA may sign partner IDs, and the org chain works for org IDs.
  const genuine = await createLeaf(partnerCa, P);
  t.equal(verifyX509Svid([genuine.cert], federated).id.toString(), P);
  t.equal(verifyX509Svid(certs(await createLeaf(orgInter, A), orgInter), federated).id.toString(), A);
});

t.test('federation: each trust domain verifies with its own bundle', async (t) => {
  const a = await createLeaf(orgCa, A);
  const p = await createLeaf(partnerCa, P);
  t.same(verifyX509Svid([a.cert], federated).path.at(-1)!.fingerprint256, orgCa.cert.fingerprint256);
  t.same(verifyX509Svid([p.cert], federated).path.at(-1)!.fingerprint256, partnerCa.cert.fingerprint256);
  t.equal(await code(async () => verifyX509Svid([p.cert], orgBundles)), 'trust_domain_unknown', 'partner bundle absent');
  // Swapped bundles: each trust domain's name bound to the other's CA.
  const swapped = new BundleSet([bundleOf(ORG, partnerCa), bundleOf(PARTNER, orgCa)]);
  t.equal(await code(async () => verifyX509Svid([a.cert], swapped)), 'chain_invalid');
  t.equal(await code(async () => verifyX509Svid([p.cert], swapped)), 'chain_invalid');
});

t.test('intermediate from another trust domain is not usable', async (t) => {
  // Signed by the org root but claiming to be a partner.example CA.
  const alien = await createIntermediate(orgCa, { trustDomain: PARTNER });
  const leaf = await createLeaf(alien, A);
  t.equal(await code(async () => verifyX509Svid(certs(leaf, alien), orgBundles)), 'chain_invalid');
  const proper = await createIntermediate(orgCa, { trustDomain: ORG });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(proper, A), proper), orgBundles)), 'ok', 'positive control');
});

t.test('intermediates must be signing certificates', async (t) => {
  const cases: Array<[string, Parameters<typeof createIntermediate>[1]]> = [
    ['cA=false', { ca: false }],
    ['no basicConstraints', { ca: null }],
    ['no keyCertSign', { keyUsage: ['digitalSignature', 'cRLSign'] }],
    ['non-SPIFFE URI SAN', { uris: ['https://ca.example.org'] }],
  ];
  for (const [name, opts] of cases) {
    const inter = await createIntermediate(orgCa, opts);
    const leaf = await createLeaf(inter, A);
    t.equal(await code(async () => verifyX509Svid(certs(leaf, inter), orgBundles)), 'chain_invalid', name);
  }
  const good = await createIntermediate(orgCa);
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(good, A), good), orgBundles)), 'ok', 'positive control');
});

t.test('a leaf cannot act as an issuer', async (t) => {
  const leafIssuer = await createLeaf(orgCa, 'spiffe://example.org/agent/issuer');
  const victim = await createLeaf(leafIssuer, A);
  t.equal(await code(async () => verifyX509Svid(certs(victim, leafIssuer), orgBundles)), 'chain_invalid');
  t.equal(await code(async () => verifyX509Svid(certs(leafIssuer), orgBundles)), 'ok', 'the issuer itself is a valid SVID');
});

t.test('validity dates on every certificate of the path', async (t) => {
  const now = Date.now();
  const past = { notBefore: new Date(now - 2 * DAY), notAfter: new Date(now - DAY) };
  const future = { notBefore: new Date(now + DAY), notAfter: new Date(now + 2 * DAY) };

  const good = await createLeaf(orgCa, A);
  t.equal(await code(async () => verifyX509Svid([good.cert], orgBundles)), 'ok', 'positive control');

  t.equal(await code(async () => verifyX509Svid([(await createLeaf(orgCa, A, past)).cert], orgBundles)), 'certificate_expired', 'leaf');
  t.equal(
    await code(async () => verifyX509Svid([(await createLeaf(orgCa, A, future)).cert], orgBundles)),
    'certificate_not_yet_valid',
    'leaf',
  );

  const oldInter = await createIntermediate(orgCa, past);
  const underOld = await createLeaf(oldInter, A);
  t.equal(await code(async () => verifyX509Svid(certs(underOld, oldInter), orgBundles)), 'certificate_expired', 'intermediate');

  const oldRoot = await createCa({ trustDomain: ORG, ...past });
  const underOldRoot = await createLeaf(oldRoot, A);
  t.equal(
    await code(async () => verifyX509Svid([underOldRoot.cert], new BundleSet([bundleOf(ORG, oldRoot)]))),
    'certificate_expired',
    'trust anchor',
  );
  const futureRoot = await createCa({ trustDomain: ORG, ...future });
  t.equal(
    await code(async () => verifyX509Svid([(await createLeaf(futureRoot, A)).cert], new BundleSet([bundleOf(ORG, futureRoot)]))),
    'certificate_not_yet_valid',
    'trust anchor',
  );

  // `now` is honoured: the good leaf is expired two days from now and not yet valid last week.
  t.equal(await code(async () => verifyX509Svid([good.cert], orgBundles, new Date(now + 2 * DAY))), 'certificate_expired');
  t.equal(await code(async () => verifyX509Svid([good.cert], orgBundles, new Date(now - 7 * DAY))), 'certificate_not_yet_valid');
  t.equal(await code(async () => verifyX509Svid([good.cert], orgBundles, new Date(now))), 'ok');
  t.equal(await code(async () => verifyX509Svid([good.cert], orgBundles, new Date(NaN))), 'certificate_not_yet_valid', 'invalid now fails closed');
});

t.test('an expired intermediate is skipped when a valid re-issue is presented', async (t) => {
  const now = Date.now();
  const fresh = await createIntermediate(orgCa);
  const stale = await createIntermediate(orgCa, {
    subject: fresh.subject,
    keys: fresh.keys,
    notBefore: new Date(now - 2 * DAY),
    notAfter: new Date(now - DAY),
  });
  const leaf = await createLeaf(fresh, A);
  const v = verifyX509Svid(certs(leaf, stale, fresh), orgBundles);
  t.equal(v.path[1]!.fingerprint256, fresh.cert.fingerprint256);
  t.equal(await code(async () => verifyX509Svid(certs(leaf, stale), orgBundles)), 'certificate_expired', 'only the stale one');
});

t.test('root rotation: either root in the bundle anchors', async (t) => {
  const newRoot = await createCa({ trustDomain: ORG });
  const both = new BundleSet([bundleOf(ORG, orgCa, newRoot)]);
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(orgCa, A)).cert], both)), 'ok');
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(newRoot, A)).cert], both)), 'ok');
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(newRoot, A)).cert], orgBundles)), 'chain_invalid');
});

t.test('untrusted signers', async (t) => {
  const selfSigned = await createCert({ uris: [A], ca: false, keyUsage: ['digitalSignature'] });
  t.equal(await code(async () => verifyX509Svid([selfSigned.cert], orgBundles)), 'chain_invalid', 'self-signed leaf');
  t.equal(await code(async () => verifyX509Svid([selfSigned.cert, orgCa.cert], orgBundles)), 'chain_invalid', 'presenting the root does not help');

  const rogue = await createCa({ trustDomain: ORG });
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(rogue, A)).cert], orgBundles)), 'chain_invalid', 'rogue CA, same TD');
  t.equal(
    await code(async () => verifyX509Svid(certs(await createLeaf(rogue, A), rogue), orgBundles)),
    'chain_invalid',
    'rogue CA presented as intermediate',
  );

  // Same subject name as the trusted root but a different key: names alone must not chain.
  const lookalike = await createCa({ trustDomain: ORG, subject: orgCa.subject });
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(lookalike, A)).cert], orgBundles)), 'chain_invalid', 'look-alike root');

  // Without key identifiers issuer matching is by name only, so only the signature check stands
  // between the look-alike and acceptance.
  const bareRoot = await createCa({ trustDomain: ORG, keyIdentifiers: false });
  const bareTwin = await createCa({ trustDomain: ORG, keyIdentifiers: false, subject: bareRoot.subject });
  const bareBundles = new BundleSet([bundleOf(ORG, bareRoot)]);
  const twinLeaf = await createLeaf(bareTwin, A, { keyIdentifiers: false });
  t.equal(await code(async () => verifyX509Svid([twinLeaf.cert], bareBundles)), 'chain_invalid', 'name-only look-alike');
  const bareLeaf = await createLeaf(bareRoot, A, { keyIdentifiers: false });
  t.equal(await code(async () => verifyX509Svid([bareLeaf.cert], bareBundles)), 'ok', 'positive control (no key ids)');

  t.equal(await code(async () => verifyX509Svid([(await createLeaf(orgCa, A)).cert], orgBundles)), 'ok', 'positive control');
});

t.test('tampered signatures', async (t) => {
  const leaf = await createLeaf(orgCa, A);
  t.equal(await code(async () => verifyX509Svid([leaf.cert], orgBundles)), 'ok', 'positive control');
  t.equal(await code(async () => verifyX509Svid([tamperSignature(leaf.der)], orgBundles)), 'chain_invalid', 'leaf');
  const inter = await createIntermediate(orgCa);
  const underInter = await createLeaf(inter, A);
  t.equal(await code(async () => verifyX509Svid(certs(underInter, inter), orgBundles)), 'ok', 'positive control');
  t.equal(
    await code(async () => verifyX509Svid([underInter.cert, tamperSignature(inter.der)], orgBundles)),
    'chain_invalid',
    'intermediate',
  );
});

t.test('missing bundle', async (t) => {
  const leaf = await createLeaf(orgCa, 'spiffe://other.example/agent/a');
  t.equal(await code(async () => verifyX509Svid([leaf.cert], orgBundles)), 'trust_domain_unknown');
  t.equal(await code(async () => verifyX509Svid([leaf.cert], new BundleSet())), 'trust_domain_unknown');
  t.equal(await code(async () => verifyX509Svid([leaf.cert], orgBundles.with(bundleOf('other.example', orgCa)))), 'ok', 'positive control');
});

t.test('leaf rule violations → svid_invalid', async (t) => {
  const cases: Array<[string, Promise<Issued>]> = [
    ['cA=true', createLeaf(orgCa, A, { ca: true })],
    ['two URI SANs', createLeaf(orgCa, A, { uris: [A, 'spiffe://example.org/agent/b'] })],
    ['no URI SAN', createLeaf(orgCa, A, { uris: [], dnsNames: ['a'] })],
    ['root ID', createLeaf(orgCa, 'spiffe://example.org')],
    ['keyCertSign', createLeaf(orgCa, A, { keyUsage: ['digitalSignature', 'keyCertSign'] })],
    ['no keyUsage', createLeaf(orgCa, A, { keyUsage: null })],
  ];
  for (const [name, pending] of cases) {
    const leaf = await pending;
    t.equal(await code(async () => verifyX509Svid([leaf.cert], orgBundles)), 'svid_invalid', name);
  }
  t.equal(await code(async () => verifyX509Svid([], orgBundles)), 'svid_invalid', 'nothing presented');
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(orgCa, A)).cert], orgBundles)), 'ok', 'positive control');
  try {
    verifyX509Svid([(await createLeaf(orgCa, A, { ca: true })).cert], orgBundles);
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof VerificationError);
    t.match((e as VerificationError).detail, /^ca_leaf: /);
  }
});

t.test('depth limit', async (t) => {
  const chain: Issued[] = [];
  let signer = orgCa;
  for (let i = 0; i < MAX_INTERMEDIATES + 1; i++) {
    signer = await createIntermediate(signer);
    chain.push(signer);
  }
  const atLimit = await createLeaf(chain[MAX_INTERMEDIATES - 1]!, A);
  const beyond = await createLeaf(chain[MAX_INTERMEDIATES]!, A);
  const shuffled = (xs: Issued[]) => [...xs].reverse();
  const v = verifyX509Svid(certs(atLimit, ...shuffled(chain.slice(0, MAX_INTERMEDIATES))), orgBundles);
  t.equal(v.path.length, MAX_INTERMEDIATES + 2, `${MAX_INTERMEDIATES} intermediates accepted`);
  t.equal(await code(async () => verifyX509Svid(certs(beyond, ...shuffled(chain)), orgBundles)), 'chain_invalid', 'one more rejected');
});

t.test('RSA and mixed key types', async (t) => {
  const rsaRoot = await createCa({ trustDomain: ORG, keyAlgorithm: 'RSA-2048' });
  const ecInter = await createIntermediate(rsaRoot);
  const leaf = await createLeaf(ecInter, A, { keyAlgorithm: 'P-384' });
  t.equal(await code(async () => verifyX509Svid(certs(leaf, ecInter), new BundleSet([bundleOf(ORG, rsaRoot)]))), 'ok');
  t.equal(await code(async () => verifyX509Svid(certs(leaf, ecInter), orgBundles)), 'chain_invalid');
});

t.test('VerificationError shape', async (t) => {
  const leaf = await createLeaf(orgCa, 'spiffe://nowhere.example/x');
  try {
    verifyX509Svid([leaf.cert], orgBundles);
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof VerificationError);
    const err = e as VerificationError;
    t.equal(err.code, 'trust_domain_unknown');
    t.match(err.detail, /nowhere\.example/);
    t.equal(err.name, 'VerificationError');
  }
});

async function detail(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (e) {
    if (e instanceof VerificationError) return `${e.code}: ${e.detail}`;
    throw e;
  }
}

const unknownCritical = () => new x509.Extension('1.3.6.1.4.1.55555.1', true, new Uint8Array([0x05, 0x00]));

t.test('X509-SVID §4.3: non-critical keyUsage anywhere below the anchor', async (t) => {
  const leaf = await createLeaf(orgCa, A, { keyUsageCritical: false });
  t.equal(await code(async () => verifyX509Svid([leaf.cert], orgBundles)), 'svid_invalid', 'leaf');
  t.match(await detail(async () => verifyX509Svid([leaf.cert], orgBundles)), /key_usage_not_critical/);
  const inter = await createIntermediate(orgCa, { keyUsageCritical: false });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(inter, A), inter), orgBundles)), 'chain_invalid', 'intermediate');
  const good = await createIntermediate(orgCa, { keyUsageCritical: true });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(good, A), good), orgBundles)), 'ok', 'positive control');
});

t.test('X509-SVID §4.4: leaf EKU without both TLS purposes', async (t) => {
  const leaf = await createLeaf(orgCa, A, { extKeyUsage: [EKU_SERVER_AUTH] });
  t.match(await detail(async () => verifyX509Svid([leaf.cert], orgBundles)), /^svid_invalid: eku_missing_server_or_client_auth/);
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(orgCa, A, { extKeyUsage: null })).cert], orgBundles)), 'ok', 'absent EKU');
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(orgCa, A)).cert], orgBundles)), 'ok', 'both purposes');
});

t.test('X509-SVID §3.2: an intermediate whose SPIFFE ID has a path is unusable', async (t) => {
  const withPath = await createIntermediate(orgCa, { uris: ['spiffe://example.org/spire/server'] });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(withPath, A), withPath), orgBundles)), 'chain_invalid');
  // Still required: its trust domain is the leaf's.
  const otherTd = await createIntermediate(orgCa, { uris: [`spiffe://${PARTNER}`] });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(otherTd, A), otherTd), orgBundles)), 'chain_invalid');
  // Positive controls: the trust-domain ID, or no URI SAN at all.
  const tdId = await createIntermediate(orgCa, { uris: [`spiffe://${ORG}`] });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(tdId, A), tdId), orgBundles)), 'ok');
  const noId = await createIntermediate(orgCa);
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(noId, A), noId), orgBundles)), 'ok');
});

t.test('RFC 5280: basicConstraints pathLenConstraint along the path', async (t) => {
  const root0 = await createCa({ trustDomain: ORG, pathLength: 0 });
  const b0 = new BundleSet([bundleOf(ORG, root0)]);
  const under0 = await createIntermediate(root0);
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(root0, A)).cert], b0)), 'ok', 'root pathLen=0 issuing the leaf');
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(under0, A), under0), b0)), 'chain_invalid', 'root pathLen=0 above an intermediate');
  t.match(await detail(async () => verifyX509Svid(certs(await createLeaf(under0, A), under0), b0)), /pathLenConstraint 0/);

  const inter0 = await createIntermediate(orgCa, { pathLength: 0 });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(inter0, A), inter0), orgBundles)), 'ok', 'intermediate pathLen=0 issuing the leaf');
  const belowInter0 = await createIntermediate(inter0);
  t.equal(
    await code(async () => verifyX509Svid(certs(await createLeaf(belowInter0, A), belowInter0, inter0), orgBundles)),
    'chain_invalid',
    'intermediate pathLen=0 above another intermediate',
  );

  const root1 = await createCa({ trustDomain: ORG, pathLength: 1 });
  const b1 = new BundleSet([bundleOf(ORG, root1)]);
  const i1 = await createIntermediate(root1);
  const i2 = await createIntermediate(i1);
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(i1, A), i1), b1)), 'ok', 'pathLen=1, one intermediate');
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(i2, A), i2, i1), b1)), 'chain_invalid', 'pathLen=1, two intermediates');

  // Self-issued intermediates (same subject as their issuer, e.g. a key roll-over) do not count.
  const rollover = await createIntermediate(root0, { subject: root0.subject });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(rollover, A), rollover), b0)), 'ok', 'self-issued intermediate under pathLen=0');

  // Backtracking: the same intermediate key is presented twice, once too deep; the short path wins.
  const deepK = await createIntermediate(i1, { subject: 'CN=K' });
  const shallowK = await createIntermediate(root1, { subject: 'CN=K', keys: deepK.keys });
  const underK = await createLeaf(deepK, A);
  t.equal(await code(async () => verifyX509Svid(certs(underK, deepK, i1), b1)), 'chain_invalid', 'only the deep path');
  const v = verifyX509Svid(certs(underK, deepK, i1, shallowK), b1);
  t.same(v.path.map((c) => c.fingerprint256), certs(underK, shallowK, root1).map((c) => c.fingerprint256), 'shallow path chosen');
});

t.test('RFC 5280: unrecognized critical extensions on the path', async (t) => {
  t.equal(
    await code(async () => verifyX509Svid([(await createLeaf(orgCa, A, { extraExtensions: [unknownCritical()] })).cert], orgBundles)),
    'svid_invalid',
    'leaf',
  );
  const inter = await createIntermediate(orgCa, { extraExtensions: [unknownCritical()] });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(inter, A), inter), orgBundles)), 'chain_invalid', 'intermediate');
  const root = await createCa({ trustDomain: ORG, extraExtensions: [unknownCritical()] });
  t.equal(
    await code(async () => verifyX509Svid([(await createLeaf(root, A)).cert], new BundleSet([bundleOf(ORG, root)]))),
    'chain_invalid',
    'trust anchor',
  );
  // Positive controls: critical certificatePolicies is recognized; an unknown extension may be non-critical.
  const policies = new x509.CertificatePolicyExtension(['2.5.29.32.0'], true);
  const unknownNonCritical = new x509.Extension('1.3.6.1.4.1.55555.1', false, new Uint8Array([0x05, 0x00]));
  const okRoot = await createCa({ trustDomain: ORG, extraExtensions: [policies, unknownNonCritical] });
  const okInter = await createIntermediate(okRoot, { extraExtensions: [policies, unknownNonCritical] });
  const okLeaf = await createLeaf(okInter, A, { extraExtensions: [policies, unknownNonCritical] });
  t.equal(await code(async () => verifyX509Svid(certs(okLeaf, okInter), new BundleSet([bundleOf(ORG, okRoot)]))), 'ok', 'positive control');
});

t.test('RFC 5280 §4.2.1.10: URI name constraints on the SPIFFE ID', async (t) => {
  const PROD = 'prod.example.org';
  const P_ID = `spiffe://${PROD}/agent/x`;
  type Nc = CertOptions['nameConstraints'];
  // Each case: constraint on the root, and on an intermediate under an unconstrained root.
  const cases: Array<[string, Nc, string, 'ok' | 'chain_invalid']> = [
    ['permitted host, same host', { permitted: [{ type: 'uri', value: ORG }] }, A, 'ok'],
    ['permitted host, case-insensitive', { permitted: [{ type: 'uri', value: 'Example.ORG' }] }, A, 'ok'],
    ['permitted host, other host', { permitted: [{ type: 'uri', value: 'other.example' }] }, A, 'chain_invalid'],
    ['permitted host, a subdomain', { permitted: [{ type: 'uri', value: ORG }] }, P_ID, 'chain_invalid'],
    ['permitted domain, the domain itself', { permitted: [{ type: 'uri', value: `.${ORG}` }] }, A, 'chain_invalid'],
    ['permitted domain, a subdomain', { permitted: [{ type: 'uri', value: `.${ORG}` }] }, P_ID, 'ok'],
    ['permitted: one of several', { permitted: [{ type: 'uri', value: 'x.example' }, { type: 'uri', value: ORG }] }, A, 'ok'],
    ['excluded host', { excluded: [{ type: 'uri', value: ORG }] }, A, 'chain_invalid'],
    ['excluded host, other host', { excluded: [{ type: 'uri', value: 'evil.example' }] }, A, 'ok'],
    ['excluded domain, a subdomain', { excluded: [{ type: 'uri', value: `.${ORG}` }] }, P_ID, 'chain_invalid'],
    ['excluded domain, the domain itself', { excluded: [{ type: 'uri', value: `.${ORG}` }] }, A, 'ok'],
    ['excluded wins over permitted', { permitted: [{ type: 'uri', value: ORG }], excluded: [{ type: 'uri', value: ORG }] }, A, 'chain_invalid'],
    ['only DNS constraints: URI unconstrained', { permitted: [{ type: 'dns', value: 'other.example' }] }, A, 'ok'],
    ['non-critical with an unprocessed form, URI permitted', { permitted: [{ type: 'email', value: 'x.org' }, { type: 'uri', value: ORG }], critical: false }, A, 'ok'],
    ['non-critical, URI not permitted', { permitted: [{ type: 'uri', value: 'other.example' }], critical: false }, A, 'chain_invalid'],
    ['critical with an unprocessed form (fail closed)', { permitted: [{ type: 'email', value: 'x.org' }, { type: 'uri', value: ORG }] }, A, 'chain_invalid'],
  ];
  for (const [name, nameConstraints, id, expected] of cases) {
    const td = id === A ? ORG : PROD;
    const root = await createCa({ trustDomain: td, nameConstraints });
    const rootBundles = new BundleSet([bundleOf(td, root)]);
    t.equal(await code(async () => verifyX509Svid([(await createLeaf(root, id)).cert], rootBundles)), expected, `root: ${name}`);
    const plainRoot = await createCa({ trustDomain: td });
    const inter = await createIntermediate(plainRoot, { nameConstraints });
    const interBundles = new BundleSet([bundleOf(td, plainRoot)]);
    t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(inter, id), inter), interBundles)), expected, `intermediate: ${name}`);
  }
  // The constraint also binds the intermediate's own trust-domain ID (RFC 5280 §6.1.3 (b)).
  const root = await createCa({ trustDomain: ORG, nameConstraints: { permitted: [{ type: 'uri', value: ORG }] } });
  const inter = await createIntermediate(root, { trustDomain: ORG });
  t.equal(await code(async () => verifyX509Svid(certs(await createLeaf(inter, A), inter), new BundleSet([bundleOf(ORG, root)]))), 'ok', 'intermediate in the permitted host');
  t.match(
    await detail(async () => {
      const r = await createCa({ trustDomain: ORG, nameConstraints: { excluded: [{ type: 'uri', value: ORG }] } });
      return verifyX509Svid([(await createLeaf(r, A)).cert], new BundleSet([bundleOf(ORG, r)]));
    }),
    /^chain_invalid: .*excluded URI subtree/,
    'detail names the constraint',
  );
  // A SPIFFE ID whose host is an IP address MUST be rejected whenever URI constraints apply.
  const IP_TD = '10.0.0.1';
  const ipRoot = await createCa({ trustDomain: IP_TD, nameConstraints: { permitted: [{ type: 'uri', value: IP_TD }] } });
  t.equal(
    await code(async () => verifyX509Svid([(await createLeaf(ipRoot, `spiffe://${IP_TD}/a`)).cert], new BundleSet([bundleOf(IP_TD, ipRoot)]))),
    'chain_invalid',
    'IP-address host under URI constraints',
  );
  const ipPlain = await createCa({ trustDomain: IP_TD });
  t.equal(
    await code(async () => verifyX509Svid([(await createLeaf(ipPlain, `spiffe://${IP_TD}/a`)).cert], new BundleSet([bundleOf(IP_TD, ipPlain)]))),
    'ok',
    'positive control: IP-address host without constraints',
  );
});

t.test('RFC 5280 §4.2.1.10: DNS name constraints on the leaf dNSName SANs', async (t) => {
  type Nc = CertOptions['nameConstraints'];
  const cases: Array<[string, Nc, string[], 'ok' | 'chain_invalid']> = [
    ['permitted, exact', { permitted: [{ type: 'dns', value: ORG }] }, [ORG], 'ok'],
    ['permitted, added labels', { permitted: [{ type: 'dns', value: ORG }] }, ['a.b.example.org'], 'ok'],
    ['permitted, label boundary', { permitted: [{ type: 'dns', value: ORG }] }, ['badexample.org'], 'chain_invalid'],
    ['permitted, one of two names outside', { permitted: [{ type: 'dns', value: ORG }] }, ['a.example.org', 'evil.example'], 'chain_invalid'],
    ['permitted with leading dot, the domain itself', { permitted: [{ type: 'dns', value: `.${ORG}` }] }, [ORG], 'chain_invalid'],
    ['permitted with leading dot, subdomain', { permitted: [{ type: 'dns', value: `.${ORG}` }] }, ['A.Example.Org'], 'ok'],
    ['excluded', { excluded: [{ type: 'dns', value: 'secret.example.org' }] }, ['x.secret.example.org'], 'chain_invalid'],
    ['excluded, wildcard that could expand into it', { excluded: [{ type: 'dns', value: 'secret.example.org' }] }, ['*.example.org'], 'chain_invalid'],
    ['excluded, unrelated name', { excluded: [{ type: 'dns', value: 'secret.example.org' }] }, ['public.example.org'], 'ok'],
    ['DNS constraints, leaf without DNS SANs', { permitted: [{ type: 'dns', value: 'other.example' }] }, [], 'ok'],
    ['only URI constraints: DNS unconstrained', { permitted: [{ type: 'uri', value: ORG }] }, ['evil.example'], 'ok'],
  ];
  for (const [name, nameConstraints, dnsNames, expected] of cases) {
    const root = await createCa({ trustDomain: ORG, nameConstraints });
    const leaf = await createLeaf(root, A, { dnsNames });
    t.equal(await code(async () => verifyX509Svid([leaf.cert], new BundleSet([bundleOf(ORG, root)]))), expected, name);
  }
});

t.test('a bundle authority with unprocessable name constraints anchors nothing', async (t) => {
  const bad = await createCa({ trustDomain: ORG, nameConstraints: { excluded: [{ type: 'email', value: 'x.org' }] } });
  const good = await createCa({ trustDomain: ORG, nameConstraints: { excluded: [{ type: 'email', value: 'x.org' }], critical: false } });
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(bad, A)).cert], new BundleSet([bundleOf(ORG, bad)]))), 'chain_invalid');
  t.equal(await code(async () => verifyX509Svid([(await createLeaf(good, A)).cert], new BundleSet([bundleOf(ORG, good)]))), 'ok', 'positive control');
});

t.test('path search stays bounded with many mutually-issuing intermediates', async (t) => {
  // Eight self-issued intermediates sharing one name and key: each verifies the others'
  // signatures, so the search space is every ordering of them (pathLen never prunes self-issued
  // certificates). None leads to the bundle; the call must still return promptly.
  const first = await createIntermediate(await createCa({ trustDomain: ORG }), { subject: 'CN=loop' });
  const loop: Issued[] = [];
  for (let i = 0; i < 8; i++) loop.push(await createCert({ subject: 'CN=loop', keys: first.keys, ca: true, keyUsage: ['keyCertSign'], signer: first }));
  const leaf = await createLeaf(first, A);
  const started = Date.now();
  t.equal(await code(async () => verifyX509Svid(certs(leaf, ...loop), orgBundles)), 'chain_invalid');
  t.ok(Date.now() - started < 2000, 'bounded');
});
