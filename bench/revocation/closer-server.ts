// Baseline server for the connection-cut part of the revocation bench: a plain Node https
// server with mutual TLS (the same SVID, CA check, ALPN and default keep-alive as Sigil's
// inbound listener), answering every request with a small fixed JSON body, plus a plain HTTP
// control port on which `POST /close-all` destroys every open TLS connection in one loop —
// what a revocation of the connected agent does in the sidecar, without the list, the live
// registry, the per-connection log line or the admin API.
// Usage: node closer-server.js --svid DIR
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { args, exitOnSignal, loadSvid } from '../servers/common.js';

const a = args();
const { cert, key, ca } = loadSvid(a.svid!);
const BODY = Buffer.from('{"ok":true,"from":"closer"}\n');
const sockets = new Set<TLSSocket>();

const server = createHttpsServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['http/1.1'] }, (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
    res.end(BODY);
  });
});
server.on('secureConnection', (socket: TLSSocket) => {
  sockets.add(socket);
  socket.once('close', () => sockets.delete(socket));
});
server.on('tlsClientError', () => {});

const control = createHttpServer((req, res) => {
  req.resume();
  if (req.method === 'POST' && req.url === '/close-all') {
    const n = sockets.size;
    for (const s of sockets) s.destroy();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ closed: n }));
    return;
  }
  if (req.url === '/count') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ open: sockets.size }));
    return;
  }
  res.writeHead(404).end();
});

exitOnSignal();
server.listen(0, '127.0.0.1', () => {
  control.listen(0, '127.0.0.1', () => {
    const s = server.address() as AddressInfo;
    const c = control.address() as AddressInfo;
    process.stdout.write(JSON.stringify({ msg: 'listening', address: `${s.address}:${s.port}`, port: s.port, control: `${c.address}:${c.port}`, pid: process.pid }) + '\n');
  });
});
