// The SVID source an `identity` config section names (sidecar and broker alike).
import type { IdentityConfig } from '../config/index.js';
import { SpiffeId, TrustDomain } from '../spiffe/index.js';
import type { Logger } from '../telemetry/index.js';
import { DevSvidSource } from './dev-source.js';
import { FilesSvidSource } from './files-source.js';
import { IdentityManager } from './manager.js';
import type { SourceCallbacks, SvidSource } from './types.js';
import { workloadApiSource } from './workload-api/index.js';

export interface SvidSourceContext {
  trustDomain: string;
  callbacks: SourceCallbacks;
  /** Dev issuer only: why it must not issue for this ID (e.g. the agent is revoked), if so. */
  refuseIssue: (id: SpiffeId) => string | undefined;
  logger: Logger;
}

export function createSvidSource(identity: IdentityConfig, { trustDomain, callbacks, refuseIssue, logger }: SvidSourceContext): SvidSource {
  switch (identity.kind) {
    case 'dev':
      return new DevSvidSource({ caDir: identity.caDir, spiffeId: SpiffeId.parse(identity.spiffeId), ttlMs: identity.ttlMs, refuseIssue }, callbacks);
    case 'files':
      return new FilesSvidSource({ ...identity, trustDomain: TrustDomain.parse(trustDomain) }, callbacks);
    case 'workloadApi':
      return workloadApiSource(identity, TrustDomain.parse(trustDomain), callbacks, logger);
  }
}

/** The identity of a sidecar or broker: its configured source plus its `trust.bundles` files. */
export function createIdentityManager(
  config: { identity: IdentityConfig; trustDomain: string; trust: { bundles: Record<string, string> } },
  refuseIssue: (id: SpiffeId) => string | undefined,
  logger: Logger,
): IdentityManager {
  return new IdentityManager(
    (callbacks) => createSvidSource(config.identity, { trustDomain: config.trustDomain, callbacks, refuseIssue, logger: logger.child({ component: 'workload-api' }) }),
    config.trust.bundles,
    logger.child({ component: 'identity' }),
  );
}
