// Revocation records over NATS JetStream (docs/revocation.md). One stream holds the records on
// `<subject>.<entry id>.<op>`, one message per subject, so it is the current list: a sidecar
// that starts late reads it from the first message, then keeps receiving new records on the
// same ordered consumer. A JetStream stream was chosen over a KV bucket because the records are
// already self-describing signed envelopes and the per-subject limit gives the same "latest
// value per key" semantics without a second encoding.
//
// The stream is created write-once: a record, once stored, can be neither replaced (discard
// new per subject), deleted nor purged — so whoever may publish on the subjects can add junk
// (refused by every receiver) but cannot erase a revocation for the sidecars that start later.
//
// Freshness: every `syncIntervalMs` the stream is asked for its state. The same stream (by its
// creation time) at a last sequence this feed has handled means the whole list is applied, and
// `lastSync` moves forward. A stream that was deleted and created again is read from its start;
// a consumer that ended is opened again. While NATS is unreachable nothing moves and the list's
// age grows (sigil_revocation_list_age_seconds).
import type { NatsConnection } from '@nats-io/transport-node';
import type { ConsumerMessages, JetStreamClient, JetStreamManager, StreamInfo } from '@nats-io/jetstream';
import { natsJetStream, natsTransport } from '../bus/nats-modules.js';
import { natsConnectionOptions, natsIdentityKey } from '../bus/nats-transport.js';
import type { IdentitySnapshot } from '../identity/index.js';
import type { Logger } from '../telemetry/index.js';

export interface RevocationFeedOptions {
  servers: string[];
  caPem?: string;
  /** Records are on `<subject>.<id>.<op>`. */
  subject: string;
  stream: string;
  /** Create the stream when it does not exist (needs JetStream API permissions). */
  createStream: boolean;
  syncIntervalMs: number;
  name: string;
  /** The current identity: every (re)connection presents the SVID current at that moment. */
  identity: () => IdentitySnapshot | undefined;
  logger: Logger;
  /** Called for every record in stream order with the time the stream stored it; never throws back. */
  onRecord: (subject: string, jws: string, storedAtMs: number) => void;
}

/** The stream already holds a record on this subject (records are write-once). */
export class RecordExistsError extends Error {
  readonly code = 'record_exists';
}

interface Live {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  messages: ConsumerMessages;
}

const CATCH_UP_TIMEOUT_MS = 15_000;

export class RevocationFeed {
  private live: Live | undefined;
  /** Last stream sequence handed to onRecord, in the stream created at `streamCreated`. */
  private applied = 0;
  private streamCreated: string | undefined;
  private lastSyncMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** natsIdentityKey of the live connection. */
  private identityKey: string | undefined;
  private reopening: Promise<void> | undefined;
  /** Set when the consumer ended or a reopen failed: the next check tries again. */
  private needsReopen = false;
  private protectedStream = true;

  constructor(private readonly options: RevocationFeedOptions) {}

  /** When the whole list was last known to be applied (epoch ms), if ever. */
  get lastSync(): number | undefined {
    return this.lastSyncMs;
  }

  get connected(): boolean {
    return this.live !== undefined && !this.live.nc.isClosed();
  }

  /** Whether the stream refuses replacing, deleting and purging records (see the header). */
  get streamProtected(): boolean {
    return this.protectedStream;
  }

  /**
   * Connects, makes sure the stream exists, and resolves once every record the stream held at
   * that moment has been handed to onRecord. Rejects when that cannot be done (NATS down, no
   * stream, catch-up stalled); the caller retries.
   */
  async start(): Promise<void> {
    const snapshot = this.options.identity();
    if (!snapshot) throw new Error('no SVID to connect to NATS with');
    const live = await this.open(snapshot);
    if (this.stopped) {
      await close(live); // stop() ran while this was connecting
      return;
    }
    this.live = live;
    this.identityKey = natsIdentityKey(snapshot, this.options.caPem);
    this.timer ??= setInterval(() => void this.checkSync(), this.options.syncIntervalMs);
    this.timer.unref();
  }

  /** Publishes a signed record and waits for the stream to store it. */
  async publish(subject: string, jws: string): Promise<void> {
    const live = this.live;
    if (!live || live.nc.isClosed()) throw new Error('not connected to NATS');
    try {
      await live.js.publish(subject, jws, { timeout: 2_000 });
    } catch (err) {
      if (/maximum messages per subject exceeded/i.test((err as Error).message)) {
        throw new RecordExistsError(`the stream already holds a record on ${subject}`);
      }
      throw err;
    }
  }

  /** What the stream holds on `subject` (the last message), if anything. */
  async stored(subject: string): Promise<string | undefined> {
    const live = this.live;
    if (!live || live.nc.isClosed()) return undefined;
    const m = await live.jsm.streams.getMessage(this.options.stream, { last_by_subj: subject }).catch(() => null);
    return m ? m.string() : undefined;
  }

  /** A new SVID or trust bundles: reconnect with them and continue after the last handled record. */
  updateIdentity(snapshot: IdentitySnapshot): void {
    if (this.stopped || !this.live) return;
    if (natsIdentityKey(snapshot, this.options.caPem) === this.identityKey && !this.needsReopen) return;
    void this.replace('rotated SVID or trust bundles');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const live = this.live;
    this.live = undefined;
    if (live) await close(live);
  }

  /** Opens a new connection and consumer (after the last handled record) and drops the old. */
  private replace(why: string): Promise<void> {
    const snapshot = this.options.identity();
    if (!snapshot) {
      // Withdrawn: no new connection may present it. Tried again when the identity is back.
      this.needsReopen = true;
      this.options.logger.warn('revocation feed not reopened: this sidecar has no identity right now', { why });
      return Promise.resolve();
    }
    this.reopening ??= this.open(snapshot)
      .then(
        async (live) => {
          if (this.stopped) return void (await close(live));
          const old = this.live;
          this.live = live;
          this.identityKey = natsIdentityKey(snapshot, this.options.caPem);
          this.needsReopen = false;
          if (old) await close(old);
          this.options.logger.info('revocation feed reopened', { why });
        },
        (err: Error) => {
          this.needsReopen = true;
          this.options.logger.warn('revocation feed: reopening failed; retrying at the next check', { why, error: err });
        },
      )
      .finally(() => (this.reopening = undefined));
    return this.reopening;
  }

  private async open(snapshot: IdentitySnapshot): Promise<Live> {
    const nc = await natsTransport().connect({ ...natsConnectionOptions(this.options.servers, this.options.name, snapshot, this.options.caPem), waitOnFirstConnect: false });
    try {
      const jsm = await natsJetStream().jetstreamManager(nc, { timeout: 5_000 });
      const info = await this.ensureStream(jsm);
      this.adoptStream(info);
      const js = natsJetStream().jetstream(nc);
      const consumer = await js.consumers.get(this.options.stream, { deliver_policy: natsJetStream().DeliverPolicy.StartSequence, opt_start_seq: this.applied + 1 });
      const messages = await consumer.consume();
      const target = info.state.last_seq;
      let caughtUp: () => void = () => {};
      const done = this.applied >= target || info.state.messages === 0 ? Promise.resolve() : new Promise<void>((resolve) => (caughtUp = resolve));
      void this.pump(messages, target, () => caughtUp());
      const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`revocation stream not read to its end within ${CATCH_UP_TIMEOUT_MS / 1000}s`)), CATCH_UP_TIMEOUT_MS).unref());
      try {
        await Promise.race([done, timeout]);
      } catch (err) {
        messages.stop();
        throw err;
      }
      this.lastSyncMs = Date.now();
      return { nc, js, jsm, messages };
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
  }

  /** A stream that is not the one read so far (deleted and created again) is read from its start. */
  private adoptStream(info: StreamInfo): void {
    if (this.streamCreated !== undefined && (info.created !== this.streamCreated || info.state.last_seq < this.applied)) {
      this.options.logger.warn('the revocation stream was created again; reading it from the start', { stream: this.options.stream });
      this.applied = 0;
    }
    this.streamCreated = info.created;
    this.protectedStream = true;
    this.checkProtection(info);
  }

  /** Logs (once per change) a stream that lets stored records be replaced, deleted or purged. */
  private checkProtection(info: StreamInfo): void {
    const c = info.config;
    const wasProtected = this.protectedStream;
    // Write-once, and nothing that drops records by age or count (junk could fill a bounded
    // stream; an aged-out revoke is gone for sidecars that start later).
    this.protectedStream =
      c.discard === natsJetStream().DiscardPolicy.New &&
      c.discard_new_per_subject === true &&
      c.deny_delete === true &&
      c.deny_purge === true &&
      c.max_msgs_per_subject === 1 &&
      !(c.max_age > 0) &&
      !(c.max_msgs > 0) &&
      !(c.max_bytes > 0);
    if (!this.protectedStream && wasProtected) {
      this.options.logger.error('the revocation stream lets stored records be replaced, deleted or purged: whoever can publish on its subjects can erase revocations for sidecars that start later', {
        stream: this.options.stream,
        fix: 'recreate it with discard: new, discard_new_per_subject, deny_delete, deny_purge, max_msgs_per_subject: 1 and no max_age/max_msgs/max_bytes (docs/revocation.md)',
      });
    }
  }

  /** The stream's state, creating the stream first where allowed. */
  private async ensureStream(jsm: JetStreamManager): Promise<StreamInfo> {
    try {
      return await jsm.streams.info(this.options.stream);
    } catch (err) {
      if (!/not found/i.test((err as Error).message)) throw err;
      if (!this.options.createStream) throw new Error(`the revocation stream ${this.options.stream} does not exist and revocation.nats.createStream is false`);
    }
    const info = await jsm.streams.add({
      name: this.options.stream,
      subjects: [`${this.options.subject}.*.*`],
      max_msgs_per_subject: 1,
      discard: natsJetStream().DiscardPolicy.New,
      discard_new_per_subject: true,
      deny_delete: true,
      deny_purge: true,
      retention: natsJetStream().RetentionPolicy.Limits,
      storage: natsJetStream().StorageType.File,
    });
    this.options.logger.info('revocation stream created', { stream: this.options.stream, subject: `${this.options.subject}.*.*` });
    return info;
  }

  private async pump(messages: ConsumerMessages, target: number, caughtUp: () => void): Promise<void> {
    try {
      for await (const m of messages) {
        if (m.seq <= this.applied) continue; // already handled on a previous connection
        this.applied = m.seq;
        try {
          this.options.onRecord(m.subject, m.string(), Number(BigInt(m.info.timestampNanos) / 1_000_000n));
        } catch (err) {
          this.options.logger.error('revocation record handler failed', { error: err as Error });
        }
        // Caught up: at the stream's last sequence as of connecting, or nothing left pending.
        if (this.applied >= target || m.info.pending === 0) caughtUp();
      }
    } catch (err) {
      if (!this.stopped) this.options.logger.warn('revocation feed consumer failed', { error: err as Error });
    }
    // A consumer that ends while its connection is current is opened again.
    // Reopened by the next check (paced by syncInterval: a consumer that keeps ending does not
    // turn into a reconnect storm).
    if (!this.stopped) this.needsReopen = true;
  }

  private async checkSync(): Promise<void> {
    const live = this.live;
    if (!live || this.stopped || this.reopening) return;
    // A reopen that failed (consumer ended, SVID rotated) is tried again here.
    const own = this.options.identity();
    const current = own && natsIdentityKey(own, this.options.caPem);
    if (this.needsReopen || (current !== undefined && current !== this.identityKey)) {
      await this.replace(this.needsReopen ? 'retry' : 'rotated SVID (retry)');
      return;
    }
    if (live.nc.isClosed()) {
      this.needsReopen = true;
      return;
    }
    try {
      const info = await live.jsm.streams.info(this.options.stream);
      if (info.created !== this.streamCreated || info.state.last_seq < this.applied) {
        await this.replace('stream created again');
        return;
      }
      this.checkProtection(info);
      if (info.state.last_seq <= this.applied) this.lastSyncMs = Date.now();
    } catch (err) {
      // Unreachable: the list ages; the caller reports it. Gone (deleted): reopen, which
      // creates it again where allowed — an ordered consumer waits silently for a stream that
      // no longer exists.
      if (/not found/i.test((err as Error).message)) this.needsReopen = true;
    }
  }
}

async function close(live: Live): Promise<void> {
  live.messages.stop();
  await live.nc.drain().catch(() => live.nc.close().catch(() => undefined));
}
