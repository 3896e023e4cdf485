// Revocation records over NATS JetStream (docs/revocation.md §3). One stream holds the records
// on `<subject>.<entry id>.<op>` with one message kept per subject, so it is the current list:
// a sidecar that starts late reads it from the first message, then keeps receiving new records
// on the same ordered consumer. A JetStream stream was chosen over a KV bucket because the
// records are already self-describing signed envelopes and the per-subject limit gives the
// same "latest value per key" semantics without a second encoding.
//
// Freshness: every `syncIntervalMs` the stream's last sequence is compared with the last one
// applied; equal means this sidecar has the whole list, and `lastSync` moves forward. While
// NATS is unreachable it does not, and the list's age grows (sigil_revocation_list_age_seconds).
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { DeliverPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType, type ConsumerMessages, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { natsConnectionOptions } from '../bus/nats-transport.js';
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
  logger: Logger;
  /** Called for every record in stream order; never throws back into the feed. */
  onRecord: (subject: string, jws: string) => void;
}

interface Live {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  messages: ConsumerMessages;
}

export class RevocationFeed {
  private live: Live | undefined;
  private applied = 0;
  private lastSyncMs: number | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private serial: string | undefined;
  private caughtUp: (() => void) | undefined;
  private target = 0;

  constructor(private readonly options: RevocationFeedOptions) {}

  /** When the whole list was last known to be applied (epoch ms), if ever. */
  get lastSync(): number | undefined {
    return this.lastSyncMs;
  }

  get connected(): boolean {
    return this.live !== undefined && !this.live.nc.isClosed();
  }

  /**
   * Connects, makes sure the stream exists, and resolves once every record the stream held at
   * that moment has been handed to onRecord. Rejects when NATS cannot be reached; the caller
   * retries (start may be called again).
   */
  async start(snapshot: IdentitySnapshot): Promise<void> {
    this.serial = snapshot.svid.serial;
    const live = await this.open(snapshot, 1);
    this.live = live;
    this.timer ??= setInterval(() => void this.checkSync(), this.options.syncIntervalMs);
    this.timer.unref();
  }

  /** Publishes a signed record and waits for the stream to store it. */
  async publish(subject: string, jws: string): Promise<void> {
    const live = this.live;
    if (!live || live.nc.isClosed()) throw new Error('not connected to NATS');
    await live.js.publish(subject, jws, { timeout: 2_000 });
  }

  /** A new SVID: reconnect with it and continue after the last applied record. */
  updateIdentity(snapshot: IdentitySnapshot): void {
    if (this.stopped || !this.live || snapshot.svid.serial === this.serial) return;
    this.serial = snapshot.svid.serial;
    const old = this.live;
    this.open(snapshot, this.applied + 1).then(
      (live) => {
        if (this.stopped) return void live.nc.close();
        this.live = live;
        old.messages.stop();
        void old.nc.drain().catch(() => undefined);
      },
      (err: Error) => this.options.logger.warn('revocation feed: reconnect with the rotated SVID failed; keeping the current connection', { error: err }),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    const live = this.live;
    this.live = undefined;
    if (live) {
      live.messages.stop();
      await live.nc.drain().catch(() => live.nc.close());
    }
  }

  private async open(snapshot: IdentitySnapshot, fromSeq: number): Promise<Live> {
    const nc = await connect({ ...natsConnectionOptions(this.options.servers, this.options.name, snapshot, this.options.caPem), waitOnFirstConnect: false, maxReconnectAttempts: -1 });
    try {
      const jsm = await jetstreamManager(nc, { timeout: 5_000 });
      const { last, messages: held } = await this.ensureStream(jsm);
      const js = jetstream(nc);
      const consumer = await js.consumers.get(this.options.stream, { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: fromSeq });
      const messages = await consumer.consume();
      this.target = last;
      const caughtUp = this.applied >= last || held === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.caughtUp = resolve));
      void this.pump(messages);
      await caughtUp;
      this.lastSyncMs = Date.now();
      return { nc, js, jsm, messages };
    } catch (err) {
      await nc.close().catch(() => undefined);
      throw err;
    }
  }

  /** The stream's last sequence, creating the stream first where allowed. */
  private async ensureStream(jsm: JetStreamManager): Promise<{ last: number; messages: number }> {
    try {
      const { state } = await jsm.streams.info(this.options.stream);
      return { last: state.last_seq, messages: state.messages };
    } catch (err) {
      if (!this.options.createStream || !/not found/i.test((err as Error).message)) throw err;
    }
    const info = await jsm.streams.add({
      name: this.options.stream,
      subjects: [`${this.options.subject}.*.*`],
      max_msgs_per_subject: 1,
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
    });
    this.options.logger.info('revocation stream created', { stream: this.options.stream, subject: `${this.options.subject}.*.*` });
    return { last: info.state.last_seq, messages: info.state.messages };
  }

  private async pump(messages: ConsumerMessages): Promise<void> {
    try {
      for await (const m of messages) {
        if (m.seq <= this.applied) continue; // already applied on a previous connection
        this.applied = m.seq;
        try {
          this.options.onRecord(m.subject, m.string());
        } catch (err) {
          this.options.logger.error('revocation record handler failed', { error: err as Error });
        }
        // Caught up: at the stream's last sequence as of connecting, or nothing left pending
        // (the last records may have been replaced meanwhile).
        if (this.caughtUp && (this.applied >= this.target || m.info.pending === 0)) {
          this.caughtUp();
          this.caughtUp = undefined;
        }
      }
    } catch (err) {
      if (!this.stopped) this.options.logger.warn('revocation feed consumer ended', { error: err as Error });
    }
  }

  private async checkSync(): Promise<void> {
    const live = this.live;
    if (!live || live.nc.isClosed() || this.stopped) return;
    try {
      const info = await live.jsm.streams.info(this.options.stream);
      if (info.state.last_seq <= this.applied) this.lastSyncMs = Date.now();
    } catch {
      // Unreachable: the list ages; the caller reports it.
    }
  }
}
