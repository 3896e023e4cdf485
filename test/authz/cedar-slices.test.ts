// Per-(action, principal) policy slices (src/authz/cedar-slices.ts) must never change a
// decision: the sliced authorizer is compared with one that evaluates the full set, on a policy
// mixing every scope form, permits and forbids, and conditions that raise errors.
import t from 'tap';
import { agentResource, CedarAuthorizer, compileCedarPolicy, type AuthzRequest, type CompiledPolicy } from '../../src/authz/index.js';
import { MAX_PAIRS, PolicySlices, SLICE_BUDGET_FACTOR } from '../../src/authz/cedar-slices.js';
import type { PolicyScope } from '../../src/authz/cedar.js';
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

@id("c-unless-post")
permit (principal == Agent::"spiffe://example.org/agent/c", action == Action::"http", resource)
unless { context.http.method == "POST" };

@id("group-equals-never-matches")
permit (principal, action == Action::"mcp", resource);

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
    t.same({ allowed: got.allowed, reason: got.reason, policies: got.policies }, { allowed: want.allowed, reason: want.reason, policies: want.policies }, what);
    if (want.allowed) allowed++;
    else denied++;
  }
  // Positive controls: slices were in use, both outcomes occur, and every policy decides something.
  t.ok(sliced.sliceCount >= 4, `the sliced authorizer evaluated with slices (${sliced.sliceCount} registered)`);
  t.equal(full.sliceCount, 0, 'the reference never did');
  t.ok(allowed > 10 && denied > 10, `both outcomes occur (${allowed} allowed, ${denied} denied)`);
  t.ok(fullErrors.length > 0, 'the overflowing forbid raises evaluation errors');
  t.same(slicedErrors, fullErrors, 'the same evaluation errors, for the same requests');
  const decided = new Set(all.flatMap((r) => full.authorize(r).policies));
  t.same([...decided].sort(), ['a-connects-b', 'a-reads-b', 'any-agent-tools', 'b-quarantined', 'c-search', 'c-unless-post', 'depth-needs-delegation', 'domain-http', 'no-delete', 'unscoped-websocket'].sort(), 'every permit and forbid decides some request');
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

const scope = (id: string, over: Partial<PolicyScope> = {}): PolicyScope => ({ id, text: `@id("${id}") permit (principal, action, resource) when { false };`, ...over });

t.test('a slice holds only the policies that can apply, and is shared by pairs that keep the same ones', async (t) => {
  const agents = Array.from({ length: 8 }, (_, i) => `spiffe://example.org/agent/p${i}`);
  const scopes = [...agents.map((p, i) => scope(`pinned-${i}`, { principal: p })), scope('connect-only', { action: 'connect' })];
  const slices = new PolicySlices('v-test-share', scopes);
  const forP0 = slices.setFor('http', agents[0]!);
  t.not(forP0, 'v-test-share', 'p0 on http keeps 1 of 9 policies: a slice');
  t.equal(slices.setFor('http', agents[0]!), forP0, 'remembered');
  const forP1 = slices.setFor('http', agents[1]!);
  t.not(forP1, forP0, 'another principal keeps another policy: another slice');
  t.equal(slices.setFor('connect', agents[0]!), slices.setFor('connect', agents[0]!), 'stable');
  t.not(slices.setFor('connect', agents[0]!), forP0, 'connect also keeps connect-only: a different slice');
  t.equal(slices.setFor('http', 'spiffe://example.org/agent/unknown'), slices.setFor('http', 'spiffe://example.org/agent/other'), 'principals no policy names share the (empty) slice');
  t.equal(slices.sliceCount, 4, 'registered: p0/http, p1/http, p0/connect and the empty slice, nothing else');
});

t.test('no slice when it would leave out less than half of the policy', async (t) => {
  // One pinned rule and many rules that any principal may match: every pair keeps almost all.
  const scopes = [scope('pinned', { principal: 'spiffe://example.org/agent/a' }), ...Array.from({ length: 20 }, (_, i) => scope(`open-${i}`, { action: 'http' }))];
  const slices = new PolicySlices('v-test-share-open', scopes);
  const sliced = Array.from({ length: 300 }, (_, i) => slices.setFor('http', `spiffe://example.org/agent/n${i}`)).filter((id) => id !== 'v-test-share-open');
  t.same(sliced, [], '300 principals on http: all use the full set');
  t.equal(slices.sliceCount, 0, 'nothing registered, however many principals');
  t.not(slices.setFor('connect', 'spiffe://example.org/agent/n1'), 'v-test-share-open', 'positive control: on connect only the pinned rule could apply (it does not), so a slice');
});

t.test('the slices of a version hold at most SLICE_BUDGET_FACTOR times its policies', async (t) => {
  const agents = Array.from({ length: 200 }, (_, i) => `spiffe://example.org/agent/b${i}`);
  // Each agent has 2 pinned rules out of 400: every pair's slice is new and holds 2 policies.
  const scopes = agents.flatMap((p, i) => [scope(`b${i}-x`, { principal: p }), scope(`b${i}-y`, { principal: p })]);
  const slices = new PolicySlices('v-test-budget', scopes);
  let sliced = 0;
  for (const p of agents) for (const action of ['http', 'connect', 'websocket.message', 'mcp.tools/call', 'bus.publish']) if (slices.setFor(action, p) !== 'v-test-budget') sliced++;
  const budget = SLICE_BUDGET_FACTOR * scopes.length;
  t.equal(sliced, 1000, 'every pair gets a slice while the budget lasts (pairs of one agent share one)');
  t.equal(slices.sliceCount, 200, 'one slice per agent, shared by its 5 actions');
  t.ok(slices.sliceCount * 2 <= budget, 'within the budget');
  t.ok(MAX_PAIRS >= 1000, 'the pairs fit');
});

t.test('beyond the budget, pairs use the full set', async (t) => {
  const agents = Array.from({ length: 10 }, (_, i) => `spiffe://example.org/agent/c${i}`);
  const scopes = agents.map((p, i) => scope(`c${i}`, { principal: p }));
  // Budget 0.5 × 10 = 5 policies over all slices; each agent's slice holds its 1 policy.
  const slices = new PolicySlices('v-test-over', scopes, 0.5);
  const ids = agents.map((p) => slices.setFor('http', p));
  t.same(ids.map((id) => id !== 'v-test-over'), [true, true, true, true, true, false, false, false, false, false], 'the first 5 agents get slices, the rest the full set');
  t.equal(slices.sliceCount, 5);
  t.not(slices.setFor('http', 'spiffe://example.org/agent/nobody'), 'v-test-over', 'the empty slice costs nothing and is still registered');
  t.equal(slices.setFor('connect', agents[0]!), ids[0], 'a pair with an already registered subset shares it even beyond the budget');
  t.ok(MAX_PAIRS >= 1000);
});
