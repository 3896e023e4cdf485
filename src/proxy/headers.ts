// Header hygiene at the trust boundary. Identity headers are only ever produced from verified
// material, so every incoming copy is dropped first; hop-by-hop headers (RFC 9110 §7.6.1) are
// connection-scoped and must not be forwarded — but a sender must never be able to use that
// rule to remove headers that frame the message or carry identity.
import type { IncomingHttpHeaders } from 'node:http';
import type { SpiffeId } from '../spiffe/index.js';

export const XFCC_HEADER = 'x-forwarded-client-cert';
export const PEER_ID_HEADER = 'x-sigil-peer-id';
export const DELEGATION_HEADER = 'x-sigil-delegation';
const SIGIL_PREFIX = 'x-sigil-';

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

/**
 * Headers a Connection header may not nominate for removal: dropping Content-Length or
 * Transfer-Encoding would unframe the body and let its bytes be read upstream as a second,
 * unchecked request (request smuggling); Host and identity headers are never the sender's to drop.
 */
function isProtected(name: string): boolean {
  return name === 'host' || name === 'content-length' || name === 'transfer-encoding' || isIdentityHeader(name);
}

/**
 * True for XFCC and any x-sigil-* header. Underscores count as dashes: CGI-style servers
 * (WSGI, Rack, PHP) map `x_sigil_peer_id` to the same variable as `x-sigil-peer-id`.
 */
function isIdentityHeader(name: string): boolean {
  // Checked on every header of every request: no regex run or copy for names without '_'.
  const normalized = name.includes('_') ? name.replaceAll('_', '-') : name;
  return normalized === XFCC_HEADER || normalized.startsWith(SIGIL_PREFIX);
}

export function stripIdentityHeaders(headers: IncomingHttpHeaders): void {
  for (const name of Object.keys(headers)) {
    if (isIdentityHeader(name)) delete headers[name];
  }
}

/**
 * Removes hop-by-hop headers and any unprotected header the Connection header names. For a
 * WebSocket upgrade, `Connection: upgrade` and `Upgrade` are the request itself and are kept.
 */
export function stripHopByHop(headers: IncomingHttpHeaders | Record<string, unknown>, keepUpgrade = false): void {
  // Runs twice per request and hop (request and response headers): no intermediate arrays.
  const connection = headers['connection'];
  for (const name of HOP_BY_HOP) dropHopByHop(headers, name, keepUpgrade);
  if (typeof connection === 'string') {
    for (const token of connection.split(',')) {
      const name = token.trim().toLowerCase();
      if (name && !isProtected(name)) dropHopByHop(headers, name, keepUpgrade);
    }
  }
  if (keepUpgrade) headers['connection'] = 'upgrade';
}

function dropHopByHop(headers: IncomingHttpHeaders | Record<string, unknown>, name: string, keepUpgrade: boolean): void {
  if (keepUpgrade && (name === 'upgrade' || name === 'connection')) return;
  delete headers[name];
}

/**
 * Prepares an incoming request's headers for forwarding. Node has already decoded a chunked
 * body, so Transfer-Encoding is restated as `chunked` for the next hop to re-frame it; without
 * it Node would send the body of a GET/HEAD/DELETE/OPTIONS unframed.
 */
export function forwardableRequestHeaders(headers: IncomingHttpHeaders, upgrade: boolean): void {
  const chunked = headers['transfer-encoding'] !== undefined;
  stripHopByHop(headers, upgrade);
  if (chunked) headers['transfer-encoding'] = 'chunked';
}

/** `By=<own ID>;Hash=<sha256 hex of peer leaf DER>;URI=<peer ID>`, exactly, in that order. */
export function xfccValue(ownId: SpiffeId, peerLeafHash: string, peerId: SpiffeId): string {
  return `By=${ownId};Hash=${peerLeafHash};URI=${peerId}`;
}

export function setIdentityHeaders(headers: IncomingHttpHeaders, ownId: SpiffeId, peerLeafHash: string, peerId: SpiffeId): void {
  headers[XFCC_HEADER] = xfccValue(ownId, peerLeafHash, peerId);
  headers[PEER_ID_HEADER] = peerId.toString();
}
