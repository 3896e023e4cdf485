// Verification keys: a JWK Set held in memory, from a file that is re-read when it changes, from
// a URL, or given statically. Every set carries a `version` that changes whenever the keys do, so
// a verification cache keyed by it never outlives a key's removal.
import { createPublicKey } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { JWK } from 'jose';

/** Only these key types can verify the algorithms we accept. */
const KTYS = new Set(['EC', 'RSA', 'OKP']);

let nextVersion = 1;

/** An immutable, validated set of public signing keys. */
export class JWKSet {
  /** Process-unique; a new set (even with the same keys) gets a new version. */
  readonly version: number;
  readonly keys: readonly JWK[];
  private readonly byKid: Map<string, JWK>;

  constructor(keys: readonly JWK[]) {
    this.version = nextVersion++;
    this.keys = Object.freeze(keys.map((k) => Object.freeze({ ...k })));
    this.byKid = new Map();
    for (const k of this.keys) if (typeof k.kid === 'string' && !this.byKid.has(k.kid)) this.byKid.set(k.kid, k);
  }

  /** The key with this `kid`, if any. */
  find(kid: string): JWK | undefined {
    return this.byKid.get(kid);
  }

  get size(): number {
    return this.keys.length;
  }

  /** The public JWKS document. */
  toJSON(): { keys: JWK[] } {
    return { keys: this.keys.map((k) => ({ ...k })) };
  }
}

/**
 * Parses a JWKS document. Throws (plain Error, naming the problem) when it is not a JSON object
 * with a `keys` array, or a key is malformed or private. Keys marked `use: "enc"` and key types
 * that cannot sign (e.g. `oct`) are skipped, never trusted.
 */
export function parseJwks(value: unknown): JWKSet {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('JWKS must be a JSON object');
  const keys = (value as { keys?: unknown }).keys;
  if (!Array.isArray(keys)) throw new Error('JWKS must have a "keys" array');
  const out: JWK[] = [];
  keys.forEach((k: unknown, i) => {
    if (typeof k !== 'object' || k === null || Array.isArray(k)) throw new Error(`keys[${i}]: not an object`);
    const jwk = k as JWK;
    if (typeof jwk.kty !== 'string') throw new Error(`keys[${i}]: missing "kty"`);
    if (!KTYS.has(jwk.kty) || (jwk.use !== undefined && jwk.use !== 'sig')) return;
    if (jwk.kid !== undefined && typeof jwk.kid !== 'string') throw new Error(`keys[${i}]: "kid" must be a string`);
    if ('d' in jwk || 'p' in jwk || 'priv' in jwk) throw new Error(`keys[${i}]: private key material in a JWKS`);
    if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return;
    try {
      createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
    } catch (err) {
      throw new Error(`keys[${i}]: ${(err as Error).message}`);
    }
    const pub: JWK = { ...jwk };
    delete pub.key_ops;
    delete pub.ext;
    out.push(pub);
  });
  return new JWKSet(out);
}

/** Reads and parses a JWKS file; throws an Error naming the file on any problem. */
export function loadJwksFile(path: string): JWKSet {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${path}: not valid JSON`);
  }
  try {
    return parseJwks(json);
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
}

/**
 * Where verification keys come from. `get()` is called on every verification (it must be cheap;
 * it may return a promise while it reloads). `refresh()`, when present, is called once when a
 * token names a `kid` the current set lacks (a key published after the last check), and returns
 * the possibly newer set.
 */
export interface KeySource {
  get(): JWKSet | Promise<JWKSet>;
  refresh?(): JWKSet | Promise<JWKSet>;
  /** The last load problem, if the source is serving an older (or empty) set because of it. */
  readonly lastError?: string | undefined;
}

export function staticJwks(jwks: { keys: JWK[] } | JWKSet): KeySource {
  const set = jwks instanceof JWKSet ? jwks : parseJwks(jwks);
  return { get: () => set };
}

export interface JwksFileOptions {
  /** Minimum time between two `stat` calls on the hot path (default 500 ms). */
  checkIntervalMs?: number;
}

export interface JwksFileSource extends KeySource {
  get(): JWKSet;
  refresh(): JWKSet;
  readonly path: string;
  readonly lastError: string | undefined;
}

/**
 * A JWKS file, re-read when its mtime, ctime, size or inode change (checked at most every
 * `checkIntervalMs` from `get()`, and at once from `refresh()`). Picks up in-place writes and
 * atomic renames. An unreadable or invalid new file keeps the last good set (and sets
 * `lastError`); if the file has never been valid the set is empty, so every token is refused
 * with 'unknown_kid' until it becomes valid. Construction never throws; use `loadJwksFile` to
 * validate at startup.
 */
export function jwksFromFile(path: string, opts: JwksFileOptions = {}): JwksFileSource {
  const interval = opts.checkIntervalMs ?? 500;
  let current = new JWKSet([]);
  let stamp = '';
  let lastCheck = -Infinity;
  let lastError: string | undefined;

  const check = (): JWKSet => {
    lastCheck = performance.now();
    let s: string;
    try {
      const st = statSync(path);
      s = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch (err) {
      lastError = `${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
      stamp = '';
      return current;
    }
    if (s === stamp) return current;
    stamp = s;
    try {
      current = loadJwksFile(path);
      lastError = undefined;
    } catch (err) {
      lastError = (err as Error).message;
    }
    return current;
  };
  check();
  return {
    path,
    get lastError() {
      return lastError;
    },
    get(): JWKSet {
      return performance.now() - lastCheck >= interval ? check() : current;
    },
    refresh: check,
  };
}

export interface JwksUrlOptions {
  /** How long a fetched set is used before it is fetched again (default 5 min). */
  maxAgeMs?: number;
  /** Minimum time between two fetches caused by unknown `kid`s (default 30 s). */
  cooldownMs?: number;
  /** Per-fetch timeout (default 5 s). */
  timeoutMs?: number;
}

/**
 * A JWKS served over HTTP(S) (an identity provider's `jwks_uri`). Fetched on first use, then
 * again after `maxAgeMs` (in the background; the old set keeps serving), and on an unknown `kid`
 * at most every `cooldownMs`. A failed fetch keeps the last good set.
 */
export function jwksFromUrl(url: string | URL, opts: JwksUrlOptions = {}): KeySource {
  const maxAge = opts.maxAgeMs ?? 5 * 60_000;
  const cooldown = opts.cooldownMs ?? 30_000;
  const timeout = opts.timeoutMs ?? 5_000;
  let current: JWKSet | undefined;
  let fetchedAt = -Infinity;
  let pending: Promise<JWKSet> | undefined;
  let lastError: string | undefined;

  const fetchNow = (): Promise<JWKSet> => {
    pending ??= (async () => {
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(timeout), headers: { accept: 'application/json' }, redirect: 'error' });
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        current = parseJwks(await res.json());
        lastError = undefined;
      } catch (err) {
        lastError = `${String(url)}: ${(err as Error).message}`;
      } finally {
        fetchedAt = performance.now();
        pending = undefined;
      }
      return (current ??= new JWKSet([]));
    })();
    return pending;
  };
  return {
    get lastError() {
      return lastError;
    },
    get(): JWKSet | Promise<JWKSet> {
      if (current === undefined) return fetchNow();
      if (performance.now() - fetchedAt >= maxAge) void fetchNow();
      return current;
    },
    refresh(): JWKSet | Promise<JWKSet> {
      if (current !== undefined && performance.now() - fetchedAt < cooldown) return current;
      return fetchNow();
    },
  };
}
