// Demo agent B: a tiny HTTP + WebSocket service. It trusts nothing it is sent except the
// identity headers its Sigil sidecar sets, and reports the verified caller it was given.
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const server = createServer((req, res) => {
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
