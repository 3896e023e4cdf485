// Verification of the certificate a TLS peer presented, per the SPIFFE X.509-SVID rules and
// against the bundle of the peer's own trust domain only.
import { createHash, X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import {
  verifyX509Svid,
  VerificationError,
  type BundleSet,
  type SpiffeId,
  type VerifiedSvid,
} from '../spiffe/index.js';

export interface VerifiedPeer {
  id: SpiffeId;
  leaf: X509Certificate;
  /** Lower-case hex SHA-256 of the peer leaf DER (the XFCC Hash field). */
  leafHash: string;
}

export class PeerVerificationError extends Error {
  constructor(
    readonly code: 'peer_untrusted',
    /** The finer SPIFFE reason: trust_domain_unknown, chain_invalid, certificate_expired, ... */
    readonly detail: string,
    message: string,
  ) {
    super(message);
  }
}

interface CachedPeer {
  peer: VerifiedPeer;
  validFrom: number;
  validTo: number;
}

const CACHE_LIMIT = 4096;

/**
 * Verified chains are cached per leaf fingerprint, scoped to one BundleSet object: a bundle
 * change produces a new BundleSet, so nothing verified under old trust survives it. The path's
 * validity window is re-checked on every hit, so expiry is never cached away.
 */
export class PeerVerifier {
  private cache = new WeakMap<BundleSet, Map<string, CachedPeer>>();

  verifySocket(socket: TLSSocket, bundles: BundleSet, now = Date.now()): VerifiedPeer {
    const leaf = socket.getPeerX509Certificate();
    if (!leaf) throw new PeerVerificationError('peer_untrusted', 'no_certificate', 'peer presented no certificate');
    const perBundle = this.cacheFor(bundles);
    const hit = perBundle.get(leaf.fingerprint256);
    if (hit && now >= hit.validFrom && now <= hit.validTo) return hit.peer;
    return this.verifyChain(presentedChain(socket, leaf), bundles, now);
  }

  verifyChain(presented: X509Certificate[], bundles: BundleSet, now = Date.now()): VerifiedPeer {
    let verified: VerifiedSvid;
    try {
      verified = verifyX509Svid(presented, bundles, new Date(now));
    } catch (err) {
      if (err instanceof VerificationError) throw new PeerVerificationError('peer_untrusted', err.code, err.message);
      throw new PeerVerificationError('peer_untrusted', 'svid_invalid', (err as Error).message);
    }
    const peer: VerifiedPeer = {
      id: verified.id,
      leaf: verified.leaf,
      leafHash: createHash('sha256').update(verified.leaf.raw).digest('hex'),
    };
    const perBundle = this.cacheFor(bundles);
    if (perBundle.size >= CACHE_LIMIT) perBundle.clear();
    perBundle.set(verified.leaf.fingerprint256, {
      peer,
      validFrom: Math.max(...verified.path.map((c) => new Date(c.validFrom).getTime())),
      validTo: Math.min(...verified.path.map((c) => new Date(c.validTo).getTime())),
    });
    return peer;
  }

  private cacheFor(bundles: BundleSet): Map<string, CachedPeer> {
    let perBundle = this.cache.get(bundles);
    if (!perBundle) {
      perBundle = new Map();
      this.cache.set(bundles, perBundle);
    }
    return perBundle;
  }
}

/**
 * The certificates the peer sent, leaf first. Node exposes them as a linked issuer chain;
 * it may also have appended anchors from our own store, which the verifier tolerates.
 */
function presentedChain(socket: TLSSocket, leaf: X509Certificate): X509Certificate[] {
  const certs = [leaf];
  const seen = new Set([leaf.fingerprint256]);
  let node: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true).issuerCertificate;
  while (node && node.raw && !seen.has(node.fingerprint256) && certs.length < 10) {
    seen.add(node.fingerprint256);
    certs.push(new X509Certificate(node.raw));
    node = node.issuerCertificate;
  }
  return certs;
}
