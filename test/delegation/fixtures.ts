// Shared material for the delegation tests: a broker key, crafted tokens (any header, any
// payload, any signing key, including the insecure ones a verifier must refuse).
import { createHmac, sign as rawSign, type KeyObject } from 'node:crypto';
import { newSigningKey, type DelegationTokenClaims, type SigningKey } from '../../src/delegation/index.js';

export const ISSUER = 'https://broker.example.org';
export const USER = 'alice@example.org';
export const ORCH = 'spiffe://example.org/agent/orchestrator';
export const WORKER = 'spiffe://example.org/agent/worker';
export const TOOL = 'spiffe://example.org/agent/tool';
export const OTHER = 'spiffe://example.org/agent/c';

export const b64url = (v: string | Buffer): string => Buffer.from(v).toString('base64url');

export function nowS(): number {
  return Math.floor(Date.now() / 1000);
}

/** Claims of a valid token: alice → orchestrator → worker, addressed to the tool. */
export function claimsFor(over: Partial<Record<keyof DelegationTokenClaims, unknown>> & Record<string, unknown> = {}): Record<string, unknown> {
  const now = nowS();
  return {
    iss: ISSUER,
    sub: USER,
    aud: TOOL,
    client_id: WORKER,
    act: { sub: WORKER, act: { sub: ORCH } },
    scope: 'tickets:read tickets:write',
    iat: now,
    exp: now + 300,
    jti: 'jti-1',
    task: 'task-1',
    ...over,
  };
}

export type CraftKey = { kind: 'es256'; key: KeyObject } | { kind: 'hmac'; secret: Buffer } | { kind: 'none' };

/** A compact JWS with exactly this header and payload, signed as `key` says. */
export function craft(header: Record<string, unknown>, payload: Record<string, unknown> | string, key: CraftKey): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(typeof payload === 'string' ? payload : JSON.stringify(payload))}`;
  let sig = '';
  if (key.kind === 'es256') sig = rawSign('sha256', Buffer.from(input), { key: key.key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  if (key.kind === 'hmac') sig = createHmac('sha256', key.secret).update(input).digest('base64url');
  return `${input}.${sig}`;
}

export function headerFor(key: SigningKey, over: Record<string, unknown> = {}): Record<string, unknown> {
  return { alg: 'ES256', typ: 'at+jwt', kid: key.kid, ...over };
}

/** A valid-looking token signed with `key` (no library in between). */
export function tokenFor(key: SigningKey, claims: Record<string, unknown> = claimsFor(), header: Record<string, unknown> = {}): string {
  return craft(headerFor(key, header), claims, { kind: 'es256', key: key.privateKey });
}

export async function keys(n: number): Promise<SigningKey[]> {
  const out: SigningKey[] = [];
  for (let i = 0; i < n; i++) out.push(await newSigningKey());
  return out;
}

/** Resolves to the DelegationError's "code/detail", or 'ok'. */
export async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (err) {
    const e = err as { code?: string; detail?: string; message?: string };
    return e.code && e.detail ? `${e.code}/${e.detail}` : `error: ${e.message}`;
  }
}
