// A stand-in for the local agent behind an inbound sidecar: plain HTTP + WebSocket on loopback,
// port 0. It records every request (headers as received) and answers with them as JSON, so a
// test can check exactly what the sidecar forwarded. `/slow?ms=N` answers after N ms.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { listenOnLoopback, type Teardown } from './env.js';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
  /** Source port of the TCP connection the request arrived on (connection reuse shows here). */
  remotePort: number;
  kind: 'http' | 'websocket';
}

export interface EchoReply {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  rawHeaders: string[];
}

export interface EchoUpstream {
  port: number;
  url: string;
  requests: SeenRequest[];
  /** Sockets accepted so far. */
  connections: number;
  close(): Promise<void>;
}

export async function startEchoUpstream(t: Teardown): Promise<EchoUpstream> {
  const requests: SeenRequest[] = [];
  const sockets = new Set<Socket>();
  const state = { connections: 0 };
  const server: Server = createServer((req, res) => {
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      remotePort: req.socket.remotePort ?? 0,
      kind: 'http',
    });
    const reply = (): void => {
      const body = JSON.stringify({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders } satisfies EchoReply);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    // Drain the request body first so keep-alive works for POSTs.
    req.resume();
    req.on('end', () => {
      const slow = /^\/slow\?ms=(\d+)/.exec(req.url ?? '');
      if (slow) setTimeout(reply, Number(slow[1]));
      else reply();
    });
  });
  server.on('connection', (s: Socket) => {
    state.connections++;
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws, req) => {
    requests.push({
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      remotePort: req.socket.remotePort ?? 0,
      kind: 'websocket',
    });
    const peer = req.headers['x-sigil-peer-id'];
    ws.on('message', (data) => ws.send(JSON.stringify({ echo: data.toString(), peer, xfcc: req.headers['x-forwarded-client-cert'] })));
  });
  const { port, close } = await listenOnLoopback(t, server, sockets, () => {
    for (const c of wss.clients) c.terminate();
    wss.close();
  });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    requests,
    get connections() {
      return state.connections;
    },
    close,
  };
}
