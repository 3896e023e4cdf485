// Public surface of src/delegation: RFC 8693 delegation tokens (RFC 9068 JWT access tokens with
// nested `act`), their signing keys, their verification at the sidecar and at the broker, and a
// dev identity provider. See docs/delegation.md.
export * from './types.js';
export { DelegationError, isDelegationError, type DelegationErrorCode } from './errors.js';
export { actorsOf, nestAct, actDepth, parseAct, ACT_PARSE_LIMIT } from './act.js';
export { parseScope, formatScope, narrowScope, MAX_SCOPE_LENGTH, MAX_SCOPE_TOKENS } from './scope.js';
export { SigningKeyRing, newSigningKey, writeFileAtomic, type SigningKey } from './keys.js';
export {
  JWKSet,
  parseJwks,
  loadJwksFile,
  staticJwks,
  jwksFromFile,
  jwksFromUrl,
  type KeySource,
  type JwksFileOptions,
  type JwksFileSource,
  type JwksUrlOptions,
} from './jwks.js';
export {
  signDelegationToken,
  decodeUnverified,
  DELEGATION_TOKEN_TYP,
  DELEGATION_ALGORITHMS,
  USER_TOKEN_ALGORITHMS,
  MAX_TOKEN_LENGTH,
} from './token.js';
export { REQUIRED_CLAIMS, audienceMatches } from './claims.js';
export { DelegationVerifier, type DelegationVerifierOptions, type VerifiedDelegation, type VerifyExpectation } from './verify.js';
export { verifySubjectToken, parseMayAct, type UserTokenIssuer, type VerifiedSubject, type VerifySubjectOptions } from './subject.js';
export { initDevIdp, mintDevUserToken, readDevIdp, DEV_IDP_ISSUER, DEV_IDP_WARNING, type DevIdp, type DevUserTokenOptions } from './dev-idp.js';
