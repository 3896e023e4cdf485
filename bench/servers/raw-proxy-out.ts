// Proxy baseline, outbound half: a plain-HTTP server that forwards each request over mutual TLS
// (client certificate, CA-verified server, URI SAN compared with the expected ID) through a
// keep-alive https.Agent, and streams the response back. An Upgrade request (WebSocket) gets its
// own mTLS connection with the same checks, and after the head only bytes are piped.
// Usage: node raw-proxy-out.js --svid DIR --target 127.0.0.1:PORT --expect SPIFFE_ID [--listen 127.0.0.1:0]
import { createServer } from 'node:http';
import { Agent, request } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect, type PeerCertificate } from 'node:tls';
import { announce, args, exitOnSignal, hostPort, loadSvid, pipeUpgrade, uriSan } from './common.js';

const a = args();
const { host, port } = hostPort(a.listen ?? '127.0.0.1:0');
const target = hostPort(a.target!);
const expect = a.expect!;
const { cert, key, ca } = loadSvid(a.svid!);
const tlsOptions = {
  cert,
  key,
  ca,
  minVersion: 'TLSv1.2' as const,
  ALPNProtocols: ['http/1.1'],
  rejectUnauthorized: true,
  checkServerIdentity: (_host: string, peer: PeerCertificate): Error | undefined => (uriSan(peer.subjectaltname) === expect ? undefined : new Error('peer id mismatch')),
};
const agent = new Agent({ keepAlive: true, maxSockets: 256, noDelay: true, ...tlsOptions });

const server = createServer((req, res) => {
  const headers = { ...req.headers };
  delete headers.connection;
  const up = request({ host: target.host, port: target.port, method: req.method, path: req.url, headers, agent }, (ures) => {
    res.writeHead(ures.statusCode ?? 502, ures.headers);
    ures.pipe(res);
  });
  up.on('socket', (socket: Socket) => socket.setNoDelay(true));
  up.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  req.pipe(up);
});
server.on('upgrade', (req, socket: Duplex, head: Buffer) => {
  const up = connect({ host: target.host, port: target.port, ...tlsOptions });
  up.setNoDelay(true);
  // The request head goes out only once the server's SVID has been checked.
  up.once('secureConnect', () => pipeUpgrade(req, socket, head, up));
  up.once('error', () => socket.destroy());
});
server.keepAliveTimeout = 60_000;
server.on('connection', (socket: Socket) => socket.setNoDelay(true));
server.on('secureConnection', (socket: Socket) => socket.setNoDelay(true));
exitOnSignal();
server.listen(port, host, () => announce(server.address()));
