// Shared fixtures for the envelope tests: SVIDs from test certificates, and a JWS builder that
// can produce envelopes the real signer never would (other algorithms, extra header members,
// raw JSON text with duplicate names, arbitrary certificates).
import { constants, createHmac, randomBytes, sign as cryptoSign, type KeyObject } from 'node:crypto';
import type { X509Svid } from '../../src/identity/index.js';
import { BundleSet, SpiffeId, X509Bundle, type TrustDomain } from '../../src/spiffe/index.js';
import { ENVELOPE_TYP, EnvelopeError, type EnvelopeVerifier, type VerifyContext } from '../../src/bus/envelope/index.js';
import type { Issued } from '../fixtures/certs.js';

/** An X509Svid for `leaf` (whose first URI SAN is its ID), with intermediates after it. */
export function svidOf(leaf: Issued, ...intermediates: Issued[]): X509Svid {
  const uri = leaf.cert.subjectAltName?.match(/URI:([^,\s]+)/)?.[1];
  if (!uri) throw new Error('leaf has no URI SAN');
  const certificates = [leaf.cert, ...intermediates.map((i) => i.cert)];
  return {
    id: SpiffeId.parse(uri),
    certificates,
    certChainPem: certificates.map((c) => c.toString()).join(''),
    privateKeyPem: leaf.keyPem,
    notBefore: new Date(leaf.cert.validFrom),
    notAfter: new Date(leaf.cert.validTo),
    serial: leaf.cert.serialNumber,
  };
}

export function bundlesOf(...entries: Array<[string | TrustDomain, ...Issued[]]>): BundleSet {
  return new BundleSet(entries.map(([td, ...cas]) => new X509Bundle(td, cas.map((c) => c.cert))));
}

export const b64url = (s: string | Buffer): string => (typeof s === 'string' ? Buffer.from(s, 'utf8') : s).toString('base64url');

export type CraftAlg = 'ES256' | 'ES384' | 'ES512' | 'RS256' | 'PS256' | 'HS256' | 'none';

export interface CraftOptions {
  /** The header object, or its exact JSON text. Default {alg, typ, x5c: [leaf, ...chain]}. */
  header?: Record<string, unknown> | string;
  /** The claims object, or its exact JSON text. */
  claims: Record<string, unknown> | string;
  /** How to sign (independent of header.alg, to build mismatches). */
  alg: CraftAlg;
  /** Private key for ES/RS/PS; for HS256 the HMAC secret. */
  key?: KeyObject | Buffer;
}

/** A compact JWS built by hand with node:crypto (not with Sigil's signer). */
export function craft(o: CraftOptions): string {
  const headerText = typeof o.header === 'string' ? o.header : JSON.stringify(o.header);
  const claimsText = typeof o.claims === 'string' ? o.claims : JSON.stringify(o.claims);
  const input = b64url(headerText) + '.' + b64url(claimsText);
  const data = Buffer.from(input, 'latin1');
  let sig: Buffer;
  switch (o.alg) {
    case 'none':
      sig = Buffer.alloc(0);
      break;
    case 'HS256':
      sig = createHmac('sha256', o.key as Buffer).update(data).digest();
      break;
    case 'ES256':
      sig = cryptoSign('sha256', data, { key: o.key as KeyObject, dsaEncoding: 'ieee-p1363' });
      break;
    case 'ES384':
      sig = cryptoSign('sha384', data, { key: o.key as KeyObject, dsaEncoding: 'ieee-p1363' });
      break;
    case 'ES512':
      sig = cryptoSign('sha512', data, { key: o.key as KeyObject, dsaEncoding: 'ieee-p1363' });
      break;
    case 'RS256':
      sig = cryptoSign('sha256', data, { key: o.key as KeyObject, padding: constants.RSA_PKCS1_PADDING });
      break;
    case 'PS256':
      sig = cryptoSign('sha256', data, { key: o.key as KeyObject, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 });
      break;
  }
  return input + '.' + sig.toString('base64url');
}

export function x5cOf(...certs: Issued[]): string[] {
  return certs.map((c) => c.der.toString('base64'));
}

export function headerFor(alg: string, ...certs: Issued[]): Record<string, unknown> {
  return { alg, typ: ENVELOPE_TYP, x5c: x5cOf(...certs) };
}

/** Claims the way Sigil's signer writes them, with overrides (undefined deletes). */
export function claimsFor(iss: string, nowMs: number, over: Record<string, unknown> = {}): Record<string, unknown> {
  const iat = Math.floor(nowMs / 1000);
  const c: Record<string, unknown> = {
    iss,
    sub: 'orders.created',
    iat,
    exp: iat + 60,
    jti: randomBytes(16).toString('base64url'),
    data: { n: 1 },
  };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete c[k];
    else c[k] = v;
  }
  return c;
}

export type Outcome = 'ok' | `${string}/${string}`;

/** 'ok', or "code/detail" of the EnvelopeError (anything else is re-thrown: a test failure). */
export function outcome(verifier: EnvelopeVerifier, jws: string, ctx: VerifyContext): Outcome {
  try {
    verifier.verify(jws, ctx);
    return 'ok';
  } catch (e) {
    if (e instanceof EnvelopeError) return `${e.code}/${e.detail}`;
    throw e;
  }
}

/** Replaces one character of a segment (0 header, 1 payload, 2 signature) at `at` (negative: from the end). */
export function flipChar(jws: string, segment: 0 | 1 | 2, at: number): string {
  const parts = jws.split('.');
  const s = parts[segment]!;
  const i = at < 0 ? s.length + at : at;
  const c = s[i]!;
  const repl = c === 'A' ? 'B' : 'A';
  parts[segment] = s.slice(0, i) + repl + s.slice(i + 1);
  return parts.join('.');
}
