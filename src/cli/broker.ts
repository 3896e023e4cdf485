// `sigil broker --config FILE`: the RFC 8693 token-exchange broker. Loads and validates the
// config, starts, logs one readiness line with every bound address, stops on SIGTERM/SIGINT.
// `sigil broker keygen --dir DIR`: adds a signing key to the key folder (key rotation: a running
// broker picks it up within a second and signs with it; older keys stay published).
import { resolve } from 'node:path';
import { loadBrokerConfig } from '../delegation/broker-config.js';
import { Broker } from '../delegation/broker.js';
import { SigningKeyRing } from '../delegation/index.js';
import { createLogger } from '../telemetry/index.js';
import { parseFlags } from './args.js';

export async function runBroker(args: string[]): Promise<number> {
  if (args[0] === 'keygen') return keygen(args.slice(1));
  const flags = parseFlags(args, { config: { type: 'string' } }, ['config']);
  const config = await loadBrokerConfig(flags.config as string);
  const logger = createLogger({ base: { component: 'broker' } });
  const broker = new Broker(config, logger);
  let addresses;
  try {
    addresses = await broker.start();
  } catch (err) {
    await broker.stop().catch(() => {});
    throw err;
  }
  logger.info('ready', { configPath: config.configPath, ...addresses });

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info('shutting down', { signal });
    broker.stop().then(
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

async function keygen(args: string[]): Promise<number> {
  const flags = parseFlags(args, { dir: { type: 'string' } }, ['dir']);
  const dir = resolve(flags.dir as string);
  const key = await SigningKeyRing.generate(dir);
  process.stdout.write(`generated signing key ${key.kid} (ES256) in ${dir}\n`);
  return 0;
}
