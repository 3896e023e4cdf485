// Sidecar-side verification of a delegation token presented on a request or a bus message.
// JWS rules (token.ts), then claim rules (claims.ts), then: the outermost actor must be the
// agent on the wire (the mTLS peer, or the bus message's signer), so a stolen token is useless.
// Successful results are cached per (key-set version, audience, actor, token) until `exp`.
import type { DelegationContext } from '../authz/decision.js';
import { actorsOf } from './act.js';
import { checkDelegationClaims, checkTimes } from './claims.js';
import { DelegationError } from './errors.js';
import type { KeySource } from './jwks.js';
import { DELEGATION_ALGORITHMS, MAX_TOKEN_LENGTH, verifyJws, type JwsRules } from './token.js';
import { DEFAULT_LEEWAY_SECONDS, DEFAULT_MAX_DEPTH, type DelegationTokenClaims } from './types.js';

export interface DelegationVerifierOptions {
  /** The broker's issuer (`iss`). */
  issuer: string;
  /** The broker's public keys. */
  keys: KeySource;
  /** Maximum number of actors in the chain (default 4). */
  maxDepth?: number;
  /** Clock leeway for exp / nbf / iat (default 5 s). */
  leewaySeconds?: number;
  /** Maximum cached verifications (default 10 000; 0 disables the cache). */
  cacheLimit?: number;
  /** UNSAFE, tests of `sigil probe` only (SIGIL_UNSAFE_TEST_WEAKEN=delegation-actor): skip actor = presenter. */
  unsafeSkipActorCheck?: boolean;
}

export interface VerifiedDelegation {
  context: DelegationContext;
  claims: DelegationTokenClaims;
  /** `exp` in ms since the epoch. */
  expiresAt: number;
}

export interface VerifyExpectation {
  /** This sidecar's own SPIFFE ID. */
  audience: string;
  /** The agent presenting the token: the mTLS peer, or the message signer. */
  actor: string;
  nowMs?: number;
}

const RULES: JwsRules = { algorithms: DELEGATION_ALGORITHMS, typ: 'at+jwt', requireKid: true };

interface CacheEntry {
  result: VerifiedDelegation;
  audience: string;
  actor: string;
  version: number;
  exp: number;
  nbf: number | undefined;
  iat: number;
}

/** Results are shared between cache hits: nobody may change them. */
function freezeResult(r: VerifiedDelegation): VerifiedDelegation {
  Object.freeze(r.context.actors);
  Object.freeze(r.context.scope);
  Object.freeze(r.context);
  for (let a: DelegationTokenClaims['act'] | undefined = r.claims.act; a !== undefined; a = a.act) Object.freeze(a);
  for (const v of Object.values(r.claims)) if (typeof v === 'object' && v !== null) deepFreeze(v);
  Object.freeze(r.claims);
  return Object.freeze(r);
}

function deepFreeze(v: object): void {
  if (Object.isFrozen(v)) return;
  Object.freeze(v);
  for (const x of Object.values(v)) if (typeof x === 'object' && x !== null) deepFreeze(x as object);
}

export class DelegationVerifier {
  readonly issuer: string;
  readonly maxDepth: number;
  readonly leewaySeconds: number;
  readonly cacheLimit: number;
  private readonly keys: KeySource;
  private readonly unsafeSkipActorCheck: boolean;
  private readonly cache = new Map<string, CacheEntry>();
  /** Counters for tests, /status and benchmarks. */
  readonly stats = { hits: 0, misses: 0, failures: 0 };

  constructor(opts: DelegationVerifierOptions) {
    if (typeof opts.issuer !== 'string' || opts.issuer.length === 0) throw new TypeError('DelegationVerifier: issuer is required');
    this.issuer = opts.issuer;
    this.keys = opts.keys;
    this.maxDepth = opts.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.leewaySeconds = opts.leewaySeconds ?? DEFAULT_LEEWAY_SECONDS;
    this.cacheLimit = opts.cacheLimit ?? 10_000;
    this.unsafeSkipActorCheck = opts.unsafeSkipActorCheck === true;
  }

  /** Cached verifications right now. */
  get cacheSize(): number {
    return this.cache.size;
  }

  clearCache(): void {
    this.cache.clear();
  }

  /**
   * Verifies `token` for a call arriving at `expect.audience` from `expect.actor`. Resolves to
   * the verified delegation (frozen; shared between cache hits) or rejects with a
   * DelegationError whose `detail` names the rule (never the token).
   */
  async verify(token: string, expect: VerifyExpectation): Promise<VerifiedDelegation> {
    const nowMs = expect.nowMs ?? Date.now();
    // Before the cache: an oversized or non-string token is never hashed into a cache key.
    if (typeof token !== 'string' || token.length === 0) throw new DelegationError('delegation_invalid', 'malformed');
    if (token.length > MAX_TOKEN_LENGTH) throw new DelegationError('delegation_invalid', 'too_large');
    const got = this.keys.get();
    const keys = got instanceof Promise ? await got : got;
    const cacheKey = this.cacheLimit > 0 ? `${keys.version}\n${expect.audience}\n${expect.actor}\n${token}` : '';
    if (this.cacheLimit > 0) {
      const hit = this.cache.get(cacheKey);
      if (hit !== undefined) {
        if (hit.actor === expect.actor && hit.audience === expect.audience && hit.version === keys.version) {
          try {
            checkTimes(hit, { nowMs, leewaySeconds: this.leewaySeconds });
            this.stats.hits++;
            return hit.result;
          } catch {
            // Expired (or, with a caller-supplied clock, not yet valid): verify afresh, which
            // reports the precise reason; never answer a failure from the cache.
          }
        }
        this.cache.delete(cacheKey);
      }
    }
    this.stats.misses++;
    try {
      const { payload, keys: usedKeys } = await verifyJws(token, keys, this.keys, RULES);
      const { claims, scope, depth } = checkDelegationClaims(payload, {
        issuer: this.issuer,
        audience: expect.audience,
        nowMs,
        leewaySeconds: this.leewaySeconds,
        maxDepth: this.maxDepth,
      });
      if (claims.act.sub !== expect.actor && !this.unsafeSkipActorCheck) throw new DelegationError('actor_mismatch', 'actor');
      const context: DelegationContext = { sub: claims.sub, actors: actorsOf(claims.act), depth, scope, task: claims.task, jti: claims.jti };
      const result = freezeResult({ context, claims, expiresAt: claims.exp * 1000 });
      if (this.cacheLimit > 0) {
        // A refresh during verification may have produced a newer set: key the entry by it.
        const key = usedKeys.version === keys.version ? cacheKey : `${usedKeys.version}\n${expect.audience}\n${expect.actor}\n${token}`;
        this.remember(key, {
          result,
          audience: expect.audience,
          actor: expect.actor,
          version: usedKeys.version,
          exp: claims.exp,
          nbf: claims.nbf,
          iat: claims.iat,
        });
      }
      return result;
    } catch (err) {
      this.stats.failures++;
      if (err instanceof DelegationError) throw err;
      throw new DelegationError('delegation_invalid', 'internal');
    }
  }

  private remember(key: string, entry: CacheEntry): void {
    if (this.cache.size >= this.cacheLimit) {
      // Oldest first: Map iteration is insertion order. Expired entries go too.
      const nowS = Date.now() / 1000;
      for (const [k, e] of this.cache) {
        if (this.cache.size < this.cacheLimit && e.exp + this.leewaySeconds > nowS) break;
        this.cache.delete(k);
      }
    }
    this.cache.set(key, entry);
  }
}
