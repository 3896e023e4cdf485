import type { SpiffeId } from '../spiffe/index.js';
import type { ReasonCode } from './reasons.js';

/** Which side of the sidecar the connection is on: accepted from a peer, or dialed to one. */
export type Direction = 'inbound' | 'outbound';

/**
 * Actions as DESIGN.md names them. JSON-RPC calls map to `mcp.<method>` / `a2a.<method>`
 * (e.g. `mcp.tools/call`, `a2a.message/send`).
 */
export type Action = 'connect' | 'http' | 'websocket.message' | `mcp.${string}` | `a2a.${string}` | 'bus.publish' | 'bus.deliver' | 'revocation.issue' | 'egress.http';

/** What an action is performed on. A Tool lives in the agent that serves it. */
export type Resource =
  | { type: 'Agent'; id: SpiffeId }
  | { type: 'Tool'; name: string; agent: SpiffeId }
  | { type: 'Topic'; subject: string }
  /** An external API reached through an egress route, by its host name. */
  | { type: 'Host'; name: string };

export interface HttpContext {
  method: string;
  path: string;
  host: string;
}

/** A summary of one JSON-RPC call; never the full params. */
export interface JsonRpcContext {
  method: string;
  /** `params.name` of tools/call (MCP), where present. */
  tool?: string;
  /**
   * Set when no call is made: the decision filters a `tools/list` answer (may the caller see
   * this tool?). Not part of the Cedar context, so the same rules decide; the audit line says so.
   */
  listing?: 'tools/list';
}

export interface WebSocketContext {
  /** text or binary frame payload. */
  kind: 'text' | 'binary';
  /** Payload size in bytes. */
  size: number;
}

/**
 * RFC 8693 delegation, as verified from a delegation token (filled in by the delegation
 * release; the slot exists so policies and audit lines have a stable shape).
 */
export interface DelegationContext {
  /** The human (token `sub`). */
  sub: string;
  /** Acting agents, outermost (current) actor first. */
  actors: string[];
  depth: number;
  scope: string[];
  /** The task id shared by every token of one delegation chain. */
  task: string;
  /** Token id, for audit only. */
  jti?: string;
}

/** What is being asked: may `principal` perform `action` on `resource`? */
export interface AuthzRequest {
  action: Action;
  direction: Direction;
  /**
   * Who acts. For connect/http/JSON-RPC: the caller (inbound: the verified peer; outbound: our
   * own agent). For a WebSocket message: its sender.
   */
  principal: SpiffeId;
  resource: Resource;
  /** The verified agent on the other end of the connection, whatever the action. */
  peer: SpiffeId;
  http?: HttpContext;
  jsonrpc?: JsonRpcContext;
  websocket?: WebSocketContext;
  delegation?: DelegationContext;
  /** `revocation.issue`: the record's operation and the kind of entry it names. */
  revocation?: { op: 'revoke' | 'lift'; kind: string };
}

/** The one value every enforcement point, log line, audit line and response derives from. */
export interface Decision {
  allowed: boolean;
  reason: ReasonCode;
  /** Ids of the rules that decided: allow-list entries, or Cedar policy ids (`@id` or `policyN`). */
  policies: string[];
  /** True when enforcement is in dry-run and the decision would have been a deny. */
  wouldDeny: boolean;
  /** Version of the policy that decided (content hash), for audit. */
  policyVersion: string;
  request: AuthzRequest;
  /** With reason `revoked`: the entry that revoked something the request involves. */
  revocation?: { kind: string; id: string };
}

export interface Authorizer {
  readonly kind: string;
  /** Content hash of the rules in force. */
  readonly version: string;
  authorize(request: AuthzRequest): Decision;
  /** Forgets cached decisions (the revocation epoch moved); for authorizers that cache. */
  dropCachedDecisions?(): void;
}

export function agentResource(id: SpiffeId): Resource {
  return { type: 'Agent', id };
}

/** The agent a resource belongs to (the serving agent of a tool), if any. */
export function resourceAgent(resource: Resource): SpiffeId | undefined {
  return resource.type === 'Agent' ? resource.id : resource.type === 'Tool' ? resource.agent : undefined;
}

/** Correlation data for one call, carried into the audit trail. */
export interface CallMeta {
  /** Sigil's id for the HTTP request / message this decision is about. */
  requestId?: string;
  /** W3C trace context of the call, as propagated through the proxy. */
  traceparent?: string;
}

/**
 * The enforcement points' single entry: evaluate with the policy in force right now and record
 * the decision (audit, metrics, logs). Never cached across a policy change.
 */
export type Decide = (request: AuthzRequest, meta?: CallMeta) => Decision;
