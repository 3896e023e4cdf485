// Shared shapes of the delegation release (RFC 8693 token exchange, RFC 9068 access tokens).
// A delegation token names the human in `sub` and the chain of acting agents in nested `act`
// claims, newest (current) actor outermost. Scope only ever narrows along the chain; `task`
// stays the same along it (so a whole task can be revoked).

/** RFC 8693 §4.1 `act`: the current actor, and inside it the previous ones. */
export interface ActClaim {
  sub: string;
  act?: ActClaim;
}

/** The claims of a delegation token the broker issues (JWT, `typ: at+jwt`). */
export interface DelegationTokenClaims {
  iss: string;
  /** The human, unchanged across hops. */
  sub: string;
  /** The target agent's SPIFFE ID. */
  aud: string;
  /** The current actor (= act.sub). */
  client_id: string;
  act: ActClaim;
  /** Space-delimited scope (RFC 9068 / RFC 6749 §3.3). */
  scope: string;
  iat: number;
  exp: number;
  nbf?: number;
  jti: string;
  /** Task id: the same for every token of one chain (the first exchange mints it). */
  task: string;
}

/** The subject-token types the broker accepts (RFC 8693 §3). */
export const TOKEN_TYPE_ACCESS_TOKEN = 'urn:ietf:params:oauth:token-type:access_token';
export const TOKEN_TYPE_JWT = 'urn:ietf:params:oauth:token-type:jwt';
export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

/** Default limits. */
export const DEFAULT_MAX_DEPTH = 4;
export const DEFAULT_MAX_TOKEN_TTL_SECONDS = 300;
export const DEFAULT_LEEWAY_SECONDS = 5;
