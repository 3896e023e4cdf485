// Server CPU per mutual-TLS handshake: a real `sigil run` inbound listener vs a minimal raw
// Node tls.createServer (requestCert, rejectUnauthorized) in a child process.
//
// This process is the client: it opens fresh mTLS connections (full handshakes, no session
// resumption) with bounded concurrency, sends one tiny HTTP request on each and reads the
// response until the server closes. The server process's CPU time (utime+stime from
// /proc/<pid>/stat, all threads) is read before and after each measured batch, so the number is
// "server CPU per accepted, verified connection carrying one request". The two servers are
// measured in alternating rounds so drift (thermal, noisy neighbours) hits both alike.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect, createSecureContext, type SecureContext } from 'node:tls';
import {
  ID_A, ID_B, TD, clockTicks, fmt, machineLine, makePki, printTable, processCpuMicros, serverScript, sleep, spawnServer, spawnSigil,
  splitHostPort, summarize, writeConfig,
} from './lib.js';

export interface HandshakeOptions {
  /** Measured connections per server. */
  n: number;
  warmup: number;
  concurrency: number;
  rounds: number;
}

const DEFAULTS: HandshakeOptions = {
  n: Number(process.env.BENCH_HS_N ?? 2000),
  warmup: Number(process.env.BENCH_HS_WARMUP ?? 300),
  concurrency: Number(process.env.BENCH_HS_CONCURRENCY ?? 8),
  rounds: 4,
};

const REQUEST = Buffer.from(`GET /hs HTTP/1.1\r\nHost: agent-b\r\nConnection: close\r\n\r\n`);

interface Target {
  name: string;
  address: { host: string; port: number };
  pid: number;
  cpuMicros: number;
  conns: number;
  handshakeMs: number[];
  totalMs: number[];
  failures: number;
}

interface ConnResult {
  ok: boolean;
  handshakeMs: number;
  totalMs: number;
  error?: string;
}

function oneConnection(address: { host: string; port: number }, ctx: SecureContext, expectId: string): Promise<ConnResult> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    let tHs = 0;
    let response = '';
    let settled = false;
    const done = (ok: boolean, error?: string): void => {
      if (settled) return;
      settled = true;
      const totalMs = Number(process.hrtime.bigint() - t0) / 1e6;
      resolve({ ok, handshakeMs: tHs, totalMs, ...(error === undefined ? {} : { error }) });
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
      socket.write(REQUEST);
    });
    socket.setEncoding('latin1');
    // The client closes as soon as the whole response is in, whether or not the server honours
    // "Connection: close" (Sigil's inbound currently answers "connection: keep-alive" to it).
    socket.on('data', (d: string) => {
      response += d;
      if (responseComplete(response)) {
        done(response.startsWith('HTTP/1.1 200'), response.startsWith('HTTP/1.1 200') ? undefined : `response: ${JSON.stringify(response.slice(0, 120))}`);
        socket.end();
      }
    });
    socket.on('error', (err) => done(false, err.message));
    socket.on('close', () => {
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

async function runBatch(target: Target, count: number, concurrency: number, ctx: SecureContext, record: boolean): Promise<void> {
  let next = 0;
  const cpu0 = processCpuMicros(target.pid);
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++;
      const r = await oneConnection(target.address, ctx, ID_B.toString());
      if (!record) continue;
      if (!r.ok) {
        target.failures++;
        if (target.failures <= 3) process.stderr.write(`${target.name}: connection failed: ${r.error}\n`);
        continue;
      }
      target.handshakeMs.push(r.handshakeMs);
      target.totalMs.push(r.totalMs);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  // Let the server finish closing sockets and flushing before reading its CPU time.
  await sleep(150);
  if (record) {
    target.cpuMicros += processCpuMicros(target.pid) - cpu0;
    target.conns += count;
  }
}

export async function runHandshakeBench(opts: Partial<HandshakeOptions> = {}): Promise<void> {
  const o = { ...DEFAULTS, ...opts };
  process.stdout.write(`\n## handshake: server CPU per mTLS connection (N=${o.n} per server, concurrency ${o.concurrency}, ${o.rounds} alternating rounds)\n`);
  process.stdout.write(machineLine() + '\n');
  const pki = await makePki();
  const stops: Array<() => Promise<void>> = [];
  try {
    const upstream = await spawnServer(serverScript('upstream'));
    stops.push(upstream.stop);
    const sigil = await spawnSigil(
      await writeConfig(pki.dir, 'sigil-b.json', {
        trustDomain: TD.name,
        identity: { dev: { caDir: './ca', spiffeId: ID_B.toString(), ttl: '1h' } },
        inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${upstream.info.port as number}` },
        policy: { allow: [ID_A.toString()] },
        admin: { listen: '127.0.0.1:0' },
      }),
    );
    stops.push(sigil.stop);
    const raw = await spawnServer(serverScript('raw-tls-server'), ['--svid', pki.svidB]);
    stops.push(raw.stop);

    const ctx = createSecureContext({
      cert: readFileSync(join(pki.svidA, 'svid.pem'), 'utf8'),
      key: readFileSync(join(pki.svidA, 'svid.key'), 'utf8'),
      ca: readFileSync(join(pki.svidA, 'bundle.pem'), 'utf8'),
    });
    const mk = (name: string, address: string, pid: number): Target => ({
      name, address: splitHostPort(address), pid, cpuMicros: 0, conns: 0, handshakeMs: [], totalMs: [], failures: 0,
    });
    const targets = [mk('raw node tls (baseline)', raw.info.address as string, raw.pid), mk('sigil inbound', sigil.ready.inbound as string, sigil.pid)];

    for (const t of targets) await runBatch(t, o.warmup, o.concurrency, ctx, false);
    const perRound = Math.ceil(o.n / o.rounds);
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 === 0 ? targets : [...targets].reverse();
      for (const t of order) await runBatch(t, perRound, o.concurrency, ctx, true);
    }

    const rawCpu = targets[0]!.cpuMicros / targets[0]!.conns;
    const rows = targets.map((t) => {
      const cpu = t.cpuMicros / t.conns;
      const hs = summarize(t.handshakeMs);
      const total = summarize(t.totalMs);
      return [
        t.name,
        String(t.conns),
        String(t.failures),
        fmt(cpu),
        fmt(cpu / rawCpu, 2) + 'x',
        fmt(hs.median, 2),
        fmt(hs.p99, 2),
        fmt(total.median, 2),
        fmt(total.p99, 2),
      ];
    });
    printTable(
      ['server', 'conns', 'failed', 'server CPU µs/conn', 'vs raw', 'handshake p50 ms', 'handshake p99 ms', 'conn total p50 ms', 'conn total p99 ms'],
      rows,
    );
    const sigilT = targets[1]!;
    process.stdout.write(
      `ratio sigil/raw server CPU per connection: ${fmt(sigilT.cpuMicros / sigilT.conns / rawCpu, 2)}x ` +
        `(CPU time is read in ${fmt(1e6 / clockTicks())} µs ticks: ±${fmt((o.rounds * 1e6) / clockTicks() / Math.max(1, sigilT.conns), 1)} µs/conn)\n`,
    );
    if (targets.some((t) => t.failures > 0)) throw new Error('some handshake connections failed');
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await pki.cleanup();
  }
}
