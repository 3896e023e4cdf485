// The signed bus when things move underneath it, through a real nats-server and real `sigil run`
// sidecars (see bus.test.ts for the attack side):
//   1. both sidecars rotate their SVIDs every ~2 s while a numbered stream flows: every message
//      arrives exactly once and verifies, nothing is rejected, and each sidecar's NATS connection
//      really moves to the new SVID (the broker's own view, /connz, is read);
//   2. the broker goes away: publishes are held up to bus.nats.bufferMessages, then refused with
//      bus_buffer_full (bus_unavailable with no buffer); when it is back both sides reconnect by
//      themselves, the subscriber resubscribes and the held messages are delivered in order;
//   3. fan-out on one sidecar: overlapping subscriptions each get one copy (not a replay), two
//      agents on the same subject both get every message, and one of them leaving does not
//      disturb the other;
//   4. subscriptions an agent makes while its sidecar is still connecting to the broker (a slow
//      link, made slow by a delaying TCP relay) all work once it is connected.
import { writeFile } from 'node:fs/promises';
import { createServer, connect as tcpConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import t from 'tap';
import { createEnvelopeSigner } from '../../src/bus/envelope/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';
import { certHash, mtlsRequest } from '../helpers/clients.js';
import { listenOnLoopback, runSigil, setupTrustDomain, sidecarConfig, sleep, tempDir, waitUntil, writeConfig, type RunningSigil, type Teardown, type TrustDomainFixture } from '../helpers/env.js';
import { startNats, withNatsServer, type RunningNats } from '../helpers/nats.js';
import { adminStatus, metricSum, metrics, openWs, type Sample, type WsClient } from '../helpers/observe.js';
import { startEchoUpstream } from '../helpers/upstream.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_Q = 'spiffe://example.org/agent/queued';
const ID_Z = 'spiffe://example.org/agent/unbuffered';
const ID_S = 'spiffe://example.org/agent/subscriber';
const ID_S2 = 'spiffe://example.org/agent/subscriber-2';
const ID_PROBE = 'spiffe://example.org/agent/probe';
const ID_SLOW = 'spiffe://example.org/agent/slow-link';

const POLICY = `
@id("publish") permit (principal in TrustDomain::"${TD}", action == Action::"bus.publish", resource);
@id("deliver") permit (principal in TrustDomain::"${TD}", action == Action::"bus.deliver", resource);
@id("connect") permit (principal in TrustDomain::"${TD}", action == Action::"connect", resource);
`;


/** How long numbered messages flow while both sidecars rotate (ttl 4s → a rotation every ~2 s). */
const STREAM_MS = 9_000;
const STREAM_EVERY_MS = 40;

await withNatsServer(t, suite);

interface Frame {
  op: string;
  id?: string;
  subject?: string;
  from?: string;
  jti?: string;
  data?: any;
  reason?: string;
}

/** An agent's WebSocket on its sidecar's /bus, collecting every frame it gets. */
class Agent {
  readonly frames: Frame[] = [];
  private constructor(readonly client: WsClient) {
    client.ws.on('message', (d: Buffer) => this.frames.push(JSON.parse(d.toString()) as Frame));
  }

  static async open(t: Teardown, sidecar: RunningSigil): Promise<Agent> {
    const agent = new Agent(await openWs(`ws://${String(sidecar.ready.bus)}/bus`));
    t.teardown(() => agent.client.ws.close());
    return agent;
  }

  async subscribe(id: string, subject: string): Promise<void> {
    const mark = this.frames.length;
    this.client.ws.send(JSON.stringify({ op: 'subscribe', id, subject }));
    const ack = await waitUntil(() => this.frames.slice(mark).find((f) => f.id === id && f.op !== 'message'), 5_000);
    if (ack?.op !== 'subscribed') throw new Error(`subscribe ${id} ${subject} failed: ${JSON.stringify(ack)}`);
  }

  messages(pred: (f: Frame) => boolean = () => true): Frame[] {
    return this.frames.filter((f) => f.op === 'message' && pred(f));
  }

  async close(): Promise<void> {
    this.client.ws.close();
    await this.client.closeWithin(3_000);
  }
}

async function publish(sidecar: RunningSigil, body: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`http://${String(sidecar.ready.bus)}/bus/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, json: await res.json() };
}

/** The non-zero sigil_bus_messages_total samples with these labels, by reason (for assertion messages). */
function nonZero(samples: Sample[], labels: Record<string, string>): string {
  const hits = samples.filter((s) => s.name === 'sigil_bus_messages_total' && s.value > 0 && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return hits.map((s) => `${s.labels.reason}=${s.value}`).join(', ') || 'none';
}

const rejectedInbound = async (s: RunningSigil): Promise<number> => metricSum(await metrics(s), 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected' });
const deliveredInbound = async (s: RunningSigil): Promise<number> => metricSum(await metrics(s), 'sigil_bus_messages_total', { direction: 'inbound', result: 'success' });
const rotations = async (s: RunningSigil): Promise<number> => metricSum(await metrics(s), 'sigil_svid_rotations_total', { result: 'success' });

/** Numbers that occur more than once. */
function duplicates(values: number[]): number[] {
  const seen = new Set<number>();
  const dup = new Set<number>();
  for (const v of values) (seen.has(v) ? dup : seen).add(v);
  return [...dup].sort((x, y) => x - y);
}

interface ConnInfo {
  cid: number;
  name?: string;
  subscriptions_list?: string[];
  tls_peer_certs?: { subject?: string; cert_sha256?: string }[];
}

async function suite(natsBinary: string): Promise<void> {
  let td: TrustDomainFixture;
  let nats: RunningNats;
  let dir: string;

  t.before(async () => {
    dir = await tempDir(t, 'sigil-bus-resilience-');
    td = await setupTrustDomain(dir, TD);
    nats = await startNats(t, natsBinary, td.ca.pem);
    await writeFile(join(dir, 'policy.cedar'), POLICY);
  });

  const sidecar = async (tt: Teardown, name: string, id: string, opts: { ttl?: string; bufferMessages?: number; inbound?: string; server?: string } = {}): Promise<RunningSigil> =>
    runSigil(
      tt,
      await writeConfig(
        dir,
        `${name}.yaml`,
        sidecarConfig({
          trustDomain: TD,
          identity: { dev: { caDir: td.caDir, spiffeId: id, ttl: opts.ttl ?? '15m' } },
          bus: {
            local: '127.0.0.1:0',
            nats: { servers: [opts.server ?? nats.url], tls: { ca: nats.caFile }, ...(opts.bufferMessages === undefined ? {} : { bufferMessages: opts.bufferMessages }) },
          },
          ...(opts.inbound ? { inbound: { listen: '127.0.0.1:0', upstream: opts.inbound } } : {}),
          policy: { cedar: './policy.cedar' },
        }),
      ),
    );

  /** The broker's clients named after a sidecar (`sigil <SPIFFE ID>`), with subscriptions and peer certificates. */
  const brokerConnections = async (id: string): Promise<ConnInfo[]> => {
    const res = await fetch(`${nats.monitor}/connz?subs=1&auth=true&limit=1024`);
    const body = (await res.json()) as { connections?: ConnInfo[] };
    return (body.connections ?? []).filter((c) => c.name === `sigil ${id}`);
  };

  /** Publishes probes through `from` until `agent` gets one: the subscription is live at the broker. */
  const awaitLive = async (from: RunningSigil, agent: Agent, subject: string): Promise<void> => {
    const ok = await waitUntil(async () => {
      await publish(from, { subject, data: 'probe' });
      await sleep(100);
      return agent.messages((f) => f.subject === subject).length > 0;
    }, 10_000);
    if (!ok) throw new Error(`no probe on ${subject} reached the subscriber in 10 s`);
  };

  /** Until /status bus.nats is "connected". */
  const connected = async (...sidecars: RunningSigil[]): Promise<void> => {
    for (const x of sidecars) {
      if (!(await waitUntil(async () => (await adminStatus(x)).bus?.nats === 'connected', 10_000))) throw new Error('sidecar did not connect to NATS in 10 s');
    }
  };

  /** A workload of the trust domain on NATS directly, signing its own envelopes. */
  const rawClient = async (tt: Teardown, id: string): Promise<{ nc: NatsConnection; send: (subject: string, data: unknown) => void }> => {
    const leaf = await td.leaf(id);
    const nc = await connect({ servers: [nats.url], tls: { cert: leaf.pem, key: leaf.keyPem, ca: nats.caPem }, name: id });
    tt.teardown(() => nc.close());
    const signer = createEnvelopeSigner({
      id: SpiffeId.parse(id),
      certificates: [leaf.cert],
      certChainPem: leaf.pem,
      privateKeyPem: leaf.keyPem,
      notBefore: new Date(leaf.cert.validFrom),
      notAfter: new Date(leaf.cert.validTo),
      serial: leaf.cert.serialNumber,
    });
    return { nc, send: (subject, data) => nc.publish(subject, signer.sign({ subject, data }).jws) };
  };

  t.test('rotation during a message stream: nothing lost, nothing duplicated, everything verifies', async (t) => {
    const upstream = await startEchoUpstream(t);
    // B also gets an inbound listener, only so the test can see which certificate B presents now.
    const [a, b] = await Promise.all([sidecar(t, 'rot-a', ID_A, { ttl: '4s' }), sidecar(t, 'rot-b', ID_B, { ttl: '4s', inbound: upstream.url })]);
    await connected(a, b);
    const agentB = await Agent.open(t, b);
    await agentB.subscribe('stream', 'stream.>');
    await awaitLive(a, agentB, 'stream.probe');

    const leaf = await td.leaf(ID_A);
    const presentedByB = async (): Promise<string | undefined> => {
      const r = await mtlsRequest({ address: b.inbound, certPem: leaf.pem, keyPem: leaf.keyPem, path: '/whoami' });
      return r.peerCert ? certHash(r.peerCert) : undefined;
    };

    const before = { rotA: await rotations(a), rotB: await rotations(b), delivered: await deliveredInbound(b), rejected: await rejectedInbound(b) };
    const logMark = { a: a.proc.lines.length, b: b.proc.lines.length };
    const statuses: { n: number; status: number; body: string }[] = [];
    const jtiOf = new Map<number, string>();
    // While the stream runs, the broker's view of each sidecar: connection count and certificate.
    const seenCerts = { a: new Set<string>(), b: new Set<string>() };
    let maxConnsB = 0;
    let running = true;
    const watchBroker = (async () => {
      while (running) {
        for (const [key, id] of [['a', ID_A], ['b', ID_B]] as const) {
          const conns = await brokerConnections(id).catch(() => []);
          if (key === 'b') maxConnsB = Math.max(maxConnsB, conns.length);
          for (const c of conns) for (const p of c.tls_peer_certs ?? []) if (p.cert_sha256) seenCerts[key].add(p.cert_sha256);
        }
        await sleep(150);
      }
    })();

    // Alongside, a dense stream straight from another workload on NATS (two every ~2 ms): a
    // handover keeps two connections subscribed for a few milliseconds, and messages that
    // arrive on both must reach the agent once, not once plus a `replay` refusal.
    const fast = await rawClient(t, ID_PROBE);
    let fastN = 0;
    const fastTimer = setInterval(() => {
      fast.send('stream.fast', { n: fastN++ });
      fast.send('stream.fast', { n: fastN++ });
    }, 2);
    const t0 = Date.now();
    let n = 0;
    while (Date.now() - t0 < STREAM_MS) {
      const i = n++;
      const r = await publish(a, { subject: 'stream.n', data: { n: i } });
      statuses.push({ n: i, status: r.status, body: JSON.stringify(r.json).slice(0, 200) });
      if (r.status === 202) jtiOf.set(i, r.json.jti);
      const next = t0 + n * STREAM_EVERY_MS;
      await sleep(Math.max(0, next - Date.now()));
    }
    const streamMs = Date.now() - t0;
    clearInterval(fastTimer);
    await fast.nc.flush();
    const got = () => agentB.messages((f) => f.subject === 'stream.n');
    const gotFast = () => agentB.messages((f) => f.subject === 'stream.fast');
    await waitUntil(() => got().length >= n && gotFast().length >= fastN, 5_000);
    await sleep(500); // anything arriving twice arrives now
    running = false;
    await watchBroker;

    const failed = statuses.filter((s) => s.status !== 202);
    t.same(failed.slice(0, 5), [], `every publish accepted by sidecar A (${failed.length} of ${n} not 202)`);
    t.ok(n >= 100, `the stream was continuous: ${n} messages in ${streamMs} ms`);

    const frames = got();
    const numbers = frames.map((f) => f.data?.n as number);
    const numberSet = new Set(numbers);
    const missing = [...Array(n).keys()].filter((i) => !numberSet.has(i));
    t.same(missing, [], `no gaps: every one of the ${n} numbers arrived at agent B (${missing.length} missing)`);
    t.same(duplicates(numbers), [], 'no duplicates');
    t.equal(frames.length, n, 'exactly one frame per message');
    t.ok(
      frames.every((f) => f.from === ID_A && f.id === 'stream' && jtiOf.get(f.data?.n) === f.jti),
      'each frame names the verified sender and carries the jti sidecar A answered with',
    );
    const fastNumbers = gotFast().map((f) => f.data?.n as number);
    const fastSet = new Set(fastNumbers);
    const fastMissing = [...Array(fastN).keys()].filter((i) => !fastSet.has(i));
    t.ok(fastN >= 2_000, `the dense stream was dense: ${fastN} messages`);
    t.same(fastMissing.slice(0, 10), [], `dense stream: no gaps (${fastMissing.length} of ${fastN} missing)`);
    t.same(duplicates(fastNumbers), [], 'dense stream: no duplicates');

    const mb = await metrics(b);
    t.equal(metricSum(mb, 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected' }) - before.rejected, 0, `nothing rejected at B (rejected by reason: ${nonZero(mb, { direction: 'inbound', result: 'rejected' })})`);
    t.equal(metricSum(mb, 'sigil_bus_messages_total', { direction: 'inbound', result: 'success' }) - before.delivered, n + fastN, 'B verified and delivered exactly the two streams (sigil_bus_messages_total inbound success)');
    const ma = await metrics(a);
    t.equal(metricSum(ma, 'sigil_bus_messages_total', { direction: 'outbound', result: 'failed' }), 0, `nothing failed at A (${nonZero(ma, { direction: 'outbound', result: 'failed' })})`);

    const rotA = metricSum(ma, 'sigil_svid_rotations_total', { result: 'success' }) - before.rotA;
    const rotB = metricSum(mb, 'sigil_svid_rotations_total', { result: 'success' }) - before.rotB;
    t.ok(rotA >= 2, `A rotated at least twice during the stream (${rotA})`);
    t.ok(rotB >= 2, `B rotated at least twice during the stream (${rotB})`);
    const moved = (lines: Record<string, unknown>[]) => lines.filter((l) => l.msg === 'NATS connection moved to the rotated SVID').length;
    t.ok(moved(a.proc.lines.slice(logMark.a)) >= 2, `A's NATS connection moved at least twice (${moved(a.proc.lines.slice(logMark.a))})`);
    t.ok(moved(b.proc.lines.slice(logMark.b)) >= 2, `B's NATS connection moved at least twice (${moved(b.proc.lines.slice(logMark.b))})`);

    // The broker's view: it saw each sidecar present at least three certificates over time, and
    // the old connections are gone (drained, not leaked) — one connection each, B's subscribed.
    t.ok(seenCerts.a.size >= 3, `the broker saw A's connection present ${seenCerts.a.size} different certificates (>= 3)`);
    t.ok(seenCerts.b.size >= 3, `the broker saw B's connection present ${seenCerts.b.size} different certificates (>= 3)`);
    t.ok(maxConnsB <= 2, `B never held more than two broker connections at once (old ones are drained, not leaked): at most ${maxConnsB} seen`);
    // Between rotations (a handover takes milliseconds): one connection each, presenting the SVID
    // B presents on its inbound listener right now.
    const settled = await waitUntil(async () => {
      const [connsA, connsB, presented] = [await brokerConnections(ID_A), await brokerConnections(ID_B), await presentedByB()];
      const certB = connsB[0]?.tls_peer_certs?.[0]?.cert_sha256;
      return connsA.length === 1 && connsB.length === 1 && certB !== undefined && certB === presented ? { connsB, certB } : undefined;
    }, 6_000, 100);
    t.ok(settled, "one broker connection per sidecar, and B's presents the certificate B currently serves with");
    t.same(settled?.connsB[0]?.subscriptions_list, ['stream.>'], "B's subscription is on its current connection");

    const [sa, sb] = [await adminStatus(a), await adminStatus(b)];
    t.match(sa.bus, { nats: 'connected', queued: 0 }, 'A: /status bus.nats connected');
    t.match(sb.bus, { nats: 'connected', queued: 0, subscriptions: 1 }, 'B: /status bus.nats connected, one subscription');
    t.ok(sb.lastRotation && Date.parse(sb.lastRotation) > t0, 'B: /status lastRotation moved during the stream');

    // Positive control for the "nothing lost" assertions: the counting sees a message it should.
    const extra = await publish(a, { subject: 'stream.n', data: { n: 'after' } });
    t.equal(extra.status, 202);
    t.ok(await waitUntil(() => got().some((f) => f.data?.n === 'after'), 3_000), 'a message after the stream arrives too');
  });

  t.test('fan-out on one sidecar', async (t) => {
    const [p, s] = await Promise.all([sidecar(t, 'fan-p', ID_A), sidecar(t, 'fan-s', ID_S)]);
    await connected(p, s);

    t.test('overlapping subscriptions (orders.> and orders.x) each get one copy; none is a replay', async (t) => {
      const agent = await Agent.open(t, s);
      await agent.subscribe('wide', 'orders.>');
      await agent.subscribe('narrow', 'orders.x');
      await awaitLive(p, agent, 'orders.x');
      await waitUntil(() => agent.messages((f) => f.id === 'wide' && f.subject === 'orders.x').length > 0, 2_000);
      const mark = agent.frames.length;
      const before = { rejected: await rejectedInbound(s), delivered: await deliveredInbound(s) };
      const sent: string[] = [];
      for (const subject of ['orders.x', 'orders.x', 'orders.y', 'orders.x']) sent.push((await publish(p, { subject, data: subject })).json.jti);
      await waitUntil(() => agent.frames.length - mark >= 7, 5_000);
      await sleep(300);
      const frames = agent.frames.slice(mark).filter((f) => f.op === 'message');
      const wide = frames.filter((f) => f.id === 'wide').map((f) => f.jti);
      const narrow = frames.filter((f) => f.id === 'narrow').map((f) => f.jti);
      t.same(wide, sent, 'orders.> got all four, once each, in order');
      t.same(narrow, [sent[0], sent[1], sent[3]], 'orders.x got the three on orders.x, once each');
      const m = await metrics(s);
      t.equal(metricSum(m, 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected' }) - before.rejected, 0, `nothing rejected (${nonZero(m, { direction: 'inbound', result: 'rejected' })})`);
      t.equal(metricSum(m, 'sigil_bus_messages_total', { direction: 'inbound', result: 'success' }) - before.delivered, 7, 'seven verified deliveries counted');
    });

    t.test('two agents on the same subject both get every message; one leaving does not disturb the other', async (t) => {
      const one = await Agent.open(t, s);
      const two = await Agent.open(t, s);
      await one.subscribe('mine', 'shared.x');
      await two.subscribe('mine', 'shared.x'); // the same id on another socket is a different subscription
      await awaitLive(p, one, 'shared.x');
      await sleep(200);
      const mark = { one: one.frames.length, two: two.frames.length };
      const before = { rejected: await rejectedInbound(s), replay: metricSum(await metrics(s), 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected', reason: 'replay' }) };
      const sent: string[] = [];
      for (let i = 0; i < 3; i++) sent.push((await publish(p, { subject: 'shared.x', data: i })).json.jti);
      await waitUntil(() => one.frames.length - mark.one >= 3 && two.frames.length - mark.two >= 3, 2_000);
      await sleep(300);
      const jtis = (a: Agent, from: number) => a.frames.slice(from).filter((f) => f.op === 'message').map((f) => f.jti);
      t.same(jtis(one, mark.one), sent, 'the first agent got all three, once each');
      t.same(jtis(two, mark.two), sent, 'the second agent got all three, once each');
      const m = await metrics(s);
      t.equal(metricSum(m, 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected', reason: 'replay' }) - before.replay, 0, 'the second copy is not counted as a replay');
      t.equal(metricSum(m, 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected' }) - before.rejected, 0, `nothing rejected (${nonZero(m, { direction: 'inbound', result: 'rejected' })})`);

      // The first agent goes away: the second keeps getting everything, and the sidecar still
      // holds the subject for it (at the broker too).
      await one.close();
      await sleep(200);
      const mark2 = two.frames.length;
      const after: string[] = [];
      for (let i = 0; i < 3; i++) after.push((await publish(p, { subject: 'shared.x', data: `after-${i}` })).json.jti);
      await waitUntil(() => two.frames.length - mark2 >= 3, 3_000);
      await sleep(200);
      t.same(jtis(two, mark2), after, 'after the first agent left, the second got all three, once each');
      t.ok((await brokerConnections(ID_S)).some((c) => c.subscriptions_list?.includes('shared.x')), 'the broker still has the subscription');
      await two.close();
      const gone = await waitUntil(async () => !(await brokerConnections(ID_S)).some((c) => c.subscriptions_list?.includes('shared.x')), 3_000);
      t.ok(gone, 'when the last agent on the subject leaves, the sidecar unsubscribes at the broker');
    });
  });

  t.test('broker outage: bounded queue, refusals with a reason, reconnect, resubscribe, delivery', async (t) => {
    const [q, z, s] = await Promise.all([
      sidecar(t, 'out-q', ID_Q, { bufferMessages: 5 }),
      sidecar(t, 'out-z', ID_Z, { bufferMessages: 0 }),
      sidecar(t, 'out-s', ID_S2),
    ]);
    await connected(q, z, s);
    const agent = await Agent.open(t, s);
    await agent.subscribe('outage', 'outage.>');
    await awaitLive(q, agent, 'outage.probe');
    const got = (subject: string) => agent.messages((f) => f.subject === subject);

    // Positive controls while the broker is up.
    const upQ = await publish(q, { subject: 'outage.up', data: 'q' });
    const upZ = await publish(z, { subject: 'outage.up', data: 'z' });
    t.equal(upQ.status, 202, 'buffered sidecar: 202 while the broker is up');
    t.equal(upZ.status, 202, 'unbuffered sidecar: 202 while the broker is up');
    t.ok(await waitUntil(() => got('outage.up').length === 2, 3_000), 'both delivered');

    await nats.stop();
    const down = await waitUntil(async () => {
      const all = await Promise.all([q, z, s].map(async (x) => (await adminStatus(x)).bus?.nats));
      return all.every((v) => v === 'disconnected');
    }, 5_000);
    t.ok(down, '/status bus.nats says "disconnected" on all three sidecars');

    const refusedZ = await publish(z, { subject: 'outage.z', data: 'lost?' });
    t.equal(refusedZ.status, 503, 'bufferMessages: 0 → 503 while the broker is down');
    t.match(refusedZ.json, { reason: 'bus_unavailable' });

    const queued: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await publish(q, { subject: 'outage.held', data: i });
      t.equal(r.status, 202, `held message ${i}: 202`);
      queued.push(r.json.jti);
    }
    t.match((await adminStatus(q)).bus, { nats: 'disconnected', queued: 5 }, '/status bus.queued = 5');
    const sixth = await publish(q, { subject: 'outage.held', data: 5 });
    t.equal(sixth.status, 503, 'the 6th → 503');
    t.match(sixth.json, { reason: 'bus_buffer_full' });
    t.equal((await adminStatus(q)).bus?.queued, 5, 'still 5 queued: the refused one was not added');
    const ws = await openWs(`ws://${String(q.ready.bus)}/bus`);
    t.teardown(() => ws.ws.close());
    ws.ws.send(JSON.stringify({ op: 'publish', ref: 1, subject: 'outage.held', data: 'ws' }));
    t.match(JSON.parse((await ws.next()).data.toString()), { op: 'error', ref: 1, reason: 'bus_buffer_full' }, 'the WebSocket API refuses with the same reason');
    const mq = await metrics(q);
    t.equal(metricSum(mq, 'sigil_bus_messages_total', { direction: 'outbound', result: 'failed', reason: 'bus_buffer_full' }), 2, 'counted: outbound failed bus_buffer_full');
    t.equal(metricSum(await metrics(z), 'sigil_bus_messages_total', { direction: 'outbound', result: 'failed', reason: 'bus_unavailable' }), 1, 'counted: outbound failed bus_unavailable');

    // Core NATS keeps nothing for absent subscribers: had the publisher reconnected first, the
    // held messages would reach a broker with no subscriber yet. Hold the publisher (SIGSTOP)
    // until the subscriber is back and proven subscribed, then let it reconnect.
    q.proc.child.kill('SIGSTOP');
    try {
      await nats.restart();
      t.ok(await waitUntil(async () => (await adminStatus(s)).bus?.nats === 'connected', 10_000), 'the subscriber reconnected by itself');
      t.ok(await waitUntil(async () => (await adminStatus(z)).bus?.nats === 'connected', 10_000), 'the unbuffered publisher reconnected by itself');
      // Resubscribed: a message from another client reaches agent S.
      const probe = await rawClient(t, ID_PROBE);
      const resubscribed = await waitUntil(async () => {
        probe.send('outage.resub', 'probe');
        await probe.nc.flush();
        await sleep(100);
        return got('outage.resub').length > 0;
      }, 5_000);
      t.ok(resubscribed, 'the subscriber resubscribed after the reconnect (a message from another client arrives)');
      t.same(
        (await brokerConnections(ID_S2)).map((c) => c.subscriptions_list),
        [['outage.>']],
        'the broker has exactly one connection from the subscriber sidecar, with its subscription',
      );
      t.equal(got('outage.held').length, 0, 'nothing held was sent while the publisher was stopped');
    } finally {
      q.proc.child.kill('SIGCONT');
    }
    t.ok(await waitUntil(() => got('outage.held').length >= 5, 10_000), 'the publisher reconnected by itself and sent what it held');
    await sleep(300);
    t.same(
      got('outage.held').map((f) => f.jti),
      queued,
      'the 5 held messages arrive once each, in order, with the jti the publisher answered with',
    );
    t.same(got('outage.held').map((f) => f.from), Array(5).fill(ID_Q), 'from the publisher, verified');
    t.match((await adminStatus(q)).bus, { nats: 'connected', queued: 0 }, 'publisher: connected, queue empty');

    const afterQ = await publish(q, { subject: 'outage.after', data: 'q' });
    const afterZ = await publish(z, { subject: 'outage.after', data: 'z' });
    t.equal(afterQ.status, 202, 'buffered sidecar publishes again');
    t.equal(afterZ.status, 202, 'unbuffered sidecar publishes again');
    t.ok(await waitUntil(() => got('outage.after').length === 2, 3_000), 'and both arrive');
    t.equal(got('outage.z').length, 0, 'the refused message was not sent later');
    const ms = await metrics(s);
    t.equal(metricSum(ms, 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected' }), 0, `nothing rejected at the subscriber (${nonZero(ms, { direction: 'inbound', result: 'rejected' })})`);
  });

  t.test('subscriptions made while the sidecar is still connecting to the broker all work', async (t) => {
    // A TCP relay in front of nats-server that delays every byte from the server by DELAY ms:
    // connecting (TLS, INFO/CONNECT/PING) takes about a second and every round trip DELAY ms,
    // so the agent's subscriptions land in every phase of the sidecar's connection set-up.
    const DELAY = 300;
    const sockets = new Set<Socket>();
    const relay = createServer((client) => {
      const server = tcpConnect(nats.port, '127.0.0.1');
      sockets.add(client).add(server);
      const end = (): void => {
        client.destroy();
        server.destroy();
      };
      client.on('data', (d: Buffer) => server.write(d));
      server.on('data', (d: Buffer) => setTimeout(() => client.writable && client.write(d), DELAY));
      client.on('close', end).on('error', end);
      server.on('close', () => setTimeout(end, DELAY)).on('error', end);
    });
    const { port } = await listenOnLoopback(t, relay, sockets);
    const slow = await sidecar(t, 'slow', ID_SLOW, { server: `tls://127.0.0.1:${port}` });
    const agents = [await Agent.open(t, slow), await Agent.open(t, slow)];

    // A new subject every 20 ms, from right after start until well after it is connected.
    const subs: { subject: string; agent: Agent; connected: boolean }[] = [];
    let connectedFor = 0;
    for (let i = 0; i < 200 && connectedFor < 10; i++) {
      const isConnected = (await adminStatus(slow)).bus?.nats === 'connected';
      if (isConnected) connectedFor++;
      const agent = agents[i % 2]!;
      const subject = `slow.s${i}`;
      agent.client.ws.send(JSON.stringify({ op: 'subscribe', id: subject, subject }));
      subs.push({ subject, agent, connected: isConnected });
      await sleep(20);
    }
    t.ok(connectedFor >= 10, `the sidecar connected through the slow link (${subs.length} subscriptions made)`);
    const acked = await waitUntil(() => subs.every((x) => x.agent.frames.some((f) => f.op === 'subscribed' && f.id === x.subject)), 5_000);
    t.ok(acked, 'every subscription was acknowledged');
    const early = subs.filter((x) => !x.connected);
    t.ok(early.length >= 10, `${early.length} subscriptions were made before /status said connected`);

    const probe = await rawClient(t, ID_PROBE);
    for (const x of subs) probe.send(x.subject, x.subject);
    await probe.nc.flush();
    const received = (x: { subject: string; agent: Agent }): boolean => x.agent.messages((f) => f.subject === x.subject && f.id === x.subject).length === 1;
    await waitUntil(() => subs.every(received), 2_000);
    const late = subs.filter((x) => x.connected);
    t.same(late.filter((x) => !received(x)).map((x) => x.subject), [], 'positive control: every subscription made once connected receives its message');
    t.ok(early.some(received), 'positive control: subscriptions made before the connection existed receive theirs');
    const dead = subs.filter((x) => !received(x)).map((x) => x.subject);
    t.same(dead, [], `every acknowledged subscription receives (dead: ${dead.length} of ${subs.length}: ${dead.join(' ')})`);
  });
}
