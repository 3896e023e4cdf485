// Clients for the integration tests: an mTLS HTTP client that presents any certificate (to poke
// a sidecar's inbound port directly), a plain HTTP client for an outbound listener, and a raw
// TLS server that presents any certificate and counts the bytes it receives.
import { X509Certificate, createHash } from 'node:crypto';
import { request as httpRequest, type Agent as HttpAgent, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest, type Agent as HttpsAgent } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { createServer as createTlsServer, type ConnectionOptions, type TLSSocket } from 'node:tls';
import type { Teardown } from './env.js';
import { splitAddress } from './env.js';

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
        try {
          peerCert = tlsSocket.getPeerX509Certificate() ?? peerCert;
        } catch {
          /* not connected yet */
        }
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
        if (!peerCert) {
          try {
            peerCert = (res.socket as TLSSocket).getPeerX509Certificate();
          } catch {
            /* closed */
          }
        }
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
  /** Completed TLS handshakes. */
  handshakes: number;
  /** Application bytes received after the handshake, over all connections. */
  bytesReceived: number;
  close(): Promise<void>;
}

/**
 * A bare TLS server presenting `certPem`/`keyPem` (any certificate at all): asks for a client
 * certificate but accepts any, never answers, and counts the application bytes it receives.
 */
export async function startRawTlsServer(t: Teardown, certPem: string, keyPem: string): Promise<RawTlsServer> {
  const state = { handshakes: 0, bytesReceived: 0 };
  const sockets = new Set<TLSSocket>();
  const server = createTlsServer({ cert: certPem, key: keyPem, requestCert: true, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, (socket) => {
    state.handshakes++;
    sockets.add(socket);
    socket.on('data', (d: Buffer) => (state.bytesReceived += d.length));
    socket.on('error', () => {});
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.teardown(close);
  return {
    address: `127.0.0.1:${port}`,
    port,
    get handshakes() {
      return state.handshakes;
    },
    get bytesReceived() {
      return state.bytesReceived;
    },
    close,
  };
}
