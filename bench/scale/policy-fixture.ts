// The policy-size curve's policy and requests: N per-pair HTTP permits, each with a path
// condition (like the bulk of the authz bench's policy), and distinct requests (a distinct path
// each) so that the decision cache never answers. Requests cycle over 63 agent pairs, so only
// policies of 63 rules or more allow some of them; smaller ones allow the pairs they name.
import { agentResource, type AuthzRequest } from '../../src/authz/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const svc = (i: number): string => `spiffe://bench.example/agent/svc-${i}`;

/**
 * `pinned`: the agents are in the scope (`principal == …`), so Sigil evaluates each agent's
 * requests against a slice holding its own rules. `unpinned`: the same rules with the agents
 * in the condition instead; every rule may apply to every principal, so there is no slice.
 */
export type PolicyShape = 'pinned' | 'unpinned';

export function policyOf(rules: number, shape: PolicyShape = 'pinned'): string {
  const out: string[] = [];
  for (let i = 0; i < rules; i++) {
    out.push(
      shape === 'pinned'
        ? `@id("r${i}")\npermit (principal == Agent::"${svc(i)}", action == Action::"http", resource == Agent::"${svc(i + 1)}")\nwhen { context.http.path like "/api/res-${i}/*" };\n`
        : `@id("r${i}")\npermit (principal in TrustDomain::"bench.example", action == Action::"http", resource)\nwhen { principal == Agent::"${svc(i)}" && resource == Agent::"${svc(i + 1)}" && context.http.path like "/api/res-${i}/*" };\n`,
    );
  }
  return out.join('');
}

export function policyRequests(n: number): AuthzRequest[] {
  const ids = Array.from({ length: 64 }, (_, i) => SpiffeId.parse(svc(i)));
  return Array.from({ length: n }, (_, i) => {
    const p = i % 63;
    return { action: 'http', direction: 'inbound', principal: ids[p]!, resource: agentResource(ids[p + 1]!), peer: ids[p]!, http: { method: 'GET', path: `/api/res-${p}/${i}`, host: 'b' } };
  });
}
