import t from 'tap';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  actionForJsonRpcMethod,
  agentResource,
  CedarAuthorizer,
  compileCedarPolicy,
  PolicyLoadError,
  PolicyStore,
  type AuthzRequest,
  type ReloadOutcome,
} from '../../src/authz/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const A = SpiffeId.parse('spiffe://example.org/agent/a');
const B = SpiffeId.parse('spiffe://example.org/agent/b');
const MCP = SpiffeId.parse('spiffe://example.org/mcp/tools');
const EVIL = SpiffeId.parse('spiffe://partner.example/agent/x');

const req = (over: Partial<AuthzRequest>): AuthzRequest => ({
  action: 'http',
  direction: 'inbound',
  principal: A,
  resource: agentResource(B),
  peer: A,
  http: { method: 'GET', path: '/', host: 'agent-b' },
  ...over,
});

const POLICY = `
@id("a-reads-b")
permit (principal == Agent::"spiffe://example.org/agent/a", action in [Action::"connect", Action::"http"], resource == Agent::"spiffe://example.org/agent/b")
when { !(context has http) || context.http.method == "GET" };

@id("search-only")
permit (principal in TrustDomain::"example.org", action == Action::"mcp.tools/call", resource == Tool::"search")
when { resource in Agent::"spiffe://example.org/mcp/tools" };

@id("no-admin")
forbid (principal, action == Action::"http", resource) when { context.http.path like "/admin*" };
`;

function authorizer(text = POLICY): CedarAuthorizer {
  return new CedarAuthorizer(compileCedarPolicy(text, 'test.cedar'));
}

t.test('permit, default deny and forbid-wins, with the deciding policy ids', async (t) => {
  const authz = authorizer();
  const allowed = authz.authorize(req({}));
  t.ok(allowed.allowed, 'A may GET B (positive control)');
  t.same(allowed.policies, ['a-reads-b']);
  t.equal(allowed.reason, 'allowed');

  const post = authz.authorize(req({ http: { method: 'POST', path: '/', host: 'b' } }));
  t.notOk(post.allowed, 'POST matches no permit: default deny');
  t.equal(post.reason, 'policy_denied');
  t.same(post.policies, [], 'a default deny names no policy');

  const admin = authz.authorize(req({ http: { method: 'GET', path: '/admin/x', host: 'b' } }));
  t.notOk(admin.allowed, 'forbid wins over a matching permit');
  t.same(admin.policies, ['no-admin']);

  t.notOk(authz.authorize(req({ principal: EVIL, peer: EVIL })).allowed, 'another principal is denied');
  t.ok(authz.authorize(req({ action: 'connect', http: undefined })).allowed, 'connect without http context');
  t.notOk(authz.authorize(req({ action: 'websocket.message', websocket: { kind: 'text', size: 3 } })).allowed, 'unlisted action denied');
});

t.test('tools: resource Tool in the serving agent', async (t) => {
  const authz = authorizer();
  const call = (name: string, agent = MCP): AuthzRequest =>
    req({ action: 'mcp.tools/call', resource: { type: 'Tool', name, agent }, peer: A, jsonrpc: { method: 'tools/call', tool: name } });
  t.ok(authz.authorize(call('search')).allowed, 'search on the MCP server (positive control)');
  t.notOk(authz.authorize(call('delete_everything')).allowed, 'other tool denied');
  t.notOk(authz.authorize(call('search', B)).allowed, 'same tool name on another agent denied');
});

t.test('JSON-RPC methods map to schema actions; unknown ones to mcp.other', async (t) => {
  t.equal(actionForJsonRpcMethod('tools/call'), 'mcp.tools/call');
  t.equal(actionForJsonRpcMethod('message/send'), 'a2a.message/send');
  t.equal(actionForJsonRpcMethod('notifications/initialized'), 'mcp.notifications');
  t.equal(actionForJsonRpcMethod('frobnicate'), 'mcp.other');
});

t.test('load errors name the policy id and position; nothing half-loaded', async (t) => {
  const bad = `@id("ok")\npermit (principal, action == Action::"http", resource);\n@id("typo")\npermit (principal, action == Action::"http", resource)\n  when { context.http.methd == "GET" };\n`;
  const err = t.throws(() => compileCedarPolicy(bad, 'bad.cedar')) as unknown as PolicyLoadError;
  t.equal(err.code, 'policy_invalid');
  t.equal(err.issues[0]!.policyId, 'typo');
  t.equal(err.issues[0]!.line, 5, 'line of the offending attribute');
  t.match(err.message, /bad\.cedar/);
  t.match(err.issues[0]!.message, /methd/);

  const syntax = t.throws(() => compileCedarPolicy('permit (principal, action, resource) when { ', 'syntax.cedar')) as unknown as PolicyLoadError;
  t.equal(syntax.issues[0]!.line, 1);
  t.throws(() => compileCedarPolicy('permit (principal, action == Action::"nope", resource);', 'x'), { code: 'policy_invalid' }, 'unknown action');
  t.throws(() => compileCedarPolicy('permit (principal == User::"x", action, resource);', 'x'), { code: 'policy_invalid' }, 'unknown entity type');
  t.throws(
    () => compileCedarPolicy('@id("d")\npermit (principal, action, resource);\n@id("d")\nforbid (principal, action, resource);', 'x'),
    /duplicate policy id "d"/,
  );
  t.same(compileCedarPolicy('', 'empty').ids, [], 'an empty file is valid and denies everything');
  t.equal(compileCedarPolicy(POLICY, 'a').version, compileCedarPolicy(POLICY, 'b').version, 'version is a content hash');
});

t.test('policy store: reload applies at once; a bad file keeps the last good policy', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sigil-policy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'policy.cedar');
  await writeFile(file, POLICY);
  const store = new PolicyStore({ mode: 'enforce', cedar: file });
  await store.start();
  t.teardown(() => store.stop());
  const outcomes: ReloadOutcome[] = [];
  store.on('reload', (o) => outcomes.push(o));
  t.ok(store.current().authorize(req({})).allowed);

  await writeFile(file, 'permit (principal, action == Action::"http", resource) when { context.nope };');
  const failed = await store.reload();
  t.equal(failed.result, 'failure', 'invalid policy refused');
  t.ok(store.current().authorize(req({})).allowed, 'last good policy still in force');

  await writeFile(file, '@id("deny-all-but-connect")\npermit (principal, action == Action::"connect", resource);');
  const ok = await store.reload();
  t.match(ok, { result: 'success', changed: true });
  t.notOk(store.current().authorize(req({})).allowed, 'new policy applies to the next call');
  t.ok(store.current().authorize(req({ action: 'connect', http: undefined })).allowed);

  await writeFile(file, '');
  const empty = await store.reload();
  t.match(empty, { result: 'failure' }, 'an empty file (a write caught half-way) is refused');
  t.match(String((empty as { error?: Error }).error?.message), /the policy file is empty/, 'with why');
  t.ok(store.current().authorize(req({ action: 'connect', http: undefined })).allowed, 'the last good policy stays: open connections are not cut');
  await writeFile(file, '// deny everything\n');
  t.match(await store.reload(), { result: 'success', changed: true }, 'a comment-only file is the way to deny everything');
  t.notOk(store.current().authorize(req({ action: 'connect', http: undefined })).allowed, 'and it does');

  // The file watcher picks up a write on its own.
  await writeFile(file, POLICY);
  const deadline = Date.now() + 3000;
  while (!store.current().authorize(req({})).allowed && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.ok(store.current().authorize(req({})).allowed, 'watched file reloaded within the deadline');
  t.ok(outcomes.length >= 2);
});

t.test('dry-run: denied calls pass, marked wouldDeny', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sigil-policy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'policy.cedar');
  await writeFile(file, POLICY);
  const store = new PolicyStore({ mode: 'dry-run', cedar: file });
  await store.start();
  t.teardown(() => store.stop());
  const d = store.current().authorize(req({ http: { method: 'DELETE', path: '/', host: 'b' } }));
  t.ok(d.allowed);
  t.ok(d.wouldDeny);
  t.equal(d.reason, 'policy_denied');
  t.notOk(store.current().authorize(req({})).wouldDeny, 'an allowed call is not marked');
});

t.test('startup with an invalid policy file fails', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sigil-policy-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'policy.cedar');
  await writeFile(file, 'permit (');
  await t.rejects(new PolicyStore({ mode: 'enforce', cedar: file }).start(), { code: 'policy_invalid' });
  await t.rejects(new PolicyStore({ mode: 'enforce', cedar: join(dir, 'missing.cedar') }).start(), /cannot read policy file/);
});

t.test('evaluation never throws: input cedar-wasm rejects is a deny with internal_error', async (t) => {
  const errors: string[] = [];
  const authz = new CedarAuthorizer(compileCedarPolicy(POLICY, 'x'), (e) => errors.push(...e.map((x) => x.message)));
  const d = authz.authorize(req({ http: { method: 'GET', path: '/\ud800', host: 'b' } }));
  t.notOk(d.allowed);
  t.equal(d.reason, 'internal_error');
  t.ok(errors.length > 0, 'reported as an evaluation error');
  t.ok(authz.authorize(req({})).allowed, 'the next ordinary call is evaluated normally (positive control)');
});

t.test('dry-run with no rules still denies everything', async (t) => {
  const store = new PolicyStore({ mode: 'dry-run' });
  await store.start();
  const d = store.current().authorize(req({}));
  t.notOk(d.allowed);
  t.equal(d.reason, 'no_policy');
  const withRules = new PolicyStore({ mode: 'dry-run', allow: ['spiffe://example.org/agent/b'] });
  await withRules.start();
  t.ok(withRules.current().authorize(req({})).wouldDeny, 'dry-run over rules lets through and marks (positive control)');
});

t.test('decision cache: exact per request, per version; real time when a policy reads it', async (t) => {
  const authz = authorizer();
  const first = req({ http: { method: 'GET', path: '/x', host: 'b' } });
  const again = req({ http: { method: 'GET', path: '/x', host: 'b' } });
  t.ok(authz.authorize(first).allowed);
  const d = authz.authorize(again);
  t.ok(d.allowed, 'same request, same answer');
  t.equal(d.request, again, 'the decision carries the request asked, not the cached one');
  t.notOk(authz.authorize(req({ http: { method: 'GET', path: '/admin', host: 'b' } })).allowed, 'a different path is evaluated, not served from the cache');
  t.notOk(authz.authorize(req({ principal: EVIL, peer: EVIL, http: { method: 'GET', path: '/x', host: 'b' } })).allowed, 'a different principal too');

  t.notOk(compileCedarPolicy(POLICY, 'p').readsTime, 'POLICY never reads time: cacheable');
  const timed = compileCedarPolicy('permit (principal, action == Action::"http", resource) when { context.time > 1700000000 };', 't');
  t.ok(timed.readsTime);
  t.ok(new CedarAuthorizer(timed).authorize(req({})).allowed, 'context.time is the real clock when a policy reads it');
  const past = compileCedarPolicy('permit (principal, action == Action::"http", resource) when { context.time < 1000 };', 't2');
  t.notOk(new CedarAuthorizer(past).authorize(req({})).allowed, 'negative control: a time bound in the past denies');
});
