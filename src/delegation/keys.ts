// The broker's signing keys: ES256 (P-256) key pairs, one JSON file each in a directory. The
// newest key signs; every key in the ring is published in the JWKS, so tokens signed by an older
// key keep verifying until that key is removed (rotation without breaking tokens in flight).
//
// File format (mode 0600), `<dir>/signing-<kid>.json`:
//   { "kid": "<RFC 7638 thumbprint>", "alg": "ES256", "createdAt": <ms>, "privateKeyPem": "-----BEGIN PRIVATE KEY-----..." }
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { calculateJwkThumbprint, type JWK } from 'jose';

export interface SigningKey {
  kid: string;
  alg: 'ES256';
  privateKey: KeyObject;
  /** {kty, crv, x, y, kid, alg, use: 'sig'} */
  publicJwk: JWK;
  /** ms since the epoch. */
  createdAt: number;
}

const FILE_RE = /^signing-[A-Za-z0-9_-]+\.json$/;

async function publicJwkOf(privateKey: KeyObject): Promise<{ kid: string; jwk: JWK }> {
  const raw = createPublicKey(privateKey).export({ format: 'jwk' }) as JWK;
  if (raw.kty !== 'EC' || raw.crv !== 'P-256') throw new Error('signing key is not an EC P-256 key');
  const base: JWK = { kty: raw.kty, crv: raw.crv, x: raw.x!, y: raw.y! };
  const kid = await calculateJwkThumbprint(base, 'sha256');
  return { kid, jwk: { ...base, kid, alg: 'ES256', use: 'sig' } };
}

async function readKeyFile(path: string): Promise<SigningKey> {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || typeof doc.privateKeyPem !== 'string' || typeof doc.createdAt !== 'number') {
    throw new Error(`${path}: not a signing key file (needs privateKeyPem, createdAt)`);
  }
  if (doc.alg !== undefined && doc.alg !== 'ES256') throw new Error(`${path}: alg must be ES256`);
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(doc.privateKeyPem);
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
  const { kid, jwk } = await publicJwkOf(privateKey).catch((err: Error) => {
    throw new Error(`${path}: ${err.message}`);
  });
  if (doc.kid !== undefined && doc.kid !== kid) throw new Error(`${path}: kid does not match the key`);
  return { kid, alg: 'ES256', privateKey, publicJwk: jwk, createdAt: doc.createdAt };
}

/** Writes `data` to `path` atomically (temp file + rename). */
export async function writeFileAtomic(path: string, data: string, mode = 0o644): Promise<void> {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  await writeFile(tmp, data, { mode });
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export class SigningKeyRing {
  private constructor(
    readonly dir: string,
    private ring: SigningKey[],
  ) {}

  /**
   * Loads every `signing-*.json` in `dir` (created if missing); generates one key if there is
   * none. Throws an Error naming the file when a key file is unreadable or invalid.
   */
  static async load(dir: string): Promise<SigningKeyRing> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const names = (await readdir(dir)).filter((n) => FILE_RE.test(n)).sort();
    const keys: SigningKey[] = [];
    for (const n of names) keys.push(await readKeyFile(join(dir, n)));
    if (keys.length === 0) keys.push(await SigningKeyRing.generate(dir));
    return new SigningKeyRing(dir, sortKeys(keys));
  }

  /** Generates a new key, writes its file into `dir` and returns it (does not touch any ring). */
  static async generate(dir: string): Promise<SigningKey> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const key = await newSigningKey();
    const { kid, privateKey, createdAt } = key;
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;
    const doc = { kid, alg: 'ES256', createdAt, privateKeyPem: pem };
    await writeFileAtomic(join(dir, `signing-${kid}.json`), JSON.stringify(doc, null, 2) + '\n', 0o600);
    return key;
  }

  /** The key that signs now: the newest. */
  current(): SigningKey {
    return this.ring[0]!;
  }

  /** All keys, newest first. */
  keys(): readonly SigningKey[] {
    return this.ring;
  }

  /** The public JWKS: every key in the ring, newest first. */
  jwks(): { keys: JWK[] } {
    return { keys: this.ring.map((k) => ({ ...k.publicJwk })) };
  }

  /** Generates a new key, which becomes current; older keys stay published. */
  async rotate(): Promise<SigningKey> {
    const key = await SigningKeyRing.generate(this.dir);
    this.ring = sortKeys([key, ...this.ring]);
    return key;
  }

  /**
   * Removes a key from the ring and deletes its file (tokens it signed stop verifying once
   * verifiers see the new JWKS). The current key cannot be removed while it is the only one.
   */
  async remove(kid: string): Promise<boolean> {
    const key = this.ring.find((k) => k.kid === kid);
    if (!key) return false;
    if (this.ring.length === 1) throw new Error('cannot remove the only signing key');
    await rm(join(this.dir, `signing-${kid}.json`), { force: true });
    this.ring = this.ring.filter((k) => k !== key);
    return true;
  }

  /** Removes every key but the current one that is older than `maxAgeMs`; returns their kids. */
  async prune(maxAgeMs: number, nowMs = Date.now()): Promise<string[]> {
    const cur = this.current();
    const old = this.ring.filter((k) => k !== cur && nowMs - k.createdAt > maxAgeMs);
    for (const k of old) await this.remove(k.kid);
    return old.map((k) => k.kid);
  }

  /** Re-reads the directory (keys added or removed by another process). */
  async reload(): Promise<void> {
    const fresh = await SigningKeyRing.load(this.dir);
    this.ring = fresh.ring;
  }

  /** Writes the public JWKS to `path` atomically (for verifiers that read a file). */
  async writeJwks(path: string): Promise<void> {
    await writeFileAtomic(path, JSON.stringify(this.jwks(), null, 2) + '\n');
  }
}

let lastCreatedAt = 0;

/** A fresh ES256 key in memory (not written anywhere). */
export async function newSigningKey(): Promise<SigningKey> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const { kid, jwk } = await publicJwkOf(privateKey);
  // Strictly increasing within a process, so "newest" is well defined even within one ms.
  const createdAt = Math.max(Date.now(), lastCreatedAt + 1);
  lastCreatedAt = createdAt;
  return { kid, alg: 'ES256', privateKey, publicJwk: jwk, createdAt };
}

function sortKeys(keys: SigningKey[]): SigningKey[] {
  return [...keys].sort((a, b) => b.createdAt - a.createdAt || (a.kid < b.kid ? -1 : 1));
}
