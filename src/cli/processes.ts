// Child processes that speak JSON lines: `sigil run` (readiness line) and the example agents.
// Used by `sigil demo`, and by the integration tests, which drive the real CLI.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const SIGIL_BIN = fileURLToPath(new URL('./main.js', import.meta.url));

export interface JsonLineProcess {
  child: ChildProcess;
  /** Every JSON line printed on stdout so far. */
  lines: Record<string, unknown>[];
  /** Raw stderr so far. */
  stderr(): string;
  /** Resolves with the first line for which `match` is true; rejects if the process exits first. */
  waitFor(match: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function spawnJsonLines(args: string[], env: NodeJS.ProcessEnv = {}): JsonLineProcess {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  let err = '';
  let buffered = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ text: line });
      }
    }
    for (const w of waiters) w();
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    lines,
    stderr: () => err,
    waitFor(match, timeoutMs = 15_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = lines.find(match);
          if (found) {
            cleanup();
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`timed out waiting for output; stderr: ${err}`));
        }, timeoutMs);
        const onExit = (code: number | null): void => {
          cleanup();
          reject(new Error(`process exited (${code}) before expected output; stderr: ${err}`));
        };
        const cleanup = (): void => {
          clearTimeout(timer);
          waiters.delete(check);
          child.off('exit', onExit);
        };
        waiters.add(check);
        child.once('exit', onExit);
        check();
      });
    },
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Starts `sigil run --config FILE` and waits for its readiness line. */
export async function startSigil(configPath: string, env: NodeJS.ProcessEnv = {}): Promise<{ proc: JsonLineProcess; ready: Record<string, unknown> }> {
  const proc = spawnJsonLines([SIGIL_BIN, 'run', '--config', configPath], env);
  const ready = await proc.waitFor((l) => l.msg === 'ready');
  return { proc, ready };
}
