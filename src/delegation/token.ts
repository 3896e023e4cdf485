// Delegation tokens on the wire: signing (broker) and the JWS-level checks shared by every
// verification path (header, algorithm allow-list, key lookup, signature). Claim rules live in
// claims.ts; this file never looks at the payload beyond decoding it.
import { CompactSign, compactVerify, errors as joseErrors, importJWK, type JWK } from 'jose';
import { DelegationError, invalid } from './errors.js';
import { JWKSet, type KeySource } from './jwks.js';
import type { SigningKey } from './keys.js';
import { parseScope } from './scope.js';
import type { DelegationTokenClaims } from './types.js';

/** The JWT `typ` of delegation tokens (RFC 9068 §2.1). */
export const DELEGATION_TOKEN_TYP = 'at+jwt';
/** Algorithms accepted on delegation tokens: what the broker signs with, nothing else. */
export const DELEGATION_ALGORITHMS: ReadonlySet<string> = new Set(['ES256']);
/** Algorithms accepted on user tokens from identity providers: asymmetric only. */
export const USER_TOKEN_ALGORITHMS: ReadonlySet<string> = new Set(['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'EdDSA']);
/** Upper bound on a token's length (header + payload + signature, base64url). */
export const MAX_TOKEN_LENGTH = 16 * 1024;

const B64URL = /^[A-Za-z0-9_-]*$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Signs a delegation token: header {alg: 'ES256', typ: 'at+jwt', kid}, payload = `claims` as
 * given. Throws an Error (a programming error on the broker side) when the claims are not a
 * well-formed delegation token: `client_id` must be `act.sub`, scope must be valid, exp > iat.
 */
export async function signDelegationToken(claims: DelegationTokenClaims, key: SigningKey): Promise<string> {
  const problem = claimsProblem(claims);
  if (problem) throw new Error(`signDelegationToken: ${problem}`);
  return new CompactSign(encoder.encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: 'ES256', typ: DELEGATION_TOKEN_TYP, kid: key.kid })
    .sign(key.privateKey);
}

function claimsProblem(c: DelegationTokenClaims): string | undefined {
  for (const k of ['iss', 'sub', 'aud', 'client_id', 'jti', 'task'] as const) {
    if (typeof c[k] !== 'string' || c[k].length === 0) return `${k} must be a non-empty string`;
  }
  for (const k of ['iat', 'exp'] as const) if (!Number.isInteger(c[k])) return `${k} must be an integer (seconds)`;
  if (c.nbf !== undefined && !Number.isInteger(c.nbf)) return 'nbf must be an integer (seconds)';
  if (c.exp <= c.iat) return 'exp must be after iat';
  if (typeof c.act !== 'object' || c.act === null || c.act.sub !== c.client_id) return 'client_id must equal act.sub';
  if (typeof c.scope !== 'string') return 'scope must be a string';
  try {
    parseScope(c.scope);
  } catch {
    return 'scope has an invalid token';
  }
  return undefined;
}

export interface JwsRules {
  algorithms: ReadonlySet<string>;
  /** 'at+jwt': the header typ must be at+jwt (or application/at+jwt), any case. 'jwt': absent, JWT, at+jwt or their application/ forms. */
  typ: 'at+jwt' | 'jwt';
  /** Refuse a token without `kid` even when the set has a single key. */
  requireKid: boolean;
}

export interface VerifiedJws {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  /** The key set the signature was checked against. */
  keys: JWKSet;
}

function decodeJsonPart(part: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(Buffer.from(part, 'base64url')));
  } catch {
    throw invalid('malformed');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('malformed');
  return value as Record<string, unknown>;
}

function splitCompact(token: unknown): [string, string, string] {
  if (typeof token !== 'string' || token.length === 0) throw invalid('malformed');
  if (token.length > MAX_TOKEN_LENGTH) throw invalid('too_large');
  const parts = token.split('.');
  if (parts.length !== 3 || !parts.every((p) => B64URL.test(p)) || parts[0] === '' || parts[1] === '') throw invalid('malformed');
  return parts as [string, string, string];
}

/** Splits a compact JWS and decodes its header and (unverified!) payload. */
export function decodeUnverified(token: unknown): { header: Record<string, unknown>; payload: Record<string, unknown> } {
  const parts = splitCompact(token);
  return { header: decodeJsonPart(parts[0]), payload: decodeJsonPart(parts[1]) };
}

/** Imported verification keys, per JWK object (a JWKSet's keys are frozen and stable) and alg. */
type ImportedKey = Exclude<Awaited<ReturnType<typeof importJWK>>, Uint8Array>;
const imported = new WeakMap<JWK, Map<string, Promise<ImportedKey>>>();

function cryptoKeyFor(jwk: JWK, alg: string): Promise<ImportedKey> {
  let byAlg = imported.get(jwk);
  if (byAlg === undefined) imported.set(jwk, (byAlg = new Map()));
  let key = byAlg.get(alg);
  if (key === undefined) {
    key = importJWK({ ...jwk, alg }, alg).then((k) => {
      if (k instanceof Uint8Array || k.type !== 'public') throw new TypeError('not a public key');
      return k;
    });
    // A key that cannot be imported for this alg is not retried on every request, but neither
    // is the failure kept forever (the set may be replaced by then anyway).
    key.catch(() => byAlg!.delete(alg));
    byAlg.set(alg, key);
  }
  return key;
}

export function typAccepted(typ: unknown, rule: JwsRules['typ']): boolean {
  if (typ === undefined) return rule === 'jwt';
  if (typeof typ !== 'string') return false;
  let t = typ.toLowerCase();
  if (t.startsWith('application/')) t = t.slice('application/'.length);
  return rule === 'at+jwt' ? t === 'at+jwt' : t === 'jwt' || t === 'at+jwt';
}

/**
 * JWS checks in a fixed order, each with its own detail: 'malformed' / 'too_large', 'alg'
 * (not in the allow-list: none, HS*, ...), 'typ', 'crit' (we understand no critical header
 * parameters), 'missing_kid', 'unknown_kid' (after one `refresh()` of the source), 'key_alg' (the
 * key cannot verify that algorithm), 'bad_signature'. Returns the decoded payload.
 */
export async function verifyJws(token: string, keys: JWKSet, source: KeySource, rules: JwsRules): Promise<VerifiedJws> {
  const parts = splitCompact(token);
  const header = decodeJsonPart(parts[0]);
  const alg = header.alg;
  if (typeof alg !== 'string' || !rules.algorithms.has(alg)) throw invalid('alg');
  if (!typAccepted(header.typ, rules.typ)) throw invalid('typ');
  if (header.crit !== undefined || header.b64 !== undefined) throw invalid('crit');
  let jwk: JWK | undefined;
  const kid = header.kid;
  if (kid !== undefined && typeof kid !== 'string') throw invalid('malformed');
  if (kid === undefined) {
    if (rules.requireKid || keys.size !== 1) throw invalid('missing_kid');
    jwk = keys.keys[0];
  } else {
    jwk = keys.find(kid);
    if (jwk === undefined && source.refresh) {
      keys = await source.refresh();
      jwk = keys.find(kid);
    }
    if (jwk === undefined) throw invalid('unknown_kid');
  }
  if (jwk === undefined) throw invalid('unknown_kid');
  if (jwk.alg !== undefined && jwk.alg !== alg) throw invalid('key_alg');
  let payloadBytes: Uint8Array;
  try {
    const key = await cryptoKeyFor(jwk, alg);
    payloadBytes = (await compactVerify(token, key, { algorithms: [alg] })).payload;
  } catch (err) {
    if (err instanceof joseErrors.JWSSignatureVerificationFailed) throw invalid('bad_signature');
    if (err instanceof joseErrors.JWSInvalid) throw invalid('malformed');
    if (err instanceof DelegationError) throw err;
    // TypeError / JOSENotSupported: the key does not fit the algorithm (e.g. an RSA key for ES256).
    throw invalid('key_alg');
  }
  let payload: unknown;
  try {
    payload = JSON.parse(decoder.decode(payloadBytes));
  } catch {
    throw invalid('malformed');
  }
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) throw invalid('malformed');
  return { header, payload: payload as Record<string, unknown>, keys };
}
