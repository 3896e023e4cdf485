// Demo agent A: calls agent B by name ("agent-b") through its local Sigil sidecar, once over
// HTTP and once over a WebSocket. It holds no key, no certificate and no token.
import { request } from 'node:http';
import WebSocket from 'ws';

const [host, port] = (process.env.SIGIL_OUTBOUND ?? '127.0.0.1:15001').split(':');

function httpCall(path = '/hello') {
  return new Promise((resolve, reject) => {
    // Forward-proxy style: absolute-form URI, sent to the sidecar's outbound listener.
    const req = request({ host, port: Number(port), path: `http://agent-b${path}`, headers: { host: 'agent-b', 'x-sigil-peer-id': 'spiffe://example.org/forged' } }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, body: JSON.parse(body) }));
    });
    req.on('error', reject);
    req.end();
  });
}

function wsCall() {
  return new Promise((resolve, reject) => {
    // Host-header style: connect to the sidecar, name the peer in Host.
    const ws = new WebSocket(`ws://${host}:${port}/chat`, { headers: { host: 'agent-b' } });
    ws.on('open', () => ws.send('ping from agent A'));
    ws.on('message', (data) => {
      resolve(JSON.parse(data.toString()));
      ws.close();
    });
    ws.on('error', reject);
  });
}

// The policy lets A read /hello and chat, but forbids /admin: B's sidecar answers 403.
const result = { http: await httpCall(), websocket: await wsCall(), denied: await httpCall('/admin/users') };
console.log(JSON.stringify({ msg: 'result', ...result }));
