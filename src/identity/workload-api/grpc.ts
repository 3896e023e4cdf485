// @grpc/grpc-js and @grpc/proto-loader add ≈10–14 MB of resident memory to the process that
// loads them, and only a sidecar or broker on `identity.workloadApi` uses them. They are loaded
// on first use, synchronously (both are CommonJS), so a sidecar with a dev or files identity
// does not pay for them.
import { createRequire } from 'node:module';

type Grpc = typeof import('@grpc/grpc-js');
type ProtoLoader = typeof import('@grpc/proto-loader');

const load = createRequire(import.meta.url);
let grpcModule: Grpc | undefined;
let protoLoaderModule: ProtoLoader | undefined;

export function grpc(): Grpc {
  grpcModule ??= load('@grpc/grpc-js') as Grpc;
  return grpcModule;
}

export function protoLoader(): ProtoLoader {
  protoLoaderModule ??= load('@grpc/proto-loader') as ProtoLoader;
  return protoLoaderModule;
}
