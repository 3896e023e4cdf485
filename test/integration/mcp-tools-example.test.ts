// examples/mcp-tools run for real, the way its README runs it by hand: a dev CA and the DEV ONLY
// identity provider made with the CLI, the broker and both sidecars started with copies of the
// example's own configs (only listen addresses and the addresses that follow from them edited,
// since every process here binds port 0), the example's tool-server.mjs, and caller.mjs for
// every call. Each refusal checks that the tool server never saw the call, and has a positive
// control beside it.
//
//   caller.mjs ──plain──▶ caller sidecar (exchange at the broker) ══mTLS══▶ tool sidecar
//     (policy.cedar, per tool) ──plain──▶ tool-server.mjs
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import YAML from 'yaml';
import { compileCedarPolicy } from '../../src/authz/index.js';
import { issueSvidToDir } from '../../src/cli/ca.js';
import { SIGIL_BIN, spawnJsonLines, type JsonLineProcess } from '../../src/cli/processes.js';
import { loadConfig } from '../../src/config/index.js';
import { compileBrokerPolicy } from '../../src/delegation/broker-policy.js';
import { loadBrokerConfig } from '../../src/delegation/broker-config.js';
import { nestAct, signDelegationToken, SigningKeyRing } from '../../src/delegation/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';
import { mtlsRequest, plainRequest } from '../helpers/clients.js';
import { runBroker, runSigil, tempDir, type RunningBroker, type RunningSigil } from '../helpers/env.js';
import { auditLines } from '../helpers/observe.js';

const EXAMPLE = fileURLToPath(new URL('../../../examples/mcp-tools/', import.meta.url));
const CALLER = join(EXAMPLE, 'caller.mjs');
const ID_TOOLS = 'spiffe://example.org/mcp/tools';
const ID_ASSISTANT = 'spiffe://example.org/agent/support-assistant';
const ID_OTHER = 'spiffe://example.org/agent/reporting';
const ISSUER = 'https://broker.example.org';
const REFUSED = -32043;

/** What an example config gets in the temp copy: each path must already exist in the example. */
type Edits = [path: (string | number)[], value: string][];

/** Copies an example config into `dir`, changing only `edits`; returns the copy's path. */
async function exampleConfig(dir: string, name: string, edits: Edits): Promise<string> {
  const doc = YAML.parseDocument(await readFile(join(EXAMPLE, name), 'utf8'));
  for (const [path, value] of edits) {
    if (!doc.hasIn(path)) throw new Error(`${name}: no ${path.join('.')} in the example (has it changed?)`);
    doc.setIn(path, value);
  }
  const copy = join(dir, name);
  await writeFile(copy, String(doc));
  return copy;
}

function run(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { env: { ...process.env, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

let dir: string;
let toolServer: JsonLineProcess;
let broker: RunningBroker;
let toolSidecar: RunningSigil;
let callerSidecar: RunningSigil;
const tokens: Record<'alice' | 'bob', string> = { alice: '', bob: '' };

/** caller.mjs through the caller's sidecar, as the README runs it; its exit code and answer. */
async function caller(args: string[], token?: string): Promise<{ code: number; answer: any }> {
  const r = await run([CALLER, ...args], { SIGIL_OUTBOUND: callerSidecar.outbound, USER_TOKEN: token ?? '' });
  let answer: unknown = r.stdout;
  try {
    answer = JSON.parse(r.stdout);
  } catch {
    // not JSON: kept as text for the failure message
  }
  return { code: r.code, answer };
}

/** The tools/call lines the tool server logged for `tool` (it logs every call it is handed). */
function served(tool: string): Record<string, unknown>[] {
  return toolServer.lines.filter((l) => l.msg === 'call' && l.tool === tool);
}

t.before(async () => {
  dir = await tempDir(t, 'sigil-mcp-example-');
  // The README's layout: configs and policies side by side, generated state in ./state.
  for (const f of ['policy.cedar', 'broker.cedar']) await copyFile(join(EXAMPLE, f), join(dir, f));
  const ca = await run([SIGIL_BIN, 'ca', 'init', '--trust-domain', 'example.org', '--dir', join(dir, 'state', 'ca')]);
  if (ca.code !== 0) throw new Error(`sigil ca init: ${ca.stderr}`);
  const idp = await run([SIGIL_BIN, 'dev-idp', 'init', '--dir', join(dir, 'state', 'dev-idp')]);
  if (idp.code !== 0) throw new Error(`sigil dev-idp init: ${idp.stderr}`);
  for (const [user, scope] of [
    ['alice', 'docs:read tickets:read tickets:write'],
    ['bob', 'docs:read tickets:read'],
  ] as const) {
    const r = await run([SIGIL_BIN, 'dev-token', '--dir', join(dir, 'state', 'dev-idp'), '--sub', user, '--scope', scope, '--aud', 'sigil-broker']);
    if (r.code !== 0) throw new Error(`sigil dev-token: ${r.stderr}`);
    tokens[user] = r.stdout.trim();
  }

  broker = await runBroker(
    t,
    await exampleConfig(dir, 'broker.yaml', [
      [['listen'], '127.0.0.1:0'],
      [['admin', 'listen'], '127.0.0.1:0'],
    ]),
  );

  toolServer = spawnJsonLines([join(EXAMPLE, 'tool-server.mjs'), '0']);
  const killOnExit = (): void => void toolServer.child.kill('SIGKILL');
  process.once('exit', killOnExit);
  t.teardown(async () => {
    await toolServer.stop();
    process.off('exit', killOnExit);
  });
  const toolPort = (await toolServer.waitFor((l) => l.msg === 'listening')).port as number;

  toolSidecar = await runSigil(
    t,
    await exampleConfig(dir, 'tool-sidecar.yaml', [
      [['inbound', 'listen'], '127.0.0.1:0'],
      [['inbound', 'upstream'], `http://127.0.0.1:${toolPort}`],
      [['admin', 'listen'], '127.0.0.1:0'],
    ]),
  );
  callerSidecar = await runSigil(
    t,
    await exampleConfig(dir, 'caller-sidecar.yaml', [
      [['outbound', 'listen'], '127.0.0.1:0'],
      [['outbound', 'routes', 0, 'address'], toolSidecar.inbound],
      [['delegation', 'broker', 'url'], `https://${broker.address}/token`],
      [['admin', 'listen'], '127.0.0.1:0'],
    ]),
  );
});

t.test('the example as shipped: configs load, policies compile, the IDs agree', async (t) => {
  const tool = await loadConfig(join(EXAMPLE, 'tool-sidecar.yaml'));
  const call = await loadConfig(join(EXAMPLE, 'caller-sidecar.yaml'));
  const brokerConfig = await loadBrokerConfig(join(EXAMPLE, 'broker.yaml'));
  t.match(tool.identity, { kind: 'dev', spiffeId: ID_TOOLS });
  t.equal(tool.policy.cedar, join(EXAMPLE, 'policy.cedar'), 'the tool sidecar enforces policy.cedar');
  t.match(call.identity, { kind: 'dev', spiffeId: ID_ASSISTANT });
  const route = call.outbound?.routes[0];
  t.equal(route?.spiffeId, ID_TOOLS, "the caller's route accepts only the tool server");
  t.same(route?.exchange?.scope, ['docs:read', 'tickets:read', 'tickets:write'], 'the route asks for the scopes the policy knows');
  t.equal(call.delegation?.broker?.spiffeId, brokerConfig.identity.kind === 'dev' ? brokerConfig.identity.spiffeId : undefined, 'the caller expects the broker the broker config runs as');
  t.equal(brokerConfig.issuer, ISSUER);
  t.equal(tool.delegation?.issuer, ISSUER, 'the tool sidecar trusts the broker issuer');
  t.equal(call.delegation?.issuer, ISSUER);
  t.equal(tool.delegation?.jwks, brokerConfig.jwksOut, "the tool sidecar reads the keys the broker writes");

  const policy = await readFile(join(EXAMPLE, 'policy.cedar'), 'utf8');
  t.doesNotThrow(() => compileCedarPolicy(policy, 'policy.cedar'), 'policy.cedar compiles against the schema');
  const brokerPolicy = await readFile(join(EXAMPLE, 'broker.cedar'), 'utf8');
  t.doesNotThrow(() => compileBrokerPolicy(brokerPolicy, 'broker.cedar'), 'broker.cedar compiles');
  t.throws(() => compileCedarPolicy(policy.replace('context.delegation.scope.contains', 'context.delegation.scopes.contains'), 'broken.cedar'), 'a policy that reads an unknown attribute does not (positive control)');
});

t.test('read tools: alice, via the assistant, reads a ticket; the tool server is told both', async (t) => {
  const r = await caller(['call', 'read_ticket', '{"id":"T-42"}'], tokens.alice);
  t.equal(r.code, 0, 'caller.mjs exits 0');
  t.equal(r.answer.status, 200);
  const seen = r.answer.result?.structuredContent;
  t.match(seen, { tool: 'read_ticket', arguments: { id: 'T-42' } }, 'the tool ran with the arguments sent');
  t.equal(seen?.caller.agent, ID_ASSISTANT, 'the verified calling agent');
  t.match(seen?.caller.delegation, { sub: 'alice', actors: [ID_ASSISTANT], depth: 1 }, 'the person behind the call, acted for by the assistant');
  t.same(seen?.caller.delegation.scope, ['docs:read', 'tickets:read', 'tickets:write'], "alice's scope as the route asked for it");
  t.match(served('read_ticket'), [{ agent: ID_ASSISTANT, user: 'alice' }], 'the tool server logged the call');

  const bob = await caller(['call', 'search_docs', '{"query":"sso"}'], tokens.bob);
  t.equal(bob.code, 0, 'any person may have docs searched');
  t.equal(bob.answer.result?.structuredContent.caller.delegation.sub, 'bob');
});

t.test('close_ticket needs tickets:write: bob lacks it, so his token is narrowed and the call refused', async (t) => {
  const bob = await caller(['call', 'close_ticket', '{"id":"T-42"}'], tokens.bob);
  t.equal(bob.code, 1, 'caller.mjs exits 1');
  t.equal(bob.answer.status, 200, 'a JSON-RPC refusal is an HTTP 200');
  t.match(bob.answer.error, { code: REFUSED, message: 'forbidden: policy_denied', data: { reason: 'policy_denied' } }, 'a JSON-RPC refusal by Sigil');
  t.same(bob.answer.error?.data.policies, ['close-ticket-needs-tickets-write'], 'the denial names the rule');
  t.same(served('close_ticket'), [], 'the tool server never saw it');
  const issued = broker.proc.lines.find((l) => l.msg === 'token issued' && l.sub === 'bob');
  t.match(issued, { peer: ID_ASSISTANT, audience: ID_TOOLS, scope: ['docs:read', 'tickets:read'], dropped: ['tickets:write'] }, 'the broker granted what bob has, not what the route asked for');

  const bobList = await caller(['list'], tokens.bob);
  t.same(bobList.answer.result?.tools.map((x: { name: string }) => x.name), ['search_docs', 'read_ticket'], "bob's tools/list leaves close_ticket out");
  // The audit trail tells the filter's decisions from calls: the same action, marked `listing`.
  const audit = join(dir, 'state', 'tool-sidecar-audit.jsonl');
  const closes = await auditLines(audit, (l) => l.jsonrpc?.tool === 'close_ticket' && l.delegation?.sub === 'bob' && l.decision === 'deny');
  t.same(closes.map((l) => l.jsonrpc.listing ?? 'call'), ['call', 'tools/list'], "bob's refused call, then the filter hiding the tool from his list");
  t.ok(closes.every((l) => l.action === 'mcp.tools/call' && l.jsonrpc.method === 'tools/call'), 'both decided by the tools/call rules');

  // Positive control: the same call for alice, who granted tickets:write.
  const alice = await caller(['call', 'close_ticket', '{"id":"T-42","resolution":"fixed"}'], tokens.alice);
  t.equal(alice.code, 0, 'alice may close the ticket');
  t.match(alice.answer.result?.structuredContent, { tool: 'close_ticket', arguments: { id: 'T-42', resolution: 'fixed' }, caller: { agent: ID_ASSISTANT, delegation: { sub: 'alice' } } });
  t.match(served('close_ticket'), [{ agent: ID_ASSISTANT, user: 'alice' }], 'only alice\'s close reached the tool server');
  const aliceList = await caller(['list'], tokens.alice);
  t.same(aliceList.answer.result?.tools.map((x: { name: string }) => x.name), ['search_docs', 'read_ticket', 'close_ticket'], "alice's tools/list has it");
});

t.test('delete_project is forbidden for everyone, by a named forbid', async (t) => {
  const r = await caller(['call', 'delete_project', '{"project":"apollo"}'], tokens.alice);
  t.equal(r.code, 1);
  t.match(r.answer.error, { code: REFUSED, data: { reason: 'policy_denied' } }, 'refused by Sigil, even for alice');
  t.same(r.answer.error?.data.policies, ['no-project-deletion'], 'the denial names the forbid');
  t.same(served('delete_project'), [], 'the tool server never saw it');
  const list = await caller(['list'], tokens.alice);
  t.notOk(list.answer.result?.tools.some((x: { name: string }) => x.name === 'delete_project'), 'and no one is shown it in tools/list');

  // Positive control: the refusal is Sigil's. The tool exists and runs when called on the tool
  // server's own loopback port (where only processes on its host can reach it).
  const direct = await plainRequest({
    address: `127.0.0.1:${String(toolServer.lines.find((l) => l.msg === 'listening')?.port)}`,
    method: 'POST',
    path: '/mcp',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'delete_project', arguments: { project: 'scratch' } } }),
  });
  t.ok(direct.gotHttpResponse && direct.json?.result?.structuredContent?.tool === 'delete_project', 'the tool server itself runs delete_project');
});

t.test('no person behind the call: write tools are refused, as are read tools', async (t) => {
  const before = served('close_ticket').length;
  const r = await caller(['call', 'close_ticket', '{"id":"T-7"}']);
  t.equal(r.code, 1);
  t.match(r.answer.error, { code: REFUSED, data: { reason: 'policy_denied' } }, 'refused by Sigil');
  t.same(r.answer.error?.data.policies, ['writes-need-a-person'], 'the denial names the rule');
  t.equal(served('close_ticket').length, before, 'the tool server never saw it');

  const read = await caller(['call', 'read_ticket', '{"id":"T-7"}']);
  t.match(read.answer.error, { code: REFUSED, data: { reason: 'policy_denied', policies: [] } }, 'read tools need a person too (no permit: a default deny)');
  const list = await caller(['list']);
  t.same(list.answer.result?.tools, [], 'tools/list without a person shows nothing');

  // Positive control: the same call with alice's token behind it.
  const alice = await caller(['call', 'close_ticket', '{"id":"T-7"}'], tokens.alice);
  t.equal(alice.code, 0, 'allowed with a person behind it');
  t.equal(served('close_ticket').length, before + 1, 'it reached the tool server');
});

t.test('only the support assistant may close tickets, even with tickets:write', async (t) => {
  // Another agent of the trust domain, holding a delegation token for alice with tickets:write
  // signed by the broker's own key (as if the broker policy had been widened for it).
  await issueSvidToDir(join(dir, 'state', 'ca'), SpiffeId.parse(ID_OTHER), 15 * 60_000, join(dir, 'reporting'));
  const cert = await readFile(join(dir, 'reporting', 'svid.pem'), 'utf8');
  const key = await readFile(join(dir, 'reporting', 'svid.key'), 'utf8');
  const ring = await SigningKeyRing.load(join(dir, 'state', 'broker-keys'));
  const now = Math.floor(Date.now() / 1000);
  const token = await signDelegationToken(
    { iss: ISSUER, sub: 'alice', aud: ID_TOOLS, client_id: ID_OTHER, act: nestAct(ID_OTHER, undefined), scope: 'tickets:read tickets:write', iat: now, exp: now + 120, jti: randomBytes(12).toString('base64url'), task: 'reporting-task' },
    ring.current(),
  );
  const callAs = (tool: string) =>
    mtlsRequest({
      address: toolSidecar.inbound,
      certPem: cert,
      keyPem: key,
      method: 'POST',
      path: '/mcp',
      headers: { host: 'mcp-tools', 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: tool, arguments: { id: 'T-9' } } }),
      timeoutMs: 15_000,
    });
  const before = served('close_ticket').length;
  const close = await callAs('close_ticket');
  t.ok(close.gotHttpResponse, close.gotHttpResponse ? 'answered' : close.error);
  if (close.gotHttpResponse) {
    t.match(close.json?.error, { code: REFUSED, data: { reason: 'policy_denied', policies: [] } }, 'no permit for this agent: a default deny');
  }
  t.equal(served('close_ticket').length, before, 'the tool server never saw it');

  // Positive control: the same agent and token may read (any agent of the domain, for a person).
  const read = await callAs('read_ticket');
  t.ok(read.gotHttpResponse && read.json?.result?.structuredContent?.caller?.agent === ID_OTHER, 'read_ticket ran for it');
  t.match(served('read_ticket').at(-1), { agent: ID_OTHER, user: 'alice' });
});
