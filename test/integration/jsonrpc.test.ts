// JSON-RPC 2.0 call authorization over HTTP (MCP streamable HTTP, A2A) through real `sigil run`
// processes, both directions. An MCP/A2A-like upstream records every JSON-RPC message it is
// handed, so each refusal also checks that nothing reached it; every refusal has a positive
// control beside it.
//
//   test client (cert agent/c) ──mTLS──▶ B (inbound, ingress policy) ──▶ upstream
//   agent ──plain──▶ A (outbound, egress policy) ──mTLS──▶ B ──▶ upstream
//   agent ──plain──▶ A-open (outbound, permissive egress) ──mTLS──▶ B ──▶ upstream
import { Agent as HttpsAgent } from 'node:https';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import t from 'tap';
import type { Issued } from '../fixtures/certs.js';
import { assertJsonError, assertStatus, type Asserts } from '../helpers/assert.js';
import { mtlsRequest, plainRequest, type HttpResult } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, writeConfig, type RunningSigil, type Teardown } from '../helpers/env.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_A_OPEN = 'spiffe://example.org/agent/a-open';
const ID_B = 'spiffe://example.org/mcp/tools';
const ID_C = 'spiffe://example.org/agent/c';

// Ingress (B): search for everyone, fetch only for agent/a; never delete. A2A: message/send for
// everyone, tasks/cancel only for agent/a. Notifications: only notifications/initialized.
const POLICY_B = `
@id("connect") permit (principal in TrustDomain::"example.org", action == Action::"connect", resource);
@id("http") permit (principal in TrustDomain::"example.org", action == Action::"http", resource);
@id("session") permit (principal, action in [Action::"mcp.initialize", Action::"mcp.tools/list"], resource);
@id("initialized") permit (principal, action == Action::"mcp.notifications", resource)
  when { context.jsonrpc.method == "notifications/initialized" };
@id("search") permit (principal, action == Action::"mcp.tools/call", resource == Tool::"search");
@id("fetch-for-a") permit (principal, action == Action::"mcp.tools/call", resource == Tool::"fetch")
  when { principal in [Agent::"${ID_A}", Agent::"${ID_A_OPEN}"] };
@id("no-delete") forbid (principal, action == Action::"mcp.tools/call", resource == Tool::"delete");
@id("a2a-send") permit (principal, action == Action::"a2a.message/send", resource);
@id("a2a-cancel-for-a") permit (principal, action == Action::"a2a.tasks/cancel", resource)
  when { principal in [Agent::"${ID_A}", Agent::"${ID_A_OPEN}"] };
`;

// Egress (A): only search, tools/list and message/send — B would allow fetch and tasks/cancel.
const POLICY_A = `
@id("connect") permit (principal, action == Action::"connect", resource == Agent::"${ID_B}");
@id("http") permit (principal, action == Action::"http", resource == Agent::"${ID_B}");
@id("list") permit (principal, action == Action::"mcp.tools/list", resource);
@id("egress-search") permit (principal, action == Action::"mcp.tools/call", resource == Tool::"search")
  when { resource in Agent::"${ID_B}" };
@id("egress-send") permit (principal, action == Action::"a2a.message/send", resource);
`;

// Egress (A-open): everything JSON-RPC — the positive control showing B allows what A denies.
const POLICY_A_OPEN = `
@id("connect") permit (principal, action == Action::"connect", resource);
@id("http") permit (principal, action == Action::"http", resource);
@id("all-mcp") permit (principal, action in Action::"mcp", resource);
@id("all-tools") permit (principal, action == Action::"mcp.tools/call", resource);
@id("all-a2a") permit (principal, action in Action::"a2a", resource);
`;

interface Seen {
  method: string;
  url: string;
  contentType?: string;
  body: string;
  headers: IncomingMessage['headers'];
}

interface RpcUpstream {
  url: string;
  seen: Seen[];
  /** JSON-RPC methods (and tools/call tool names as `tools/call:<name>`) received so far. */
  calls(): string[];
}

const TOOLS = [
  { name: 'search', description: 'Search the web', inputSchema: { type: 'object' } },
  { name: 'fetch', description: 'Fetch a URL', inputSchema: { type: 'object' } },
  { name: 'delete', description: 'Delete everything', inputSchema: { type: 'object' } },
];

function answer(msg: any): unknown {
  if (msg === null || typeof msg !== 'object' || typeof msg.method !== 'string') return undefined;
  if (!('id' in msg)) return undefined;
  const id = msg.id;
  switch (msg.method) {
    case 'tools/list':
      return { jsonrpc: '2.0', id, result: { tools: TOOLS, nextCursor: 'page-2' } };
    case 'tools/call':
      return { jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: `called ${msg.params?.name}` }] } };
    default:
      return { jsonrpc: '2.0', id, result: { method: msg.method } };
  }
}

/** An MCP/A2A-like server: JSON-RPC on POST (JSON, or SSE with `x-test-sse: 1`), echo otherwise. */
async function startRpcUpstream(t: Teardown): Promise<RpcUpstream> {
  const seen: Seen[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method ?? '', url: req.url ?? '', contentType: req.headers['content-type'], body, headers: req.headers });
      let parsed: any;
      try {
        parsed = JSON.parse(body);
      } catch {
        parsed = undefined;
      }
      const isRpc = parsed !== undefined && (Array.isArray(parsed) || typeof parsed?.jsonrpc === 'string');
      if (req.method !== 'POST' || !isRpc) {
        const echo = JSON.stringify({ echo: true, method: req.method, url: req.url, body });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(echo) });
        res.end(echo);
        return;
      }
      const replies = (Array.isArray(parsed) ? parsed : [parsed]).map(answer).filter((r) => r !== undefined);
      if (replies.length === 0) {
        res.writeHead(202).end();
        return;
      }
      if (req.headers['x-test-sse'] === '1') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        res.write(`: stream opened\n\nevent: message\nid: 1\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progress: 1 } })}\n\n`);
        // The result arrives in a later chunk, split mid-event, with CRLF line ends.
        const ev = `event: message\r\nid: 2\r\ndata: ${JSON.stringify(Array.isArray(parsed) ? replies : replies[0])}\r\n\r\n`;
        setTimeout(() => {
          res.write(ev.slice(0, 40));
          setTimeout(() => res.end(ev.slice(40)), 20);
        }, 20);
        return;
      }
      const out = JSON.stringify(Array.isArray(parsed) ? replies : replies[0]);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    calls: () =>
      seen.flatMap((s) => {
        let v: any;
        try {
          v = JSON.parse(s.body);
        } catch {
          return [];
        }
        return (Array.isArray(v) ? v : [v]).filter((m) => typeof m?.method === 'string').map((m) => (m.method === 'tools/call' ? `tools/call:${m.params?.name}` : m.method));
      }),
  };
}

let upstream: RpcUpstream;
let sidecarB: RunningSigil;
let sidecarA: RunningSigil;
let sidecarAOpen: RunningSigil;
let leafC: Issued;

t.before(async () => {
  const dir = await tempDir(t, 'sigil-jsonrpc-');
  const example = await setupTrustDomain(dir, 'example.org');
  upstream = await startRpcUpstream(t);
  leafC = await example.leaf(ID_C);
  const { writeFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  await Promise.all([
    writeFile(join(dir, 'policy-b.cedar'), POLICY_B),
    writeFile(join(dir, 'policy-a.cedar'), POLICY_A),
    writeFile(join(dir, 'policy-a-open.cedar'), POLICY_A_OPEN),
  ]);
  const bCfg = await writeConfig(
    dir,
    'b.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: example.caDir, spiffeId: ID_B, ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { cedar: './policy-b.cedar' },
    }),
  );
  sidecarB = await runSigil(t, bCfg);
  const outbound = (id: string, policy: string, name: string) =>
    writeConfig(
      dir,
      name,
      sidecarConfig({
        trustDomain: 'example.org',
        identity: { dev: { caDir: example.caDir, spiffeId: id, ttl: '15m' } },
        outbound: { listen: '127.0.0.1:0', routes: [{ host: 'tools', address: sidecarB.inbound, spiffeId: ID_B }] },
        policy: { cedar: policy },
      }),
    );
  const [aCfg, aOpenCfg] = await Promise.all([outbound(ID_A, './policy-a.cedar', 'a.yaml'), outbound(ID_A_OPEN, './policy-a-open.cedar', 'a-open.yaml')]);
  [sidecarA, sidecarAOpen] = await Promise.all([runSigil(t, aCfg), runSigil(t, aOpenCfg)]);
});

const rpc = (id: unknown, method: string, params?: unknown) => (params === undefined ? { jsonrpc: '2.0', id, method } : { jsonrpc: '2.0', id, method, params });
const toolCall = (id: unknown, name: string) => rpc(id, 'tools/call', { name, arguments: { q: 'x' } });

const keepAlive = new HttpsAgent({ keepAlive: true, maxSockets: 1 });
t.teardown(() => keepAlive.destroy());

/** POST to B's inbound port with agent/c's certificate. */
function direct(body: unknown, extra: Partial<Parameters<typeof mtlsRequest>[0]> = {}): Promise<HttpResult> {
  return mtlsRequest({
    address: sidecarB.inbound,
    certPem: leafC.pem,
    keyPem: leafC.keyPem,
    method: 'POST',
    path: '/mcp',
    body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body),
    ...extra,
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...extra.headers },
  });
}

/** POST through an outbound sidecar to route `tools`. */
function via(sidecar: RunningSigil, body: unknown, extra: Partial<Parameters<typeof plainRequest>[0]> = {}): Promise<HttpResult> {
  return plainRequest({
    address: sidecar.outbound,
    method: 'POST',
    path: '/mcp',
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...extra,
    headers: { host: 'tools', 'content-type': 'application/json', ...extra.headers },
  });
}

/** Runs `fn` and returns what the upstream received meanwhile. */
async function received<T>(fn: () => Promise<T>): Promise<{ result: T; calls: string[]; requests: Seen[] }> {
  const before = upstream.seen.length;
  const callsBefore = upstream.calls().length;
  const result = await fn();
  return { result, calls: upstream.calls().slice(callsBefore), requests: upstream.seen.slice(before) };
}

function assertRpcError(t: Asserts, r: HttpResult, what: string, id: unknown, code: number, reason: string): void {
  assertStatus(t, r, what);
  t.match(r.headers['content-type'], /^application\/json/, `${what}: JSON`);
  t.match(r.json, { jsonrpc: '2.0', id, error: { code, data: { reason } } }, `${what}: ${code}/${reason}`);
}

t.test('inbound: allowed tools/call is forwarded (positive control), denied one never reaches the upstream', async (t) => {
  const ok = await received(() => direct(toolCall(1, 'search'), { agent: keepAlive }));
  assertStatus(t, ok.result, 'search');
  t.same(ok.result.gotHttpResponse && ok.result.json, { jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: 'called search' }] } });
  t.same(ok.calls, ['tools/call:search'], 'upstream executed search');
  t.equal(ok.requests[0]?.headers['x-sigil-peer-id'], ID_C, 'with the verified caller');
  t.equal(ok.requests[0]?.headers['content-length'], String(JSON.stringify(toolCall(1, 'search')).length), 'forwarded with an exact Content-Length');

  for (const [tool, policies] of [
    ['fetch', []],
    ['delete', ['no-delete']],
  ] as const) {
    const denied = await received(() => direct(toolCall(`id-${tool}`, tool), { agent: keepAlive }));
    assertRpcError(t, denied.result, `tools/call ${tool}`, `id-${tool}`, -32043, 'policy_denied');
    t.match(denied.result.gotHttpResponse && denied.result.json.error, { message: 'forbidden: policy_denied', data: { policies } }, `${tool}: policy ids, no policy text`);
    t.notMatch(denied.result.gotHttpResponse ? denied.result.body : '', /permit \(|forbid \(|principal|Tool::/, 'no policy text in the answer');
    t.same(denied.requests, [], `${tool}: nothing forwarded`);
  }
  const again = await direct(toolCall(2, 'search'), { agent: keepAlive });
  assertStatus(t, again, 'the connection is still usable after a denial');
  t.ok(again.gotHttpResponse && again.reusedSocket, 'same kept-alive connection');
});

t.test('inbound: tools/list is filtered to the tools the caller may call (JSON and SSE)', async (t) => {
  const json = await direct(rpc(10, 'tools/list'));
  assertStatus(t, json, 'tools/list JSON');
  t.match(json.headers['content-type'], /^application\/json/);
  t.same(json.json, { jsonrpc: '2.0', id: 10, result: { tools: [TOOLS[0]], nextCursor: 'page-2' } }, 'agent/c sees only search');
  t.equal(json.headers['content-length'], String(Buffer.byteLength(json.body)), 'Content-Length fixed');

  const sse = await direct(rpc(11, 'tools/list'), { headers: { 'x-test-sse': '1' } });
  assertStatus(t, sse, 'tools/list SSE');
  t.match(sse.headers['content-type'], /^text\/event-stream/);
  t.match(sse.body, /^: stream opened\n\nevent: message\nid: 1\ndata: \{"jsonrpc":"2.0","method":"notifications\/progress"/, 'other events pass unchanged');
  const dataLines = sse.body.split(/\r?\n/).filter((l) => l.startsWith('data: '));
  t.equal(dataLines.length, 2);
  t.same(JSON.parse(dataLines[1]!.slice(6)), { jsonrpc: '2.0', id: 11, result: { tools: [TOOLS[0]], nextCursor: 'page-2' } }, 'SSE result filtered');
  t.notMatch(sse.body, /delete|fetch/, 'no trace of the hidden tools');

  // Through A-open (caller agent/a-open): B filters for that caller, so fetch is listed too.
  const forA = await via(sidecarAOpen, rpc(12, 'tools/list'));
  assertStatus(t, forA, 'tools/list via A-open');
  t.same(forA.json.result.tools.map((x: { name: string }) => x.name), ['search', 'fetch'], 'per-caller filtering');
});

t.test('inbound: batch with one denied element: nothing forwarded, per-element errors', async (t) => {
  const batch = [toolCall(1, 'search'), { jsonrpc: '2.0', method: 'notifications/initialized' }, toolCall(2, 'delete'), rpc('three', 'tools/list')];
  const r = await received(() => direct(batch));
  assertStatus(t, r.result, 'batch');
  t.same(r.result.gotHttpResponse && r.result.json, [
    { jsonrpc: '2.0', id: 1, error: { code: -32043, message: 'not executed: batch rejected', data: { reason: 'batch_rejected', policies: [] } } },
    { jsonrpc: '2.0', id: 2, error: { code: -32043, message: 'forbidden: policy_denied', data: { reason: 'policy_denied', policies: ['no-delete'] } } },
    { jsonrpc: '2.0', id: 'three', error: { code: -32043, message: 'not executed: batch rejected', data: { reason: 'batch_rejected', policies: [] } } },
  ]);
  t.same(r.requests, [], 'nothing reached the upstream');

  const allowed = await received(() => direct([toolCall(1, 'search'), { jsonrpc: '2.0', method: 'notifications/initialized' }, rpc(2, 'initialize', {})]));
  assertStatus(t, allowed.result, 'all-allowed batch (positive control)');
  t.same(allowed.calls, ['tools/call:search', 'notifications/initialized', 'initialize'], 'forwarded whole');
  t.equal(allowed.result.gotHttpResponse && allowed.result.json.length, 2);
});

t.test('inbound: refused notification gets the plain 403 (JSON-RPC has no answer for it)', async (t) => {
  const r = await received(() => direct({ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 1 } }));
  assertJsonError(t, r.result, 'notifications/cancelled', 403, 'forbidden', 'policy_denied');
  t.same(r.requests, [], 'nothing forwarded');
  const ok = await received(() => direct({ jsonrpc: '2.0', method: 'notifications/initialized' }));
  assertStatus(t, ok.result, 'notifications/initialized (positive control)', 202);
  t.same(ok.calls, ['notifications/initialized']);
});

t.test('inbound: invalid bodies are answered with JSON-RPC errors, nothing forwarded', async (t) => {
  const cases: [string, string, unknown, number][] = [
    ['malformed JSON', '{"jsonrpc":"2.0","id":1,"method":"tools/call",', null, -32700],
    ['empty batch', '[]', null, -32600],
    ['wrong version', JSON.stringify({ jsonrpc: '1.0', id: 5, method: 'tools/call', params: { name: 'search' } }), 5, -32600],
    ['tools/call without a name', JSON.stringify(rpc(6, 'tools/call', { arguments: {} })), 6, -32602],
    ['tools/call with a numeric name', JSON.stringify(rpc(7, 'tools/call', { name: 1 })), 7, -32602],
    ['duplicate method member', '{"jsonrpc":"2.0","id":8,"method":"tools/list","method":"tools/call","params":{"name":"delete"}}', null, -32700],
    ['case-variant member', '{"jsonrpc":"2.0","id":9,"method":"tools/list","Method":"tools/call","params":{"name":"delete"}}', null, -32700],
  ];
  for (const [label, body, id, code] of cases) {
    const r = await received(() => direct(body));
    assertRpcError(t, r.result, label, id, code, 'jsonrpc_invalid');
    t.same(r.requests, [], `${label}: nothing forwarded`);
  }
});

t.test('inbound: oversized body → 413, nothing forwarded', async (t) => {
  const big = JSON.stringify(rpc(1, 'tools/call', { name: 'search', arguments: { blob: 'x'.repeat(1024 * 1024 + 10) } }));
  const r = await received(() => direct(big));
  assertJsonError(t, r.result, 'oversized', 413, 'payload_too_large', 'body_too_large');
  t.same(r.requests, [], 'nothing forwarded');
  const justUnder = JSON.stringify(rpc(2, 'tools/call', { name: 'search', arguments: { blob: 'x'.repeat(1024 * 1024 - 200) } }));
  assertStatus(t, await direct(justUnder), 'just under the limit (positive control)');
});

t.test('inbound: non-JSON-RPC traffic passes untouched (positive controls)', async (t) => {
  const rest = JSON.stringify({ name: 'widget', method: 'card', tags: ['a', 'b'], n: 1.50 });
  const r = await received(() => direct(rest, { path: '/api/items?x=1' }));
  assertStatus(t, r.result, 'REST JSON POST');
  t.equal(r.requests[0]?.body, rest, 'body byte for byte');
  const response = JSON.stringify({ jsonrpc: '2.0', id: 99, result: { ok: true } });
  const rr = await received(() => direct(response));
  assertStatus(t, rr.result, 'a JSON-RPC response posted by a client (MCP: answering a server request)', 202);
  t.equal(rr.requests[0]?.body, response);
  const get = await received(() => mtlsRequest({ address: sidecarB.inbound, certPem: leafC.pem, keyPem: leafC.keyPem, path: '/mcp?session=1' }));
  assertStatus(t, get.result, 'GET');
  t.equal(get.requests[0]?.method, 'GET');
  const text = await received(() => direct('plain text body', { headers: { 'content-type': 'text/plain' } }));
  assertStatus(t, text.result, 'text/plain');
  t.equal(text.requests[0]?.body, 'plain text body');
});

t.test('inbound: a JSON-RPC call is inspected whatever its declared content type or method', async (t) => {
  for (const [label, extra] of [
    ['text/plain', { headers: { 'content-type': 'text/plain' } }],
    ['empty content type', { headers: { 'content-type': '' } }],
    ['PUT', { method: 'PUT' }],
    ['chunked', { headers: { 'transfer-encoding': 'chunked' } }],
  ] as const) {
    const denied = await received(() => direct(`\n ${JSON.stringify(toolCall(1, 'delete'))}`, extra as Partial<Parameters<typeof mtlsRequest>[0]>));
    assertRpcError(t, denied.result, `${label}: delete`, 1, -32043, 'policy_denied');
    t.same(denied.requests, [], `${label}: nothing forwarded`);
  }
  const utf16 = await received(() => direct(Buffer.from(JSON.stringify(toolCall(1, 'delete')), 'utf16le'), { headers: { 'content-type': 'application/octet-stream' } }));
  assertRpcError(t, utf16.result, 'UTF-16 body', null, -32700, 'jsonrpc_invalid');
  t.same(utf16.requests, []);
});

t.test('inbound: A2A message/send permitted, tasks/cancel denied', async (t) => {
  const send = await received(() => direct(rpc('s1', 'message/send', { message: { role: 'user', parts: [{ kind: 'text', text: 'hi' }] } }), { path: '/' }));
  assertStatus(t, send.result, 'message/send');
  t.same(send.result.gotHttpResponse && send.result.json, { jsonrpc: '2.0', id: 's1', result: { method: 'message/send' } });
  t.same(send.calls, ['message/send']);
  const cancel = await received(() => direct(rpc('c1', 'tasks/cancel', { id: 'task-1' }), { path: '/' }));
  assertRpcError(t, cancel.result, 'tasks/cancel', 'c1', -32043, 'policy_denied');
  t.same(cancel.requests, [], 'nothing forwarded');
});

t.test('outbound (egress): A denies what B would allow; the upstream never sees it', async (t) => {
  const ok = await received(() => via(sidecarA, toolCall(1, 'search')));
  assertStatus(t, ok.result, 'search via A');
  t.same(ok.calls, ['tools/call:search']);
  t.equal(ok.requests[0]?.headers['x-sigil-peer-id'], ID_A, 'B saw agent/a');
  t.notOk(ok.requests[0]?.headers['x-sigil-request-id'], 'the internal request reference does not reach the upstream');

  const fetch = await received(() => via(sidecarA, toolCall(2, 'fetch')));
  assertRpcError(t, fetch.result, 'fetch via A', 2, -32043, 'policy_denied');
  t.same(fetch.requests, [], 'nothing reached B’s upstream');
  const fetchOpen = await received(() => via(sidecarAOpen, toolCall(3, 'fetch')));
  assertStatus(t, fetchOpen.result, 'fetch via A-open: B allows it (so A was the one denying)');
  t.same(fetchOpen.calls, ['tools/call:fetch']);

  const send = await received(() => via(sidecarA, rpc('s', 'message/send', { message: {} })));
  assertStatus(t, send.result, 'message/send via A');
  t.same(send.calls, ['message/send']);
  const cancel = await received(() => via(sidecarA, rpc('c', 'tasks/cancel', { id: 't' })));
  assertRpcError(t, cancel.result, 'tasks/cancel via A', 'c', -32043, 'policy_denied');
  t.same(cancel.requests, [], 'nothing forwarded');
  const cancelOpen = await received(() => via(sidecarAOpen, rpc('c', 'tasks/cancel', { id: 't' })));
  assertStatus(t, cancelOpen.result, 'tasks/cancel via A-open (positive control)');
  t.same(cancelOpen.calls, ['tasks/cancel']);

  // B's ingress still applies behind A-open: delete is forbidden there.
  const del = await received(() => via(sidecarAOpen, toolCall(4, 'delete')));
  assertRpcError(t, del.result, 'delete via A-open (denied by B)', 4, -32043, 'policy_denied');
  t.same(del.requests, []);
});

t.test('outbound: batch, invalid and oversized bodies are refused at A', async (t) => {
  const batch = await received(() => via(sidecarA, [toolCall(1, 'search'), toolCall(2, 'fetch')]));
  assertStatus(t, batch.result, 'batch via A');
  t.match(batch.result.gotHttpResponse && batch.result.json, [
    { id: 1, error: { code: -32043, data: { reason: 'batch_rejected' } } },
    { id: 2, error: { code: -32043, data: { reason: 'policy_denied' } } },
  ]);
  t.same(batch.requests, [], 'nothing forwarded');
  const malformed = await received(() => via(sidecarA, '{"jsonrpc":"2.0","id":1,"method":'));
  assertRpcError(t, malformed.result, 'malformed via A', null, -32700, 'jsonrpc_invalid');
  t.same(malformed.requests, []);
  const big = await received(() => via(sidecarA, JSON.stringify(toolCall(1, 'search')).replace('"x"', `"${'x'.repeat(1024 * 1024)}"`)));
  assertJsonError(t, big.result, 'oversized via A', 413, 'payload_too_large', 'body_too_large');
  t.same(big.requests, []);
  const forged = await received(() => via(sidecarA, toolCall(5, 'search'), { headers: { 'x-sigil-request-id': 'forged' } }));
  assertStatus(t, forged.result, 'an agent-supplied request reference is ignored');
  t.same(forged.calls, ['tools/call:search']);
  const rest = await received(() => via(sidecarA, { hello: 'world' }));
  assertStatus(t, rest.result, 'REST JSON via A (positive control)');
  t.equal(rest.requests[0]?.body, '{"hello":"world"}');
});
