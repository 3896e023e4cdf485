// Startup log lines `sigil run` and `sigil broker` share: the SIGIL_* overrides applied, likely
// typos in variable names, and the warning that a dev identity is not for production.
import { misspelledOverrides, type AppliedOverride, type EnvOverride } from '../config/index.js';
import type { Logger } from '../telemetry/index.js';

/** Which keys the environment set (names only: values stay out of logs), and likely typos. */
export function logOverrides(logger: Logger, applied: AppliedOverride[], env: Record<string, string | undefined>, table: readonly EnvOverride[]): void {
  if (applied.length > 0) logger.info('config overrides from the environment', { overrides: applied.map((a) => `${a.env} → ${a.key}`) });
  for (const m of misspelledOverrides(env, table)) {
    logger.warn('ignored environment variable: not a config override', { variable: m.env, didYouMean: m.suggestion });
  }
}

/** The dev issuer signs with a CA key every such process reads: one compromise mints any identity. */
export function warnIfDevIdentity(logger: Logger, identity: { kind: string }): void {
  if (identity.kind !== 'dev') return;
  logger.warn('identity.dev is for development only: this process holds the CA private key and could mint any identity of the trust domain; use identity.workloadApi (SPIRE) in production', { identitySource: 'dev' });
}
