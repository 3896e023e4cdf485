// Egress to model providers and SaaS APIs: credentials held by the sidecar, attribution, limits.
export { EgressRoutes } from './proxy.js';
export type { EgressOptions, EgressRoute } from './proxy.js';
export { createCredentialSource, CredentialUnavailableError } from './credentials.js';
export type { CredentialSource, CredentialSourceConfig, CredentialStatus } from './credentials.js';
export { pseudonym, renderTemplate, templateProblem } from './attribution.js';
export { ConcurrencyLimit, KeyedBuckets, TokenBucket } from './limits.js';
export type { RateSpec, Admission } from './limits.js';
