// Attribution metrics as an SRE sees them: a real `prometheus` (Debian's package) scrapes both
// sidecars of a running pair, and its HTTP API answers "which agent called which, how often,
// what was denied and why, is identity healthy". `promtool check metrics` lints each exposition.
//
//   agent ──plain──▶ A (agent/a, outbound, policy: everything) ══mTLS══▶ B (agent/b, inbound,
//   policy: A may connect and call, but `no-forbidden` forbids GET /forbidden) ──▶ echo upstream
//   prometheus (127.0.0.1, 1 s scrapes) ──▶ A's and B's admin /metrics, jobs sigil-a / sigil-b
//
// A's policy permits everything, so every denial below happens at B: B reports it
// (reporter="inbound", decision="deny", reason="policy_denied"); A reports the same calls as
// allowed egress that got a 403 back (reporter="outbound", decision="allow", response_code="403").
//
// Without prometheus/promtool on PATH the test is skipped with a loud banner — except in CI
// (SIGIL_CI, set by .ci/run, which installs them), where that is a failure.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { assertStatus } from '../helpers/assert.js';
import { plainRequest } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, writeConfig, type RunningSigil } from '../helpers/env.js';
import { policyVersion } from '../helpers/observe.js';
import {
  findPrometheus,
  pollUntil,
  promtoolCheckMetrics,
  selector,
  startPrometheus,
  type PrometheusBinaries,
  type RunningPrometheus,
  type VectorSample,
} from '../helpers/prometheus.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const SVID_TTL_S = 15 * 60;
const ALLOWED = 5;
const DENIED = 2;
/** Every Prometheus wait in this file shares one budget from the first query on. */
const QUERY_BUDGET_MS = 20_000;

const A_POLICY = [
  `@id("egress-connect") permit (principal, action == Action::"connect", resource);`,
  `@id("egress-http") permit (principal, action == Action::"http", resource);`,
].join('\n');
const B_POLICY = [
  `@id("a-connects") permit (principal == Agent::"${ID_A}", action == Action::"connect", resource == Agent::"${ID_B}");`,
  `@id("a-http") permit (principal == Agent::"${ID_A}", action == Action::"http", resource == Agent::"${ID_B}");`,
  `@id("no-forbidden") forbid (principal, action == Action::"http", resource) when { context.http.path == "/forbidden" };`,
].join('\n');

const tools = await findPrometheus();
if ('missing' in tools) {
  if (tools.mustFail) t.fail(`${tools.missing}, and SIGIL_CI is set: .ci/run must install Debian's prometheus package`);
  else t.plan(0, `${tools.missing}: metrics NOT checked against a real Prometheus (apt-get install prometheus)`);
} else {
  suite(tools.found);
}

function suite(bin: PrometheusBinaries): void {
  let upstream: EchoUpstream;
  let sidecarA: RunningSigil;
  let sidecarB: RunningSigil;
  let prom: RunningPrometheus;
  let deadline = 0;
  /** Milliseconds left of the shared query budget (at least 1 s, so a late check still gets a try). */
  const left = (): number => Math.max(1_000, deadline - Date.now());

  t.before(async () => {
    const dir = await tempDir(t, 'sigil-prom-');
    const example = await setupTrustDomain(dir, TD);
    upstream = await startEchoUpstream(t);
    await Promise.all([writeFile(join(dir, 'a.cedar'), A_POLICY + '\n'), writeFile(join(dir, 'b.cedar'), B_POLICY + '\n')]);
    const identity = (id: string) => ({ dev: { caDir: example.caDir, spiffeId: id, ttl: '15m' } });
    const bCfg = await writeConfig(
      dir,
      'b.yaml',
      sidecarConfig({ trustDomain: TD, identity: identity(ID_B), inbound: { listen: '127.0.0.1:0', upstream: upstream.url }, policy: { cedar: './b.cedar' } }),
    );
    sidecarB = await runSigil(t, bCfg);
    const aCfg = await writeConfig(
      dir,
      'a.yaml',
      sidecarConfig({
        trustDomain: TD,
        identity: identity(ID_A),
        outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: sidecarB.inbound, spiffeId: ID_B }] },
        policy: { cedar: './a.cedar' },
      }),
    );
    sidecarA = await runSigil(t, aCfg);
    prom = await startPrometheus(t, bin.prometheus, [
      { job: 'sigil-a', address: sidecarA.admin },
      { job: 'sigil-b', address: sidecarB.admin },
    ]);
  });

  const viaA = (path: string) => plainRequest({ address: sidecarA.outbound, path, headers: { host: 'agent-b' } });

  /** A sidecar that is no longer running, described with the end of its stderr; undefined when both run. */
  const dead = (): string | undefined => {
    for (const [name, s] of [
      ['A', sidecarA],
      ['B', sidecarB],
    ] as const) {
      const c = s.proc.child;
      if (c.exitCode !== null || c.signalCode !== null) return `sidecar ${name} exited (${c.exitCode ?? c.signalCode}): ${s.proc.stderr().slice(-1_500)}`;
    }
    return undefined;
  };
  /** Polls a PromQL query (within the shared budget) until `done`, or until a sidecar died; returns the last answer. */
  const poll = (promql: string, done: (r: VectorSample[]) => boolean) => pollUntil(() => prom.query(promql), (r) => done(r) || dead() !== undefined, left());

  const total = (r: VectorSample[]): number => r.reduce((s, x) => s + x.value, 0);
  const show = (r: VectorSample[]): string => JSON.stringify(r.map((x) => ({ ...x.metric, value: x.value })));

  t.test('prometheus scrapes both sidecars’ admin /metrics: both targets are up', async (t) => {
    const targets = await pollUntil(
      () => prom.targets(),
      (ts) => ts.length === 2 && ts.every((x) => x.health === 'up'),
      15_000,
    );
    t.same(
      targets.map((x) => ({ job: x.labels.job, url: x.scrapeUrl, health: x.health, lastError: x.lastError })).sort((a, b) => String(a.job).localeCompare(String(b.job))),
      [
        { job: 'sigil-a', url: `http://${sidecarA.admin}/metrics`, health: 'up', lastError: '' },
        { job: 'sigil-b', url: `http://${sidecarB.admin}/metrics`, health: 'up', lastError: '' },
      ],
      'sigil-a and sigil-b are up, with no scrape error',
    );
  });

  t.test(`known traffic through the pair: ${ALLOWED} allowed GETs, ${DENIED} GETs to /forbidden denied at B`, async (t) => {
    for (let i = 1; i <= ALLOWED; i++) assertStatus(t, await viaA(`/allowed/${i}?q=secret-${i}`), `GET /allowed/${i}`);
    for (let i = 1; i <= DENIED; i++) {
      const r = await viaA('/forbidden');
      assertStatus(t, r, `GET /forbidden #${i}`, 403);
      t.same(r.json, { error: 'forbidden', reason: 'policy_denied', policies: ['no-forbidden'] }, `GET /forbidden #${i}: policy_denied by no-forbidden`);
    }
    t.same(
      upstream.requests.map((r) => r.url),
      Array.from({ length: ALLOWED }, (_, i) => `/allowed/${i + 1}?q=secret-${i + 1}`),
      'exactly the allowed calls reached the upstream',
    );
  });

  t.test('promtool check metrics accepts each sidecar’s exposition', async (t) => {
    for (const [name, sidecar] of [
      ['A', sidecarA],
      ['B', sidecarB],
    ] as const) {
      const res = await fetch(`http://${sidecar.admin}/metrics`);
      const body = await res.text();
      t.equal(res.status, 200, `${name}: /metrics answers 200`);
      t.match(res.headers.get('content-type'), /^text\/plain/, `${name}: Prometheus text format by default`);
      t.match(body, /^# TYPE sigil_requests_total counter$/m, `${name}: the exposition has sigil_requests_total`);
      t.match(body, /^sigil_requests_total\{/m, `${name}: … with samples after the traffic`);
      const lint = await promtoolCheckMetrics(bin.promtool, body);
      t.equal(lint.code, 0, `${name}: promtool check metrics exits 0${lint.code === 0 ? '' : `: ${lint.stdout}${lint.stderr}`}`);
    }
  });

  t.test('queried from prometheus: B (inbound) attributes the allowed calls to agent/a → agent/b', async (t) => {
    deadline ||= Date.now() + QUERY_BUDGET_MS;
    const q = `sum(${selector('sigil_requests_total', { job: 'sigil-b', reporter: 'inbound', source_principal: ID_A, destination_principal: ID_B, decision: 'allow' })})`;
    const r = await poll(q, (r) => total(r) === ALLOWED);
    t.equal(total(r), ALLOWED, `${q} = ${ALLOWED} (${show(r)})`);

    const series = await prom.query(selector('sigil_requests_total', { job: 'sigil-b', reporter: 'inbound', decision: 'allow' }));
    t.match(
      series.map((s) => s.metric),
      [
        {
          __name__: 'sigil_requests_total',
          job: 'sigil-b',
          reporter: 'inbound',
          source_principal: ID_A,
          destination_principal: ID_B,
          request_protocol: 'http',
          response_code: '200',
          decision: 'allow',
          reason: 'allowed',
          delegated: 'false',
          chain_depth: '0',
        },
      ],
      `one allowed series: http, 200, not delegated (${show(series)})`,
    );
    const histogram = await poll(`sum(${selector('sigil_request_duration_seconds_count', { job: 'sigil-b', reporter: 'inbound', source_principal: ID_A, destination_principal: ID_B })})`, (r) => total(r) === ALLOWED + DENIED);
    t.equal(total(histogram), ALLOWED + DENIED, `sigil_request_duration_seconds observed every call at B (${show(histogram)})`);
  });

  t.test('queried from prometheus: the denied calls appear at B with reason="policy_denied" and the right principals', async (t) => {
    deadline ||= Date.now() + QUERY_BUDGET_MS;
    const q = selector('sigil_requests_total', { job: 'sigil-b', decision: 'deny' });
    const r = await poll(q, (r) => total(r) === DENIED);
    t.match(
      r.map((s) => ({ ...s.metric, value: s.value })),
      [
        {
          reporter: 'inbound',
          source_principal: ID_A,
          destination_principal: ID_B,
          request_protocol: 'http',
          response_code: '403',
          decision: 'deny',
          reason: 'policy_denied',
          value: DENIED,
        },
      ],
      `${q}: one series, agent/a → agent/b, policy_denied, 403, value ${DENIED} (${show(r)})`,
    );

    const authz = await poll(selector('sigil_authz_decisions_total', { job: 'sigil-b', action: 'http', decision: 'deny', reason: 'policy_denied' }), (r) => total(r) === DENIED);
    t.equal(total(authz), DENIED, `B: sigil_authz_decisions_total{action="http",decision="deny",reason="policy_denied"} = ${DENIED} (${show(authz)})`);
    const allowed = await poll(selector('sigil_authz_decisions_total', { job: 'sigil-b', action: 'http', decision: 'allow' }), (r) => total(r) === ALLOWED);
    t.equal(total(allowed), ALLOWED, `B: sigil_authz_decisions_total{action="http",decision="allow"} = ${ALLOWED} (${show(allowed)})`);
  });

  t.test('queried from prometheus: A (outbound) reports all calls as allowed egress, the denied ones with B’s 403', async (t) => {
    deadline ||= Date.now() + QUERY_BUDGET_MS;
    const base = { job: 'sigil-a', reporter: 'outbound', source_principal: ID_A, destination_principal: ID_B, decision: 'allow' };
    const q = `sum by (response_code) (${selector('sigil_requests_total', base)})`;
    const r = await poll(q, (r) => total(r) === ALLOWED + DENIED);
    t.same(
      Object.fromEntries(r.map((s) => [s.metric.response_code, s.value])),
      { '200': ALLOWED, '403': DENIED },
      `${q}: ${ALLOWED} × 200 and ${DENIED} × 403 (${show(r)})`,
    );
    const denies = await prom.query(selector('sigil_requests_total', { job: 'sigil-a', decision: 'deny' }));
    t.same(denies, [], 'A denied nothing itself (its policy permits everything)');
  });

  t.test('no label carries a request path or query string', async (t) => {
    deadline ||= Date.now() + QUERY_BUDGET_MS;
    const all = await prom.query('{__name__=~"sigil_.+"}');
    t.ok(all.length > 0, `prometheus holds sigil_* series (${all.length})`);
    const leaks = all.filter((s) => Object.values(s.metric).some((v) => /\/allowed|\/forbidden|secret-/.test(v)));
    t.same(leaks.map((s) => s.metric), [], 'no label value contains /allowed, /forbidden or the query string');
  });

  t.test('identity health: each sidecar’s SVID expiry is in the future (within the 15 m TTL); handshakes and policy version', async (t) => {
    deadline ||= Date.now() + QUERY_BUDGET_MS;
    const r = await poll('sigil_svid_expiry_timestamp_seconds', (r) => r.length >= 2);
    const now = Date.now() / 1000;
    for (const [job, id] of [
      ['sigil-a', ID_A],
      ['sigil-b', ID_B],
    ] as const) {
      const mine = r.filter((s) => s.metric.job === job);
      t.same(
        mine.map((s) => s.metric.spiffe_id),
        [id],
        `${job}: one sigil_svid_expiry_timestamp_seconds series, spiffe_id="${id}" (${show(r)})`,
      );
      const expiry = mine[0]?.value ?? 0;
      t.ok(expiry > now, `${job}: expiry ${expiry} is in the future (now ${Math.round(now)})`);
      t.ok(expiry <= now + SVID_TTL_S + 60, `${job}: … and no later than the 15 m TTL allows`);
    }

    const inbound = await poll(`sum(${selector('sigil_tls_handshakes_total', { job: 'sigil-b', reporter: 'inbound', result: 'success' })})`, (r) => total(r) >= 1);
    t.ok(total(inbound) >= 1, `B: sigil_tls_handshakes_total{reporter="inbound",result="success"} ≥ 1 (${show(inbound)})`);
    const outbound = await poll(`sum(${selector('sigil_tls_handshakes_total', { job: 'sigil-a', reporter: 'outbound', result: 'success' })})`, (r) => total(r) >= 1);
    t.ok(total(outbound) >= 1, `A: sigil_tls_handshakes_total{reporter="outbound",result="success"} ≥ 1 (${show(outbound)})`);

    for (const [job, sidecar] of [
      ['sigil-a', sidecarA],
      ['sigil-b', sidecarB],
    ] as const) {
      const version = await policyVersion(sidecar);
      const info = await poll(selector('sigil_policy_version_info', { job }), (r) => r.length === 1);
      t.match(
        info.map((s) => ({ version: s.metric.version, value: s.value })),
        [{ version, value: 1 }],
        `${job}: sigil_policy_version_info names the version /status reports (${version}) (${show(info)})`,
      );
    }
  });

  t.test('both sidecars were still running at the end', async (t) => {
    t.equal(dead(), undefined, 'neither A nor B exited');
  });
}
