// A real nats-server for the bus tests (Debian's `nats-server` package): find the binary (skip
// loudly outside CI, fail in CI), and run it on loopback with generated TLS: its own server
// certificate (from a CA made here, IP SAN 127.0.0.1) and `verify: true` against the trust
// bundle, so only clients holding an SVID of that trust domain get in — like production.
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCa, createCert } from '../fixtures/certs.js';
import { closedPort, sleep, tempDir, type Teardown } from './env.js';
import { onPath } from './prometheus.js';

export async function findNatsServer(): Promise<{ found: string } | { missing: string; mustFail: boolean }> {
  const binary = await onPath('nats-server');
  if (binary) return { found: binary };
  const mustFail = Boolean(process.env.SIGIL_CI);
  const bar = '!'.repeat(96);
  console.error(
    [
      '',
      bar,
      '!!! nats-server not found on PATH.',
      mustFail
        ? '!!! SIGIL_CI is set: the NATS bus integration test FAILS (.ci/run should have installed it).'
        : '!!! The NATS bus integration test is SKIPPED: signed messages were NOT checked through a real broker.',
      '!!! Install it with: apt-get install --no-install-recommends nats-server   (or run .ci/run)',
      bar,
      '',
    ].join('\n'),
  );
  return { missing: 'nats-server not found on PATH', mustFail };
}

/**
 * Runs `suite` with the nats-server binary, or — when it is missing — fails the file in CI
 * (SIGIL_CI) and skips it loudly elsewhere.
 */
export async function withNatsServer(t: { fail(m: string): unknown; plan(n: number, m: string): unknown }, suite: (binary: string) => Promise<void>): Promise<void> {
  const found = await findNatsServer();
  if ('found' in found) return suite(found.found);
  if (found.mustFail) t.fail(`${found.missing}, and SIGIL_CI is set: .ci/run must install Debian's nats-server package`);
  else t.plan(0, `${found.missing}: the signed bus was NOT checked through a real broker (apt-get install nats-server)`);
}

export interface RunningNats {
  /** tls://127.0.0.1:PORT */
  url: string;
  port: number;
  /** PEM of the CA that signed the server certificate (for `bus.nats.tls.ca`). */
  caPem: string;
  caFile: string;
  /** http://127.0.0.1:PORT — the server's monitoring endpoint (/connz, /subsz), loopback only; a new port after restart(). */
  readonly monitor: string;
  /** A client certificate the server accepts is needed to connect; this is for raw attackers. */
  stop(): Promise<void>;
  /** Starts it again on the same port (after stop), for outage tests. */
  restart(): Promise<void>;
}

/** Starts nats-server with TLS on loopback; client certificates verified against `clientCaPem`. */
export async function startNats(t: Teardown, binary: string, clientCaPem: string, opts: { maxPayload?: number; jetstream?: boolean } = {}): Promise<RunningNats> {
  const dir = await tempDir(t, 'sigil-nats-');
  const ca = await createCa({ trustDomain: 'nats.test' });
  const server = await createCert({ signer: ca, role: 'nats-server', ipAddresses: ['127.0.0.1'], dnsNames: ['localhost'], keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['1.3.6.1.5.5.7.3.1'] });
  const caFile = join(dir, 'server-ca.pem');
  await writeFile(caFile, ca.pem);
  await writeFile(join(dir, 'server.pem'), server.pem);
  await writeFile(join(dir, 'server.key'), server.keyPem, { mode: 0o600 });
  await writeFile(join(dir, 'clients-ca.pem'), clientCaPem);
  const port = await closedPort();
  const conf = `
listen: 127.0.0.1:${port}
http: 127.0.0.1:-1
max_payload: ${opts.maxPayload ?? 2097152}
${opts.jetstream ? `jetstream { store_dir: "${join(dir, 'jetstream')}" }` : ''}
tls {
  cert_file: "${join(dir, 'server.pem')}"
  key_file: "${join(dir, 'server.key')}"
  ca_file: "${join(dir, 'clients-ca.pem')}"
  verify: true
  timeout: 2
}
`;
  const confFile = join(dir, 'nats.conf');
  await writeFile(confFile, conf);
  let child: ReturnType<typeof spawn> | undefined;
  let monitor = '';
  const start = async (): Promise<void> => {
    const proc = spawn(binary, ['-c', confFile], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    let log = '';
    const ready = new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        log += d.toString();
        const m = /Starting http monitor on (\S+)/.exec(log);
        if (m) monitor = `http://${m[1]}`;
        if (log.includes('Server is ready')) resolve();
      };
      proc.stdout!.on('data', onData);
      proc.stderr!.on('data', onData);
      proc.once('exit', (code) => reject(new Error(`nats-server exited (${code}): ${log}`)));
    });
    const timeout = sleep(10_000).then(() => {
      throw new Error(`nats-server not ready in 10 s: ${log}`);
    });
    await Promise.race([ready, timeout]);
  };
  const stop = async (): Promise<void> => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGKILL');
    await exited;
  };
  await start();
  t.teardown(stop);
  return {
    url: `tls://127.0.0.1:${port}`,
    port,
    caPem: ca.pem,
    caFile,
    get monitor() {
      return monitor;
    },
    stop,
    restart: start,
  };
}
