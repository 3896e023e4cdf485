import type { SpiffeId } from '../spiffe/index.js';
import type { ReasonCode } from './reasons.js';

export type Direction = 'inbound' | 'outbound';
/** Actions as named in DESIGN.md; Cedar adds websocket/mcp/a2a/bus actions. */
export type Action = 'connect' | 'http';

export interface HttpContext {
  method: string;
  path: string;
  host: string;
}

/** What is being asked: may `principal` perform `action` on `resource`? */
export interface AuthzRequest {
  action: Action;
  direction: Direction;
  /** The caller. Inbound: the verified peer. Outbound: this sidecar's own agent. */
  principal: SpiffeId;
  /** The callee. Inbound: this sidecar's own agent. Outbound: the verified server. */
  resource: SpiffeId;
  http?: HttpContext;
}

/** The one value every enforcement point, log line and response derives from. */
export interface Decision {
  allowed: boolean;
  reason: ReasonCode;
  /** Ids of the rules that decided (allow-list entries, later Cedar policy ids). */
  policies: string[];
  /** True when enforcement is in dry-run and the decision would have been a deny. */
  wouldDeny: boolean;
  request: AuthzRequest;
}

export interface Authorizer {
  readonly kind: string;
  authorize(request: AuthzRequest): Decision;
}
