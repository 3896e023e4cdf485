// WebSocket messages authorized one by one, on real `sigil run` processes with Cedar policies:
// agent → sidecar A (outbound) → sidecar B (inbound) → upstream agent, and straight over mTLS
// to an inbound sidecar C whose policy file the tests rewrite mid-stream. Every message, in each
// direction, is checked before it is forwarded; a deny closes the stream with 1008 and the
// reason, and the denied message never reaches the other side. Every refusal has a positive
// control on the same stream or path.
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import WebSocket, { WebSocketServer, type ClientOptions } from 'ws';
import type { Issued } from '../fixtures/certs.js';
import { rawTcp } from '../helpers/raw.js';
import { WsClient as Client, wsRefusal } from '../helpers/observe.js';
import { closedPort, runSigil, setupTrustDomain, sidecarConfig, tempDir, writeConfig, type RunningSigil, type Teardown } from '../helpers/env.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_C = 'spiffe://example.org/agent/c';

// ---------------------------------------------------------------------------------------------
// Policies

const connectAndHttp = (from: string, to: string): string => `
@id("connect") permit (principal == Agent::"${from}", action == Action::"connect", resource == Agent::"${to}");
@id("http") permit (principal == Agent::"${from}", action == Action::"http", resource == Agent::"${to}");
`;

// Sidecar A (egress): messages on /egress* are A's to police; everything else is left to B.
const POLICY_A = `${connectAndHttp(ID_A, ID_B)}
@id("a-messages") permit (principal in TrustDomain::"${TD}", action == Action::"websocket.message", resource in TrustDomain::"${TD}")
unless { context.http.path like "/egress*" };

// Agent → peer: any size, except on /egress-small.
@id("a-egress-sent") permit (principal == Agent::"${ID_A}", action == Action::"websocket.message", resource == Agent::"${ID_B}")
when { context.direction == "outbound" && context.http.path like "/egress*" && (context.http.path != "/egress-small" || context.websocket.size < 100) };

// Peer → agent: any size, except on /egress-reply-small.
@id("a-egress-received") permit (principal == Agent::"${ID_B}", action == Action::"websocket.message", resource == Agent::"${ID_A}")
when { context.direction == "outbound" && context.http.path like "/egress*" && (context.http.path != "/egress-reply-small" || context.websocket.size < 100) };
`;

// Sidecar B (ingress): the per-path message rules.
const POLICY_B = `${connectAndHttp(ID_A, ID_B)}
@id("b-open") permit (principal in TrustDomain::"${TD}", action == Action::"websocket.message", resource in TrustDomain::"${TD}")
when { context.direction == "inbound" && (context.http.path like "/open*" || context.http.path like "/egress*") };

@id("b-small") permit (principal in TrustDomain::"${TD}", action == Action::"websocket.message", resource in TrustDomain::"${TD}")
when { context.http.path == "/small" && context.websocket.size < 100 };

@id("b-text-only") permit (principal in TrustDomain::"${TD}", action == Action::"websocket.message", resource in TrustDomain::"${TD}")
when { context.http.path == "/text" && context.websocket.kind == "text" };

// /reply-small: the caller may send anything, our agent only small messages back.
@id("b-reply-sent") permit (principal == Agent::"${ID_A}", action == Action::"websocket.message", resource == Agent::"${ID_B}")
when { context.http.path == "/reply-small" };
@id("b-reply-back") permit (principal == Agent::"${ID_B}", action == Action::"websocket.message", resource == Agent::"${ID_A}")
when { context.http.path == "/reply-small" && context.websocket.size < 100 };
`;

// Sidecar C, rewritten by the reload tests.
const C_CONNECT = `@id("connect") permit (principal == Agent::"${ID_A}", action == Action::"connect", resource == Agent::"${ID_C}");`;
const C_HTTP = `@id("http") permit (principal == Agent::"${ID_A}", action == Action::"http", resource == Agent::"${ID_C}");`;
const C_MESSAGES = `@id("messages") permit (principal in TrustDomain::"${TD}", action == Action::"websocket.message", resource in TrustDomain::"${TD}");`;
const POLICY_C_ALL = [C_CONNECT, C_HTTP, C_MESSAGES].join('\n');
const POLICY_C_NO_MESSAGES = [C_CONNECT, C_HTTP].join('\n');
const POLICY_C_NO_CONNECT = [C_HTTP, C_MESSAGES].join('\n');

// ---------------------------------------------------------------------------------------------
// The upstream agent: a WebSocket server that records every message and echoes it with its type.
// `close:<code>:<reason>` makes it close the stream; it prefers subprotocol chat.v2 when offered.

interface Received {
  path: string;
  data: Buffer;
  isBinary: boolean;
}

interface UpstreamConnection {
  path: string;
  headers: IncomingHttpHeaders;
  protocol: string;
  closed: Promise<{ code: number; reason: string }>;
}

interface WsUpstream {
  url: string;
  received: Received[];
  connections: UpstreamConnection[];
}

async function startWsUpstream(t: Teardown): Promise<WsUpstream> {
  const received: Received[] = [];
  const connections: UpstreamConnection[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((_req, res) => res.end('plain'));
  const wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (offered) => (offered.has('chat.v2') ? 'chat.v2' : (offered.values().next().value ?? false)),
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req, socket: Socket, head: Buffer) => {
    socket.on('error', () => {});
    if (req.url?.startsWith('/refuse')) {
      const body = JSON.stringify({ refusedBy: 'upstream' });
      socket.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nx-upstream: yes\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const path = req.url ?? '';
      const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
      connections.push({ path, headers: req.headers, protocol: ws.protocol, closed });
      ws.on('error', () => {});
      ws.on('message', (data: Buffer, isBinary) => {
        received.push({ path, data, isBinary });
        const close = isBinary ? null : /^close:(\d+):(.*)$/.exec(data.toString());
        if (close) ws.close(Number(close[1]), close[2]);
        else ws.send(data, { binary: isBinary });
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    wss.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received, connections };
}

// ---------------------------------------------------------------------------------------------
// A test client (queued messages, the close code/reason it got): test/helpers/observe.ts.

function open(url: string, protocols: string[] = [], options: ClientOptions = {}): Promise<Client> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, options);
    ws.once('open', () => resolve(new Client(ws)));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

// ---------------------------------------------------------------------------------------------
// Setup

let upstream: WsUpstream;
let sidecarA: RunningSigil;
let sidecarB: RunningSigil;
let sidecarC: RunningSigil;
let sidecarNoUpstream: RunningSigil;
let leafA: Issued;
let policyC: string;

t.before(async () => {
  const dir = await tempDir(t, 'sigil-ws-');
  const example = await setupTrustDomain(dir, TD);
  upstream = await startWsUpstream(t);
  leafA = await example.leaf(ID_A);
  await Promise.all([
    writeFile(join(dir, 'a.cedar'), POLICY_A),
    writeFile(join(dir, 'b.cedar'), POLICY_B),
    writeFile(join(dir, 'c.cedar'), POLICY_C_ALL),
  ]);
  policyC = join(dir, 'c.cedar');
  const inboundTo = (id: string, name: string, upstreamUrl: string, policy: string): Promise<string> =>
    writeConfig(
      dir,
      `${name}.yaml`,
      sidecarConfig({
        trustDomain: TD,
        identity: { dev: { caDir: example.caDir, spiffeId: id, ttl: '15m' } },
        inbound: { listen: '127.0.0.1:0', upstream: upstreamUrl },
        policy: { cedar: policy },
      }),
    );
  const dead = await closedPort();
  [sidecarB, sidecarC, sidecarNoUpstream] = await Promise.all([
    inboundTo(ID_B, 'b', upstream.url, './b.cedar').then((cfg) => runSigil(t, cfg)),
    inboundTo(ID_C, 'c', upstream.url, './c.cedar').then((cfg) => runSigil(t, cfg)),
    inboundTo(ID_B, 'dead', `http://127.0.0.1:${dead}`, './b.cedar').then((cfg) => runSigil(t, cfg)),
  ]);
  const aCfg = await writeConfig(
    dir,
    'a.yaml',
    sidecarConfig({
      trustDomain: TD,
      identity: { dev: { caDir: example.caDir, spiffeId: ID_A, ttl: '15m' } },
      outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: sidecarB.inbound, spiffeId: ID_B }] },
      policy: { cedar: './a.cedar' },
    }),
  );
  sidecarA = await runSigil(t, aCfg);
});

/** A WebSocket from the agent through A and B to the upstream. */
async function viaPair(t: Teardown, path: string, protocols: string[] = []): Promise<Client> {
  const c = await open(`ws://${sidecarA.outbound}${path}`, protocols, { headers: { host: 'agent-b' } });
  t.teardown(() => c.ws.terminate());
  return c;
}

/** A WebSocket straight to an inbound sidecar over mTLS, as agent/a. */
async function direct(t: Teardown, sidecar: RunningSigil, path: string): Promise<Client> {
  const c = await open(`wss://${sidecar.inbound}${path}`, [], { cert: leafA.pem, key: leafA.keyPem, rejectUnauthorized: false });
  t.teardown(() => c.ws.terminate());
  return c;
}

/** `promise`'s value, or 'pending' if it has not settled within `ms`. */
const within = <T>(promise: Promise<T> | undefined, ms: number): Promise<T | 'pending'> =>
  Promise.race([promise ?? new Promise<never>(() => {}), new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);

const receivedOn = (path: string): Received[] => upstream.received.filter((r) => r.path === path);

async function reloadPolicyC(text: string): Promise<void> {
  await writeFile(policyC, text);
  const res = await fetch(`http://${sidecarC.admin}/v1/policy/reload`, { method: 'POST' });
  if (res.status !== 200) throw new Error(`policy reload answered ${res.status}: ${await res.text()}`);
}

// ---------------------------------------------------------------------------------------------
// Tests

t.test('through the pair: text and binary messages echo both ways, types preserved (positive control)', async (t) => {
  const c = await viaPair(t, '/open/echo');
  const text = await c.roundTrip('hello');
  t.equal(text.isBinary, false, 'text stays text');
  t.equal(text.data.toString(), 'hello');
  const bytes = Buffer.from([0, 1, 2, 0xff, 0xfe]);
  const binary = await c.roundTrip(bytes);
  t.equal(binary.isBinary, true, 'binary stays binary');
  t.same([...binary.data], [...bytes], 'binary payload intact');
  const big = Buffer.alloc(200_000, 7);
  t.same((await c.roundTrip(big)).data.length, big.length, 'a 200 kB message passes whole');
  t.same(
    receivedOn('/open/echo').map((r) => [r.isBinary, r.data.length]),
    [
      [false, 5],
      [true, 5],
      [true, 200_000],
    ],
    'the upstream got each message once, with its type',
  );
  const seen = upstream.connections.find((q) => q.path === '/open/echo');
  t.equal(seen?.headers['x-sigil-peer-id'], ID_A, 'the upstream handshake carries the verified caller');
  t.notOk(seen?.headers['sec-websocket-extensions'], 'no extension negotiated on the upstream leg');
});

t.test('through the pair: many messages keep their order (backpressure path)', async (t) => {
  const c = await viaPair(t, '/open/bulk');
  const count = 200;
  const chunk = Buffer.alloc(64 * 1024, 1);
  for (let i = 0; i < count; i++) {
    chunk.writeUInt32BE(i, 0);
    c.ws.send(Buffer.from(chunk), { binary: true });
  }
  const order: number[] = [];
  for (let i = 0; i < count; i++) order.push((await c.next(10_000)).data.readUInt32BE(0));
  t.same(order, Array.from({ length: count }, (_, i) => i), `${count} × 64 KiB echoed in order`);
});

t.test('ping and pong are relayed end to end, without their payload', async (t) => {
  const c = await viaPair(t, '/open/ping');
  const pong = new Promise<Buffer>((resolve) => c.ws.once('pong', resolve));
  c.ws.ping(Buffer.from('are-you-there'));
  // Payloads are dropped: they would be a 125-byte-per-frame channel around websocket.message.
  t.equal((await pong).length, 0, 'the upstream’s pong came back, empty');
  t.equal((await c.roundTrip('still open')).data.toString(), 'still open', 'stream still usable');
});

t.test('close codes and reasons pass through both ways', async (t) => {
  const fromUpstream = await viaPair(t, '/open/close-by-upstream');
  fromUpstream.ws.send('close:4002:done here');
  t.same(await fromUpstream.closeWithin(), { code: 4002, reason: 'done here' }, 'the upstream’s close reached the agent');

  const fromAgent = await viaPair(t, '/open/close-by-agent');
  t.equal((await fromAgent.roundTrip('x')).data.toString(), 'x');
  fromAgent.ws.close(4001, 'bye');
  await fromAgent.closed;
  const conn = upstream.connections.find((q) => q.path === '/open/close-by-agent');
  t.same(await within(conn?.closed, 2_000), { code: 4001, reason: 'bye' }, 'the agent’s close reached the upstream');
});

t.test('a message the inbound policy denies closes the stream with 1008 policy_denied; it never reaches the upstream', async (t) => {
  const c = await viaPair(t, '/small');
  t.equal((await c.roundTrip('x'.repeat(50))).data.length, 50, '50-byte message allowed (positive control)');
  c.ws.send('z'.repeat(200));
  t.same(await c.closeWithin(), { code: 1008, reason: 'policy_denied' }, '200-byte message: 1008 policy_denied');
  t.same(
    receivedOn('/small').map((r) => r.data.length),
    [50],
    'the upstream got only the allowed message',
  );
  const conn = upstream.connections.find((q) => q.path === '/small');
  t.match(await within(conn?.closed, 2_000), { code: 1008 }, 'the upstream side was closed with 1008 too');
});

t.test('a message from the upstream that the inbound policy denies closes the stream with 1008; the agent never gets it', async (t) => {
  const c = await viaPair(t, '/reply-small');
  t.equal((await c.roundTrip('a'.repeat(40))).data.length, 40, 'small echo allowed both ways (positive control)');
  // The caller may send big messages on this path; our agent's big echo is what is denied.
  c.ws.send('b'.repeat(200));
  t.same(await c.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'big reply: 1008 policy_denied');
  t.same(
    receivedOn('/reply-small').map((r) => r.data.length),
    [40, 200],
    'the big message from the caller was allowed (principal = sender, resource = receiver)',
  );
});

t.test('the outbound side authorizes messages too: egress deny, both directions', async (t) => {
  const sent = await viaPair(t, '/egress-small');
  t.equal((await sent.roundTrip('s'.repeat(60))).data.length, 60, 'small message allowed (positive control)');
  sent.ws.send('S'.repeat(300));
  t.same(await sent.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'big message from the agent: 1008 at A');
  t.same(
    receivedOn('/egress-small').map((r) => r.data.length),
    [60],
    'the denied message never left A',
  );

  const back = await viaPair(t, '/egress-reply-small');
  t.equal((await back.roundTrip('r'.repeat(60))).data.length, 60, 'small echo allowed (positive control)');
  back.ws.send('R'.repeat(300));
  t.same(await back.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'big message from the peer: 1008 at A');
  t.same(
    receivedOn('/egress-reply-small').map((r) => r.data.length),
    [60, 300],
    'the agent’s big message was allowed out; its echo was the one denied',
  );
});

t.test('binary vs text: a text-only path denies the first binary message', async (t) => {
  const c = await viaPair(t, '/text');
  t.equal((await c.roundTrip('plain text')).data.toString(), 'plain text', 'text allowed (positive control)');
  c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
  t.same(await c.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'binary message: 1008 policy_denied');
  t.same(
    receivedOn('/text').map((r) => r.isBinary),
    [false],
    'the binary message never reached the upstream',
  );
});

t.test('subprotocol negotiation passes through: the upstream’s choice reaches the agent', async (t) => {
  const c = await viaPair(t, '/open/proto', ['chat.v1', 'chat.v2']);
  t.equal(c.ws.protocol, 'chat.v2', 'the agent got the protocol the upstream chose (not simply the first offered)');
  const seen = upstream.connections.find((q) => q.path === '/open/proto');
  t.equal(seen?.protocol, 'chat.v2');
  t.match(String(seen?.headers['sec-websocket-protocol']), /^chat\.v1, ?chat\.v2$/, 'the upstream was offered what the agent offered');
  t.equal((await c.roundTrip('p')).data.toString(), 'p');

  const none = await viaPair(t, '/open/no-proto');
  t.equal(none.ws.protocol, '', 'no subprotocol offered, none selected');
});

t.test('the upgrade’s request target reaches the upstream verbatim (the path the policies saw); non-canonical targets are refused', async (t) => {
  // Raw, because a WebSocket client would normalize the path before sending it.
  const upgrade = (path: string): string =>
    `GET ${path} HTTP/1.1\r\nHost: agent-b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
  const conn = await rawTcp(sidecarA.outbound);
  t.teardown(() => conn.destroy());
  const path = '/open/raw%20part?q=a%20b';
  const r = await conn.request(upgrade(path));
  t.equal(r.kind === 'response' && r.status, 101, 'switched protocols');
  t.ok(
    upstream.connections.some((q) => q.path === path),
    `the upstream saw ${path} (saw: ${upstream.connections.map((q) => q.path).filter((p) => p.includes('raw')).join(', ')})`,
  );
  for (const bad of ['/open/dots/../raw', '/open/raw%2Fpart', '//open/raw']) {
    const c = await rawTcp(sidecarA.outbound);
    t.teardown(() => c.destroy());
    const refused = await c.request(upgrade(bad));
    t.equal(refused.kind === 'response' && refused.status, 400, `${bad}: refused with 400`);
    t.notOk(upstream.connections.some((q) => q.path === bad), `${bad}: never reached the upstream`);
  }
});

t.test('a message larger than the limit closes the stream with 1009 and is not forwarded', async (t) => {
  const c = await viaPair(t, '/open/too-big');
  t.equal((await c.roundTrip('ok')).data.toString(), 'ok', 'positive control');
  c.ws.send(Buffer.alloc(1024 * 1024 + 1, 1));
  const closed = await c.closeWithin();
  t.equal(typeof closed === 'object' && closed.code, 1009, 'closed with 1009 (message too big)');
  t.same(
    receivedOn('/open/too-big').map((r) => r.data.length),
    [2],
    'the oversized message never reached the upstream',
  );
});

t.test('upgrade answers: the upstream’s refusal is relayed; an unreachable upstream is 502 upstream_unavailable', async (t) => {
  const r = await wsRefusal(`ws://${sidecarA.outbound}/refuse`, { headers: { host: 'agent-b' } });
  t.equal(r.status, 403, 'the upstream’s 403 reached the agent');
  t.same(JSON.parse(r.body), { refusedBy: 'upstream' }, 'with its body');
  t.equal(r.headers['x-upstream'], 'yes', 'and its headers');

  const dead = await wsRefusal(`wss://${sidecarNoUpstream.inbound}/open/x`, { cert: leafA.pem, key: leafA.keyPem, rejectUnauthorized: false });
  t.equal(dead.status, 502);
  t.match(JSON.parse(dead.body), { error: 'bad_gateway', reason: 'upstream_unavailable' });
});

t.test('policy reload mid-stream: the very next message is denied with 1008', async (t) => {
  await reloadPolicyC(POLICY_C_ALL);
  const c = await direct(t, sidecarC, '/live/messages');
  t.equal((await c.roundTrip('before')).data.toString(), 'before', 'allowed under the first policy (positive control)');
  await reloadPolicyC(POLICY_C_NO_MESSAGES);
  c.ws.send('after');
  t.same(await c.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'next message after the reload: 1008 policy_denied');
  t.same(
    receivedOn('/live/messages').map((r) => r.data.toString()),
    ['before'],
    'the message sent after the reload never reached the upstream',
  );
});

t.test('a reload that removes connect closes the open WebSocket, upstream side included', async (t) => {
  await reloadPolicyC(POLICY_C_ALL);
  const c = await direct(t, sidecarC, '/live/connect');
  t.equal((await c.roundTrip('hi')).data.toString(), 'hi', 'stream open under the first policy (positive control)');
  const conn = upstream.connections.find((q) => q.path === '/live/connect')!;
  await reloadPolicyC(POLICY_C_NO_CONNECT);
  t.not(await c.closeWithin(), 'still open', 'the caller’s stream was closed without another message being sent');
  // Well within the relay's 5 s closing-handshake timeout: the relay cuts the upstream leg at once.
  t.not(await within(conn.closed, 1_000), 'pending', 'the relay closed the upstream side as well');
  t.same(
    receivedOn('/live/connect').map((r) => r.data.toString()),
    ['hi'],
    'nothing else reached the upstream',
  );
  await reloadPolicyC(POLICY_C_ALL);
});
