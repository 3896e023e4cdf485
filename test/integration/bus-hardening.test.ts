// Signed-bus hardening, from an independent review, on real nats-server and `sigil run`:
//   - refused messages (policy-denied signer, wrong subject) never take replay-window space, so
//     they cannot crowd out legitimate messages;
//   - a subject's replay window survives unsubscribe/subscribe (an agent reconnecting), so a
//     captured envelope cannot be replayed into the fresh subscription;
//   - data nested too deep for re-serialization is refused, and delivery carries on;
//   - a publish over the broker's max_payload is a 413 for the agent, not a crash of the sidecar;
//   - a delegated message (`dlg`) is verified like an inbound request, with the signer as actor.
// Each with a positive control.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sign as cryptoSign } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import t from 'tap';
import { createEnvelopeSigner, type EnvelopeSigner } from '../../src/bus/envelope/index.js';
import { nestAct, signDelegationToken, SigningKeyRing, type SigningKey } from '../../src/delegation/index.js';
import type { Issued } from '../fixtures/certs.js';
import { svidOf } from '../helpers/envelope.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, waitUntil, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';
import { startNats, withNatsServer, type RunningNats } from '../helpers/nats.js';
import { adminStatus, metricSum, metrics, openWs, type WsClient } from '../helpers/observe.js';

const TD = 'example.org';
const ID_B = 'spiffe://example.org/agent/b';
const ID_A = 'spiffe://example.org/agent/a';
const ID_GOOD = 'spiffe://example.org/agent/good';
const ID_MUTED = 'spiffe://example.org/agent/muted';
const BROKER = 'https://broker.example.org';

const POLICY = `
@id("publish") permit (principal in TrustDomain::"${TD}", action == Action::"bus.publish", resource);
@id("deliver") permit (principal in TrustDomain::"${TD}", action == Action::"bus.deliver", resource);
@id("muted") forbid (principal == Agent::"${ID_MUTED}", action == Action::"bus.deliver", resource);
`;

await withNatsServer(t, suite);

async function suite(natsBinary: string): Promise<void> {
  let td: TrustDomainFixture;
  let nats: RunningNats;
  let b: RunningSigil;
  let a: RunningSigil;
  let raw: NatsConnection;
  let good: EnvelopeSigner;
  let goodLeaf: Issued;
  let muted: EnvelopeSigner;
  let brokerKey: SigningKey;

  t.before(async () => {
    const dir = await tempDir(t);
    td = await setupTrustDomain(dir, TD);
    nats = await startNats(t, natsBinary, td.ca.pem, { maxPayload: 32768 });
    await writeFile(join(dir, 'policy.cedar'), POLICY);
    const ring = await SigningKeyRing.load(join(dir, 'broker-keys'));
    brokerKey = ring.current();
    await ring.writeJwks(join(dir, 'broker.jwks.json'));
    const sidecar = async (name: string, id: string): Promise<RunningSigil> =>
      runSigil(
        t,
        await writeConfig(
          dir,
          `${name}.yaml`,
          sidecarConfig({
            trustDomain: TD,
            identity: { dev: { caDir: td.caDir, spiffeId: id, ttl: '15m' } },
            // A tiny replay window makes crowding-out observable; maxBytes above the broker's max_payload.
            bus: { local: '127.0.0.1:0', nats: { servers: [nats.url], tls: { ca: nats.caFile } }, envelope: { replayWindowEntries: 8, maxBytes: 65536 } },
            policy: { cedar: './policy.cedar' },
            delegation: { issuer: BROKER, jwks: './broker.jwks.json' },
          }),
        ),
      );
    b = await sidecar('b', ID_B);
    a = await sidecar('a', ID_A);
    goodLeaf = await td.leaf(ID_GOOD);
    good = createEnvelopeSigner(svidOf(goodLeaf));
    muted = createEnvelopeSigner(svidOf(await td.leaf(ID_MUTED)));
    raw = await connect({ servers: [nats.url], tls: { cert: goodLeaf.pem, key: goodLeaf.keyPem, ca: nats.caPem } });
    t.teardown(() => raw.close());
    await waitUntil(async () => (await adminStatus(b)).bus?.nats === 'connected' && (await adminStatus(a)).bus?.nats === 'connected', 10_000);
  });

  const subscribe = async (subject: string): Promise<WsClient> => {
    const ws = await openWs(`ws://${String(b.ready.bus)}/bus`);
    ws.ws.send(JSON.stringify({ op: 'subscribe', id: 's', subject }));
    const ack = JSON.parse((await ws.next()).data.toString());
    if (ack.op !== 'subscribed') throw new Error(JSON.stringify(ack));
    // Until the subscription is live at the broker: a probe from `good` arrives.
    await waitUntil(async () => {
      raw.publish(subject, good.sign({ subject, data: 'probe' }).jws);
      try {
        return JSON.parse((await ws.next(300)).data.toString()).data === 'probe';
      } catch {
        return false;
      }
    }, 10_000);
    return ws;
  };
  const next = async (ws: WsClient, ms = 1_000): Promise<any> => {
    try {
      return JSON.parse((await ws.next(ms)).data.toString());
    } catch {
      return undefined;
    }
  };
  const drain = async (ws: WsClient): Promise<void> => {
    while ((await next(ws, 300)) !== undefined);
  };

  t.test('refused messages do not take replay-window space', async (t) => {
    const ws = await subscribe('flood.x');
    t.teardown(() => ws.ws.close());
    await drain(ws);
    // 20 policy-denied messages and 20 signed for another subject: more than the window holds.
    for (let i = 0; i < 20; i++) raw.publish('flood.x', muted.sign({ subject: 'flood.x', data: i }).jws);
    for (let i = 0; i < 20; i++) raw.publish('flood.x', good.sign({ subject: 'flood.elsewhere', data: i }).jws);
    await raw.flush();
    t.equal(await next(ws, 700), undefined, 'none of them delivered');
    raw.publish('flood.x', good.sign({ subject: 'flood.x', data: 'legit' }).jws);
    t.match(await next(ws), { data: 'legit', from: ID_GOOD }, 'a legitimate message still gets through');
    const m = await metrics(b);
    t.equal(metricSum(m, 'sigil_bus_messages_total', { direction: 'inbound', reason: 'replay' }), 0, 'nothing was refused as a replay');
  });

  t.test('the replay window survives resubscribing', async (t) => {
    const first = await subscribe('resub.x');
    const envelope = good.sign({ subject: 'resub.x', data: 'once' }).jws;
    await drain(first);
    raw.publish('resub.x', envelope);
    t.match(await next(first), { data: 'once' }, 'delivered once (positive control)');
    first.ws.close();
    await first.closed;
    const second = await subscribe('resub.x');
    t.teardown(() => second.ws.close());
    await drain(second);
    const before = metricSum(await metrics(b), 'sigil_bus_messages_total', { direction: 'inbound', reason: 'replay' });
    raw.publish('resub.x', envelope);
    t.equal(await next(second, 700), undefined, 'the captured envelope is not delivered again');
    t.ok(await waitUntil(async () => metricSum(await metrics(b), 'sigil_bus_messages_total', { direction: 'inbound', reason: 'replay' }) > before, 3_000), 'counted as a replay');
    raw.publish('resub.x', good.sign({ subject: 'resub.x', data: 'fresh' }).jws);
    t.match(await next(second), { data: 'fresh' }, 'a fresh message is delivered');
  });

  t.test('a new subscription refuses envelopes signed before it existed (a recording), beyond the leeway', async (t) => {
    // Still valid (exp 30 s ahead) but signed 30 s ago: before this subscription, so a replay.
    const recorded = good.sign({ subject: 'late.x', data: 'recorded' }, Date.now() - 30_000).jws;
    const ws = await subscribe('late.x');
    t.teardown(() => ws.ws.close());
    await drain(ws);
    const before = metricSum(await metrics(b), 'sigil_bus_messages_total', { direction: 'inbound', reason: 'replay' });
    raw.publish('late.x', recorded);
    t.equal(await next(ws, 700), undefined, 'the recording is not delivered to the new subscription');
    t.ok(await waitUntil(async () => metricSum(await metrics(b), 'sigil_bus_messages_total', { direction: 'inbound', reason: 'replay' }) > before, 3_000), 'counted as a replay');
    const withinLeeway = good.sign({ subject: 'late.x', data: 'skewed' }, Date.now() - 2_000).jws;
    raw.publish('late.x', withinLeeway);
    t.match(await next(ws), { data: 'skewed' }, 'positive control: signed 2 s earlier (within the 5 s leeway: clock skew) is delivered');
  });

  t.test('data nested 10,000 deep is refused; delivery carries on', async (t) => {
    const ws = await subscribe('deep.x');
    t.teardown(() => ws.ws.close());
    await drain(ws);
    const now = Math.floor(Date.now() / 1000);
    const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'sigil-msg+jws', x5c: [goodLeaf.der.toString('base64')] })).toString('base64url');
    const claims = `{"iss":"${ID_GOOD}","sub":"deep.x","iat":${now},"exp":${now + 60},"jti":"${Buffer.from('0123456789abcdef01').toString('base64url')}","data":${'['.repeat(10_000)}${']'.repeat(10_000)}}`;
    const input = `${header}.${Buffer.from(claims).toString('base64url')}`;
    const sig = cryptoSign('sha256', Buffer.from(input), { key: goodLeaf.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url');
    raw.publish('deep.x', `${input}.${sig}`);
    t.equal(await next(ws, 700), undefined, 'not delivered');
    for (let i = 0; i < 3; i++) raw.publish('deep.x', good.sign({ subject: 'deep.x', data: i }).jws);
    t.match(await next(ws), { data: 0 });
    t.match(await next(ws), { data: 1 });
    t.match(await next(ws), { data: 2 }, 'later messages on the connection are delivered at once');
    t.ok(metricSum(await metrics(b), 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected', reason: 'envelope_malformed' }) >= 1, 'counted');
  });

  t.test('a publish over the broker max_payload is 413, and the sidecar keeps serving', async (t) => {
    const ws = await subscribe('big.x');
    t.teardown(() => ws.ws.close());
    await drain(ws);
    const post = async (data: unknown): Promise<{ status: number; json: any }> => {
      const res = await fetch(`http://${String(a.ready.bus)}/bus/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ subject: 'big.x', data }) });
      return { status: res.status, json: await res.json() };
    };
    const big = await post('x'.repeat(40_000));
    t.equal(big.status, 413);
    t.match(big.json, { reason: 'envelope_too_large' });
    const small = await post('small');
    t.equal(small.status, 202, 'a small publish still works (positive control)');
    t.match(await next(ws), { data: 'small', from: ID_A });
  });

  t.test('a delegated message: the token is verified with the signer as actor; the agent sees the delegation', async (t) => {
    const ws = await subscribe('dlg.x');
    t.teardown(() => ws.ws.close());
    await drain(ws);
    const now = Math.floor(Date.now() / 1000);
    const token = (actor: string, aud = ID_B): Promise<string> =>
      signDelegationToken({ iss: BROKER, sub: 'alice@example.org', aud, client_id: actor, act: nestAct(actor, undefined), scope: 'orders:write', iat: now, exp: now + 120, jti: `j${Math.random()}`.replace('.', ''), task: 'task-9' }, brokerKey);
    const post = async (body: unknown): Promise<{ status: number; json: any }> => {
      const res = await fetch(`http://${String(a.ready.bus)}/bus/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: res.status, json: await res.json() };
    };
    t.equal((await post({ subject: 'dlg.x', data: 'for alice', delegation: await token(ID_A) })).status, 202);
    t.match(await next(ws), { data: 'for alice', from: ID_A, delegation: { sub: 'alice@example.org', actors: [ID_A], depth: 1, scope: ['orders:write'], task: 'task-9' } }, 'delivered with the verified delegation');
    const before = metricSum(await metrics(b), 'sigil_bus_messages_total', { direction: 'inbound', reason: 'actor_mismatch' });
    t.equal((await post({ subject: 'dlg.x', data: 'stolen', delegation: await token(ID_GOOD) })).status, 202, 'A publishes under a token issued to another agent');
    t.equal(await next(ws, 700), undefined, 'not delivered');
    t.ok(await waitUntil(async () => metricSum(await metrics(b), 'sigil_bus_messages_total', { direction: 'inbound', reason: 'actor_mismatch' }) > before, 3_000), 'refused as actor_mismatch');
    t.equal((await post({ subject: 'dlg.x', data: 'elsewhere', delegation: await token(ID_A, ID_GOOD) })).status, 202);
    t.equal(await next(ws, 700), undefined, 'a token for another audience is not delivered');
    t.equal((await post({ subject: 'dlg.x', data: 'plain' })).status, 202);
    t.match(await next(ws), { data: 'plain' }, 'a non-delegated message still arrives (positive control)');
  });
}
