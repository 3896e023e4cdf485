// Loads the Workload API service definition (proto/workload.proto) for grpc-js, once. The
// message interfaces below mirror the .proto with the loader options used here (field names as
// written, bytes as Buffer, proto3 defaults filled in so a missing field reads as empty).
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import type { ServiceClientConstructor, ServiceDefinition } from '@grpc/grpc-js';
import { grpc, protoLoader } from './grpc.js';

export interface X509SvidMessage {
  spiffe_id: string;
  x509_svid: Buffer;
  x509_svid_key: Buffer;
  bundle: Buffer;
  hint: string;
}

export interface X509SvidResponse {
  svids: X509SvidMessage[];
  crl: Buffer[];
  federated_bundles: Record<string, Buffer>;
}

export interface X509BundlesResponse {
  crl: Buffer[];
  bundles: Record<string, Buffer>;
}

export interface JwtSvidRequest {
  audience: string[];
  spiffe_id: string;
}

export interface JwtSvidMessage {
  spiffe_id: string;
  svid: string;
  hint: string;
}

export interface JwtSvidResponse {
  svids: JwtSvidMessage[];
}

export interface JwtBundlesResponse {
  bundles: Record<string, Buffer>;
}

/** The metadata every call carries (SPIFFE Workload Endpoint §3): SSRF hardening. */
export const WORKLOAD_API_HEADER = 'workload.spiffe.io';

/** Full method paths (the service has no package), for servers and for logs. */
export const WORKLOAD_API_METHODS = ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles', 'FetchJWTSVID'] as const;
export type WorkloadApiMethod = (typeof WORKLOAD_API_METHODS)[number];

// dist/src/identity/workload-api/proto.js and src/identity/workload-api/proto.ts both sit
// three or four levels below the package root; look for the .proto from either.
function protoPath(): string {
  for (const rel of ['../../../proto/workload.proto', '../../../../proto/workload.proto']) {
    const candidate = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(candidate)) return candidate;
  }
  throw new Error('proto/workload.proto not found next to the sigil package (is the install complete?)');
}

let loaded: { client: ServiceClientConstructor; service: ServiceDefinition } | undefined;

export function workloadApiService(): { client: ServiceClientConstructor; service: ServiceDefinition } {
  if (!loaded) {
    const definition = protoLoader().loadSync(protoPath(), { keepCase: true, longs: String, enums: String, defaults: true, arrays: true, objects: true });
    const client = grpc().loadPackageDefinition(definition)['SpiffeWorkloadAPI'] as ServiceClientConstructor;
    loaded = { client, service: client.service };
  }
  return loaded;
}
