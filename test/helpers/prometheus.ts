// A real Prometheus for the integration tests (Debian's `prometheus` package, which brings
// `promtool`): find the binaries (skip loudly outside CI, fail in CI), lint an exposition with
// `promtool check metrics`, and run a `prometheus` on loopback with a generated config and a
// temporary storage folder, bound to the test that started it, plus its HTTP API.
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:fs';
import { access, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import YAML from 'yaml';
import { closedPort, sleep, tempDir, type Teardown } from './env.js';

/** The first executable `name` on PATH, or undefined. */
export async function onPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export interface PrometheusBinaries {
  prometheus: string;
  promtool: string;
}

/**
 * Where `prometheus` and `promtool` are; or, when either is missing, the reason to give. In CI
 * (`SIGIL_CI` set by .ci/run, which installs them) a missing binary must fail the run; anywhere
 * else the caller skips, and this prints a banner to stderr so the skip is not missed.
 */
export async function findPrometheus(): Promise<{ found: PrometheusBinaries } | { missing: string; mustFail: boolean }> {
  const [prometheus, promtool] = await Promise.all([onPath('prometheus'), onPath('promtool')]);
  if (prometheus && promtool) return { found: { prometheus, promtool } };
  const names = [prometheus ? undefined : 'prometheus', promtool ? undefined : 'promtool'].filter(Boolean).join(' and ');
  const mustFail = Boolean(process.env.SIGIL_CI);
  const missing = `${names} not found on PATH`;
  const bar = '!'.repeat(96);
  console.error(
    [
      '',
      bar,
      `!!! ${missing}.`,
      mustFail
        ? '!!! SIGIL_CI is set: the Prometheus integration test FAILS (.ci/run should have installed them).'
        : '!!! The Prometheus integration test is SKIPPED: the metrics were NOT checked against a real Prometheus.',
      '!!! Install them with: apt-get install --no-install-recommends prometheus   (or run .ci/run)',
      bar,
      '',
    ].join('\n'),
  );
  return { missing, mustFail };
}

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `promtool check metrics` with `exposition` on its standard input. */
export function promtoolCheckMetrics(promtool: string, exposition: string): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(promtool, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.stdin.on('error', () => {}); // promtool may exit before reading everything (a parse error)
    child.once('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(exposition);
  });
}

export interface ScrapeTarget {
  job: string;
  /** "host:port" serving /metrics. */
  address: string;
}

export interface RunningPrometheus {
  /** http://127.0.0.1:<port> */
  url: string;
  child: ChildProcess;
  /** What it printed (it logs to stderr): for failure messages. */
  output(): string;
  /** GET /api/v1/query at the current time; throws unless the API answers "success". */
  query(promql: string): Promise<VectorSample[]>;
  /** GET /api/v1/targets → the active targets. */
  targets(): Promise<ActiveTarget[]>;
  stop(): Promise<void>;
}

export interface VectorSample {
  metric: Record<string, string>;
  value: number;
}

export interface ActiveTarget {
  labels: Record<string, string>;
  scrapeUrl: string;
  health: 'up' | 'down' | 'unknown';
  lastError: string;
}

async function api(base: string, path: string): Promise<any> {
  const res = await fetch(`${base}${path}`);
  const body = (await res.json()) as { status?: string; data?: unknown; error?: string };
  if (res.status !== 200 || body.status !== 'success') throw new Error(`prometheus ${path}: ${res.status} ${body.error ?? JSON.stringify(body)}`);
  return body.data;
}

/**
 * `prometheus` on a free loopback port scraping `targets` (one static job each) every
 * `scrapeInterval`; resolves once /-/ready answers 200. Stopped (SIGTERM, then SIGKILL) when `t` ends.
 */
export async function startPrometheus(t: Teardown, binary: string, targets: ScrapeTarget[], scrapeInterval = '1s'): Promise<RunningPrometheus> {
  const dir = await tempDir(t, 'sigil-prometheus-');
  const config = {
    global: { scrape_interval: scrapeInterval, scrape_timeout: scrapeInterval, evaluation_interval: scrapeInterval },
    scrape_configs: targets.map(({ job, address }) => ({ job_name: job, metrics_path: '/metrics', static_configs: [{ targets: [address] }] })),
  };
  const configPath = join(dir, 'prometheus.yml');
  await writeFile(configPath, YAML.stringify(config));
  const port = await closedPort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    binary,
    [
      `--config.file=${configPath}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', (err) => {
      output += `spawn failed: ${err.message}\n`;
      resolve(null);
    });
  });
  let running = true;
  void exited.then(() => (running = false));
  const killOnExit = (): void => {
    child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  const stop = async (): Promise<void> => {
    process.off('exit', killOnExit);
    if (!running) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
  };
  // tap runs teardowns last-in first-out: prometheus stops before its folder is removed.
  t.teardown(stop);

  const deadline = Date.now() + 15_000;
  for (;;) {
    if (!running) throw new Error(`prometheus exited before it was ready:\n${output}`);
    try {
      const res = await fetch(`${url}/-/ready`);
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`prometheus not ready within 15 s:\n${output}`);
    await sleep(100);
  }

  return {
    url,
    child,
    output: () => output,
    async query(promql: string): Promise<VectorSample[]> {
      const data = await api(url, `/api/v1/query?query=${encodeURIComponent(promql)}`);
      if (data.resultType !== 'vector') throw new Error(`expected a vector for ${promql}, got ${data.resultType}`);
      return (data.result as { metric: Record<string, string>; value: [number, string] }[]).map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
    },
    async targets(): Promise<ActiveTarget[]> {
      const data = await api(url, '/api/v1/targets?state=active');
      return data.activeTargets as ActiveTarget[];
    },
    stop,
  };
}

/** Polls `fn` until `done(value)` or `timeoutMs` passes; returns the last value either way. */
export async function pollUntil<T>(fn: () => Promise<T>, done: (value: T) => boolean, timeoutMs: number, intervalMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await fn();
  while (!done(value) && Date.now() < deadline) {
    await sleep(intervalMs);
    value = await fn();
  }
  return value;
}

/** A PromQL selector: `name{k="v",...}` with the values escaped. */
export function selector(name: string, labels: Record<string, string>): string {
  const inner = Object.entries(labels)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(',');
  return `${name}{${inner}}`;
}
