// The lifecycle every long-running command shares (`sigil run`, `sigil broker`): start, log one
// `ready` line with every bound address, then on SIGTERM/SIGINT stop (draining) and exit.
import type { Logger } from '../telemetry/index.js';

export interface Service {
  start(): Promise<object>;
  stop(): Promise<void>;
}

export async function serveUntilSignalled(service: Service, logger: Logger, ready: Record<string, unknown>, shutdownFields: Record<string, unknown> = {}): Promise<number> {
  let addresses: object;
  try {
    addresses = await service.start();
  } catch (err) {
    // Whatever did start (e.g. the admin listener) must not keep a half-started process alive.
    await service.stop().catch(() => {});
    throw err;
  }
  logger.info('ready', { ...ready, ...addresses });

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down', { signal, ...shutdownFields });
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
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  return 0;
}
