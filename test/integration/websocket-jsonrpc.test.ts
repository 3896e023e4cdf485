// JSON-RPC carried in WebSocket messages is authorized call by call, like an HTTP body: a
// denied call is answered on the stream with a JSON-RPC error, never forwarded, and the stream
// stays open; other messages only need `websocket.message`. Also: the W3C traceparent of the
// upgrade and of plain requests keeps its trace id through the sidecar.
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { mtlsRequest } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, writeConfig, type RunningSigil } from '../helpers/env.js';
import type { Issued } from '../fixtures/certs.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/mcp/tools';

const POLICY = `
@id("connect") permit (principal == Agent::"${ID_A}", action in [Action::"connect", Action::"http"], resource == Agent::"${ID_B}");
@id("messages") permit (principal in TrustDomain::"example.org", action == Action::"websocket.message", resource in TrustDomain::"example.org");
@id("search") permit (principal == Agent::"${ID_A}", action == Action::"mcp.tools/call", resource == Tool::"search");
@id("no-delete") forbid (principal, action == Action::"mcp.tools/call", resource) when { resource.name like "delete_*" };
`;

const received: string[] = [];
const seenHeaders: IncomingHttpHeaders[] = [];
let sidecar: RunningSigil;
let leaf: Issued;

t.before(async () => {
  const dir = await tempDir(t, 'sigil-wsrpc-');
  const td = await setupTrustDomain(dir, 'example.org');
  leaf = await td.leaf(ID_A);
  const server = createServer((req, res) => {
    seenHeaders.push(req.headers);
    res.end('ok');
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    seenHeaders.push(req.headers);
    // An MCP-like server: answers each JSON-RPC request with a result; echoes anything else.
    ws.on('message', (data) => {
      const text = data.toString();
      received.push(text);
      let request: { id?: number; params?: { name?: string } } | undefined;
      try {
        request = JSON.parse(text) as typeof request;
      } catch {
        request = undefined;
      }
      ws.send(request?.id !== undefined ? JSON.stringify({ jsonrpc: '2.0', id: request.id, result: { ran: request.params?.name } }) : text);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  await writeConfigFile(dir);
  const cfg = await writeConfig(
    dir,
    'b.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: td.caDir, spiffeId: ID_B, ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${(server.address() as AddressInfo).port}` },
      policy: { cedar: './policy.cedar' },
    }),
  );
  sidecar = await runSigil(t, cfg);

  async function writeConfigFile(d: string): Promise<void> {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(`${d}/policy.cedar`, POLICY);
  }
});

function open(path: string): Promise<WebSocket> {
  const ws = new WebSocket(`wss://${sidecar.inbound}${path}`, {
    cert: leaf.pem,
    key: leaf.keyPem,
    rejectUnauthorized: false,
    headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function next(ws: WebSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    ws.once('message', (d) => resolve(d.toString()));
    ws.once('close', (code, reason) => reject(new Error(`closed ${code} ${reason.toString()}`)));
  });
}

const call = (id: number, name: string): string => JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: {} } });

t.test('JSON-RPC over WebSocket: allowed calls pass, denied ones are answered on the stream', async (t) => {
  const ws = await open('/mcp');
  t.teardown(() => ws.close());

  ws.send(call(1, 'search'));
  t.same(JSON.parse(await next(ws)), { jsonrpc: '2.0', id: 1, result: { ran: 'search' } }, 'permitted tools/call reaches the upstream and its result comes back (positive control)');

  ws.send(call(2, 'delete_everything'));
  const refusal = JSON.parse(await next(ws)) as { id: number; error: { code: number; data: { reason: string; policies: string[] } } };
  t.equal(refusal.id, 2);
  t.equal(refusal.error.code, -32043);
  t.equal(refusal.error.data.reason, 'policy_denied');
  t.same(refusal.error.data.policies, ['no-delete'], 'the forbid that decided is named');

  ws.send(call(3, 'fetch'));
  const defaultDeny = JSON.parse(await next(ws)) as { id: number; error: { data: { policies: string[] } } };
  t.equal(defaultDeny.id, 3, 'a call no permit matches is refused too');
  t.same(defaultDeny.error.data.policies, []);

  ws.send('plain text is not JSON-RPC');
  t.equal(await next(ws), 'plain text is not JSON-RPC', 'non-JSON-RPC messages only need websocket.message');

  ws.send('{"jsonrpc":"2.0","id":4,"method":');
  const invalid = JSON.parse(await next(ws)) as { error: { code: number } };
  t.equal(invalid.error.code, -32700, 'a malformed JSON-RPC message is refused with a parse error');

  t.equal(ws.readyState, WebSocket.OPEN, 'the stream stays open after refused calls');
  t.notOk(received.some((m) => m.includes('delete_everything') || m.includes('"fetch"') || m.includes('"id":4')), 'no refused call reached the upstream');
  t.ok(received.some((m) => m.includes('"search"')));
});

t.test('traceparent: the trace id survives the hop, with a new span', async (t) => {
  const before = seenHeaders.length;
  const r = await mtlsRequest({
    address: sidecar.inbound,
    certPem: leaf.pem,
    keyPem: leaf.keyPem,
    path: '/plain',
    headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
  });
  t.equal((r as { status?: number }).status, 200);
  const forwarded = seenHeaders[before]!['traceparent'] as string;
  t.match(forwarded, /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/, 'same trace id');
  t.not(forwarded.split('-')[2], '00f067aa0ba902b7', 'new parent span id for this hop');

  const fresh = await mtlsRequest({ address: sidecar.inbound, certPem: leaf.pem, keyPem: leaf.keyPem, path: '/no-trace', headers: { traceparent: 'garbage' } });
  t.equal((fresh as { status?: number }).status, 200);
  t.match(seenHeaders.at(-1)!['traceparent'] as string, /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/, 'an invalid traceparent is replaced by a new trace');
  t.ok(seenHeaders.some((h) => typeof h['traceparent'] === 'string' && (h['traceparent'] as string).startsWith('00-0af7651916cd43dd8448eb211c80319c-')), 'the WebSocket upgrade carried the trace too');
});
