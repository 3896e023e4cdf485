import { constants, type KeyObject, type SignKeyObjectInput, type VerifyKeyObjectInput } from 'node:crypto';

/** The JWS algorithms Sigil signs and accepts. Anything else is `alg_not_allowed`. */
export const ENVELOPE_ALGORITHMS = ['ES256', 'ES384', 'RS256', 'PS256'] as const;
export type EnvelopeAlgorithm = (typeof ENVELOPE_ALGORITHMS)[number];

export const MIN_RSA_BITS = 2048;

/** The kinds of SVID key an envelope can be signed with. */
export type KeyKind = 'P-256' | 'P-384' | 'RSA';

export function isEnvelopeAlgorithm(alg: unknown): alg is EnvelopeAlgorithm {
  return alg === 'ES256' || alg === 'ES384' || alg === 'RS256' || alg === 'PS256';
}

/** The key's kind, or undefined when envelopes cannot use it (other curves, Ed25519, RSA-PSS-only keys, RSA < 2048 bits). */
export function keyKind(key: KeyObject): KeyKind | undefined {
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec') {
    if (details?.namedCurve === 'prime256v1') return 'P-256';
    if (details?.namedCurve === 'secp384r1') return 'P-384';
    return undefined;
  }
  if (key.asymmetricKeyType === 'rsa' && (details?.modulusLength ?? 0) >= MIN_RSA_BITS) return 'RSA';
  return undefined;
}

/** Algorithms that fit a key kind; the first is what a signer uses by default. */
export function algorithmsFor(kind: KeyKind): readonly EnvelopeAlgorithm[] {
  switch (kind) {
    case 'P-256':
      return ['ES256'];
    case 'P-384':
      return ['ES384'];
    case 'RSA':
      return ['PS256', 'RS256'];
  }
}

/** How node:crypto performs one algorithm with one key; built once per key, reused per message. */
export interface CryptoParams<K> {
  alg: EnvelopeAlgorithm;
  /** Digest name for crypto.sign/crypto.verify. */
  hash: 'sha256' | 'sha384';
  key: K;
  /** Exact signature length for ECDSA (R || S, RFC 7518 §3.4); undefined for RSA. */
  signatureLength: number | undefined;
}

function params<K extends SignKeyObjectInput | VerifyKeyObjectInput>(alg: EnvelopeAlgorithm, key: KeyObject): CryptoParams<K> {
  switch (alg) {
    case 'ES256':
      return { alg, hash: 'sha256', key: { key, dsaEncoding: 'ieee-p1363' } as K, signatureLength: 64 };
    case 'ES384':
      return { alg, hash: 'sha384', key: { key, dsaEncoding: 'ieee-p1363' } as K, signatureLength: 96 };
    case 'RS256':
      return { alg, hash: 'sha256', key: { key, padding: constants.RSA_PKCS1_PADDING } as K, signatureLength: undefined };
    case 'PS256':
      // RFC 7518 §3.5: MGF1 with SHA-256 and a salt as long as the hash output (32 bytes).
      return {
        alg,
        hash: 'sha256',
        key: { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 } as K,
        signatureLength: undefined,
      };
  }
}

export function signParams(alg: EnvelopeAlgorithm, privateKey: KeyObject): CryptoParams<SignKeyObjectInput> {
  return params<SignKeyObjectInput>(alg, privateKey);
}

export function verifyParams(alg: EnvelopeAlgorithm, publicKey: KeyObject): CryptoParams<VerifyKeyObjectInput> {
  return params<VerifyKeyObjectInput>(alg, publicKey);
}
