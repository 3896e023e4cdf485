import type { X509Certificate } from 'node:crypto';
import type { BundleSet, SpiffeId } from '../spiffe/index.js';

/** The workload's own X.509-SVID with its private key, as handed to the TLS layer. */
export interface X509Svid {
  id: SpiffeId;
  /** Leaf first, then intermediates up to (not including) the trust anchor. */
  certificates: X509Certificate[];
  certChainPem: string;
  privateKeyPem: string;
  notBefore: Date;
  notAfter: Date;
  /** Leaf serial number, upper-case hex as Node reports it. */
  serial: string;
}

/** One consistent view of identity material: never an SVID without the bundles it goes with. */
export interface IdentitySnapshot {
  svid: X509Svid;
  bundles: BundleSet;
  /** Increases on every change; consumers use it to invalidate caches. */
  generation: number;
}

/**
 * Something that produces the workload's SVID and the trust bundles it ships with
 * (dev issuer, files, Workload API). `start` resolves with the first valid material or
 * rejects; afterwards failures are reported through `onError` and the last good state is kept.
 */
export interface SvidSource {
  readonly kind: string;
  start(): Promise<SvidUpdate>;
  stop(): void;
}

export interface SvidUpdate {
  svid: X509Svid;
  /** Bundles the source itself supplies (at least its own trust domain's). */
  bundles: BundleSet;
}

export interface SourceCallbacks {
  onUpdate(update: SvidUpdate): void;
  onError(error: Error): void;
  /**
   * The provider took the identity away (Workload API PermissionDenied): stop presenting the
   * SVID until the next onUpdate.
   */
  onWithdraw?(reason: Error): void;
}

export function isUsable(svid: X509Svid, now = Date.now()): boolean {
  return now >= svid.notBefore.getTime() && now < svid.notAfter.getTime();
}
