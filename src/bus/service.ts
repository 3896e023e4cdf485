// The signed bus as the sidecar runs it: the local agent publishes plain data, the sidecar
// authorizes (`bus.publish`), signs it with the current SVID and hands the envelope to NATS;
// an envelope arriving from NATS is verified (signature, x5c chain against the signer's own
// trust domain, claims, replay), authorized (`bus.deliver`) and only then handed to the local
// subscribers, with the verified sender. Every outcome is counted and refusals are audited.
import type { AuthzRequest, CallMeta, Decision, DelegationContext, ReasonCode } from '../authz/index.js';
import { DelegationError, type DelegationVerifier } from '../delegation/index.js';
import type { BusConfig } from '../config/index.js';
import type { IdentitySnapshot } from '../identity/index.js';
import type { SpiffeId } from '../spiffe/index.js';
import type { Logger } from '../telemetry/index.js';
import { createEnvelopeSigner, EnvelopeError, EnvelopeVerifier, ReplayWindow, type EnvelopeSigner, type SignerInfo, type VerifiedEnvelope } from './envelope/index.js';
import { BusTransportError, NatsTransport } from './nats-transport.js';
import { publishSubjectProblem, subscriptionProblem } from './subjects.js';

/** What the local agent asks to publish. */
export interface PublishRequest {
  subject: string;
  data?: unknown;
  bytes?: Uint8Array;
  audience?: string[];
  /** A delegation token the agent publishes under (sent as the envelope's `dlg`). */
  delegation?: string;
}

export interface Published {
  subject: string;
  jti: string;
  exp: number;
}

/** A message as handed to the local agent: verified sender and data, never the envelope. */
export interface DeliveredMessage {
  subject: string;
  from: string;
  jti: string;
  iat: number;
  exp: number;
  audience?: string[];
  /** The verified delegation the message was sent under. */
  delegation?: DelegationContext;
  data?: unknown;
  bytes?: Buffer;
}

/** A publish the sidecar refused; `status` is the HTTP status the local API answers with. */
export class BusRefusal extends Error {
  constructor(
    readonly reason: ReasonCode,
    readonly status: number,
    message: string,
    readonly decision?: Decision,
  ) {
    super(message);
  }
}

export interface BusObservation {
  direction: 'outbound' | 'inbound';
  result: 'success' | 'rejected' | 'failed';
  reason: ReasonCode;
}

/** A delivery refused before policy (bad envelope); the audit line's inputs. */
export interface BusRejection {
  subject: string;
  reason: ReasonCode;
  detail: string;
  /** The verified signer, when verification got that far. */
  signer?: SpiffeId;
}

export interface BusServiceOptions {
  config: BusConfig;
  identity: () => IdentitySnapshot | undefined;
  decide: (request: AuthzRequest, meta?: CallMeta) => Decision;
  observe: (o: BusObservation) => void;
  auditRejection: (r: BusRejection) => void;
  /** Bumped by revocation changes; verified signer chains are not reused across a change. */
  trustEpoch?: () => number;
  /** The signer's SVID is revoked (checked on every message, cached chain or not): `svid_revoked`. */
  isRevoked?: (signer: SignerInfo) => boolean;
  /**
   * Subject prefixes agents may not publish on (the revocation records' subject): the records'
   * own `typ` already keeps bus messages from passing as records; this keeps them out of the
   * revocation stream altogether.
   */
  reservedSubjects?: string[];
  /** Verifies `dlg` delegation tokens (actor = the message signer); without it they are refused. */
  delegation?: DelegationVerifier;
  /** UNSAFE, tests of `sigil probe` only (SIGIL_UNSAFE_TEST_WEAKEN=bus-replay): deliver replays. */
  unsafeSkipReplayCheck?: boolean;
  logger: Logger;
}

/** Distinct subscription subjects at once (each keeps its own replay window). */
export const MAX_PATTERNS = 256;

/** JSON nesting the local API re-serializes for the agent. */
export const MAX_DATA_DEPTH = 64;

/** Whether `value` nests objects/arrays deeper than `limit` (stops at the first such path). */
export function tooDeep(value: unknown, limit: number): boolean {
  if (typeof value !== 'object' || value === null) return false;
  if (limit === 0) return true;
  for (const v of Array.isArray(value) ? value : Object.values(value)) if (tooDeep(v, limit - 1)) return true;
  return false;
}

export class BusService {
  private readonly verifier: EnvelopeVerifier;
  private signer: EnvelopeSigner | undefined;
  private signerSerial: string | undefined;
  private transport: NatsTransport | undefined;
  /**
   * One transport subscription and one replay window per subscription subject: NATS hands a
   * message to every matching subscription, so the same envelope legitimately arrives once per
   * subject it matches (and is delivered to every local subscriber of that subject).
   */
  private readonly subscriptions = new Map<string, { delivers: Set<(m: DeliveredMessage) => void>; remove: () => void }>();
  /** Replay windows by subject, kept past the last unsubscribe (see windowFor). */
  private readonly windows = new Map<string, { window: ReplayWindow; releasedAt?: number }>();

  constructor(private readonly options: BusServiceOptions) {
    const e = options.config.envelope;
    this.verifier = new EnvelopeVerifier({ maxBytes: e.maxBytes, leewaySeconds: e.leewayMs / 1000, maxTtlSeconds: e.maxTtlMs / 1000 });
  }

  start(snapshot: IdentitySnapshot, caPem: string | undefined): void {
    this.useSigner(snapshot);
    const nats = this.options.config.nats;
    if (!nats) return;
    this.transport = new NatsTransport({
      servers: nats.servers,
      ...(caPem === undefined ? {} : { caPem }),
      bufferMessages: nats.bufferMessages,
      name: `sigil ${snapshot.svid.id.toString()}`,
      logger: this.options.logger.child({ component: 'nats' }),
    });
    this.transport.start(snapshot);
  }

  get status(): { nats: 'connected' | 'disconnected' | 'disabled'; queued: number; subscriptions: number } {
    if (!this.transport) return { nats: 'disabled', queued: 0, subscriptions: this.subscriptions.size };
    return { nats: this.transport.isConnected ? 'connected' : 'disconnected', queued: this.transport.queued, subscriptions: this.subscriptions.size };
  }

  updateIdentity(snapshot: IdentitySnapshot): void {
    this.useSigner(snapshot);
    this.transport?.updateIdentity(snapshot);
  }

  /** Our identity was withdrawn: the NATS connection (which presents it) is closed until restored. */
  suspend(): void {
    this.transport?.suspend();
  }

  /** Authorizes, signs and sends; throws BusRefusal. */
  publish(request: PublishRequest, meta?: CallMeta): Published {
    const problem = publishSubjectProblem(request.subject);
    if (problem) return this.refuse('bad_request', 400, `subject: ${problem}`);
    const reserved = this.options.reservedSubjects?.find((p) => request.subject === p || request.subject.startsWith(`${p}.`));
    if (reserved) return this.refuse('bad_request', 400, `subject: ${reserved}.> is reserved for revocation records`);
    const own = this.options.identity();
    if (!own || !this.signer) return this.refuse('svid_unavailable', 503, 'no SVID to sign with');
    const decision = this.options.decide(
      { action: 'bus.publish', direction: 'outbound', principal: own.svid.id, resource: { type: 'Topic', subject: request.subject }, peer: own.svid.id },
      meta,
    );
    if (!decision.allowed) return this.refuse(decision.reason, 403, `publishing to ${request.subject} is not allowed`, decision);
    if (!this.transport) return this.refuse('bus_unavailable', 503, 'no message bus is configured (bus.nats)');
    let signed;
    try {
      signed = this.signer.sign({
        subject: request.subject,
        ...(request.bytes === undefined ? { data: request.data ?? null } : { bytes: request.bytes }),
        ...(request.audience === undefined ? {} : { audience: request.audience }),
        ...(request.delegation === undefined ? {} : { delegation: request.delegation }),
        ttlSeconds: this.options.config.envelope.ttlMs / 1000,
      });
    } catch (err) {
      const reason = err instanceof EnvelopeError ? err.code : 'internal_error';
      if (reason === 'svid_unavailable') return this.refuse('svid_unavailable', 503, (err as Error).message);
      return this.refuse(reason === 'envelope_too_large' ? 'envelope_too_large' : 'bad_request', reason === 'envelope_too_large' ? 413 : 400, (err as Error).message);
    }
    if (signed.jws.length > this.options.config.envelope.maxBytes) {
      return this.refuse('envelope_too_large', 413, `the signed message is ${signed.jws.length} bytes, over bus.envelope.maxBytes`);
    }
    try {
      this.transport.publish(request.subject, signed.jws);
    } catch (err) {
      const e = err instanceof BusTransportError ? err : new BusTransportError('bus_unavailable', `the broker client refused the message: ${(err as Error).message}`);
      this.options.observe({ direction: 'outbound', result: 'failed', reason: e.code });
      throw new BusRefusal(e.code, e.code === 'envelope_too_large' ? 413 : 503, e.message);
    }
    this.options.observe({ direction: 'outbound', result: 'success', reason: 'allowed' });
    return { subject: request.subject, jti: signed.jti, exp: signed.exp };
  }

  /**
   * Hands every verified, authorized message on `pattern` to `deliver`; returns the removal.
   * Local subscribers of the same subject share one transport subscription: each message is
   * verified once (one replay-window entry) and then handed to all of them.
   */
  subscribe(pattern: string, deliver: (m: DeliveredMessage) => void): () => void {
    const problem = subscriptionProblem(pattern);
    if (problem) throw new BusRefusal('bad_request', 400, `subject: ${problem}`);
    const transport = this.transport;
    if (!transport) throw new BusRefusal('bus_unavailable', 503, 'no message bus is configured (bus.nats)');
    let entry = this.subscriptions.get(pattern);
    if (!entry) {
      if (this.subscriptions.size >= MAX_PATTERNS) throw new BusRefusal('bad_request', 400, `at most ${MAX_PATTERNS} distinct subscription subjects`);
      const window = this.windowFor(pattern);
      // Core NATS delivers only what is published after a subscription exists, so an envelope
      // signed before it (beyond the clock leeway) is a recording: a replay that a fresh window
      // — a new subject, or any subject after a restart — would not remember.
      // `iat` is whole seconds: compare against a whole second too, or a leeway under 1 s would
      // refuse messages signed in the same second the subscription was made.
      const since = Math.floor((Date.now() - this.options.config.envelope.leewayMs) / 1000) * 1000;
      const delivers = new Set<(m: DeliveredMessage) => void>();
      const fanOut = (subject: string, message: DeliveredMessage | undefined): void => {
        if (!message) return;
        for (const d of [...delivers]) {
          try {
            d(message);
          } catch (err) {
            this.options.logger.error('delivering a bus message to a local subscriber failed', { subject, error: err as Error });
          }
        }
      };
      // Delegated messages need an asynchronous token check. While one is pending, later
      // messages queue behind it (order is kept); otherwise each is handled at once.
      let queue: Promise<void> | undefined;
      const remove = transport.subscribe(pattern, (subject, payload) => {
        const step = (): void | Promise<void> => {
          const received = this.receive(subject, payload, window, since);
          if (received instanceof Promise) return received.then((m) => fanOut(subject, m));
          fanOut(subject, received);
        };
        const pending = queue ? queue.then(step) : step();
        if (!pending) return;
        const tail: Promise<void> = pending.catch(() => undefined).then(() => {
          if (queue === tail) queue = undefined;
        });
        queue = tail;
      });
      entry = { delivers, remove };
      this.subscriptions.set(pattern, entry);
    }
    const own = entry;
    // A distinct function per call, so the same callback subscribed twice is two subscribers.
    const handler = (m: DeliveredMessage): void => deliver(m);
    own.delivers.add(handler);
    return () => {
      if (!own.delivers.delete(handler) || own.delivers.size > 0) return;
      own.remove();
      if (this.subscriptions.get(pattern) === own) this.subscriptions.delete(pattern);
      const w = this.windows.get(pattern);
      if (w) w.releasedAt = Date.now();
    };
  }

  /**
   * The replay window of a subscription subject. It outlives the subscription by the longest
   * envelope lifetime: an agent that unsubscribes and subscribes again (a reconnect) must not
   * get a fresh window in which captured envelopes could be replayed to it.
   */
  private windowFor(pattern: string): ReplayWindow {
    const now = Date.now();
    const e = this.options.config.envelope;
    const keep = e.maxTtlMs + e.leewayMs;
    for (const [p, w] of this.windows) if (w.releasedAt !== undefined && now - w.releasedAt > keep) this.windows.delete(p);
    let w = this.windows.get(pattern);
    if (!w) {
      if (this.windows.size >= 2 * MAX_PATTERNS) throw new BusRefusal('bad_request', 400, 'too many recently used subscription subjects; retry later');
      w = { window: new ReplayWindow({ maxEntries: e.replayWindowEntries }) };
      this.windows.set(pattern, w);
    }
    delete w.releasedAt;
    return w.window;
  }

  /** Waits until what was published so far reached the broker. */
  flush(timeoutMs?: number): Promise<boolean> {
    return this.transport?.flush(timeoutMs) ?? Promise.resolve(false);
  }

  async stop(): Promise<void> {
    await this.transport?.stop();
  }

  /**
   * Verify, then authorize; undefined when the message must not be delivered. Synchronous
   * unless the message is delegated (its token is verified first).
   */
  private receive(subject: string, payload: string, replay: ReplayWindow, since: number): DeliveredMessage | undefined | Promise<DeliveredMessage | undefined> {
    const own = this.options.identity();
    if (!own) return this.reject(subject, 'svid_unavailable', 'no own identity yet');
    let verified: VerifiedEnvelope;
    try {
      // No replay window here: a message id is remembered only once the message is delivered
      // (below), so refused messages — wrong subject, policy — cannot fill the window.
      verified = this.verifier.verify(payload, {
        bundles: own.bundles,
        self: own.svid.id,
        ...(this.options.trustEpoch ? { trustEpoch: this.options.trustEpoch() } : {}),
        ...(this.options.isRevoked ? { isRevoked: this.options.isRevoked } : {}),
      });
    } catch (err) {
      if (err instanceof EnvelopeError) return this.reject(subject, err.code, err.detail);
      this.options.logger.error('envelope verification failed unexpectedly', { error: err as Error });
      return this.reject(subject, 'internal_error', 'verification error');
    }
    // The subject is routing data the signer did not necessarily choose: the signed one must match.
    if (verified.subject !== subject) return this.reject(subject, 'subject_mismatch', `signed for ${verified.subject}`, verified.signer.id);
    if (verified.delegation !== undefined) {
      const delegation = this.options.delegation;
      if (!delegation) return this.reject(subject, 'delegation_invalid', 'delegated message, but this sidecar has no delegation configured', verified.signer.id);
      // The same checks as an inbound request, with the signer as the acting agent.
      return delegation.verify(verified.delegation, { audience: own.svid.id.toString(), actor: verified.signer.id.toString() }).then(
        (d) => this.authorizeDelivery(subject, verified, replay, since, d.context),
        (err: unknown) => this.reject(subject, err instanceof DelegationError ? err.code : 'delegation_invalid', err instanceof DelegationError ? err.detail : 'verification_error', verified.signer.id),
      );
    }
    return this.authorizeDelivery(subject, verified, replay, since, undefined);
  }

  private authorizeDelivery(subject: string, verified: VerifiedEnvelope, replay: ReplayWindow, since: number, delegation: DelegationContext | undefined): DeliveredMessage | undefined {
    // The signer's SVID again: a delegated message waited for its token's verification, and a
    // revocation may have come in meanwhile (agent-level ones are in the decision below).
    if (delegation && this.options.isRevoked?.(verified.signer)) return this.reject(subject, 'svid_revoked', 'revoked', verified.signer.id);
    // The agent gets the data re-serialized as JSON; a structure too deep for that is refused here.
    if (verified.data !== undefined && tooDeep(verified.data, MAX_DATA_DEPTH)) {
      return this.reject(subject, 'envelope_malformed', `data nested deeper than ${MAX_DATA_DEPTH} levels`, verified.signer.id);
    }
    const decision = this.options.decide({
      action: 'bus.deliver',
      direction: 'inbound',
      principal: verified.signer.id,
      resource: { type: 'Topic', subject },
      peer: verified.signer.id,
      ...(delegation ? { delegation } : {}),
    });
    if (!decision.allowed) {
      this.options.observe({ direction: 'inbound', result: 'rejected', reason: decision.reason });
      this.options.logger.info('bus message not delivered: policy', { subject, from: verified.signer.id.toString(), reason: decision.reason });
      return undefined;
    }
    if (verified.iat * 1000 < since && !this.options.unsafeSkipReplayCheck) return this.reject(subject, 'replay', 'signed_before_subscription', verified.signer.id);
    const retainUntil = verified.exp * 1000 + this.options.config.envelope.leewayMs;
    const seen = this.options.unsafeSkipReplayCheck ? 'recorded' : replay.checkAndRecord(verified.signer.id.toString(), verified.jti, retainUntil, Date.now());
    if (seen === 'seen') return this.reject(subject, 'replay', 'seen', verified.signer.id);
    if (seen === 'full') return this.reject(subject, 'replay', 'window_full', verified.signer.id);
    this.options.observe({ direction: 'inbound', result: 'success', reason: 'allowed' });
    const message: DeliveredMessage = { subject, from: verified.signer.id.toString(), jti: verified.jti, iat: verified.iat, exp: verified.exp };
    if (verified.audience !== undefined) message.audience = verified.audience;
    if (delegation) message.delegation = delegation;
    if (verified.bytes !== undefined) message.bytes = verified.bytes;
    else message.data = verified.data;
    return message;
  }

  private reject(subject: string, reason: ReasonCode, detail: string, signer?: SpiffeId): undefined {
    this.options.observe({ direction: 'inbound', result: 'rejected', reason });
    this.options.auditRejection({ subject, reason, detail, ...(signer ? { signer } : {}) });
    this.options.logger.info('bus message rejected', { subject, reason, detail, ...(signer ? { from: signer.toString() } : {}) });
    return undefined;
  }

  private refuse(reason: ReasonCode, status: number, message: string, decision?: Decision): never {
    this.options.observe({ direction: 'outbound', result: 'rejected', reason });
    throw new BusRefusal(reason, status, message, decision);
  }

  private useSigner(snapshot: IdentitySnapshot): void {
    if (snapshot.svid.serial === this.signerSerial) return;
    this.signer = createEnvelopeSigner(snapshot.svid, { defaultTtlSeconds: this.options.config.envelope.ttlMs / 1000 });
    this.signerSerial = snapshot.svid.serial;
  }
}
