// Clients for the integration tests: an mTLS HTTP client that presents any certificate (to poke
// a sidecar's inbound port directly), a plain HTTP client for an outbound listener, and a raw
// TLS server that presents any certificate and counts the bytes it receives.
import { X509Certificate, createHash } from 'node:crypto';
import { request as httpRequest, type Agent as HttpAgent, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { createServer as createTlsServer, type ConnectionOptions, type TLSSocket, type TlsOptions } from 'node:tls';
import type { Teardown } from './env.js';
import { listenOnLoopback, splitAddress } from './env.js';

export type HttpResult =
  | {
      gotHttpResponse: true;
      status: number;
      headers: IncomingHttpHeaders;
      body: string;
      /** Parsed body when it is JSON. */
      json: any;
      /** The certificate the server presented (mTLS requests only). */
      peerCert?: X509Certificate;
      /** True when the request went over a pooled keep-alive connection. */
      reusedSocket: boolean;
      localPort?: number;
    }
  | {
      gotHttpResponse: false;
      error: string;
      code?: string;
      peerCert?: X509Certificate;
    };

export interface MtlsRequestOptions {
  /** "host:port" of a sidecar's inbound listener. */
  address: string;
  certPem?: string;
  keyPem?: string;
  /** When given the server is verified against it (hostname checks are skipped: SVIDs have none). */
  caPem?: string;
  path?: string;
  method?: string;
  headers?: OutgoingHttpHeaders;
  body?: string | Buffer;
  /** Extra TLS options (minVersion, maxVersion, ciphers, ...). */
  tls?: ConnectionOptions;
  agent?: HttpsAgent | false;
  timeoutMs?: number;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * The server's leaf, read through getPeerCertificate(): on Node 20, getPeerX509Certificate()
 * removes an entry from OpenSSL's peer chain (nodejs/node#65579), so a second call on the same
 * socket returns undefined and the detailed chain comes back empty.
 */
export function peerCertificateOf(socket: TLSSocket): X509Certificate | undefined {
  try {
    const raw = socket.getPeerCertificate()?.raw;
    return raw ? new X509Certificate(raw) : undefined;
  } catch {
    return undefined;
  }
}

/** One HTTPS request with a client certificate. Never rejects: failures come back as data. */
export function mtlsRequest(opts: MtlsRequestOptions): Promise<HttpResult> {
  const { host, port } = splitAddress(opts.address);
  return new Promise((resolve) => {
    let peerCert: X509Certificate | undefined;
    let settled = false;
    const done = (r: HttpResult): void => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    const req = httpsRequest({
      host,
      port,
      method: opts.method ?? 'GET',
      path: opts.path ?? '/',
      headers: opts.headers,
      cert: opts.certPem,
      key: opts.keyPem,
      ca: opts.caPem,
      rejectUnauthorized: opts.caPem !== undefined,
      checkServerIdentity: () => undefined,
      ALPNProtocols: ['http/1.1'],
      agent: opts.agent ?? false,
      ...opts.tls,
    });
    req.setTimeout(opts.timeoutMs ?? 8_000, () => req.destroy(Object.assign(new Error('timeout: no response and connection still open'), { code: 'TIMEOUT' })));
    req.on('socket', (socket: Socket) => {
      const tlsSocket = socket as TLSSocket;
      const grab = (): void => {
        peerCert = peerCertificateOf(tlsSocket) ?? peerCert;
      };
      if ((tlsSocket as { encrypted?: boolean }).encrypted && !tlsSocket.connecting) grab();
      tlsSocket.once('secureConnect', grab);
    });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err: NodeJS.ErrnoException) => done({ gotHttpResponse: false, error: err.message, code: err.code, peerCert }));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        peerCert ??= peerCertificateOf(res.socket as TLSSocket);
        done({
          gotHttpResponse: true,
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          json: parseJson(body),
          peerCert,
          reusedSocket: req.reusedSocket,
        });
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => done({ gotHttpResponse: false, error: err.message, code: err.code, peerCert }));
    req.end(opts.body);
  });
}

export interface PlainRequestOptions {
  /** "host:port" of an outbound listener (or any plain HTTP server). */
  address: string;
  /** Origin-form ("/x") or absolute-form ("http://agent-b/x") request target. */
  path?: string;
  method?: string;
  headers?: OutgoingHttpHeaders;
  body?: string | Buffer;
  agent?: HttpAgent | false;
  timeoutMs?: number;
}

/** One plain HTTP request. Never rejects. */
export function plainRequest(opts: PlainRequestOptions): Promise<HttpResult> {
  const { host, port } = splitAddress(opts.address);
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: HttpResult): void => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    const req = httpRequest({ host, port, method: opts.method ?? 'GET', path: opts.path ?? '/', headers: opts.headers, agent: opts.agent ?? false });
    req.setTimeout(opts.timeoutMs ?? 8_000, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (err: NodeJS.ErrnoException) => done({ gotHttpResponse: false, error: err.message, code: err.code }));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        done({
          gotHttpResponse: true,
          status: res.statusCode ?? 0,
          headers: res.headers,
          body,
          json: parseJson(body),
          reusedSocket: req.reusedSocket,
          localPort: req.socket?.localPort,
        });
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => done({ gotHttpResponse: false, error: err.message, code: err.code }));
    req.end(opts.body);
  });
}

/** Lower-case hex SHA-256 of a certificate's DER: the XFCC `Hash` field. */
export function certHash(cert: X509Certificate | Buffer): string {
  return createHash('sha256').update(Buffer.isBuffer(cert) ? cert : cert.raw).digest('hex');
}

export interface RawTlsServer {
  address: string;
  port: number;
  /** TCP connections accepted. */
  connections: number;
  /** Completed TLS handshakes (as seen by this server). */
  handshakes: number;
  /** Application bytes received after the handshake, over all connections. */
  bytesReceived: number;
  close(): Promise<void>;
}

/**
 * A bare TLS server presenting `certPem`/`keyPem` (any certificate at all, chain included): asks
 * for a client certificate but accepts any, and counts the application bytes it receives. It
 * never answers unless `respond` is set; then every request head gets `200 raw-server`.
 */
export async function startRawTlsServer(
  t: Teardown,
  certPem: string,
  keyPem: string,
  opts: { respond?: boolean; tls?: TlsOptions } = {},
): Promise<RawTlsServer> {
  const respond = opts.respond === true;
  const state = { connections: 0, handshakes: 0, bytesReceived: 0 };
  const sockets = new Set<TLSSocket>();
  const server = createTlsServer({ cert: certPem, key: keyPem, requestCert: true, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], ...opts.tls }, (socket) => {
    state.handshakes++;
    sockets.add(socket);
    let pending = '';
    socket.on('data', (d: Buffer) => {
      state.bytesReceived += d.length;
      if (!respond) return;
      pending += d.toString('latin1');
      while (pending.includes('\r\n\r\n')) {
        pending = pending.slice(pending.indexOf('\r\n\r\n') + 4);
        socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10\r\n\r\nraw-server');
      }
    });
    socket.on('error', () => {});
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('connection', () => state.connections++);
  server.on('tlsClientError', () => {});
  const { port, close } = await listenOnLoopback(t, server, sockets);
  return {
    address: `127.0.0.1:${port}`,
    port,
    get connections() {
      return state.connections;
    },
    get handshakes() {
      return state.handshakes;
    },
    get bytesReceived() {
      return state.bytesReceived;
    },
    close,
  };
}

/**
 * Writes `data` to a plain TCP connection and collects everything received until the peer
 * closes or `timeoutMs` passes. For requests Node's http client will not send as-is.
 */
export function rawExchange(address: string, data: string | Buffer, timeoutMs = 5_000): Promise<{ received: string; closedByPeer: boolean }> {
  const { host, port } = splitAddress(address);
  return new Promise((resolve) => {
    let received = '';
    let timedOut = false;
    const socket = netConnect({ host, port }, () => socket.write(data));
    socket.on('data', (d: Buffer) => (received += d.toString('latin1')));
    socket.on('error', () => {});
    socket.setTimeout(timeoutMs, () => {
      timedOut = true;
      socket.destroy();
    });
    socket.on('close', () => resolve({ received, closedByPeer: !timedOut }));
  });
}
