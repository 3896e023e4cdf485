// SPIFFE Workload API client: endpoint parsing, the gRPC client, response validation, the
// reconnecting stream and the SvidSource built from them.
import type { TrustDomain } from '../../spiffe/index.js';
import type { WorkloadApiIdentityConfig } from '../../config/index.js';
import type { Logger } from '../../telemetry/index.js';
import type { SourceCallbacks } from '../types.js';
import { parseWorkloadEndpoint } from './endpoint.js';
import { WorkloadApiSvidSource } from './source.js';

export { parseWorkloadEndpoint, grpcTarget, WorkloadEndpointError } from './endpoint.js';
export type { WorkloadEndpoint } from './endpoint.js';
export { WorkloadApiClient, WorkloadApiCallError } from './client.js';
export { StreamWatcher } from './stream.js';
export { Backoff } from './backoff.js';
export {
  parseX509SvidResponse,
  parseX509BundlesResponse,
  parseJwtBundlesResponse,
  parseJwtSvidResponse,
  WorkloadApiResponseError,
  WorkloadApiSelectionError,
} from './messages.js';
export type { X509Identity, WorkloadX509Svid, SvidSelector, JwtSvid } from './messages.js';
export { WorkloadApiSvidSource, WorkloadApiStartupError, WorkloadApiFatalError } from './source.js';
export type { WorkloadApiStatus, WorkloadApiSourceOptions } from './source.js';
export { WORKLOAD_API_HEADER, WORKLOAD_API_METHODS, workloadApiService } from './proto.js';
export type { WorkloadApiMethod } from './proto.js';

/** The source for `identity.workloadApi` (sidecar and broker alike). */
export function workloadApiSource(settings: Omit<WorkloadApiIdentityConfig, 'kind'>, trustDomain: TrustDomain, callbacks: SourceCallbacks, logger?: Logger): WorkloadApiSvidSource {
  return new WorkloadApiSvidSource(
    {
      endpoint: parseWorkloadEndpoint(settings.socket),
      trustDomain,
      selector: {
        ...(settings.spiffeId !== undefined ? { spiffeId: settings.spiffeId } : {}),
        ...(settings.hint !== undefined ? { hint: settings.hint } : {}),
      },
      startupTimeoutMs: settings.startupTimeoutMs,
      backoff: { initialMs: settings.retryInitialMs, maxMs: settings.retryMaxMs },
      ...(logger ? { logger } : {}),
    },
    callbacks,
  );
}
