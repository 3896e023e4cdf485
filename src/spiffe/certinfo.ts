import type { X509Certificate } from 'node:crypto';
import { SvidError } from './errors.js';
import { AsnConvert, asn1X509, x509 } from './peculiar.js';

/** URI and DNS subtrees of one nameConstraints field, lower-cased as written (leading '.' kept). */
export interface NameSubtrees {
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
}

export interface NameConstraintsInfo {
  readonly critical: boolean;
  readonly permitted: NameSubtrees;
  readonly excluded: NameSubtrees;
  /**
   * Why this extension cannot be enforced faithfully, or undefined. Set when it does not decode,
   * is empty, has a malformed URI/DNS subtree or one with minimum/maximum (RFC 5280 forbids
   * both), or — only when the extension is critical — has subtrees of a name form we do not
   * process (directoryName, iPAddress, rfc822Name, otherName, ...). A certificate with this set
   * is never used as an issuer: we fail closed rather than enforce half a constraint. In a
   * non-critical extension such subtrees are ignored; name forms are constrained independently,
   * so ignoring them never loosens a URI or DNS constraint.
   */
  readonly unprocessable: string | undefined;
}

/** What Node's X509Certificate does not expose, read once per distinct certificate. */
export interface CertInfo {
  readonly fingerprint: string;
  /** undefined when the certificate has no basicConstraints extension. */
  readonly ca: boolean | undefined;
  /** basicConstraints pathLenConstraint; undefined when absent (no limit). */
  readonly pathLength: number | undefined;
  /** KeyUsageFlags bits; undefined when the extension is absent. */
  readonly keyUsage: number | undefined;
  /** Criticality of keyUsage; undefined when the extension is absent. */
  readonly keyUsageCritical: boolean | undefined;
  /** extKeyUsage purpose OIDs; undefined when the extension is absent. */
  readonly extKeyUsage: readonly string[] | undefined;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  /** undefined when the certificate has no nameConstraints extension. */
  readonly nameConstraints: NameConstraintsInfo | undefined;
  /** OIDs of critical extensions we do not process (RFC 5280 §4.2: such a certificate is rejected). */
  readonly unknownCriticalExtensions: readonly string[];
  /** Subject and issuer names are the same (RFC 5280 §6.1: not counted against pathLenConstraint). */
  readonly selfIssued: boolean;
  /** RFC 5280 §4.2 forbids repeating an extension; such a certificate is never acceptable. */
  readonly duplicateExtension: boolean;
  readonly notBefore: number;
  readonly notAfter: number;
}

export const KeyUsage = {
  digitalSignature: x509.KeyUsageFlags.digitalSignature,
  keyCertSign: x509.KeyUsageFlags.keyCertSign,
  cRLSign: x509.KeyUsageFlags.cRLSign,
} as const;

export const Oid = {
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  nameConstraints: '2.5.29.30',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
  certificatePolicies: '2.5.29.32',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

// Extensions whose meaning we either enforce or may safely ignore even when critical.
// certificatePolicies: with no initial policy set (any-policy), RFC 5280 §6.1 policy processing
// cannot reject a path because of it.
const RECOGNIZED = new Set<string>([
  Oid.basicConstraints,
  Oid.keyUsage,
  Oid.extKeyUsage,
  Oid.subjectAltName,
  Oid.nameConstraints,
  Oid.subjectKeyIdentifier,
  Oid.authorityKeyIdentifier,
  Oid.certificatePolicies,
]);

// Everything in CertInfo is a pure function of the DER, so caching by SHA-256 fingerprint is
// safe; it spares the ASN.1 parse for the CA and intermediates seen on every handshake. The
// WeakMap short-circuits even the fingerprint for long-lived objects such as bundle authorities.
const MAX_ENTRIES = 1024;
const byFingerprint = new Map<string, CertInfo>();
const byObject = new WeakMap<X509Certificate, CertInfo>();

export function certInfo(cert: X509Certificate): CertInfo {
  const known = byObject.get(cert);
  if (known) return known;
  const fingerprint = cert.fingerprint256;
  let info = byFingerprint.get(fingerprint);
  if (info) {
    // Re-insert to keep the Map in least-recently-used order.
    byFingerprint.delete(fingerprint);
  } else {
    info = parse(cert, fingerprint);
    if (byFingerprint.size >= MAX_ENTRIES) {
      const oldest = byFingerprint.keys().next().value;
      if (oldest !== undefined) byFingerprint.delete(oldest);
    }
  }
  byFingerprint.set(fingerprint, info);
  byObject.set(cert, info);
  return info;
}

// A host (URI) or domain (DNS) constraint: dot-separated labels, optionally one leading '.'.
const HOST_CONSTRAINT = /^\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;

type Subtrees = InstanceType<typeof asn1X509.GeneralSubtrees>;

function readSubtrees(
  subtrees: Subtrees | undefined,
  field: string,
  unsupportedForms: Set<string>,
): { uris: string[]; dnsNames: string[]; problem?: string } {
  const uris: string[] = [];
  const dnsNames: string[] = [];
  for (const subtree of subtrees ?? []) {
    const base = subtree.base;
    const uri = base.uniformResourceIdentifier;
    const dns = base.dNSName;
    if (uri === undefined && dns === undefined) {
      const form = Object.keys(base).find((k) => (base as unknown as Record<string, unknown>)[k] !== undefined);
      unsupportedForms.add(form ?? 'unknown');
      continue;
    }
    if (subtree.minimum !== 0 || subtree.maximum !== undefined) {
      return { uris, dnsNames, problem: `${field} subtree sets minimum/maximum` };
    }
    if (uri !== undefined) {
      const v = uri.toLowerCase();
      if (!HOST_CONSTRAINT.test(v)) return { uris, dnsNames, problem: `${field} URI subtree is not a host or domain` };
      uris.push(v);
    } else if (dns !== undefined) {
      const v = dns.toLowerCase();
      // An empty DNS constraint is every name (zero labels prepended to nothing).
      if (v !== '' && !HOST_CONSTRAINT.test(v)) return { uris, dnsNames, problem: `${field} DNS subtree is malformed` };
      dnsNames.push(v);
    }
  }
  return { uris, dnsNames };
}

function readNameConstraints(ext: InstanceType<typeof x509.Extension>): NameConstraintsInfo {
  const none: NameSubtrees = { uris: [], dnsNames: [] };
  const fail = (unprocessable: string): NameConstraintsInfo => ({
    critical: ext.critical,
    permitted: none,
    excluded: none,
    unprocessable,
  });
  let nc: InstanceType<typeof asn1X509.NameConstraints>;
  try {
    nc = AsnConvert.parse(ext.value, asn1X509.NameConstraints);
  } catch {
    return fail('nameConstraints does not decode');
  }
  if (!nc.permittedSubtrees?.length && !nc.excludedSubtrees?.length) return fail('nameConstraints is empty');
  const unsupportedForms = new Set<string>();
  const permitted = readSubtrees(nc.permittedSubtrees, 'permittedSubtrees', unsupportedForms);
  if (permitted.problem) return fail(permitted.problem);
  const excluded = readSubtrees(nc.excludedSubtrees, 'excludedSubtrees', unsupportedForms);
  if (excluded.problem) return fail(excluded.problem);
  const unprocessable =
    ext.critical && unsupportedForms.size > 0
      ? `critical nameConstraints has name forms not processed: ${[...unsupportedForms].sort().join(', ')}`
      : undefined;
  return {
    critical: ext.critical,
    permitted: { uris: permitted.uris, dnsNames: permitted.dnsNames },
    excluded: { uris: excluded.uris, dnsNames: excluded.dnsNames },
    unprocessable,
  };
}

function parse(cert: X509Certificate, fingerprint: string): CertInfo {
  let pc: InstanceType<typeof x509.X509Certificate>;
  try {
    pc = new x509.X509Certificate(cert.raw);
  } catch (cause) {
    throw new SvidError('malformed', 'certificate extensions could not be parsed', { cause });
  }
  const exts = pc.extensions;
  const bc = pc.getExtension(x509.BasicConstraintsExtension);
  const ku = pc.getExtension(x509.KeyUsagesExtension);
  const eku = pc.getExtension(x509.ExtendedKeyUsageExtension);
  const sans = pc.getExtensions(x509.SubjectAlternativeNameExtension);
  const names = sans.flatMap((san) => san.names.items);
  const nc = exts.find((e) => e.type === Oid.nameConstraints);
  const oids = exts.map((e) => e.type);
  return {
    fingerprint,
    ca: bc?.ca,
    pathLength: bc?.pathLength,
    keyUsage: ku?.usages,
    keyUsageCritical: ku?.critical,
    extKeyUsage: eku?.usages.map(String),
    uris: names.filter((n) => n.type === 'url').map((n) => n.value),
    dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value),
    nameConstraints: nc ? readNameConstraints(nc) : undefined,
    unknownCriticalExtensions: exts.filter((e) => e.critical && !RECOGNIZED.has(e.type)).map((e) => e.type),
    selfIssued: cert.subject === cert.issuer,
    duplicateExtension: new Set(oids).size !== oids.length,
    notBefore: Date.parse(cert.validFrom),
    notAfter: Date.parse(cert.validTo),
  };
}
