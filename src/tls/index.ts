export { serverContextOptions, clientSecureContext, MIN_TLS_VERSION, ALPN_PROTOCOLS, CIPHERS } from './context.js';
export { PeerVerifier, PeerVerificationError } from './peer.js';
export type { PeerRevocationCheck, PeerVerifierOptions } from './peer.js';
export type { VerifiedPeer } from './peer.js';
