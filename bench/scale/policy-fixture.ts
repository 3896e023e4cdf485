// The policy-size curve's policy and requests: N per-pair HTTP permits, each with a path
// condition (like the bulk of the authz bench's policy), and distinct requests (a distinct path
// each) so that the decision cache never answers. Requests cycle over 63 agent pairs, so only
// policies of 63 rules or more allow some of them; smaller ones allow the pairs they name.
import { agentResource, type AuthzRequest } from '../../src/authz/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const svc = (i: number): string => `spiffe://bench.example/agent/svc-${i}`;

export function policyOf(rules: number): string {
  const out: string[] = [];
  for (let i = 0; i < rules; i++) {
    out.push(`@id("r${i}")\npermit (principal == Agent::"${svc(i)}", action == Action::"http", resource == Agent::"${svc(i + 1)}")\nwhen { context.http.path like "/api/res-${i}/*" };\n`);
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
