// A thin gRPC client for the SPIFFE Workload API: one method per RPC, and the SSRF-hardening
// metadata on every call (Workload Endpoint §3). It knows nothing of retries or identity; the
// stream watcher and the SVID source build those on top.
import type { Client, ClientReadableStream, Metadata, ServiceError, status } from '@grpc/grpc-js';
import { grpc } from './grpc.js';
import { grpcTarget, type WorkloadEndpoint } from './endpoint.js';
import {
  WORKLOAD_API_HEADER,
  workloadApiService,
  type JwtBundlesResponse,
  type JwtSvidRequest,
  type JwtSvidResponse,
  type X509BundlesResponse,
  type X509SvidResponse,
} from './proto.js';

/** A failed Workload API call, with the gRPC status that decides how the caller reacts. */
export class WorkloadApiCallError extends Error {
  readonly code: string;
  constructor(readonly method: string, readonly grpcCode: status, details: string) {
    const name = grpc().status[grpcCode];
    super(`${method}: ${name ?? grpcCode}${details ? `: ${details}` : ''}`);
    this.code = `workload_api_${(name ?? 'unknown').toString().toLowerCase()}`;
  }
}

export function callError(method: string, err: Partial<ServiceError>): WorkloadApiCallError {
  // grpc-js appends an empty "Resolution note:" to connection failures; it only adds noise.
  const details = (err.details ?? err.message ?? '').replace(/\s*Resolution note:\s*$/, '');
  return new WorkloadApiCallError(method, err.code ?? grpc().status.UNKNOWN, details);
}

export interface WorkloadApiClientOptions {
  /** Upper bound of grpc-js's own reconnect backoff, so a socket that appears is found soon. */
  maxReconnectBackoffMs?: number;
}

type Stub = Client & Record<string, (...args: unknown[]) => unknown>;

export class WorkloadApiClient {
  private readonly stub: Stub;

  constructor(readonly endpoint: WorkloadEndpoint, options: WorkloadApiClientOptions = {}) {
    const { client: Ctor } = workloadApiService();
    const max = options.maxReconnectBackoffMs ?? 30_000;
    this.stub = new Ctor(grpcTarget(endpoint), grpc().credentials.createInsecure(), {
      'grpc.initial_reconnect_backoff_ms': Math.min(1_000, max),
      'grpc.max_reconnect_backoff_ms': max,
      // The agent can be replaced under us (a new socket at the same path): no sticky channel state.
      'grpc.enable_retries': 0,
    }) as Stub;
  }

  fetchX509Svid(): ClientReadableStream<X509SvidResponse> {
    return this.stub['FetchX509SVID']!({}, header()) as ClientReadableStream<X509SvidResponse>;
  }

  fetchX509Bundles(): ClientReadableStream<X509BundlesResponse> {
    return this.stub['FetchX509Bundles']!({}, header()) as ClientReadableStream<X509BundlesResponse>;
  }

  fetchJwtBundles(): ClientReadableStream<JwtBundlesResponse> {
    return this.stub['FetchJWTBundles']!({}, header()) as ClientReadableStream<JwtBundlesResponse>;
  }

  fetchJwtSvid(request: JwtSvidRequest, timeoutMs = 5_000): Promise<JwtSvidResponse> {
    return new Promise((resolve, reject) => {
      this.stub['FetchJWTSVID']!(request, header(), { deadline: Date.now() + timeoutMs }, (err: ServiceError | null, response: JwtSvidResponse) => {
        if (err) reject(callError('FetchJWTSVID', err));
        else resolve(response);
      });
    });
  }

  close(): void {
    this.stub.close();
  }
}

function header(): Metadata {
  const metadata = new (grpc().Metadata)();
  metadata.set(WORKLOAD_API_HEADER, 'true');
  return metadata;
}
