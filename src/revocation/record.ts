// Revocation records: one signed message per revoke or lift, in the bus envelope format
// (docs/envelope.md), published on `<subject>.<entry id>.<op>` (docs/revocation.md).
//
// A record is kept in a JetStream stream for sidecars that start later, so it must verify long
// after its signer's short-lived SVID expired. It is therefore verified *as of its own iat*: the
// signer's chain must have been valid when it signed, iat may not be in the future, and the
// signer must not be revoked now. Replays cannot undo anything: a revoke is applied once per id,
// and a lift is terminal (see RevocationSet).
import type { BundleSet, SpiffeId } from '../spiffe/index.js';
import { createEnvelopeSigner, EnvelopeError, EnvelopeVerifier, type EnvelopeSigner, type SignerInfo } from '../bus/envelope/index.js';
import type { X509Svid } from '../identity/index.js';
import { entryToJson, isEntryId, parseRevocationEntry, REVOCATION_KINDS, RevocationInputError, type RevocationEntry, type RevocationKind } from './entry.js';

export type RevocationRecord =
  | { op: 'revoke'; entry: RevocationEntry }
  | { op: 'lift'; id: string; kind: RevocationKind; liftedBy: string; liftedAt: number };

export const RECORD_VERSION = 1;

/**
 * The records' JWS `typ`. Bus messages use `sigil-msg+jws`: a message an agent has its sidecar
 * sign on the bus can therefore never verify as a revocation record, whatever its subject and
 * data, and a record never verifies as a bus message.
 */
export const RECORD_TYP = 'sigil-revocation+jws';

/** A signer for revocation records with this SVID. */
export function createRecordSigner(svid: X509Svid): EnvelopeSigner {
  return createEnvelopeSigner(svid, { typ: RECORD_TYP });
}

/** A verifier for revocation records (only `typ: sigil-revocation+jws`). */
export function createRecordVerifier(opts: { maxBytes: number; leewaySeconds: number }): EnvelopeVerifier {
  return new EnvelopeVerifier({ ...opts, typ: RECORD_TYP });
}

/** Reason codes from the closed set (src/authz/reasons.ts); `detail` says more. */
export type RecordErrorCode = 'envelope_malformed' | 'subject_mismatch' | 'envelope_expired' | EnvelopeError['code'];

export class RecordError extends Error {
  constructor(
    readonly code: RecordErrorCode,
    readonly detail: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * `<prefix>.<entry id>.<op>`: one subject per entry and operation, so the stream (one message
 * kept per subject) holds an entry's revoke and its lift side by side — a re-published revoke
 * can never push its lift out of the stream.
 */
export function recordSubject(prefix: string, record: RevocationRecord): string {
  return `${prefix}.${recordId(record)}.${record.op}`;
}

function recordId(record: RevocationRecord): string {
  return record.op === 'revoke' ? record.entry.id : record.id;
}

export function recordData(record: RevocationRecord): unknown {
  return record.op === 'revoke'
    ? { v: RECORD_VERSION, op: 'revoke', entry: entryToJson(record.entry) }
    : { v: RECORD_VERSION, op: 'lift', id: record.id, kind: record.kind, liftedBy: record.liftedBy, liftedAt: new Date(record.liftedAt).toISOString() };
}

export function signRecord(signer: EnvelopeSigner, prefix: string, record: RevocationRecord, nowMs = Date.now()): { subject: string; jws: string } {
  if (signer.typ !== RECORD_TYP) throw new TypeError(`revocation records need a record signer (typ ${RECORD_TYP}); see createRecordSigner`);
  const subject = recordSubject(prefix, record);
  return { subject, jws: signer.sign({ subject, data: recordData(record) }, nowMs).jws };
}

export interface VerifyRecordContext {
  verifier: EnvelopeVerifier;
  bundles: BundleSet;
  /** The subject prefix records are published under. */
  prefix: string;
  /** The NATS subject the record arrived on. */
  subject: string;
  nowMs?: number;
  /** Clock skew tolerated on iat, ms. */
  leewayMs: number;
  /**
   * When the stream stored the record (epoch ms). A record must have been stored within
   * MAX_STORE_DELAY_MS of its iat: verification is as of iat, so without this bound anyone with
   * any key the signer ever had could sign "old" records today.
   */
  storedAtMs?: number;
  /** The signer is itself revoked now (checked on every record). */
  isRevoked: (signer: SignerInfo) => boolean;
}

/** How long after signing a record may reach the stream (issuers sign just before publishing). */
export const MAX_STORE_DELAY_MS = 30_000;

export interface VerifiedRecord {
  record: RevocationRecord;
  signer: SpiffeId;
  iat: number;
}

export function verifyRecord(jws: string, ctx: VerifyRecordContext): VerifiedRecord {
  if (ctx.verifier.typ !== RECORD_TYP) throw new TypeError(`revocation records need a record verifier (typ ${RECORD_TYP}); see createRecordVerifier`);
  const now = ctx.nowMs ?? Date.now();
  const iat = peekIat(jws);
  // A stored record is bound to the stream's clock (below), not to this host's: a receiver whose
  // clock is behind must not refuse — and so never see — a record the stream just stored.
  if (ctx.storedAtMs === undefined && iat * 1000 > now + ctx.leewayMs) throw new RecordError('envelope_expired', 'iat_in_future', `record iat ${iat} is in the future`);
  if (ctx.storedAtMs !== undefined) {
    if (!storedInTime(iat, ctx.storedAtMs, ctx.leewayMs)) {
      throw new RecordError('envelope_expired', 'iat_not_at_store_time', `record iat ${iat} is not within ${MAX_STORE_DELAY_MS / 1000}s of when the stream stored it`);
    }
  }
  let verified;
  try {
    verified = ctx.verifier.verify(jws, { bundles: ctx.bundles, nowMs: iat * 1000, isRevoked: ctx.isRevoked });
  } catch (err) {
    if (err instanceof EnvelopeError) throw new RecordError(err.code, err.detail, err.message);
    throw err;
  }
  if (verified.subject !== ctx.subject) {
    throw new RecordError('subject_mismatch', 'subject', `signed for ${JSON.stringify(verified.subject)}, arrived on ${JSON.stringify(ctx.subject)}`);
  }
  const record = parseRecordData(verified.data, verified.signer.id.toString(), now);
  if (recordSubject(ctx.prefix, record) !== ctx.subject) {
    throw new RecordError('subject_mismatch', 'id', `${record.op} record for ${recordId(record)} arrived on ${JSON.stringify(ctx.subject)}`);
  }
  return { record, signer: verified.signer.id, iat };
}

/** Strict: unknown members and wrong types are refused. */
export function parseRecordData(data: unknown, signer: string, now: number): RevocationRecord {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) throw malformed('data', 'record data must be an object');
  const o = data as Record<string, unknown>;
  if (o['v'] !== RECORD_VERSION) throw malformed('version', `record version must be ${RECORD_VERSION}`);
  if (o['op'] === 'revoke') {
    onlyKeys(o, ['v', 'op', 'entry']);
    try {
      const entry = parseRevocationEntry(o['entry'], { id: '', revokedBy: signer, now });
      if (isLocalId(entry.id)) throw malformed('entry.id', 'ids starting with "file-" belong to a sidecar\'s own revocation file');
      return { op: 'revoke', entry };
    } catch (err) {
      if (err instanceof RevocationInputError) throw malformed(`entry.${err.field}`, err.message);
      throw err;
    }
  }
  if (o['op'] === 'lift') {
    onlyKeys(o, ['v', 'op', 'id', 'kind', 'liftedBy', 'liftedAt']);
    const id = o['id'];
    if (typeof id !== 'string' || !isEntryId(id)) throw malformed('id', 'lift record needs a valid entry id');
    if (isLocalId(id)) throw malformed('id', 'entries from a sidecar\'s revocation file cannot be lifted remotely');
    // The kind travels with the lift so every receiver — also one that never saw the entry —
    // authorizes the lift the same way (a policy may allow lifting some kinds only).
    const kind = o['kind'];
    if (typeof kind !== 'string' || !(REVOCATION_KINDS as readonly string[]).includes(kind)) throw malformed('kind', `must be one of ${REVOCATION_KINDS.join(', ')}`);
    const liftedBy = o['liftedBy'];
    // eslint-disable-next-line no-control-regex
    if (typeof liftedBy !== 'string' || liftedBy === '' || liftedBy.length > 512 || /[\u0000-\u001f\u007f]/.test(liftedBy)) throw malformed('liftedBy', 'must be non-empty text');
    const liftedAt = typeof o['liftedAt'] === 'string' ? Date.parse(o['liftedAt']) : NaN;
    if (!Number.isFinite(liftedAt)) throw malformed('liftedAt', 'must be an ISO 8601 time');
    return { op: 'lift', id, kind: kind as RevocationKind, liftedBy, liftedAt };
  }
  throw malformed('op', 'op must be "revoke" or "lift"');
}

/** Ids the file source derives; they never travel in records. */
function isLocalId(id: string): boolean {
  return id.startsWith('file-');
}

function onlyKeys(o: Record<string, unknown>, allowed: string[]): void {
  for (const key of Object.keys(o)) if (!allowed.includes(key)) throw malformed(key, `unknown member ${JSON.stringify(key)}`);
}

/**
 * Whether `jws` (read back from the stream, unverified) is `record` as issued by `issuer`: the
 * same operation on the same entry. Used by an issuer to tell its own earlier attempt from junk.
 */
export function isSameRecord(jws: string, record: RevocationRecord, issuer: string): boolean {
  try {
    const claims = JSON.parse(Buffer.from(jws.split('.')[1] ?? '', 'base64url').toString('utf8')) as { iss?: unknown; data?: { op?: unknown; id?: unknown; entry?: { id?: unknown } } };
    const id = claims.data?.op === 'revoke' ? claims.data.entry?.id : claims.data?.id;
    return claims.iss === issuer && claims.data?.op === record.op && id === recordId(record);
  } catch {
    return false;
  }
}

/** Whether a record (verified, as ours) was stored within the bound of its iat. */
export function storedInTime(iat: number, storedAtMs: number, leewayMs: number): boolean {
  const delay = storedAtMs - iat * 1000;
  return delay <= MAX_STORE_DELAY_MS + leewayMs && delay >= -leewayMs;
}

/** The claims' iat, read before verification only to choose the verification time. */
function peekIat(jws: string): number {
  const parts = typeof jws === 'string' ? jws.split('.') : [];
  if (parts.length !== 3) throw malformed('segments', 'not a JWS compact serialization');
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8'));
  } catch {
    throw malformed('payload', 'payload is not JSON');
  }
  const iat = (claims as { iat?: unknown } | null)?.iat;
  if (typeof iat !== 'number' || !Number.isSafeInteger(iat) || iat < 0) throw malformed('iat', 'iat must be a NumericDate');
  return iat;
}

function malformed(detail: string, message: string): RecordError {
  return new RecordError('envelope_malformed', `record_${detail}`, message);
}
