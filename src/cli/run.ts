// `sigil run --config FILE`: load and validate the config, start the sidecar, log one
// readiness line with every bound address, drain and exit on SIGTERM/SIGINT.
import { loadConfig } from '../config/index.js';
import { Sidecar } from '../sidecar.js';
import { createLogger } from '../telemetry/index.js';
import { parseFlags } from './args.js';

export async function runSidecar(args: string[]): Promise<number> {
  const flags = parseFlags(args, { config: { type: 'string' } }, ['config']);
  const config = await loadConfig(flags.config as string);
  const logger = createLogger();
  const sidecar = new Sidecar(config, logger);
  let addresses;
  try {
    addresses = await sidecar.start();
  } catch (err) {
    // Whatever did start (e.g. the admin listener) must not keep a half-started sidecar alive.
    await sidecar.stop().catch(() => {});
    throw err;
  }
  logger.info('ready', { configPath: config.configPath, ...addresses });

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down', { signal, drainTimeoutMs: config.shutdown.drainTimeoutMs });
    sidecar.stop().then(
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
