// Proxy baseline, inbound half: an https server with requestCert that forwards each request to
// the upstream over a keep-alive http.Agent and streams the response back. It sets the peer's
// URI SAN as a header (the minimum a sidecar must tell its agent) and nothing else: no SPIFFE
// verification beyond OpenSSL's chain check, no authorization. An Upgrade request (WebSocket)
// is passed on with the same header, and after its head only bytes are piped: messages are not
// looked at.
// Usage: node raw-proxy-in.js --svid DIR --upstream 127.0.0.1:PORT [--listen 127.0.0.1:0]
import { Agent, request, type AgentOptions } from 'node:http';
import { createServer } from 'node:https';
import type { TLSSocket } from 'node:tls';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { announce, args, exitOnSignal, hostPort, loadSvid, pipeUpgrade, uriSan } from './common.js';

const a = args();
const { host, port } = hostPort(a.listen ?? '127.0.0.1:0');
const upstream = hostPort(a.upstream!);
const { cert, key, ca } = loadSvid(a.svid!);
const peerIds = new WeakMap<TLSSocket, string>();
const agent = new Agent({ keepAlive: true, maxSockets: 512, noDelay: true } as AgentOptions);

/** The peer's URI SAN, read once per connection. */
function peerId(socket: TLSSocket): string {
  let peer = peerIds.get(socket);
  if (peer === undefined) peerIds.set(socket, (peer = uriSan(socket.getPeerCertificate().subjectaltname) ?? ''));
  return peer;
}

const server = createServer(
  { cert, key, ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] },
  (req, res) => {
    const headers = { ...req.headers, 'x-peer-id': peerId(req.socket as TLSSocket) };
    delete headers.connection;
    const up = request({ host: upstream.host, port: upstream.port, method: req.method, path: req.url, headers, agent }, (ures) => {
      res.writeHead(ures.statusCode ?? 502, ures.headers);
      ures.pipe(res);
    });
    up.on('socket', (socket: Socket) => socket.setNoDelay(true));
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  },
);
server.on('upgrade', (req, socket: Duplex, head: Buffer) => {
  const up = connect({ host: upstream.host, port: upstream.port, noDelay: true });
  pipeUpgrade(req, socket, head, up, { 'x-peer-id': peerId(req.socket as TLSSocket) });
});
server.keepAliveTimeout = 60_000;
server.on('connection', (socket: Socket) => socket.setNoDelay(true));
server.on('secureConnection', (socket: Socket) => socket.setNoDelay(true));
server.on('tlsClientError', () => {});
exitOnSignal();
server.listen(port, host, () => announce(server.address()));
