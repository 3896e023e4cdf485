// `sigil broker --config FILE`: the RFC 8693 token-exchange broker. Loads and validates the
// config (SIGIL_BROKER_* overrides applied), starts, logs one readiness line with every bound
// address, stops on SIGTERM/SIGINT.
// `sigil broker keygen --dir DIR`: adds a signing key to the key folder (key rotation: a running
// broker picks it up within a second and signs with it; older keys stay published).
import { resolve } from 'node:path';
import { loadBrokerConfig } from '../delegation/broker-config.js';
import { Broker } from '../delegation/broker.js';
import { SigningKeyRing } from '../delegation/index.js';
import { createLogger } from '../telemetry/index.js';
import { BROKER_ENV_OVERRIDES, SIDECAR_ENV_OVERRIDES, type AppliedOverride } from '../config/index.js';
import { parseFlags } from './args.js';
import { logOverrides, warnIfDevIdentity } from './startup-log.js';
import { serveUntilSignalled } from './serve.js';

export async function runBroker(args: string[]): Promise<number> {
  if (args[0] === 'keygen') return keygen(args.slice(1));
  // --config is required: the image's SIGIL_CONFIG names the sidecar's file, not a broker's.
  const flags = parseFlags(args, { config: { type: 'string' } }, ['config']);
  let applied: AppliedOverride[] = [];
  const config = await loadBrokerConfig(flags.config as string, process.env, (a) => (applied = a));
  const logger = createLogger({ base: { component: 'broker' } });
  logOverrides(logger, applied, process.env, BROKER_ENV_OVERRIDES, SIDECAR_ENV_OVERRIDES);
  warnIfDevIdentity(logger, config.identity);
  const broker = new Broker(config, logger);
  return serveUntilSignalled(broker, logger, { configPath: config.configPath }, { delayMs: config.shutdown.delayMs, drainTimeoutMs: config.shutdown.drainTimeoutMs });
}

async function keygen(args: string[]): Promise<number> {
  const flags = parseFlags(args, { dir: { type: 'string' } }, ['dir']);
  const dir = resolve(flags.dir as string);
  const key = await SigningKeyRing.generate(dir);
  process.stdout.write(`generated signing key ${key.kid} (ES256) in ${dir}\n`);
  return 0;
}
