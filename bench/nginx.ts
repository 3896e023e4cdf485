// nginx as a baseline server (handshake bench) or proxy pair (proxy bench): one master with one
// worker, everything (config, pid, logs, temp files) in a prefix directory of the bench's temp
// dir. Benches add an nginx row only when `findNginx()` finds it.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { descendantPids, findOnPath, sleep } from './lib.js';

export interface RunningNginx {
  /** The master first, then its worker(s): the processes whose CPU is the row's. */
  pids: number[];
  stop(): Promise<void>;
}

/**
 * Starts nginx with `httpBody` inside its `http {}` block. Resolves once the worker has been
 * forked, which nginx does only after the config loaded and the listeners are bound.
 */
export async function startNginx(nginx: string, prefix: string, httpBody: string): Promise<RunningNginx> {
  await mkdir(join(prefix, 'logs'), { recursive: true });
  const errorLogPath = join(prefix, 'logs', 'error.log');
  const conf = `
worker_processes 1;
daemon off;
master_process on;
pid ${prefix}/nginx.pid;
error_log ${errorLogPath} warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${prefix}/body; proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fcgi; uwsgi_temp_path ${prefix}/uwsgi; scgi_temp_path ${prefix}/scgi;
${httpBody}
}
`;
  await writeFile(join(prefix, 'nginx.conf'), conf);
  // -e: errors before the config is read go to the prefix too, not to the system log.
  const child = spawn(nginx, ['-p', prefix, '-e', errorLogPath, '-c', join(prefix, 'nginx.conf')], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const errorLog = (): string => {
    try {
      return readFileSync(errorLogPath, 'utf8');
    } catch {
      return '';
    }
  };
  const deadline = performance.now() + 10_000;
  let workers: number[] = [];
  while (workers.length === 0) {
    await sleep(20);
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nginx exited (${child.exitCode ?? child.signalCode}): ${errorLog()}`);
    if (performance.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`nginx forked no worker within 10 s: ${errorLog()}`);
    }
    workers = descendantPids(child.pid!);
  }
  return {
    pids: [child.pid!, ...workers],
    stop: async () => {
      if (child.exitCode === null) child.kill('SIGQUIT');
      await exited;
    },
  };
}

/** nginx's path if it is installed (benches add an nginx row only then). */
export function findNginx(): string | undefined {
  return findOnPath('nginx');
}
