// What can be revoked, and the one parser every source (admin API, NATS record, file) uses to
// turn untrusted input into a normalized entry. Pure: the clock and the id are parameters.
import { SpiffeIdPattern, TrustDomain } from '../spiffe/index.js';

export const REVOCATION_KINDS = ['svid', 'agent', 'task', 'token', 'user', 'trust_domain'] as const;
export type RevocationKind = (typeof REVOCATION_KINDS)[number];

/**
 * One revocation. `value` is normalized per kind:
 * - svid: `sha256:<64 lower-case hex>` (leaf DER fingerprint) or `serial:<lower-case hex, no leading zeros>`
 * - agent: a SPIFFE ID or pattern (`*` one segment, trailing `**`)
 * - trust_domain: a trust domain name
 * - task / token / user: the delegation's task id, token `jti`, or `sub`, verbatim
 */
export interface RevocationEntry {
  /** Unique per revocation; lifting names it. A UUID for entries made by Sigil. */
  id: string;
  kind: RevocationKind;
  value: string;
  reason: string;
  /** Who revoked it: the admin caller's label, or the signing agent's SPIFFE ID. */
  revokedBy: string;
  /** Epoch ms. */
  revokedAt: number;
  /** Epoch ms after which the entry no longer applies (e.g. when the revoked SVID expires). */
  expiresAt?: number;
}

export class RevocationInputError extends Error {
  readonly code = 'revocation_invalid';
  constructor(
    /** The offending field, e.g. `value` or `expiresAt`. */
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
  }
}

const MAX_TEXT = 512;
const MAX_REASON = 256;
/** Entry ids become a NATS subject token: no dots, wildcards or whitespace. */
const ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;

export interface EntryDefaults {
  id: string;
  revokedBy: string;
  now: number;
}

/**
 * Validates an entry as given by a caller (`{kind, value, reason?, expiresAt?}`; `id`,
 * `revokedBy` and `revokedAt` are taken from the input when present — records and files carry
 * them — and from `defaults` otherwise). Unknown fields are refused.
 */
export function parseRevocationEntry(input: unknown, defaults: EntryDefaults): RevocationEntry {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new RevocationInputError('entry', 'must be an object');
  }
  const o = input as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!ENTRY_FIELDS.has(key)) throw new RevocationInputError(key, 'unknown field');
  }
  const kind = o['kind'];
  if (typeof kind !== 'string' || !(REVOCATION_KINDS as readonly string[]).includes(kind)) {
    throw new RevocationInputError('kind', `must be one of ${REVOCATION_KINDS.join(', ')}`);
  }
  const value = normalizeValue(kind as RevocationKind, o['value']);
  const id = o['id'] ?? defaults.id;
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) throw new RevocationInputError('id', 'must be 8-64 characters of A-Z a-z 0-9 _ -');
  const reason = o['reason'] ?? '';
  if (typeof reason !== 'string' || reason.length > MAX_REASON || hasControl(reason)) {
    throw new RevocationInputError('reason', `must be text of at most ${MAX_REASON} characters`);
  }
  const revokedBy = o['revokedBy'] ?? defaults.revokedBy;
  if (typeof revokedBy !== 'string' || revokedBy === '' || revokedBy.length > MAX_TEXT || hasControl(revokedBy)) {
    throw new RevocationInputError('revokedBy', 'must be non-empty text');
  }
  const revokedAt = o['revokedAt'] === undefined ? defaults.now : parseTime('revokedAt', o['revokedAt']);
  const entry: RevocationEntry = { id, kind: kind as RevocationKind, value, reason, revokedBy, revokedAt };
  if (o['expiresAt'] !== undefined) {
    const expiresAt = parseTime('expiresAt', o['expiresAt']);
    if (expiresAt <= revokedAt) throw new RevocationInputError('expiresAt', 'must be after the revocation time');
    entry.expiresAt = expiresAt;
  }
  return entry;
}

const ENTRY_FIELDS = new Set(['id', 'kind', 'value', 'reason', 'revokedBy', 'revokedAt', 'expiresAt']);

/** An entry as the admin API and records carry it (times as ISO 8601 strings). */
export interface RevocationEntryJson {
  id: string;
  kind: string;
  value: string;
  reason: string;
  revokedBy: string;
  revokedAt: string;
  expiresAt?: string;
}

/** The entry as JSON (times as ISO strings), as the admin API and records carry it. */
export function entryToJson(entry: RevocationEntry): RevocationEntryJson {
  const json: RevocationEntryJson = {
    id: entry.id,
    kind: entry.kind,
    value: entry.value,
    reason: entry.reason,
    revokedBy: entry.revokedBy,
    revokedAt: new Date(entry.revokedAt).toISOString(),
  };
  if (entry.expiresAt !== undefined) json.expiresAt = new Date(entry.expiresAt).toISOString();
  return json;
}

export function isEntryId(id: string): boolean {
  return ID_PATTERN.test(id);
}

function normalizeValue(kind: RevocationKind, raw: unknown): string {
  if (typeof raw !== 'string' || raw === '') throw new RevocationInputError('value', 'must be a non-empty string');
  if (raw.length > 2048 || hasControl(raw)) throw new RevocationInputError('value', 'must be at most 2048 characters of text');
  switch (kind) {
    case 'svid':
      return normalizeSvid(raw);
    case 'agent':
      try {
        return SpiffeIdPattern.parse(raw).toString();
      } catch (err) {
        throw new RevocationInputError('value', `not a SPIFFE ID or pattern: ${(err as Error).message}`);
      }
    case 'trust_domain':
      try {
        return TrustDomain.parse(raw).name;
      } catch (err) {
        throw new RevocationInputError('value', `not a trust domain: ${(err as Error).message}`);
      }
    default:
      if (raw.length > MAX_TEXT) throw new RevocationInputError('value', `must be at most ${MAX_TEXT} characters`);
      return raw;
  }
}

/**
 * `sha256:<hex>` (colons allowed, as `openssl x509 -fingerprint` prints them), `serial:<hex>`,
 * or bare hex: 64 digits is a fingerprint, anything shorter a serial.
 */
function normalizeSvid(raw: string): string {
  const lower = raw.toLowerCase();
  const [prefix, rest] = lower.startsWith('sha256:') ? ['sha256', lower.slice(7)] : lower.startsWith('serial:') ? ['serial', lower.slice(7)] : ['', lower];
  const hex = rest.replaceAll(':', '');
  if (!/^[0-9a-f]+$/.test(hex)) throw new RevocationInputError('value', 'an SVID is named by its serial or SHA-256 fingerprint in hex');
  const kind = prefix || (hex.length === 64 ? 'sha256' : 'serial');
  if (kind === 'sha256') {
    if (hex.length !== 64) throw new RevocationInputError('value', 'a SHA-256 fingerprint has 64 hex digits');
    return `sha256:${hex}`;
  }
  const serial = hex.replace(/^0+(?=.)/, '');
  if (serial.length > 40) throw new RevocationInputError('value', 'a certificate serial has at most 20 bytes (40 hex digits)');
  return `serial:${serial}`;
}

/** The two keys an SVID can be revoked by, in the normalized form of normalizeSvid. */
export function svidKeys(serialHex: string, fingerprintHex: string): [string, string] {
  return [`serial:${serialHex.toLowerCase().replaceAll(':', '').replace(/^0+(?=.)/, '')}`, `sha256:${fingerprintHex.toLowerCase().replaceAll(':', '')}`];
}

/** The largest time a Date can hold: anything later could not be written back as ISO 8601. */
const MAX_TIME_MS = 8.64e15;
const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

function parseTime(field: string, raw: unknown): number {
  const ms = typeof raw === 'number' ? raw : typeof raw === 'string' && ISO_8601.test(raw) ? Date.parse(raw) : NaN;
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_TIME_MS) throw new RevocationInputError(field, 'must be an ISO 8601 date-time (e.g. 2026-11-22T18:00:00Z) or epoch milliseconds');
  return ms;
}

function hasControl(s: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u001f\u007f]/.test(s);
}
