// Server CPU per mutual-TLS handshake: a real `sigil run` inbound listener vs a minimal raw
// Node tls.createServer (requestCert, rejectUnauthorized) and, when installed, nginx with
// `ssl_verify_client on`, each in its own process(es).
//
// This process is the client: it opens fresh mTLS connections (full handshakes, no session
// resumption; TLS 1.3, P-256 key exchange, ECDSA P-256 certificates) with bounded concurrency.
// Two phases, each with a warm-up and then all servers in alternating rounds so drift (thermal,
// noisy neighbours) hits them alike:
//   handshake only: the client closes as soon as the handshake is complete, without a request;
//   handshake + one request: one tiny HTTP request per connection, read to the end.
// Each server's CPU time (utime+stime from /proc/<pid>/stat, all threads, nginx master +
// workers) is read before and after each measured batch.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createSecureContext, type SecureContext } from 'node:tls';
import {
  ID_A, ID_B, TD, clockTicks, descendantPids, fmt, freePort, machineLine, metricTotal, makePki, printTable, processCpuMicros, serverScript, sleep, spawnServer, spawnSigil,
  splitHostPort, summarize, writeConfig, type BenchPki,
} from './lib.js';
import { findNginx, startNginx } from './nginx.js';

export interface HandshakeOptions {
  /** Measured connections per server and phase. */
  n: number;
  /** Unmeasured connections per server before each phase. */
  warmup: number;
  concurrency: number;
  rounds: number;
}

const DEFAULTS: HandshakeOptions = {
  n: Number(process.env.BENCH_HS_N ?? 1200),
  warmup: Number(process.env.BENCH_HS_WARMUP ?? 150),
  concurrency: Number(process.env.BENCH_HS_CONCURRENCY ?? 8),
  rounds: Number(process.env.BENCH_HS_ROUNDS ?? 4),
};

/** The goal of the handshake issue: Sigil's server CPU per handshake vs the raw Node server's. */
const GOAL_RATIO = 1.15;

/**
 * After a batch, the server still processes the last closes; its CPU is read after this pause
 * so that work is counted in the batch that caused it.
 */
const SETTLE_MS = 50;

const REQUEST = Buffer.from(`GET /hs HTTP/1.1\r\nHost: agent-b\r\nConnection: close\r\n\r\n`);

type Phase = 'handshake' | 'request';
const PHASES: Phase[] = ['handshake', 'request'];

interface PhaseStats {
  cpuMicros: number;
  conns: number;
  /** Wall time of this server's measured batches (without the settle pause). */
  wallMs: number;
  /** Server CPU µs per connection of each measured round, to show the spread. */
  roundCpu: number[];
  handshakeMs: number[];
  totalMs: number[];
  failures: number;
}

interface Target {
  name: string;
  address: { host: string; port: number };
  /** The server's processes; their CPU times are summed. */
  pids: number[];
  stats: Record<Phase, PhaseStats>;
  /** Connections whose handshake the client completed, warm-up included (for the /metrics check). */
  handshakes: number;
}

interface ConnResult {
  ok: boolean;
  /** The client saw secureConnect (and the server's identity checked out). */
  secure: boolean;
  handshakeMs: number;
  totalMs: number;
  error?: string;
}

function oneConnection(address: { host: string; port: number }, ctx: SecureContext, expectId: string, phase: Phase): Promise<ConnResult> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let tHs = 0;
    let secure = false;
    let response = '';
    let settled = false;
    const done = (ok: boolean, error?: string): void => {
      if (settled) return;
      settled = true;
      const totalMs = Number(process.hrtime.bigint() - t0) / 1e6;
      resolve({ ok, secure, handshakeMs: tHs, totalMs, ...(error === undefined ? {} : { error }) });
    };
    const socket = connect({
      host: address.host,
      port: address.port,
      secureContext: ctx,
      ALPNProtocols: ['http/1.1'],
      rejectUnauthorized: true,
      // The server's identity is its URI SAN, not a DNS name.
      checkServerIdentity: (_h, cert) => (cert.subjectaltname?.includes(`URI:${expectId}`) ? undefined : new Error('unexpected server id')),
    });
    socket.setNoDelay(true);
    socket.setTimeout(10_000, () => socket.destroy(new Error('timeout')));
    socket.once('secureConnect', () => {
      tHs = Number(process.hrtime.bigint() - t0) / 1e6;
      secure = true;
      // Every server must have negotiated what the rows claim to compare.
      const key = socket.getEphemeralKeyInfo();
      const group = key !== null && 'name' in key ? key.name : undefined;
      const proto = socket.getProtocol();
      if (proto !== 'TLSv1.3' || group !== 'prime256v1') {
        socket.destroy(new Error(`negotiated ${proto} with ${String(group)}, not TLSv1.3 with prime256v1`));
        return;
      }
      // end(), not destroy(): close_notify and FIN go out after our Finished, so the server
      // completes its side of the handshake (and Sigil its verification) before it sees the close.
      if (phase === 'handshake') socket.end();
      else socket.write(REQUEST);
    });
    socket.setEncoding('latin1');
    // The client closes as soon as the whole response is in, whether or not the server honours
    // "Connection: close", so the comparison does not depend on who closes first.
    socket.on('data', (d: string) => {
      response += d;
      if (phase === 'request' && responseComplete(response)) {
        done(response.startsWith('HTTP/1.1 200'), response.startsWith('HTTP/1.1 200') ? undefined : `response: ${JSON.stringify(response.slice(0, 120))}`);
        socket.end();
      }
    });
    socket.on('error', (err) => done(false, err.message));
    // Handshake only: done once both sides have closed, so at most `concurrency` connections are
    // ever open on the server. A server that accepts the handshake and then drops the connection
    // (as Sigil does with a peer that fails SPIFFE verification) is only caught by the /metrics
    // check at the end.
    socket.on('close', () => {
      if (phase === 'handshake') return done(secure, secure ? undefined : 'closed before the handshake completed');
      const ok = response.startsWith('HTTP/1.1 200');
      done(ok, ok ? undefined : `response: ${JSON.stringify(response.slice(0, 120))}`);
    });
  });
}

function responseComplete(response: string): boolean {
  const end = response.indexOf('\r\n\r\n');
  if (end === -1) return false;
  const m = /\r\ncontent-length:\s*(\d+)/i.exec(response.slice(0, end));
  return m !== null && response.length - (end + 4) >= Number(m[1]);
}

const serverCpu = (t: Target): number => t.pids.reduce((sum, pid) => sum + processCpuMicros(pid), 0);

async function runBatch(target: Target, phase: Phase, count: number, concurrency: number, ctx: SecureContext, record: boolean): Promise<void> {
  const stats = target.stats[phase];
  let next = 0;
  const cpu0 = serverCpu(target);
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      const r = await oneConnection(target.address, ctx, ID_B.toString(), phase);
      if (r.secure) target.handshakes++;
      if (!record) continue;
      if (!r.ok) {
        stats.failures++;
        if (stats.failures <= 3) process.stderr.write(`${target.name} (${phase}): connection failed: ${r.error}\n`);
        continue;
      }
      stats.handshakeMs.push(r.handshakeMs);
      stats.totalMs.push(r.totalMs);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const wallMs = performance.now() - t0;
  await sleep(SETTLE_MS);
  if (record) {
    const cpu = serverCpu(target) - cpu0;
    stats.cpuMicros += cpu;
    stats.conns += count;
    stats.wallMs += wallMs;
    stats.roundCpu.push(cpu / count);
  }
}

/**
 * nginx terminating the same mTLS (server SVID B, client chain verified against the bench CA by
 * OpenSSL, no SPIFFE ID check) and answering a fixed 200 without keep-alive, in a temp prefix.
 * Resolves once the worker has been forked, which nginx does only after binding the listener.
 */
async function startNginxServer(nginx: string, pki: BenchPki): Promise<{ address: string; pids: number[]; stop: () => Promise<void> }> {
  const port = await freePort();
  const server = await startNginx(
    nginx,
    join(pki.dir, 'nginx-hs'),
    `  keepalive_timeout 0;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${pki.svidB}/svid.pem; ssl_certificate_key ${pki.svidB}/svid.key;
    ssl_client_certificate ${pki.svidB}/bundle.pem; ssl_verify_client on;
    # SVID → dev CA is depth 1; 2 also admits one intermediate, as a SPIRE chain would have.
    ssl_verify_depth 2;
    ssl_protocols TLSv1.3;
    ssl_ecdh_curve prime256v1;
    location / { return 200 "ok"; }
  }`,
  );
  return { address: `127.0.0.1:${port}`, ...server };
}

export async function runHandshakeBench(opts: Partial<HandshakeOptions> = {}): Promise<void> {
  const o = { ...DEFAULTS, ...opts };
  process.stdout.write(
    `\n## handshake: server CPU per mTLS handshake (N=${o.n} per server and phase, concurrency ${o.concurrency}, ${o.rounds} alternating rounds after ${o.warmup} warm-up connections)\n`,
  );
  process.stdout.write(machineLine() + '\n');
  const pki = await makePki();
  const stops: Array<() => Promise<void>> = [];
  try {
    const upstream = await spawnServer(serverScript('upstream'));
    stops.push(upstream.stop);
    const nginx = findNginx();
    // Start-up is not measured, so the servers start at once; whichever started is stopped even
    // if another one failed.
    const started = await Promise.allSettled([
      writeConfig(pki.dir, 'sigil-b.json', {
        trustDomain: TD.name,
        identity: { dev: { caDir: './ca', spiffeId: ID_B.toString(), ttl: '1h' } },
        inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${upstream.info.port as number}` },
        policy: { allow: [ID_A.toString()] },
        admin: { listen: '127.0.0.1:0' },
      }).then(spawnSigil),
      spawnServer(serverScript('raw-tls-server'), ['--svid', pki.svidB]),
      nginx === undefined ? undefined : startNginxServer(nginx, pki),
    ]);
    for (const s of started) if (s.status === 'fulfilled' && s.value) stops.push(s.value.stop);
    const value = <T>(s: PromiseSettledResult<T>): T => {
      if (s.status === 'rejected') throw s.reason;
      return s.value;
    };
    const [sigil, raw, nginxServer] = [value(started[0]), value(started[1]), value(started[2])];
    process.stdout.write(nginx === undefined ? 'nginx not installed, skipped\n' : `nginx: ${nginx}, ssl_verify_client on, 1 worker\n`);

    const ctx = createSecureContext({
      cert: readFileSync(join(pki.svidA, 'svid.pem'), 'utf8'),
      key: readFileSync(join(pki.svidA, 'svid.key'), 'utf8'),
      ca: readFileSync(join(pki.svidA, 'bundle.pem'), 'utf8'),
      // The same key exchange on every server: nginx is limited to prime256v1, and a client
      // offering X25519 first would cost it a HelloRetryRequest the Node servers never pay.
      minVersion: 'TLSv1.3',
      ecdhCurve: 'prime256v1',
    });
    const emptyStats = (): PhaseStats => ({ cpuMicros: 0, conns: 0, wallMs: 0, roundCpu: [], handshakeMs: [], totalMs: [], failures: 0 });
    const mk = (name: string, address: string, pids: number[]): Target => ({
      name, address: splitHostPort(address), pids, stats: { handshake: emptyStats(), request: emptyStats() }, handshakes: 0,
    });
    const targets = [mk('raw node tls (baseline)', raw.info.address as string, [raw.pid]), mk('sigil inbound', sigil.ready.inbound as string, [sigil.pid])];
    if (nginxServer) targets.push(mk('nginx (ssl_verify_client on)', nginxServer.address, nginxServer.pids));
    const [rawT, sigilT] = [targets[0]!, targets[1]!];

    const perRound = Math.ceil(o.n / o.rounds);
    for (const phase of PHASES) {
      for (const t of targets) await runBatch(t, phase, o.warmup, o.concurrency, ctx, false);
      for (let r = 0; r < o.rounds; r++) {
        const order = r % 2 === 0 ? targets : [...targets].reverse();
        for (const t of order) await runBatch(t, phase, perRound, o.concurrency, ctx, true);
      }
    }

    const cpuPer = (t: Target, phase: Phase): number => t.stats[phase].cpuMicros / t.stats[phase].conns;
    const range = (xs: number[], digits: number): string => `${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)}`;
    // Each CPU read is truncated to a tick, so each batch's Δ is off by up to a tick per process.
    const tickError = (t: Target, phase: Phase): number => (o.rounds * t.pids.length * 1e6) / clockTicks() / Math.max(1, t.stats[phase].conns);
    const ratioLine = (t: Target, phase: Phase, what: string): string => {
      const perRoundRatios = t.stats[phase].roundCpu.map((c, i) => c / rawT.stats[phase].roundCpu[i]!);
      return (
        `ratio ${t === sigilT ? 'sigil' : 'nginx'}/raw server CPU per ${what}: ${fmt(cpuPer(t, phase) / cpuPer(rawT, phase), 2)}x ` +
        `(per round ${range(perRoundRatios, 2)}x; CPU time is read in ${fmt(1e6 / clockTicks())} µs ticks: ±${fmt(tickError(t, phase), 1)} µs/${what === 'handshake' ? 'hs' : 'conn'})`
      );
    };

    process.stdout.write(`\n### handshake only: the client closes right after the mTLS handshake, no request\n`);
    printTable(
      ['server', 'handshakes', 'failed', 'server CPU µs/hs', 'per-round µs/hs', 'vs raw', 'handshakes/s', 'handshake p50 ms', 'handshake p99 ms'],
      targets.map((t) => {
        const s = t.stats.handshake;
        const hs = summarize(s.handshakeMs);
        return [t.name, String(s.conns), String(s.failures), fmt(cpuPer(t, 'handshake')), range(s.roundCpu, 0), fmt(cpuPer(t, 'handshake') / cpuPer(rawT, 'handshake'), 2) + 'x', fmt((s.conns * 1000) / s.wallMs), fmt(hs.median, 2), fmt(hs.p99, 2)];
      }),
    );
    const hsRatio = cpuPer(sigilT, 'handshake') / cpuPer(rawT, 'handshake');
    process.stdout.write(`${ratioLine(sigilT, 'handshake', 'handshake')}; goal ≤ ${GOAL_RATIO}x: ${hsRatio <= GOAL_RATIO ? 'MET' : 'MISSED'}\n`);
    for (const t of targets.slice(2)) process.stdout.write(ratioLine(t, 'handshake', 'handshake') + '\n');

    process.stdout.write(`\n### handshake + one request: GET /hs on each connection, response read to the end\n`);
    printTable(
      ['server', 'conns', 'failed', 'server CPU µs/conn', 'per-round µs/conn', 'vs raw', 'conns/s', 'handshake p50 ms', 'handshake p99 ms', 'conn total p50 ms', 'conn total p99 ms'],
      targets.map((t) => {
        const s = t.stats.request;
        const hs = summarize(s.handshakeMs);
        const total = summarize(s.totalMs);
        return [t.name, String(s.conns), String(s.failures), fmt(cpuPer(t, 'request')), range(s.roundCpu, 0), fmt(cpuPer(t, 'request') / cpuPer(rawT, 'request'), 2) + 'x', fmt((s.conns * 1000) / s.wallMs), fmt(hs.median, 2), fmt(hs.p99, 2), fmt(total.median, 2), fmt(total.p99, 2)];
      }),
    );
    for (const t of targets.slice(1)) process.stdout.write(ratioLine(t, 'request', 'connection') + '\n');

    // A Sigil that skipped verification or authorization could not look fast: every handshake
    // the client completed must have been verified (SPIFFE) and its connect authorized.
    const metrics = await (await fetch(`http://${sigil.ready.admin as string}/metrics`)).text();
    const verified = metricTotal(metrics, 'sigil_tls_handshakes_total', { reporter: 'inbound', result: 'success' });
    const connectAllowed = metricTotal(metrics, 'sigil_authz_decisions_total', { action: 'connect', decision: 'allow' });
    process.stdout.write(
      `\nsigil /metrics: ${verified} inbound handshakes verified (sigil_tls_handshakes_total{reporter="inbound",result="success"}), ` +
        `${connectAllowed} connects authorized (sigil_authz_decisions_total{action="connect",decision="allow"}), ` +
        `for ${sigilT.handshakes} handshakes the client completed (warm-up included)\n`,
    );
    if (verified < sigilT.handshakes || connectAllowed < sigilT.handshakes) throw new Error('sigil verified or authorized fewer handshakes than the client completed');
    if (targets.some((t) => PHASES.some((p) => t.stats[p].failures > 0))) throw new Error('some handshake connections failed');
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await pki.cleanup();
  }
}
