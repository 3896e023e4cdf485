// Requests/s and latency through the proxy hops, closed-loop with keep-alive:
//   direct     client → upstream                                        (no proxy at all)
//   raw pair   client → raw-proxy-out ══mTLS══▶ raw-proxy-in → upstream (minimal Node baseline)
//   sigil pair client → sigil outbound ══mTLS══▶ sigil inbound → upstream
//   sigil pair, metrics off: the same, with `metrics: { enabled: false }` on both sidecars
//   nginx pair (only if nginx is installed; master and worker CPU measured)
// A closed-loop phase gives throughput at saturation, a fixed-rate phase (open loop) the
// latency each pair adds over direct and each proxy process's CPU per request and memory.
// Every server is a child process; this process is only the load generator. Targets are
// measured in alternating rounds so drift hits all of them alike.
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import {
  closedLoop,
  freePort,
  openLoop,
  type RateResult,
  ID_A,
  ID_B,
  TD,
  fmt,
  machineLine,
  makePki,
  percentile,
  printTable,
  processCpuMicros,
  processMemoryMb,
  serverScript,
  sleep,
  spawnServer,
  spawnSigil,
  splitHostPort,
  summarize,
  writeConfig,
} from './lib.js';
import { findNginx, startNginx } from './nginx.js';

/**
 * Istio's published figures for its Envoy sidecar (istio.io, "Performance and Scalability",
 * Istio 1.10–1.15): 0.35 vCPU and 40 MB per sidecar per 1000 req/s, and 2.65 ms added at p90
 * for a request that passes the client's and the server's sidecar, the same two hops as here.
 */
const ISTIO = { vcpuPer1000: 0.35, rssMb: 40, addedP90Ms: 2.65 };

export interface ProxyOptions {
  concurrency: number;
  /** Measured seconds per target, split over `rounds`. */
  seconds: number;
  warmupSeconds: number;
  rounds: number;
  /** Fixed open-loop rate (req/s) of the rate phase, and its measured seconds per target. */
  rate: number;
  rateSeconds: number;
}

const DEFAULTS: ProxyOptions = {
  concurrency: Number(process.env.BENCH_PROXY_CONCURRENCY ?? 32),
  seconds: Number(process.env.BENCH_PROXY_SECONDS ?? 6),
  warmupSeconds: Number(process.env.BENCH_PROXY_WARMUP ?? 2),
  rounds: Number(process.env.BENCH_PROXY_ROUNDS ?? 4),
  rate: Number(process.env.BENCH_PROXY_RATE ?? 1000),
  rateSeconds: Number(process.env.BENCH_PROXY_RATE_SECONDS ?? 8),
};

interface Target {
  name: string;
  host: string;
  port: number;
  hostHeader: string;
  agent: Agent;
  requests: number;
  errors: number;
  elapsedMs: number;
  latencies: number[];
  /** req/s of each measured round, to show the spread. */
  roundRps: number[];
  /** Proxy CPU µs/req of each measured round (for the metrics on/off spread). */
  roundCpu: number[];
  /** The proxy processes of this path (not the shared upstream); their CPU time is summed. */
  pids: number[];
  /** A name for each of `pids`, for the per-process table. */
  procs: string[];
  cpuMicros: number;
  firstError?: string;
}

/** A fixed-rate run of one path, with the CPU µs of each of its processes (parallel to `pids`). */
interface RateRun extends RateResult {
  procCpu: number[];
  /**
   * This process's own event-loop delay while it loaded the path: when the load generator is
   * late (the proxies and it share the CPUs), a request's measured latency includes that wait.
   */
  loopDelay: IntervalHistogram;
}

function oneRequest(t: Target): Promise<{ ok: boolean; ms: number; error?: string }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = request({ host: t.host, port: t.port, path: '/bench', method: 'GET', headers: { host: t.hostHeader }, agent: t.agent }, (res) => {
      let bytes = 0;
      res.on('data', (d: Buffer) => (bytes += d.length));
      res.on('end', () => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        const ok = res.statusCode === 200 && bytes > 0;
        resolve(ok ? { ok, ms } : { ok, ms, error: `status ${res.statusCode}` });
      });
      res.on('error', (err) => resolve({ ok: false, ms: 0, error: err.message }));
    });
    req.on('error', (err) => resolve({ ok: false, ms: 0, error: err.message }));
    req.end();
  });
}

function load(t: Target, seconds: number, concurrency: number, record: boolean): Promise<void> {
  return closedLoop(t, seconds, concurrency, record, oneRequest);
}

/**
 * Open loop at a fixed rate: requests are sent on schedule whether or not earlier ones have
 * answered, and latency is measured from the scheduled send time (no coordinated omission).
 * At a fixed rate every path does the same work per second, so CPU per request compares
 * like with like; under closed-loop saturation a slower path also batches less per event-loop
 * turn, which inflates its CPU per request beyond the cost of the extra work itself.
 */
function loadAtRate(t: Target, rate: number, seconds: number, out: RateResult | undefined): Promise<void> {
  return openLoop(t, rate, seconds, out, oneRequest);
}

export async function runProxyBench(opts: Partial<ProxyOptions> = {}): Promise<void> {
  const o = { ...DEFAULTS, ...opts };
  process.stdout.write(
    `\n## proxy: closed-loop keep-alive load, concurrency ${o.concurrency}, ${o.seconds}s measured per target in ${o.rounds} alternating rounds after ${o.warmupSeconds}s warm-up\n`,
  );
  process.stdout.write(machineLine() + '\n');
  const pki = await makePki();
  const stops: Array<() => Promise<void>> = [];
  const targets: Target[] = [];
  try {
    const upstream = await spawnServer(serverScript('upstream'));
    stops.push(upstream.stop);
    const upstreamAddr = `127.0.0.1:${upstream.info.port as number}`;

    // Raw Node pair.
    const rawIn = await spawnServer(serverScript('raw-proxy-in'), ['--svid', pki.svidB, '--upstream', upstreamAddr]);
    stops.push(rawIn.stop);
    const rawOut = await spawnServer(serverScript('raw-proxy-out'), ['--svid', pki.svidA, '--target', rawIn.info.address as string, '--expect', ID_B.toString()]);
    stops.push(rawOut.stop);

    // Sigil pairs: metrics on (the default) and metrics off, otherwise identical.
    const sigilPair = async (metricsEnabled: boolean): Promise<{ outbound: string; pids: number[]; admins: string[] }> => {
      const suffix = metricsEnabled ? '' : '-nometrics';
      const metrics = metricsEnabled ? {} : { metrics: { enabled: false } };
      const b = await spawnSigil(
        await writeConfig(pki.dir, `sigil-b${suffix}.json`, {
          trustDomain: TD.name,
          identity: { dev: { caDir: './ca', spiffeId: ID_B.toString(), ttl: '1h' } },
          inbound: { listen: '127.0.0.1:0', upstream: `http://${upstreamAddr}` },
          policy: { allow: [ID_A.toString()] },
          admin: { listen: '127.0.0.1:0' },
          ...metrics,
        }),
      );
      stops.push(b.stop);
      const a = await spawnSigil(
        await writeConfig(pki.dir, `sigil-a${suffix}.json`, {
          trustDomain: TD.name,
          identity: { dev: { caDir: './ca', spiffeId: ID_A.toString(), ttl: '1h' } },
          outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: b.ready.inbound as string, spiffeId: ID_B.toString() }] },
          policy: { allow: [ID_B.toString()] },
          admin: { listen: '127.0.0.1:0' },
          ...metrics,
        }),
      );
      stops.push(a.stop);
      return { outbound: a.ready.outbound as string, pids: [a.pid, b.pid], admins: [a.ready.admin, b.ready.admin].filter((x): x is string => typeof x === 'string') };
    };
    // Both pairs start at once (start-up is not measured).
    const [sigilOn, sigilOff] = await Promise.all([sigilPair(true), sigilPair(false)]);

    const mk = (name: string, address: string, hostHeader: string, pids: number[], procs: string[]): Target => {
      const { host, port } = splitHostPort(address);
      return { name, host, port, hostHeader, agent: new Agent({ keepAlive: true, maxSockets: o.concurrency }), requests: 0, errors: 0, elapsedMs: 0, latencies: [], roundRps: [], roundCpu: [], pids, procs, cpuMicros: 0 };
    };
    const sidecars = ['sidecar A (outbound)', 'sidecar B (inbound)'];
    targets.push(mk('direct (no proxy)', upstreamAddr, 'upstream', [], []));
    targets.push(mk('raw node pair (baseline)', rawOut.info.address as string, 'agent-b', [rawOut.pid, rawIn.pid], ['raw-proxy-out', 'raw-proxy-in']));
    targets.push(mk('sigil pair', sigilOn.outbound, 'agent-b', sigilOn.pids, sidecars));
    targets.push(mk('sigil pair, metrics off', sigilOff.outbound, 'agent-b', sigilOff.pids, sidecars));

    const nginx = findNginx();
    if (nginx) {
      const pair = await startNginxPair(nginx, pki, upstreamAddr);
      stops.push(pair.stop);
      // One worker serves both halves, so nginx's CPU and memory cannot be split by hop.
      targets.push(mk('nginx pair', pair.outbound, 'agent-b', pair.pids, pair.pids.map((_, i) => (i === 0 ? 'nginx master' : 'nginx worker (both halves)'))));
    }

    for (const t of targets) await load(t, o.warmupSeconds, o.concurrency, false);
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 === 0 ? targets : [...targets].reverse();
      for (const t of order) {
        await load(t, o.seconds / o.rounds, o.concurrency, true);
        await sleep(200);
      }
    }

    // Fixed-rate phase: the same offered load on every path, direct included (the reference the
    // added latency is read against), in alternating rounds. This is where CPU per request, each
    // process's memory and the metrics on/off overhead are read.
    const rateRuns = new Map<Target, RateRun>(
      targets.map((t) => [t, { requests: 0, errors: 0, latencies: [], cpuMicros: 0, roundCpu: [], procCpu: t.pids.map(() => 0), loopDelay: monitorEventLoopDelay({ resolution: 2 }) }]),
    );
    for (const t of targets) await loadAtRate(t, o.rate, Math.min(1, o.warmupSeconds), undefined);
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 === 0 ? targets : [...targets].reverse();
      for (const t of order) {
        const run = rateRuns.get(t)!;
        const before = t.pids.map(processCpuMicros);
        run.loopDelay.enable();
        await loadAtRate(t, o.rate, o.rateSeconds / o.rounds, run);
        run.loopDelay.disable();
        t.pids.forEach((pid, i) => (run.procCpu[i]! += processCpuMicros(pid) - before[i]!));
        await sleep(200);
      }
    }
    // Read right after the phase, while every process still holds its working set.
    const memory = new Map<number, { rss: number; peak: number }>(targets.flatMap((t) => t.pids.map((pid) => [pid, processMemoryMb(pid)] as const)));

    const rps = (t: Target): number => t.requests / (t.elapsedMs / 1000);
    const raw = targets[1]!;
    const rows = targets.map((t) => {
      const s = summarize(t.latencies);
      const cpu = t.pids.length > 0 ? fmt(t.cpuMicros / t.requests) : '—';
      return [t.name, fmt(rps(t)), `${fmt(Math.min(...t.roundRps))}–${fmt(Math.max(...t.roundRps))}`, fmt(rps(t) / rps(raw), 2) + 'x', fmt(s.median, 2), fmt(s.p99, 2), fmt(s.p99 / summarize(raw.latencies).p99, 2) + 'x', cpu, String(t.errors)];
    });
    printTable(['path', 'req/s', 'per-round req/s', 'rps vs raw', 'p50 ms', 'p99 ms', 'p99 vs raw', 'proxy CPU µs/req', 'errors'], rows);
    if (!nginx) process.stdout.write('nginx not installed, skipped\n');
    const sigil = targets[2]!;
    process.stdout.write(`ratio sigil/raw: proxy CPU per request ${fmt(sigil.cpuMicros / sigil.requests / (raw.cpuMicros / raw.requests), 2)}x, throughput ${fmt(rps(sigil) / rps(raw), 2)}x, p50 ${fmt(summarize(sigil.latencies).median / summarize(raw.latencies).median, 2)}x, p99 ${fmt(summarize(sigil.latencies).p99 / summarize(raw.latencies).p99, 2)}x\n`);
    process.stdout.write(`\n### fixed rate: ${o.rate} req/s open loop, ${o.rateSeconds}s per path in ${o.rounds} alternating rounds\n`);
    const direct = targets[0]!;
    const pcts = (latencies: number[]): [number, number, number] => {
      const sorted = Array.from(Float64Array.from(latencies).sort());
      return [percentile(sorted, 50), percentile(sorted, 90), percentile(sorted, 99)];
    };
    const directPcts = pcts(rateRuns.get(direct)!.latencies);
    /** Percentile of the path minus the same percentile of direct, in ms. */
    const added = (t: Target): [number, number, number] => {
      const p = pcts(rateRuns.get(t)!.latencies);
      return [p[0] - directPcts[0], p[1] - directPcts[1], p[2] - directPcts[2]];
    };
    const cpuPerReq = (t: Target): number => rateRuns.get(t)!.cpuMicros / rateRuns.get(t)!.requests;
    const rateRows = targets.map((t) => {
      const rr = rateRuns.get(t)!;
      const p = pcts(rr.latencies);
      const proxied = t.pids.length > 0;
      const dash = (v: string): string => (proxied ? v : '—');
      return [
        t.name,
        String(rr.requests),
        ...p.map((v) => fmt(v, 2)),
        ...added(t).map((v) => dash(fmt(v, 2))),
        dash(fmt(cpuPerReq(t))),
        dash(fmt(cpuPerReq(t) / cpuPerReq(raw), 2) + 'x'),
        dash(fmt((cpuPerReq(t) * o.rate) / 1e6, 3)),
        fmt(rr.loopDelay.percentile(99) / 1e6, 1),
        String(rr.errors),
      ];
    });
    printTable(
      ['path', 'requests', 'p50 ms', 'p90 ms', 'p99 ms', 'added p50 ms', 'added p90 ms', 'added p99 ms', 'proxy CPU µs/req', 'CPU vs raw', 'vCPU at this rate (all proxy processes)', 'generator loop delay p99 ms', 'errors'],
      rateRows,
    );
    process.stdout.write(
      'added = the path\'s percentile minus direct\'s at the same rate in the same rounds; generator loop delay = how late the load generator\'s own event loop ran (2 ms resolution) while it drove the path: a p99 close to it is the machine\'s CPUs being shared, not the proxy\n\n',
    );
    const procRows = targets.flatMap((t) =>
      t.pids.map((pid, i) => {
        const perReq = rateRuns.get(t)!.procCpu[i]! / rateRuns.get(t)!.requests;
        const mem = memory.get(pid)!;
        return [t.name, t.procs[i]!, fmt(perReq), fmt(perReq / 1000, 3), fmt(mem.rss, 1), fmt(mem.peak, 1)];
      }),
    );
    printTable(['path', 'process', 'CPU µs/req', 'CPU s per 1000 req (= vCPU at 1000 req/s)', 'RSS MB (end of phase)', 'peak RSS MB (VmHWM)'], procRows);
    const sigilRun = rateRuns.get(sigil)!;
    const sidecarVcpu = sigil.pids.map((_, i) => sigilRun.procCpu[i]! / sigilRun.requests / 1000);
    const sidecarRss = sigil.pids.map((pid) => memory.get(pid)!.rss);
    const addedP90 = added(sigil)[1];
    const vs = (ours: number, theirs: number): string => `${fmt(ours / theirs, 2)}x Istio's`;
    process.stdout.write(
      `anchor vs Istio's Envoy sidecar (${ISTIO.vcpuPer1000} vCPU and ${ISTIO.rssMb} MB per sidecar per 1000 req/s, +${ISTIO.addedP90Ms} ms at p90 through the client and the server sidecar): ` +
        `per Sigil sidecar A ${fmt(sidecarVcpu[0]!, 3)} / B ${fmt(sidecarVcpu[1]!, 3)} vCPU per 1000 req/s (${vs((sidecarVcpu[0]! + sidecarVcpu[1]!) / 2, ISTIO.vcpuPer1000)} on average), ` +
        `RSS A ${fmt(sidecarRss[0]!, 1)} / B ${fmt(sidecarRss[1]!, 1)} MB (${vs((sidecarRss[0]! + sidecarRss[1]!) / 2, ISTIO.rssMb)}), ` +
        `added p90 through both sidecars ${fmt(addedP90, 2)} ms (${vs(addedP90, ISTIO.addedP90Ms)})\n`,
    );
    const on = rateRuns.get(sigil)!;
    const off = rateRuns.get(targets[3]!)!;
    const cpuOn = on.cpuMicros / on.requests;
    const cpuOff = off.cpuMicros / off.requests;
    const sOn = summarize(on.latencies);
    const sOff = summarize(off.latencies);
    const roundRatios = on.roundCpu.map((c, i) => c / off.roundCpu[i]!);
    process.stdout.write(
      `ratio sigil metrics on/off at ${o.rate} req/s: proxy CPU per request ${fmt(cpuOn / cpuOff, 3)}x (${cpuOn >= cpuOff ? '+' : ''}${fmt(cpuOn - cpuOff, 1)} µs/req over both sidecars; ` +
        `per round ${fmt(Math.min(...roundRatios), 3)}–${fmt(Math.max(...roundRatios), 3)}x), p50 ${fmt(sOn.median / sOff.median, 3)}x, p99 ${fmt(sOn.p99 / sOff.p99, 3)}x\n`,
    );
    const offSat = targets[3]!;
    process.stdout.write(
      `ratio sigil metrics on/off at saturation (closed loop, see README for why this overstates): proxy CPU per request ${fmt(sigil.cpuMicros / sigil.requests / (offSat.cpuMicros / offSat.requests), 3)}x, throughput ${fmt(rps(sigil) / rps(offSat), 3)}x\n`,
    );
    // Check that the switch did what it says: the metrics-on pair counted requests, the other did not.
    const counted = async (admins: string[]): Promise<number> => {
      let sum = 0;
      for (const admin of admins) {
        const text = await (await fetch(`http://${admin}/metrics`)).text();
        for (const line of text.split('\n')) if (line.startsWith('sigil_requests_total')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return sum;
    };
    const [countedOn, countedOff] = [await counted(sigilOn.admins), await counted(sigilOff.admins)];
    process.stdout.write(`sigil_requests_total over both sidecars (incl. warm-up): metrics on ${countedOn}, metrics off ${countedOff}\n`);
    if (countedOn === 0 || countedOff !== 0) throw new Error(`metrics switch not in effect (on: ${countedOn}, off: ${countedOff})`);
    const failed = targets.filter((t) => t.errors > 0 || rateRuns.get(t)!.errors > 0);
    for (const t of failed) process.stderr.write(`${t.name}: ${t.errors} errors, first: ${t.firstError}\n`);
    if (failed.length > 0) throw new Error('some proxied requests failed');
  } finally {
    for (const t of targets) t.agent.destroy();
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await pki.cleanup();
  }
}

/**
 * nginx as both halves (plain HTTP → proxy_ssl with client cert → ssl_verify_client → upstream),
 * with `pids` = the master, then its worker.
 */
async function startNginxPair(nginx: string, pki: { dir: string; svidA: string; svidB: string }, upstreamAddr: string): Promise<{ outbound: string; pids: number[]; stop: () => Promise<void> }> {
  const inPort = await freePort();
  const outPort = await freePort();
  const pair = await startNginx(
    nginx,
    join(pki.dir, 'nginx'),
    `  upstream agent { server ${upstreamAddr}; keepalive 64; }
  upstream peer  { server 127.0.0.1:${inPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${inPort} ssl;
    ssl_certificate ${pki.svidB}/svid.pem; ssl_certificate_key ${pki.svidB}/svid.key;
    ssl_client_certificate ${pki.svidB}/bundle.pem; ssl_verify_client on;
    keepalive_requests 1000000;
    location / { proxy_pass http://agent; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:${outPort};
    keepalive_requests 1000000;
    location / {
      proxy_pass https://peer; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate ${pki.svidA}/svid.pem; proxy_ssl_certificate_key ${pki.svidA}/svid.key;
      # nginx can only match a server name against DNS SANs/CN, and an SVID's identity is its URI
      # SAN, so the client side cannot verify the server at all: this row does less work than
      # the other two on the outbound half (see bench/README.md).
      proxy_ssl_verify off; proxy_ssl_session_reuse on;
    }
  }`,
  );
  return { outbound: `127.0.0.1:${outPort}`, ...pair };
}
