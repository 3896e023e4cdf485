// The composition root: the only module that knows every component. It builds them from the
// config, wires identity updates into the TLS listeners and owns start/stop order.
import { parseUnsafeTestWeakening, UNSAFE_TEST_WEAKEN_ENV, WEAKENINGS, type Weakening } from './config/unsafe-test-weakening.js';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { AdminServer } from './admin/index.js';
import { BusService } from './bus/service.js';
import { LocalBusApi } from './bus/local-api.js';
import { FrameSigning } from './bus/frames.js';
import { PolicyStore, type AuthzRequest, type CallMeta, type Decision, type ReasonCode } from './authz/index.js';
import { buildDelegation } from './delegation/sidecar.js';
import { ConfigError, type SigilConfig } from './config/index.js';
import { WorkloadApiSvidSource } from './identity/workload-api/index.js';
import { EgressRoutes } from './egress/index.js';
import { createIdentityManager, type IdentityManager, isUsable, type IdentitySnapshot } from './identity/index.js';
import { InboundProxy, OutboundProxy, type HandshakeObservation } from './proxy/index.js';
import type { SpiffeId } from './spiffe/index.js';
import { AuditLog, SigilMetrics, type Logger, type RequestObservation } from './telemetry/index.js';
import { PeerVerifier } from './tls/index.js';
import { Revocations, type LiveWork, type RevocationEntry, type RevocationRecord, type RevocationSettings } from './revocation/index.js';

/** The package version, read once (the build ships package.json beside dist/). */
const SIGIL_VERSION: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

export interface BoundAddresses {
  inbound?: string;
  outbound?: string;
  bus?: string;
  admin: string;
}

export class Sidecar {
  private readonly identity: IdentityManager;
  private readonly policy: PolicyStore;
  private readonly metrics: SigilMetrics;
  /** When the SVID last changed after startup (for /status). */
  private lastRotation: Date | undefined;
  private readonly startedAt = new Date();
  private readonly bundleFingerprints = new Map<string, string>();
  private auditDroppedReported = 0;
  private readonly verifier: PeerVerifier;
  /** SIGIL_UNSAFE_TEST_WEAKEN: checks switched off to prove `sigil probe` detects them. Empty in production. */
  private readonly weakened: ReadonlySet<Weakening>;
  private readonly inbound: InboundProxy | undefined;
  private readonly outbound: OutboundProxy | undefined;
  private readonly egress: EgressRoutes | undefined;
  private readonly bus: BusService | undefined;
  private readonly busApi: LocalBusApi | undefined;
  private readonly admin: AdminServer;
  private readonly audit: AuditLog | undefined;
  private readonly revocations: Revocations;
  private readonly delegation: ReturnType<typeof buildDelegation> | undefined;
  /** The revocation epoch the policy's decision cache was last known clean for. */
  private decisionCacheEpoch = 0;
  private addresses: BoundAddresses | undefined;
  private serving = false;
  /** Set at SIGTERM: /readyz answers 503 while the listeners still accept (shutdown.delay). */
  private draining = false;

  constructor(private readonly config: SigilConfig, private readonly logger: Logger) {
    this.weakened = parseUnsafeTestWeakening(process.env[UNSAFE_TEST_WEAKEN_ENV]);
    // Logged as an error so that no log level hides it.
    for (const w of this.weakened) logger.error('UNSAFE: a security check is switched off for testing; never run this in production', { weakening: w, effect: WEAKENINGS[w], env: UNSAFE_TEST_WEAKEN_ENV });
    this.verifier = new PeerVerifier({ unsafePoolTrustDomains: this.weakened.has('trust-domain-pooling') });
    this.metrics = new SigilMetrics(config.metrics);
    this.audit = config.audit && new AuditLog({ ...config.audit, logger: logger.child({ component: 'audit' }) });
    this.policy = new PolicyStore(config.policy);
    this.revocations = this.buildRevocations(logger.child({ component: 'revocation' }));
    this.verifier.useRevocation({
      epoch: () => this.revocations.epoch,
      isRevoked: (serial, fingerprint) => this.revocations.svid(serial, fingerprint) !== undefined,
    });
    // The dev issuer does not renew the SVID of a revoked (decommissioned) agent.
    this.identity = createIdentityManager(config, (id) => this.revocations.decommissioned(id), logger);
    const envelope = config.bus?.envelope;
    const frames = new FrameSigning({
      identity: () => this.identity.current(),
      ttlSeconds: (envelope?.ttlMs ?? 60_000) / 1000,
      maxTtlSeconds: (envelope?.maxTtlMs ?? 300_000) / 1000,
      leewaySeconds: (envelope?.leewayMs ?? 5_000) / 1000,
      maxBytes: envelope?.maxBytes ?? 1024 * 1024,
      trustEpoch: () => this.revocations.epoch,
      isRevoked: (signer) => this.revocations.svid(signer.serial, signer.fingerprint256) !== undefined,
    });
    const delegation = (this.delegation = config.delegation && buildDelegation(config.delegation, {
      identity: () => this.identity.current(),
      verifier: this.verifier,
      revoked: (request) => {
        const entry = this.revocations.check(request);
        return entry && { kind: entry.kind, id: entry.id };
      },
      live: (work) => this.revocations.registry.register(work),
      revocationEpoch: () => this.revocations.epoch,
      observeHandshake: (h: HandshakeObservation) => this.observeHandshake(h),
      unsafeSkipActorCheck: this.weakened.has('delegation-actor'),
      ...(this.identity.activeSource instanceof WorkloadApiSvidSource ? { actorToken: this.actorTokenFrom(this.identity.activeSource) } : {}),
    }));
    const deps = {
      frames,
      ...(delegation?.gate ? { delegation: delegation.gate } : {}),
      ...(delegation?.exchange ? { exchange: delegation.exchange } : {}),
      refuse: (request: AuthzRequest, reason: ReasonCode, meta?: CallMeta) => this.recordRefusal(request, reason, meta),
      identity: () => this.identity.current(),
      decide: (request: AuthzRequest, meta?: CallMeta) => this.decide(request, meta),
      inspectCalls: () => this.policy.kind.startsWith('cedar'),
      policyVersion: () => this.policy.current().version,
      verifier: this.verifier,
      observe: config.metrics.enabled ? (o: RequestObservation) => this.metrics.observeRequest(o) : () => {},
      observeHandshake: (h: HandshakeObservation) => this.observeHandshake(h),
      live: (work: LiveWork) => this.revocations.registry.register(work),
      revocationEpoch: () => this.revocations.epoch,
    };
    if (config.inbound) {
      this.inbound = new InboundProxy({ ...deps, ...config.inbound, unsafeKeepIncomingIdentityHeaders: this.weakened.has('identity-headers'), logger: logger.child({ component: 'inbound' }) });
    }
    if (config.outbound) {
      if (config.outbound.egress.length > 0) {
        this.egress = new EgressRoutes({
          routes: config.outbound.egress,
          identity: deps.identity,
          decide: deps.decide,
          refuse: deps.refuse,
          ...(delegation && config.delegation ? { delegation: { verifier: delegation.verifier, header: config.delegation.header } } : {}),
          observe: deps.observe,
          live: deps.live,
          revoked: (request) => this.refusedByRevocation(request) !== undefined,
          logger: logger.child({ component: 'egress' }),
        });
      }
      this.outbound = new OutboundProxy({ ...deps, ...config.outbound, ...(this.egress ? { egressRoutes: this.egress } : {}), logger: logger.child({ component: 'outbound' }) });
    }
    if (config.bus) {
      const busLog = logger.child({ component: 'bus' });
      this.bus = new BusService({
        config: config.bus,
        unsafeSkipReplayCheck: this.weakened.has('bus-replay'),
        identity: () => this.identity.current(),
        decide: (request, meta) => this.decide(request, meta),
        observe: (o) => this.metrics.busMessages.inc({ direction: o.direction, result: o.result, reason: o.reason }),
        auditRejection: (r) =>
          this.audit?.recordBusRejection({
            subject: r.subject,
            reason: r.reason,
            detail: r.detail,
            ...(r.signer ? { signer: r.signer.toString() } : {}),
            self: this.identity.current()?.svid.id.toString() ?? 'unknown',
            policyVersion: this.policy.current().version,
          }),
        logger: busLog,
        trustEpoch: () => this.revocations.epoch,
        reservedSubjects: [config.revocation?.nats?.subject ?? 'sigil.revocations'],
        isRevoked: (signer) => this.revocations.svid(signer.serial, signer.fingerprint256) !== undefined,
        ...(delegation ? { delegation: delegation.verifier } : {}),
      });
      this.busApi = new LocalBusApi(this.bus, {
        listen: config.bus.local,
        maxBytes: config.bus.envelope.maxBytes,
        logger: busLog,
        live: (work) => this.revocations.registry.register(work),
        self: () => this.identity.current()?.svid.id,
      });
    }
    this.admin = new AdminServer(config.admin.listen, {
      ready: () => this.isReady(),
      status: () => this.status(),
      reloadPolicy: () => this.policy.reload(),
      revocations: this.revocations,
      metrics: async (openMetrics) => {
        this.refreshScrapeTimeMetrics();
        return { contentType: this.metrics.contentType(openMetrics), body: await this.metrics.exposition(openMetrics) };
      },
    }, config.admin.tokenFile === undefined ? {} : { tokenFile: config.admin.tokenFile, onTokenError: (err) => logger.error('admin token file refused; keeping the last good token', { error: err }) });
    this.wirePolicyEvents(logger.child({ component: 'policy' }));
    this.identity.on('update', (snapshot, cause) => {
      this.inbound?.updateIdentity(snapshot);
      this.outbound?.updateIdentity();
      // While withdrawn (a trust bundle file reloaded meanwhile) nothing may connect with the
      // withdrawn SVID: NATS connections follow when the identity is restored.
      if (this.identity.current()) {
        this.bus?.updateIdentity(snapshot);
        this.revocations.updateIdentity(snapshot);
      }
      this.recordIdentity(snapshot, cause);
    });
    this.identity.on('sourceError', () => this.metrics.svidRotations.inc({ result: 'failure' }));
    this.identity.on('withdrawn', (reason) => this.cutOnWithdrawal(reason));
  }

  /**
   * The identity source took our SVID away (Workload API PermissionDenied): new connections are
   * already refused (no current identity); work in flight under the old identity is cut too,
   * since nothing may keep acting as an identity this workload is no longer entitled to.
   */
  private cutOnWithdrawal(reason: Error): void {
    const now = Date.now();
    const closed = this.revocations.registry.closeAll({
      id: 'identity-withdrawn',
      kind: 'agent',
      value: this.config.identity.kind === 'workloadApi' ? (this.config.identity.spiffeId ?? 'self') : 'self',
      reason: reason.message,
      revokedBy: `identity source ${this.config.identity.kind}`,
      revokedAt: now,
    });
    // The bus's NATS connection presents our SVID: closed until the identity is restored. The
    // revocation feed keeps its open connection, so no revocation is missed meanwhile (records
    // are verified against the bundles, which the withdrawal leaves in place).
    this.bus?.suspend();
    this.metrics.svidRotations.inc({ result: 'withdrawn' });
    this.logger.warn('identity withdrawn: live work cut', { reason: 'svid_unavailable', ...closed });
  }

  private recordIdentity(snapshot: IdentitySnapshot, cause: string): void {
    const m = this.metrics;
    m.svidExpiry.reset();
    m.svidExpiry.set({ spiffe_id: snapshot.svid.id.toString() }, snapshot.svid.notAfter.getTime() / 1000);
    if (cause === 'svid' || cause === 'restored') {
      m.svidRotations.inc({ result: 'success' });
      this.lastRotation = new Date();
    }
    m.bundleAuthorities.reset();
    for (const td of snapshot.bundles.trustDomains()) {
      const authorities = snapshot.bundles.get(td)?.authorities.length ?? 0;
      m.bundleAuthorities.set({ trust_domain: td.name }, authorities);
      const fingerprints = snapshot.bundles.get(td)?.authorities.map((a) => a.fingerprint256).join(',') ?? '';
      if (this.bundleFingerprints.get(td.name) !== fingerprints) {
        this.bundleFingerprints.set(td.name, fingerprints);
        m.bundleUpdates.inc({ trust_domain: td.name });
      }
    }
  }

  /** Gauges read from live state at scrape time rather than kept up to date on the hot path. */
  private refreshScrapeTimeMetrics(): void {
    this.metrics.activeConnections.set({ reporter: 'inbound' }, this.inbound?.connectionCount ?? 0);
    this.metrics.activeConnections.set({ reporter: 'outbound' }, this.outbound?.connectionCount ?? 0);
    this.metrics.setRevocationState(this.revocations.ageSeconds(), this.revocations.set.countsByKind());
    const dropped = this.audit?.dropped ?? 0;
    const counted = this.auditDroppedReported;
    if (dropped > counted) {
      this.metrics.auditDropped.inc(dropped - counted);
      this.auditDroppedReported = dropped;
    }
  }

  /** Loads identity, binds every listener; resolves with the bound addresses. */
  async start(): Promise<BoundAddresses> {
    await this.policy.start();
    this.metrics.setPolicyVersion(this.policy.kind, this.policy.current().version);
    // The admin API comes up first so /healthz answers and /readyz says "not ready" while the
    // identity source is still waiting for its first SVID (Workload API startup).
    const admin = await this.admin.start();
    const snapshot = await this.identity.start();
    // Before any listener: a sidecar never serves on a partial revocation list (/readyz is 503
    // meanwhile).
    await this.revocations.start();
    const inbound = this.inbound ? await this.inbound.start(snapshot) : undefined;
    await this.egress?.start();
    const outbound = this.outbound ? await this.outbound.start() : undefined;
    let bus: AddressInfo | undefined;
    if (this.bus && this.busApi) {
      const caFile = this.config.bus?.nats?.ca;
      // The identity may have rotated or been withdrawn while the revocation list loaded.
      const current = this.identity.current();
      this.bus.start(current ?? snapshot, caFile === undefined ? undefined : readCaFile(caFile));
      if (!current) this.bus.suspend();
      bus = await this.busApi.start();
    }
    this.addresses = {
      admin: formatAddress(admin),
      inbound: inbound && formatAddress(inbound),
      outbound: outbound && formatAddress(outbound),
      bus: bus && formatAddress(bus),
    };
    this.serving = true;
    return this.addresses;
  }

  /** Readiness turns false (load balancers stop sending) while everything keeps serving. */
  beginShutdown(): void {
    this.draining = true;
  }

  /** Stops accepting, lets in-flight requests finish for up to the drain timeout, then closes. */
  async stop(): Promise<void> {
    this.serving = false;
    // Safe on a partly started sidecar: each component's stop is a no-op if it never started.
    const drain = this.config.shutdown.drainTimeoutMs;
    await Promise.all([this.inbound?.stop(drain), this.outbound?.stop(drain), this.busApi?.stop()]);
    this.egress?.stop();
    await this.bus?.stop();
    await this.revocations.stop();
    await this.admin.stop();
    this.identity.stop();
    this.policy.stop();
    await this.audit?.close(); // after the proxies drained: their last decisions are in it
  }

  private observeHandshake(h: HandshakeObservation): void {
    if (!this.config.metrics.enabled) return;
    this.metrics.tlsHandshakes.inc({ reporter: h.reporter, result: h.result, reason: h.reason });
    if (h.seconds !== undefined) this.metrics.tlsHandshakeDuration.observe({ reporter: h.reporter }, h.seconds);
  }

  /** A refusal no policy made (e.g. an invalid delegation token), recorded like a decision. */
  private recordRefusal(request: AuthzRequest, reason: ReasonCode, meta?: CallMeta): void {
    const decision: Decision = { allowed: false, reason, policies: [], wouldDeny: false, policyVersion: this.policy.current().version, request };
    if (this.config.metrics.enabled) this.metrics.authzDecisions.inc({ action: request.action, decision: 'deny', reason });
    this.audit?.record(decision, meta);
  }

  /** Every enforcement point's decision goes through here: evaluate now, then record. */
  private decide(request: AuthzRequest, meta?: CallMeta): Decision {
    const measured = this.config.metrics.enabled;
    const started = measured ? process.hrtime.bigint() : 0n;
    let decision = this.refusedByRevocation(request) ?? this.evaluate(request);
    // Who may revoke is never relaxed by dry-run: recorded (and enforced) as the deny it is.
    if (decision.wouldDeny && request.action === 'revocation.issue') decision = { ...decision, allowed: false, wouldDeny: false };
    if (measured) {
      this.metrics.authzEvaluation.observe(Number(process.hrtime.bigint() - started) / 1e9);
      this.metrics.authzDecisions.inc({
        action: request.action,
        decision: decision.wouldDeny ? 'would_deny' : decision.allowed ? 'allow' : 'deny',
        reason: decision.reason,
      });
    }
    this.audit?.record(decision, meta); // formats and enqueues only; never throws
    if (decision.wouldDeny) {
      this.logger.info('dry-run: would deny', { action: request.action, reason: decision.reason, principal: request.principal.toString(), policies: decision.policies });
    }
    return decision;
  }

  /**
   * Revocation comes before the policy and is enforced in dry-run too: a revoked identity, SVID,
   * task, token or user is refused whatever the policy says. With revocation.failClosedAfter, a
   * list older than that refuses new connections.
   */
  private refusedByRevocation(request: AuthzRequest): Decision | undefined {
    const revocations = this.revocations;
    if (revocations.epoch !== this.decisionCacheEpoch) {
      // Every cache keyed on identity answers is dropped: decisions, verified delegation tokens,
      // exchanged tokens (verified chains key on the epoch themselves).
      this.decisionCacheEpoch = revocations.epoch;
      this.policy.dropCachedDecisions();
      this.delegation?.verifier.clearCache();
      this.delegation?.exchange?.clearCache();
    }
    // Our own agent revoked: nothing is done on its behalf or delivered to it any more. Records
    // are the exception: this sidecar must still learn that its agent was lifted.
    const own = request.action === 'revocation.issue' ? undefined : this.identity.current()?.svid.id;
    const entry = revocations.check(request) ?? (own && revocations.set.size > 0 ? revocations.agent(own) : undefined);
    const base = { allowed: false, policies: [], wouldDeny: false, policyVersion: this.policy.current().version, request };
    if (entry) return { ...base, reason: 'revoked', revocation: { kind: entry.kind, id: entry.id } };
    // New connections, and egress calls (each is a new call on our credential), wait for a fresh list.
    if ((request.action === 'connect' || request.action === 'egress.http') && revocations.stale()) return { ...base, reason: 'revocation_stale' };
    return undefined;
  }

  private buildRevocations(log: Logger): Revocations {
    const r = this.config.revocation;
    const envelope = this.config.bus?.envelope;
    const settings: RevocationSettings = {
      syncIntervalMs: r?.syncIntervalMs ?? 1_000,
      leewayMs: envelope?.leewayMs ?? 5_000,
      maxRecordBytes: envelope?.maxBytes ?? 1024 * 1024,
      ...(r?.file ? { file: r.file } : {}),
      ...(r?.failClosedAfterMs !== undefined ? { failClosedAfterMs: r.failClosedAfterMs } : {}),
    };
    if (r?.nats) {
      const { ca, ...nats } = r.nats;
      settings.nats = { ...nats, ...(ca === undefined ? {} : { caPem: readCaFile(ca, 'revocation.nats.tls.ca') }) };
    }
    const m = this.metrics;
    return new Revocations(settings, {
      identity: () => this.identity.current(),
      trustBundles: () => this.identity.trustBundles(),
      authorize: (signer, record, subject) => this.decide(revocationIssueRequest(signer, record, subject)),
      auditRejection: (rej) =>
        this.audit?.recordBusRejection({
          subject: rej.subject,
          reason: rej.reason,
          detail: rej.detail,
          ...(rej.signer ? { signer: rej.signer.toString() } : {}),
          self: this.identity.current()?.svid.id.toString() ?? 'unknown',
          policyVersion: this.policy.current().version,
          action: 'revocation.issue',
        }),
      observeApplied: (source, result) => m.revocationsApplied.inc({ source, result }),
      observeCut: (kind, count) => m.revocationCuts.inc({ kind }, count),
      onAdded: (entry) => this.onRevoked(entry, log),
      logger: log,
      name: `${this.config.identity.kind === 'dev' ? this.config.identity.spiffeId : this.config.trustDomain} revocations`,
    });
  }

  /** Our own agent revoked: nothing it holds may be used; the dev issuer will not renew it. */
  private onRevoked(entry: RevocationEntry, log: Logger): void {
    const own = this.identity.current();
    if (own && this.revocations.agent(own.svid.id)) {
      log.error('this sidecar\'s own agent is revoked: every call it makes or serves is refused', { id: entry.id, kind: entry.kind });
    }
  }

  /** No enforcement point may see an exception from evaluation: anything unexpected denies. */
  private evaluate(request: AuthzRequest): Decision {
    const authorizer = this.policy.current();
    try {
      return authorizer.authorize(request);
    } catch (err) {
      this.logger.error('authorization failed; denying', { action: request.action, error: err as Error });
      return { allowed: false, reason: 'internal_error', policies: [], wouldDeny: false, policyVersion: authorizer.version, request };
    }
  }

  private wirePolicyEvents(log: Logger): void {
    this.policy.on('reload', (outcome) => {
      this.metrics.policyReloads.inc({ result: outcome.result });
      if (outcome.result === 'success') log.info('policy reloaded', { version: outcome.version, changed: outcome.changed });
      else if (outcome.result === 'failure') {
        log.error('policy reload refused; keeping the last good policy', { version: this.policy.current().version, error: outcome.error });
      }
    });
    // A new policy applies to the very next request of existing connections by construction
    // (every call is evaluated); connections whose `connect` is no longer allowed are cut.
    this.policy.on('change', (authorizer) => {
      this.metrics.setPolicyVersion(authorizer.kind, authorizer.version);
      this.inbound?.reauthorizeConnections();
      this.outbound?.reauthorizeConnections();
    });
    this.policy.on('evaluationError', (errors, request) => {
      log.warn('policy evaluation error (the erroring policy was skipped)', { action: request.action, errors });
    });
  }

  /** Ready means able to serve: listeners up and an SVID we can present right now. */
  private isReady(): boolean {
    const snapshot = this.identity.current();
    return this.serving && !this.draining && this.revocations.ready && snapshot !== undefined && isUsable(snapshot.svid);
  }

  /** Actor tokens are this workload's JWT-SVIDs, and none is handed out while the identity is withdrawn. */
  private actorTokenFrom(source: WorkloadApiSvidSource): (audience: string) => Promise<string> {
    return async (audience) => {
      if (!this.identity.current()) throw new Error('the identity is withdrawn');
      const token = (await source.jwtSvidFor(audience)).token;
      if (!this.identity.current()) throw new Error('the identity was withdrawn meanwhile');
      return token;
    };
  }

  private identitySourceStatus(): unknown {
    const source = this.identity.activeSource;
    const withdrawn = this.identity.withdrawnBecause?.message;
    return {
      kind: this.config.identity.kind,
      ...(source instanceof WorkloadApiSvidSource ? { workloadApi: source.status } : {}),
      ...(withdrawn ? { withdrawn } : {}),
    };
  }

  private status(): unknown {
    const snapshot = this.identity.current();
    return {
      ready: this.isReady(),
      spiffeId: snapshot?.svid.id.toString(),
      svid: snapshot && {
        serial: snapshot.svid.serial,
        notBefore: snapshot.svid.notBefore.toISOString(),
        notAfter: snapshot.svid.notAfter.toISOString(),
        source: this.config.identity.kind,
      },
      identitySource: this.identitySourceStatus(),
      trustDomains: snapshot?.bundles.trustDomains().map((td) => ({
        name: td.name,
        authorities: snapshot.bundles.get(td)?.authorities.length ?? 0,
      })),
      policy: { kind: this.policy.kind, mode: this.config.policy.mode, version: this.policy.current().version },
      lastRotation: this.lastRotation?.toISOString(),
      connections: { inbound: this.inbound?.connectionCount ?? 0, outbound: this.outbound?.connectionCount ?? 0 },
      bus: this.bus?.status,
      ...(this.egress ? { egress: this.egress.status() } : {}),
      revocation: this.revocations.status,
      build: { version: SIGIL_VERSION, node: process.version },
      ...(this.weakened.size > 0 ? { unsafeTestWeakening: [...this.weakened] } : {}),
      startedAt: this.startedAt.toISOString(),
      listeners: this.addresses,
    };
  }
}

/** A NATS server CA file (bus.nats.tls.ca, revocation.nats.tls.ca), read once at startup. */
function readCaFile(path: string, key = 'bus.nats.tls.ca'): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [{ path: key, message: `cannot be read: ${(err as Error).message}` }]);
  }
}

/** `revocation.issue`: may this signer publish this record? */
function revocationIssueRequest(signer: SpiffeId, record: RevocationRecord, subject: string): AuthzRequest {
  const kind = record.op === 'revoke' ? record.entry.kind : record.kind;
  return { action: 'revocation.issue', direction: 'inbound', principal: signer, resource: { type: 'Topic', subject }, peer: signer, revocation: { op: record.op, kind } };
}

export function formatAddress(address: AddressInfo): string {
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}
