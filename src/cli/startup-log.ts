// Startup log lines `sigil run` and `sigil broker` share: the SIGIL_* overrides applied, likely
// typos in variable names, variables meant for the other command, and warnings about settings
// that are not for production (a dev identity, a policy that only logs).
import { describeOverride, foreignOverrides, misspelledOverrides, type AppliedOverride, type EnvOverride } from '../config/index.js';
import type { Logger } from '../telemetry/index.js';

/**
 * Which keys the environment set: names, plus the value where it cannot be a secret (booleans,
 * numbers, policy.mode), so that an override that weakens the file is visible in the log.
 */
export function logOverrides(logger: Logger, applied: AppliedOverride[], env: Record<string, string | undefined>, table: readonly EnvOverride[], other: readonly EnvOverride[]): void {
  if (applied.length > 0) logger.info('config overrides from the environment', { overrides: applied.map((a) => describeOverride(a, env, table)) });
  for (const m of misspelledOverrides(env, table)) {
    logger.warn('ignored environment variable: not a config override', { variable: m.env, didYouMean: m.suggestion });
  }
  for (const f of foreignOverrides(env, table, other)) {
    logger.warn('ignored environment variable: it configures the other command', { variable: f.env, ...(f.suggestion ? { didYouMean: f.suggestion } : {}) });
  }
}

/** dry-run decides, logs and counts, but lets every call through. */
export function warnIfDryRun(logger: Logger, policy: { mode: string }): void {
  if (policy.mode !== 'dry-run') return;
  logger.warn('policy.mode is dry-run: denials are logged and counted but NOT enforced; every call is let through', { mode: 'dry-run' });
}

/** The dev issuer signs with a CA key every such process reads: one compromise mints any identity. */
export function warnIfDevIdentity(logger: Logger, identity: { kind: string }): void {
  if (identity.kind !== 'dev') return;
  logger.warn('identity.dev is for development only: this process holds the CA private key and could mint any identity of the trust domain; use identity.workloadApi (SPIRE) in production', { identitySource: 'dev' });
}
