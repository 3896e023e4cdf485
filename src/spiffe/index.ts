// Public surface of the pure SPIFFE core. @peculiar/x509 stays an implementation detail.
export { SpiffeError, SpiffeIdError, SvidError, BundleError, VerificationError } from './errors.js';
export type { VerificationCode } from './errors.js';
export { TrustDomain, SpiffeId, MAX_SPIFFE_ID_BYTES, MAX_TRUST_DOMAIN_BYTES } from './id.js';
export { SpiffeIdPattern } from './pattern.js';
export { parseCertificatesPem, certificatesFromDer, certificatesFromDerConcat, validateLeaf, validateSigningCertificate } from './svid.js';
export { X509Bundle, BundleSet } from './bundle.js';
export type { X509BundleOptions } from './bundle.js';
export { verifyX509Svid, MAX_INTERMEDIATES } from './verify.js';
export type { VerifiedSvid } from './verify.js';
