// The verified-chain cache: what may be cached, what must be re-checked on every hit, what drops
// it; and a property check that a warm verifier answers exactly like a fresh one.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { EnvelopeVerifier, ReplayWindow, createEnvelopeSigner, type VerifyContext } from '../../src/bus/envelope/index.js';
import { BundleSet, SpiffeId, type TrustDomain, type X509Bundle } from '../../src/spiffe/index.js';
import { createCa, createIntermediate, createLeaf, type Issued } from '../fixtures/certs.js';
import { bundlesOf, claimsFor, craft, flipChar, headerFor, outcome, svidOf, type Outcome } from '../helpers/envelope.js';

const ORG = 'example.org';
const PARTNER = 'partner.example';
const A = 'spiffe://example.org/agent/a';
const B = 'spiffe://example.org/agent/b';
const P = 'spiffe://partner.example/agent/p';
const NOW = Date.now();
const MIN = 60_000;

/** A BundleSet whose contents can change while it stays the same object (a test double). */
class SwitchableBundles extends BundleSet {
  current: BundleSet;
  constructor(initial: BundleSet) {
    super();
    this.current = initial;
  }
  override get(td: TrustDomain | string): X509Bundle | undefined {
    return this.current.get(td);
  }
}

let ca: Issued;
let leafA: Issued;
let bundles: BundleSet;
let empty: BundleSet;

t.before(async () => {
  ca = await createCa({ trustDomain: ORG });
  leafA = await createLeaf(ca, A);
  bundles = bundlesOf([ORG, ca]);
  empty = new BundleSet();
});

t.test('revoked signer is refused on a cache hit', async (t) => {
  const v = new EnvelopeVerifier();
  const signer = createEnvelopeSigner(svidOf(leafA));
  const revoked = new Set<string>();
  const ctx: VerifyContext = { bundles, nowMs: NOW, isRevoked: (s) => revoked.has(s.serial) };
  t.equal(outcome(v, signer.sign({ subject: 's' }, NOW).jws, ctx), 'ok', 'first: verified and cached');
  t.equal(v.cachedChains, 1);
  t.equal(outcome(v, signer.sign({ subject: 's' }, NOW).jws, ctx), 'ok', 'second: cache hit');
  revoked.add(leafA.cert.serialNumber);
  t.equal(outcome(v, signer.sign({ subject: 's' }, NOW).jws, ctx), 'svid_revoked/revoked', 'revoked while cached');
  t.equal(v.cachedChains, 1, 'the chain is still cached: the hook ran on the hit');
  revoked.clear();
  t.equal(outcome(v, signer.sign({ subject: 's' }, NOW).jws, ctx), 'ok', 'un-revoked');
});

t.test('a new BundleSet object drops the cache', async (t) => {
  const v = new EnvelopeVerifier();
  const signer = createEnvelopeSigner(svidOf(leafA));
  const jws = () => signer.sign({ subject: 's' }, NOW).jws;
  t.equal(outcome(v, jws(), { bundles, nowMs: NOW }), 'ok', 'verified under the CA');
  t.equal(outcome(v, jws(), { bundles: empty, nowMs: NOW }), 'signer_untrusted/trust_domain_unknown', 'CA gone from the new bundle set');
  const otherCa = await createCa({ trustDomain: ORG });
  t.equal(outcome(v, jws(), { bundles: bundlesOf([ORG, otherCa]), nowMs: NOW }), 'signer_untrusted/chain_invalid', 'CA replaced');
  t.equal(outcome(v, jws(), { bundles: bundlesOf([ORG, ca]), nowMs: NOW }), 'ok', 'an equal but new BundleSet verifies afresh');
});

t.test('trustEpoch change drops the cache (same BundleSet object)', async (t) => {
  const switchable = new SwitchableBundles(bundles);
  const v = new EnvelopeVerifier();
  const signer = createEnvelopeSigner(svidOf(leafA));
  const jws = () => signer.sign({ subject: 's' }, NOW).jws;
  t.equal(outcome(v, jws(), { bundles: switchable, nowMs: NOW, trustEpoch: 1 }), 'ok', 'verified and cached at epoch 1');
  switchable.current = empty; // the CA is gone, but the object is the same
  t.equal(outcome(v, jws(), { bundles: switchable, nowMs: NOW, trustEpoch: 1 }), 'ok', 'same object and epoch: the cached chain is used (proves the cache)');
  t.equal(outcome(new EnvelopeVerifier(), jws(), { bundles: switchable, nowMs: NOW, trustEpoch: 1 }), 'signer_untrusted/trust_domain_unknown', 'control: a fresh verifier refuses');
  t.equal(outcome(v, jws(), { bundles: switchable, nowMs: NOW, trustEpoch: 2 }), 'signer_untrusted/trust_domain_unknown', 'epoch bumped: cache dropped, refused');
  switchable.current = bundles;
  t.equal(outcome(v, jws(), { bundles: switchable, nowMs: NOW, trustEpoch: 2 }), 'ok');
  switchable.current = empty;
  t.equal(outcome(v, jws(), { bundles: switchable, nowMs: NOW }), 'signer_untrusted/trust_domain_unknown', 'epoch 2 → undefined is a change too');
});

t.test('validity window re-checked on every hit', async (t) => {
  const shortLeaf = await createLeaf(ca, A, { notAfter: new Date(NOW + 10 * MIN) });
  const inter = await createIntermediate(ca, { notAfter: new Date(NOW + 20 * MIN) });
  const viaInter = await createLeaf(inter, A, { notAfter: new Date(NOW + 60 * MIN) });
  const v = new EnvelopeVerifier();
  for (const [name, leaf, chain, expiresAt] of [
    ['leaf expires', shortLeaf, [], NOW + 10 * MIN],
    ['intermediate expires before the leaf', viaInter, [inter], NOW + 20 * MIN],
  ] as const) {
    const claimsAt = (ms: number) => claimsFor(A, ms);
    const at = (ms: number) => craft({ header: headerFor('ES256', leaf, ...chain), claims: claimsAt(ms), alg: 'ES256', key: leaf.privateKey });
    t.equal(outcome(v, at(NOW), { bundles, nowMs: NOW }), 'ok', `${name}: cached`);
    const before = Math.floor(expiresAt / 1000) * 1000 - 1000;
    t.equal(outcome(v, at(before), { bundles, nowMs: before }), 'ok', `${name}: hit just before expiry`);
    const after = expiresAt + 2000;
    t.equal(outcome(v, at(after), { bundles, nowMs: after }), 'signer_untrusted/certificate_expired', `${name}: refused after expiry though cached`);
  }
  const futureLeaf = await createLeaf(ca, B, { notBefore: new Date(NOW + 5 * MIN) });
  const jws = (ms: number) => craft({ header: headerFor('ES256', futureLeaf), claims: claimsFor(B, ms), alg: 'ES256', key: futureLeaf.privateKey });
  t.equal(outcome(v, jws(NOW + 6 * MIN), { bundles, nowMs: NOW + 6 * MIN }), 'ok', 'cached while valid');
  t.equal(outcome(v, jws(NOW), { bundles, nowMs: NOW }), 'signer_untrusted/certificate_not_yet_valid', 'the cached entry is not used before notBefore');
});

t.test('cache is bounded', async (t) => {
  const v = new EnvelopeVerifier({ cacheLimit: 3 });
  for (let i = 0; i < 5; i++) {
    const leaf = await createLeaf(ca, `spiffe://example.org/agent/n${i}`);
    t.equal(outcome(v, createEnvelopeSigner(svidOf(leaf)).sign({ subject: 's' }, NOW).jws, { bundles, nowMs: NOW }), 'ok');
    t.ok(v.cachedChains <= 3);
  }
  t.equal(v.cachedChains, 3);
});

// ---- property: cached and uncached verification agree ----------------------------------------

/** mulberry32: a small seeded PRNG, so a failure can be reproduced from the seed. */
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

t.test('property: a warm (cached) verifier answers exactly like a fresh one', async (t) => {
  const seed = Number(process.env.ENVELOPE_PROPERTY_SEED ?? 0x5161);
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;

  const otherCa = await createCa({ trustDomain: ORG });
  const partnerCa = await createCa({ trustDomain: PARTNER });
  const inter = await createIntermediate(ca, { notAfter: new Date(NOW + 30 * MIN) });
  const signers = [
    { name: 'A P-256', leaf: leafA, chain: [] as Issued[], id: A },
    { name: 'A P-384', leaf: await createLeaf(ca, A, { keyAlgorithm: 'P-384' }), chain: [], id: A },
    { name: 'B RSA', leaf: await createLeaf(ca, B, { keyAlgorithm: 'RSA-2048' }), chain: [], id: B },
    { name: 'A via intermediate (expires +30 min)', leaf: await createLeaf(inter, A), chain: [inter], id: A },
    { name: 'A via intermediate, intermediate missing', leaf: await createLeaf(inter, A), chain: [], id: A },
    { name: 'B short-lived (+20 min)', leaf: await createLeaf(ca, B, { notAfter: new Date(NOW + 20 * MIN) }), chain: [], id: B },
    { name: 'A from an impostor CA', leaf: await createLeaf(otherCa, A), chain: [], id: A },
    { name: 'P partner', leaf: await createLeaf(partnerCa, P), chain: [], id: P },
  ];
  const algOf = (leaf: Issued, rsa: 'PS256' | 'RS256') => (leaf.keyAlgorithm === 'P-256' ? 'ES256' : leaf.keyAlgorithm === 'P-384' ? 'ES384' : rsa);
  const bundleSets = [bundles, bundlesOf([ORG, ca], [PARTNER, partnerCa]), bundlesOf([ORG, otherCa]), empty];
  const times = [NOW, NOW + 10 * MIN, NOW + 25 * MIN, NOW + 45 * MIN, NOW - 1 * MIN];
  const mutations = ['none', 'none', 'none', 'payload', 'signature', 'iss', 'expired', 'alg', 'aud', 'swap'] as const;

  const warm = new EnvelopeVerifier({ cacheLimit: 4 });
  const warmReplay = new ReplayWindow();
  const revokedSerials = new Set<string>([signers[1]!.leaf.cert.serialNumber]);
  let bundleSet = bundles;
  let epoch = 0;
  const counts = new Map<Outcome, number>();
  const N = 1500;
  let previous = '';
  for (let i = 0; i < N; i++) {
    if (rnd() < 0.05) bundleSet = rnd() < 0.6 ? pick(bundleSets.slice(0, 2)) : pick(bundleSets);
    if (rnd() < 0.02) epoch++;
    const now = pick(times);
    const s = pick(signers);
    const mutation = pick(mutations);
    const alg = mutation === 'alg' ? pick(['ES256', 'ES384', 'PS256', 'RS256'] as const) : algOf(s.leaf, rnd() < 0.5 ? 'PS256' : 'RS256');
    const signAlg = alg.startsWith('ES') === (s.leaf.keyAlgorithm !== 'RSA-2048') ? alg : algOf(s.leaf, 'PS256');
    const claims = claimsFor(mutation === 'iss' ? (s.id === A ? B : A) : s.id, mutation === 'expired' ? now - 10 * MIN : now, mutation === 'aud' ? { aud: [pick([A, B, 'spiffe://example.org/agent/*'])] } : {});
    let jws = craft({ header: headerFor(alg, s.leaf, ...s.chain), claims, alg: signAlg, key: s.leaf.privateKey });
    if (mutation === 'payload') jws = flipChar(jws, 1, 10);
    if (mutation === 'signature') jws = flipChar(jws, 2, 10);
    if (mutation === 'swap' && previous) jws = previous.split('.')[0] + jws.slice(jws.indexOf('.'));
    previous = jws;
    const ctx: VerifyContext = {
      bundles: bundleSet,
      nowMs: now,
      trustEpoch: epoch,
      self: SpiffeId.parse(B),
      isRevoked: (x) => revokedSerials.has(x.serial),
    };
    const cold = outcome(new EnvelopeVerifier(), jws, { ...ctx, replay: new ReplayWindow() });
    const hot = outcome(warm, jws, { ...ctx, replay: warmReplay });
    counts.set(cold, (counts.get(cold) ?? 0) + 1);
    if (cold !== hot) {
      t.fail(`case ${i} (seed ${seed}): ${s.name}, ${mutation}, alg ${alg}, t+${(now - NOW) / MIN} min: fresh ${cold}, warm ${hot}`);
      return;
    }
    // Replay: the warm window has seen this exact envelope now; a second delivery is a replay
    // exactly when the first was accepted.
    if (rnd() < 0.1) t.equal(outcome(warm, jws, { ...ctx, replay: warmReplay }), cold === 'ok' ? 'replay/seen' : cold);
  }
  t.pass(`${N} cases agree; outcomes: ${[...counts].map(([k, n]) => `${k} ${n}`).join(', ')}`);
  t.ok((counts.get('ok') ?? 0) > N / 10, 'enough accepted cases');
  t.ok(counts.size >= 8, 'a variety of outcomes');
});

// ---- ReplayWindow on its own -------------------------------------------------------------------

t.test('ReplayWindow: retention, purge, bounds', async (t) => {
  const w = new ReplayWindow({ maxEntries: 1000 });
  t.equal(w.maxEntries, 1000);
  t.equal(new ReplayWindow().maxEntries, 200_000, 'default');
  t.throws(() => new ReplayWindow({ maxEntries: 0 }), RangeError);
  const jti = () => randomBytes(16).toString('base64url');
  const x = jti();
  t.equal(w.checkAndRecord(A, x, 10_000, 0), 'recorded');
  t.equal(w.checkAndRecord(A, x, 10_000, 1), 'seen');
  t.equal(w.checkAndRecord(B, x, 10_000, 1), 'recorded', 'keyed by (iss, jti)');
  t.ok(w.has(A, x, 10_000), 'kept through its retention time');
  t.notOk(w.has(A, x, 10_001), 'forgotten after');
  t.equal(w.size, 0);
  const y = jti();
  t.equal(w.checkAndRecord(A, y, 20_500, 20_000), 'recorded');
  t.ok(w.has(A, y, 21_000), 'kept up to the end of its bucket second (never less than its retention)');
  t.notOk(w.has(A, y, 21_001));
  // Out-of-order retention times purge correctly.
  const keys = Array.from({ length: 500 }, (_, i) => ({ k: jti(), until: ((i * 7919) % 100) * 1000 + 50_000 }));
  for (const { k, until } of keys) t.equal(w.checkAndRecord(A, k, until, 40_000), 'recorded');
  t.equal(w.size, 500);
  for (let now = 50_000; now <= 150_000; now += 10_000) {
    w.purge(now);
    const live = keys.filter(({ until }) => Math.ceil(until / 1000) * 1000 >= now).length;
    if (w.size !== live) t.fail(`at ${now}: size ${w.size}, expected ${live}`);
  }
  t.equal(w.size, 0, 'all purged');
  t.equal(w.checkAndRecord(A, jti(), NaN, 0), 'full', 'a retention that never ends is refused');
  // Full: refuses without evicting.
  const small = new ReplayWindow({ maxEntries: 2 });
  t.equal(small.checkAndRecord(A, 'a', 5000, 0), 'recorded');
  t.equal(small.checkAndRecord(A, 'b', 9000, 0), 'recorded');
  t.equal(small.checkAndRecord(A, 'c', 9000, 0), 'full');
  t.equal(small.checkAndRecord(A, 'a', 9000, 0), 'seen');
  t.equal(small.checkAndRecord(A, 'c', 9000, 5001), 'recorded', 'room once one expired');
  small.clear();
  t.equal(small.size, 0);
});

t.test('ReplayWindow: purge cost does not grow with the clock jump', async (t) => {
  const w = new ReplayWindow();
  for (let i = 0; i < 50_000; i++) w.checkAndRecord(A, String(i), 1000 * (1 + (i % 300)), 0);
  const t0 = performance.now();
  w.purge(1e15); // a clock jump of ~30,000 years: the heap is per bucket, not per second
  const ms = performance.now() - t0;
  t.equal(w.size, 0);
  t.ok(ms < 500, `purged 50k entries in ${ms.toFixed(1)} ms`);
});
