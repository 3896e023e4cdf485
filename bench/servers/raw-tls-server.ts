// Handshake baseline: the least a Node mTLS server can do. Full mutual TLS with OpenSSL chain
// verification against the CA (no SPIFFE checks, no policy, no HTTP parser, no proxying); once
// the request head has arrived it writes a fixed minimal HTTP 200 and closes.
// Usage: node raw-tls-server.js --svid DIR [--listen 127.0.0.1:0]
import { createServer } from 'node:tls';
import { announce, args, exitOnSignal, hostPort, loadSvid } from './common.js';

const a = args();
const { host, port } = hostPort(a.listen ?? '127.0.0.1:0');
const { cert, key, ca } = loadSvid(a.svid!);
const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');

const server = createServer(
  { cert, key, ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] },
  (socket) => {
    let head = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      head += d;
      if (head.includes('\r\n\r\n')) socket.end(RESPONSE);
    });
    socket.on('error', () => socket.destroy());
  },
);
server.on('tlsClientError', () => {});
exitOnSignal();
server.listen(port, host, () => announce(server.address()));
