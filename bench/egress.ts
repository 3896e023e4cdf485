// Requests/s, latency and proxy CPU of egress routes (`outbound.egress`), closed-loop with keep-alive:
//   direct          client ══TLS══▶ upstream                      (the client holds the key; the floor)
//   raw node proxy  client → raw proxy ══TLS══▶ upstream          (hand-written Node forward proxy that
//                                                                  injects `authorization: Bearer <key>`)
//   sigil egress    client → sigil outbound ══TLS══▶ upstream     (Cedar `egress.http`, file credential,
//                                                                  attribution header, metrics on)
//   sigil egress, metrics off: the same, with `metrics: { enabled: false }`
// The upstream is one HTTPS child process with its own CA (the test fixtures' generator, as in
// test/integration/egress.test.ts); it answers 401 unless the request carries the key, so every
// counted request proves the credential was injected. The upstream and the raw proxy are this
// file run as a child (`node dist/bench/egress.js --role upstream|raw-proxy ...`); Sigil is a
// real `sigil run`. This process is only the load generator. Targets are measured in alternating
// rounds, then the proxy paths again at a fixed open-loop rate (where CPU per request compares
// like with like, see bench/README.md "Fixed-rate phase").
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { Agent as HttpAgent, createServer, request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createCa, createCert } from '../test/fixtures/certs.js';
import { closedLoop, openLoop, type RateResult, ID_A, TD, fmt, machineLine, makePki, printTable, sleep, spawnServer, spawnSigil, splitHostPort, summarize, writeConfig } from './lib.js';
import { announce, args, exitOnSignal, hostPort } from './servers/common.js';

export interface EgressOptions {
  concurrency: number;
  /** Measured seconds per target in the closed-loop phase, split over `rounds`. */
  seconds: number;
  warmupSeconds: number;
  rounds: number;
  /** Fixed open-loop rate (req/s) of the rate phase, and its measured seconds per proxy path. */
  rate: number;
  rateSeconds: number;
  quick: boolean;
}

/** `--quick` (≈20 s in all): shorter phases, 2 rounds; the environment still overrides. */
export function egressOptions(quick: boolean): EgressOptions {
  const env = (name: string, full: number, short: number): number => Number(process.env[name] ?? (quick ? short : full));
  return {
    concurrency: env('BENCH_EGRESS_CONCURRENCY', 32, 32),
    seconds: env('BENCH_EGRESS_SECONDS', 6, 1.5),
    warmupSeconds: env('BENCH_EGRESS_WARMUP', 2, 0.5),
    rounds: env('BENCH_EGRESS_ROUNDS', 4, 2),
    rate: env('BENCH_EGRESS_RATE', 1000, 1000),
    rateSeconds: env('BENCH_EGRESS_RATE_SECONDS', 6, 1),
    quick,
  };
}

const HOST = 'api.provider.test';
const PATH = '/v1/bench';
const BODY = Buffer.from('{"id":"bench","object":"chat.completion","ok":true}\n');

// ---------------------------------------------------------------------------------------------
// Child roles.

/** The provider: HTTPS, keep-alive, 401 without the key, a fixed small JSON body otherwise. */
function upstreamMain(a: Record<string, string>): void {
  const expected = `Bearer ${readFileSync(a.secret!, 'utf8').trim()}`;
  const server = createHttpsServer({ cert: readFileSync(a.cert!), key: readFileSync(a.key!) }, (req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.headers.authorization !== expected) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end('{"error":"missing or wrong key"}\n');
        return;
      }
      if (req.url === '/v1/echo') {
        // For the pre-flight check: what the upstream received (minus the key itself).
        const body = Buffer.from(JSON.stringify({ ...req.headers, authorization: 'Bearer <ok>' }));
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
        res.end(body);
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
      res.end(BODY);
    });
  });
  server.keepAliveTimeout = 60_000;
  exitOnSignal();
  const { host, port } = hostPort(a.listen ?? '127.0.0.1:0');
  server.listen(port, host, () => announce(server.address()));
}

/**
 * The hand-written baseline: plain HTTP in, https.request out over a keep-alive agent that
 * verifies the upstream against the CA, the key injected, the response piped back.
 */
function rawProxyMain(a: Record<string, string>): void {
  const upstream = hostPort(a.upstream!);
  const authorization = `Bearer ${readFileSync(a.secret!, 'utf8').trim()}`;
  const agent = new HttpsAgent({ keepAlive: true, maxSockets: 256, ca: readFileSync(a.ca!) });
  const server = createServer((req, res) => {
    const headers: OutgoingHttpHeaders = { ...req.headers, host: a.upstream!, authorization };
    delete headers.connection;
    const up = httpsRequest({ host: upstream.host, port: upstream.port, method: req.method, path: req.url, headers, agent }, (ures) => {
      res.writeHead(ures.statusCode ?? 502, ures.headers);
      ures.pipe(res);
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  // Node's default keepAliveTimeout (5 s), like Sigil's outbound listener: both proxy rows see
  // the same idle-connection behaviour between rounds.
  exitOnSignal();
  const { host, port } = hostPort(a.listen ?? '127.0.0.1:0');
  server.listen(port, host, () => announce(server.address()));
}

// ---------------------------------------------------------------------------------------------
// Load generator.

interface Target {
  name: string;
  /** http.request for the proxies, https.request for direct. */
  send: (opts: RequestOptions, cb: (res: IncomingMessage) => void) => ClientRequest;
  host: string;
  port: number;
  headers: Record<string, string>;
  agent: HttpAgent;
  requests: number;
  errors: number;
  elapsedMs: number;
  latencies: number[];
  roundRps: number[];
  /** The proxy process of this path (not the shared upstream); empty for direct. */
  pids: number[];
  cpuMicros: number;
  firstError?: string;
}



function oneRequest(t: Target, path = PATH): Promise<{ ok: boolean; ms: number; body?: string; error?: string }> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = t.send({ host: t.host, port: t.port, path, method: 'GET', headers: t.headers, agent: t.agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        const body = Buffer.concat(chunks).toString('utf8');
        const ok = res.statusCode === 200 && body.length > 0;
        resolve(ok ? { ok, ms, body } : { ok, ms, error: `status ${res.statusCode}: ${body.slice(0, 200)}` });
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

/** Open loop at a fixed rate; latency from each request's scheduled send time (as in proxy.ts). */
function loadAtRate(t: Target, rate: number, seconds: number, out: RateResult | undefined): Promise<void> {
  return openLoop(t, rate, seconds, out, oneRequest);
}

/** CPU seconds per 1,000 requests from µs per request. */
const perK = (microsPerReq: number): string => fmt(microsPerReq / 1000, 3);

export async function runEgressBench(opts: Partial<EgressOptions> = {}): Promise<void> {
  const o = { ...egressOptions(false), ...opts };
  process.stdout.write(
    `\n## egress${o.quick ? ' (--quick)' : ''}: closed-loop keep-alive load, concurrency ${o.concurrency}, ${o.seconds}s measured per target in ${o.rounds} alternating rounds after ${o.warmupSeconds}s warm-up\n`,
  );
  process.stdout.write(machineLine() + '\n');
  const pki = await makePki();
  const stops: Array<() => Promise<void>> = [];
  const targets: Target[] = [];
  try {
    // The provider's own CA and a server certificate for 127.0.0.1 (what the route's `ca` names).
    const providerCa = await createCa({ trustDomain: 'provider.test' });
    const providerCert = await createCert({ signer: providerCa, role: 'provider', ipAddresses: ['127.0.0.1'], dnsNames: ['localhost'], keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['1.3.6.1.5.5.7.3.1'] });
    const file = (name: string): string => join(pki.dir, name);
    await writeFile(file('provider-ca.pem'), providerCa.pem);
    await writeFile(file('provider-cert.pem'), providerCert.pem);
    await writeFile(file('provider-key.pem'), providerCert.keyPem, { mode: 0o600 });
    await writeFile(file('provider.key'), `sk-bench-${Math.random().toString(36).slice(2)}\n`, { mode: 0o600 });
    await writeFile(
      file('policy.cedar'),
      `@id("provider") permit (principal == Agent::"${ID_A}", action == Action::"egress.http", resource == Host::"${HOST}")\nwhen { context.http.path like "/v1/*" };\n`,
    );

    const self = fileURLToPath(import.meta.url);
    const upstream = await spawnServer(self, ['--role', 'upstream', '--cert', file('provider-cert.pem'), '--key', file('provider-key.pem'), '--secret', file('provider.key')]);
    stops.push(upstream.stop);
    const upstreamAddr = `127.0.0.1:${upstream.info.port as number}`;

    const raw = await spawnServer(self, ['--role', 'raw-proxy', '--upstream', upstreamAddr, '--ca', file('provider-ca.pem'), '--secret', file('provider.key')]);
    stops.push(raw.stop);

    const sigil = async (metricsEnabled: boolean): Promise<{ outbound: string; pid: number; admin: string }> => {
      const child = await spawnSigil(
        await writeConfig(pki.dir, `sigil-egress${metricsEnabled ? '' : '-nometrics'}.json`, {
          trustDomain: TD.name,
          identity: { dev: { caDir: './ca', spiffeId: ID_A.toString(), ttl: '1h' } },
          outbound: {
            listen: '127.0.0.1:0',
            egress: [
              {
                host: HOST,
                upstream: `https://${upstreamAddr}`,
                ca: './provider-ca.pem',
                credential: { file: './provider.key' },
                attribution: { headers: { 'x-acting-agent': '{agent}' } },
              },
            ],
          },
          policy: { cedar: './policy.cedar' },
          admin: { listen: '127.0.0.1:0' },
          ...(metricsEnabled ? {} : { metrics: { enabled: false } }),
        }),
      );
      stops.push(child.stop);
      return { outbound: child.ready.outbound as string, pid: child.pid, admin: child.ready.admin as string };
    };
    const sigilOn = await sigil(true);
    const sigilOff = await sigil(false);

    const secret = readFileSync(file('provider.key'), 'utf8').trim();
    const providerCaPem = readFileSync(file('provider-ca.pem'));
    const mk = (name: string, address: string, pids: number[], direct = false): Target => {
      const { host, port } = splitHostPort(address);
      return {
        name,
        send: direct ? httpsRequest : httpRequest,
        host,
        port,
        // Direct: the client itself holds the key. Through a proxy: no key, the proxy adds it.
        headers: direct ? { authorization: `Bearer ${secret}` } : { host: HOST },
        // `timeout` makes the agent honour the server's `Keep-Alive: timeout=N` hint (idle sockets
        // are dropped 1 s before the server would close them); without it, Node ignores the hint
        // and a request sent on a socket the server is just closing fails with ECONNRESET.
        agent: direct
          ? new HttpsAgent({ keepAlive: true, maxSockets: o.concurrency, timeout: 30_000, ca: providerCaPem })
          : new HttpAgent({ keepAlive: true, maxSockets: o.concurrency, timeout: 30_000 }),
        requests: 0,
        errors: 0,
        elapsedMs: 0,
        latencies: [],
        roundRps: [],
        pids,
        cpuMicros: 0,
      };
    };
    targets.push(mk('direct (client holds the key)', upstreamAddr, [], true));
    targets.push(mk('raw node proxy (baseline)', raw.info.address as string, [raw.pid]));
    targets.push(mk('sigil egress', sigilOn.outbound, [sigilOn.pid]));
    targets.push(mk('sigil egress, metrics off', sigilOff.outbound, [sigilOff.pid]));

    // Pre-flight: every path reaches the upstream with the key; Sigil adds the attribution header.
    for (const t of targets) {
      const r = await oneRequest(t, '/v1/echo');
      if (!r.ok) throw new Error(`${t.name}: pre-flight failed: ${r.error}`);
      const seen = JSON.parse(r.body!) as Record<string, string>;
      if (t.name.startsWith('sigil') && seen['x-acting-agent'] !== ID_A.toString()) throw new Error(`${t.name}: no attribution header upstream (${r.body})`);
    }

    for (const t of targets) await load(t, o.warmupSeconds, o.concurrency, false);
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 === 0 ? targets : [...targets].reverse();
      for (const t of order) {
        await load(t, o.seconds / o.rounds, o.concurrency, true);
        await sleep(200);
      }
    }

    // Fixed-rate phase: the same offered load on each proxy path, alternating rounds.
    const rateTargets = targets.slice(1);
    const rateResults = new Map<Target, RateResult>(rateTargets.map((t) => [t, { requests: 0, errors: 0, latencies: [], cpuMicros: 0, roundCpu: [] }]));
    for (const t of rateTargets) await loadAtRate(t, o.rate, Math.min(1, o.warmupSeconds), undefined);
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 === 0 ? rateTargets : [...rateTargets].reverse();
      for (const t of order) {
        await loadAtRate(t, o.rate, o.rateSeconds / o.rounds, rateResults.get(t));
        await sleep(200);
      }
    }

    const rps = (t: Target): number => t.requests / (t.elapsedMs / 1000);
    const cpuPerReq = (t: Target): number => t.cpuMicros / t.requests;
    const [direct, rawT, sigilT, sigilOffT] = targets as [Target, Target, Target, Target];
    const sRaw = summarize(rawT.latencies);
    const sDirect = summarize(direct.latencies);
    const rows = targets.map((t) => {
      const s = summarize(t.latencies);
      const hasCpu = t.pids.length > 0;
      return [
        t.name,
        fmt(rps(t)),
        `${fmt(Math.min(...t.roundRps))}–${fmt(Math.max(...t.roundRps))}`,
        fmt(rps(t) / rps(rawT), 2) + 'x',
        fmt(rps(t) / rps(direct), 2) + 'x',
        fmt(s.median, 2),
        fmt(s.p99, 2),
        fmt(s.p99 / sRaw.p99, 2) + 'x',
        hasCpu ? perK(cpuPerReq(t)) : '—',
        hasCpu ? fmt(cpuPerReq(t) / cpuPerReq(rawT), 2) + 'x' : '—',
        String(t.errors),
      ];
    });
    printTable(['path', 'req/s', 'per-round req/s', 'rps vs raw', 'rps vs direct', 'p50 ms', 'p99 ms', 'p99 vs raw', 'proxy CPU s/1k req', 'CPU vs raw', 'errors'], rows);
    const sSigil = summarize(sigilT.latencies);
    process.stdout.write(
      `ratio sigil/raw: throughput ${fmt(rps(sigilT) / rps(rawT), 2)}x, proxy CPU per request ${fmt(cpuPerReq(sigilT) / cpuPerReq(rawT), 2)}x, p50 ${fmt(sSigil.median / sRaw.median, 2)}x, p99 ${fmt(sSigil.p99 / sRaw.p99, 2)}x\n` +
        `ratio sigil/direct: throughput ${fmt(rps(sigilT) / rps(direct), 2)}x, p50 ${fmt(sSigil.median / sDirect.median, 2)}x, p99 ${fmt(sSigil.p99 / sDirect.p99, 2)}x` +
        ` (raw/direct: throughput ${fmt(rps(rawT) / rps(direct), 2)}x, p50 ${fmt(sRaw.median / sDirect.median, 2)}x)\n`,
    );

    process.stdout.write(`\n### fixed rate: ${o.rate} req/s open loop, ${o.rateSeconds}s per proxy path in ${o.rounds} alternating rounds\n`);
    const rawRate = rateResults.get(rawT)!;
    const rawRateCpu = rawRate.cpuMicros / rawRate.requests;
    const rateRows = rateTargets.map((t) => {
      const rr = rateResults.get(t)!;
      const s = summarize(rr.latencies);
      const cpu = rr.cpuMicros / rr.requests;
      return [t.name, String(rr.requests), fmt(s.median, 2), fmt(s.p99, 2), perK(cpu), fmt(cpu / rawRateCpu, 2) + 'x', fmt((cpu * o.rate) / 1e6, 3), String(rr.errors)];
    });
    printTable(['path', 'requests', 'p50 ms', 'p99 ms', 'proxy CPU s/1k req', 'CPU vs raw', 'vCPU at this rate', 'errors'], rateRows);
    const on = rateResults.get(sigilT)!;
    const off = rateResults.get(sigilOffT)!;
    const roundRatios = on.roundCpu.map((c, i) => c / off.roundCpu[i]!);
    process.stdout.write(
      `ratio sigil/raw at ${o.rate} req/s: proxy CPU per request ${fmt(on.cpuMicros / on.requests / rawRateCpu, 2)}x (+${fmt(on.cpuMicros / on.requests - rawRateCpu)} µs/req)\n` +
        `ratio sigil metrics on/off at ${o.rate} req/s: proxy CPU per request ${fmt(on.cpuMicros / on.requests / (off.cpuMicros / off.requests), 3)}x (per round ${fmt(Math.min(...roundRatios), 3)}–${fmt(Math.max(...roundRatios), 3)}x)\n`,
    );

    // The metrics switch did what it says: one sidecar counted the egress calls, the other none.
    const counted = async (admin: string): Promise<number> => {
      let sum = 0;
      const text = await (await fetch(`http://${admin}/metrics`)).text();
      for (const line of text.split('\n')) if (line.startsWith('sigil_requests_total')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      return sum;
    };
    const [countedOn, countedOff] = [await counted(sigilOn.admin), await counted(sigilOff.admin)];
    process.stdout.write(`sigil_requests_total (incl. warm-up): metrics on ${countedOn}, metrics off ${countedOff}\n`);
    if (countedOn === 0 || countedOff !== 0) throw new Error(`metrics switch not in effect (on: ${countedOn}, off: ${countedOff})`);
    const failed = targets.filter((t) => t.errors > 0 || (rateResults.get(t)?.errors ?? 0) > 0);
    for (const t of failed) process.stderr.write(`${t.name}: ${t.errors} errors closed-loop, ${rateResults.get(t)?.errors ?? 0} at the fixed rate, first: ${t.firstError}\n`);
    if (failed.length > 0) throw new Error('some egress requests failed');
  } finally {
    for (const t of targets) t.agent.destroy();
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await pki.cleanup();
  }
}

// Run as a child: `node dist/bench/egress.js --role upstream|raw-proxy ...`.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const a = args();
  if (a.role === 'upstream') upstreamMain(a);
  else if (a.role === 'raw-proxy') rawProxyMain(a);
  else throw new Error(`unknown --role ${a.role ?? '(none)'}`);
}
