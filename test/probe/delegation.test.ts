// The delegation attack family on real processes: a `sigil broker` (3 s tokens, so the expiry
// attack fits in its wait), a user token from the dev IdP, and a `sigil run` target that verifies
// the broker's tokens and forwards to the probe's echo upstream. Every control must be accepted
// and every attack refused with its reason. The same battery aimed at a permissive mTLS server
// (200 to anything) must report every attack as not rejected, and a server that refuses
// everything must fail the control: a pass here cannot come from attacks that cannot see an
// acceptance.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { initDevIdp, mintDevUserToken } from '../../src/delegation/index.js';
import { delegationAttacks, delegationRefused } from '../../src/probe/attacks/delegation.js';
import { BrokerError, exchangeToken, fetchBrokerJwks } from '../../src/probe/broker-client.js';
import type { Exchange } from '../../src/probe/client.js';
import { startEchoUpstream, type EchoUpstream } from '../../src/probe/echo.js';
import { issuerFromPem } from '../../src/probe/mint.js';
import { AttackSkipped, type Attack, type Outcome, type ProbeContext } from '../../src/probe/types.js';
import { BundleSet, SpiffeId, TrustDomain, X509Bundle } from '../../src/spiffe/index.js';
import { createCa, type Issued } from '../fixtures/certs.js';
import { listenOnLoopback, runBroker, runSigil, setupTrustDomain, sidecarConfig, splitAddress, tempDir, waitUntil, writeConfig, type RunningBroker, type RunningSigil, type Teardown, type TrustDomainFixture } from '../helpers/env.js';

const TD = 'example.org';
const FEDERATED_TD = 'probe.test';
const ID_PROBE = 'spiffe://example.org/probe/tester';
const ID_TARGET = 'spiffe://example.org/agent/b';
const ID_OTHER = 'spiffe://example.org/agent/other';
const ID_PERMISSIVE = 'spiffe://example.org/agent/permissive';
const ID_VAULT = 'spiffe://example.org/vault';
const ID_BROKER = 'spiffe://example.org/broker';
const ISSUER = 'https://broker.example.org';
const STEP_MS = 10_000;
const EXPIRY_WAIT_MS = 10_000;

const BROKER_POLICY = `
@id("probe-acts-within-example") permit (principal == Agent::"${ID_PROBE}", action == Action::"delegation.exchange", resource in TrustDomain::"${TD}");
@id("no-vault") forbid (principal, action == Action::"delegation.exchange", resource == Agent::"${ID_VAULT}");
`;

let example: TrustDomainFixture;
let federatedCa: Issued;
let rogue: ProbeContext['rogue'];
let probeLeaf: Issued;
let broker: RunningBroker;
let sidecar: RunningSigil;
let echo: EchoUpstream;
let subjectToken: string;

t.before(async () => {
  const dir = await tempDir(t, 'sigil-probe-delegation-');
  example = await setupTrustDomain(dir, TD);
  federatedCa = await createCa({ trustDomain: FEDERATED_TD });
  await writeFile(join(dir, 'probe-test.pem'), federatedCa.pem);
  probeLeaf = await example.leaf(ID_PROBE);
  rogue = { sameTrustDomainCa: await createCa({ trustDomain: TD }), otherTrustDomainCa: await createCa({ trustDomain: 'rogue.invalid' }), otherTrustDomain: 'rogue.invalid' };
  const idp = await initDevIdp(join(dir, 'dev-idp'));
  subjectToken = await mintDevUserToken(join(dir, 'dev-idp'), { sub: 'alice', scope: ['read', 'write'], audience: 'sigil-broker', ttlSeconds: 600 });
  await writeFile(join(dir, 'broker.cedar'), BROKER_POLICY);
  broker = await runBroker(
    t,
    await writeConfig(dir, 'broker.yaml', {
      trustDomain: TD,
      identity: { dev: { caDir: example.caDir, spiffeId: ID_BROKER, ttl: '15m' } },
      listen: '127.0.0.1:0',
      admin: { listen: '127.0.0.1:0' },
      issuer: ISSUER,
      signingKeys: './broker-keys',
      jwksOut: './broker-jwks.json',
      maxTtl: '3s',
      subjectIssuers: [{ issuer: idp.issuer, audience: 'sigil-broker', jwks: idp.jwksPath }],
      policy: { cedar: './broker.cedar' },
      shutdown: { drainTimeout: '1s' },
    }),
  );
  await waitUntil(() => existsSync(join(dir, 'broker-jwks.json')), 5_000);
  echo = await startEchoUpstream('127.0.0.1', 0, randomBytes(8).toString('hex'));
  t.teardown(() => echo.close());
  sidecar = await runSigil(
    t,
    await writeConfig(
      dir,
      'target.yaml',
      sidecarConfig({
        trustDomain: TD,
        identity: { dev: { caDir: example.caDir, spiffeId: ID_TARGET, ttl: '15m' } },
        trust: { bundles: { [FEDERATED_TD]: './probe-test.pem' } },
        inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${echo.address.port}` },
        // The federated "thief" is allowed to connect, so the stolen token reaches the delegation check.
        policy: { allow: [ID_PROBE, `spiffe://${FEDERATED_TD}/**`] },
        // Default leeway (5 s): the probe assumes it.
        delegation: { issuer: ISSUER, jwks: './broker-jwks.json' },
      }),
    ),
  );
});

/** What the lead's runner builds from flags; here by hand. */
async function buildContext(address: string, targetId: string, over: Partial<ProbeContext> = {}): Promise<ProbeContext> {
  const { host, port } = splitAddress(address);
  const id = SpiffeId.parse(targetId);
  return {
    target: { host, port, expectedId: id },
    bundles: new BundleSet([X509Bundle.fromPem(TrustDomain.parse(TD), example.ca.pem)]),
    identity: {
      id: SpiffeId.parse(ID_PROBE),
      chain: [probeLeaf.cert],
      certChainPem: probeLeaf.pem,
      keyPem: probeLeaf.keyPem,
      asIssuer: await issuerFromPem(probeLeaf.pem, probeLeaf.keyPem),
    },
    federatedCa,
    path: '/',
    stepTimeoutMs: STEP_MS,
    targetLeewayMs: 5_000,
    targetId: id,
    victim: id,
    rogue,
    progress: () => {},
    delegation: {
      brokerUrl: new URL(`https://${broker.address}/token`),
      brokerId: SpiffeId.parse(ID_BROKER),
      subjectToken,
      header: 'authorization',
      otherAudience: SpiffeId.parse(ID_OTHER),
      expiryWaitMs: EXPIRY_WAIT_MS,
    },
    ...over,
  };
}

interface Reading {
  id: string;
  control: Outcome;
  attack: Outcome;
}

/** Control then attack, each bounded as the runner bounds them. */
async function runBattery(ctx: ProbeContext): Promise<Reading[]> {
  const readings: Reading[] = [];
  for (const attack of delegationAttacks()) {
    if (attack.skip?.(ctx) !== undefined) throw new Error(`${attack.id} skipped: ${attack.skip(ctx)}`);
    const control = await attack.control(ctx, AbortSignal.timeout(STEP_MS));
    readings.push({ id: attack.id, control, attack: await attack.attack(ctx, AbortSignal.timeout(attack.timeoutMs?.(ctx) ?? STEP_MS)) });
  }
  return readings;
}

/** An mTLS server with a valid SVID of the target's trust domain that answers `status` to anything. */
async function fakeTarget(t: Teardown, id: string, status: number): Promise<string> {
  const leaf = await example.leaf(id);
  const sockets = new Set<Socket>();
  const server = createHttpsServer({ cert: leaf.pem, key: leaf.keyPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    req.resume();
    const headers: Record<string, string> = { 'content-type': 'text/plain' };
    if (status === 401) headers['www-authenticate'] = 'Bearer realm="fake", error="invalid_token", error_description="delegation_invalid"';
    res.writeHead(status, headers).end('fake\n');
  });
  server.on('secureConnection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const { port } = await listenOnLoopback(t, server, sockets);
  return `127.0.0.1:${port}`;
}

const REAL_REFUSALS: Record<string, RegExp> = {
  'delegation.wrong-audience': /^HTTP 401 audience_mismatch \(aud\)$/,
  'delegation.actor-mismatch': /^HTTP 401 actor_mismatch \(actor\)$/,
  'delegation.alg-none': /^HTTP 401 delegation_invalid \(alg\)$/,
  'delegation.hs256-key-confusion': /^HTTP 401 delegation_invalid \(alg\)$/,
  'delegation.tampered-claims': /^HTTP 401 delegation_invalid \(bad_signature\)$/,
  'delegation.widened-scope': /^HTTP 401 delegation_invalid \(bad_signature\)$/,
  'delegation.expired': /^HTTP 401 delegation_expired \(expired\)$/,
};

t.test('the broker client: exchange, JWKS, typed refusals, no token in any message', async (t) => {
  const ctx = await buildContext(sidecar.inbound, ID_TARGET);
  const issued = await exchangeToken(ctx, { audience: ID_TARGET, scope: ['read'] }, AbortSignal.timeout(STEP_MS));
  t.match(issued.token, /^eyJ[\w-]+\.[\w-]+\.[\w-]+$/, 'a compact JWS');
  t.ok(issued.expiresIn > 0 && issued.expiresIn <= 3, `expires_in within maxTtl (${issued.expiresIn})`);
  const jwks = await fetchBrokerJwks(ctx, AbortSignal.timeout(STEP_MS));
  t.match(jwks.keys[0], { kty: 'EC', kid: String }, 'the broker JWKS');

  const refused = await exchangeToken(ctx, { audience: ID_VAULT }, AbortSignal.timeout(STEP_MS)).catch((e: unknown) => e);
  t.ok(refused instanceof BrokerError, 'a broker refusal is a BrokerError');
  t.match(refused, { code: 'invalid_target', status: 400 }, 'with the OAuth error code');
  const impostor = await buildContext(sidecar.inbound, ID_TARGET, { delegation: { ...ctx.delegation!, brokerId: SpiffeId.parse(ID_OTHER) } });
  const unverified = await exchangeToken(impostor, { audience: ID_TARGET }, AbortSignal.timeout(STEP_MS)).catch((e: unknown) => e);
  t.match(unverified, { code: 'broker_unverified' }, 'a broker with another SPIFFE ID is never sent the subject token');
  const plain = await buildContext(sidecar.inbound, ID_TARGET, { delegation: { ...ctx.delegation!, brokerUrl: new URL(`http://${broker.address}/token`) } });
  t.match(await exchangeToken(plain, { audience: ID_TARGET }, AbortSignal.timeout(STEP_MS)).catch((e: unknown) => e), { code: 'bad_url' }, 'http:// is refused');
  for (const err of [refused, unverified] as Error[]) t.notMatch(err.message, /eyJ/, `no token text in "${err.message}"`);
});

t.test('a real sidecar accepts every control and rejects every attack; a permissive target fails every attack', async (t) => {
  // Both batteries at once: each waits ~9 s in the expiry attack.
  const permissive = await fakeTarget(t, ID_PERMISSIVE, 200);
  const [real, open] = await Promise.all([
    buildContext(sidecar.inbound, ID_TARGET, { echo }).then(runBattery),
    buildContext(permissive, ID_PERMISSIVE).then(runBattery),
  ]);
  t.same(real.map((r) => r.id), Object.keys(REAL_REFUSALS), 'the seven attacks, in order');
  for (const r of real) {
    t.ok(r.control.ok, `${r.id} control accepted: ${r.control.observed}`);
    t.match(r.control.observed, /^HTTP 200; the agent got the verified delegation$/, `${r.id} control: the echo saw the token's delegation`);
    t.ok(r.attack.ok, `${r.id} rejected: ${r.attack.observed}`);
    t.match(r.attack.observed, REAL_REFUSALS[r.id]!, `${r.id}: the reason names the broken rule`);
  }
  for (const r of open) {
    t.ok(r.control.ok, `permissive ${r.id} control accepted: ${r.control.observed}`);
    t.notOk(r.attack.ok, `permissive ${r.id} reported as not rejected: ${r.attack.observed}`);
    t.match(r.attack.observed, /^accepted: HTTP 200/, `permissive ${r.id}: says it was accepted`);
  }
  const everything = JSON.stringify([real, open]);
  t.notMatch(everything, /eyJ/, 'no token text in any observation');
  t.notMatch(everything, /alice/, 'nor the user');
});

t.test('a target that refuses every token fails the control', async (t) => {
  const ctx = await buildContext(await fakeTarget(t, ID_PERMISSIVE, 401), ID_PERMISSIVE);
  const control = await delegationAttacks()[0]!.control(ctx, AbortSignal.timeout(STEP_MS));
  t.notOk(control.ok, `control not accepted: ${control.observed}`);
});

t.test('the expiry attack skips when the broker tokens outlive --expiry-wait', async (t) => {
  const attack = byId('delegation.expired');
  const ctx = await buildContext(sidecar.inbound, ID_TARGET, {});
  ctx.delegation!.expiryWaitMs = 2_000;
  const err = await attack.attack(ctx, AbortSignal.timeout(STEP_MS)).catch((e: unknown) => e);
  t.ok(err instanceof AttackSkipped, 'AttackSkipped (the runner turns it into skip)');
  t.match((err as Error).message, /the broker's tokens live 3 s; pass --expiry-wait ≥ 9s/);
  t.equal(attack.timeoutMs?.(ctx), STEP_MS + 2_000, 'the attack step is bounded by the wait plus a step');
});

t.test('skip reasons name the missing inputs', async (t) => {
  const bare = await buildContext(sidecar.inbound, ID_TARGET);
  delete bare.delegation;
  for (const attack of delegationAttacks()) t.equal(attack.skip?.(bare), 'needs --broker and --subject-token', `${attack.id} without a broker`);
  const noFederated = await buildContext(sidecar.inbound, ID_TARGET);
  delete noFederated.federatedCa;
  t.equal(byId('delegation.actor-mismatch').skip?.(noFederated), 'needs --federated-ca');
  t.equal(byId('delegation.alg-none').skip?.(noFederated), undefined, 'the others do not need it');
  const noWait = await buildContext(sidecar.inbound, ID_TARGET);
  noWait.delegation!.expiryWaitMs = 0;
  t.match(byId('delegation.expired').skip?.(noWait), /needs --expiry-wait/);
});

t.test('the attack reading: only a 401 with the rule\'s reason is a rejection', async (t) => {
  const response = (status: number, reason?: string): Exchange => ({
    kind: 'response',
    status,
    headers: reason ? { 'www-authenticate': `Bearer realm="sigil", error="invalid_token", error_description="${reason}"` } : {},
    body: reason ? JSON.stringify({ error: 'unauthorized', reason, detail: 'aud' }) : '{}',
    serverId: SpiffeId.parse(ID_TARGET),
    serverKeyType: 'ec',
  });
  const rule = { proving: ['audience_mismatch'] };
  t.same(delegationRefused(response(401, 'audience_mismatch'), rule), { ok: true, observed: 'HTTP 401 audience_mismatch (aud)' });
  t.same(delegationRefused(response(200), rule), { ok: false, observed: 'accepted: HTTP 200' }, 'accepted: not rejected');
  t.match(delegationRefused(response(404), rule), { ok: false }, 'a 404 from the agent side also went through');
  t.match(delegationRefused(response(403, 'policy_denied'), rule), { ok: false, observed: /got past the delegation check/ }, 'a 403 where a 401 was due: the token was accepted');
  t.throws(() => delegationRefused(response(403, 'policy_denied'), { ...rule, policyFirst: true }), { name: 'AttackSkipped', message: /policy refused the other agent before its token was judged/ }, 'policy refusing the peer first proves nothing about the token: skipped, not passed');
  t.throws(() => delegationRefused(response(401, 'delegation_expired'), rule), /does not show the rule under test/, 'a 401 for another reason proves nothing');
  t.throws(() => delegationRefused(response(502), rule), /nothing can be concluded/);
  t.throws(() => delegationRefused({ kind: 'refused', detail: 'ECONNRESET' }, rule), /closed the connection/);
});

function byId(id: string): Attack {
  const attack = delegationAttacks().find((a) => a.id === id);
  if (!attack) throw new Error(`no attack ${id}`);
  return attack;
}
