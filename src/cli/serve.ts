// The lifecycle every long-running command shares (`sigil run`, `sigil broker`): start, log one
// `ready` line with every bound address, then on SIGTERM/SIGINT stop (draining) and exit.
//
// Containers run this as PID 1, where a signal without a handler is ignored rather than fatal:
// the handlers go in before anything starts, so a SIGTERM during a slow start (waiting for the
// first SVID) still ends the process instead of waiting for the runtime's SIGKILL.
import type { Logger } from '../telemetry/index.js';

export interface Service {
  start(): Promise<object>;
  stop(): Promise<void>;
  /** First step of a shutdown: report not ready, keep serving (see `delayMs`). */
  beginShutdown?(): void;
}

export interface ShutdownSettings {
  /** Between the signal and `stop()`: readiness is already false, listeners still accept. */
  delayMs: number;
  /** Logged with "shutting down" (stop() enforces it). */
  drainTimeoutMs?: number;
}

const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

export async function serveUntilSignalled(service: Service, logger: Logger, ready: Record<string, unknown>, settings: ShutdownSettings = { delayMs: 0 }): Promise<number> {
  const state: { phase: 'starting' | 'serving' | 'stopping' | 'failed' } = { phase: 'starting' };
  const onSignal = (signal: string): void => {
    // Start failed and its error is on its way out; a signal meanwhile must not turn it into exit 0.
    if (state.phase === 'failed') process.exit(1);
    if (state.phase === 'stopping') {
      // A second signal (Ctrl-C twice, an impatient orchestrator): stop waiting for the drain.
      logger.warn('second signal during shutdown: exiting now', { signal });
      process.exit(1);
    }
    if (state.phase === 'starting') {
      // Nothing serves yet: there is no work to drain.
      logger.info('signal before ready: exiting', { signal });
      state.phase = 'stopping';
      service.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
      return;
    }
    state.phase = 'stopping';
    logger.info('shutting down', { signal, delayMs: settings.delayMs, ...(settings.drainTimeoutMs === undefined ? {} : { drainTimeoutMs: settings.drainTimeoutMs }) });
    service.beginShutdown?.();
    setTimeout(() => {
      service.stop().then(
        () => {
          logger.info('stopped');
          process.exit(0);
        },
        (err: Error) => {
          logger.error('shutdown failed', { error: err });
          process.exit(1);
        },
      );
    }, settings.delayMs);
  };
  for (const signal of SIGNALS) process.on(signal, () => onSignal(signal));

  let addresses: object;
  try {
    addresses = await service.start();
  } catch (err) {
    // A signal during start already stops the service and exits; start failing as a result is
    // not an error to report, and a second stop() must not run alongside the first.
    if (state.phase === 'stopping') return 0;
    state.phase = 'failed';
    // Whatever did start (e.g. the admin listener) must not keep a half-started process alive.
    await service.stop().catch(() => {});
    throw err;
  }
  if (state.phase === 'stopping') return 0; // a signal arrived during start; its handler exits
  state.phase = 'serving';
  logger.info('ready', { ...ready, ...addresses });
  return 0;
}
