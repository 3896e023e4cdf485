import type { X509Certificate } from 'node:crypto';
import type { BundleSet } from './bundle.js';
import { certInfo, type CertInfo, type NameConstraintsInfo } from './certinfo.js';
import { SvidError, VerificationError } from './errors.js';
import { SpiffeId } from './id.js';
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

// ---- RFC 5280 §6.1 constraints that depend on the path, checked as each issuer is added ----

/** Whether an authority from the bundle can anchor a path at all (RFC 5937-style: its
 * constraints are enforced like an intermediate's, so it must be one we can fully process). */
function anchorUsable(anchor: X509Certificate): boolean {
  try {
    const i = certInfo(anchor);
    return !i.duplicateExtension && i.unknownCriticalExtensions.length === 0 && !i.nameConstraints?.unprocessable;
  } catch {
    return false;
  }
}

// RFC 5280 §4.2.1.10, URI form: the constraint is a host ("example.org": that host exactly) or a
// domain (".example.org": any host below it, not example.org itself). The host of a SPIFFE ID is
// its trust domain. A URI whose host is an IP address MUST be rejected when URI constraints apply.
function uriHost(uri: string): string | undefined {
  let host: string;
  try {
    host = SpiffeId.parse(uri).trustDomain.name;
  } catch {
    return undefined;
  }
  return /^[0-9.]+$/.test(host) ? undefined : host;
}

function uriMatches(host: string, constraint: string): boolean {
  return constraint.startsWith('.') ? host.length > constraint.length && host.endsWith(constraint) : host === constraint;
}

// RFC 5280 §4.2.1.10, DNS form: any name formed by adding zero or more labels on the left. A
// leading '.' (not in the RFC for DNS, common in practice, and what Go and OpenSSL accept)
// requires at least one added label.
const DNS_NAME = /^(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;

function dnsMatches(name: string, constraint: string): boolean {
  if (constraint === '') return true;
  if (constraint.startsWith('.')) return name.length > constraint.length && name.endsWith(constraint);
  return name === constraint || name.endsWith('.' + constraint);
}

/** A wildcard SAN is excluded if any name it could stand for is (fail closed). */
function dnsExcluded(name: string, constraint: string): boolean {
  if (dnsMatches(name, constraint)) return true;
  if (!name.startsWith('*.')) return false;
  const base = name.slice(2);
  const c = constraint.startsWith('.') ? constraint.slice(1) : constraint;
  return c === base || (c.endsWith('.' + base) && !c.slice(0, -(base.length + 1)).includes('.')) || dnsMatches(base, c);
}

function nameViolation(nc: NameConstraintsInfo, subject: CertInfo): string | undefined {
  const { permitted, excluded } = nc;
  if (permitted.uris.length > 0 || excluded.uris.length > 0) {
    for (const uri of subject.uris) {
      const host = uriHost(uri);
      if (host === undefined) return `URI SAN ${uri} has no host name to match URI name constraints`;
      if (permitted.uris.length > 0 && !permitted.uris.some((c) => uriMatches(host, c))) {
        return `URI SAN ${uri} is outside the permitted URI subtrees`;
      }
      if (excluded.uris.some((c) => uriMatches(host, c))) return `URI SAN ${uri} is in an excluded URI subtree`;
    }
  }
  if (permitted.dnsNames.length > 0 || excluded.dnsNames.length > 0) {
    for (const raw of subject.dnsNames) {
      const name = raw.toLowerCase();
      if (!DNS_NAME.test(name)) return `DNS SAN ${raw} cannot be matched against DNS name constraints`;
      if (permitted.dnsNames.length > 0 && !permitted.dnsNames.some((c) => dnsMatches(name, c))) {
        return `DNS SAN ${raw} is outside the permitted DNS subtrees`;
      }
      if (excluded.dnsNames.some((c) => dnsExcluded(name, c))) return `DNS SAN ${raw} is in an excluded DNS subtree`;
    }
  }
  return undefined;
}

/**
 * Why `issuer` may not be appended above `path` (leaf first), or undefined. Covers what the
 * issuer imposes on the certificates below it:
 *  - basicConstraints pathLenConstraint: at most that many non-self-issued intermediates
 *    between it and the leaf (RFC 5280 §4.2.1.9, §6.1.4 (l)/(m));
 *  - nameConstraints on every certificate below it, except self-issued intermediates
 *    (RFC 5280 §6.1.3 (b)).
 */
function issuerConstraintProblem(issuer: X509Certificate, path: readonly X509Certificate[]): string | undefined {
  const i = certInfo(issuer);
  if (i.pathLength !== undefined) {
    let below = 0;
    for (let k = 1; k < path.length; k++) if (!certInfo(path[k]!).selfIssued) below++;
    if (below > i.pathLength) {
      return `pathLenConstraint ${i.pathLength} of ${issuer.subject.replace(/\n/g, ', ')} exceeded (${below} intermediates below it)`;
    }
  }
  const nc = i.nameConstraints;
  if (nc) {
    for (let k = 0; k < path.length; k++) {
      const sub = certInfo(path[k]!);
      if (k > 0 && sub.selfIssued) continue;
      const v = nameViolation(nc, sub);
      if (v) return `name constraints of ${issuer.subject.replace(/\n/g, ', ')}: ${v}`;
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
  const anchors = bundle.authorities.filter(anchorUsable);

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
  let firstConstraintProblem: string | undefined;
  let steps = 0;
  const path: X509Certificate[] = [leaf];
  const onPath = new Set<string>([certInfo(leaf).fingerprint]);

  const extend = (): X509Certificate[] | undefined => {
    if (++steps > MAX_SEARCH_STEPS) return undefined;
    const current = path[path.length - 1]!;
    for (const anchor of anchors) {
      // An anchor never certifies itself onto the path (e.g. a leaf copied into the bundle).
      if (onPath.has(certInfo(anchor).fingerprint) || !signedBy(current, anchor)) continue;
      const constraint = issuerConstraintProblem(anchor, path);
      if (constraint) {
        firstConstraintProblem ??= constraint;
        continue;
      }
      const full = [...path, anchor];
      const problem = dateProblem(full, t);
      if (!problem) return full;
      firstDateError ??= problem;
    }
    if (path.length - 1 >= MAX_INTERMEDIATES) return undefined;
    for (const next of intermediates) {
      const fp = certInfo(next).fingerprint;
      if (onPath.has(fp) || !signedBy(current, next)) continue;
      const constraint = issuerConstraintProblem(next, path);
      if (constraint) {
        firstConstraintProblem ??= constraint;
        continue;
      }
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
  const why = firstConstraintProblem ? ` (${firstConstraintProblem})` : '';
  throw new VerificationError('chain_invalid', `no valid path from ${id.toString()} to a ${id.trustDomain.name} authority${why}`);
}
