// Cost of per-call authorization with a 100-rule Cedar policy, beside the allow-list baseline.
//
// Part 1, in process: the same mix of AuthzRequests (connect, http with varying paths and
// methods, mcp.tools/call on Tool resources, websocket.message) through CedarAuthorizer and
// through AllowListAuthorizer (100 patterns). Decisions/s from batches (so the timer is not
// what is measured), per-call p50/p99 from individually timed calls. To show where the Cedar
// time goes, the WASM call `statefulIsAuthorized` is also timed alone with prebuilt call
// objects: with the 100-rule set, with a 1-rule set (fixed cost per call), without the
// schema (entity parsing/validation cost; not semantically equivalent, see the output), and
// against one preparsed set per action (a prototype of an optimisation; same decisions).
//
// Part 2, through the real sidecar pair (`sigil run` children, as in bench/proxy.ts):
// client → sidecar A outbound ══mTLS══▶ sidecar B inbound → upstream, once with
// `policy.allow` on both sidecars and once with `policy.cedar` = the 100-rule file on both
// (each request is authorized twice: egress on A, inbound on B). Both pairs run at the same
// time and are loaded in alternating rounds: first at concurrency 32 (throughput, CPU per
// request), then at concurrency 1 (the added latency without queueing). The sidecars' own
// metrics (decisions per request, mean evaluation time) are scraped before and after.
import { writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { AllowListAuthorizer, CedarAuthorizer, compileCedarPolicy, type Authorizer, type AuthzRequest, type Resource } from '../src/authz/index.js';
import { SpiffeId } from '../src/spiffe/index.js';
import { ID_A, ID_B, TD, fmt, machineLine, makePki, printTable, processCpuMicros, serverScript, sleep, spawnServer, spawnSigil, splitHostPort, summarize, writeConfig } from './lib.js';

export interface AuthzBenchOptions {
  /** Part 1: measured seconds per variant, split over `rounds`. */
  inprocSeconds: number;
  /** Part 1: at most this many individually timed calls per variant per round (a quarter of the round's time). */
  singleCalls: number;
  /** Part 2: measured seconds per pair at `concurrency`, split over `rounds`. */
  seconds: number;
  /** Part 2: measured seconds per pair at concurrency 1 (unloaded latency), split over `rounds`. */
  serialSeconds: number;
  warmupSeconds: number;
  concurrency: number;
  rounds: number;
}

const DEFAULTS: AuthzBenchOptions = {
  inprocSeconds: Number(process.env.BENCH_AUTHZ_INPROC_SECONDS ?? 1.6),
  singleCalls: Number(process.env.BENCH_AUTHZ_SINGLE_CALLS ?? 4000),
  seconds: Number(process.env.BENCH_AUTHZ_SECONDS ?? 8),
  serialSeconds: Number(process.env.BENCH_AUTHZ_SERIAL_SECONDS ?? 3),
  warmupSeconds: Number(process.env.BENCH_AUTHZ_WARMUP ?? 2),
  concurrency: Number(process.env.BENCH_AUTHZ_CONCURRENCY ?? 32),
  rounds: Number(process.env.BENCH_AUTHZ_ROUNDS ?? 4),
};

/** Decisions per timed batch in the throughput phase. */
const BATCH = 64;
const SCHEMA_NAME = 'sigil'; // as registered by src/authz/cedar.ts
const TDN = TD.name;
const N_AGENTS = 40;
const N_TOOL_SERVERS = 4;
const svc = (i: number): string => `spiffe://${TDN}/agent/svc-${((i % N_AGENTS) + N_AGENTS) % N_AGENTS}`;
const toolServer = (m: number): string => `spiffe://${TDN}/mcp/tools-${m % N_TOOL_SERVERS}`;
const METHODS = ['GET', 'POST', 'PUT'] as const;

// ---------------------------------------------------------------------------------------------
// The policy: exactly 100 rules (`@id("rule-N")`), 95 permits and 5 forbids, valid against
// schema/sigil.cedarschema in strict mode. Agent-to-agent connects, HTTP method+path rules,
// per-tool MCP rules, WebSocket message rules, an MCP session group rule, the bench pair's two
// rules (agent/a → agent/b), and forbids that apply to every request.

export function benchCedarPolicy(): string {
  const rules: string[] = [];
  const add = (body: string): void => void rules.push(`@id("rule-${rules.length}")\n${body}\n`);
  // 30 connect permits over distinct pairs.
  for (let i = 0; i < 30; i++) {
    add(`permit (principal == Agent::"${svc(i)}", action == Action::"connect", resource == Agent::"${svc(i + 1)}");`);
  }
  // 40 HTTP permits: one method and one path prefix per agent pair.
  for (let j = 0; j < 40; j++) {
    add(
      `permit (principal == Agent::"${svc(j)}", action == Action::"http", resource == Agent::"${svc(j + 1)}")\n` +
        `when { context.http.method == "${METHODS[j % 3]}" && context.http.path like "/api/v${(j % 3) + 1}/res-${j}/*" };`,
    );
  }
  // 14 per-tool permits, plus one attribute-based tool rule.
  for (let k = 0; k < 14; k++) {
    add(
      `permit (principal == Agent::"${svc(2 * k)}", action == Action::"mcp.tools/call", resource == Tool::"tool-${k}")\n` +
        `when { resource in Agent::"${toolServer(k)}" };`,
    );
  }
  add(
    `permit (principal, action == Action::"mcp.tools/call", resource in Agent::"${toolServer(0)}")\n` +
      `when { principal.path like "/agent/svc-1*" && ["search", "fetch"].contains(resource.name) };`,
  );
  // 7 WebSocket message permits.
  for (let w = 0; w < 7; w++) {
    add(
      `permit (principal in TrustDomain::"${TDN}", action == Action::"websocket.message", resource == Agent::"${svc(w)}")\n` +
        `when { context.http.path == "/ws/svc-${w}" && context.websocket.kind == "text" && context.websocket.size <= 65536 };`,
    );
  }
  // MCP session methods for everyone in the trust domain.
  add(
    `permit (principal in TrustDomain::"${TDN}", action in [Action::"mcp.initialize", Action::"mcp.ping", Action::"mcp.tools/list"], resource in TrustDomain::"${TDN}");`,
  );
  // The sidecar pair of part 2.
  add(`permit (principal == Agent::"${ID_A}", action == Action::"connect", resource == Agent::"${ID_B}");`);
  add(`permit (principal == Agent::"${ID_A}", action == Action::"http", resource == Agent::"${ID_B}")\nwhen { context.http.method == "GET" && context.http.path like "/bench*" };`);
  // 5 forbids, evaluated for every request.
  add(`forbid (principal, action == Action::"http", resource) when { context.http.method == "DELETE" };`);
  add(`forbid (principal, action in [Action::"http", Action::"websocket.message"], resource) when { context.http.path like "/admin/*" };`);
  add(`forbid (principal, action == Action::"mcp.tools/call", resource) when { resource.name like "delete_*" || resource.name like "drop_*" };`);
  add(`forbid (principal, action == Action::"websocket.message", resource) when { context.websocket.size > 1048576 };`);
  add(`forbid (principal == Agent::"${svc(N_AGENTS - 1)}", action, resource);`);
  if (rules.length !== 100) throw new Error(`bench policy has ${rules.length} rules, expected 100`);
  return `// Generated by bench/authz.ts: 100 rules (95 permits, 5 forbids) for the authz benchmark.\n\n${rules.join('\n')}`;
}

/** 100 allow-list entries; the exact agent entries come after 56 non-matching team patterns. */
export function benchAllowList(): string[] {
  const entries: string[] = [];
  for (let t = 0; t < 56; t++) entries.push(`spiffe://${TDN}/team-${t}/agent/*`);
  for (let i = 0; i < N_AGENTS; i++) entries.push(svc(i));
  entries.push(`spiffe://${TDN}/mcp/*`, `spiffe://${TDN}/ops/**`, ID_A.toString(), ID_B.toString());
  if (entries.length !== 100) throw new Error(`bench allow-list has ${entries.length} entries, expected 100`);
  return entries;
}

/** A deterministic mix: 25% connect, 40% http, 20% mcp.tools/call, 15% websocket.message. */
export function benchRequests(n = 1000): AuthzRequest[] {
  const ids = new Map<string, SpiffeId>();
  const id = (s: string): SpiffeId => {
    let v = ids.get(s);
    if (!v) ids.set(s, (v = SpiffeId.parse(s)));
    return v;
  };
  const agent = (s: string): Extract<Resource, { type: 'Agent' }> => ({ type: 'Agent', id: id(s) });
  const out: AuthzRequest[] = [];
  for (let i = 0; i < n; i++) {
    const slot = i % 20;
    const p = (i * 7) % N_AGENTS;
    const principal = id(svc(p));
    if (slot < 5) {
      // connect: mostly the permitted neighbour, sometimes a random one.
      const q = i % 3 === 0 ? (i * 13) % N_AGENTS : p + 1;
      out.push({ action: 'connect', direction: 'inbound', principal, resource: agent(svc(q)), peer: principal });
    } else if (slot < 13) {
      const method = ['GET', 'POST', 'PUT', 'DELETE', 'GET'][i % 5]!;
      const prefix = i % 4 === 3 ? '/admin' : `/api/v${(p % 3) + 1}/res-${p}`;
      const outbound = i % 2 === 1;
      const resource = agent(svc(p + 1));
      out.push({
        action: 'http',
        direction: outbound ? 'outbound' : 'inbound',
        principal,
        resource,
        peer: outbound ? resource.id : principal,
        http: { method, path: `${prefix}/items/${i}`, host: `svc-${(p + 1) % N_AGENTS}` },
      });
    } else if (slot < 17) {
      const k = i % 16;
      const name = k === 15 ? 'delete_everything' : k === 14 ? 'search' : `tool-${k}`;
      const server = id(toolServer(k % 14));
      out.push({
        action: 'mcp.tools/call',
        direction: 'inbound',
        principal,
        resource: { type: 'Tool', name, agent: server },
        peer: principal,
        http: { method: 'POST', path: '/mcp', host: `tools-${k % N_TOOL_SERVERS}` },
        jsonrpc: { method: 'tools/call', tool: name },
      });
    } else {
      const w = i % 9;
      out.push({
        action: 'websocket.message',
        direction: 'inbound',
        principal,
        resource: agent(svc(w)),
        peer: principal,
        http: { method: 'GET', path: `/ws/svc-${w}`, host: `svc-${w}` },
        websocket: { kind: i % 5 === 0 ? 'binary' : 'text', size: i % 11 === 0 ? 2 << 20 : 64 + (i % 4000) },
      });
    }
  }
  return out;
}

// The same call objects CedarAuthorizer builds (src/authz/cedar.ts), prebuilt once, so the
// WASM call can be timed alone.
function entityOf(s: SpiffeId): cedar.EntityJson[] {
  const td = s.trustDomain.name;
  return [
    { uid: { type: 'Agent', id: s.toString() }, attrs: { trustDomain: td, path: s.path }, parents: [{ type: 'TrustDomain', id: td }] },
    { uid: { type: 'TrustDomain', id: td }, attrs: {}, parents: [] },
  ];
}

function cedarCall(r: AuthzRequest, policySetId: string, withSchema: boolean): cedar.StatefulAuthorizationCall {
  const entities = entityOf(r.principal);
  let resource: { type: string; id: string };
  const res = r.resource;
  if (res.type === 'Agent') {
    resource = { type: 'Agent', id: res.id.toString() };
    if (!res.id.equals(r.principal)) entities.push(...entityOf(res.id));
  } else if (res.type === 'Tool') {
    resource = { type: 'Tool', id: res.name };
    entities.push({ uid: resource, attrs: { name: res.name }, parents: [{ type: 'Agent', id: res.agent.toString() }] });
    if (!res.agent.equals(r.principal)) entities.push(...entityOf(res.agent));
  } else if (res.type === 'Host') {
    resource = { type: 'Host', id: res.name };
    entities.push({ uid: resource, attrs: { name: res.name }, parents: [] });
  } else {
    resource = { type: 'Topic', id: res.subject };
    entities.push({ uid: resource, attrs: { subject: res.subject }, parents: [] });
  }
  const context: cedar.Context = { direction: r.direction, time: Math.floor(Date.now() / 1000) };
  if (r.http) context['http'] = { ...r.http };
  if (r.jsonrpc) context['jsonrpc'] = r.jsonrpc.tool === undefined ? { method: r.jsonrpc.method } : { method: r.jsonrpc.method, tool: r.jsonrpc.tool };
  if (r.websocket) context['websocket'] = { ...r.websocket };
  const call: cedar.StatefulAuthorizationCall = {
    principal: { type: 'Agent', id: r.principal.toString() },
    action: { type: 'Action', id: r.action },
    resource,
    context,
    entities,
    preparsedPolicySetId: policySetId,
    validateRequest: false,
  };
  if (withSchema) call.preparsedSchemaName = SCHEMA_NAME;
  return call;
}

/**
 * Prototype of an optimisation, for comparison only: one preparsed policy set per action,
 * holding just the policies whose action scope can match it (`==` that action, `in` a list
 * naming it, an unconstrained action, or `in` an action group, kept conservatively). A policy
 * whose action scope does not match is never satisfied, so decisions are unchanged. Returns
 * the set id to use for an action.
 */
function sliceByAction(text: string, version: string, actions: string[]): { setId: (action: string) => string; sizes: Map<string, number> } {
  const parts = cedar.policySetTextToParts(text);
  if (parts.type !== 'success') throw new Error('policySetTextToParts failed');
  const uidOf = (u: unknown): { type: string; id: string } => {
    const o = u as { type?: string; id?: string; __entity?: { type: string; id: string } };
    return o.__entity ?? { type: o.type!, id: o.id! };
  };
  const scoped = parts.policies.map((part, index) => {
    const json = cedar.policyToJson(part);
    if (json.type !== 'success') throw new Error('policyToJson failed');
    const p = json.json as { action: { op: string; entity?: unknown; entities?: unknown[] }; annotations?: Record<string, string> };
    const id = p.annotations?.['id'] ?? `policy${index}`;
    const a = p.action;
    let matches: (action: string) => boolean;
    if (a.op === '==') {
      const want = uidOf(a.entity).id;
      matches = (action) => action === want;
    } else if (a.op === 'in' && a.entities) {
      const want = new Set(a.entities.map((e) => uidOf(e).id));
      matches = (action) => want.has(action);
    } else {
      matches = () => true; // All, or `in` one group: kept (a superset is still exact)
    }
    return { id, part, matches };
  });
  const ids = new Map<string, string>();
  const sizes = new Map<string, number>();
  for (const action of actions) {
    const subset: Record<string, string> = {};
    for (const p of scoped) if (p.matches(action)) subset[p.id] = p.part;
    const setId = `${version}/sliced/${action}`;
    const r = cedar.preparsePolicySet(setId, { staticPolicies: subset });
    if (r.type !== 'success') throw new Error(`preparsePolicySet(${setId}) failed`);
    ids.set(action, setId);
    sizes.set(action, Object.keys(subset).length);
  }
  return { setId: (action) => ids.get(action)!, sizes };
}

// ---------------------------------------------------------------------------------------------
// Part 1: in-process decisions.

interface Variant {
  name: string;
  /** Returns 1 for allow, 0 for deny (so the work cannot be optimised away). */
  run: (i: number) => number;
  size: number;
  batchNs: number;
  batchDecisions: number;
  /** Per-decision µs of each batch. */
  batchMeans: number[];
  singleUs: number[];
  allowed: number;
  evaluated: number;
}

function variant(name: string, size: number, run: (i: number) => number): Variant {
  return { name, run, size, batchNs: 0, batchDecisions: 0, batchMeans: [], singleUs: [], allowed: 0, evaluated: 0 };
}

function runBatches(v: Variant, seconds: number, record: boolean): void {
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  let i = 0;
  let allowed = 0;
  let n = 0;
  for (;;) {
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < BATCH; k++) {
      allowed += v.run(i);
      if (++i === v.size) i = 0;
    }
    const t1 = process.hrtime.bigint();
    n += BATCH;
    if (record) {
      const ns = Number(t1 - t0);
      v.batchNs += ns;
      v.batchDecisions += BATCH;
      v.batchMeans.push(ns / 1000 / BATCH);
    }
    if (t1 >= deadline) break;
  }
  if (record) {
    v.allowed += allowed;
    v.evaluated += n;
  }
}

function runSingles(v: Variant, seconds: number, maxCalls: number): void {
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  let sink = 0;
  for (let k = 0, i = 0; k < maxCalls; k++) {
    const t0 = process.hrtime.bigint();
    sink += v.run(i);
    const t1 = process.hrtime.bigint();
    v.singleUs.push(Number(t1 - t0) / 1000);
    if (++i === v.size) i = 0;
    if (t1 >= deadline) break;
  }
  if (sink < 0) throw new Error('unreachable');
}

/** µs to build one call object in JS (entities, context), without calling into WASM. */
function buildCostUs(requests: AuthzRequest[], policySetId: string): number {
  // A plain loop of its own: run through the Variant machinery, next to the WASM-calling
  // variants, this crashed V8 in Node 20 (fatal "unreachable code" in the deoptimizer).
  let sink = 0;
  const n = Number(process.env.BENCH_AUTHZ_BUILD_CALLS ?? 200_000);
  for (let k = 0; k < n / 10; k++) sink += cedarCall(requests[k % requests.length]!, policySetId, true).entities.length;
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < n; k++) sink += cedarCall(requests[k % requests.length]!, policySetId, true).entities.length;
  const us = Number(process.hrtime.bigint() - t0) / 1000 / n;
  if (sink < 0) throw new Error('unreachable');
  return us;
}

function timerOverheadUs(): number {
  const s: number[] = [];
  for (let k = 0; k < 20_000; k++) {
    const t0 = process.hrtime.bigint();
    const t1 = process.hrtime.bigint();
    s.push(Number(t1 - t0) / 1000);
  }
  return summarize(s).median;
}

export async function runInProcess(o: AuthzBenchOptions): Promise<void> {
  const text = benchCedarPolicy();
  const compiled = compileCedarPolicy(text, 'bench-100-rules.cedar'); // throws with positions if invalid
  const single = compileCedarPolicy(`@id("only")\npermit (principal == Agent::"${ID_A}", action == Action::"connect", resource == Agent::"${ID_B}");\n`, 'bench-1-rule.cedar');
  const evalErrors: string[] = [];
  const cedarAuthz: Authorizer = new CedarAuthorizer(compiled, (errors) => evalErrors.push(...errors.map((e) => `${e.policyId}: ${e.message}`)));
  const allowAuthz: Authorizer = new AllowListAuthorizer(benchAllowList());
  const requests = benchRequests();
  const calls100 = requests.map((r) => cedarCall(r, compiled.version, true));
  const calls1 = requests.map((r) => cedarCall(r, single.version, true));
  const calls100NoSchema = requests.map((r) => cedarCall(r, compiled.version, false));
  const sliced = sliceByAction(text, compiled.version, [...new Set(requests.map((r) => r.action))]);
  const callsSliced = requests.map((r) => cedarCall(r, sliced.setId(r.action), true));
  const wasm = (calls: cedar.StatefulAuthorizationCall[]) => (i: number): number => {
    const a = cedar.statefulIsAuthorized(calls[i]!);
    if (a.type !== 'success') throw new Error(`cedar: ${a.errors.map((e) => e.message).join('; ')}`);
    return a.response.decision === 'allow' ? 1 : 0;
  };

  // Sanity: the prebuilt calls must decide exactly as CedarAuthorizer does.
  let mismatches = 0;
  requests.forEach((r, i) => {
    if ((cedarAuthz.authorize(r).allowed ? 1 : 0) !== wasm(calls100)(i)) mismatches++;
  });
  if (mismatches > 0) throw new Error(`prebuilt Cedar calls disagree with CedarAuthorizer on ${mismatches} requests`);

  let schemaless = 0;
  let slicedDiffer = 0;
  requests.forEach((_, i) => {
    const full = wasm(calls100)(i);
    if (full !== wasm(calls100NoSchema)(i)) schemaless++;
    if (full !== wasm(callsSliced)(i)) slicedDiffer++;
  });
  if (slicedDiffer > 0) throw new Error(`the action-sliced policy sets disagree with the full set on ${slicedDiffer} requests`);


  const kinds = new Map<string, number>();
  for (const r of requests) kinds.set(r.action, (kinds.get(r.action) ?? 0) + 1);
  process.stdout.write(
    `\n## authz (1/2): in-process decisions, 100-rule Cedar policy (95 permits, 5 forbids; ${compiled.ids.length} ids) vs 100-entry allow-list\n` +
      `${machineLine()}\n` +
      `request mix (${requests.length} distinct, cycled): ${[...kinds].map(([k, n]) => `${k} ${Math.round((n * 100) / requests.length)}%`).join(', ')}; ` +
      `${fmt(o.inprocSeconds, 1)}s per variant in ${o.rounds} alternating rounds: 3/4 of each round in batches of ${BATCH}, 1/4 in individually timed calls (≤${o.singleCalls} per round)\n`,
  );

  const variants: Variant[] = [
    variant('allow-list (baseline)', requests.length, (i) => (allowAuthz.authorize(requests[i]!).allowed ? 1 : 0)),
    variant('cedar: CedarAuthorizer.authorize', requests.length, (i) => (cedarAuthz.authorize(requests[i]!).allowed ? 1 : 0)),
    variant('  wasm statefulIsAuthorized only', requests.length, wasm(calls100)),
    variant('  wasm, 1-rule policy set', requests.length, wasm(calls1)),
    variant('  wasm, no schema (not equivalent)', requests.length, wasm(calls100NoSchema)),
    variant('  wasm, sets sliced by action (prototype)', requests.length, wasm(callsSliced)),
  ];
  for (const v of variants) runBatches(v, 0.3, false);
  for (let r = 0; r < o.rounds; r++) {
    const order = r % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) {
      // 3/4 of the round in timed batches, 1/4 (at most singleCalls calls) timed call by call.
      runBatches(v, (0.75 * o.inprocSeconds) / o.rounds, true);
      runSingles(v, (0.25 * o.inprocSeconds) / o.rounds, o.singleCalls);
    }
    await sleep(0); // let the event loop breathe between rounds
  }
  const timer = timerOverheadUs();

  const rate = (v: Variant): number => (v.batchDecisions * 1e9) / v.batchNs;
  const meanUs = (v: Variant): number => v.batchNs / 1000 / v.batchDecisions;
  const base = variants[0]!;
  const full = variants[1]!;
  const rows = variants.map((v) => {
    const b = summarize(v.batchMeans);
    const s = summarize(v.singleUs);
    return [
      v.name,
      fmt(rate(v)),
      fmt(meanUs(v), 2),
      fmt(b.median, 2),
      fmt(b.p99, 2),
      fmt(s.median, 2),
      fmt(s.p99, 2),
      fmt(meanUs(v) / meanUs(base), 1) + 'x',
      fmt((meanUs(v) * 100) / meanUs(full)) + '%',
      fmt((v.allowed * 100) / v.evaluated) + '%',
    ];
  });
  printTable(
    ['authorizer', 'decisions/s', 'mean µs', `batch p50 µs`, `batch p99 µs`, 'call p50 µs', 'call p99 µs', 'vs allow-list', 'of cedar', 'allowed'],
    rows,
  );
  const w = variants[2]!;
  const one = variants[3]!;
  const noSchema = variants[4]!;
  const sl = variants[5]!;
  const jsUs = buildCostUs(requests, compiled.version);
  const sizes = [...sliced.sizes].map(([a, n]) => `${a} ${n}`).join(', ');
  process.stdout.write(
    `batch = mean per decision over ${BATCH} back-to-back decisions; call = one decision timed alone (includes ≈${fmt(timer, 3)} µs timer overhead)\n` +
      `ratio cedar/allow-list: throughput ${fmt(rate(full) / rate(base), 3)}x (allow-list ${fmt(rate(base) / rate(full), 1)}x faster), ` +
      `mean ${fmt(meanUs(full) / meanUs(base), 1)}x, call p50 ${fmt(summarize(full.singleUs).median / summarize(base.singleUs).median, 1)}x, call p99 ${fmt(summarize(full.singleUs).p99 / summarize(base.singleUs).p99, 1)}x\n` +
      `where the Cedar time goes (means):\n` +
      `  WASM statefulIsAuthorized with prebuilt arguments: ${fmt(meanUs(w), 2)} µs = ${fmt((meanUs(w) * 100) / meanUs(full))}% of authorize (${fmt(meanUs(full), 2)} µs); building entities+context in JS (timed apart): ${fmt(jsUs, 2)} µs\n` +
      `  fixed per WASM call (1-rule set: argument conversion, entities, request): ${fmt(meanUs(one), 2)} µs; the other 99 rules: ${fmt(meanUs(w) - meanUs(one), 2)} µs (${fmt((meanUs(w) - meanUs(one)) / 99, 2)} µs/rule)\n` +
      `  without preparsedSchemaName: ${fmt(meanUs(w) - meanUs(noSchema), 2)} µs less (${schemaless} of ${requests.length} decisions differ on this mix; not equivalent in general: ` +
      `action groups such as Action::"mcp" become unknown and entities are not type-checked)\n` +
      `  prototype, one preparsed set per action (${sizes} rules; same decisions on all ${requests.length} requests): ${fmt(meanUs(sl), 2)} µs, ${fmt(meanUs(w) / meanUs(sl), 2)}x faster than the full set\n`,
  );
  if (evalErrors.length > 0) process.stdout.write(`cedar evaluation errors (${evalErrors.length}), first: ${evalErrors[0]}\n`);
}

// ---------------------------------------------------------------------------------------------
// Part 2: through the sidecar pair.

interface Stats {
  requests: number;
  errors: number;
  elapsedMs: number;
  latencies: number[];
  roundRps: number[];
  cpuMicros: number;
  firstError?: string;
}

interface Pair {
  name: string;
  host: string;
  port: number;
  agent: Agent;
  pids: number[];
  admins: string[];
  /** One entry per load phase (by concurrency). */
  phases: Map<number, Stats>;
  /** Every request sent, warm-up included. */
  sent: number;
}

const PATHS = Array.from({ length: 16 }, (_, i) => `/bench/items/${i}`);

function oneRequest(t: Pair, path: string): Promise<{ ok: boolean; ms: number; status?: number; error?: string }> {
  return new Promise((resolve) => {
    t.sent++;
    const t0 = process.hrtime.bigint();
    const req = request({ host: t.host, port: t.port, path, method: 'GET', headers: { host: 'agent-b' }, agent: t.agent }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      res.on('end', () => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        const ok = res.statusCode === 200 && bytes > 0;
        resolve(ok ? { ok, ms, status: res.statusCode } : { ok, ms, status: res.statusCode, error: `status ${res.statusCode}` });
      });
      res.on('error', (err) => resolve({ ok: false, ms: 0, error: err.message }));
    });
    req.on('error', (err) => resolve({ ok: false, ms: 0, error: err.message }));
    req.end();
  });
}

/** Closed loop: `concurrency` workers, each sends its next request when the previous one ends. */
async function load(t: Pair, seconds: number, concurrency: number, stats: Stats | undefined): Promise<void> {
  const start = performance.now();
  const deadline = start + seconds * 1000;
  let n = 0;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const r = await oneRequest(t, PATHS[n++ % PATHS.length]!);
      if (!stats) continue;
      if (r.ok) {
        stats.requests++;
        stats.latencies.push(r.ms);
      } else {
        stats.errors++;
        stats.firstError ??= r.error;
      }
    }
  };
  const before = stats?.requests ?? 0;
  const cpu0 = t.pids.reduce((sum, pid) => sum + processCpuMicros(pid), 0);
  await Promise.all(Array.from({ length: concurrency }, worker));
  if (stats) {
    stats.cpuMicros += t.pids.reduce((sum, pid) => sum + processCpuMicros(pid), 0) - cpu0;
    const ms = performance.now() - start;
    stats.elapsedMs += ms;
    stats.roundRps.push(((stats.requests - before) * 1000) / ms);
  }
}

/** Warm-up, then `rounds` alternating rounds over all pairs at one concurrency. */
async function measure(pairs: Pair[], concurrency: number, seconds: number, warmupSeconds: number, rounds: number): Promise<void> {
  for (const t of pairs) {
    t.phases.set(concurrency, { requests: 0, errors: 0, elapsedMs: 0, latencies: [], roundRps: [], cpuMicros: 0 });
    if (warmupSeconds > 0) await load(t, warmupSeconds, concurrency, undefined);
  }
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? pairs : [...pairs].reverse();
    for (const t of order) {
      await load(t, seconds / rounds, concurrency, t.phases.get(concurrency));
      await sleep(200);
    }
  }
}

function report(pairs: [Pair, Pair], concurrency: number): void {
  const [base, withCedar] = pairs.map((t) => t.phases.get(concurrency)!) as [Stats, Stats];
  const rps = (s: Stats): number => s.requests / (s.elapsedMs / 1000);
  const cpu = (s: Stats): number => s.cpuMicros / s.requests;
  const sb = summarize(base.latencies);
  const sc = summarize(withCedar.latencies);
  const rows = pairs.map((t) => {
    const st = t.phases.get(concurrency)!;
    const s = summarize(st.latencies);
    return [
      t.name,
      fmt(rps(st)),
      `${fmt(Math.min(...st.roundRps))}–${fmt(Math.max(...st.roundRps))}`,
      fmt(rps(st) / rps(base), 2) + 'x',
      fmt(s.median, 2),
      fmt(s.p99, 2),
      fmt(s.median / sb.median, 2) + 'x',
      fmt(s.p99 / sb.p99, 2) + 'x',
      fmt(cpu(st)),
      String(st.errors),
    ];
  });
  printTable([`concurrency ${concurrency}`, 'req/s', 'per-round req/s', 'rps vs allow', 'p50 ms', 'p99 ms', 'p50 vs allow', 'p99 vs allow', 'proxy CPU µs/req', 'errors'], rows);
  process.stdout.write(
    `ratio cedar/allow-list at concurrency ${concurrency}: throughput ${fmt(rps(withCedar) / rps(base), 2)}x, p50 ${fmt(sc.median / sb.median, 2)}x, p99 ${fmt(sc.p99 / sb.p99, 2)}x, proxy CPU per request ${fmt(cpu(withCedar) / cpu(base), 2)}x\n` +
      `added per request by Cedar (2 evaluations: egress on A, inbound on B): latency p50 +${fmt((sc.median - sb.median) * 1000)} µs, p99 +${fmt((sc.p99 - sb.p99) * 1000)} µs; ` +
      `proxy CPU +${fmt(cpu(withCedar) - cpu(base))} µs (both sidecars; /proc CPU in 10 ms ticks)\n`,
  );
}

interface Scraped {
  decisions: number;
  evalSeconds: number;
  evalCount: number;
}

/**
 * `sigil_authz_decisions_total` (all series) and `sigil_authz_evaluation_seconds` sum/count,
 * summed over a pair's admin listeners; undefined where a sidecar does not export them.
 */
async function scrape(admins: string[]): Promise<Scraped | undefined> {
  const total: Scraped = { decisions: 0, evalSeconds: 0, evalCount: 0 };
  for (const admin of admins) {
    let text: string;
    try {
      text = await (await fetch(`http://${admin}/metrics`)).text();
    } catch {
      return undefined;
    }
    let seen = 0;
    for (const line of text.split('\n')) {
      const value = Number(line.slice(line.lastIndexOf(' ') + 1));
      if (line.startsWith('sigil_authz_decisions_total')) (total.decisions += value), (seen |= 1);
      else if (line.startsWith('sigil_authz_evaluation_seconds_sum')) (total.evalSeconds += value), (seen |= 2);
      else if (line.startsWith('sigil_authz_evaluation_seconds_count')) (total.evalCount += value), (seen |= 4);
    }
    if (seen !== 7) return undefined;
  }
  return total;
}

export async function runThroughPair(o: AuthzBenchOptions): Promise<void> {
  process.stdout.write(
    `\n## authz (2/2): sidecar pair, policy.allow (100 entries) vs policy.cedar (100 rules) on both sidecars\n` +
      `closed-loop keep-alive load: concurrency ${o.concurrency} for ${o.seconds}s per pair, then concurrency 1 for ${o.serialSeconds}s per pair (unloaded latency), ` +
      `each in ${o.rounds} alternating rounds after warm-up (${o.warmupSeconds}s, ${fmt(o.warmupSeconds / 4, 1)}s)\n` +
      `${machineLine()}\n`,
  );
  const pki = await makePki();
  const stops: Array<() => Promise<void>> = [];
  const pairs: Pair[] = [];
  try {
    const policyPath = join(pki.dir, 'bench-100-rules.cedar');
    const policyText = benchCedarPolicy();
    compileCedarPolicy(policyText, policyPath);
    await writeFile(policyPath, policyText);
    const allow = benchAllowList();

    const upstream = await spawnServer(serverScript('upstream'));
    stops.push(upstream.stop);
    const upstreamAddr = `127.0.0.1:${upstream.info.port as number}`;

    const startPair = async (name: string, tag: string, policy: unknown): Promise<Pair> => {
      const b = await spawnSigil(
        await writeConfig(pki.dir, `sigil-${tag}-b.json`, {
          trustDomain: TD.name,
          identity: { dev: { caDir: './ca', spiffeId: ID_B.toString(), ttl: '1h' } },
          inbound: { listen: '127.0.0.1:0', upstream: `http://${upstreamAddr}` },
          policy,
          admin: { listen: '127.0.0.1:0' },
        }),
      );
      stops.push(b.stop);
      const a = await spawnSigil(
        await writeConfig(pki.dir, `sigil-${tag}-a.json`, {
          trustDomain: TD.name,
          identity: { dev: { caDir: './ca', spiffeId: ID_A.toString(), ttl: '1h' } },
          outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: b.ready.inbound as string, spiffeId: ID_B.toString() }] },
          policy,
          admin: { listen: '127.0.0.1:0' },
        }),
      );
      stops.push(a.stop);
      const { host, port } = splitHostPort(a.ready.outbound as string);
      const admins = [a.ready.admin, b.ready.admin].filter((x): x is string => typeof x === 'string');
      return { name, host, port, agent: new Agent({ keepAlive: true, maxSockets: o.concurrency }), pids: [a.pid, b.pid], admins, phases: new Map(), sent: 0 };
    };
    // Both pairs start at once (each sidecar pays its own start-up; none is measured).
    pairs.push(...(await Promise.all([startPair('policy.allow, 100 entries (baseline)', 'allow', { allow }), startPair('policy.cedar, 100 rules', 'cedar', { cedar: policyPath })])));
    const [base, withCedar] = pairs as [Pair, Pair];

    // Cedar really is in force: a path the policy does not permit is refused (403), the
    // allow-list pair lets it through.
    const probe = async (t: Pair, path: string): Promise<number | undefined> => (await oneRequest(t, path)).status;
    const probes = { allowOk: await probe(base, '/other'), cedarOk: await probe(withCedar, '/bench/x'), cedarDenied: await probe(withCedar, '/other') };
    if (probes.allowOk !== 200 || probes.cedarOk !== 200 || probes.cedarDenied !== 403) {
      throw new Error(`policy probe failed: allow-list GET /other → ${probes.allowOk}, cedar GET /bench/x → ${probes.cedarOk}, cedar GET /other → ${probes.cedarDenied} (want 200, 200, 403)`);
    }

    const scraped0 = await Promise.all(pairs.map((t) => scrape(t.admins)));
    const sent0 = pairs.map((t) => t.sent);
    await measure(pairs, o.concurrency, o.seconds, o.warmupSeconds, o.rounds);
    await measure(pairs, 1, o.serialSeconds, o.warmupSeconds / 4, o.rounds);
    const scraped1 = await Promise.all(pairs.map((t) => scrape(t.admins)));

    report([base, withCedar], o.concurrency);
    report([base, withCedar], 1);
    // What the sidecars themselves measured around each evaluation (Sidecar.decide), over the
    // whole of part 2, warm-up included.
    const inSidecar = pairs.map((t, i) => {
      const before = scraped0[i];
      const after = scraped1[i];
      if (!before || !after) return `${t.name}: metrics not exported`;
      const sent = t.sent - sent0[i]!;
      const evals = after.evalCount - before.evalCount;
      return (
        `${t.name}: ${fmt((after.decisions - before.decisions) / sent, 2)} decisions per request, ` +
        `mean evaluation ${fmt(((after.evalSeconds - before.evalSeconds) * 1e6) / evals, 1)} µs`
      );
    });
    process.stdout.write(`sidecar metrics (sigil_authz_decisions_total, sigil_authz_evaluation_seconds): ${inSidecar.join('; ')}\n`);
    const failed = pairs.flatMap((t) => [...t.phases].filter(([, st]) => st.errors > 0).map(([c, st]) => ({ t, c, st })));
    for (const { t, c, st } of failed) process.stderr.write(`${t.name} at concurrency ${c}: ${st.errors} errors, first: ${st.firstError}\n`);
    if (failed.length > 0) throw new Error('some proxied requests failed');
  } finally {
    for (const t of pairs) t.agent.destroy();
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await pki.cleanup();
  }
}

export async function runAuthzBench(opts: Partial<AuthzBenchOptions> = {}): Promise<void> {
  const o = { ...DEFAULTS, ...opts };
  await runInProcess(o);
  await runThroughPair(o);
}
