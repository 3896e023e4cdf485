import { X509Certificate } from 'node:crypto';
import { certInfo, KeyUsage, Oid, type CertInfo } from './certinfo.js';
import { SpiffeIdError, SvidError } from './errors.js';
import { SpiffeId } from './id.js';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** Every CERTIFICATE block in order; other block types (keys) are skipped. */
export function parseCertificatesPem(pem: string): X509Certificate[] {
  if (typeof pem !== 'string') throw new SvidError('pem', 'PEM input must be a string');
  const certs: X509Certificate[] = [];
  for (const m of pem.matchAll(PEM_BLOCK)) {
    if (m[1] !== 'CERTIFICATE') continue;
    try {
      certs.push(new X509Certificate(m[0]));
    } catch (cause) {
      throw new SvidError('pem', `PEM certificate #${certs.length + 1} is not a valid certificate`, { cause });
    }
  }
  if (certs.length === 0) throw new SvidError('pem', 'no PEM CERTIFICATE block found');
  return certs;
}

export function certificatesFromDer(ders: Buffer[]): X509Certificate[] {
  return ders.map((der, i) => {
    try {
      return new X509Certificate(der);
    } catch (cause) {
      throw new SvidError('der', `DER certificate #${i + 1} is not a valid certificate`, { cause });
    }
  });
}

/**
 * Certificates concatenated in ASN.1 DER, as the Workload API sends chains and bundles.
 * OpenSSL decodes the first certificate of the buffer and its encoding tells where the next one
 * starts, so no ASN.1 is parsed here; bytes that are not a whole certificate are refused.
 */
export function certificatesFromDerConcat(der: Buffer): X509Certificate[] {
  const certs: X509Certificate[] = [];
  let rest = der;
  while (rest.length > 0) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(rest);
    } catch (cause) {
      throw new SvidError('der', `DER certificate #${certs.length + 1} is not a valid certificate`, { cause });
    }
    const length = cert.raw.length;
    if (length === 0 || !rest.subarray(0, length).equals(cert.raw)) {
      throw new SvidError('der', `DER certificate #${certs.length + 1} is not a valid certificate`);
    }
    certs.push(cert);
    rest = rest.subarray(length);
  }
  if (certs.length === 0) throw new SvidError('der', 'no DER certificate found');
  return certs;
}

function info(cert: X509Certificate): CertInfo {
  const i = certInfo(cert);
  if (i.duplicateExtension) throw new SvidError('duplicate_extension', 'certificate repeats an extension');
  // RFC 5280 §4.2: a certificate with a critical extension the validator does not process MUST
  // be rejected.
  if (i.unknownCriticalExtensions.length > 0) {
    throw new SvidError(
      'unknown_critical_extension',
      `certificate has unrecognized critical extension(s) ${i.unknownCriticalExtensions.join(', ')}`,
    );
  }
  return i;
}

// X509-SVID §4.3: keyUsage MUST be present and critical on every SVID, leaf or signing.
function requireCriticalKeyUsage(i: CertInfo, what: string): number {
  if (i.keyUsage === undefined) throw new SvidError('missing_key_usage', `${what} has no keyUsage extension`);
  if (i.keyUsageCritical !== true) throw new SvidError('key_usage_not_critical', `${what} keyUsage is not marked critical`);
  return i.keyUsage;
}

function parseUriSan(uri: string): SpiffeId {
  try {
    return SpiffeId.parse(uri);
  } catch (cause) {
    const why = cause instanceof SpiffeIdError ? ` (${cause.problem})` : '';
    throw new SvidError('not_spiffe_id', `URI SAN is not a valid SPIFFE ID${why}`, { cause });
  }
}

/**
 * X509-SVID.md §4/§5 leaf rules. Returns the SVID's SPIFFE ID.
 * A missing basicConstraints extension is tolerated as cA=false: it cannot be used to sign
 * certificates by RFC 5280 path validation either, and some issuers omit it on leaves.
 */
export function validateLeaf(cert: X509Certificate): SpiffeId {
  const i = info(cert);
  if (i.uris.length === 0) throw new SvidError('no_uri_san', 'leaf has no URI SAN');
  if (i.uris.length > 1) throw new SvidError('multiple_uri_sans', 'leaf must have exactly one URI SAN');
  const id = parseUriSan(i.uris[0]!);
  if (id.isRoot()) throw new SvidError('root_path', 'leaf SPIFFE ID must have a path');
  if (i.ca === true) throw new SvidError('ca_leaf', 'leaf must not be a CA (basicConstraints cA=true)');
  const ku = requireCriticalKeyUsage(i, 'leaf');
  if (!(ku & KeyUsage.digitalSignature)) {
    throw new SvidError('no_digital_signature', 'leaf keyUsage lacks digitalSignature');
  }
  if (ku & KeyUsage.keyCertSign) throw new SvidError('key_cert_sign', 'leaf keyUsage has keyCertSign');
  if (ku & KeyUsage.cRLSign) throw new SvidError('crl_sign', 'leaf keyUsage has cRLSign');
  // X509-SVID §4.4: EKU is optional (SHOULD), but when present it MUST include both purposes.
  // anyExtendedKeyUsage does not count: the spec names the two purposes explicitly.
  if (i.extKeyUsage !== undefined && !(i.extKeyUsage.includes(Oid.serverAuth) && i.extKeyUsage.includes(Oid.clientAuth))) {
    throw new SvidError('eku_missing_server_or_client_auth', 'leaf extKeyUsage must include both serverAuth and clientAuth');
  }
  return id;
}

/**
 * The SPIFFE ID a signing certificate carries, if any. Throws SvidError when the certificate
 * fails the signing-certificate rules (see validateSigningCertificate).
 */
export function signingCertificateId(cert: X509Certificate): SpiffeId | undefined {
  const i = info(cert);
  if (i.ca !== true) throw new SvidError('not_ca', 'signing certificate must have basicConstraints cA=true');
  const ku = requireCriticalKeyUsage(i, 'signing certificate');
  if (!(ku & KeyUsage.keyCertSign)) {
    throw new SvidError('no_key_cert_sign', 'signing certificate keyUsage lacks keyCertSign');
  }
  if (i.nameConstraints?.unprocessable) {
    throw new SvidError('unprocessable_name_constraints', i.nameConstraints.unprocessable);
  }
  // A signing certificate MAY carry one SPIFFE ID; anything else in a URI SAN would be an
  // identity claim we cannot interpret.
  if (i.uris.length > 1) throw new SvidError('multiple_uri_sans', 'signing certificate has several URI SANs');
  if (i.uris.length === 0) return undefined;
  const id = parseUriSan(i.uris[0]!);
  // X509-SVID §3.2: if present, it MUST NOT have a path: it is the trust-domain ID.
  if (!id.isRoot()) throw new SvidError('signing_id_has_path', 'signing certificate SPIFFE ID must not have a path');
  return id;
}

/**
 * X509-SVID.md §3.2/§4.1/§4.3 rules for CA and intermediate certificates, plus what we need to
 * honour RFC 5280 for them (no unrecognized critical extension, a nameConstraints extension we
 * can enforce in full).
 */
export function validateSigningCertificate(cert: X509Certificate): void {
  signingCertificateId(cert);
}
