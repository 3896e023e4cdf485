// Secure contexts built from the current identity snapshot. Inbound contexts are swapped on
// the listening server with setSecureContext on every update, so new handshakes use the new
// SVID at once while established connections are untouched.
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import type { IdentitySnapshot } from '../identity/index.js';

export const MIN_TLS_VERSION = 'TLSv1.2' as const;
export const ALPN_PROTOCOLS = ['http/1.1'];

/**
 * Server side. OpenSSL is given every trust anchor so it can refuse a certificate from an
 * unknown CA during the handshake (the client gets a TLS alert). That check pools trust
 * domains, so it is only a first filter: the authoritative verification is the per-trust-domain
 * SPIFFE check in PeerVerifier, which runs before any application byte is read.
 */
export function serverContextOptions(snapshot: IdentitySnapshot): SecureContextOptions {
  return {
    key: snapshot.svid.privateKeyPem,
    cert: snapshot.svid.certChainPem,
    ca: snapshot.bundles.allAuthorities().map((c) => c.toString()),
    minVersion: MIN_TLS_VERSION,
  };
}

/** Client side: our SVID only; the server is verified by PeerVerifier, not by OpenSSL. */
export function clientSecureContext(snapshot: IdentitySnapshot): SecureContext {
  return createSecureContext({
    key: snapshot.svid.privateKeyPem,
    cert: snapshot.svid.certChainPem,
    minVersion: MIN_TLS_VERSION,
  });
}
