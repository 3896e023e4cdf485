// @grpc/grpc-js and @grpc/proto-loader are only used by a sidecar or broker on
// `identity.workloadApi`, so they are loaded on first use: a sidecar with a dev or files
// identity does not pay for them.
import { lazyRequire } from '../../lazy-require.js';

export const grpc = lazyRequire<typeof import('@grpc/grpc-js')>('@grpc/grpc-js');
export const protoLoader = lazyRequire<typeof import('@grpc/proto-loader')>('@grpc/proto-loader');
