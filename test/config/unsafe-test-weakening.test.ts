// SIGIL_UNSAFE_TEST_WEAKEN parsing (unknown names refused), and the one weakening that lives in
// a pure component: trust-domain pooling in PeerVerifier. Without the switch a chain from one
// trust domain's CA claiming another domain's ID is refused; with it, accepted — the flaw the
// probe's cross-domain attack detects.
import t from 'tap';
import { parseUnsafeTestWeakening } from '../../src/config/unsafe-test-weakening.js';
import { BundleSet, X509Bundle } from '../../src/spiffe/index.js';
import { PeerVerifier } from '../../src/tls/index.js';
import { createCa, createLeaf } from '../fixtures/certs.js';

t.test('parse', async (t) => {
  t.same([...parseUnsafeTestWeakening(undefined)], []);
  t.same([...parseUnsafeTestWeakening('')], []);
  t.same([...parseUnsafeTestWeakening(' identity-headers , bus-replay ')], ['identity-headers', 'bus-replay']);
  t.throws(() => parseUnsafeTestWeakening('identity-headers,nope'), { code: 'unsafe_weakening_invalid', message: /unknown weakening "nope" \(known: identity-headers, trust-domain-pooling, bus-replay, delegation-actor\)/ });
  t.throws(() => parseUnsafeTestWeakening('toString'), /unknown weakening "toString"/, 'no prototype names');
});

t.test('trust-domain pooling is off unless switched on', async (t) => {
  const example = await createCa({ trustDomain: 'example.org' });
  const partner = await createCa({ trustDomain: 'partner.test' });
  const bundles = new BundleSet([X509Bundle.fromPem('example.org', example.pem), X509Bundle.fromPem('partner.test', partner.pem)]);
  const crossDomain = await createLeaf(partner, 'spiffe://example.org/agent/victim');
  const legit = await createLeaf(example, 'spiffe://example.org/agent/a');

  const strict = new PeerVerifier();
  t.equal(strict.verifyChain([legit.cert], bundles).id.toString(), 'spiffe://example.org/agent/a', 'positive control: a legitimate SVID verifies');
  t.throws(() => strict.verifyChain([crossDomain.cert], bundles), { code: 'peer_untrusted', detail: 'chain_invalid' }, "partner's CA cannot mint example.org identities");

  const pooled = new PeerVerifier({ unsafePoolTrustDomains: true });
  t.equal(pooled.verifyChain([crossDomain.cert], bundles).id.toString(), 'spiffe://example.org/agent/victim', 'weakened: the pooling flaw accepts it');
  const rogue = await createLeaf(await createCa({ trustDomain: 'example.org' }), 'spiffe://example.org/agent/victim');
  t.throws(() => pooled.verifyChain([rogue.cert], bundles), { code: 'peer_untrusted' }, 'even weakened, an unknown CA is refused');
});
