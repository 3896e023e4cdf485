// Continuous authorization is live: policy reloads on real `sigil run` processes, taking effect
// on connections and streams that are already open; a bad policy is refused and the last good
// one stays; dry-run forwards and records; the audit trail of a call through the pair.
//
//   agent ──plain──▶ A (agent/a, outbound, a.cedar) ══mTLS══▶ B (agent/b, inbound, b.cedar) ──▶ upstream
//   mTLS client (agent/a leaf, raw keep-alive connection or WebSocket) ──▶ B
//   mTLS client ──▶ D (read-only.cedar, dry-run, audit) / E (read-only.cedar, enforce) ──▶ upstream
//
// The tests rewrite a.cedar and b.cedar; each one starts by setting the policies it needs.
import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { Agent as HttpAgent } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import type { Issued } from '../fixtures/certs.js';
import { startAppUpstream, type AppUpstream } from '../helpers/app-upstream.js';
import { assertStatus, type Asserts } from '../helpers/assert.js';
import { mtlsRequest, plainRequest, type HttpResult } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, sleep, tempDir, waitUntil, writeConfig, type RunningSigil, type Teardown } from '../helpers/env.js';
import { auditLines, decisions, metricSum, metrics, openWs, policyVersion, postReload, readAudit, setPolicy, type WsClient } from '../helpers/observe.js';
import { rawTls, type RawHttpConnection } from '../helpers/raw.js';

const FIXTURES = fileURLToPath(new URL('../../../examples/policies/', import.meta.url));
const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_DRY = 'spiffe://example.org/agent/dry';
const ID_ENFORCED = 'spiffe://example.org/agent/enforced';

// B's policies.
const B_CONNECT = `@id("a-connects") permit (principal == Agent::"${ID_A}", action == Action::"connect", resource == Agent::"${ID_B}");`;
const B_HTTP = `@id("a-http") permit (principal == Agent::"${ID_A}", action == Action::"http", resource == Agent::"${ID_B}");`;
const B_MESSAGES = `@id("messages") permit (principal in TrustDomain::"${TD}", action == Action::"websocket.message", resource in TrustDomain::"${TD}");`;
const B_ALL = [B_CONNECT, B_HTTP, B_MESSAGES].join('\n') + '\n';
const B_FROZEN =
  B_ALL +
  `@id("freeze-http") forbid (principal, action == Action::"http", resource);\n` +
  `@id("freeze-messages") forbid (principal, action == Action::"websocket.message", resource);\n`;
const B_NO_CONNECT = [B_HTTP, B_MESSAGES].join('\n') + '\n';

// A's policies (egress).
const A_CONNECT = `@id("egress-connect") permit (principal, action == Action::"connect", resource);`;
const A_REST = [
  `@id("egress-http") permit (principal, action == Action::"http", resource);`,
  `@id("egress-messages") permit (principal, action == Action::"websocket.message", resource);`,
].join('\n');
const A_OPEN = `${A_CONNECT}\n${A_REST}\n`;
const A_NO_CONNECT = `${A_REST}\n`;

let dir: string;
let upstream: AppUpstream;
let sidecarA: RunningSigil;
let sidecarB: RunningSigil;
let sidecarDry: RunningSigil;
let sidecarEnforced: RunningSigil;
let leafA: Issued;
let policyA: string;
let policyB: string;
let auditA: string;
let auditB: string;
let auditDry: string;

t.before(async () => {
  dir = await tempDir(t, 'sigil-reload-');
  const example = await setupTrustDomain(dir, TD);
  upstream = await startAppUpstream(t);
  leafA = await example.leaf(ID_A);
  policyA = join(dir, 'a.cedar');
  policyB = join(dir, 'b.cedar');
  auditA = join(dir, 'a-audit.jsonl');
  auditB = join(dir, 'b-audit.jsonl');
  auditDry = join(dir, 'dry-audit.jsonl');
  await Promise.all([writeFile(policyA, A_OPEN), writeFile(policyB, B_ALL)]);
  const identity = (id: string) => ({ dev: { caDir: example.caDir, spiffeId: id, ttl: '15m' } });
  const inbound = { listen: '127.0.0.1:0', upstream: upstream.url };
  const readOnly = `${FIXTURES}read-only.cedar`;
  const [bCfg, dryCfg, enforcedCfg] = await Promise.all([
    writeConfig(dir, 'b.yaml', sidecarConfig({ trustDomain: TD, identity: identity(ID_B), inbound, policy: { cedar: './b.cedar' }, audit: { path: './b-audit.jsonl' } })),
    writeConfig(dir, 'dry.yaml', sidecarConfig({ trustDomain: TD, identity: identity(ID_DRY), inbound, policy: { cedar: readOnly, mode: 'dry-run' }, audit: { path: './dry-audit.jsonl' } })),
    writeConfig(dir, 'enforced.yaml', sidecarConfig({ trustDomain: TD, identity: identity(ID_ENFORCED), inbound, policy: { cedar: readOnly, mode: 'enforce' } })),
  ]);
  [sidecarB, sidecarDry, sidecarEnforced] = await Promise.all([runSigil(t, bCfg), runSigil(t, dryCfg), runSigil(t, enforcedCfg)]);
  const aCfg = await writeConfig(
    dir,
    'a.yaml',
    sidecarConfig({
      trustDomain: TD,
      identity: identity(ID_A),
      outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: sidecarB.inbound, spiffeId: ID_B }] },
      policy: { cedar: './a.cedar' },
      audit: { path: './a-audit.jsonl' },
    }),
  );
  sidecarA = await runSigil(t, aCfg);
});

// ---------------------------------------------------------------------------------------------
// Helpers

/** A raw mutual-TLS keep-alive connection to B as agent/a. */
async function rawToB(t: Teardown): Promise<RawHttpConnection> {
  const conn = await rawTls(sidecarB.inbound, { certPem: leafA.pem, keyPem: leafA.keyPem });
  t.teardown(() => conn.destroy());
  return conn;
}

const get = (conn: RawHttpConnection, path: string) => conn.request(`GET ${path} HTTP/1.1\r\nHost: agent-b\r\n\r\n`);

/** A keep-alive agent → A connection (one socket), so "the same connection" can be checked. */
function keepAliveAgent(t: Teardown): HttpAgent {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  return agent;
}

function viaA(agent: HttpAgent | false, path: string, extra: { method?: string; headers?: Record<string, string> } = {}): Promise<HttpResult> {
  return plainRequest({ address: sidecarA.outbound, path, method: extra.method, headers: { host: 'agent-b', ...extra.headers }, agent });
}

async function ws(t: Teardown, url: string, options: Parameters<typeof openWs>[1]): Promise<WsClient> {
  const c = await openWs(url, options);
  t.teardown(() => c.ws.terminate());
  return c;
}

const wsToB = (t: Teardown, path: string) => ws(t, `wss://${sidecarB.inbound}${path}`, { cert: leafA.pem, key: leafA.keyPem, rejectUnauthorized: false });
const wsViaA = (t: Teardown, path: string) => ws(t, `ws://${sidecarA.outbound}${path}`, { headers: { host: 'agent-b' } });

function assertRawForbidden(t: Asserts, r: Awaited<ReturnType<RawHttpConnection['request']>>, what: string, policies: string[]): void {
  if (r.kind !== 'response') {
    t.fail(`${what}: expected a 403 answer, got ${r.kind}`);
    return;
  }
  t.equal(r.status, 403, `${what}: 403`);
  t.same(JSON.parse(r.body), { error: 'forbidden', reason: 'policy_denied', policies }, `${what}: policy_denied ${JSON.stringify(policies)}`);
}

function assertForbidden(t: Asserts, r: HttpResult, what: string, policies: string[]): void {
  assertStatus(t, r, what, 403);
  t.same(r.json, { error: 'forbidden', reason: 'policy_denied', policies }, `${what}: policy_denied ${JSON.stringify(policies)}`);
}

const within = <T>(p: Promise<T>, ms: number): Promise<T | 'pending'> => Promise.race([p, new Promise<'pending'>((r) => setTimeout(() => r('pending'), ms))]);
const messagesOn = (path: string): string[] => upstream.messages.filter((m) => m.path === path).map((m) => m.data.toString());
const requestsTo = (prefix: string): string[] => upstream.requests.filter((r) => r.url.startsWith(prefix)).map((r) => `${r.method} ${r.url}`);

// ---------------------------------------------------------------------------------------------
// (a) Policy change mid-stream

t.test('reload via POST /v1/policy/reload: the next request on the same kept-alive connection gets 403, the next WebSocket message closes with 1008', async (t) => {
  const before = await setPolicy(sidecarB, policyB, B_ALL);
  await setPolicy(sidecarA, policyA, A_OPEN);

  const raw = await rawToB(t);
  const first = await get(raw, '/mid/raw-1');
  t.equal(first.kind === 'response' && first.status, 200, 'raw keep-alive connection: 200 (positive control)');
  const keep = keepAliveAgent(t);
  assertStatus(t, await viaA(keep, '/mid/via-1'), 'through the pair: 200 (positive control)');
  const second = await viaA(keep, '/mid/via-2');
  assertStatus(t, second, 'through the pair, again');
  t.ok(second.gotHttpResponse && second.reusedSocket, 'the agent’s connection to A was reused');
  const direct = await wsToB(t, '/mid/ws-direct');
  t.equal((await direct.roundTrip('before')).data.toString(), 'before', 'WebSocket straight to B: message allowed (positive control)');
  const paired = await wsViaA(t, '/mid/ws-pair');
  t.equal((await paired.roundTrip('before')).data.toString(), 'before', 'WebSocket through the pair: message allowed (positive control)');

  await writeFile(policyB, B_FROZEN); // in place
  const reload = await postReload(sidecarB);
  t.equal(reload.status, 200, 'reload answered 200');
  t.match(reload.json, { status: /^(reloaded|unchanged)$/ }, 'reloaded (or already picked up by the watcher)');
  const frozen = await policyVersion(sidecarB);
  t.not(frozen, before, 'a new version is in force');
  if (reload.json.status === 'reloaded') t.equal(reload.json.version, frozen, 'the answer names the version now in force');

  assertRawForbidden(t, await get(raw, '/mid/raw-2'), 'the next request on the same raw connection', ['freeze-http']);
  t.equal(raw.isClosed, false, 'a per-request deny keeps the connection open');
  const via = await viaA(keep, '/mid/via-3');
  assertForbidden(t, via, 'the next request through the pair', ['freeze-http']);
  t.ok(via.gotHttpResponse && via.reusedSocket, 'on the same agent connection');

  direct.ws.send('after');
  t.same(await direct.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'the next message straight to B: 1008 policy_denied');
  paired.ws.send('after');
  t.same(await paired.closeWithin(), { code: 1008, reason: 'policy_denied' }, 'the next message through the pair: 1008 policy_denied');

  t.same(requestsTo('/mid/'), ['GET /mid/raw-1', 'GET /mid/via-1', 'GET /mid/via-2'], 'nothing after the reload reached the upstream');
  t.same([messagesOn('/mid/ws-direct'), messagesOn('/mid/ws-pair')], [['before'], ['before']], 'no message after the reload reached the upstream');
  await setPolicy(sidecarB, policyB, B_ALL);
});

t.test('the file watcher alone applies a new policy within 2 s — in-place write and atomic rename — on the same connection', async (t) => {
  const all = await setPolicy(sidecarB, policyB, B_ALL);
  const raw = await rawToB(t);
  const ok = await get(raw, '/watch/1');
  t.equal(ok.kind === 'response' && ok.status, 200, 'allowed before (positive control)');

  let started = Date.now();
  await writeFile(policyB, B_FROZEN); // in place, no reload call
  const changed = await waitUntil(async () => (await policyVersion(sidecarB)) !== all, 3_000, 25);
  let elapsed = Date.now() - started;
  t.ok(changed, 'the watcher picked up the in-place write');
  t.ok(elapsed <= 2_000, `within 2 s (${elapsed} ms)`);
  assertRawForbidden(t, await get(raw, '/watch/2'), 'next request on the same connection', ['freeze-http']);

  const tmp = `${policyB}.next`;
  await writeFile(tmp, B_ALL);
  started = Date.now();
  await rename(tmp, policyB); // atomic replace, no reload call
  const back = await waitUntil(async () => (await policyVersion(sidecarB)) === all, 3_000, 25);
  elapsed = Date.now() - started;
  t.ok(back, 'the watcher picked up the atomic rename');
  t.ok(elapsed <= 2_000, `within 2 s (${elapsed} ms)`);
  const again = await get(raw, '/watch/3');
  t.equal(again.kind === 'response' && again.status, 200, 'allowed again on the same connection');
  t.same(requestsTo('/watch/'), ['GET /watch/1', 'GET /watch/3'], 'the denied request never reached the upstream');
});

t.test('a reload that removes connect closes kept-alive connections and open streams; new connections get 403', async (t) => {
  await setPolicy(sidecarB, policyB, B_ALL);
  await setPolicy(sidecarA, policyA, A_OPEN);
  const raw = await rawToB(t);
  const ok = await get(raw, '/cut/raw-1');
  t.equal(ok.kind === 'response' && ok.status, 200, 'raw connection works before (positive control)');
  const stream = await wsToB(t, '/cut/ws');
  t.equal((await stream.roundTrip('hi')).data.toString(), 'hi', 'stream works before (positive control)');
  const keep = keepAliveAgent(t);
  assertStatus(t, await viaA(keep, '/cut/via-1'), 'through the pair before (positive control)');

  await setPolicy(sidecarB, policyB, B_NO_CONNECT);
  t.not(await within(raw.closed, 2_000), 'pending', 'the kept-alive connection was closed by B');
  const next = await get(raw, '/cut/raw-2');
  t.equal(next.kind, 'closed', 'the next request on it gets no HTTP response');
  t.not(await stream.closeWithin(2_000), 'still open', 'the open WebSocket was closed without another message');

  await sleep(100);
  const via = await viaA(keep, '/cut/via-2');
  assertForbidden(t, via, 'through the pair: A’s new connection is refused at connect', []);
  const fresh = await rawToB(t);
  const refused = await get(fresh, '/cut/raw-3');
  assertRawForbidden(t, refused, 'a fresh connection', []);
  t.match(refused.kind === 'response' ? refused.headers : {}, { connection: 'close' }, 'with Connection: close');
  t.same(requestsTo('/cut/'), ['GET /cut/raw-1', 'GET /cut/via-1'], 'nothing after the reload reached the upstream');

  await setPolicy(sidecarB, policyB, B_ALL);
  assertStatus(t, await viaA(keep, '/cut/via-3'), 'connect permitted again: through the pair works (positive control)');
});

t.test('egress: a reload of A that removes connect cuts A’s pooled connection; the next request is refused at A', async (t) => {
  await setPolicy(sidecarB, policyB, B_ALL);
  await setPolicy(sidecarA, policyA, A_OPEN);
  const keep = keepAliveAgent(t);
  assertStatus(t, await viaA(keep, '/egress/1'), 'before (positive control)');
  const denials = await decisions(sidecarA, { action: 'connect', decision: 'deny' });
  const atB = await decisions(sidecarB, { action: 'http' });

  await setPolicy(sidecarA, policyA, A_NO_CONNECT);
  // A_NO_CONNECT still permits `http`: a pooled connection that survived would carry this request.
  assertForbidden(t, await viaA(keep, '/egress/2'), 'after the reload', []);
  t.ok((await decisions(sidecarA, { action: 'connect', decision: 'deny' })) > denials, 'A denied connect (egress)');
  t.equal(await decisions(sidecarB, { action: 'http' }), atB, 'B saw no request');
  t.same(requestsTo('/egress/'), ['GET /egress/1'], 'nothing reached the upstream');

  await setPolicy(sidecarA, policyA, A_OPEN);
  assertStatus(t, await viaA(keep, '/egress/3'), 'connect permitted again (positive control)');
});

// ---------------------------------------------------------------------------------------------
// (b) A bad policy keeps the last good one

t.test('a policy that fails validation is refused: 422 with policy id and line; the last good policy stays; metric and error log', async (t) => {
  const good = await setPolicy(sidecarB, policyB, B_ALL);
  const failuresBefore = metricSum(await metrics(sidecarB), 'sigil_policy_reloads_total', { result: 'failure' });
  const errorsBefore = sidecarB.proc.lines.filter((l) => l.level === 'error').length;
  const raw = await rawToB(t);
  const ok = await get(raw, '/bad/1');
  t.equal(ok.kind === 'response' && ok.status, 200, 'allowed under the good policy (positive control)');

  // Had it been applied, `http` would be denied (the valid a-http permit is gone).
  const bad = `${B_CONNECT}\n${B_MESSAGES}\n\n@id("needs-verb")\npermit (principal, action == Action::"http", resource)\nwhen {\n  context.http.verb == "GET"\n};\n`;
  const badLine = bad.split('\n').findIndex((l) => l.includes('context.http.verb')) + 1;
  const policyLine = bad.split('\n').findIndex((l) => l.includes('@id("needs-verb")')) + 1;
  const tmp = `${policyB}.bad`;
  await writeFile(tmp, bad);
  await rename(tmp, policyB);
  const r = await postReload(sidecarB);
  t.equal(r.status, 422, 'reload refused with 422');
  t.match(r.json, { error: 'policy_invalid' }, 'policy_invalid');
  const issue = Array.isArray(r.json.issues) ? r.json.issues.find((i: { policyId?: string }) => i.policyId === 'needs-verb') : undefined;
  t.ok(issue, `an issue names the policy id (${JSON.stringify(r.json.issues)})`);
  t.equal(issue?.line, badLine, `the issue's line is the one with the unknown attribute (line ${badLine}; the policy starts on line ${policyLine})`);
  t.type(issue?.column, 'number', 'with a column');
  t.match(issue?.message, /verb/, 'the message names the unknown attribute');
  t.notMatch(JSON.stringify(r.json), /permit \(/, 'the answer does not echo the policy text');

  const same = await get(raw, '/bad/2');
  t.equal(same.kind === 'response' && same.status, 200, 'the same connection still behaves per the old policy');
  const fresh = await mtlsRequest({ address: sidecarB.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, path: '/bad/3' });
  assertStatus(t, fresh, 'a new connection too');
  t.equal(await policyVersion(sidecarB), good, '/status still shows the old version');

  const m = await metrics(sidecarB);
  t.ok(metricSum(m, 'sigil_policy_reloads_total', { result: 'failure' }) >= failuresBefore + 1, 'sigil_policy_reloads_total{result="failure"} went up');
  t.equal(metricSum(m, 'sigil_policy_version_info', { version: good }), 1, 'sigil_policy_version_info still shows the old version');
  t.same(
    m.filter((s) => s.name === 'sigil_policy_version_info').map((s) => s.labels.version),
    [good],
    'and only that one',
  );
  const errorLine = await waitUntil(() => sidecarB.proc.lines.filter((l) => l.level === 'error').slice(errorsBefore).find((l) => /policy/.test(String(l.msg))), 2_000);
  t.ok(errorLine, `the sidecar logged an error line (${JSON.stringify(errorLine)})`);

  // A syntax error: no policy id to name, but a line.
  const broken = `${B_ALL}\n@id("broken") permit (principal, action == Action::"http", resource) when {\n`;
  await writeFile(tmp, broken);
  await rename(tmp, policyB);
  const r2 = await postReload(sidecarB);
  t.equal(r2.status, 422, 'a parse error is refused with 422 too');
  t.ok(Array.isArray(r2.json.issues) && r2.json.issues.some((i: { line?: number }) => typeof i.line === 'number'), `with a line (${JSON.stringify(r2.json.issues)})`);
  const still = await get(raw, '/bad/4');
  t.equal(still.kind === 'response' && still.status, 200, 'still the old policy');
  t.same(requestsTo('/bad/'), ['GET /bad/1', 'GET /bad/2', 'GET /bad/3', 'GET /bad/4'], 'every request was forwarded under the old policy');

  await setPolicy(sidecarB, policyB, B_ALL);
});

// ---------------------------------------------------------------------------------------------
// (c) Dry-run

t.test('dry-run forwards what the policy denies and records it (audit wouldDeny, metric would_deny); enforce mode refuses it', async (t) => {
  const version = await policyVersion(sidecarDry);
  const post = { method: 'POST', path: '/dry/items', body: '{"name":"x"}', headers: { 'content-type': 'application/json' } };
  const before = upstream.requests.length;
  const r = await mtlsRequest({ address: sidecarDry.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, ...post });
  assertStatus(t, r, 'dry-run: POST /dry/items forwarded');
  t.match(upstream.requests.slice(before), [{ method: 'POST', url: '/dry/items', body: '{"name":"x"}' }], 'the upstream received it');

  const enforced = await mtlsRequest({ address: sidecarEnforced.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, ...post });
  assertForbidden(t, enforced, 'enforce mode, same policy, same request (positive control)', []);
  t.equal(upstream.requests.length, before + 1, 'the enforced one never reached the upstream');

  const [line] = await auditLines(auditDry, (l) => l.action === 'http' && l.http?.path === '/dry/items');
  t.match(
    line,
    {
      reporter: 'inbound',
      source: ID_A,
      destination: ID_DRY,
      action: 'http',
      resource: { type: 'Agent', id: ID_DRY },
      decision: 'allow',
      wouldDeny: true,
      reason: 'policy_denied',
      policies: [],
      policyVersion: version,
      http: { method: 'POST', path: '/dry/items' },
    },
    'audit: allowed through, marked wouldDeny with the deny reason',
  );

  const read = await mtlsRequest({ address: sidecarDry.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, path: '/dry/read' });
  assertStatus(t, read, 'dry-run: an allowed GET');
  const [readLine] = await auditLines(auditDry, (l) => l.action === 'http' && l.http?.path === '/dry/read');
  t.match(readLine, { decision: 'allow', wouldDeny: false, reason: 'allowed', policies: ['org-http-reads'] }, 'audit: a real allow is not marked');

  // A JSON-RPC call and a WebSocket message the policy denies also go through, recorded.
  const call = await mtlsRequest({
    address: sidecarDry.inbound,
    certPem: leafA.pem,
    keyPem: leafA.keyPem,
    method: 'POST',
    path: '/mcp',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'delete_logs', arguments: {} } }),
  });
  assertStatus(t, call, 'dry-run: tools/call forwarded');
  t.same(call.gotHttpResponse && call.json, { jsonrpc: '2.0', id: 1, result: { content: [{ type: 'text', text: 'called delete_logs' }] } }, 'executed by the upstream');
  const [callLine] = await auditLines(auditDry, (l) => l.action === 'mcp.tools/call');
  t.match(callLine, { decision: 'allow', wouldDeny: true, reason: 'policy_denied', resource: { type: 'Tool', name: 'delete_logs', agent: ID_DRY }, jsonrpc: { method: 'tools/call', tool: 'delete_logs' } }, 'audit: the tool call is marked');
  const stream = await ws(t, `wss://${sidecarDry.inbound}/dry/ws`, { cert: leafA.pem, key: leafA.keyPem, rejectUnauthorized: false });
  t.equal((await stream.roundTrip('would be denied')).data.toString(), 'would be denied', 'dry-run: a WebSocket message goes both ways');
  const [wsLine] = await auditLines(auditDry, (l) => l.action === 'websocket.message');
  t.match(wsLine, { decision: 'allow', wouldDeny: true, reason: 'policy_denied' }, 'audit: the message is marked');

  const m = await metrics(sidecarDry);
  t.ok(metricSum(m, 'sigil_authz_decisions_total', { action: 'http', decision: 'would_deny', reason: 'policy_denied' }) >= 1, 'sigil_authz_decisions_total{action="http",decision="would_deny"} ≥ 1');
  t.ok(metricSum(m, 'sigil_authz_decisions_total', { action: 'mcp.tools/call', decision: 'would_deny' }) >= 1, '… and for the tool call');
  t.equal(metricSum(m, 'sigil_authz_decisions_total', { decision: 'deny' }), 0, 'no real denies in dry-run');
  t.ok(metricSum(await metrics(sidecarEnforced), 'sigil_authz_decisions_total', { action: 'http', decision: 'deny' }) >= 1, 'enforce mode counted a deny');
});

// ---------------------------------------------------------------------------------------------
// (d) Audit through the pair, with trace context

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

t.test('audit lines for an allow and a deny through the pair, on both sidecars, with the agent’s trace id carried through', async (t) => {
  const agentPair = await readFile(`${FIXTURES}agent-pair.cedar`, 'utf8');
  const versionB = await setPolicy(sidecarB, policyB, agentPair);
  const versionA = await setPolicy(sidecarA, policyA, A_OPEN);
  const traceAllow = randomBytes(16).toString('hex');
  const traceDeny = randomBytes(16).toString('hex');
  const span = randomBytes(8).toString('hex');

  const before = upstream.requests.length;
  const allowed = await viaA(false, '/v1/tasks?token=s3cr3t-query', { headers: { traceparent: `00-${traceAllow}-${span}-01` } });
  assertStatus(t, allowed, 'GET /v1/tasks through the pair');
  const forwarded = upstream.requests.slice(before);
  t.equal(forwarded.length, 1, 'reached the upstream');
  const upstreamTp = String(forwarded[0]?.headers['traceparent'] ?? '');
  t.match(upstreamTp, TRACEPARENT, `the upstream got a traceparent (${upstreamTp})`);
  t.equal(TRACEPARENT.exec(upstreamTp)?.[1], traceAllow, 'with the agent’s trace id');
  t.not(TRACEPARENT.exec(upstreamTp)?.[2], span, 'and a new span id (each sidecar is a hop)');

  const denied = await viaA(false, '/v1/tasks/9', { method: 'DELETE', headers: { traceparent: `00-${traceDeny}-${span}-01` } });
  assertForbidden(t, denied, 'DELETE /v1/tasks/9 (denied at B: A’s policy is open)', ['no-task-deletion']);
  t.equal(upstream.requests.length, before + 1, 'the denied call never reached the upstream');

  // B, the callee's side.
  const [bAllow] = await auditLines(auditB, (l) => l.action === 'http' && l.http?.method === 'GET' && l.http?.path === '/v1/tasks');
  t.match(
    bAllow,
    {
      reporter: 'inbound',
      source: ID_A,
      destination: ID_B,
      action: 'http',
      resource: { type: 'Agent', id: ID_B },
      decision: 'allow',
      wouldDeny: false,
      reason: 'allowed',
      policies: ['planner-uses-task-api'],
      policyVersion: versionB,
      http: { method: 'GET', path: '/v1/tasks', host: 'agent-b' },
    },
    'B: the allow line',
  );
  t.match(bAllow?.requestId, UUID, 'B: with a request id');
  t.same(
    Object.keys(bAllow ?? {}),
    ['time', 'requestId', 'traceparent', 'reporter', 'source', 'destination', 'action', 'resource', 'decision', 'wouldDeny', 'reason', 'policies', 'policyVersion', 'http'],
    'B: keys in the documented order',
  );
  t.equal(TRACEPARENT.exec(String(bAllow?.traceparent))?.[1], traceAllow, 'B: the line carries the agent’s trace id');
  t.equal(bAllow?.traceparent, upstreamTp, 'B: the line’s traceparent is the one B sent to the upstream');

  const [bDeny] = await auditLines(auditB, (l) => l.action === 'http' && l.http?.method === 'DELETE');
  t.match(
    bDeny,
    {
      reporter: 'inbound',
      source: ID_A,
      destination: ID_B,
      action: 'http',
      decision: 'deny',
      wouldDeny: false,
      reason: 'policy_denied',
      policies: ['no-task-deletion'],
      policyVersion: versionB,
      http: { method: 'DELETE', path: '/v1/tasks/9' },
    },
    'B: the deny line',
  );
  t.equal(TRACEPARENT.exec(String(bDeny?.traceparent))?.[1], traceDeny, 'B: the deny line carries the agent’s trace id');

  const [bConnect] = await auditLines(auditB, (l) => l.action === 'connect' && l.source === ID_A && l.policyVersion === versionB);
  t.match(bConnect, { reporter: 'inbound', destination: ID_B, decision: 'allow', policies: ['planner-connects-to-worker'] }, 'B: the connect decision is recorded too');
  t.notOk(bConnect && 'requestId' in bConnect, 'B: a connect line has no request id');

  // A, the caller's side.
  const [aAllow] = await auditLines(auditA, (l) => l.action === 'http' && l.http?.path === '/v1/tasks');
  t.match(
    aAllow,
    {
      reporter: 'outbound',
      source: ID_A,
      destination: ID_B,
      action: 'http',
      resource: { type: 'Agent', id: ID_B },
      decision: 'allow',
      wouldDeny: false,
      reason: 'allowed',
      policies: ['egress-http'],
      policyVersion: versionA,
      http: { method: 'GET', path: '/v1/tasks' },
    },
    'A: the allow line',
  );
  t.equal(TRACEPARENT.exec(String(aAllow?.traceparent))?.[1], traceAllow, 'A: the same trace id (both sides of one call correlate)');
  const [aDelete] = await auditLines(auditA, (l) => l.action === 'http' && l.http?.method === 'DELETE');
  t.match(aDelete, { reporter: 'outbound', decision: 'allow', policies: ['egress-http'] }, 'A: the DELETE was allowed out (B denied it)');
  t.equal(TRACEPARENT.exec(String(aDelete?.traceparent))?.[1], traceDeny, 'A: with its trace id');

  const everything = JSON.stringify([...(await readAudit(auditA)), ...(await readAudit(auditB))]);
  t.notMatch(everything, /s3cr3t-query/, 'no query string in either audit file');
  t.notMatch(everything, /permit \(|forbid \(/, 'no policy text in either audit file');
  await setPolicy(sidecarB, policyB, B_ALL);
});
