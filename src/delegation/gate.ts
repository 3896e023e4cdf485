// The sidecar's inbound delegation check: reads the delegation token of a request (by default
// `Authorization: Bearer`), verifies it for this sidecar and the connection's verified peer, and
// yields the delegation context that every decision on the request then carries. Refusals are
// RFC 6750: 401 with a `WWW-Authenticate: Bearer` challenge.
import type { IncomingHttpHeaders } from 'node:http';
import type { DelegationContext, ReasonCode } from '../authz/index.js';
import { DelegationError, type DelegationVerifier } from './index.js';

export interface DelegationGateOptions {
  verifier: DelegationVerifier;
  /** Lower-case header carrying `Bearer <token>` (default `authorization`). */
  header: string;
  /** Refuse requests without a token (otherwise they proceed as non-delegated). */
  require: boolean;
}

/** A verified delegation and the instant (ms, leeway included) after which it no longer holds. */
export interface GrantedDelegation {
  context: DelegationContext;
  validUntil: number;
}

export type GateResult = { granted?: GrantedDelegation } | { refused: { reason: ReasonCode; detail: string; challenge: string } };

/** A `Bearer` credential from a header value, or undefined when there is none of that scheme. */
export function bearerToken(value: string | string[] | undefined): string | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(value);
  return m?.[1];
}

/** The `x-sigil-delegation` value for the local agent: what was verified, never the token. */
export function delegationHeader(d: DelegationContext): string {
  return JSON.stringify({ sub: d.sub, actors: d.actors, depth: d.depth, scope: d.scope, task: d.task, ...(d.jti === undefined ? {} : { jti: d.jti }) });
}

function challenge(reason: ReasonCode | undefined): string {
  // RFC 6750 §3.1: no error code when the request carried no credentials at all.
  if (reason === undefined) return 'Bearer realm="sigil"';
  return `Bearer realm="sigil", error="invalid_token", error_description="${reason}"`;
}

export class DelegationGate {
  constructor(private readonly options: DelegationGateOptions) {}

  async check(headers: IncomingHttpHeaders, self: string, peer: string): Promise<GateResult> {
    const raw = headers[this.options.header];
    if (raw === undefined) {
      if (!this.options.require) return {};
      return { refused: { reason: 'delegation_required', detail: 'this sidecar requires a delegation token', challenge: challenge(undefined) } };
    }
    const token = bearerToken(raw);
    if (!token) return { refused: { reason: 'delegation_invalid', detail: 'not a Bearer token', challenge: challenge('delegation_invalid') } };
    try {
      const verified = await this.options.verifier.verify(token, { audience: self, actor: peer });
      return { granted: { context: verified.context, validUntil: verified.expiresAt + this.options.verifier.leewaySeconds * 1000 } };
    } catch (err) {
      const reason: ReasonCode = err instanceof DelegationError ? err.code : 'delegation_invalid';
      const detail = err instanceof DelegationError ? err.detail : 'verification_error';
      return { refused: { reason, detail, challenge: challenge(reason) } };
    }
  }
}
