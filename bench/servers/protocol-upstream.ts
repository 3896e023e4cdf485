// The agent behind the inbound side for the protocols bench, an MCP-like server: a JSON-RPC POST
// gets a small tools/call-shaped result with the request's id (keep-alive), and a WebSocket on
// any path echoes every message back with its type. Usage: node protocol-upstream.js [--listen 127.0.0.1:0]
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';
import { announce, args, exitOnSignal, hostPort } from './common.js';

const a = args();
const { host, port } = hostPort(a.listen ?? '127.0.0.1:0');

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    let id: unknown;
    try {
      id = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id?: unknown }).id;
    } catch {
      id = undefined;
    }
    // Anything but a JSON-RPC request with an id is a bench bug: a 400 makes the call fail.
    if (id === undefined) {
      res.writeHead(400, { 'content-length': 0 }).end();
      return;
    }
    const body = JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text: 'ok' }] } });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60_000;
// No compression on either side, as in Sigil's own WebSocket relay.
const wss = new WebSocketServer({ server, perMessageDeflate: false });
wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
exitOnSignal();
server.listen(port, host, () => announce(server.address()));
