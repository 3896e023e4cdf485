// A stand-in for the local agent behind an inbound sidecar that speaks all the protocols the
// policy fixtures cover, and records everything it is handed so a test can check that a denied
// call never reached it:
//   - HTTP: every request (method, URL, headers, full body) is recorded; a JSON-RPC 2.0 POST body
//     (object or batch) is answered like an MCP tool server / A2A agent would (tools/list,
//     tools/call, resources/read, initialize, ping, message/send, tasks/get, ...; notifications
//     get 202); anything else is echoed as JSON.
//   - WebSocket (any path): every message is recorded with its type and echoed with its type;
//     the text message `reply-big:<n>` is answered with an n-byte text message instead.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import type { Teardown } from './env.js';

export interface AppRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface AppMessage {
  path: string;
  data: Buffer;
  isBinary: boolean;
}

export interface AppWsConnection {
  path: string;
  headers: IncomingHttpHeaders;
  closed: Promise<{ code: number; reason: string }>;
}

export interface AppUpstream {
  url: string;
  requests: AppRequest[];
  messages: AppMessage[];
  wsConnections: AppWsConnection[];
  /** JSON-RPC methods received (tools/call as `tools/call:<name>`), from `requests[from..]`. */
  calls(from?: number): string[];
}

/** The tools the MCP-like server offers; tools/list answers list all of them, in this order. */
export const APP_TOOLS = ['search', 'fetch', 'restart_service', 'delete_logs', 'drop_table', 'summarize'].map((name) => ({
  name,
  description: `the ${name} tool`,
  inputSchema: { type: 'object' },
}));

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function isRpcRequest(m: unknown): m is { jsonrpc: string; method: string; id?: unknown; params?: any } {
  return typeof m === 'object' && m !== null && typeof (m as { method?: unknown }).method === 'string';
}

function result(method: string, params: any): unknown {
  switch (method) {
    case 'initialize':
      return { protocolVersion: '2025-06-18', capabilities: { tools: {}, resources: {} }, serverInfo: { name: 'app-upstream', version: '1' } };
    case 'ping':
      return {};
    case 'tools/list':
      return { tools: APP_TOOLS };
    case 'tools/call':
      return { content: [{ type: 'text', text: `called ${String(params?.name)}` }] };
    case 'resources/read':
      return { contents: [{ uri: String(params?.uri ?? ''), mimeType: 'text/plain', text: 'resource body' }] };
    case 'tasks/get':
      return { id: String(params?.id ?? ''), kind: 'task', status: { state: 'completed' } };
    case 'message/send':
      return { kind: 'message', role: 'agent', messageId: 'm-1', parts: [{ kind: 'text', text: 'ok' }] };
    default:
      return { method };
  }
}

export async function startAppUpstream(t: Teardown): Promise<AppUpstream> {
  const requests: AppRequest[] = [];
  const messages: AppMessage[] = [];
  const wsConnections: AppWsConnection[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body });
      const parsed = body.trim() === '' ? undefined : parseJson(body);
      const list = Array.isArray(parsed) ? parsed : [parsed];
      if (req.method === 'POST' && parsed !== undefined && list.some(isRpcRequest)) {
        const replies = list
          .filter(isRpcRequest)
          .filter((m) => 'id' in m)
          .map((m) => ({ jsonrpc: '2.0', id: m.id, result: result(m.method, m.params) }));
        if (replies.length === 0) {
          res.writeHead(202, { 'content-length': '0' }).end();
          return;
        }
        const out = JSON.stringify(Array.isArray(parsed) ? replies : replies[0]);
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
        res.end(out);
        return;
      }
      const echo = JSON.stringify({ echo: true, method: req.method, url: req.url, peer: req.headers['x-sigil-peer-id'] ?? null });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(echo) });
      res.end(req.method === 'HEAD' ? undefined : echo);
    });
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    const path = req.url ?? '';
    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    wsConnections.push({ path, headers: req.headers, closed });
    ws.on('error', () => {});
    ws.on('message', (data: Buffer, isBinary) => {
      messages.push({ path, data, isBinary });
      const big = isBinary ? null : /^reply-big:(\d+)$/.exec(data.toString());
      if (big) ws.send('y'.repeat(Number(big[1])));
      else ws.send(data, { binary: isBinary });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  t.teardown(async () => {
    for (const c of wss.clients) c.terminate();
    wss.close();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    messages,
    wsConnections,
    calls: (from = 0) =>
      requests.slice(from).flatMap((r) => {
        const v = parseJson(r.body);
        return (Array.isArray(v) ? v : [v]).filter(isRpcRequest).map((m) => (m.method === 'tools/call' ? `tools/call:${String(m.params?.name)}` : m.method));
      }),
  };
}
