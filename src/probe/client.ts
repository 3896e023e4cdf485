// One HTTP/1.1 request to the target's inbound mTLS listener, with whatever client credentials
// and TLS offers an attack needs. The target's own SVID is always verified (SPIFFE rules, the
// probe's bundles, and the expected ID when given) before a byte of HTTP is sent: the probe
// never hands a token or a request to something that is not the target.
import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { connect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { PeerVerifier } from '../tls/index.js';
import type { BundleSet, SpiffeId } from '../spiffe/index.js';
import type { ProbeTarget } from './types.js';

/** Client certificate chain (leaf first) and key; omit both to offer no certificate. */
export interface ClientCredentials {
  certChainPem?: string;
  keyPem?: string;
}

/** TLS offers that differ from a modern client's (old versions, weak ciphers). */
export interface TlsOffer {
  minVersion?: ConnectionOptions['minVersion'];
  maxVersion?: ConnectionOptions['maxVersion'];
  ciphers?: string;
}

export interface ProbeHttpRequest {
  method?: string;
  path: string;
  headers?: Record<string, string | string[]>;
  body?: string;
  /** Resolve on the response head and leave the body streaming (for cut-stream checks). */
  stream?: boolean;
}

export type Exchange =
  | {
      kind: 'response';
      status: number;
      headers: IncomingHttpHeaders;
      /** The body (empty for `stream`). */
      body: string;
      serverId: SpiffeId;
      /** The key type of the target's SVID (`ec`, `rsa`, ...). */
      serverKeyType: string | undefined;
      /** For `stream`: the open response; destroy it when done. */
      response?: IncomingMessage;
    }
  | {
      /** The target refused: handshake alert or connection closed before any response. */
      kind: 'refused';
      detail: string;
    };

/** The probe's own failure (the target is not who it should be, a timeout): never a verdict of "rejected". */
export class ProbeStepError extends Error {
  constructor(
    readonly code: 'target_unverified' | 'timeout' | 'aborted' | 'unreachable' | 'bad_response',
    message: string,
  ) {
    super(message);
  }
}

const MAX_BODY_BYTES = 256 * 1024;

export interface InboundCall {
  target: ProbeTarget;
  bundles: BundleSet;
  credentials: ClientCredentials;
  offer?: TlsOffer;
  request: ProbeHttpRequest;
  signal: AbortSignal;
}

/** Performs one request; resolves to the response or to the target's refusal. */
export async function inboundRequest(call: InboundCall): Promise<Exchange> {
  const tls = await handshake(call);
  if (tls.kind === 'refused') return tls;
  return sendRequest(tls.socket, { serverId: tls.serverId, serverKeyType: tls.serverKeyType }, call);
}

type Handshake = { kind: 'secure'; socket: TLSSocket; serverId: SpiffeId; serverKeyType: string | undefined } | { kind: 'refused'; detail: string };

function handshake(call: InboundCall): Promise<Handshake> {
  const { target, credentials, offer, signal } = call;
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new ProbeStepError('aborted', 'aborted'));
    const options: ConnectionOptions = {
      host: target.host,
      port: target.port,
      ALPNProtocols: ['http/1.1'],
      // The server is verified below per SPIFFE (per trust domain), not by OpenSSL's WebPKI rules.
      rejectUnauthorized: false,
      ...(isIpLiteral(target.host) ? {} : { servername: target.host }),
      ...(credentials.certChainPem ? { cert: credentials.certChainPem } : {}),
      ...(credentials.keyPem ? { key: credentials.keyPem } : {}),
      ...(offer?.minVersion ? { minVersion: offer.minVersion } : {}),
      ...(offer?.maxVersion ? { maxVersion: offer.maxVersion } : {}),
      ...(offer?.ciphers ? { ciphers: offer.ciphers } : {}),
    };
    const socket = connect(options);
    // An error before TCP connects is the probe's network, not the target's refusal.
    let connected = false;
    socket.once('connect', () => (connected = true));
    const onAbort = (): void => {
      socket.destroy();
      reject(new ProbeStepError('aborted', 'aborted'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const settle = (): void => signal.removeEventListener('abort', onAbort);
    socket.once('secureConnect', () => {
      settle();
      socket.removeAllListeners('error');
      try {
        const peer = new PeerVerifier().verifySocket(socket, call.bundles);
        if (target.expectedId && !peer.id.equals(target.expectedId)) {
          throw new Error(`it presented ${peer.id}, expected ${target.expectedId}`);
        }
        resolve({ kind: 'secure', socket, serverId: peer.id, serverKeyType: peer.leaf.publicKey.asymmetricKeyType });
      } catch (err) {
        socket.destroy();
        reject(new ProbeStepError('target_unverified', `the target at ${target.host}:${target.port} failed verification: ${(err as Error).message}`));
      }
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      settle();
      socket.destroy();
      if (!connected) {
        reject(new ProbeStepError('unreachable', `cannot reach ${target.host}:${target.port} (${err.code ?? err.message})`));
        return;
      }
      resolve({ kind: 'refused', detail: `handshake refused (${describeTlsError(err)})` });
    });
  });
}

function sendRequest(socket: TLSSocket, server: { serverId: SpiffeId; serverKeyType: string | undefined }, call: InboundCall): Promise<Exchange> {
  const { request, signal, target } = call;
  return new Promise((resolve, reject) => {
    let settled = false;
    const done = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      fn();
    };
    const req = httpRequest({
      createConnection: () => socket,
      host: target.host,
      method: request.method ?? 'GET',
      path: request.path,
      headers: { host: `${target.host}:${target.port}`, connection: 'close', ...(request.headers ?? {}) },
    });
    const onAbort = (): void => {
      req.destroy();
      socket.destroy();
      done(() => reject(new ProbeStepError('aborted', 'aborted')));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    req.on('response', (res) => {
      if (request.stream) {
        done(() => resolve({ kind: 'response', status: res.statusCode ?? 0, headers: res.headers, body: '', ...server, response: res }));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= MAX_BODY_BYTES) chunks.push(c);
      });
      res.on('end', () => {
        socket.destroy();
        done(() => resolve({ kind: 'response', status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), ...server }));
      });
      res.on('error', (err) => done(() => reject(new ProbeStepError('bad_response', `the response broke off: ${err.message}`))));
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      socket.destroy();
      // In TLS 1.3 the server judges the client certificate after the client's handshake is done:
      // its refusal arrives as an alert or a close before any response.
      done(() => resolve({ kind: 'refused', detail: `closed before any response (${describeTlsError(err)})` }));
    });
    req.end(request.body);
  });
}

/** A short, stable description of why a TLS connection failed ("alert bad certificate", "ECONNRESET"). */
export function describeTlsError(err: NodeJS.ErrnoException): string {
  const code = err.code ?? '';
  const alert = /^ERR_SSL_(?:SSLV3|TLSV1|TLSV13)_ALERT_(.+)$/.exec(code);
  if (alert) return `alert ${alert[1]!.toLowerCase().replace(/_/g, ' ')}`;
  if (code.startsWith('ERR_SSL_')) return code.slice('ERR_SSL_'.length).toLowerCase().replace(/_/g, ' ');
  if (code) return code;
  return err.message || 'connection closed';
}

function isIpLiteral(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(':');
}
