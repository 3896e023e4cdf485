// The kill switch at run time: the revocation set, its sources (admin API, NATS records, a
// watched file), the live registry, and the freshness of the list. The sidecar and the broker
// each own one; enforcement points ask it through the sidecar's decide() and the peer verifier.
import { randomUUID } from 'node:crypto';
import type { EnvelopeVerifier, SignerInfo } from '../bus/envelope/index.js';
import { resourceAgent, type AuthzRequest, type Decision } from '../authz/index.js';
import type { IdentitySnapshot } from '../identity/index.js';
import type { BundleSet, SpiffeId } from '../spiffe/index.js';
import type { Logger } from '../telemetry/index.js';
import { parseRevocationEntry, svidKeys, type RevocationEntry } from './entry.js';
import { RevocationFileSource } from './file-source.js';
import { RecordExistsError, RevocationFeed } from './nats-feed.js';
import { createRecordSigner, createRecordVerifier, isSameRecord, RecordError, recordSubject, signRecord, storedInTime, verifyRecord, type RevocationRecord } from './record.js';
import { LiveRegistry, type LiveKind } from './registry.js';
import { RevocationSet } from './set.js';

export interface RevocationSettings {
  file?: string;
  nats?: {
    servers: string[];
    caPem?: string;
    subject: string;
    stream: string;
    createStream: boolean;
  };
  /** Deny new connections while the list is older than this. */
  failClosedAfterMs?: number;
  syncIntervalMs: number;
  /** Clock skew tolerated on a record's iat. */
  leewayMs: number;
  maxRecordBytes: number;
}

export type RevocationSource = 'admin' | 'nats' | 'file';
/**
 * `blocked`: our record could not be stored (the stream holds something else on its subject);
 * `clock_skew`: our own record came back stored too long after its iat (receivers refuse it).
 */
export type ApplyResult = 'applied' | 'lifted' | 'duplicate' | 'rejected' | 'expired' | 'blocked' | 'clock_skew';

export interface RevocationsDeps {
  identity: () => IdentitySnapshot | undefined;
  /**
   * The trust bundles records are verified against. They outlive a withdrawn SVID (Workload API
   * PermissionDenied): records keep being applied while this sidecar has no identity of its own,
   * so none is lost. Defaults to the current identity's bundles.
   */
  trustBundles?: () => BundleSet | undefined;
  /** May `signer` issue this record (Cedar `revocation.issue`)? Records the decision. */
  authorize: (signer: SpiffeId, record: RevocationRecord, subject: string) => Decision;
  /** A record refused before any policy could look at it (forged, tampered, replayed). */
  auditRejection: (r: { subject: string; reason: string; detail: string; signer?: SpiffeId }) => void;
  /** Metrics hooks. */
  observeApplied?: (source: RevocationSource, result: ApplyResult) => void;
  observeCut?: (kind: LiveKind, count: number) => void;
  /** Called after an entry was added (any source), after live work was cut. */
  onAdded?: (entry: RevocationEntry) => void;
  logger: Logger;
  /** NATS client name. */
  name: string;
}

/** The admin API refused a revocation (e.g. this identity may not issue records). */
export class RevocationRefusedError extends Error {
  constructor(
    readonly code: 'revocation_invalid' | 'not_authorized' | 'not_found',
    message: string,
  ) {
    super(message);
  }
}

export interface RevokeOutcome {
  entry: RevocationEntry;
  /** Whether the record reached the NATS stream (false: applied here only, retried). */
  propagated: boolean;
}

const RETRY_MS = 1_000;
const PUBLISHED_MEMORY = 10_000;
const MAX_PENDING = 10_000;

export class Revocations {
  readonly set = new RevocationSet();
  readonly registry = new LiveRegistry();
  private readonly file: RevocationFileSource | undefined;
  private readonly feed: RevocationFeed | undefined;
  private readonly verifier: EnvelopeVerifier;
  private fileIds = new Set<string>();
  /** Records this process published: their echo from the stream is not a replay. */
  private readonly published = new Set<string>();
  /** Records applied here whose publish failed; retried until the stream takes them. */
  private readonly pending: RevocationRecord[] = [];
  private flushing = false;
  private readonly startedAt = Date.now();
  private synced = false;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly settings: RevocationSettings, private readonly deps: RevocationsDeps) {
    this.verifier = createRecordVerifier({ maxBytes: settings.maxRecordBytes, leewaySeconds: settings.leewayMs / 1000 });
    if (settings.file) {
      this.file = new RevocationFileSource({
        path: settings.file,
        onLoad: (entries) => this.loadFile(entries),
        onError: (err) => deps.logger.error('revocation file refused; keeping the last good list', { error: err }),
      });
    }
    if (settings.nats) {
      this.feed = new RevocationFeed({
        ...settings.nats,
        syncIntervalMs: settings.syncIntervalMs,
        name: deps.name,
        identity: deps.identity,
        logger: deps.logger,
        onRecord: (subject, jws, storedAtMs) => this.onRecord(subject, jws, storedAtMs),
      });
    }
  }

  get epoch(): number {
    return this.set.epoch;
  }

  /** Ready once every configured source has delivered the current list. */
  get ready(): boolean {
    return this.synced;
  }

  /**
   * Loads the file (fatal when invalid) and reads the NATS stream up to its end, retrying until
   * it can. Resolves only when the list is current, so a sidecar never serves on a partial list.
   */
  async start(): Promise<void> {
    await this.file?.start();
    if (this.feed) {
      for (;;) {
        if (this.stopped) return;
        try {
          await this.feed.start();
          if (this.stopped) return; // stopped while connecting: stop() closed the feed
          break;
        } catch (err) {
          this.deps.logger.warn('revocation list not loaded yet; retrying', { error: err as Error });
          await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
        }
      }
    }
    if (this.stopped) return;
    this.synced = true;
    this.timer = setInterval(() => this.tick(), this.settings.syncIntervalMs);
    this.timer.unref();
  }

  updateIdentity(snapshot: IdentitySnapshot): void {
    this.feed?.updateIdentity(snapshot);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.file?.stop();
    await this.feed?.stop();
  }

  // ---- hot path -----------------------------------------------------------------------------

  /** The entry that revokes anything this request involves, if any. */
  check(request: AuthzRequest, now = Date.now()): RevocationEntry | undefined {
    const set = this.set;
    if (set.size === 0) return undefined;
    const target = resourceAgent(request.resource);
    return (
      set.agent(request.principal, now) ??
      (request.peer === request.principal ? undefined : set.agent(request.peer, now)) ??
      (target === undefined || target === request.principal || target === request.peer ? undefined : set.agent(target, now)) ??
      (request.delegation ? set.delegation(request.delegation, now) : undefined)
    );
  }

  /** By serial or fingerprint (hex, any case, colons allowed). */
  svid(serial: string, fingerprint: string, now = Date.now()): RevocationEntry | undefined {
    if (this.set.size === 0) return undefined;
    return this.set.svid(svidKeys(serial, fingerprint), now);
  }

  agent(id: SpiffeId, now = Date.now()): RevocationEntry | undefined {
    return this.set.agent(id, now);
  }

  /** Why the dev issuer must not (re)issue an SVID for `id`: the agent is revoked (decommissioned). */
  decommissioned(id: SpiffeId): string | undefined {
    const entry = this.agent(id);
    return entry && `the agent is revoked (${entry.kind} ${entry.id}): decommissioned`;
  }

  // ---- freshness ----------------------------------------------------------------------------

  /** Age of the list in seconds: since every source last confirmed it; undefined without sources. */
  ageSeconds(now = Date.now()): number | undefined {
    const syncs = [this.file && (this.file.lastSync ?? this.startedAt), this.feed && (this.feed.lastSync ?? this.startedAt)].filter(
      (t): t is number => t !== undefined,
    );
    if (syncs.length === 0) return undefined;
    return Math.max(0, (now - Math.min(...syncs)) / 1000);
  }

  /** True when failClosedAfter is set and the list is older than it. */
  stale(now = Date.now()): boolean {
    const bound = this.settings.failClosedAfterMs;
    if (bound === undefined) return false;
    const age = this.ageSeconds(now);
    return age !== undefined && age * 1000 > bound;
  }

  // ---- admin --------------------------------------------------------------------------------

  async revoke(input: unknown, by: string): Promise<RevokeOutcome> {
    const now = Date.now();
    let entry: RevocationEntry;
    try {
      const fields = typeof input === 'object' && input !== null ? { ...(input as Record<string, unknown>) } : input;
      if (fields && typeof fields === 'object') {
        // Sigil assigns the id and the time; the caller names the subject and the why.
        for (const key of ['id', 'revokedAt', 'revokedBy']) delete (fields as Record<string, unknown>)[key];
      }
      entry = parseRevocationEntry(fields, { id: randomUUID(), revokedBy: by, now });
    } catch (err) {
      throw new RevocationRefusedError('revocation_invalid', (err as Error).message);
    }
    const record: RevocationRecord = { op: 'revoke', entry };
    this.authorizeOwn(record);
    this.apply(record, 'admin');
    return { entry, propagated: await this.publish(record) };
  }

  async lift(id: string, by: string): Promise<{ entry: RevocationEntry; propagated: boolean }> {
    const entry = this.set.get(id);
    if (!entry || this.fileIds.has(id)) {
      throw new RevocationRefusedError('not_found', this.fileIds.has(id) ? `${id} comes from revocation.file; remove it there` : `no revocation in force with id ${id}`);
    }
    const record: RevocationRecord = { op: 'lift', id, kind: entry.kind, liftedBy: by, liftedAt: Date.now() };
    this.authorizeOwn(record);
    this.apply(record, 'admin');
    return { entry, propagated: await this.publish(record) };
  }

  list(): { epoch: number; ageSeconds: number | undefined; stale: boolean; entries: RevocationEntry[] } {
    return { epoch: this.epoch, ageSeconds: this.ageSeconds(), stale: this.stale(), entries: this.set.entries() };
  }

  /** The status document's revocation section. */
  get status(): unknown {
    return {
      ready: this.synced,
      entries: this.set.size,
      epoch: this.epoch,
      ageSeconds: this.ageSeconds(),
      stale: this.stale(),
      liveWork: this.registry.size,
      sources: {
        file: this.settings.file !== undefined,
        nats: this.feed ? { connected: this.feed.connected, pending: this.pending.length, streamProtected: this.feed.streamProtected } : false,
      },
    };
  }

  /** With NATS, the whole fleet will check that our identity may issue the record: check first. */
  private authorizeOwn(record: RevocationRecord): void {
    if (!this.feed || !this.settings.nats) return;
    const own = this.deps.identity();
    if (!own) throw new RevocationRefusedError('not_authorized', 'no SVID to sign the revocation record with');
    const subject = this.settings.nats.subject;
    const revoked = this.set.agent(own.svid.id, Date.now()) ?? this.svid(own.svid.serial, own.svid.certificates[0]?.fingerprint256 ?? '');
    if (revoked) throw new RevocationRefusedError('not_authorized', `${own.svid.id} is itself revoked (${revoked.kind} ${revoked.id}): every receiver would refuse its records`);
    const decision = this.deps.authorize(own.svid.id, record, subject);
    if (!decision.allowed) {
      throw new RevocationRefusedError('not_authorized', `${own.svid.id} may not issue revocation records (Cedar action revocation.issue on Topic "${subject}": ${decision.reason})`);
    }
  }

  /** Signs (with the SVID current now) and stores a record; false when it has to wait. */
  private async publish(record: RevocationRecord): Promise<boolean> {
    if (!this.feed) return false;
    try {
      await this.signAndStore(record);
      return true;
    } catch (err) {
      if (err instanceof RecordExistsError) return this.alreadyStored(record);
      this.deps.logger.warn('revocation applied here but not yet propagated; retrying', { error: err as Error });
      if (this.pending.length >= MAX_PENDING) {
        this.deps.logger.error('too many revocation records waiting for NATS; the oldest is dropped (it stays applied here)', { max: MAX_PENDING });
        this.pending.shift();
      }
      this.pending.push(record);
      return false;
    }
  }

  /**
   * Signed at the moment it is sent: a record is only valid when the stream stores it shortly
   * after its iat (record.ts MAX_STORE_DELAY_MS), so a record that waited is signed afresh.
   */
  private async signAndStore(record: RevocationRecord): Promise<void> {
    const own = this.deps.identity();
    if (!own || !this.feed || !this.settings.nats) throw new Error('no SVID to sign the record with');
    const signed = signRecord(createRecordSigner(own.svid), this.settings.nats.subject, record);
    // Bounded: an echo older than this many records is handled as a duplicate (harmless).
    if (this.published.size >= PUBLISHED_MEMORY) this.published.clear();
    this.published.add(signed.jws);
    await this.feed.publish(signed.subject, signed.jws);
  }

  /**
   * The stream refused our record because its subject is taken: by an earlier attempt of ours
   * whose answer was lost (fine), or by something else — then the record can never be stored
   * and the fleet will not learn it: said loudly, counted as `blocked`.
   */
  private async alreadyStored(record: RevocationRecord): Promise<boolean> {
    const own = this.deps.identity();
    const subject = recordSubject(this.settings.nats!.subject, record);
    const stored = await this.feed!.stored(subject).catch(() => undefined);
    if (stored !== undefined && own && isSameRecord(stored, record, own.svid.id.toString())) return true;
    this.deps.observeApplied?.('admin', 'blocked');
    this.deps.logger.error('revocation applied here but NOT propagated: the stream holds another message on its subject (check who may publish on it)', { subject });
    return false;
  }

  private tick(): void {
    const gone = this.set.prune(Date.now());
    for (const entry of gone) this.deps.logger.info('revocation expired', { id: entry.id, kind: entry.kind });
    void this.file?.reload();
    if (this.pending.length > 0 && this.feed?.connected && !this.flushing) {
      this.flushing = true;
      void this.flushPending().finally(() => (this.flushing = false));
    }
  }

  private async flushPending(): Promise<void> {
    while (this.pending.length > 0) {
      const next = this.pending[0]!;
      try {
        await this.signAndStore(next);
        this.pending.shift();
      } catch (err) {
        if (!(err instanceof RecordExistsError)) return; // still unreachable: next tick
        this.pending.shift();
        await this.alreadyStored(next);
      }
    }
  }

  private loadFile(entries: RevocationEntry[]): void {
    const next = new Set(entries.map((e) => e.id));
    for (const id of this.fileIds) if (!next.has(id)) this.set.withdraw(id);
    this.fileIds = next;
    for (const entry of entries) {
      const current = this.set.get(entry.id);
      // An edited line (same id, another kind, value or expiry) replaces the entry.
      if (current && (current.kind !== entry.kind || current.value !== entry.value || current.expiresAt !== entry.expiresAt || current.reason !== entry.reason)) {
        this.set.withdraw(entry.id);
      } else if (current) continue;
      this.apply({ op: 'revoke', entry }, 'file');
    }
  }

  private onRecord(subject: string, jws: string, storedAtMs: number): void {
    if (this.published.has(jws)) {
      // Our own record coming back. Receivers refuse it when it was stored too long after its
      // iat — this host's clock is off: say so here, where it can be fixed.
      const iat = Number((JSON.parse(Buffer.from(jws.split('.')[1] ?? '', 'base64url').toString('utf8')) as { iat?: unknown }).iat);
      if (!storedInTime(iat, storedAtMs, this.settings.leewayMs)) {
        this.deps.observeApplied?.('admin', 'clock_skew');
        this.deps.logger.error('our revocation record was not stored within the allowed time of its iat: every receiver refuses it (is this host\'s clock off from the NATS server\'s?)', { subject, iat, storedAt: new Date(storedAtMs).toISOString() });
      }
      return;
    }
    const bundles = this.deps.trustBundles?.() ?? this.deps.identity()?.bundles;
    if (!this.settings.nats) return;
    if (!bundles) {
      // Only before the first SVID (the feed starts after it): nothing to verify with yet.
      this.deps.logger.warn('revocation record not verified: no trust bundles yet', { subject });
      return;
    }
    let verified;
    try {
      verified = verifyRecord(jws, {
        verifier: this.verifier,
        bundles,
        prefix: this.settings.nats.subject,
        subject,
        storedAtMs,
        leewayMs: this.settings.leewayMs,
        isRevoked: (signer: SignerInfo) => this.svid(signer.serial, signer.fingerprint256) !== undefined || this.set.agent(signer.id, Date.now()) !== undefined,
      });
    } catch (err) {
      const e = err instanceof RecordError ? err : new RecordError('envelope_malformed', 'internal_error', (err as Error).message);
      return this.reject(subject, e.code, e.detail);
    }
    // The decision is audited where it is made (decide); only the refusal is counted here.
    const record = verified.record;
    if (record.op === 'lift') {
      // The kind a lift claims is what it was authorized for: it must be the entry's.
      const known = this.set.get(record.id);
      if (known && known.kind !== record.kind) return this.reject(subject, 'subject_mismatch', `lift claims kind ${record.kind}, the entry is ${known.kind}`, verified.signer);
    }
    const decision = this.deps.authorize(verified.signer, verified.record, this.settings.nats.subject);
    if (!decision.allowed) return this.reject(subject, decision.reason, 'revocation.issue not allowed', verified.signer, false);
    const result = this.apply(verified.record, 'nats');
    if (result === 'duplicate') {
      // A record applied before (or whose entry was lifted) published again: a replay.
      this.deps.observeApplied?.('nats', 'duplicate');
      this.deps.auditRejection({ subject, reason: 'replay', detail: 'record already applied or lifted', signer: verified.signer });
      this.deps.logger.warn('revocation record refused', { subject, reason: 'replay', signer: verified.signer.toString() });
    }
  }

  private reject(subject: string, reason: string, detail: string, signer?: SpiffeId, audit = true): void {
    this.deps.observeApplied?.('nats', 'rejected');
    if (audit) this.deps.auditRejection({ subject, reason, detail, ...(signer ? { signer } : {}) });
    this.deps.logger.warn('revocation record refused', { subject, reason, detail, signer: signer?.toString() });
  }

  private apply(record: RevocationRecord, source: RevocationSource): ApplyResult {
    const now = Date.now();
    if (record.op === 'lift') {
      const { outcome, entry } = this.set.lift(record.id, record.kind);
      if (outcome === 'lifted') this.deps.logger.info('revocation lifted', { id: record.id, kind: entry?.kind, by: record.liftedBy, source });
      this.deps.observeApplied?.(source, 'lifted');
      return 'lifted';
    }
    const outcome = this.set.add(record.entry, now);
    if (outcome === 'duplicate' || outcome === 'lifted_before') return 'duplicate';
    if (outcome === 'expired') {
      this.deps.observeApplied?.(source, 'expired');
      return 'expired';
    }
    const entry = record.entry;
    const cut = this.registry.cut(entry, this.set, now);
    for (const kind of ['connection', 'websocket', 'subscription'] as const) if (cut[kind] > 0) this.deps.observeCut?.(kind, cut[kind]);
    // A user's sub and a token id stay out of the logs (they are in the audit trail's scope).
    const value = entry.kind === 'user' || entry.kind === 'token' ? undefined : entry.value;
    this.deps.logger.warn('revoked', { id: entry.id, kind: entry.kind, value, by: entry.revokedBy, source, cut });
    this.deps.observeApplied?.(source, 'applied');
    this.deps.onAdded?.(entry);
    return 'applied';
  }
}
