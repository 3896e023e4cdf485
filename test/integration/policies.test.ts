// The three example policies in examples/policies/, each loaded from that folder into real
// `sigil run` processes and exercised through the real proxy, for every action kind it covers,
// with allowed and denied cases side by side. Denials are checked exactly as docs/policy.md
// answers them (403 JSON with reason and policy ids / JSON-RPC -32043 / WebSocket 1008) and the
// upstream's records show that a denied call never reached it.
//
//   agent-pair.cedar   agent ──▶ A (agent/a, egress) ══mTLS══▶ B (agent/b, ingress) ──▶ upstream
//                      mTLS clients (agent/a, agent/c) ──▶ B
//   mcp-tools.cedar    agent ──▶ R (agent/research/r1, egress) ══▶ T (mcp/tools, ingress) ──▶ upstream
//                      mTLS clients (research/r1, ops, agent/a, partner.example) ──▶ T
//   read-only.cedar    agent ──▶ RA (agent/auditor, egress) ══▶ RO (agent/archive, ingress) ──▶ upstream
//                      mTLS clients (agent/a, partner.example) ──▶ RO
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { Issued } from '../fixtures/certs.js';
import { startAppUpstream, APP_TOOLS, type AppMessage, type AppRequest, type AppUpstream } from '../helpers/app-upstream.js';
import { assertStatus, type Asserts } from '../helpers/assert.js';
import { mtlsRequest, plainRequest, type HttpResult } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, writeConfig, type RunningSigil, type Teardown } from '../helpers/env.js';
import { rawTls } from '../helpers/raw.js';
import { decisions, openWs, wsRefusal, type WsClient } from '../helpers/observe.js';

const FIXTURES = fileURLToPath(new URL('../../../examples/policies/', import.meta.url));
const AGENT_PAIR = `${FIXTURES}agent-pair.cedar`;
const MCP_TOOLS = `${FIXTURES}mcp-tools.cedar`;
const READ_ONLY = `${FIXTURES}read-only.cedar`;

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_C = 'spiffe://example.org/agent/c';
const ID_TOOLS = 'spiffe://example.org/mcp/tools';
const ID_R1 = 'spiffe://example.org/agent/research/r1';
const ID_OPS = 'spiffe://example.org/agent/ops';
const ID_ARCHIVE = 'spiffe://example.org/agent/archive';
const ID_AUDITOR = 'spiffe://example.org/agent/auditor';
const ID_PARTNER = 'spiffe://partner.example/agent/p';

let upstream: AppUpstream;
let sidecarA: RunningSigil;
let sidecarB: RunningSigil;
let sidecarT: RunningSigil;
let sidecarR: RunningSigil;
let sidecarRO: RunningSigil;
let sidecarRA: RunningSigil;
const leaf: Record<'a' | 'c' | 'r1' | 'ops' | 'partner', Issued> = {} as never;

t.before(async () => {
  const dir = await tempDir(t, 'sigil-policies-');
  const [example, partner] = await Promise.all([setupTrustDomain(dir, TD), setupTrustDomain(dir, 'partner.example', 'partner')]);
  upstream = await startAppUpstream(t);
  [leaf.a, leaf.c, leaf.r1, leaf.ops, leaf.partner] = await Promise.all([
    example.leaf(ID_A),
    example.leaf(ID_C),
    example.leaf(ID_R1),
    example.leaf(ID_OPS),
    partner.leaf(ID_PARTNER),
  ]);
  const base = (id: string, policy: string) => ({
    trustDomain: TD,
    identity: { dev: { caDir: example.caDir, spiffeId: id, ttl: '15m' } },
    // The partner domain is trusted (its peers verify), so only policy keeps them out.
    trust: { bundles: { 'partner.example': partner.bundlePem } },
    policy: { cedar: policy, mode: 'enforce' },
  });
  const inbound = (name: string, id: string, policy: string) =>
    writeConfig(dir, `${name}.yaml`, sidecarConfig({ ...base(id, policy), inbound: { listen: '127.0.0.1:0', upstream: upstream.url } })).then((cfg) => runSigil(t, cfg));
  [sidecarB, sidecarT, sidecarRO] = await Promise.all([inbound('b', ID_B, AGENT_PAIR), inbound('t', ID_TOOLS, MCP_TOOLS), inbound('ro', ID_ARCHIVE, READ_ONLY)]);
  const outbound = (name: string, id: string, policy: string, routes: unknown[]) =>
    writeConfig(dir, `${name}.yaml`, sidecarConfig({ ...base(id, policy), outbound: { listen: '127.0.0.1:0', routes } })).then((cfg) => runSigil(t, cfg));
  [sidecarA, sidecarR, sidecarRA] = await Promise.all([
    outbound('a', ID_A, AGENT_PAIR, [
      { host: 'agent-b', address: sidecarB.inbound, spiffeId: ID_B },
      { host: 'tools', address: sidecarT.inbound, spiffeId: ID_TOOLS },
    ]),
    outbound('r', ID_R1, MCP_TOOLS, [{ host: 'tools', address: sidecarT.inbound, spiffeId: ID_TOOLS }]),
    outbound('ra', ID_AUDITOR, READ_ONLY, [{ host: 'archive', address: sidecarRO.inbound, spiffeId: ID_ARCHIVE }]),
  ]);
});

// ---------------------------------------------------------------------------------------------
// Clients and assertions

interface Call {
  method?: string;
  path?: string;
  body?: unknown;
  headers?: Record<string, string>;
}

const bodyText = (body: unknown): string | undefined => (body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body));

/** Straight to an inbound sidecar over mTLS with `cert`'s identity. */
function direct(sidecar: RunningSigil, cert: Issued, call: Call = {}): Promise<HttpResult> {
  const body = bodyText(call.body);
  return mtlsRequest({
    address: sidecar.inbound,
    certPem: cert.pem,
    keyPem: cert.keyPem,
    method: call.method ?? (body === undefined ? 'GET' : 'POST'),
    path: call.path ?? '/mcp',
    body,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }), ...call.headers },
  });
}

/** Through an outbound sidecar, to route `host`. */
function via(sidecar: RunningSigil, host: string, call: Call = {}): Promise<HttpResult> {
  const body = bodyText(call.body);
  return plainRequest({
    address: sidecar.outbound,
    method: call.method ?? (body === undefined ? 'GET' : 'POST'),
    path: call.path ?? '/mcp',
    body,
    headers: { host, ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }), ...call.headers },
  });
}

/** Runs `fn` and returns what the upstream received meanwhile. */
async function seen<T>(fn: () => Promise<T>): Promise<{ result: T; requests: AppRequest[]; calls: string[]; messages: AppMessage[] }> {
  const r0 = upstream.requests.length;
  const m0 = upstream.messages.length;
  const result = await fn();
  return { result, requests: upstream.requests.slice(r0), calls: upstream.calls(r0), messages: upstream.messages.slice(m0) };
}

/** An HTTP denial exactly as docs/policy.md gives it. */
function assertForbidden(t: Asserts, r: HttpResult, what: string, policies: string[]): void {
  assertStatus(t, r, what, 403);
  t.match(r.headers['content-type'], /^application\/json/, `${what}: JSON`);
  t.same(r.json, { error: 'forbidden', reason: 'policy_denied', policies }, `${what}: policy_denied, policies ${JSON.stringify(policies)}`);
}

/** A JSON-RPC denial exactly as docs/policy.md gives it. */
function assertRpcDenied(t: Asserts, r: HttpResult, what: string, id: unknown, policies: string[]): void {
  assertStatus(t, r, what, 200);
  t.same(
    r.json,
    { jsonrpc: '2.0', id, error: { code: -32043, message: 'forbidden: policy_denied', data: { reason: 'policy_denied', policies } } },
    `${what}: -32043 policy_denied, policies ${JSON.stringify(policies)}`,
  );
}

const rpc = (id: unknown, method: string, params?: unknown) => (params === undefined ? { jsonrpc: '2.0', id, method } : { jsonrpc: '2.0', id, method, params });
const toolCall = (id: unknown, name: string) => rpc(id, 'tools/call', { name, arguments: { q: 'x' } });
const toolNames = (r: HttpResult): unknown => (r.gotHttpResponse ? r.json?.result?.tools?.map((x: { name: string }) => x.name) : undefined);

/**
 * A verified peer that policy does not let connect: its request gets the 403 JSON denial with
 * `Connection: close` and the connection is then closed; nothing reaches the upstream.
 * Positive control: `allowed` gets 200 on a connection that stays open for a second request.
 */
async function checkConnect(t: Teardown & Asserts, sidecar: RunningSigil, allowed: Issued, refused: Issued, path: string): Promise<void> {
  const ok = await rawTls(sidecar.inbound, { certPem: allowed.pem, keyPem: allowed.keyPem });
  t.teardown(() => ok.destroy());
  const first = await ok.request(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.equal(first.kind === 'response' && first.status, 200, 'permitted peer: 200 (positive control)');
  const second = await ok.request(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  t.equal(second.kind === 'response' && second.status, 200, 'permitted peer: a second request on the same connection, 200');
  t.equal(ok.isClosed, false, 'permitted peer: connection still open');

  const before = upstream.requests.length;
  const no = await rawTls(sidecar.inbound, { certPem: refused.pem, keyPem: refused.keyPem });
  t.teardown(() => no.destroy());
  const r = await no.request(`GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
  if (r.kind !== 'response') {
    t.fail(`refused peer: expected a 403 answer, got ${r.kind}`);
  } else {
    t.equal(r.status, 403, 'refused peer: 403');
    t.same(JSON.parse(r.body), { error: 'forbidden', reason: 'policy_denied', policies: [] }, 'refused peer: policy_denied, default deny (no policy ids)');
    t.equal(r.headers['connection'], 'close', 'refused peer: Connection: close');
  }
  const closed = await Promise.race([no.closed.then(() => true), new Promise<boolean>((res) => setTimeout(() => res(false), 2_000))]);
  t.ok(closed, 'refused peer: the connection was closed after the answer');
  t.equal(upstream.requests.length, before, 'nothing from the refused peer reached the upstream');
}

async function ws(t: Teardown, url: string, options: Parameters<typeof openWs>[1] = {}): Promise<WsClient> {
  const c = await openWs(url, options);
  t.teardown(() => c.ws.terminate());
  return c;
}

const viaA = (t: Teardown, path: string) => ws(t, `ws://${sidecarA.outbound}${path}`, { headers: { host: 'agent-b' } });
const messagesOn = (path: string): string[] => upstream.messages.filter((m) => m.path === path).map((m) => (m.isBinary ? `binary:${m.data.length}` : `text:${m.data.length}`));

// ---------------------------------------------------------------------------------------------
// agent-pair.cedar

t.test('agent-pair: connect — agent/a may connect to agent/b; agent/c gets 403 and is disconnected', async (t) => {
  await checkConnect(t, sidecarB, leaf.a, leaf.c, '/v1/tasks');
});

t.test('agent-pair: egress connect — A may not dial the MCP tool server (403 at A), though the server itself admits agent/a', async (t) => {
  const connectsAtT = await decisions(sidecarT, { action: 'connect' });
  const egressDenials = await decisions(sidecarA, { action: 'connect', decision: 'deny' });
  const r = await seen(() => via(sidecarA, 'tools', { method: 'GET', path: '/mcp' }));
  assertForbidden(t, r.result, 'A → tools', []);
  t.same(r.requests, [], 'nothing reached the upstream');
  t.equal(await decisions(sidecarA, { action: 'connect', decision: 'deny' }), egressDenials + 1, 'A recorded the egress connect denial');
  t.equal(await decisions(sidecarT, { action: 'connect' }), connectsAtT, 'the tool server never saw a connection from A');

  assertStatus(t, await direct(sidecarT, leaf.a, { method: 'GET', path: '/mcp' }), 'agent/a straight to the tool server (positive control: T would admit it)');
  assertStatus(t, await via(sidecarA, 'agent-b', { path: '/v1/tasks' }), 'A → agent-b (positive control)');
});

t.test('agent-pair: http through the pair — task API reads and creation allowed; DELETE forbidden; everything else default-denied at A', async (t) => {
  for (const [method, path] of [
    ['GET', '/v1/tasks'],
    ['GET', '/v1/tasks/42?verbose=1'],
    ['POST', '/v1/tasks'],
    ['GET', '/chat'],
  ] as const) {
    const body = method === 'POST' ? JSON.stringify({ title: 'write report' }) : undefined;
    const r = await seen(() => via(sidecarA, 'agent-b', { method, path, body }));
    assertStatus(t, r.result, `${method} ${path}`);
    t.equal(r.requests.length, 1, `${method} ${path}: reached the upstream once`);
    t.match(r.requests[0], { method, url: path, headers: { 'x-sigil-peer-id': ID_A } }, `${method} ${path}: as agent/a`);
    if (body) t.equal(r.requests[0]?.body, body, 'the body arrived intact');
  }

  const httpDenialsAtA = await decisions(sidecarA, { action: 'http', decision: 'deny' });
  const httpDenialsAtB = await decisions(sidecarB, { action: 'http', decision: 'deny' });
  for (const [method, path, policies] of [
    ['DELETE', '/v1/tasks/42', ['no-task-deletion']],
    ['DELETE', '/v1/tasks', ['no-task-deletion']],
    ['DELETE', '/admin', ['no-task-deletion']],
    ['PUT', '/v1/tasks/42', []],
    ['PATCH', '/v1/tasks/42', []],
    ['POST', '/v1/tasks/42', []],
    ['GET', '/admin', []],
    ['GET', '/v2/tasks', []],
  ] as const) {
    const r = await seen(() => via(sidecarA, 'agent-b', { method, path, body: method === 'GET' ? undefined : '{"x":1}' }));
    assertForbidden(t, r.result, `${method} ${path}`, [...policies]);
    t.same(r.requests, [], `${method} ${path}: nothing reached the upstream`);
  }
  t.equal(await decisions(sidecarA, { action: 'http', decision: 'deny' }), httpDenialsAtA + 8, 'all eight were denied at A (egress)');
  t.equal(await decisions(sidecarB, { action: 'http', decision: 'deny' }), httpDenialsAtB, 'B never had to');
});

t.test('agent-pair: http at B (ingress) — same rules without A in front', async (t) => {
  const ok = await seen(() => direct(sidecarB, leaf.a, { method: 'GET', path: '/v1/tasks' }));
  assertStatus(t, ok.result, 'GET /v1/tasks (positive control)');
  t.equal(ok.requests.length, 1);
  const created = await seen(() => direct(sidecarB, leaf.a, { method: 'POST', path: '/v1/tasks', body: { title: 't' } }));
  assertStatus(t, created.result, 'POST /v1/tasks (positive control)');

  const del = await seen(() => direct(sidecarB, leaf.a, { method: 'DELETE', path: '/v1/tasks/42' }));
  assertForbidden(t, del.result, 'DELETE /v1/tasks/42 at B', ['no-task-deletion']);
  t.same(del.requests, [], 'nothing reached the upstream');
  const put = await seen(() => direct(sidecarB, leaf.a, { method: 'PUT', path: '/v1/tasks/42', body: { title: 't' } }));
  assertForbidden(t, put.result, 'PUT /v1/tasks/42 at B', []);
  t.same(put.requests, [], 'nothing reached the upstream');
  t.notMatch(del.result.gotHttpResponse ? del.result.body : '', /permit \(|forbid \(|principal|context\.|Action::/, 'no policy text in the answer');
});

// The policy sees the raw request target; an upstream built on WHATWG URL parsing (fetch-style
// servers: `new Request(url)`, Hono, Deno, ...) resolves dot segments, so to it
// `/v1/tasks/../../admin` and `/v1/tasks/%2e%2e/%2E%2E/admin` are `/admin`. A prefix rule
// (`like "/v1/tasks*"`) must not let such a target through to a path the policy denies: either
// it is refused, or the path that reaches the upstream is the one that was authorized.
t.test('agent-pair: a dot-segment path under an allowed prefix does not reach a denied path', async (t) => {
  const control = await seen(() => direct(sidecarB, leaf.a, { method: 'GET', path: '/admin' }));
  assertForbidden(t, control.result, 'GET /admin (the path is denied)', []);
  for (const path of ['/v1/tasks/../../admin', '/v1/tasks/%2e%2e/%2E%2E/admin']) {
    for (const [label, send] of [
      ['through the pair', () => via(sidecarA, 'agent-b', { method: 'GET', path })],
      ['straight to B', () => direct(sidecarB, leaf.a, { method: 'GET', path })],
    ] as const) {
      const r = await seen(send);
      const resolved = r.requests.map((q) => new URL(q.url, 'http://upstream').pathname);
      t.same(
        resolved.filter((p) => !p.startsWith('/v1/tasks')),
        [],
        `${label}: GET ${path} → ${r.result.gotHttpResponse ? r.result.status : 'no response'}; the upstream received ${JSON.stringify(r.requests.map((q) => q.url))}, which resolves to ${JSON.stringify(resolved)}`,
      );
    }
  }
});

t.test('agent-pair: websocket.message — text chat on /chat flows both ways (up to 64 KiB)', async (t) => {
  const c = await viaA(t, '/chat');
  const hello = await c.roundTrip('hello worker');
  t.same([hello.isBinary, hello.data.toString()], [false, 'hello worker'], 'a → b and the echo b → a');
  const max = await c.roundTrip('m'.repeat(65536));
  t.equal(max.data.length, 65536, 'a 64 KiB text message is allowed both ways');
  t.same(messagesOn('/chat'), ['text:12', 'text:65536'], 'the upstream got both messages');
  const seenBy = upstream.wsConnections.find((w) => w.path === '/chat');
  t.equal(seenBy?.headers['x-sigil-peer-id'], ID_A, 'the upstream handshake carries agent/a');
});

t.test('agent-pair: websocket.message — binary, > 64 KiB, a reply > 64 KiB, or another path: 1008 policy_denied, nothing forwarded', async (t) => {
  const binary = await viaA(t, '/chat?s=binary');
  t.equal((await binary.roundTrip('text first')).data.toString(), 'text first', 'text allowed (positive control)');
  binary.ws.send(Buffer.from([1, 2, 3]), { binary: true });
  t.same(await binary.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'binary message: 1008 policy_denied');
  t.same(messagesOn('/chat?s=binary'), ['text:10'], 'the binary message never reached the upstream');

  const big = await viaA(t, '/chat?s=big');
  t.equal((await big.roundTrip('small')).data.toString(), 'small', 'positive control');
  big.ws.send('b'.repeat(65537));
  t.same(await big.closeWithin(), { code: 1008, reason: 'policy_denied' }, '65537-byte text: 1008 policy_denied');
  t.same(messagesOn('/chat?s=big'), ['text:5'], 'the oversized message never reached the upstream');

  // The worker's answer is the one denied: B checks messages from its agent to the planner too.
  const reply = await viaA(t, '/chat?s=reply');
  let got = 0;
  reply.ws.on('message', () => got++);
  reply.ws.send('reply-big:70000');
  t.same(await reply.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'a 70000-byte reply from agent/b: 1008 policy_denied');
  t.equal(got, 0, 'the agent never got the denied reply');
  t.same(messagesOn('/chat?s=reply'), ['text:15'], 'the request message itself was allowed');
  const upstreamSide = upstream.wsConnections.find((w) => w.path === '/chat?s=reply');
  t.match(await Promise.race([upstreamSide?.closed, new Promise((r) => setTimeout(() => r('pending'), 2_000))]), { code: 1008 }, 'the worker’s side was closed with 1008 too');

  // The upgrade on /v1/tasks/stream is an allowed GET, but messages are only allowed on /chat.
  const other = await viaA(t, '/v1/tasks/stream');
  other.ws.send('hi');
  t.same(await other.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'message on /v1/tasks/stream: 1008 policy_denied');
  t.same(messagesOn('/v1/tasks/stream'), [], 'never reached the upstream');

  const refused = await wsRefusal(`ws://${sidecarA.outbound}/feed`, { headers: { host: 'agent-b' } });
  t.equal(refused.status, 403, 'an upgrade on a path without an http permit: 403');
  t.same(refused.json, { error: 'forbidden', reason: 'policy_denied', policies: [] });

  // B enforces it as well, without A in front.
  const direct = await ws(t, `wss://${sidecarB.inbound}/chat?s=direct`, { cert: leaf.a.pem, key: leaf.a.keyPem, rejectUnauthorized: false });
  t.equal((await direct.roundTrip('hi b')).data.toString(), 'hi b', 'straight to B: text allowed (positive control)');
  direct.ws.send(Buffer.from([9]), { binary: true });
  t.same(await direct.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'straight to B: binary closes with 1008');
  t.same(messagesOn('/chat?s=direct'), ['text:4']);
});

// ---------------------------------------------------------------------------------------------
// mcp-tools.cedar

t.test('mcp-tools: connect — any example.org agent; a verified partner.example agent gets 403 and is disconnected', async (t) => {
  await checkConnect(t, sidecarT, leaf.r1, leaf.partner, '/mcp');
});

t.test('mcp-tools: http — GET/POST/DELETE on /mcp only', async (t) => {
  for (const method of ['GET', 'DELETE'] as const) {
    const r = await seen(() => direct(sidecarT, leaf.a, { method, path: '/mcp' }));
    assertStatus(t, r.result, `${method} /mcp`);
    t.equal(r.requests.length, 1, `${method} /mcp forwarded`);
  }
  const init = await seen(() => direct(sidecarT, leaf.a, { body: rpc(1, 'initialize', { protocolVersion: '2025-06-18' }) }));
  assertStatus(t, init.result, 'POST /mcp initialize');
  t.same(init.calls, ['initialize']);

  for (const [method, path, body] of [
    ['PUT', '/mcp', rpc(2, 'initialize', {})],
    ['POST', '/admin', toolCall(3, 'search')],
    ['GET', '/', undefined],
    ['GET', '/mcp/extra', undefined],
  ] as const) {
    const r = await seen(() => direct(sidecarT, leaf.r1, { method, path, body }));
    assertForbidden(t, r.result, `${method} ${path}`, []);
    t.same(r.requests, [], `${method} ${path}: nothing forwarded`);
  }
});

t.test('mcp-tools: session methods (initialize, ping, notifications, tools/list) for every org agent; other methods denied', async (t) => {
  for (const [id, method] of [
    [1, 'initialize'],
    [2, 'ping'],
    [3, 'tools/list'],
  ] as const) {
    const r = await seen(() => direct(sidecarT, leaf.a, { body: rpc(id, method, method === 'initialize' ? { protocolVersion: '2025-06-18' } : undefined) }));
    assertStatus(t, r.result, method);
    t.equal(r.result.gotHttpResponse && r.result.json?.id, id, `${method}: answered by the upstream`);
    t.same(r.calls, [method], `${method}: forwarded`);
  }
  const note = await seen(() => direct(sidecarT, leaf.a, { body: { jsonrpc: '2.0', method: 'notifications/initialized' } }));
  assertStatus(t, note.result, 'notifications/initialized', 202);
  t.same(note.calls, ['notifications/initialized']);

  for (const [id, method, params] of [
    [4, 'resources/read', { uri: 'file:///etc/passwd' }],
    [5, 'prompts/get', { name: 'p' }],
    [6, 'message/send', { message: { role: 'user', parts: [] } }],
    [7, 'tasks/get', { id: 't-1' }],
  ] as const) {
    const r = await seen(() => direct(sidecarT, leaf.a, { body: rpc(id, method, params) }));
    assertRpcDenied(t, r.result, method, id, []);
    t.same(r.requests, [], `${method}: nothing forwarded`);
  }
});

t.test('mcp-tools: tools/call per tool and caller — research: search/fetch; ops: restart_service; delete_*/drop_* forbidden for everyone, ops included', async (t) => {
  const cases: [string, Issued, string, string[] | 'allow'][] = [
    ['research/r1', leaf.r1, 'search', 'allow'],
    ['research/r1', leaf.r1, 'fetch', 'allow'],
    ['research/r1', leaf.r1, 'restart_service', []],
    ['research/r1', leaf.r1, 'summarize', []],
    ['research/r1', leaf.r1, 'delete_logs', ['no-destructive-tools']],
    ['ops', leaf.ops, 'restart_service', 'allow'],
    ['ops', leaf.ops, 'search', []],
    ['ops', leaf.ops, 'delete_logs', ['no-destructive-tools']],
    ['ops', leaf.ops, 'drop_table', ['no-destructive-tools']],
    ['agent/a', leaf.a, 'search', []],
    ['agent/a', leaf.a, 'delete_logs', ['no-destructive-tools']],
  ];
  let id = 100;
  for (const [who, cert, tool, expected] of cases) {
    id++;
    const r = await seen(() => direct(sidecarT, cert, { body: toolCall(id, tool) }));
    if (expected === 'allow') {
      assertStatus(t, r.result, `${who} → ${tool}`);
      t.same(r.result.gotHttpResponse && r.result.json, { jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: `called ${tool}` }] } }, `${who} → ${tool}: executed`);
      t.same(r.calls, [`tools/call:${tool}`], `${who} → ${tool}: forwarded once`);
      t.equal(r.requests[0]?.headers['x-sigil-peer-id'], cert === leaf.r1 ? ID_R1 : ID_OPS, 'as the verified caller');
    } else {
      assertRpcDenied(t, r.result, `${who} → ${tool}`, id, expected);
      t.same(r.requests, [], `${who} → ${tool}: nothing forwarded`);
    }
  }
});

t.test('mcp-tools: tools/list answers are filtered to the tools each caller may call', async (t) => {
  t.same(APP_TOOLS.map((x) => x.name), ['search', 'fetch', 'restart_service', 'delete_logs', 'drop_table', 'summarize'], 'the server offers six tools');
  for (const [who, cert, visible] of [
    ['research/r1', leaf.r1, ['search', 'fetch']],
    ['ops', leaf.ops, ['restart_service']],
    ['agent/a', leaf.a, []],
  ] as const) {
    const r = await seen(() => direct(sidecarT, cert, { body: rpc(`list-${who}`, 'tools/list') }));
    assertStatus(t, r.result, `${who}: tools/list`);
    t.same(r.calls, ['tools/list'], `${who}: the list request was forwarded`);
    t.same(toolNames(r.result), visible, `${who} sees ${JSON.stringify(visible)}`);
    if (r.result.gotHttpResponse) {
      t.notMatch(r.result.body, /delete_logs|drop_table/, `${who}: no trace of the destructive tools`);
      t.equal(r.result.headers['content-length'], String(Buffer.byteLength(r.result.body)), `${who}: Content-Length matches the filtered body`);
    }
  }
});

t.test('mcp-tools: egress at the research agent’s own sidecar (R)', async (t) => {
  const search = await seen(() => via(sidecarR, 'tools', { body: toolCall(1, 'search') }));
  assertStatus(t, search.result, 'search via R');
  t.same(search.calls, ['tools/call:search']);
  t.equal(search.requests[0]?.headers['x-sigil-peer-id'], ID_R1, 'T saw research/r1');
  const list = await via(sidecarR, 'tools', { body: rpc(2, 'tools/list') });
  assertStatus(t, list, 'tools/list via R');
  t.same(toolNames(list), ['search', 'fetch'], 'filtered for research/r1');

  const deniedAtR = await decisions(sidecarR, { action: 'mcp.tools/call', decision: 'deny' });
  const deniedAtT = await decisions(sidecarT, { action: 'mcp.tools/call', decision: 'deny' });
  const del = await seen(() => via(sidecarR, 'tools', { body: toolCall(3, 'delete_logs') }));
  assertRpcDenied(t, del.result, 'delete_logs via R', 3, ['no-destructive-tools']);
  t.same(del.requests, [], 'nothing forwarded');
  const restart = await seen(() => via(sidecarR, 'tools', { body: toolCall(4, 'restart_service') }));
  assertRpcDenied(t, restart.result, 'restart_service via R', 4, []);
  t.same(restart.requests, [], 'nothing forwarded');
  t.equal(await decisions(sidecarR, { action: 'mcp.tools/call', decision: 'deny' }), deniedAtR + 2, 'both denied at R (egress)');
  t.equal(await decisions(sidecarT, { action: 'mcp.tools/call', decision: 'deny' }), deniedAtT, 'T never saw them');

  const admin = await seen(() => via(sidecarR, 'tools', { method: 'GET', path: '/admin' }));
  assertForbidden(t, admin.result, 'GET /admin via R', []);
  t.same(admin.requests, [], 'nothing forwarded');
});

// ---------------------------------------------------------------------------------------------
// read-only.cedar

t.test('read-only: connect — any example.org agent; a verified partner.example agent gets 403 and is disconnected', async (t) => {
  await checkConnect(t, sidecarRO, leaf.a, leaf.partner, '/v1/items');
});

t.test('read-only: http — GET, HEAD, OPTIONS allowed; POST (except /mcp), PUT, PATCH, DELETE denied', async (t) => {
  for (const method of ['GET', 'HEAD', 'OPTIONS'] as const) {
    const r = await seen(() => direct(sidecarRO, leaf.a, { method, path: '/v1/items?page=2' }));
    assertStatus(t, r.result, `${method} /v1/items`);
    t.match(r.requests, [{ method, url: '/v1/items?page=2' }], `${method}: forwarded`);
  }
  for (const [method, path] of [
    ['POST', '/v1/items'],
    ['POST', '/'],
    ['PUT', '/v1/items/1'],
    ['PATCH', '/v1/items/1'],
    ['DELETE', '/v1/items/1'],
    ['PUT', '/mcp'],
  ] as const) {
    const r = await seen(() => direct(sidecarRO, leaf.a, { method, path, body: { name: 'x' } }));
    assertForbidden(t, r.result, `${method} ${path}`, []);
    t.same(r.requests, [], `${method} ${path}: nothing forwarded`);
  }
});

t.test('read-only: MCP reads allowed (initialize, resources/read, tools/list with no callable tool), tools/call denied', async (t) => {
  const init = await seen(() => direct(sidecarRO, leaf.a, { body: rpc(1, 'initialize', { protocolVersion: '2025-06-18' }) }));
  assertStatus(t, init.result, 'initialize');
  t.same(init.calls, ['initialize']);
  const read = await seen(() => direct(sidecarRO, leaf.a, { body: rpc(2, 'resources/read', { uri: 'file:///notes.txt' }) }));
  assertStatus(t, read.result, 'resources/read');
  t.same(read.result.gotHttpResponse && read.result.json, { jsonrpc: '2.0', id: 2, result: { contents: [{ uri: 'file:///notes.txt', mimeType: 'text/plain', text: 'resource body' }] } }, 'resources/read answered');
  t.same(read.calls, ['resources/read']);
  const list = await seen(() => direct(sidecarRO, leaf.a, { body: rpc(3, 'tools/list') }));
  assertStatus(t, list.result, 'tools/list');
  t.same(list.calls, ['tools/list'], 'tools/list forwarded');
  t.same(toolNames(list.result), [], 'no tool may be called, so none is listed');
  const note = await seen(() => direct(sidecarRO, leaf.a, { body: { jsonrpc: '2.0', method: 'notifications/initialized' } }));
  assertStatus(t, note.result, 'notifications/initialized', 202);

  for (const tool of ['search', 'delete_logs']) {
    const r = await seen(() => direct(sidecarRO, leaf.a, { body: toolCall(`call-${tool}`, tool) }));
    assertRpcDenied(t, r.result, `tools/call ${tool}`, `call-${tool}`, []);
    t.same(r.requests, [], `tools/call ${tool}: nothing forwarded`);
  }
  const sub = await seen(() => direct(sidecarRO, leaf.a, { body: rpc(4, 'resources/subscribe', { uri: 'file:///notes.txt' }) }));
  assertRpcDenied(t, sub.result, 'resources/subscribe', 4, []);
  t.same(sub.requests, [], 'nothing forwarded');
});

t.test('read-only: A2A tasks/get allowed, message/send denied', async (t) => {
  const get = await seen(() => direct(sidecarRO, leaf.a, { body: rpc('g1', 'tasks/get', { id: 'task-7' }) }));
  assertStatus(t, get.result, 'tasks/get');
  t.same(get.result.gotHttpResponse && get.result.json, { jsonrpc: '2.0', id: 'g1', result: { id: 'task-7', kind: 'task', status: { state: 'completed' } } });
  t.same(get.calls, ['tasks/get']);
  for (const [id, method, params] of [
    ['s1', 'message/send', { message: { role: 'user', parts: [{ kind: 'text', text: 'do it' }] } }],
    ['c1', 'tasks/cancel', { id: 'task-7' }],
  ] as const) {
    const r = await seen(() => direct(sidecarRO, leaf.a, { body: rpc(id, method, params) }));
    assertRpcDenied(t, r.result, method, id, []);
    t.same(r.requests, [], `${method}: nothing forwarded`);
  }
});

t.test('read-only: a WebSocket upgrade is a read, but no message may flow (no websocket.message permit)', async (t) => {
  const c = await ws(t, `wss://${sidecarRO.inbound}/stream`, { cert: leaf.a.pem, key: leaf.a.keyPem, rejectUnauthorized: false });
  t.pass('the upgrade (GET) was allowed');
  c.ws.send('anything');
  t.same(await c.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'the first message: 1008 policy_denied');
  t.same(messagesOn('/stream'), [], 'never reached the upstream');
});

t.test('read-only: egress at the caller’s own sidecar (RA)', async (t) => {
  const get = await seen(() => via(sidecarRA, 'archive', { method: 'GET', path: '/v1/items' }));
  assertStatus(t, get.result, 'GET via RA');
  t.equal(get.requests[0]?.headers['x-sigil-peer-id'], ID_AUDITOR, 'RO saw agent/auditor');
  const read = await seen(() => via(sidecarRA, 'archive', { body: rpc(1, 'resources/read', { uri: 'file:///a' }) }));
  assertStatus(t, read.result, 'resources/read via RA');
  t.same(read.calls, ['resources/read']);

  const httpAtRA = await decisions(sidecarRA, { action: 'http', decision: 'deny' });
  const httpAtRO = await decisions(sidecarRO, { action: 'http', decision: 'deny' });
  const post = await seen(() => via(sidecarRA, 'archive', { method: 'POST', path: '/v1/items', body: { name: 'x' } }));
  assertForbidden(t, post.result, 'POST /v1/items via RA', []);
  t.same(post.requests, [], 'nothing forwarded');
  t.equal(await decisions(sidecarRA, { action: 'http', decision: 'deny' }), httpAtRA + 1, 'denied at RA (egress)');
  t.equal(await decisions(sidecarRO, { action: 'http', decision: 'deny' }), httpAtRO, 'RO never saw it');

  const callAtRA = await decisions(sidecarRA, { action: 'mcp.tools/call', decision: 'deny' });
  const call = await seen(() => via(sidecarRA, 'archive', { body: toolCall(2, 'search') }));
  assertRpcDenied(t, call.result, 'tools/call via RA', 2, []);
  t.same(call.requests, [], 'nothing forwarded');
  t.equal(await decisions(sidecarRA, { action: 'mcp.tools/call', decision: 'deny' }), callAtRA + 1, 'denied at RA (egress)');
});
