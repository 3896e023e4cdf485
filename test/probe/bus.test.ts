// The bus attacks against a real nats-server (TLS, client certificates verified against the
// trust bundle) and a real `sigil run` target: every control must be delivered and every attack
// refused. Then the same battery against a stand-in target that delivers whatever the broker
// hands it (no verification at all): its controls pass too, and every attack must read as
// delivered, which proves the probe's "not delivered" is a detection and not a blind spot.
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import t from 'tap';
import { WebSocketServer } from 'ws';
import { createEnvelopeSigner } from '../../src/bus/envelope/index.js';
import { busAttacks, closeBus } from '../../src/probe/attacks/bus.js';
import type { Attack, Outcome, ProbeContext } from '../../src/probe/types.js';
import { BundleSet, SpiffeId, X509Bundle } from '../../src/spiffe/index.js';
import { createCa, issuerFromPem, type Issued } from '../fixtures/certs.js';
import { svidOf } from '../helpers/envelope.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, waitUntil, writeConfig, type Teardown, type TrustDomainFixture } from '../helpers/env.js';
import { startNats, withNatsServer, type RunningNats } from '../helpers/nats.js';
import { metricSum, metrics } from '../helpers/observe.js';

const TD = 'example.org';
const FEDERATED_TD = 'probe-federated.test';
const ID_TARGET = 'spiffe://example.org/agent/target';
const ID_NAIVE = 'spiffe://example.org/agent/naive';
const ID_PROBE = 'spiffe://example.org/probe';
const SUBJECT = 'probe.bus';
const WINDOW_MS = 600;

/** The reason a correct Sigil target refuses each attack with (its metric label). */
const REASONS: Record<string, string> = {
  'bus.forged-envelope': 'signer_untrusted',
  'bus.untrusted-signer': 'signer_untrusted',
  'bus.svid-as-ca': 'signer_untrusted',
  'bus.cross-domain-signer': 'signer_untrusted',
  'bus.issuer-mismatch': 'issuer_mismatch',
  'bus.tampered-payload': 'signature_invalid',
  'bus.replay': 'replay',
  'bus.replay-new-subscription': 'replay',
  'bus.subject-moved': 'subject_mismatch',
  'bus.expired-envelope': 'envelope_expired',
  'bus.alg-none': 'alg_not_allowed',
};

// The target's agent may publish on probe.*; every workload of the trust domain is delivered there.
const POLICY = `
@id("target-publishes") permit (principal == Agent::"${ID_TARGET}", action == Action::"bus.publish", resource)
when { resource.subject like "probe.*" };
@id("deliver-probe") permit (principal in TrustDomain::"${TD}", action == Action::"bus.deliver", resource)
when { resource.subject like "probe.*" };
`;

await withNatsServer(t, suite);

interface Fixture {
  td: TrustDomainFixture;
  federated: TrustDomainFixture;
  nats: RunningNats;
  probeLeaf: Issued;
}

/** A ProbeContext as the CLI would build it, for a target whose local bus API is `local`. */
async function contextFor(f: Fixture, targetId: string, local: URL): Promise<ProbeContext> {
  const id = SpiffeId.parse(targetId);
  return {
    target: { host: '127.0.0.1', port: 1 },
    bundles: new BundleSet([new X509Bundle(TD, [f.td.ca.cert]), new X509Bundle(FEDERATED_TD, [f.federated.ca.cert])]),
    identity: {
      id: SpiffeId.parse(ID_PROBE),
      chain: [f.probeLeaf.cert],
      certChainPem: f.probeLeaf.pem,
      keyPem: f.probeLeaf.keyPem,
      asIssuer: await issuerFromPem(f.probeLeaf.pem, f.probeLeaf.keyPem),
    },
    federatedCa: f.federated.ca,
    path: '/',
    bus: { servers: [f.nats.url], local, subject: SUBJECT, natsCa: f.nats.caPem, deliveryWindowMs: WINDOW_MS },
    stepTimeoutMs: 10_000,
    targetLeewayMs: 5_000,
    targetId: id,
    victim: id,
    rogue: { sameTrustDomainCa: await createCa({ trustDomain: TD }), otherTrustDomainCa: await createCa({ trustDomain: 'rogue.invalid' }), otherTrustDomain: 'rogue.invalid' },
    progress: () => undefined,
  };
}

/** Control then attack, each bounded by the step timeout, as the runner does. */
async function runPair(ctx: ProbeContext, attack: Attack): Promise<{ control: Outcome; attack: Outcome }> {
  const control = await attack.control(ctx, AbortSignal.timeout(ctx.stepTimeoutMs));
  return { control, attack: await attack.attack(ctx, AbortSignal.timeout(ctx.stepTimeoutMs)) };
}

/**
 * A "sidecar" that checks nothing: its local API delivers every broker message's claims as
 * they are and signs publishes with its own SVID. A probe that reads it as safe would be blind.
 */
async function naiveTarget(t: Teardown, f: Fixture, leaf: Issued): Promise<URL> {
  const nc: NatsConnection = await connect({ servers: [f.nats.url], tls: { cert: leaf.pem, key: leaf.keyPem, ca: f.nats.caPem }, name: 'naive target' });
  const signer = createEnvelopeSigner(svidOf(leaf));
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const { subject, data } = JSON.parse(body) as { subject: string; data: unknown };
      const signed = signer.sign({ subject, data });
      nc.publish(subject, signed.jws);
      res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ subject, jti: signed.jti, exp: signed.exp }));
    });
  });
  const wss = new WebSocketServer({ server, path: '/bus' });
  wss.on('connection', (ws) => {
    ws.on('message', async (raw: Buffer) => {
      const frame = JSON.parse(raw.toString()) as { op: string; id: string; subject: string };
      if (frame.op !== 'subscribe') return;
      nc.subscribe(frame.subject, {
        callback: (_err, msg) => {
          const claims = JSON.parse(Buffer.from(msg.string().split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>;
          ws.send(JSON.stringify({ op: 'message', id: frame.id, subject: msg.subject, from: claims.iss, jti: claims.jti, data: claims.data }));
        },
      });
      await nc.flush();
      ws.send(JSON.stringify({ op: 'subscribed', id: frame.id, subject: frame.subject }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await nc.close();
  });
  const { port } = server.address() as { port: number };
  return new URL(`http://127.0.0.1:${port}`);
}

async function suite(natsBinary: string): Promise<void> {
  const dir = await tempDir(t);
  const td = await setupTrustDomain(dir, TD);
  const federated = await setupTrustDomain(dir, FEDERATED_TD);
  const nats = await startNats(t, natsBinary, td.ca.pem);
  const f: Fixture = { td, federated, nats, probeLeaf: await td.leaf(ID_PROBE) };
  await writeFile(join(dir, 'policy.cedar'), POLICY);

  t.test('skip: without the bus options, and when the victim is the test identity', async (t) => {
    const ctx = await contextFor(f, ID_TARGET, new URL('http://127.0.0.1:1'));
    const { bus: _bus, ...noBus } = ctx;
    for (const a of busAttacks()) t.equal(a.skip?.(noBus), 'needs --nats, --bus-local and --bus-subject', a.id);
    const self = { ...ctx, victim: ctx.identity.id };
    const skipped = busAttacks().filter((a) => a.skip?.(self) !== undefined).map((a) => a.id);
    t.same(skipped.sort(), ['bus.cross-domain-signer', 'bus.forged-envelope', 'bus.issuer-mismatch', 'bus.svid-as-ca', 'bus.untrusted-signer']);
    t.equal(busAttacks().find((a) => a.id === 'bus.cross-domain-signer')?.skip?.({ ...ctx, federatedCa: undefined }), 'needs --federated-ca (a probe-only trust domain the target federates with)');
  });

  t.test('a real Sigil target: every control delivered, every attack refused', async (t) => {
    const target = await runSigil(
      t,
      await writeConfig(
        dir,
        'target.yaml',
        sidecarConfig({
          trustDomain: TD,
          identity: { dev: { caDir: td.caDir, spiffeId: ID_TARGET, ttl: '15m' } },
          trust: { bundles: { [FEDERATED_TD]: federated.bundlePem } },
          bus: { local: '127.0.0.1:0', nats: { servers: [nats.url], tls: { ca: nats.caFile } } },
          policy: { cedar: './policy.cedar' },
        }),
      ),
    );
    const ctx = await contextFor(f, ID_TARGET, new URL(`http://${String(target.ready.bus)}`));
    t.teardown(() => closeBus(ctx));
    const rejected = async (reason: string): Promise<number> =>
      metricSum(await metrics(target), 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected', reason });
    for (const attack of busAttacks()) {
      const reason = REASONS[attack.id]!;
      t.match(attack.expected, reason, `${attack.id} documents ${reason}`);
      const before = await rejected(reason);
      const r = await runPair(ctx, attack);
      t.ok(r.control.ok, `${attack.id} control: ${r.control.observed}`);
      t.ok(r.attack.ok, `${attack.id} attack: ${r.attack.observed}`);
      t.equal(r.attack.observed, 'not delivered (a correct message sent after it was)');
      // Refused for the one thing the attack changed, not for something else along the way.
      await waitUntil(async () => (await rejected(reason)) > before, 3_000);
      // The replay to a new subscription is refused twice: by the old subscription's window and the new one's start.
      const times = attack.id === 'bus.replay-new-subscription' ? 2 : 1;
      await waitUntil(async () => (await rejected(reason)) - before >= times, 3_000);
      t.equal((await rejected(reason)) - before, times, `${attack.id} counted as ${reason} by the target`);
    }
    await closeBus(ctx);
    await closeBus(ctx); // idempotent
  });

  t.test('negative control: a target that delivers everything fails every attack', async (t) => {
    const local = await naiveTarget(t, f, await td.leaf(ID_NAIVE));
    const ctx = await contextFor(f, ID_NAIVE, local);
    t.teardown(() => closeBus(ctx));
    for (const attack of busAttacks()) {
      const r = await runPair(ctx, attack);
      t.ok(r.control.ok, `${attack.id} control: ${r.control.observed}`);
      t.notOk(r.attack.ok, `${attack.id} attack read as delivered: ${r.attack.observed}`);
      t.match(r.attack.observed, /^delivered \(from spiffe:\/\//);
    }
  });
}
