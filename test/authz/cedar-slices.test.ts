// Per-(action, principal) policy slices (src/authz/cedar-slices.ts) must never change a
// decision: the sliced authorizer is compared with one that evaluates the full set, on a policy
// mixing every scope form, permits and forbids, and conditions that raise errors.
import t from 'tap';
import { agentResource, CedarAuthorizer, compileCedarPolicy, type AuthzRequest, type CompiledPolicy } from '../../src/authz/index.js';
import { MAX_SLICES, PolicySlices } from '../../src/authz/cedar-slices.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const agent = (n: string): SpiffeId => SpiffeId.parse(`spiffe://example.org/agent/${n}`);
const A = agent('a');
const B = agent('b');
const C = agent('c');
const X = SpiffeId.parse('spiffe://partner.example/agent/x');

const POLICY = `
@id("a-connects-b")
permit (principal == Agent::"spiffe://example.org/agent/a", action == Action::"connect", resource == Agent::"spiffe://example.org/agent/b");

@id("a-reads-b")
permit (principal == Agent::"spiffe://example.org/agent/a", action in [Action::"connect", Action::"http"], resource)
when { !(context has http) || context.http.method == "GET" };

@id("domain-http")
permit (principal in TrustDomain::"example.org", action == Action::"http", resource)
when { context has http && context.http.path like "/public/*" };

@id("any-agent-tools")
permit (principal is Agent, action in Action::"mcp", resource)
when { context has jsonrpc && context.jsonrpc.method == "tools/list" };

@id("c-search")
permit (principal == Agent::"spiffe://example.org/agent/c", action == Action::"mcp.tools/call", resource == Tool::"search");

@id("unscoped-websocket")
permit (principal, action, resource)
when { context has websocket && context.websocket.size < 100 };

@id("no-delete")
forbid (principal, action == Action::"http", resource)
when { context has http && context.http.method == "DELETE" };

@id("b-quarantined")
forbid (principal == Agent::"spiffe://example.org/agent/b", action, resource);

@id("depth-needs-delegation")
forbid (principal == Agent::"spiffe://example.org/agent/a", action == Action::"http", resource)
when { context has delegation && context.delegation.depth > 2 };

@id("overflowing-forbid")
forbid (principal == Agent::"spiffe://example.org/agent/a", action == Action::"websocket.message", resource)
when { context.websocket.size * 4611686018427387904 > 0 };
`;

function requests(): AuthzRequest[] {
  const out: AuthzRequest[] = [];
  const principals = [A, B, C, X];
  for (const principal of principals) {
    for (const target of [A, B, C]) {
      out.push({ action: 'connect', direction: 'inbound', principal, resource: agentResource(target), peer: principal });
      for (const method of ['GET', 'POST', 'DELETE']) {
        for (const path of ['/public/x', '/private']) {
          out.push({ action: 'http', direction: 'inbound', principal, resource: agentResource(target), peer: principal, http: { method, path, host: 'b' } });
        }
      }
      out.push({
        action: 'http', direction: 'inbound', principal, resource: agentResource(target), peer: principal, http: { method: 'GET', path: '/public/d', host: 'b' },
        delegation: { sub: 'alice', actors: [principal.toString()], depth: 3, scope: ['read'], task: 't1' },
      });
      out.push({ action: 'websocket.message', direction: 'inbound', principal, resource: agentResource(target), peer: principal, http: { method: 'GET', path: '/ws', host: 'b' }, websocket: { kind: 'text', size: 10 } });
      out.push({ action: 'mcp.tools/list', direction: 'inbound', principal, resource: agentResource(target), peer: principal, http: { method: 'POST', path: '/mcp', host: 'b' }, jsonrpc: { method: 'tools/list' } });
    }
    for (const tool of ['search', 'delete_all']) {
      out.push({ action: 'mcp.tools/call', direction: 'inbound', principal, resource: { type: 'Tool', name: tool, agent: B }, peer: principal, http: { method: 'POST', path: '/mcp', host: 'b' }, jsonrpc: { method: 'tools/call', tool } });
    }
  }
  return out;
}

t.test('a sliced authorizer decides exactly like the full policy set', async (t) => {
  const compiled = compileCedarPolicy(POLICY, 'slices.cedar');
  const slicedErrors: string[] = [];
  const fullErrors: string[] = [];
  const sliced = new CedarAuthorizer(compiled, (errors, r) => slicedErrors.push(...errors.map((e) => `${r.principal.toString()} ${r.action} ${e.policyId}`)));
  // The reference: scopes without exact principal/action, so every request uses the full set.
  const full = new CedarAuthorizer({ ...compiled, scopes: compiled.scopes.map(({ id, text }) => ({ id, text })) }, (errors, r) =>
    fullErrors.push(...errors.map((e) => `${r.principal.toString()} ${r.action} ${e.policyId}`)),
  );
  const all = requests();
  let allowed = 0;
  let denied = 0;
  for (const r of all) {
    const got = sliced.authorize(r);
    const want = full.authorize(r);
    const what = `${r.principal.toString()} ${r.action} ${JSON.stringify(r.jsonrpc ?? r.websocket ?? r.http ?? {})}${r.delegation ? ' delegated' : ''}`;
    t.same({ allowed: got.allowed, reason: got.reason, policies: [...got.policies].sort() }, { allowed: want.allowed, reason: want.reason, policies: [...want.policies].sort() }, what);
    if (want.allowed) allowed++;
    else denied++;
  }
  // Positive control: the mix exercises both outcomes and the determining policies of each kind.
  t.ok(allowed > 10 && denied > 10, `both outcomes occur (${allowed} allowed, ${denied} denied)`);
  t.ok(fullErrors.length > 0, 'the overflowing forbid raises evaluation errors');
  t.same(slicedErrors, fullErrors, 'the same evaluation errors, for the same requests');
  const decided = new Set(all.flatMap((r) => full.authorize(r).policies));
  t.same([...decided].sort(), ['a-connects-b', 'a-reads-b', 'any-agent-tools', 'b-quarantined', 'c-search', 'depth-needs-delegation', 'domain-http', 'no-delete', 'unscoped-websocket'].sort(), 'every permit and forbid decides some request');
});

t.test('a forbid pinned to one principal still applies to it in its slices', async (t) => {
  const authz = new CedarAuthorizer(compileCedarPolicy(POLICY, 'slices.cedar'));
  const d = authz.authorize({ action: 'websocket.message', direction: 'inbound', principal: B, resource: agentResource(A), peer: B, http: { method: 'GET', path: '/ws', host: 'b' }, websocket: { kind: 'text', size: 1 } });
  t.equal(d.allowed, false);
  t.same(d.policies, ['b-quarantined']);
  const control = authz.authorize({ action: 'websocket.message', direction: 'inbound', principal: C, resource: agentResource(A), peer: C, http: { method: 'GET', path: '/ws', host: 'b' }, websocket: { kind: 'text', size: 1 } });
  t.equal(control.allowed, true, 'positive control: the same message from another agent is allowed');
});

t.test('compile records only exact principal and action scopes', async (t) => {
  const compiled: CompiledPolicy = compileCedarPolicy(POLICY, 'slices.cedar');
  const scope = (id: string): { principal?: string; action?: string } => {
    const s = compiled.scopes.find((x) => x.id === id)!;
    return { ...(s.principal === undefined ? {} : { principal: s.principal }), ...(s.action === undefined ? {} : { action: s.action }) };
  };
  t.same(scope('a-connects-b'), { principal: A.toString(), action: 'connect' });
  t.same(scope('a-reads-b'), { principal: A.toString() }, '`action in [...]` is not exact');
  t.same(scope('domain-http'), { action: 'http' }, '`principal in` is not exact');
  t.same(scope('any-agent-tools'), {}, '`is` and action groups are not exact');
  t.same(scope('unscoped-websocket'), {});
  t.same(scope('b-quarantined'), { principal: B.toString() });
});

t.test('slices hold only the policies that can apply, and are bounded', async (t) => {
  const scopes = [
    { id: 'p-a', text: 'permit (principal == Agent::"spiffe://example.org/agent/a", action, resource);', principal: A.toString() },
    { id: 'http', text: 'permit (principal, action == Action::"http", resource);', action: 'http' },
    { id: 'any', text: 'permit (principal, action, resource) when { false };' },
  ];
  const slices = new PolicySlices('v-test-slices', scopes);
  const forA = slices.setFor('http', A.toString());
  t.equal(forA, 'v-test-slices', 'nothing excluded: the full set');
  const forB = slices.setFor('http', B.toString());
  t.not(forB, 'v-test-slices', 'p-a excluded for b: a slice');
  t.equal(slices.setFor('http', B.toString()), forB, 'remembered');
  for (let i = 0; slices.setFor('connect', `spiffe://example.org/agent/n${i}`) !== 'v-test-slices' || i < MAX_SLICES; i++) {
    if (i > MAX_SLICES + 5) break;
  }
  t.equal(slices.setFor('connect', 'spiffe://example.org/agent/beyond-the-bound'), 'v-test-slices', 'beyond the bound: the full set');
});
