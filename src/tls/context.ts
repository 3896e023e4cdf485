// Secure contexts built from the current identity snapshot. Inbound contexts are swapped on
// the listening server with setSecureContext on every update, so new handshakes use the new
// SVID at once while established connections are untouched.
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls';
import type { IdentitySnapshot } from '../identity/index.js';

export const MIN_TLS_VERSION = 'TLSv1.2' as const;
export const ALPN_PROTOCOLS = ['http/1.1'];

/**
 * The suites both sides allow. Node's default list reaches, through HIGH, TLS 1.2 suites that
 * Sigil has no reason to speak: AES-CBC with SHA-1/SHA-2 MACs (MAC-then-encrypt, the
 * Lucky13/padding-oracle family), static-RSA key exchange (no forward secrecy: a stolen RSA SVID
 * key would decrypt recorded traffic) and finite-field DHE. Every peer is another Sigil or a
 * SPIFFE workload with a modern TLS stack, so TLS 1.2 is limited to ECDHE with an AEAD cipher
 * (AES-GCM, ChaCha20-Poly1305), for ECDSA and RSA SVIDs alike. The TLS 1.3 suites are Node's
 * defaults (all AEAD), listed so the whole policy reads in one place. `sigil probe` checks it
 * from outside (tls.cipher-* attacks).
 */
export const CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_GCM_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

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
    ciphers: CIPHERS,
  };
}

/** Client side: our SVID only; the server is verified by PeerVerifier, not by OpenSSL. */
export function clientSecureContext(snapshot: IdentitySnapshot): SecureContext {
  return createSecureContext({
    key: snapshot.svid.privateKeyPem,
    cert: snapshot.svid.certChainPem,
    minVersion: MIN_TLS_VERSION,
    ciphers: CIPHERS,
  });
}
