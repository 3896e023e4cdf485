// The researcher agent (Compose example). It serves GET /v1/research on 127.0.0.1:3000, which
// only its own sidecar can reach (they share a network namespace), and trusts nothing it is sent
// except the identity headers that sidecar sets after verifying the caller: x-sigil-peer-id (the
// caller's SPIFFE ID, from its mTLS certificate), x-forwarded-client-cert, and x-sigil-delegation
// (for whom the caller acts, from a verified delegation token). It also subscribes to tasks.> on
// the signed bus and prints each message with its verified sender.
// No dependencies: Node 20's standard library, with --experimental-websocket for the bus client.
import { createServer } from 'node:http';

const LISTEN = process.env.LISTEN ?? '127.0.0.1:3000';
const BUS = process.env.SIDECAR_BUS ?? '127.0.0.1:15002';

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://researcher');
  const caller = req.headers['x-sigil-peer-id'] ?? null;
  const delegation = req.headers['x-sigil-delegation'] ? JSON.parse(String(req.headers['x-sigil-delegation'])) : null;
  log({ msg: 'request', method: req.method, path: url.pathname, caller, xfcc: req.headers['x-forwarded-client-cert'] ?? null, delegation });
  if (req.method !== 'GET' || url.pathname !== '/v1/research') {
    res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not_found' }));
    return;
  }
  const topic = url.searchParams.get('topic') ?? 'nothing';
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ topic, summary: `three papers on ${topic}`, for: delegation?.sub ?? null, verifiedCaller: caller }));
});
const at = LISTEN.lastIndexOf(':');
server.listen(Number(LISTEN.slice(at + 1)), LISTEN.slice(0, at), () => log({ msg: 'listening', listen: LISTEN }));

subscribe();

/** Subscribes to tasks.> on the local bus API; reconnects while the sidecar is not there. */
function subscribe() {
  const ws = new WebSocket(`ws://${BUS}/bus`);
  ws.addEventListener('open', () => ws.send(JSON.stringify({ op: 'subscribe', id: 'tasks', subject: 'tasks.>' })));
  ws.addEventListener('message', (event) => {
    const frame = JSON.parse(String(event.data));
    // `from` is the verified signer of the envelope, not something the sender could claim.
    if (frame.op === 'message') log({ msg: 'bus message', subject: frame.subject, from: frame.from, data: frame.data });
    else log({ msg: `bus ${frame.op}`, ...frame });
  });
  ws.addEventListener('close', () => setTimeout(subscribe, 2000));
  ws.addEventListener('error', () => {}); // followed by close
}

process.on('SIGTERM', () => process.exit(0));

function log(fields) {
  console.log(JSON.stringify({ time: new Date().toISOString(), agent: 'researcher', ...fields }));
}
