// The NATS side of the bus: one TLS connection to nats-server, authenticated with the current
// SVID as client certificate. It moves opaque envelope strings; signing, verification and
// authorization happen in BusService before and after it.
//
// Rotation: a new SVID opens a second connection with it, subscribes everything there, and only
// then drains the old one, so no message is lost in between. While both are subscribed a
// message can arrive twice; exact duplicates (same signature) are dropped during that window
// instead of being reported as replays.
//
// Outages: nats.js reconnects by itself (jittered, forever). Publishes made while no
// connection is up are held in a bounded queue and sent on reconnect; past the bound they are
// refused with `bus_buffer_full`, so the agent always learns that a publish was not taken.
// Delivery itself is core NATS: at most once. A held message sent on reconnect reaches only the
// subscribers that are connected at that moment.
import type { ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import type { ConnectionOptions, NatsConnection, Subscription } from '@nats-io/transport-node';
import { natsTransport } from './nats-modules.js';
import type { IdentitySnapshot } from '../identity/index.js';
import { CIPHERS, MIN_TLS_VERSION } from '../tls/index.js';
import type { Logger } from '../telemetry/index.js';

export class BusTransportError extends Error {
  constructor(
    readonly code: 'bus_unavailable' | 'bus_buffer_full' | 'envelope_too_large',
    message: string,
  ) {
    super(message);
  }
}

export interface NatsTransportOptions {
  servers: string[];
  /** PEM of the CA(s) for the server certificate; default: every authority in the bundles. */
  caPem?: string;
  bufferMessages: number;
  /** Client name shown by the server's monitoring (the sidecar's SPIFFE ID). */
  name: string;
  logger: Logger;
}

/**
 * What a NATS connection was made with: our SVID and, unless a CA file is configured, the trust
 * bundles the server is verified against. A change of either means a new connection (a CA the
 * Workload API stopped sending must stop being trusted for the server too).
 */
export function natsIdentityKey(snapshot: IdentitySnapshot, caPem?: string): string {
  const cas = caPem === undefined ? snapshot.bundles.allAuthorities().map((c) => c.fingerprint256).sort().join(',') : 'file';
  return `${snapshot.svid.serial}|${cas}`;
}

/**
 * How every Sigil NATS client connects: TLS with the current SVID as client certificate, the
 * server verified against `caPem` (default: every authority in the bundles), reconnecting
 * forever with jitter.
 */
export function natsConnectionOptions(servers: string[], name: string, snapshot: IdentitySnapshot, caPem?: string): ConnectionOptions {
  // nats.js hands these options to node:tls connect() as they are; its type names only a few.
  // The same floor and suites as every other mTLS connection Sigil makes (tls/context.ts).
  const tls: NonNullable<ConnectionOptions['tls']> & Pick<TlsConnectionOptions, 'minVersion' | 'ciphers'> = {
    cert: snapshot.svid.certChainPem,
    key: snapshot.svid.privateKeyPem,
    ca: caPem ?? snapshot.bundles.allAuthorities().map((c) => c.toString()).join('\n'),
    minVersion: MIN_TLS_VERSION,
    ciphers: CIPHERS,
  };
  return {
    servers,
    name,
    tls,
    reconnect: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    reconnectJitter: 250,
    reconnectJitterTLS: 500,
    waitOnFirstConnect: true,
    ignoreClusterUpdates: true,
    pingInterval: 10_000,
    maxPingOut: 3,
  };
}

export type MessageHandler = (subject: string, payload: string) => void;

interface PatternState {
  handlers: Set<MessageHandler>;
  /** The NATS subscription on each live connection (two during a handover). */
  subs: Map<NatsConnection, Subscription>;
}

const HANDOVER_DEDUPE_MS = 5_000;
/** Beyond this many messages in one handover, later duplicates are left to the replay window. */
const HANDOVER_DEDUPE_LIMIT = 100_000;

export class NatsTransport {
  private current: NatsConnection | undefined;
  private connecting: Promise<NatsConnection> | undefined;
  private readonly patterns = new Map<string, PatternState>();
  private readonly queue: Array<{ subject: string; payload: string }> = [];
  /** natsIdentityKey of the connection in use ('' while suspended: the next update reconnects). */
  private identityKey: string | undefined;
  private connected = false;
  private stopped = false;
  /** Signatures seen while two connections are subscribed (see the header comment). */
  private handoverSeen: Set<string> | undefined;
  private handoverTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: NatsTransportOptions) {}

  /** Starts connecting; resolves at once (publishes are queued until connected). */
  start(snapshot: IdentitySnapshot): void {
    this.identityKey = natsIdentityKey(snapshot, this.options.caPem);
    const attempt = this.open(snapshot);
    this.connecting = attempt;
    attempt.then(
      (nc) => this.adopt(nc, attempt).catch((err: Error) => this.options.logger.warn('NATS connection could not be set up', { error: err })),
      (err: Error) => {
        if (!this.stopped) this.options.logger.error('NATS connection failed', { error: err });
      },
    );
  }

  get isConnected(): boolean {
    return this.connected;
  }

  get queued(): number {
    return this.queue.length;
  }

  publish(subject: string, payload: string): void {
    if (this.stopped) throw new BusTransportError('bus_unavailable', 'the bus is shutting down');
    const nc = this.current;
    if (nc && this.connected && !nc.isClosed()) {
      const max = nc.info?.max_payload;
      if (max !== undefined && Buffer.byteLength(payload) > max) {
        throw new BusTransportError('envelope_too_large', `the signed message is over the broker's max_payload (${max} bytes)`);
      }
      try {
        nc.publish(subject, payload);
      } catch (err) {
        throw new BusTransportError('bus_unavailable', `the broker client refused the message: ${(err as Error).message}`);
      }
      return;
    }
    if (this.options.bufferMessages === 0) throw new BusTransportError('bus_unavailable', 'not connected to NATS');
    if (this.queue.length >= this.options.bufferMessages) {
      throw new BusTransportError('bus_buffer_full', `not connected to NATS and ${this.queue.length} messages are already waiting`);
    }
    this.queue.push({ subject, payload });
  }

  /** Adds a handler for a (valid) subscription subject; returns its removal. */
  subscribe(pattern: string, handler: MessageHandler): () => void {
    let state = this.patterns.get(pattern);
    if (!state) {
      state = { handlers: new Set(), subs: new Map() };
      this.patterns.set(pattern, state);
      if (this.current) this.subscribeOn(this.current, pattern, state);
    }
    state.handlers.add(handler);
    return () => {
      const s = this.patterns.get(pattern);
      if (!s) return;
      s.handlers.delete(handler);
      if (s.handlers.size === 0) {
        for (const sub of s.subs.values()) sub.unsubscribe();
        this.patterns.delete(pattern);
      }
    };
  }

  /** Waits until everything handed to NATS so far has reached the server (or `timeoutMs`). */
  async flush(timeoutMs = 2_000): Promise<boolean> {
    const nc = this.current;
    if (!nc || !this.connected) return false;
    const timeout = new Promise<false>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref());
    return Promise.race([nc.flush().then(() => true, () => false), timeout]);
  }

  /** A new SVID or trust bundles: move to a connection made with them, without a gap. */
  updateIdentity(snapshot: IdentitySnapshot): void {
    const key = natsIdentityKey(snapshot, this.options.caPem);
    if (this.stopped || key === this.identityKey) return;
    const rotated = !this.identityKey?.startsWith(`${snapshot.svid.serial}|`);
    this.identityKey = key;
    const next = this.open(snapshot);
    this.connecting = next;
    next.then(
      async (nc) => {
        if (this.stopped || this.connecting !== next) return void (await nc.close().catch(() => undefined));
        const old = this.current;
        this.beginHandover();
        if (!(await this.adopt(nc, next))) return;
        if (old && old !== nc) {
          this.options.logger.info(rotated ? 'NATS connection moved to the rotated SVID' : 'NATS connection moved to the new trust bundles', { serial: snapshot.svid.serial });
          await old.drain().catch(() => undefined);
        }
      },
      (err: Error) => this.options.logger.warn('NATS reconnect with the rotated SVID or bundles failed; keeping the current connection', { error: err }),
    ).catch((err: Error) => this.options.logger.warn('NATS connection could not be set up', { error: err }));
  }

  /**
   * Our identity was withdrawn: close the connection, so the withdrawn SVID is not presented
   * again on a reconnect. The next updateIdentity (the identity restored) connects anew.
   */
  suspend(): void {
    if (this.stopped) return;
    this.identityKey = '';
    // A connection still being made is closed when it comes up (adopt() checks `connecting`).
    this.connecting = undefined;
    const nc = this.current;
    this.current = undefined;
    this.connected = false;
    // Signed under the withdrawn identity: not sent later on its behalf.
    if (this.queue.length > 0) this.options.logger.warn('NATS publishes queued before the identity was withdrawn were dropped', { count: this.queue.length });
    this.queue.length = 0;
    if (nc && !nc.isClosed()) void nc.close().catch(() => undefined);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.handoverTimer) clearTimeout(this.handoverTimer);
    const nc = this.current;
    this.current = undefined;
    this.connected = false;
    if (this.queue.length > 0) this.options.logger.warn('NATS publishes still queued at shutdown were not sent', { count: this.queue.length });
    this.queue.length = 0;
    if (nc && !nc.isClosed()) await nc.drain().catch(() => nc.close());
    // A connection still being established is closed once it is up (see adopt()).
  }

  private open(snapshot: IdentitySnapshot): Promise<NatsConnection> {
    return natsTransport().connect(natsConnectionOptions(this.options.servers, this.options.name, snapshot, this.options.caPem));
  }

  /**
   * Makes `nc` the connection in use, unless it is no longer wanted (stopped, suspended, or a
   * newer attempt began) before or while its subscriptions were set up: then it is closed.
   * Returns whether it was adopted.
   */
  private async adopt(nc: NatsConnection, attempt: Promise<NatsConnection>): Promise<boolean> {
    const unwanted = (): boolean => this.stopped || this.connecting !== attempt;
    if (unwanted()) {
      await nc.close().catch(() => undefined);
      return false;
    }
    for (const [pattern, state] of this.patterns) this.subscribeOn(nc, pattern, state);
    // The server has registered the subscriptions once a flush round-trips.
    await nc.flush().catch(() => undefined);
    if (unwanted()) {
      for (const state of this.patterns.values()) state.subs.delete(nc);
      await nc.close().catch(() => undefined);
      return false;
    }
    this.current = nc;
    // Subjects subscribed while the flush was in flight went to the previous connection (or to
    // none, at startup): add them here, or they would die with the old connection.
    for (const [pattern, state] of this.patterns) if (!state.subs.has(nc)) this.subscribeOn(nc, pattern, state);
    this.connected = true;
    this.options.logger.info('connected to NATS', { server: nc.getServer() });
    this.watch(nc);
    this.sendQueued();
    return true;
  }

  private subscribeOn(nc: NatsConnection, pattern: string, state: PatternState): void {
    const sub = nc.subscribe(pattern, {
      callback: (err, msg) => {
        if (err) return;
        const payload = msg.string();
        if (this.handoverSeen) {
          const signature = payload.slice(payload.lastIndexOf('.') + 1);
          const key = `${pattern}\u0000${signature}`;
          if (this.handoverSeen.has(key)) return;
          if (this.handoverSeen.size < HANDOVER_DEDUPE_LIMIT) this.handoverSeen.add(key);
        }
        // A handler must never throw into nats.js: its reader loop would stop for every subject.
        for (const handler of state.handlers) {
          try {
            handler(msg.subject, payload);
          } catch (err) {
            this.options.logger.error('bus message handler failed', { pattern, error: err as Error });
          }
        }
      },
    });
    state.subs.set(nc, sub);
    void nc.closed().then(() => state.subs.delete(nc));
  }

  private watch(nc: NatsConnection): void {
    void (async () => {
      for await (const s of nc.status()) {
        if (nc !== this.current) return;
        if (s.type === 'disconnect') {
          this.connected = false;
          this.options.logger.warn('NATS connection lost; reconnecting', { server: s.server });
        } else if (s.type === 'reconnect') {
          this.connected = true;
          this.options.logger.info('NATS reconnected', { server: s.server });
          this.sendQueued();
        }
      }
    })().catch(() => undefined);
    void nc.closed().then(() => {
      if (nc === this.current) this.connected = false;
    });
  }

  private sendQueued(): void {
    const nc = this.current;
    while (nc && this.connected && this.queue.length > 0) {
      const m = this.queue.shift()!;
      try {
        nc.publish(m.subject, m.payload);
      } catch (err) {
        this.options.logger.error('a queued publish was refused by the broker client and is lost', { subject: m.subject, error: err as Error });
      }
    }
  }

  private beginHandover(): void {
    this.handoverSeen = new Set();
    if (this.handoverTimer) clearTimeout(this.handoverTimer);
    this.handoverTimer = setTimeout(() => {
      this.handoverSeen = undefined;
    }, HANDOVER_DEDUPE_MS);
    this.handoverTimer.unref();
  }
}
