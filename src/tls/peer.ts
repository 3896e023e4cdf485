// Verification of the certificate a TLS peer presented, per the SPIFFE X.509-SVID rules and
// against the bundle of the peer's own trust domain only.
import { createHash, X509Certificate } from 'node:crypto';
import type { DetailedPeerCertificate, TLSSocket } from 'node:tls';
import {
  BundleSet,
  validateLeaf,
  verifyX509Svid,
  VerificationError,
  X509Bundle,
  type SpiffeId,
  type VerifiedSvid,
} from '../spiffe/index.js';

export interface VerifiedPeer {
  id: SpiffeId;
  leaf: X509Certificate;
  /** Lower-case hex SHA-256 of the peer leaf DER (the XFCC Hash field). */
  leafHash: string;
  /** Epoch ms after which some certificate on the verified path has expired. */
  validTo: number;
  /** Leaf serial, upper-case hex (as Node reports it): with leafHash, what an SVID revocation names. */
  serial: string;
}

/** The revocation state the verifier consults on every verification, cached or not. */
export interface PeerRevocationCheck {
  /** Changes whenever the revocation set changes; cached verifications do not survive it. */
  epoch(): number;
  /** Whether this leaf (serial, SHA-256 hex) is revoked now. */
  isRevoked(serial: string, fingerprint: string): boolean;
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
}

const CACHE_LIMIT = 4096;

/**
 * Verified chains are cached per leaf fingerprint, scoped to one BundleSet object and one
 * revocation epoch: a bundle change produces a new BundleSet and a revocation a new epoch, so
 * nothing verified under old trust or an old revocation list survives either. The path's
 * validity window is re-checked on every hit, so expiry is never cached away.
 */
export interface PeerVerifierOptions {
  /**
   * UNSAFE, tests of `sigil probe` only (SIGIL_UNSAFE_TEST_WEAKEN=trust-domain-pooling): accept a
   * chain that any trust domain's authorities verify, the bundle-pooling flaw the SPIFFE rules forbid.
   */
  unsafePoolTrustDomains?: boolean;
}

export class PeerVerifier {
  constructor(private readonly options: PeerVerifierOptions = {}) {}

  private cache = new WeakMap<BundleSet, { epoch: number; peers: Map<string, CachedPeer> }>();
  private revocation: PeerRevocationCheck | undefined;

  /** From now on, every verification also refuses revoked SVIDs (`svid_revoked`). */
  useRevocation(check: PeerRevocationCheck): void {
    this.revocation = check;
  }

  verifySocket(socket: TLSSocket, bundles: BundleSet, now = Date.now()): VerifiedPeer {
    // Never getPeerX509Certificate(): on Node 20 it drops an entry from OpenSSL's peer chain,
    // which loses the peer's intermediates. The cache is keyed by the leaf alone, so a hit needs
    // only the abbreviated leaf (≈15 µs); the detailed chain (≈190 µs: every issuer converted
    // to an object) is fetched on a miss only. Neither form alters OpenSSL's chain.
    const leaf = socket.getPeerCertificate(false);
    if (!leaf?.raw) throw new PeerVerificationError('peer_untrusted', 'no_certificate', 'peer presented no certificate');
    const hit = this.cacheFor(bundles).get(leaf.fingerprint256);
    if (hit && now >= hit.validFrom && now <= hit.peer.validTo) return this.notRevoked(hit.peer);
    return this.verifyChain(presentedChain(socket.getPeerCertificate(true)), bundles, now);
  }

  private notRevoked(peer: VerifiedPeer): VerifiedPeer {
    if (this.revocation?.isRevoked(peer.serial, peer.leafHash)) {
      throw new PeerVerificationError('peer_untrusted', 'svid_revoked', `the SVID of ${peer.id} (serial ${peer.serial}) is revoked`);
    }
    return peer;
  }

  verifyChain(presented: X509Certificate[], bundles: BundleSet, now = Date.now()): VerifiedPeer {
    let verified: VerifiedSvid;
    try {
      verified = this.options.unsafePoolTrustDomains ? verifyPooled(presented, bundles, new Date(now)) : verifyX509Svid(presented, bundles, new Date(now));
    } catch (err) {
      if (err instanceof VerificationError) throw new PeerVerificationError('peer_untrusted', err.code, err.message);
      throw new PeerVerificationError('peer_untrusted', 'svid_invalid', (err as Error).message);
    }
    const peer: VerifiedPeer = {
      id: verified.id,
      leaf: verified.leaf,
      leafHash: createHash('sha256').update(verified.leaf.raw).digest('hex'),
      validTo: Math.min(...verified.path.map((c) => new Date(c.validTo).getTime())),
      serial: verified.leaf.serialNumber,
    };
    const perBundle = this.cacheFor(bundles);
    if (perBundle.size >= CACHE_LIMIT) perBundle.clear();
    perBundle.set(verified.leaf.fingerprint256, {
      peer,
      validFrom: Math.max(...verified.path.map((c) => new Date(c.validFrom).getTime())),
    });
    return this.notRevoked(peer);
  }

  /** Verified chains under these bundles and the current revocation epoch. */
  private cacheFor(bundles: BundleSet): Map<string, CachedPeer> {
    const epoch = this.revocation?.epoch() ?? 0;
    let scope = this.cache.get(bundles);
    if (!scope || scope.epoch !== epoch) {
      scope = { epoch, peers: new Map() };
      this.cache.set(bundles, scope);
    }
    return scope.peers;
  }
}

/**
 * The certificates the peer sent, leaf first. Node exposes them as a linked issuer chain;
 * it may also have appended anchors from our own store, which the verifier tolerates.
 */
function presentedChain(detailed: DetailedPeerCertificate): X509Certificate[] {
  const certs = [new X509Certificate(detailed.raw)];
  const seen = new Set([detailed.fingerprint256]);
  let node: DetailedPeerCertificate | undefined = detailed.issuerCertificate;
  while (node && node.raw && !seen.has(node.fingerprint256) && certs.length < 10) {
    seen.add(node.fingerprint256);
    certs.push(new X509Certificate(node.raw));
    node = node.issuerCertificate;
  }
  return certs;
}

/** The pooling flaw, on purpose (see PeerVerifierOptions): every domain's authorities, relabelled as the peer's. */
function verifyPooled(presented: X509Certificate[], bundles: BundleSet, now: Date): VerifiedSvid {
  try {
    return verifyX509Svid(presented, bundles, now);
  } catch (err) {
    const leaf = presented[0];
    if (!leaf) throw err;
    const td = validateLeaf(leaf).trustDomain;
    for (const other of bundles.trustDomains()) {
      try {
        return verifyX509Svid(presented, new BundleSet([new X509Bundle(td, bundles.get(other)!.authorities)]), now);
      } catch {
        // try the next domain
      }
    }
    throw err;
  }
}
