// Byte-level HTTP/1.1 tools for the hardening tests: a raw connection (plain TCP or mutual TLS)
// that writes exactly the bytes a test chooses and parses the responses that come back, and a
// recording upstream that keeps every request it parses — method, URL, headers and full body —
// so a smuggled second request shows up as its own entry.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createNetServer, connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Teardown } from './env.js';
import { listenOnLoopback, splitAddress } from './env.js';

export interface RawResponse {
  status: number;
  statusLine: string;
  /** Lower-cased names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: string;
}

export type RawResult =
  | ({ kind: 'response' } & RawResponse)
  /** The peer closed (or reset) the connection before a complete response arrived. */
  | { kind: 'closed'; partial: string }
  | { kind: 'timeout'; partial: string };

/**
 * One HTTP/1.1 connection driven by hand. Responses are parsed in order (1xx interim responses
 * are skipped); `next()` waits for the next complete one, or reports that the connection closed.
 */
export class RawHttpConnection {
  readonly socket: Socket;
  /** Every byte received so far (latin1). */
  received = '';
  private pending = '';
  private readonly responses: RawResponse[] = [];
  private readonly headRequests: boolean[] = [];
  private closedFlag = false;
  private waiters = new Set<() => void>();
  readonly closed: Promise<void>;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (d: Buffer) => {
      const text = d.toString('latin1');
      this.received += text;
      this.pending += text;
      this.parse();
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.closedFlag = true;
        this.wake();
        resolve();
      }),
    );
  }

  get isClosed(): boolean {
    return this.closedFlag;
  }

  /** Writes raw bytes. `expectHead` marks that the response to this request has no body (HEAD). */
  write(data: string | Buffer, expectHead = false): void {
    this.headRequests.push(expectHead);
    this.socket.write(data);
  }

  /** Writes `data` and waits for the next response. */
  async request(data: string | Buffer, opts: { head?: boolean; timeoutMs?: number } = {}): Promise<RawResult> {
    this.write(data, opts.head === true);
    return this.next(opts.timeoutMs);
  }

  /** The next complete response, or 'closed' / 'timeout'. */
  next(timeoutMs = 5_000): Promise<RawResult> {
    return new Promise((resolve) => {
      const check = (): boolean => {
        const r = this.responses.shift();
        if (r) {
          done({ kind: 'response', ...r });
          return true;
        }
        if (this.closedFlag) {
          done({ kind: 'closed', partial: this.pending });
          return true;
        }
        return false;
      };
      const timer = setTimeout(() => done({ kind: 'timeout', partial: this.pending }), timeoutMs);
      const waiter = (): void => void check();
      const done = (r: RawResult): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve(r);
      };
      if (!check()) this.waiters.add(waiter);
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  private parse(): void {
    for (;;) {
      const end = this.pending.indexOf('\r\n\r\n');
      if (end === -1) return;
      const lines = this.pending.slice(0, end).split('\r\n');
      const statusLine = lines[0] ?? '';
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon <= 0) continue;
        const name = line.slice(0, colon).trim().toLowerCase();
        const value = line.slice(colon + 1).trim();
        headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
      }
      let rest = this.pending.slice(end + 4);
      if (status >= 100 && status < 200 && status !== 101) {
        this.pending = rest;
        continue;
      }
      const isHead = this.headRequests[0] === true;
      let body = '';
      if (isHead || status === 101 || status === 204 || status === 304) {
        // no body
      } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
        const decoded = decodeChunked(rest);
        if (!decoded) return;
        body = decoded.body;
        rest = rest.slice(decoded.consumed);
      } else if (headers['content-length'] !== undefined) {
        const n = Number(headers['content-length']);
        if (Buffer.byteLength(rest, 'latin1') < n) return;
        body = rest.slice(0, n);
        rest = rest.slice(n);
      } else {
        // Delimited by close: complete only once the connection is gone.
        if (!this.closedFlag) return;
        body = rest;
        rest = '';
      }
      this.headRequests.shift();
      this.pending = rest;
      this.responses.push({ status, statusLine, headers, body });
      if (status === 101) return;
    }
  }
}

/** Decodes a complete chunked body at the start of `text`; undefined while incomplete. */
export function decodeChunked(text: string): { body: string; consumed: number } | undefined {
  let pos = 0;
  let body = '';
  for (;;) {
    const eol = text.indexOf('\r\n', pos);
    if (eol === -1) return undefined;
    const size = parseInt(text.slice(pos, eol).split(';')[0]!.trim(), 16);
    if (Number.isNaN(size)) return undefined;
    pos = eol + 2;
    if (size === 0) {
      // Trailers (none expected), then the final CRLF.
      const fin = text.indexOf('\r\n', pos);
      if (fin === -1) return undefined;
      return { body, consumed: fin + 2 };
    }
    if (text.length < pos + size + 2) return undefined;
    body += text.slice(pos, pos + size);
    pos += size + 2;
  }
}

/** `data` framed as one chunked body (split into `parts` chunks), terminated. */
export function chunked(data: string, parts = 1): string {
  const size = Math.ceil(data.length / parts) || 1;
  let out = '';
  for (let i = 0; i < data.length; i += size) {
    const piece = data.slice(i, i + size);
    out += `${Buffer.byteLength(piece).toString(16)}\r\n${piece}\r\n`;
  }
  return `${out}0\r\n\r\n`;
}

/** A plain TCP raw connection (e.g. to an outbound listener). */
export function rawTcp(address: string): Promise<RawHttpConnection> {
  const { host, port } = splitAddress(address);
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host, port });
    socket.once('connect', () => resolve(new RawHttpConnection(socket)));
    socket.once('error', reject);
  });
}

export interface RawTlsOptions {
  certPem: string;
  keyPem: string;
}

/** A mutual-TLS raw connection presenting `certPem`/`keyPem` (the server is not verified). */
export function rawTls(address: string, opts: RawTlsOptions): Promise<RawHttpConnection> {
  const { host, port } = splitAddress(address);
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = tlsConnect({
      host,
      port,
      cert: opts.certPem,
      key: opts.keyPem,
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
      ALPNProtocols: ['http/1.1'],
    });
    socket.once('secureConnect', () => resolve(new RawHttpConnection(socket)));
    socket.once('error', reject);
  });
}

export interface RelayedConnection {
  /** The relay's socket towards the target. */
  upstream: Socket;
  /**
   * Resets the connection to the target (TCP RST) `delayMs` after the next chunk from the client
   * has been handed to the kernel, so the target has received it when the reset arrives.
   */
  resetAfterNextData(delayMs: number): void;
  closed: Promise<void>;
}

export interface TcpRelay {
  address: string;
  /** One entry per accepted client connection, in order. */
  connections: RelayedConnection[];
  close(): Promise<void>;
}

/**
 * A loopback TCP relay to `target`. Lets a test run TLS end to end through it and still send a
 * TCP reset to the target: Node cannot reset a TCP socket that a TLS socket is wrapping (doing so
 * crashes the process), but it can reset the relay's own plain socket.
 */
export async function startTcpRelay(t: Teardown, target: string): Promise<TcpRelay> {
  const { host, port } = splitAddress(target);
  const connections: RelayedConnection[] = [];
  const sockets = new Set<Socket>();
  const server = createNetServer((client) => {
    const upstream = netConnect({ host, port });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.once('close', () => sockets.delete(s));
    }
    let armed: number | undefined;
    client.on('data', (chunk: Buffer) => {
      const delay = armed;
      armed = undefined;
      upstream.write(chunk, () => {
        if (delay === undefined) return;
        const reset = (): void => {
          if (!upstream.destroyed) upstream.resetAndDestroy();
          client.destroy();
        };
        if (delay <= 0) reset();
        else setTimeout(reset, delay);
      });
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.once('close', () => upstream.destroy());
    upstream.once('close', () => client.destroy());
    connections.push({
      upstream,
      resetAfterNextData: (delayMs) => void (armed = delayMs),
      closed: new Promise((resolve) => upstream.once('close', () => resolve())),
    });
  });
  const { port: relayPort, close } = await listenOnLoopback(t, server, sockets);
  return { address: `127.0.0.1:${relayPort}`, connections, close };
}

export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** The full request body (latin1). */
  body: string;
  remotePort: number;
}

export interface RecordingUpstream {
  url: string;
  port: number;
  /** Every request parsed, in order, recorded once its body has fully arrived. */
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * A keep-alive HTTP upstream that records every request it parses and answers each with a small
 * JSON summary. Pipelined/smuggled requests on the same connection are parsed and recorded too.
 */
export async function startRecordingUpstream(t: Teardown): Promise<RecordingUpstream> {
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('latin1');
      requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body, remotePort: req.socket.remotePort ?? 0 });
      const payload = JSON.stringify({ method: req.method, url: req.url, bodyLength: body.length });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
      res.end(payload);
    });
  });
  server.keepAliveTimeout = 30_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  const { port, close } = await listenOnLoopback(t, server, sockets);
  return { url: `http://127.0.0.1:${port}`, port, requests, close };
}
