import type { X509Certificate } from 'node:crypto';
import type { BundleSet } from './bundle.js';
import { certInfo } from './certinfo.js';
import { SvidError, VerificationError } from './errors.js';
import type { SpiffeId } from './id.js';
import { signingCertificateId, validateLeaf } from './svid.js';

export interface VerifiedSvid {
  id: SpiffeId;
  leaf: X509Certificate;
  /** leaf, intermediates, and finally the bundle authority that anchors the path. */
  path: X509Certificate[];
}

/** Most intermediates allowed between the leaf and the bundle authority. */
export const MAX_INTERMEDIATES = 8;
// Presented certificates are attacker-controlled; bounding the search keeps a crafted set of
// mutually-issuing certificates from making path building exponential. Exhaustion fails closed.
const MAX_SEARCH_STEPS = 256;

// A signature check is a pure function of the two DERs. Authority→intermediate pairs repeat on
// every handshake, so remembering them saves an ECDSA/RSA verify per handshake.
const MAX_SIGNATURE_ENTRIES = 1024;
const signatureCache = new Map<string, boolean>();

function signedBy(child: X509Certificate, parent: X509Certificate): boolean {
  const key = certInfo(child).fingerprint + '>' + certInfo(parent).fingerprint;
  const known = signatureCache.get(key);
  if (known !== undefined) return known;
  let ok: boolean;
  try {
    ok = child.checkIssued(parent) && child.verify(parent.publicKey);
  } catch {
    ok = false;
  }
  if (signatureCache.size >= MAX_SIGNATURE_ENTRIES) {
    const oldest = signatureCache.keys().next().value;
    if (oldest !== undefined) signatureCache.delete(oldest);
  }
  signatureCache.set(key, ok);
  return ok;
}

function role(i: number, length: number): string {
  if (i === 0) return 'leaf';
  if (i === length - 1) return 'trust anchor';
  return `intermediate #${i}`;
}

// Comparisons are written so that an unparsable date (NaN) fails closed.
function dateProblem(path: X509Certificate[], now: number): VerificationError | undefined {
  for (let i = 0; i < path.length; i++) {
    const cert = path[i]!;
    const { notBefore, notAfter } = certInfo(cert);
    if (!(now >= notBefore)) {
      return new VerificationError(
        'certificate_not_yet_valid',
        `${role(i, path.length)} (${cert.subject.replace(/\n/g, ', ')}) is not valid before ${cert.validFrom}`,
      );
    }
    if (!(now <= notAfter)) {
      return new VerificationError(
        'certificate_expired',
        `${role(i, path.length)} (${cert.subject.replace(/\n/g, ', ')}) expired at ${cert.validTo}`,
      );
    }
  }
  return undefined;
}

/**
 * Verifies an X509-SVID against the bundle of its own trust domain only: authorities of other
 * trust domains in `bundles` are never consulted, so one trust domain cannot mint identities
 * for another.
 */
export function verifyX509Svid(
  presented: X509Certificate[],
  bundles: BundleSet,
  now: Date = new Date(),
): VerifiedSvid {
  const leaf = presented[0];
  if (!leaf) throw new VerificationError('svid_invalid', 'no certificate presented');
  let id: SpiffeId;
  try {
    id = validateLeaf(leaf);
  } catch (cause) {
    if (cause instanceof SvidError) {
      throw new VerificationError('svid_invalid', `${cause.problem}: ${cause.message}`, { cause });
    }
    throw cause;
  }

  const bundle = bundles.get(id.trustDomain);
  if (!bundle || bundle.authorities.length === 0) {
    throw new VerificationError('trust_domain_unknown', `no trust bundle for trust domain ${id.trustDomain.name}`);
  }
  const anchors = bundle.authorities;

  // Unusable intermediates are dropped up front rather than failing verification: peers may send
  // extra certificates, and only the path that is actually built matters.
  const intermediates: X509Certificate[] = [];
  const seen = new Set<string>([certInfo(leaf).fingerprint]);
  for (const cert of presented.slice(1)) {
    let fp: string;
    try {
      fp = certInfo(cert).fingerprint;
      if (seen.has(fp)) continue;
      const cid = signingCertificateId(cert);
      if (cid && !cid.trustDomain.equals(id.trustDomain)) continue;
    } catch {
      continue;
    }
    seen.add(fp);
    intermediates.push(cert);
  }

  const t = now.getTime();
  let firstDateError: VerificationError | undefined;
  let steps = 0;
  const path: X509Certificate[] = [leaf];
  const onPath = new Set<string>([certInfo(leaf).fingerprint]);

  const extend = (): X509Certificate[] | undefined => {
    if (++steps > MAX_SEARCH_STEPS) return undefined;
    const current = path[path.length - 1]!;
    for (const anchor of anchors) {
      // An anchor never certifies itself onto the path (e.g. a leaf copied into the bundle).
      if (onPath.has(certInfo(anchor).fingerprint) || !signedBy(current, anchor)) continue;
      const full = [...path, anchor];
      const problem = dateProblem(full, t);
      if (!problem) return full;
      firstDateError ??= problem;
    }
    if (path.length - 1 >= MAX_INTERMEDIATES) return undefined;
    for (const next of intermediates) {
      const fp = certInfo(next).fingerprint;
      if (onPath.has(fp) || !signedBy(current, next)) continue;
      path.push(next);
      onPath.add(fp);
      const found = extend();
      if (found) return found;
      path.pop();
      onPath.delete(fp);
    }
    return undefined;
  };

  const found = extend();
  if (found) return { id, leaf, path: found };
  // A complete path whose only fault is a validity date is reported as such; it is more useful
  // to an operator than a generic chain failure and is just as final.
  if (firstDateError) throw firstDateError;
  throw new VerificationError('chain_invalid', `no valid path from ${id.toString()} to a ${id.trustDomain.name} authority`);
}
