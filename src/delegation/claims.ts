// Claim rules of a delegation token (RFC 9068 profile + RFC 8693 `act`), shared by the sidecar
// verifier and the broker's chained-exchange path. Fixed order, one stable detail per rule.
import { actDepth, parseAct } from './act.js';
import { DelegationError, invalid } from './errors.js';
import { parseScope } from './scope.js';
import type { ActClaim, DelegationTokenClaims } from './types.js';

/** Every claim a delegation token must carry, in the order they are checked. */
export const REQUIRED_CLAIMS = ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'act', 'client_id', 'scope', 'task'] as const;

export const isNonEmptyString = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
export const isNumericDate = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** `aud` is the expected audience, or an array that contains it. */
export function audienceMatches(aud: unknown, expected: string): boolean {
  return aud === expected || (Array.isArray(aud) && aud.includes(expected));
}

export function isAudience(aud: unknown): boolean {
  return isNonEmptyString(aud) || (Array.isArray(aud) && aud.length > 0 && aud.every(isNonEmptyString));
}

export interface TimeRules {
  nowMs: number;
  leewaySeconds: number;
}

/**
 * exp / nbf / iat against the clock with leeway: expired (exp + leeway ≤ now) → delegation_expired
 * 'expired'; nbf - leeway > now → delegation_invalid 'not_yet_valid'; iat - leeway > now →
 * delegation_invalid 'iat_future'.
 */
export function checkTimes(p: { exp: number; nbf?: unknown; iat?: unknown }, t: TimeRules): void {
  const now = t.nowMs / 1000;
  if (p.exp + t.leewaySeconds <= now) throw new DelegationError('delegation_expired', 'expired');
  if (isNumericDate(p.nbf) && p.nbf - t.leewaySeconds > now) throw invalid('not_yet_valid');
  if (isNumericDate(p.iat) && p.iat - t.leewaySeconds > now) throw invalid('iat_future');
}

export interface DelegationClaimRules extends TimeRules {
  issuer: string;
  audience: string;
  maxDepth: number;
}

export interface CheckedDelegation {
  /** The claims, with `act` normalised (only sub/act members) and `aud` the matched audience. */
  claims: DelegationTokenClaims;
  scope: string[];
  depth: number;
}

/**
 * Checks, in order: required claims present ('missing_claim:<name>') and typed
 * ('invalid_claim:<name>'), 'iss', times, audience (audience_mismatch 'aud'), `act` shape,
 * `client_id` = outermost act.sub ('client_id'), depth ≤ maxDepth (delegation_too_deep 'depth').
 * The actor check is the caller's (it differs between sidecar and broker).
 */
export function checkDelegationClaims(p: Record<string, unknown>, r: DelegationClaimRules): CheckedDelegation {
  for (const name of REQUIRED_CLAIMS) if (p[name] === undefined) throw invalid(`missing_claim:${name}`);
  for (const name of ['iss', 'sub', 'jti', 'client_id', 'task'] as const) if (!isNonEmptyString(p[name])) throw invalid(`invalid_claim:${name}`);
  if (!isAudience(p.aud)) throw invalid('invalid_claim:aud');
  for (const name of ['exp', 'iat'] as const) if (!isNumericDate(p[name])) throw invalid(`invalid_claim:${name}`);
  if (p.nbf !== undefined && !isNumericDate(p.nbf)) throw invalid('invalid_claim:nbf');
  if (typeof p.scope !== 'string') throw invalid('invalid_claim:scope');
  if (p.iss !== r.issuer) throw invalid('iss');
  checkTimes(p as { exp: number }, r);
  if (!audienceMatches(p.aud, r.audience)) throw new DelegationError('audience_mismatch', 'aud');
  // Parse a little past the cap so an over-deep chain reports 'depth', not a parse error.
  const act: ActClaim = parseAct(p.act, r.maxDepth + 1);
  if (p.client_id !== act.sub) throw invalid('client_id');
  const depth = actDepth(act);
  if (depth > r.maxDepth) throw new DelegationError('delegation_too_deep', 'depth');
  const scope = parseScope(p.scope);
  const claims = { ...p, aud: r.audience, act } as unknown as DelegationTokenClaims;
  return { claims, scope, depth };
}
