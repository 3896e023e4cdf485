// Header hygiene at the trust boundary. Identity headers are only ever produced from verified
// material, so every incoming copy is dropped first; hop-by-hop headers (RFC 9110 §7.6.1) are
// connection-scoped and must not be forwarded.
import type { IncomingHttpHeaders } from 'node:http';
import type { SpiffeId } from '../spiffe/index.js';

export const XFCC_HEADER = 'x-forwarded-client-cert';
export const PEER_ID_HEADER = 'x-sigil-peer-id';
const SIGIL_PREFIX = 'x-sigil-';

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

export function stripIdentityHeaders(headers: IncomingHttpHeaders): void {
  for (const name of Object.keys(headers)) {
    if (name === XFCC_HEADER || name.startsWith(SIGIL_PREFIX)) delete headers[name];
  }
}

/**
 * Removes hop-by-hop headers and any header the Connection header names. For a WebSocket
 * upgrade, `Connection: upgrade` and `Upgrade` are the request itself and are kept.
 */
export function stripHopByHop(headers: IncomingHttpHeaders | Record<string, unknown>, keepUpgrade = false): void {
  const connection = headers['connection'];
  const listed = typeof connection === 'string' ? connection.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean) : [];
  for (const name of [...HOP_BY_HOP, ...listed]) {
    if (keepUpgrade && (name === 'upgrade' || name === 'connection')) continue;
    delete headers[name];
  }
  if (keepUpgrade) headers['connection'] = 'upgrade';
}

/** `By=<own ID>;Hash=<sha256 hex of peer leaf DER>;URI=<peer ID>`, exactly, in that order. */
export function xfccValue(ownId: SpiffeId, peerLeafHash: string, peerId: SpiffeId): string {
  return `By=${ownId};Hash=${peerLeafHash};URI=${peerId}`;
}

export function setIdentityHeaders(headers: IncomingHttpHeaders, ownId: SpiffeId, peerLeafHash: string, peerId: SpiffeId): void {
  headers[XFCC_HEADER] = xfccValue(ownId, peerLeafHash, peerId);
  headers[PEER_ID_HEADER] = peerId.toString();
}
