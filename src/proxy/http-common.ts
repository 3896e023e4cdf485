// Pieces both proxy directions (and the admin server) share: binding a listener, the policy
// view of a request, response header hygiene and answers to malformed input.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import type { Duplex } from 'node:stream';
import type { CallMeta, Decision, HttpContext, ReasonCode } from '../authz/index.js';
import type { SpiffeId } from '../spiffe/index.js';
import type { DecisionLabel, Reporter, RequestObservation, RequestProtocol } from '../telemetry/index.js';
import type { HostPort } from '../config/index.js';
import { childTraceparent, newRequestId } from '../telemetry/index.js';
import { stripHopByHop } from './headers.js';
import { errorBody, sendRawError } from './responses.js';

/** Binds `server` and resolves with the bound address (port 0 = ephemeral). */
export function listen(server: Server, at: HostPort): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** What a policy sees of an HTTP request: method, path without query, Host. */
export function httpContext(req: IncomingMessage): HttpContext {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return { method: req.method ?? 'GET', path: q === -1 ? url : url.slice(0, q), host: req.headers.host ?? '' };
}

/**
 * The upstream's hop-by-hop headers are not ours to forward. http-proxy then copies the
 * request's Connection header into the response (defaulting to keep-alive), and we already
 * removed that from the request, so state what Node's parser decided for the client connection.
 */
export function forwardResponseHeaders(proxyRes: IncomingMessage, _req: IncomingMessage, res: ServerResponse): void {
  stripHopByHop(proxyRes.headers);
  proxyRes.headers['connection'] = res.shouldKeepAlive ? 'keep-alive' : 'close';
}

/** Malformed or oversized requests get a terse HTTP error, never a crash. */
export function onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
  sendRawError(socket, tooLarge ? 431 : 400, errorBody(tooLarge ? 431 : 400, tooLarge ? 'headers_too_large' : 'bad_request'));
}

/**
 * Node stops watching a socket for errors once it hands it over as an upgrade; until the proxy
 * attaches its own handler, a reset from the client would be an uncaught 'error' event.
 */
export function guardUpgradeSocket(socket: Duplex): void {
  socket.on('error', () => socket.destroy());
}

export class BodyTooLargeError extends Error {
  readonly code = 'body_too_large';
  constructor(readonly limit: number) {
    super(`request body exceeds ${limit} bytes`);
  }
}

/**
 * http-proxy rewrites a DELETE or OPTIONS request without Content-Length to `Content-Length: 0`
 * and drops Transfer-Encoding, then streams the body anyway: the body would reach the next hop
 * unframed. Such bodies are buffered (bounded) and sent with an exact Content-Length instead.
 */
export function needsBufferedBody(req: IncomingMessage): boolean {
  return (req.method === 'DELETE' || req.method === 'OPTIONS') && req.headers['transfer-encoding'] !== undefined;
}

/** Makes `req`'s headers describe an already-buffered body of `body.length` bytes. */
export function frameBufferedBody(req: IncomingMessage, body: Buffer): void {
  delete req.headers['transfer-encoding'];
  req.headers['content-length'] = String(body.length);
}

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

/**
 * Starts Sigil's part of a call: a request id for the audit trail, and W3C trace context
 * carried through this hop — the incoming trace id is kept with a new parent span id, or a new
 * trace starts when the caller sent none (or an invalid one). The forwarded request carries it.
 */
export function beginCall(req: IncomingMessage): CallMeta {
  const incoming = req.headers['traceparent'];
  const traceparent = childTraceparent(typeof incoming === 'string' ? incoming : undefined);
  req.headers['traceparent'] = traceparent;
  return { requestId: newRequestId(), traceparent };
}

// Percent-encoded unreserved characters (RFC 3986 §2.3) and the separators `/` and `\`.
const ENCODED_UNRESERVED_OR_SEPARATOR = /%(?:[46][1-9a-f]|[57][0-9a]|3[0-9]|2[def]|5[cf]|7e)/i;

/**
 * Why a request target is refused, or undefined when it is a canonical origin-form path. The
 * policy sees `context.http.path` and the upstream must serve exactly that path: anything a
 * router or http-proxy would rewrite (`//`, `\`, dot segments, percent-encoded letters, dots or
 * slashes, absolute-form) could make the two disagree, so it is refused instead of guessed at.
 */
export function nonCanonicalTarget(url: string | undefined): string | undefined {
  if (url === undefined || !url.startsWith('/')) return 'request target must be a path (origin-form)';
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  if (path.includes('\\') || path.includes('#')) return 'path contains "\\" or "#"';
  const segments = path.split('/');
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    if (segment === '.' || segment === '..') return 'path contains a dot segment';
    if (segment === '' && i < segments.length - 1) return 'path contains an empty segment ("//")';
  }
  if (ENCODED_UNRESERVED_OR_SEPARATOR.test(path)) return 'path percent-encodes a letter, digit, "-", ".", "_", "~", "/" or "\\"; send it decoded';
  return undefined;
}

/** What a call came to, filled in as it is decided; recorded once its response is complete. */
export interface CallOutcome {
  protocol: RequestProtocol;
  /** The decision that let it through or refused it (the last one taken for it). */
  decision?: Decision;
  /** A refusal or failure Sigil produced itself (e.g. upstream_unavailable). */
  reason?: ReasonCode;
}

export interface CallParties {
  reporter: Reporter;
  source?: SpiffeId;
  destination?: SpiffeId;
}

const STATUS_REASONS: Record<number, ReasonCode> = {
  400: 'bad_request',
  403: 'policy_denied',
  413: 'body_too_large',
  415: 'bad_request',
  431: 'headers_too_large',
  502: 'upstream_unavailable',
  503: 'svid_unavailable',
};

/**
 * Turns a finished call into one `sigil_requests_total` / duration observation. An upstream's
 * own 4xx/5xx is an allowed call with that response code; only Sigil's refusals carry a reason.
 */
export function callObservation(outcome: CallOutcome, parties: CallParties, responseCode: number, seconds: number): RequestObservation {
  const d = outcome.decision;
  // A refusal Sigil produced itself (e.g. body_too_large) is a deny whatever the policy said;
  // a failure to reach the next hop is not.
  const refused = outcome.reason !== undefined && outcome.reason !== 'upstream_unavailable' && outcome.reason !== 'peer_unreachable';
  const decision: DecisionLabel = refused ? 'deny' : d ? (d.wouldDeny ? 'would_deny' : d.allowed ? 'allow' : 'deny') : responseCode < 400 ? 'allow' : 'deny';
  const reason =
    outcome.reason ?? (d ? (d.allowed && !d.wouldDeny ? 'allowed' : d.reason) : responseCode < 400 ? 'allowed' : (STATUS_REASONS[responseCode] ?? 'internal_error'));
  // Copied field by field: `...parties` here fell off V8's fast clone path (≈5 µs a call
  // against ≈40 ns, once per request on each sidecar; see bench/README.md, issue 11).
  return {
    reporter: parties.reporter,
    source: parties.source,
    destination: parties.destination,
    protocol: outcome.protocol,
    responseCode,
    decision,
    reason,
    seconds,
    chainDepth: d?.request.delegation?.depth ?? 0,
  };
}

export interface HandshakeObservation {
  reporter: Reporter;
  result: 'success' | 'failure';
  /** `ok`, a SPIFFE verification code, or a bounded TLS failure class. */
  reason: string;
  seconds?: number;
}

/** A bounded label for a TLS-level failure: OpenSSL's reason codes are a closed set. */
export function tlsFailureReason(err: NodeJS.ErrnoException): string {
  if (err.code && /^ERR_SSL_[A-Z0-9_]{1,80}$/.test(err.code)) return err.code.slice('ERR_SSL_'.length).toLowerCase();
  if (err.code === 'ECONNRESET') return 'connection_reset';
  if (err.code === 'ERR_SOCKET_CLOSED' || err.code === 'EPIPE') return 'connection_closed';
  return 'tls_error';
}
