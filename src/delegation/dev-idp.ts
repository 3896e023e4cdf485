// DEV ONLY. A stand-in identity provider for the demo and the tests: one ES256 key pair in a
// directory and a way to mint user access tokens with it, so the delegation flow runs without an
// external IdP. Its issuer is under `.invalid` (RFC 2606) so it can never be mistaken for a real
// one. Never configure it in production: anyone with the directory can mint any user.
//
//   <dir>/dev-idp.json  {"warning", "issuer", "kid", "alg", "createdAt", "privateKeyPem"}  (0600)
//   <dir>/jwks.json     the public key, for the broker's `subjectIssuers[].jwks`
import { randomUUID, createPrivateKey, type KeyObject } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { newSigningKey, writeFileAtomic } from './keys.js';
import { formatScope, parseScope } from './scope.js';

export const DEV_IDP_ISSUER = 'https://dev-idp.sigil.invalid';
export const DEV_IDP_WARNING = 'Sigil development identity provider: anyone who can read this file can mint tokens for any user. Not for production.';
const KEY_FILE = 'dev-idp.json';
const JWKS_FILE = 'jwks.json';

export interface DevIdp {
  issuer: string;
  kid: string;
  jwksPath: string;
  privateKey: KeyObject;
}

/** Reads an initialised dev IdP directory. */
export async function readDevIdp(dir: string): Promise<DevIdp> {
  const path = join(dir, KEY_FILE);
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`${path}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no dev identity provider here (run `sigil dev-idp init --dir DIR` first)' : (err as Error).message}`);
  }
  if (typeof doc.issuer !== 'string' || typeof doc.kid !== 'string' || typeof doc.privateKeyPem !== 'string') throw new Error(`${path}: not a dev identity provider file`);
  return { issuer: doc.issuer, kid: doc.kid, jwksPath: join(dir, JWKS_FILE), privateKey: createPrivateKey(doc.privateKeyPem) };
}

/**
 * Creates (or reuses) a dev IdP in `dir`: an ES256 key and its public JWKS. Idempotent: an
 * existing key is kept; a different `issuer` given explicitly replaces the recorded one.
 */
export async function initDevIdp(dir: string, issuer?: string): Promise<{ jwksPath: string; issuer: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  let existing: DevIdp | undefined;
  try {
    existing = await readDevIdp(dir);
  } catch {
    existing = undefined;
  }
  const jwksPath = join(dir, JWKS_FILE);
  if (existing && (issuer === undefined || issuer === existing.issuer)) return { jwksPath, issuer: existing.issuer };
  const finalIssuer = issuer ?? DEV_IDP_ISSUER;
  let privateKey: KeyObject;
  let kid: string;
  let jwk: object;
  let createdAt: number;
  if (existing) {
    privateKey = existing.privateKey;
    kid = existing.kid;
    const prev = JSON.parse(await readFile(join(dir, KEY_FILE), 'utf8')) as { createdAt?: number };
    createdAt = prev.createdAt ?? Date.now();
    jwk = (JSON.parse(await readFile(jwksPath, 'utf8')) as { keys: object[] }).keys[0]!;
  } else {
    const key = await newSigningKey();
    privateKey = key.privateKey;
    kid = key.kid;
    jwk = key.publicJwk;
    createdAt = key.createdAt;
  }
  const doc = {
    warning: DEV_IDP_WARNING,
    issuer: finalIssuer,
    kid,
    alg: 'ES256',
    createdAt,
    privateKeyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
  };
  await writeFileAtomic(join(dir, KEY_FILE), JSON.stringify(doc, null, 2) + '\n', 0o600);
  await writeFileAtomic(jwksPath, JSON.stringify({ keys: [jwk] }, null, 2) + '\n');
  return { jwksPath, issuer: finalIssuer };
}

export interface DevUserTokenOptions {
  /** The user. */
  sub: string;
  scope: string[];
  /** The broker's audience for user tokens. */
  audience: string;
  /** Default 3600. */
  ttlSeconds?: number;
  /** SPIFFE IDs allowed to act for the user (RFC 8693 §4.4 `may_act`; one → object, several → array). */
  mayAct?: string[];
  nowMs?: number;
}

/** Mints a user access token from the dev IdP in `dir` (header typ 'JWT', alg ES256, kid). */
export async function mintDevUserToken(dir: string, opts: DevUserTokenOptions): Promise<string> {
  const idp = await readDevIdp(dir);
  if (typeof opts.sub !== 'string' || opts.sub.length === 0) throw new Error('mintDevUserToken: sub is required');
  const scope = formatScope(parseScope(opts.scope));
  const ttl = opts.ttlSeconds ?? 3600;
  if (!(Number.isInteger(ttl) && ttl > 0)) throw new Error('mintDevUserToken: ttlSeconds must be a positive integer');
  const now = Math.floor((opts.nowMs ?? Date.now()) / 1000);
  const claims: Record<string, unknown> = { scope };
  if (opts.mayAct && opts.mayAct.length > 0) {
    const list = opts.mayAct.map((sub) => ({ sub }));
    claims.may_act = list.length === 1 ? list[0] : list;
  }
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: idp.kid })
    .setIssuer(idp.issuer)
    .setSubject(opts.sub)
    .setAudience(opts.audience)
    .setIssuedAt(now)
    .setExpirationTime(now + ttl)
    .setJti(randomUUID())
    .sign(idp.privateKey);
}
