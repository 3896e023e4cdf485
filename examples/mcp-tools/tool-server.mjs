#!/usr/bin/env node
// An MCP-style tool server: JSON-RPC 2.0 over HTTP POST on /mcp (initialize, tools/list,
// tools/call), no dependencies. It sits behind its Sigil sidecar and listens on 127.0.0.1
// only, so every call reaches it through the sidecar, which has already decided the call
// under policy.cedar. It keeps no authorization logic of its own; it trusts exactly the
// identity headers the sidecar sets (the sidecar removes any copy a caller sends):
//   x-sigil-peer-id      the calling agent's SPIFFE ID (verified by mTLS)
//   x-sigil-delegation   JSON {sub, actors, depth, scope, task, jti}: the person behind the call,
//                        present only when a delegation token verified
// Every tool answers with what it saw, and every request is logged as one JSON line on stdout.
//
//   node tool-server.mjs [port]        (or PORT=3100; default 3100, 0 = any free port)
import { createServer } from 'node:http';

const TOOLS = [
  { name: 'search_docs', description: 'Search the product documentation (read)', inputSchema: { type: 'object', properties: { query: { type: 'string' } }, required: ['query'] } },
  { name: 'read_ticket', description: 'Read a support ticket (read)', inputSchema: { type: 'object', properties: { id: { type: 'string' } }, required: ['id'] } },
  { name: 'close_ticket', description: 'Close a support ticket (write)', inputSchema: { type: 'object', properties: { id: { type: 'string' }, resolution: { type: 'string' } }, required: ['id'] } },
  { name: 'delete_project', description: 'Delete a project and all its tickets (admin)', inputSchema: { type: 'object', properties: { project: { type: 'string' } }, required: ['project'] } },
];

/** The verified caller, as the sidecar stated it. */
function callerOf(req) {
  const delegation = req.headers['x-sigil-delegation'];
  return {
    agent: req.headers['x-sigil-peer-id'] ?? null,
    // Who the agent acts for. Null: no person behind this call (no delegation token verified).
    delegation: delegation ? JSON.parse(delegation) : null,
  };
}

function result(id, value) {
  return { jsonrpc: '2.0', id, result: value };
}

function error(id, code, message) {
  return { jsonrpc: '2.0', id, error: { code, message } };
}

function handle(msg, caller) {
  if (msg?.jsonrpc !== '2.0' || typeof msg.method !== 'string') return error(msg?.id ?? null, -32600, 'invalid request');
  if (!('id' in msg)) return undefined; // a notification: no answer
  switch (msg.method) {
    case 'initialize':
      return result(msg.id, { protocolVersion: '2025-06-18', capabilities: { tools: {} }, serverInfo: { name: 'example-tool-server', version: '1.0.0' } });
    case 'ping':
      return result(msg.id, {});
    case 'tools/list':
      return result(msg.id, { tools: TOOLS });
    case 'tools/call': {
      const name = msg.params?.name;
      if (!TOOLS.some((t) => t.name === name)) return error(msg.id, -32602, `unknown tool: ${name}`);
      const seen = { tool: name, arguments: msg.params.arguments ?? {}, caller };
      const who = caller.delegation ? `${caller.delegation.sub} via ${caller.agent}` : `${caller.agent} (no person)`;
      return result(msg.id, { content: [{ type: 'text', text: `${name} ran for ${who}` }], structuredContent: seen });
    }
    default:
      return error(msg.id, -32601, `method not found: ${msg.method}`);
  }
}

function send(res, status, body) {
  const text = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

const server = createServer((req, res) => {
  if (req.url !== '/mcp' || req.method !== 'POST') return send(res, 404, { error: 'not found' });
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const caller = callerOf(req);
    let msg;
    try {
      msg = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      return send(res, 200, error(null, -32700, 'parse error'));
    }
    const messages = Array.isArray(msg) ? msg : [msg];
    for (const m of messages) {
      // The log line a platform engineer would grep: which tool ran, for which agent and person.
      console.log(JSON.stringify({ msg: 'call', method: m?.method, tool: m?.method === 'tools/call' ? m.params?.name : undefined, agent: caller.agent, user: caller.delegation?.sub ?? null, scope: caller.delegation?.scope ?? null }));
    }
    const replies = messages.map((m) => handle(m, caller)).filter((r) => r !== undefined);
    if (replies.length === 0) return send(res, 202);
    send(res, 200, Array.isArray(msg) ? replies : replies[0]);
  });
});

const port = Number(process.argv[2] ?? process.env.PORT ?? 3100);
// Loopback only: the sidecar is the one way in.
server.listen(port, '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'listening', address: `127.0.0.1:${server.address().port}`, port: server.address().port }));
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
