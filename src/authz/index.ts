export { AllowListAuthorizer, DenyAllAuthorizer, DryRunAuthorizer } from './allow-list.js';
export { agentResource, resourceAgent } from './decision.js';
export type {
  Authorizer,
  AuthzRequest,
  Decision,
  Direction,
  Action,
  Resource,
  HttpContext,
  JsonRpcContext,
  WebSocketContext,
  DelegationContext,
  CallMeta,
  Decide,
} from './decision.js';
export { REASON_CODES } from './reasons.js';
export type { ReasonCode } from './reasons.js';
export { CedarAuthorizer, compileCedarPolicy, PolicyLoadError, SCHEMA_PATH } from './cedar.js';
export type { CompiledPolicy, PolicyIssue } from './cedar.js';
export { PolicyStore } from './store.js';
export type { PolicyConfig, ReloadOutcome } from './store.js';
export { actionForJsonRpcMethod } from './actions.js';
