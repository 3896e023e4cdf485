// The simple policy form: `policy: { allow: [patterns] }`, a list of peer SPIFFE IDs or
// patterns. "Peer" is the verified agent on the other side of the connection: the caller
// inbound, the server outbound. Every action on a connection with an allowed peer is allowed;
// anything that matches no entry is denied. Use Cedar for anything finer.
import { createHash } from 'node:crypto';
import { SpiffeIdPattern } from '../spiffe/index.js';
import type { Authorizer, AuthzRequest, Decision } from './decision.js';

export class AllowListAuthorizer implements Authorizer {
  readonly kind = 'allow';
  readonly version: string;
  private readonly patterns: { pattern: SpiffeIdPattern; id: string }[];
  /** Matching entry per peer ID (or null): peers repeat on every call; the list never changes. */
  private readonly matches = new Map<string, string | null>();

  /** Throws for an invalid entry; the message names the entry index. */
  constructor(entries: readonly string[]) {
    this.patterns = entries.map((entry, i) => {
      try {
        return { pattern: SpiffeIdPattern.parse(entry), id: `allow[${i}]` };
      } catch (err) {
        throw new Error(`policy.allow[${i}]: ${(err as Error).message}`);
      }
    });
    this.version = createHash('sha256').update(JSON.stringify(entries)).digest('hex').slice(0, 12);
  }

  authorize(request: AuthzRequest): Decision {
    // Not a call on a connection: who may revoke is only expressible in Cedar.
    // Egress to external APIs has no peer agent to allow-list: also Cedar only.
    if (request.action === 'revocation.issue' || request.action === 'egress.http') return { allowed: false, reason: 'policy_denied', policies: [], wouldDeny: false, policyVersion: this.version, request };
    const peer = request.peer.toString();
    let match = this.matches.get(peer);
    if (match === undefined) {
      match = this.patterns.find((p) => p.pattern.matches(request.peer))?.id ?? null;
      if (this.matches.size >= 10_000) this.matches.clear();
      this.matches.set(peer, match);
    }
    return match !== null
      ? { allowed: true, reason: 'allowed', policies: [match], wouldDeny: false, policyVersion: this.version, request }
      : { allowed: false, reason: 'policy_denied', policies: [], wouldDeny: false, policyVersion: this.version, request };
  }
}

/** With no policy configured nothing is allowed: unknown means deny. */
export class DenyAllAuthorizer implements Authorizer {
  readonly kind = 'none';
  readonly version = 'none';
  authorize(request: AuthzRequest): Decision {
    return { allowed: false, reason: 'no_policy', policies: [], wouldDeny: false, policyVersion: this.version, request };
  }
}

/** policy.mode: dry-run — evaluate and record, but let denied calls through. */
export class DryRunAuthorizer implements Authorizer {
  readonly kind: string;
  readonly version: string;
  constructor(private readonly inner: Authorizer) {
    this.kind = `${inner.kind}+dry-run`;
    this.version = inner.version;
  }
  dropCachedDecisions(): void {
    this.inner.dropCachedDecisions?.();
  }
  authorize(request: AuthzRequest): Decision {
    const decision = this.inner.authorize(request);
    return decision.allowed ? decision : { ...decision, allowed: true, wouldDeny: true };
  }
}
