// The TLS attack family against a real `sigil run`: every control is accepted and every attack
// refused. The same attacks aimed at a deliberately permissive TLS server (any client
// certificate, any version, any cipher) must report acceptance, so a pass here cannot come
// from attacks that are unable to see one.
import { writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { caTrustDomain, localOfferProblem, tlsAttacks } from '../../src/probe/attacks/tls.js';
import type { Attack, Outcome, ProbeContext } from '../../src/probe/types.js';
import { BundleSet, SpiffeId, TrustDomain, X509Bundle } from '../../src/spiffe/index.js';
import { createCa, issuerFromPem, type Issued } from '../fixtures/certs.js';
import { listenOnLoopback, runSigil, setupTrustDomain, sidecarConfig, splitAddress, tempDir, waitUntil, writeConfig, type RunningSigil, type Teardown, type TrustDomainFixture } from '../helpers/env.js';
import { startEchoUpstream } from '../helpers/upstream.js';

const ID_PROBE = 'spiffe://example.org/probe/tester';
const ID_TARGET = 'spiffe://example.org/agent/b';
const FEDERATED_TD = 'probe.test';
const STEP_MS = 10_000;

let example: TrustDomainFixture;
let federatedCa: Issued;
let sidecar: RunningSigil;
let probeLeaf: Issued;

t.before(async () => {
  const dir = await tempDir(t, 'sigil-probe-tls-');
  example = await setupTrustDomain(dir, 'example.org');
  federatedCa = await createCa({ trustDomain: FEDERATED_TD });
  const federatedBundle = join(dir, 'probe-test.pem');
  await writeFile(federatedBundle, federatedCa.pem);
  probeLeaf = await example.leaf(ID_PROBE);
  const upstream = await startEchoUpstream(t);
  const config = await writeConfig(
    dir,
    'target.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: example.caDir, spiffeId: ID_TARGET, ttl: '15m' } },
      trust: { bundles: { 'example.org': example.bundlePem, [FEDERATED_TD]: federatedBundle } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      // Only the probe's identity: the federated controls get 403, which is still a handshake.
      policy: { allow: [ID_PROBE] },
    }),
  );
  sidecar = await runSigil(t, config);
});

/** What the lead's runner builds from flags; here by hand for a target at `address`. */
async function buildContext(address: string, withFederated = true, targetKeyType = 'ec'): Promise<ProbeContext> {
  const { host, port } = splitAddress(address);
  const targetId = SpiffeId.parse(ID_TARGET);
  return {
    target: { host, port, expectedId: targetId },
    bundles: new BundleSet([X509Bundle.fromPem(TrustDomain.parse('example.org'), example.ca.pem)]),
    identity: {
      id: SpiffeId.parse(ID_PROBE),
      chain: [probeLeaf.cert],
      certChainPem: probeLeaf.pem,
      keyPem: probeLeaf.keyPem,
      asIssuer: await issuerFromPem(probeLeaf.pem, probeLeaf.keyPem),
    },
    ...(withFederated ? { federatedCa } : {}),
    path: '/',
    stepTimeoutMs: STEP_MS,
    targetLeewayMs: 5_000,
    targetId,
    targetKeyType,
    victim: targetId,
    rogue: {
      sameTrustDomainCa: await createCa({ trustDomain: 'example.org' }),
      otherTrustDomainCa: await createCa({ trustDomain: 'rogue.invalid' }),
      otherTrustDomain: 'rogue.invalid',
    },
    progress: () => {},
  };
}

function step(fn: (ctx: ProbeContext, signal: AbortSignal) => Promise<Outcome>, ctx: ProbeContext): Promise<Outcome> {
  return fn(ctx, AbortSignal.timeout(STEP_MS));
}

// Leaves from the federated CA pass OpenSSL's pooled-anchor filter, so the sidecar's own SPIFFE
// verification is what refuses them (dates aside: OpenSSL checks those itself).
const SPIFFE_LAYER = /^tls\.(federated-(ca-true-leaf|key-cert-sign-leaf|two-uri-sans|no-uri-san|non-spiffe-uri|root-path-id)|cross-trust-domain)$/;

/** The SPIFFE-level refusals the sidecar has logged so far (their `detail`). */
function spiffeRefusals(): string[] {
  return sidecar.proc.lines.filter((l) => l.msg === 'inbound peer refused').map((l) => String(l.detail));
}

/** Attacks this machine's OpenSSL cannot make (e.g. 3DES, RC4 in OpenSSL 3): skipped, with the reason. */
function runnable(ctx: ProbeContext): { run: Attack[]; skipped: Array<[string, string]> } {
  const run: Attack[] = [];
  const skipped: Array<[string, string]> = [];
  for (const a of tlsAttacks()) {
    const why = a.skip?.(ctx);
    if (why) skipped.push([a.id, why]);
    else run.push(a);
  }
  return { run, skipped };
}

t.test('attack ids are unique, kebab-case, family tls', async (t) => {
  const ids = tlsAttacks().map((a) => a.id);
  t.equal(new Set(ids).size, ids.length, 'unique');
  for (const a of tlsAttacks()) {
    t.match(a.id, /^tls\.[a-z0-9]+(-[a-z0-9]+)*$/, a.id);
    t.equal(a.family, 'tls');
  }
  t.equal(caTrustDomain(federatedCa), FEDERATED_TD, 'federated trust domain read from the CA URI SAN');
});

t.test('against sigil: every control accepted, every attack refused before any HTTP response', async (t) => {
  const ctx = await buildContext(sidecar.inbound);
  const { run, skipped } = runnable(ctx);
  for (const [id, why] of skipped) {
    if (id === 'tls.cipher-static-rsa') {
      // The sidecar's dev SVID is EC: static RSA cannot be negotiated with it at all.
      t.match(why, /the target's SVID key is ec/, `${id} skipped against an EC target: ${why}`);
      continue;
    }
    t.match(why, /^cannot be attempted from here: the local OpenSSL/, `${id} skipped only for a local reason: ${why}`);
    // Run anyway, it must not turn into a verdict: an offer never made proves nothing.
    const attack = tlsAttacks().find((a) => a.id === id)!;
    await t.rejects(step(attack.attack, ctx), /not attempted|cipher|protocol/, `${id}: run anyway, it is an error, never a pass`);
  }
  t.ok(run.length >= 26, `${run.length} attacks run`);
  for (const a of run) {
    const control = await step(a.control, ctx);
    t.ok(control.ok, `${a.id} control accepted: ${control.observed}`);
    const before = spiffeRefusals().length;
    const attack = await step(a.attack, ctx);
    t.ok(attack.ok, `${a.id} refused: ${attack.observed}`);
    if (/^tls\.tls-1-/.test(a.id)) t.match(attack.observed, /alert protocol version/, `${a.id}: the server refused the version`);
    if (/^tls\.cipher-/.test(a.id)) t.match(attack.observed, /alert handshake failure/, `${a.id}: the server found no shared cipher`);
    if (SPIFFE_LAYER.test(a.id)) {
      const detail = await waitUntil(() => spiffeRefusals()[before], 2_000);
      t.ok(detail, `${a.id}: refused by the SPIFFE check, past OpenSSL's CA filter (${String(detail)})`);
    }
  }
  // The federated controls are refused by policy after the handshake: proof they reach HTTP.
  const fed = await step(run.find((a) => a.id === 'tls.federated-ca-true-leaf')!.control, ctx);
  t.match(fed.observed, /HTTP 403 policy_denied/, 'federated control: TLS accepted, then denied by policy');
});

t.test('versions the inbound tests rely on are offerable here (so their attacks really run)', async (t) => {
  t.equal(localOfferProblem({ minVersion: 'TLSv1', maxVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }), undefined, 'TLS 1.0');
  t.equal(localOfferProblem({ minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }), undefined, 'TLS 1.1');
  t.match(localOfferProblem({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'X' }), /not a known offer/, 'unknown offers are never assumed possible');
});

t.test('without --federated-ca the federated variants skip and say so', async (t) => {
  const ctx = await buildContext(sidecar.inbound, false);
  const federated = tlsAttacks().filter((a) => a.id.startsWith('tls.federated-') || a.id === 'tls.cross-trust-domain');
  t.equal(federated.length, 9);
  for (const a of federated) t.equal(a.skip?.(ctx), 'needs --federated-ca', a.id);
});

/**
 * A TLS server that accepts anything: any client certificate (or none), TLS 1.0 and up, every
 * cipher OpenSSL has, and both an ECDSA and an RSA SVID so RSA-only suites can be chosen.
 */
async function permissiveServer(t: Teardown): Promise<string> {
  const ec = await example.leaf(ID_TARGET);
  const rsa = await example.leaf(ID_TARGET, { keyAlgorithm: 'RSA-2048' });
  const sockets = new Set<Socket>();
  const server = createHttpsServer(
    {
      cert: [ec.pem, rsa.pem],
      key: [ec.keyPem, rsa.keyPem],
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1',
      ciphers: 'ALL:eNULL@SECLEVEL=0',
    },
    (_req, res) => res.end('anyone is welcome'),
  );
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const { port } = await listenOnLoopback(t, server, sockets);
  return `127.0.0.1:${port}`;
}

t.test('negative control: against a server that accepts anything, every attack reports acceptance', async (t) => {
  const ctx = await buildContext(await permissiveServer(t), true, 'rsa');
  const { run } = runnable(ctx);
  for (const a of run) {
    const control = await step(a.control, ctx);
    t.ok(control.ok, `${a.id} control: ${control.observed}`);
    const attack = await step(a.attack, ctx);
    t.notOk(attack.ok, `${a.id} sees the acceptance: ${attack.observed}`);
    t.match(attack.observed, /^accepted: HTTP 200/, `${a.id}: observed says accepted`);
  }
});
