import type { X509Certificate } from 'node:crypto';
import { SvidError } from './errors.js';
import { x509 } from './peculiar.js';

/** What Node's X509Certificate does not expose, read once per distinct certificate. */
export interface CertInfo {
  readonly fingerprint: string;
  /** undefined when the certificate has no basicConstraints extension. */
  readonly ca: boolean | undefined;
  /** KeyUsageFlags bits; undefined when the extension is absent. */
  readonly keyUsage: number | undefined;
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
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

function parse(cert: X509Certificate, fingerprint: string): CertInfo {
  let pc: InstanceType<typeof x509.X509Certificate>;
  try {
    pc = new x509.X509Certificate(cert.raw);
  } catch (cause) {
    throw new SvidError('malformed', 'certificate extensions could not be parsed', { cause });
  }
  const bcs = pc.getExtensions(x509.BasicConstraintsExtension);
  const kus = pc.getExtensions(x509.KeyUsagesExtension);
  const sans = pc.getExtensions(x509.SubjectAlternativeNameExtension);
  const names = sans.flatMap((san) => san.names.items);
  return {
    fingerprint,
    ca: bcs[0]?.ca,
    keyUsage: kus[0]?.usages,
    uris: names.filter((n) => n.type === 'url').map((n) => n.value),
    dnsNames: names.filter((n) => n.type === 'dns').map((n) => n.value),
    duplicateExtension: bcs.length > 1 || kus.length > 1 || sans.length > 1,
    notBefore: Date.parse(cert.validFrom),
    notAfter: Date.parse(cert.validTo),
  };
}
