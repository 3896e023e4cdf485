// The wire format's constants (docs/envelope.md is the normative description).

/** The `typ` header value of every Sigil message envelope, compared exactly. */
export const ENVELOPE_TYP = 'sigil-msg+jws';

/** The only protected-header members allowed; anything else (crit, jwk, jku, x5u, kid, x5t, b64, ...) is refused. */
export const HEADER_MEMBERS: ReadonlySet<string> = new Set(['alg', 'typ', 'x5c']);

/** The only claims allowed in the payload; unknown claims are refused. */
export const CLAIM_NAMES: ReadonlySet<string> = new Set(['iss', 'sub', 'aud', 'iat', 'exp', 'jti', 'dlg', 'data', 'data_b64']);

/** jti: base64url of this many random bytes (144 bits) when Sigil signs; verifiers accept 16..64. */
export const JTI_BYTES = 18;
export const JTI_MIN_BYTES = 16;
export const JTI_MAX_BYTES = 64;

export const DEFAULT_TTL_SECONDS = 60;
export const DEFAULT_MAX_TTL_SECONDS = 300;
export const DEFAULT_LEEWAY_SECONDS = 5;
export const DEFAULT_MAX_BYTES = 1024 * 1024;
export const DEFAULT_CACHE_LIMIT = 4096;
/** x5c holds the leaf and at most this many intermediates (MAX_INTERMEDIATES of src/spiffe). */
export const MAX_X5C = 9;
