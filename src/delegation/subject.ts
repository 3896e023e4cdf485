// Broker-side verification of an RFC 8693 subject token: a user access token from a configured
// identity provider, or a delegation token this broker issued (a chained exchange).
import { audienceMatches, checkDelegationClaims, checkTimes, isAudience, isNonEmptyString, isNumericDate } from './claims.js';
import { DelegationError, invalid } from './errors.js';
import type { KeySource } from './jwks.js';
import { parseScope } from './scope.js';
import { DELEGATION_ALGORITHMS, USER_TOKEN_ALGORITHMS, decodeUnverified, verifyJws } from './token.js';
import { ACT_PARSE_LIMIT } from './act.js';
import { DEFAULT_LEEWAY_SECONDS, type ActClaim } from './types.js';

export interface UserTokenIssuer {
  /** The identity provider's `iss`. */
  issuer: string;
  /** The audience its tokens must carry for this broker. */
  audience: string;
  keys: KeySource;
  /** Accepted algorithms (default: the asymmetric JWS algorithms; never `none` or HS*). */
  algorithms?: readonly string[];
}

export interface VerifiedSubject {
  kind: 'user' | 'delegation';
  /** The human. */
  sub: string;
  scope: string[];
  /** Seconds since the epoch. */
  exp: number;
  /** Only for kind 'delegation': the chain so far. */
  act?: ActClaim;
  /** Only for kind 'delegation': the task of the chain. */
  task?: string;
  /** RFC 8693 §4.4 `may_act`, normalised to a list (an object or an array of objects is accepted). */
  mayAct?: { sub: string }[];
  /** All claims of the token, as signed. */
  claims: Record<string, unknown>;
}

export interface VerifySubjectOptions {
  users: UserTokenIssuer[];
  broker: { issuer: string; keys: KeySource };
  /** The requesting actor's SPIFFE ID: a chained subject token must be addressed to it. */
  audienceForChained: string;
  nowMs?: number;
  leewaySeconds?: number;
}

/** `may_act`: {sub} or [{sub}, ...] → list; absent → undefined. */
export function parseMayAct(value: unknown): { sub: string }[] | undefined {
  if (value === undefined) return undefined;
  const items = Array.isArray(value) ? value : [value];
  if (items.length === 0 || items.length > 64) throw invalid('invalid_claim:may_act');
  return items.map((it: unknown) => {
    if (typeof it !== 'object' || it === null || !isNonEmptyString((it as { sub?: unknown }).sub)) throw invalid('invalid_claim:may_act');
    return { sub: (it as { sub: string }).sub };
  });
}

/**
 * Verifies a subject token. The unverified `iss` picks the rules: the broker's own issuer → a
 * delegation token (ES256, typ at+jwt, all delegation claims, `aud` must be
 * `audienceForChained`); a configured identity provider → a user token (its keys and algorithms,
 * typ absent/JWT/at+jwt, `iss`, `aud`, `sub`, `exp` required, `act` refused); anything else →
 * delegation_invalid 'unknown_issuer'. Errors are DelegationErrors as for DelegationVerifier.
 */
export async function verifySubjectToken(token: string, opts: VerifySubjectOptions): Promise<VerifiedSubject> {
  const nowMs = opts.nowMs ?? Date.now();
  const leewaySeconds = opts.leewaySeconds ?? DEFAULT_LEEWAY_SECONDS;
  const { payload: unverified } = decodeUnverified(token);
  const iss = unverified.iss;
  if (iss === undefined) throw invalid('missing_claim:iss');
  if (!isNonEmptyString(iss)) throw invalid('invalid_claim:iss');

  if (iss === opts.broker.issuer) {
    const got = opts.broker.keys.get();
    const keys = got instanceof Promise ? await got : got;
    const { payload } = await verifyJws(token, keys, opts.broker.keys, { algorithms: DELEGATION_ALGORITHMS, typ: 'at+jwt', requireKid: true });
    // The broker enforces its own depth cap when it nests; here only the parse bound applies.
    const { claims, scope } = checkDelegationClaims(payload, {
      issuer: opts.broker.issuer,
      audience: opts.audienceForChained,
      nowMs,
      leewaySeconds,
      maxDepth: ACT_PARSE_LIMIT,
    });
    return { kind: 'delegation', sub: claims.sub, scope, exp: claims.exp, act: claims.act, task: claims.task, claims: payload };
  }

  const idp = opts.users.find((u) => u.issuer === iss);
  if (idp === undefined) throw invalid('unknown_issuer');
  const got = idp.keys.get();
  const keys = got instanceof Promise ? await got : got;
  const algorithms = idp.algorithms ? new Set(idp.algorithms.filter((a) => USER_TOKEN_ALGORITHMS.has(a))) : USER_TOKEN_ALGORITHMS;
  const { payload: p } = await verifyJws(token, keys, idp.keys, { algorithms, typ: 'jwt', requireKid: false });
  for (const name of ['iss', 'sub', 'aud', 'exp'] as const) if (p[name] === undefined) throw invalid(`missing_claim:${name}`);
  if (!isNonEmptyString(p.sub)) throw invalid('invalid_claim:sub');
  if (!isAudience(p.aud)) throw invalid('invalid_claim:aud');
  if (!isNumericDate(p.exp)) throw invalid('invalid_claim:exp');
  for (const name of ['nbf', 'iat'] as const) if (p[name] !== undefined && !isNumericDate(p[name])) throw invalid(`invalid_claim:${name}`);
  if (p.iss !== idp.issuer) throw invalid('iss');
  checkTimes(p as { exp: number }, { nowMs, leewaySeconds });
  if (!audienceMatches(p.aud, idp.audience)) throw new DelegationError('audience_mismatch', 'aud');
  // A user token names a user; an actor chain is only ever one this broker built and signed.
  if (p.act !== undefined) throw invalid('act_in_user_token');
  let scope: string[];
  if (p.scope !== undefined) scope = parseScope(p.scope);
  else if (p.scp !== undefined) scope = parseScope(p.scp);
  else scope = [];
  const mayAct = parseMayAct(p.may_act);
  const out: VerifiedSubject = { kind: 'user', sub: p.sub, scope, exp: p.exp, claims: p };
  if (mayAct) out.mayAct = mayAct;
  return out;
}
