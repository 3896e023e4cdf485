// Demo agent B: a tiny HTTP + WebSocket service. It trusts nothing it is sent except the
// identity headers its Sigil sidecar sets, and reports the verified caller it was given.
import { readFileSync } from 'node:fs';
import { createServer, get } from 'node:http';
import { WebSocketServer } from 'ws';

// /reports/escalate: agent B asks the reports tool for more than it was given, through its own
// sidecar (whose address the demo writes to SIGIL_OUTBOUND_FILE), passing on the token it got.
function escalate(req, res) {
  const outbound = readFileSync(process.env.SIGIL_OUTBOUND_FILE, 'utf8').trim();
  const sep = outbound.lastIndexOf(':');
  const headers = { host: 'reports-tool', ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) };
  get({ host: outbound.slice(0, sep), port: Number(outbound.slice(sep + 1)), path: '/admin-report', headers }, (r) => {
    let body = '';
    r.on('data', (d) => (body += d));
    r.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ escalation: { status: r.statusCode, body: JSON.parse(body || 'null') } }));
    });
  }).on('error', (err) => res.writeHead(500).end(err.message));
}

const server = createServer((req, res) => {
  if (req.url === '/reports/escalate' && process.env.SIGIL_OUTBOUND_FILE) return escalate(req, res);
  const caller = req.headers['x-sigil-peer-id'] ?? '(none)';
  // Set by the sidecar only after it verified a delegation token: who the caller acts for.
  const delegation = req.headers['x-sigil-delegation'] ? JSON.parse(req.headers['x-sigil-delegation']) : null;
  console.log(JSON.stringify({ msg: 'request', path: req.url, caller, xfcc: req.headers['x-forwarded-client-cert'], onBehalfOf: delegation?.sub }));
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ hello: 'from agent B', verifiedCaller: caller, path: req.url, delegation }));
});

const wss = new WebSocketServer({ server });
wss.on('connection', (ws, req) => {
  const caller = req.headers['x-sigil-peer-id'] ?? '(none)';
  console.log(JSON.stringify({ msg: 'websocket', caller }));
  ws.on('message', (data) => ws.send(JSON.stringify({ echo: data.toString(), verifiedCaller: caller })));
});

server.listen(Number(process.env.PORT ?? 0), '127.0.0.1', () => {
  console.log(JSON.stringify({ msg: 'listening', port: server.address().port }));
});
process.on('SIGTERM', () => process.exit(0));
