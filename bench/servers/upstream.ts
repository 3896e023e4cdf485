// The "agent" behind the inbound side: a trivial HTTP server that answers every request with a
// small fixed JSON body, keep-alive. Usage: node upstream.js [--listen 127.0.0.1:0]
import { createServer } from 'node:http';
import { announce, args, exitOnSignal, hostPort } from './common.js';

const a = args();
const { host, port } = hostPort(a.listen ?? '127.0.0.1:0');
const BODY = Buffer.from('{"ok":true,"from":"upstream"}\n');

const server = createServer((req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
    res.end(BODY);
  });
});
server.keepAliveTimeout = 60_000;
exitOnSignal();
server.listen(port, host, () => announce(server.address()));
