// cedar-wasm compiles and instantiates its 4 MB WebAssembly module as soon as it is loaded,
// which costs a sidecar ≈6 MB of resident memory. A sidecar on a `policy.allow` list never
// evaluates Cedar, so the module is loaded on first use by whichever of compile, evaluate or
// the broker's policy needs it first.
import { lazyRequire } from '../lazy-require.js';

export const cedarWasm = lazyRequire<typeof import('@cedar-policy/cedar-wasm/nodejs')>('@cedar-policy/cedar-wasm/nodejs');
