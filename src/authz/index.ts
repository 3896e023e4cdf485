export { AllowListAuthorizer, DenyAllAuthorizer, DryRunAuthorizer } from './allow-list.js';
export type { Authorizer, AuthzRequest, Decision, Direction, Action, HttpContext } from './decision.js';
export { REASON_CODES } from './reasons.js';
export type { ReasonCode } from './reasons.js';
