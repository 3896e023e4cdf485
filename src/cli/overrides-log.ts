// The startup log lines about SIGIL_* overrides, shared by `sigil run` and `sigil broker`.
import { misspelledOverrides, type AppliedOverride, type EnvOverride } from '../config/index.js';
import type { Logger } from '../telemetry/index.js';

/** Which keys the environment set (names only: values stay out of logs), and likely typos. */
export function logOverrides(logger: Logger, applied: AppliedOverride[], env: Record<string, string | undefined>, table: readonly EnvOverride[]): void {
  if (applied.length > 0) logger.info('config overrides from the environment', { overrides: applied.map((a) => `${a.env} → ${a.key}`) });
  for (const m of misspelledOverrides(env, table)) {
    logger.warn('ignored environment variable: not a config override', { variable: m.env, didYouMean: m.suggestion });
  }
}
