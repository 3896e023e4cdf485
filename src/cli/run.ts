// `sigil run --config FILE`: load and validate the config, start the sidecar, log one
// readiness line with every bound address, drain and exit on SIGTERM/SIGINT.
import { loadConfig } from '../config/index.js';
import { Sidecar } from '../sidecar.js';
import { createLogger } from '../telemetry/index.js';
import { parseFlags } from './args.js';
import { serveUntilSignalled } from './serve.js';

export async function runSidecar(args: string[]): Promise<number> {
  const flags = parseFlags(args, { config: { type: 'string' } }, ['config']);
  const config = await loadConfig(flags.config as string);
  const logger = createLogger();
  const sidecar = new Sidecar(config, logger);
  return serveUntilSignalled(sidecar, logger, { configPath: config.configPath }, { drainTimeoutMs: config.shutdown.drainTimeoutMs });
}
