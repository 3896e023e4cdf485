// Shared helpers for the benchmarks: child processes that print a JSON "listening" line,
// per-process CPU time from /proc, percentiles, a dev CA with SVIDs, and table printing.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initCaDir, issueSvidToDir } from '../src/cli/ca.js';
import { SIGIL_BIN, spawnJsonLines, type JsonLineProcess } from '../src/cli/processes.js';
import { SpiffeId, TrustDomain } from '../src/spiffe/index.js';

export const TD = TrustDomain.parse('bench.example');
export const ID_A = SpiffeId.parse('spiffe://bench.example/agent/a');
export const ID_B = SpiffeId.parse('spiffe://bench.example/agent/b');

/** Absolute path of a compiled server script under dist/bench/servers/. */
export function serverScript(name: string): string {
  return fileURLToPath(new URL(`./servers/${name}.js`, import.meta.url));
}

export interface Child {
  child: ChildProcess;
  pid: number;
  /** The "listening" line the script printed. */
  info: Record<string, unknown>;
  stop(): Promise<void>;
}

/** Spawns `node script args...` and waits for a JSON line with msg === "listening". */
export function spawnServer(script: string, args: string[] = [], env: NodeJS.ProcessEnv = {}): Promise<Child> {
  // BENCH_CHILD_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") is passed to every server child.
  const nodeArgs = (process.env.BENCH_CHILD_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, script, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let buf = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script}: no listening line; stderr: ${err}`)), 15_000);
    child.once('exit', (code) => reject(new Error(`${script} exited (${code}); stderr: ${err}`)));
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let parsed: Record<string, unknown>;
        try {
          parsed = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        if (parsed.msg === 'listening') {
          clearTimeout(timer);
          resolve({
            child,
            pid: child.pid!,
            info: parsed,
            stop: async () => {
              if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
              await exited;
            },
          });
        }
      }
    });
  });
}

export interface SigilChild {
  proc: JsonLineProcess;
  pid: number;
  ready: Record<string, unknown>;
  stop(): Promise<void>;
}

export async function spawnSigil(configPath: string): Promise<SigilChild> {
  // Like startSigil, but the child is stopped if it never becomes ready.
  // BENCH_SIGIL_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") is passed to every sigil child.
  const nodeArgs = (process.env.BENCH_SIGIL_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const proc = spawnJsonLines([...nodeArgs, SIGIL_BIN, 'run', '--config', configPath]);
  let ready: Record<string, unknown>;
  try {
    ready = await proc.waitFor((l) => l.msg === 'ready', 30_000);
  } catch (err) {
    await proc.stop('SIGKILL');
    throw err;
  }
  return { proc, pid: proc.child.pid!, ready, stop: async () => void (await proc.stop()) };
}

let clkTck: number | undefined;
export function clockTicks(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** utime + stime of a whole process (all threads), in microseconds. Resolution: one clock tick. */
export function processCpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may contain spaces; fields after the closing paren are fixed.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1e6) / clockTicks();
}

/** VmRSS (now) and VmHWM (peak resident set since start) of a process, in MB, from /proc/<pid>/status. */
export function processMemoryMb(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

export function summarize(samples: number[]): { median: number; p99: number; n: number } {
  const sorted = Float64Array.from(samples).sort();
  const arr = Array.from(sorted);
  return { median: percentile(arr, 50), p99: percentile(arr, 99), n: arr.length };
}

/** Where printed tables also go (run.ts records them for bench/results/). */
let tableSink: ((headers: string[], rows: string[][]) => void) | undefined;
export function setTableSink(sink: (headers: string[], rows: string[][]) => void): void {
  tableSink = sink;
}

export function printTable(headers: string[], rows: string[][]): void {
  tableSink?.(headers, rows);
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ') + ' |';
  process.stdout.write(line(headers) + '\n');
  process.stdout.write('|' + widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|') + '|\n');
  for (const r of rows) process.stdout.write(line(r) + '\n');
}

export function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
}

export function machineLine(): string {
  const model = cpus()[0]?.model ?? 'unknown CPU';
  return `machine: ${cpus().length} CPUs (${model.trim()}), node ${process.version}, ${process.platform}/${process.arch}`;
}

export interface BenchPki {
  dir: string;
  caDir: string;
  /** Directories with svid.pem, svid.key, bundle.pem. */
  svidA: string;
  svidB: string;
  cleanup(): Promise<void>;
}

/** A dev CA for bench.example plus SVIDs for agent/a (client side) and agent/b (server side). */
export async function makePki(): Promise<BenchPki> {
  const dir = await mkdtemp(join(tmpdir(), 'sigil-bench-'));
  const caDir = join(dir, 'ca');
  await initCaDir(TD, caDir);
  const svidA = join(dir, 'svid-a');
  const svidB = join(dir, 'svid-b');
  await issueSvidToDir(caDir, ID_A, 60 * 60_000, svidA);
  await issueSvidToDir(caDir, ID_B, 60 * 60_000, svidB);
  return { dir, caDir, svidA, svidB, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function writeConfig(dir: string, name: string, config: unknown): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, JSON.stringify(config, null, 2));
  return path;
}

export function splitHostPort(address: string): { host: string; port: number } {
  const sep = address.lastIndexOf(':');
  return { host: address.slice(0, sep).replace(/^\[|\]$/g, ''), port: Number(address.slice(sep + 1)) };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What a closed-loop load run accumulates for one target (bench/proxy.ts, bench/egress.ts). */
export interface ClosedLoopTarget {
  requests: number;
  errors: number;
  elapsedMs: number;
  latencies: number[];
  /** req/s of each measured round, to show the spread. */
  roundRps: number[];
  /** Proxy CPU µs/req of each measured round, when the caller keeps it. */
  roundCpu?: number[];
  /** The proxy processes of this path (not the shared upstream); their CPU time is summed. */
  pids: number[];
  cpuMicros: number;
  firstError?: string;
}

export interface OneResult {
  ok: boolean;
  ms: number;
  error?: string;
}

/**
 * `concurrency` workers send back to back for `seconds`; with `record`, successes add a latency
 * and the round's req/s and the proxies' CPU (from /proc) are added to the target.
 */
export async function closedLoop<T extends ClosedLoopTarget>(t: T, seconds: number, concurrency: number, record: boolean, one: (t: T) => Promise<OneResult>): Promise<void> {
  const start = performance.now();
  const deadline = start + seconds * 1000;
  const cpuNow = (): number => t.pids.reduce((sum, pid) => sum + processCpuMicros(pid), 0);
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const r = await one(t);
      if (!record) continue;
      if (r.ok) {
        t.requests++;
        t.latencies.push(r.ms);
      } else {
        t.errors++;
        t.firstError ??= r.error;
      }
    }
  };
  const before = t.requests;
  const cpu0 = cpuNow();
  await Promise.all(Array.from({ length: concurrency }, worker));
  if (record) {
    const cpu = cpuNow() - cpu0;
    t.cpuMicros += cpu;
    const ms = performance.now() - start;
    t.elapsedMs += ms;
    t.roundRps.push(((t.requests - before) * 1000) / ms);
    t.roundCpu?.push(cpu / (t.requests - before));
  }
}

/** What an open-loop (fixed-rate) run accumulates for one path. */
export interface RateResult {
  requests: number;
  errors: number;
  latencies: number[];
  cpuMicros: number;
  roundCpu: number[];
}

/**
 * Sends at a fixed `rate` for `seconds` whether or not earlier requests have been answered,
 * measuring latency from each request's scheduled send time (no coordinated omission); with
 * `out`, results and the proxies' CPU are added there (undefined = warm-up).
 */
export async function openLoop<T extends Pick<ClosedLoopTarget, 'pids' | 'firstError'>>(t: T, rate: number, seconds: number, out: RateResult | undefined, one: (t: T) => Promise<OneResult>): Promise<void> {
  const total = Math.round(rate * seconds);
  const cpuNow = (): number => t.pids.reduce((sum, pid) => sum + processCpuMicros(pid), 0);
  const cpu0 = cpuNow();
  const pending: Array<Promise<void>> = [];
  const start = performance.now();
  let sent = 0;
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
    for (; sent < due; sent++) {
      const scheduled = start + (sent * 1000) / rate;
      pending.push(
        one(t).then((r) => {
          if (!out) return;
          if (r.ok) {
            out.requests++;
            out.latencies.push(performance.now() - scheduled);
          } else {
            out.errors++;
            t.firstError ??= r.error;
          }
        }),
      );
    }
    await sleep(1);
  }
  await Promise.all(pending);
  if (out) {
    const cpu = cpuNow() - cpu0;
    out.cpuMicros += cpu;
    out.roundCpu.push(cpu / total);
  }
}

/** The processes whose parent chain leads to `pid` (its children, their children, …), not `pid` itself. */
export function descendantPids(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited since the directory was listed
    }
    // Field 4 (ppid) is the second after the command name, which may contain spaces and parens.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    const siblings = children.get(ppid);
    if (siblings) siblings.push(Number(entry));
    else children.set(ppid, [Number(entry)]);
  }
  const out = [...(children.get(pid) ?? [])];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i]!) ?? []));
  return out;
}

/** A loopback port that was free a moment ago (for servers such as nginx that cannot listen on 0 and report it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A counter's total from a Prometheus text page, over the samples whose labels include `labels`. */
export function metricTotal(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^(\w+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const l = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}

/** An executable's path if it is on PATH (benches add the rows that need it only then). */
export function findOnPath(name: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}
