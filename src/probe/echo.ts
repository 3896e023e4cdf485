// The probe's echo upstream: a tiny plain-HTTP server that a test sidecar's `inbound.upstream`
// points at (the probe runs as that sidecar's agent). It answers every request with the headers
// it received, so the probe sees exactly what the sidecar let through; `/__sigil_probe/stream`
// keeps a response open (a chunk every 200 ms) so a revocation can be seen cutting it.
// It serves nothing else, stores nothing but a count, holds at most a few streams, and listens
// only where it is told (`sigil probe` allows loopback only).
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';

export const ECHO_MARK = 'sigil-probe-echo';
export const STREAM_PATH = '/__sigil_probe/stream';
const MAX_STREAM_MS = 60_000;
/** The probe opens one stream at a time; a few more are refused rather than held. */
const MAX_STREAMS = 4;

/** The body every echoed request gets. */
export interface EchoReply {
  echo: typeof ECHO_MARK;
  /** Identifies this probe run, so a reply from some other upstream is never taken for ours. */
  nonce: string;
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export interface EchoUpstream {
  readonly nonce: string;
  readonly address: { host: string; port: number };
  /** Requests seen so far. */
  readonly seen: number;
  /** Stream responses currently open. */
  readonly openStreams: number;
  close(): Promise<void>;
}

export async function startEchoUpstream(host: string, port: number, nonce: string): Promise<EchoUpstream> {
  let seen = 0;
  let openStreams = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    seen++;
    if (req.url === STREAM_PATH) {
      if (openStreams >= MAX_STREAMS) {
        res.writeHead(503).end();
        return;
      }
      openStreams++;
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
      res.write(`${nonce}\n`);
      const tick = setInterval(() => res.write('.\n'), 200);
      const stop = setTimeout(() => res.end(), MAX_STREAM_MS);
      res.on('close', () => {
        openStreams--;
        clearInterval(tick);
        clearTimeout(stop);
      });
      return;
    }
    req.resume();
    req.on('end', () => {
      const reply: EchoReply = { echo: ECHO_MARK, nonce, method: req.method ?? '', url: req.url ?? '', headers: req.headers };
      const body = JSON.stringify(reply);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  return {
    nonce,
    address: { host: bound.address, port: bound.port },
    get seen() {
      return seen;
    },
    get openStreams() {
      return openStreams;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** The echo reply in a response body, if it is this run's. */
export function parseEchoReply(body: string, nonce: string): EchoReply | undefined {
  try {
    const reply = JSON.parse(body) as Partial<EchoReply>;
    if (reply.echo === ECHO_MARK && reply.nonce === nonce && typeof reply.headers === 'object' && reply.headers !== null) return reply as EchoReply;
  } catch {
    // not JSON: not our echo
  }
  return undefined;
}
