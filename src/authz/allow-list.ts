// The simple policy form: `policy: { allow: [patterns] }`, a list of peer SPIFFE IDs or
// patterns. "Peer" is the other side of the connection: the caller inbound, the server
// outbound. Anything that matches no entry is denied.
import { SpiffeIdPattern } from '../spiffe/index.js';
import type { Authorizer, AuthzRequest, Decision } from './decision.js';

export class AllowListAuthorizer implements Authorizer {
  readonly kind = 'allow';
  private readonly patterns: { pattern: SpiffeIdPattern; id: string }[];

  /** Throws SpiffeIdError for an invalid entry; the message names the entry index. */
  constructor(entries: readonly string[]) {
    this.patterns = entries.map((entry, i) => {
      try {
        return { pattern: SpiffeIdPattern.parse(entry), id: `allow[${i}]` };
      } catch (err) {
        throw new Error(`policy.allow[${i}]: ${(err as Error).message}`);
      }
    });
  }

  authorize(request: AuthzRequest): Decision {
    const peer = request.direction === 'inbound' ? request.principal : request.resource;
    const match = this.patterns.find((p) => p.pattern.matches(peer));
    return match
      ? { allowed: true, reason: 'allowed', policies: [match.id], wouldDeny: false, request }
      : { allowed: false, reason: 'policy_denied', policies: [], wouldDeny: false, request };
  }
}

/** With no policy configured nothing is allowed: unknown means deny. */
export class DenyAllAuthorizer implements Authorizer {
  readonly kind = 'none';
  authorize(request: AuthzRequest): Decision {
    return { allowed: false, reason: 'no_policy', policies: [], wouldDeny: false, request };
  }
}

/** policy.mode: dry-run — evaluate and record, but let denied calls through. */
export class DryRunAuthorizer implements Authorizer {
  readonly kind: string;
  constructor(private readonly inner: Authorizer) {
    this.kind = `${inner.kind}+dry-run`;
  }
  authorize(request: AuthzRequest): Decision {
    const decision = this.inner.authorize(request);
    return decision.allowed ? decision : { ...decision, allowed: true, wouldDeny: true };
  }
}
