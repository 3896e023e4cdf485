// Loads a CommonJS package on first use instead of at startup, synchronously, once. Used for
// optional subsystems whose modules cost resident memory in every sidecar that loads them
// (cedar-wasm, gRPC, the NATS client). ESM `import` of the same package elsewhere shares
// Node's CommonJS module cache, so there is only ever one instance.
import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

export function lazyRequire<T>(specifier: string): () => T {
  let loaded: T | undefined;
  return () => {
    loaded ??= load(specifier) as T;
    return loaded;
  };
}
