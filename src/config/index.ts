/** Public surface of the config module: schema + loader for `sigil run --config FILE`. */
export type { HostPort } from './address.js';
export { parseHostPort } from './address.js';
export { parseDuration } from './duration.js';
export { ConfigError, type ConfigIssue } from './errors.js';
export { loadConfig, parseConfig, type BusConfig, type DelegationConfig, type IdentityConfig, type ParseOptions, type RouteConfig, type SigilConfig } from './load.js';
