/** Public surface of the config module: schema + loader for `sigil run --config FILE`. */
export type { HostPort } from './address.js';
export { parseHostPort } from './address.js';
export { parseDuration } from './duration.js';
export { ConfigError, type ConfigIssue } from './errors.js';
export {
  applyEnvOverrides,
  BROKER_ENV_OVERRIDES,
  describeOverride,
  envNameForKey,
  foreignOverrides,
  misspelledOverrides,
  SIDECAR_ENV_OVERRIDES,
  validateWithOverrides,
  type AppliedOverride,
  type EnvOverride,
  type OverrideKind,
} from './env-overrides.js';
export { loadConfig, parseConfig, workloadApiIdentity, type WorkloadApiIdentityConfig, type BusConfig, type DelegationConfig, type IdentityConfig, type ParseOptions, type RevocationConfig, type RouteConfig, type SigilConfig, type EgressRouteConfig, type SecretSourceConfig } from './load.js';

// For other config documents on the same conventions (`sigil broker`: delegation/broker-config.ts):
// reading and parsing the file, wording and collecting issues, and the sections and checks they share.
export { listenersConflict } from './address.js';
export { parseConfigText, readConfigFile, type ConfigFile, type ConfigFormat, type ParseTextOptions, type ReadOptions } from './document.js';
export { dedupeIssues, validateDocument, zodConfigIssues, type DocumentChecks, type IssueWording, type KnownKeys } from './issues.js';
export { devSpiffeIdIssues, isObj, trustBundleKeyIssues, workloadApiIssues } from './raw-checks.js';
export {
  AdminSchema,
  check,
  DevIdentitySchema,
  duration,
  FilesIdentitySchema,
  filePath,
  IdentitySchema,
  listen,
  nonEmpty,
  ShutdownSchema,
  spiffeIdPatternProblem,
  trustDomainProblem,
  TrustSchema,
  WorkloadApiIdentitySchema,
  WorkloadApiRetrySchema,
} from './schema.js';
