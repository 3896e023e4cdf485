// Shared setup for the integration tests: temp dirs, trust domains on disk, sidecar config
// files and `sigil run` processes whose lifetime is bound to the test that started them.
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import YAML from 'yaml';
import { SIGIL_BIN, spawnJsonLines, startSigil, type JsonLineProcess } from '../../src/cli/processes.js';
import { TrustDomain, X509Bundle } from '../../src/spiffe/index.js';
import { createCa, createLeaf, type CertOptions, type Issued } from '../fixtures/certs.js';

/** The part of a tap Test the helpers need (keeps them independent of tap's plugin types). */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A fresh folder under os.tmpdir(), removed when `t` ends. */
export async function tempDir(t: Teardown, prefix = 'sigil-it-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface TrustDomainFixture {
  td: string;
  ca: Issued;
  /** Folder in `sigil ca init` layout: ca.pem, ca.key, bundle.pem, bundle.jwks.json. */
  caDir: string;
  bundlePem: string;
  bundleJwks: string;
  /** A well-formed X.509-SVID for `id` signed by this CA (override anything via `opts`). */
  leaf(id: string, opts?: CertOptions): Promise<Issued>;
}

/**
 * A trust domain whose CA is a test fixture (so tests can also sign odd certificates with it),
 * written to disk in the same layout `sigil ca init` produces, so `identity.dev.caDir` and
 * `trust.bundles` can point at it.
 */
export async function setupTrustDomain(dir: string, td: string, name = td): Promise<TrustDomainFixture> {
  const ca = await createCa({ trustDomain: td });
  const caDir = join(dir, `ca-${name}`);
  await mkdir(caDir, { recursive: true });
  const bundlePem = join(caDir, 'bundle.pem');
  const bundleJwks = join(caDir, 'bundle.jwks.json');
  await writeFile(join(caDir, 'ca.pem'), ca.pem);
  await writeFile(join(caDir, 'ca.key'), ca.keyPem, { mode: 0o600 });
  await writeFile(bundlePem, ca.pem);
  await writeFile(bundleJwks, JSON.stringify(X509Bundle.fromPem(TrustDomain.parse(td), ca.pem).toJwks(), null, 2) + '\n');
  return { td, ca, caDir, bundlePem, bundleJwks, leaf: (id, opts) => createLeaf(ca, id, opts) };
}

/** Writes `config` as JSON (`.json`) or YAML (any other name) into `dir/name`, a string verbatim; returns the path. */
export async function writeConfig(dir: string, name: string, config: unknown): Promise<string> {
  const path = join(dir, name);
  const ext = extname(name);
  const text =
    typeof config === 'string'
      ? config // verbatim: for syntax errors and other formats
      : ext === '.json'
        ? JSON.stringify(config, null, 2)
        : YAML.stringify(config);
  await writeFile(path, text);
  return path;
}

/** Loopback listeners on port 0, a short drain so teardown is quick; `extra` wins. */
export function sidecarConfig(extra: Record<string, unknown>): Record<string, unknown> {
  return { admin: { listen: '127.0.0.1:0' }, shutdown: { drainTimeout: '2s' }, ...extra };
}

export interface RunningSigil {
  proc: JsonLineProcess;
  ready: Record<string, unknown>;
  inbound: string;
  outbound: string;
  admin: string;
  /** Stops the process (SIGTERM, then SIGKILL after `graceMs`); resolves with the exit code. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<number | null>;
}

/** `sigil run --config FILE`, waiting for the readiness line; killed when `t` ends. */
export async function runSigil(t: Teardown, configPath: string, env: NodeJS.ProcessEnv = {}): Promise<RunningSigil> {
  const { proc, ready } = await startSigil(configPath, { SIGIL_LOG_LEVEL: 'info', ...env });
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<number | null> => {
    const exited = proc.stop(signal);
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), graceMs);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  };
  // If the test process dies without running teardown (e.g. a tap timeout), take the child along.
  const killOnExit = (): void => {
    proc.child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  proc.child.once('exit', () => process.off('exit', killOnExit));
  t.teardown(() => stop());
  return {
    proc,
    ready,
    inbound: String(ready.inbound ?? ''),
    outbound: String(ready.outbound ?? ''),
    admin: String(ready.admin ?? ''),
    stop,
  };
}

export interface RunningBroker {
  proc: JsonLineProcess;
  ready: Record<string, unknown>;
  /** The token listener (mTLS). */
  address: string;
  admin: string;
}

/** `sigil broker --config FILE`, waiting for the readiness line; stopped when `t` ends. */
export async function runBroker(t: Teardown, configPath: string): Promise<RunningBroker> {
  const proc = spawnJsonLines([SIGIL_BIN, 'broker', '--config', configPath], { SIGIL_LOG_LEVEL: 'info' });
  const killOnExit = (): void => void proc.child.kill('SIGKILL');
  process.once('exit', killOnExit);
  proc.child.once('exit', () => process.off('exit', killOnExit));
  t.teardown(async () => {
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), 5_000);
    await proc.stop('SIGTERM');
    clearTimeout(timer);
  });
  const ready = await proc.waitFor((l) => l.msg === 'ready');
  return { proc, ready, address: String(ready.listen), admin: String(ready.admin) };
}

/** "host:port" / "[v6]:port" → parts. */
export function splitAddress(address: string): { host: string; port: number } {
  const sep = address.lastIndexOf(':');
  let host = address.slice(0, sep);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: Number(address.slice(sep + 1)) };
}

/** A loopback TCP port that nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const { createServer } = await import('node:net');
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface CliExit {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `sigil ...args` to completion (SIGKILL after `timeoutMs`); `env` is added to this process's. */
export async function runCli(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 15_000): Promise<CliExit> {
  const proc = spawnJsonLines([SIGIL_BIN, ...args], env);
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), timeoutMs);
  let stdout = '';
  proc.child.stdout!.on('data', (d: string) => (stdout += d));
  const code = await new Promise<number | null>((resolve) => proc.child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  // Let the stream listeners flush.
  await sleep(20);
  return { code, stdout, stderr: proc.stderr() };
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `timeoutMs` passes (then returns the last value). */
export async function waitUntil<T>(fn: () => T | Promise<T>, timeoutMs: number, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await fn();
  while (!value && Date.now() < deadline) {
    await sleep(intervalMs);
    value = await fn();
  }
  return value;
}

/**
 * Binds a test server on 127.0.0.1 (port 0) and returns its port with an idempotent `close`
 * that first destroys the tracked sockets (and runs `beforeClose`); teardown calls it too.
 */
export async function listenOnLoopback(
  t: Teardown,
  server: NetServer,
  sockets: Set<Socket>,
  beforeClose: () => void = () => {},
): Promise<{ port: number; close: () => Promise<void> }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed = false;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    beforeClose();
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.teardown(close);
  return { port, close };
}
