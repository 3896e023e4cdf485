// `sigil run [--config FILE]`: load and validate the config (SIGIL_* overrides applied), start
// the sidecar, log one readiness line with every bound address, drain and exit on SIGTERM/SIGINT.
import { BROKER_ENV_OVERRIDES, loadConfig, SIDECAR_ENV_OVERRIDES, type AppliedOverride } from '../config/index.js';
import { Sidecar } from '../sidecar.js';
import { createLogger } from '../telemetry/index.js';
import { configPathFrom, parseFlags } from './args.js';
import { logOverrides, warnIfDevIdentity, warnIfDryRun } from './startup-log.js';
import { serveUntilSignalled } from './serve.js';

export async function runSidecar(args: string[]): Promise<number> {
  const flags = parseFlags(args, { config: { type: 'string' } });
  let applied: AppliedOverride[] = [];
  const config = await loadConfig(configPathFrom(flags.config), { onOverrides: (a) => (applied = a) });
  const logger = createLogger();
  logOverrides(logger, applied, process.env, SIDECAR_ENV_OVERRIDES, BROKER_ENV_OVERRIDES);
  warnIfDevIdentity(logger, config.identity);
  warnIfDryRun(logger, config.policy);
  const sidecar = new Sidecar(config, logger);
  return serveUntilSignalled(sidecar, logger, { configPath: config.configPath }, { delayMs: config.shutdown.delayMs, drainTimeoutMs: config.shutdown.drainTimeoutMs });
}
