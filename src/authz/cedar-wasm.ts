// cedar-wasm compiles and instantiates its 4 MB WebAssembly module as soon as it is loaded,
// which costs a sidecar ≈17 MB of resident memory. A sidecar on a `policy.allow` list never
// evaluates Cedar, so the module is loaded on first use, synchronously (its Node build is
// CommonJS), by whichever of compile, evaluate or the broker's policy needs it first.
import { createRequire } from 'node:module';

type CedarWasm = typeof import('@cedar-policy/cedar-wasm/nodejs');

let loaded: CedarWasm | undefined;

export function cedarWasm(): CedarWasm {
  loaded ??= createRequire(import.meta.url)('@cedar-policy/cedar-wasm/nodejs') as CedarWasm;
  return loaded;
}
