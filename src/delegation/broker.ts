// `sigil broker`: the RFC 8693 token-exchange broker. It holds its own SVID (like a sidecar),
// serves HTTPS that requires mTLS with an SVID verified per SPIFFE (the peer is the requesting
// actor), and issues RFC 9068 delegation tokens signed with the newest key of its key folder.
//
//   POST /token                          RFC 8693 token exchange (broker-exchange.ts)
//   GET  /jwks, /.well-known/jwks.json   the published signing keys (also written to `jwksOut`)
//   admin (loopback): /healthz /readyz /status /metrics, POST /v1/policy/reload,
//                     POST/GET /v1/revocations, DELETE /v1/revocations/<id>
//
// The kill switch (src/revocation) as a sidecar enforces it: a revoked SVID fails the mTLS peer
// check; a revoked actor, chain actor, user, task or token id gets `invalid_grant` before the
// policy is asked. The list comes from the admin API, `revocation.file` and `revocation.nats`
// (records authorized by this broker's policy, Cedar `revocation.issue`).
//
// Tokens are never logged; every answer carries `Cache-Control: no-store`.
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { AdminServer } from '../admin/index.js';
import type { AuthzRequest, Decision } from '../authz/index.js';
import { ConfigError } from '../config/index.js';
import { createIdentityManager, type IdentityManager, isUsable, type IdentitySnapshot } from '../identity/index.js';
import { listen } from '../proxy/index.js';
import type { SpiffeId } from '../spiffe/index.js';
import type { Logger } from '../telemetry/index.js';
import { ALPN_PROTOCOLS, PeerVerificationError, PeerVerifier, serverContextOptions, type VerifiedPeer } from '../tls/index.js';
import type { BrokerConfig } from './broker-config.js';
import { TokenEndpointError } from './broker-errors.js';
import { ExchangeRefusal, TokenExchanger, type ExchangeRecord, type RevocationQuery } from './broker-exchange.js';
import { BrokerKeys } from './broker-keys.js';
import { BrokerMetrics } from '../telemetry/index.js';
import { BrokerPolicy } from './broker-policy.js';
import { JWKSet, jwksFromFile, jwksFromUrl, loadJwksFile, type KeySource, type UserTokenIssuer } from './index.js';
import { Revocations, svidKeys, type RevocationEntry, type RevocationRecord, type RevocationSettings } from '../revocation/index.js';

/** Largest token request body accepted. */
export const MAX_BODY_BYTES = 64 * 1024;

export interface BrokerAddresses {
  listen: string;
  admin: string;
  spiffeId: string;
  issuer: string;
  jwksOut?: string;
}

export class Broker {
  private readonly identity: IdentityManager;
  private readonly policy: BrokerPolicy;
  private readonly keys: BrokerKeys;
  private readonly metrics = new BrokerMetrics();
  private readonly verifier = new PeerVerifier();
  private readonly admin: AdminServer;
  private readonly exchanger: TokenExchanger;
  private readonly revocations: Revocations;
  private readonly peers = new WeakMap<TLSSocket, VerifiedPeer>();
  private readonly sockets = new Set<Socket>();
  private server: HttpsServer | undefined;
  private serving = false;
  /** Set at SIGTERM: /readyz answers 503 while the listeners still accept (shutdown.delay). */
  private draining = false;
  private addresses: BrokerAddresses | undefined;
  private readonly startedAt = new Date();
  private readonly users: UserTokenIssuer[];
  private brokerSet: { generation: number; set: JWKSet } | undefined;

  constructor(private readonly config: BrokerConfig, private readonly logger: Logger) {
    this.policy = new BrokerPolicy(config.policy.cedar);
    this.revocations = this.buildRevocations(logger.child({ component: 'revocation' }));
    // As for a sidecar: the dev issuer does not renew the SVID of a revoked (decommissioned) agent.
    this.identity = createIdentityManager(config, (id) => this.revocations.decommissioned(id), logger);
    // A revoked SVID fails the peer check (handshake and every request); cached verifications
    // do not survive a change of the list.
    this.verifier.useRevocation({
      epoch: () => this.revocations.epoch,
      isRevoked: (serial, fingerprint) => this.revocations.svid(serial, fingerprint) !== undefined,
    });
    this.keys = new BrokerKeys({
      dir: config.signingKeys,
      activationDelayMs: config.keyActivationDelayMs,
      ...(config.jwksOut === undefined ? {} : { jwksOut: config.jwksOut }),
      logger: logger.child({ component: 'keys' }),
      onChange: (count) => {
        this.metrics.signingKeys.set(count);
        if (this.serving) this.metrics.keyRotations.inc();
      },
    });
    this.users = config.subjectIssuers.map((s) => ({
      issuer: s.issuer,
      audience: s.audience,
      keys: s.jwks !== undefined ? jwksFromFile(s.jwks) : jwksFromUrl(s.jwksUri!),
    }));
    const brokerKeys: KeySource = { get: () => this.brokerJwks(), refresh: () => this.brokerJwks() };
    this.exchanger = new TokenExchanger({
      issuer: config.issuer,
      maxTtlSeconds: Math.floor(config.maxTtlMs / 1000),
      maxDepth: config.maxDepth,
      leewaySeconds: Math.floor(config.leewayMs / 1000),
      users: this.users,
      brokerKeys,
      signer: () => this.keys.signer(),
      policy: this.policy,
      scopes: config.scopes,
      knowsTrustDomain: (td) => this.identity.current()?.bundles.get(td) !== undefined,
      revoked: (q) => this.revokedEntry(q),
    });
    this.admin = new AdminServer(config.admin.listen, {
      ready: () => this.isReady(),
      status: () => this.status(),
      reloadPolicy: () => this.policy.reload(),
      revocations: this.revocations,
      metrics: async () => {
        this.metrics.revocation.setState(this.revocations.ageSeconds(), this.revocations.set.countsByKind());
        return { contentType: this.metrics.registry.contentType, body: await this.metrics.registry.metrics() };
      },
    }, config.admin.tokenFile === undefined ? {} : { tokenFile: config.admin.tokenFile, onTokenError: (err) => logger.error('admin token file refused; keeping the last good token', { error: err }) });
    const policyLog = logger.child({ component: 'policy' });
    this.policy.on('reload', (outcome) => {
      this.metrics.policyReloads.inc({ result: outcome.result });
      if (outcome.result === 'success') {
        this.metrics.setPolicyVersion(outcome.version);
        policyLog.info('policy reloaded', { version: outcome.version, changed: outcome.changed });
      } else if (outcome.result === 'failure') {
        policyLog.error('policy reload refused; keeping the last good policy', { version: this.policy.version, error: outcome.error });
      }
    });
    this.identity.on('update', (snapshot) => {
      this.server?.setSecureContext(serverContextOptions(snapshot));
      this.revocations.updateIdentity(snapshot);
    });
    // Withdrawn by the Workload API: new connections are refused (no current identity) and open
    // ones are cut; nothing is minted under an identity the broker no longer holds.
    this.identity.on('withdrawn', (reason) => {
      this.revocations.registry.closeAll({
        id: 'identity-withdrawn',
        kind: 'agent',
        value: 'self',
        reason: reason.message,
        revokedBy: `identity source ${this.config.identity.kind}`,
        revokedAt: Date.now(),
      });
      for (const socket of this.sockets) socket.destroy();
    });
  }

  private buildRevocations(log: Logger): Revocations {
    const r = this.config.revocation;
    // As a sidecar without a bus: the envelope defaults for record leeway and size.
    const settings: RevocationSettings = {
      syncIntervalMs: r?.syncIntervalMs ?? 1_000,
      leewayMs: 5_000,
      maxRecordBytes: 1024 * 1024,
      ...(r?.file ? { file: r.file } : {}),
      ...(r?.failClosedAfterMs !== undefined ? { failClosedAfterMs: r.failClosedAfterMs } : {}),
    };
    if (r?.nats) {
      const { ca, ...nats } = r.nats;
      settings.nats = { ...nats, ...(ca === undefined ? {} : { caPem: readCaFile(ca, 'revocation.nats.tls.ca') }) };
    }
    const applied = this.metrics.revocation.applied;
    const cuts = this.metrics.revocation.cuts;
    const identity = this.config.identity;
    return new Revocations(settings, {
      identity: () => this.identity.current(),
      trustBundles: () => this.identity.trustBundles(),
      authorize: (signer, record, subject) => this.authorizeRecord(signer, record, subject, log),
      // No audit log at the broker: Revocations logs every refused record itself.
      auditRejection: () => {},
      observeApplied: (source, result) => applied.inc({ source, result }),
      observeCut: (kind, count) => cuts.inc({ kind }, count),
      onAdded: (entry) => this.onRevoked(entry, log),
      logger: log,
      name: `sigil broker ${identity.kind === 'dev' ? identity.spiffeId : this.config.trustDomain} revocations`,
    });
  }

  /** Cedar `revocation.issue` with the broker's policy file, as the Decision Revocations expects. */
  private authorizeRecord(signer: SpiffeId, record: RevocationRecord, subject: string, log: Logger): Decision {
    const op = record.op;
    // A lift carries the kind of the entry it lifts (checked against the entry where known).
    const kind = op === 'revoke' ? record.entry.kind : record.kind;
    const request: AuthzRequest = { action: 'revocation.issue', direction: 'inbound', principal: signer, resource: { type: 'Topic', subject }, peer: signer, revocation: { op, kind } };
    const d = this.policy.authorizeRevocation(signer, subject, op, kind);
    if (d.evaluationError) log.warn('policy evaluation error (the erroring policy was skipped)', { action: 'revocation.issue', errors: d.evaluationError });
    return { allowed: d.allowed, reason: d.allowed ? 'allowed' : 'policy_denied', policies: d.policies, wouldDeny: false, policyVersion: d.policyVersion, request };
  }

  /** Our own agent revoked: say so loudly (tokens it issues are refused by every sidecar). */
  private onRevoked(entry: RevocationEntry, log: Logger): void {
    const own = this.identity.current();
    if (own && this.revocations.agent(own.svid.id)) {
      log.error('this broker\'s own agent is revoked: sidecars refuse the tokens it issues', { id: entry.id, kind: entry.kind });
    }
  }

  /** The entry revoking anything an exchange involves (checked before the policy). */
  private revokedEntry(q: RevocationQuery): { kind: string; id: string } | undefined {
    const set = this.revocations.set;
    if (set.size === 0) return undefined;
    const now = Date.now();
    let hit: RevocationEntry | undefined = set.agent(q.actor, now);
    for (const actor of q.actors) hit ??= set.agentByName(actor, now);
    hit ??= set.byValue('user', q.sub, now);
    if (q.task !== undefined) hit ??= set.byValue('task', q.task, now);
    if (q.jti !== undefined) hit ??= set.byValue('token', q.jti, now);
    return hit && { kind: hit.kind, id: hit.id };
  }

  async start(): Promise<BrokerAddresses> {
    // Everything that can be wrong with the files is reported before anything listens.
    for (const s of this.config.subjectIssuers) {
      if (s.jwks === undefined) continue;
      try {
        loadJwksFile(s.jwks);
      } catch (err) {
        throw new Error(`subjectIssuers (${s.issuer}): ${(err as Error).message}`);
      }
    }
    const loaded = await this.policy.start();
    this.metrics.setPolicyVersion(loaded.version);
    if (!loaded.mentionsExchange) {
      this.logger.warn('the broker policy has no permit for delegation.exchange: every exchange will be refused', { policy: this.config.policy.cedar });
    }
    if (this.config.revocation?.nats && !loaded.mentionsRevocation) {
      this.logger.warn('the broker policy has no permit for revocation.issue: every revocation record from NATS will be refused', { policy: this.config.policy.cedar });
    }
    await this.keys.start();
    // The admin API first: /healthz answers and /readyz says "not ready" while the identity
    // source waits for its first SVID (Workload API).
    const admin = await this.admin.start();
    const snapshot = await this.identity.start();
    // Before the token endpoint listens: never mint on a partial revocation list (/readyz is 503
    // meanwhile; the admin API already takes revocations).
    await this.revocations.start();
    const bound = await this.startServer(snapshot);
    this.serving = true;
    this.addresses = {
      listen: formatAddress(bound),
      admin: formatAddress(admin),
      spiffeId: snapshot.svid.id.toString(),
      issuer: this.config.issuer,
      ...(this.config.jwksOut === undefined ? {} : { jwksOut: this.config.jwksOut }),
    };
    return this.addresses;
  }

  /** Readiness turns false (load balancers stop sending) while everything keeps serving. */
  beginShutdown(): void {
    this.draining = true;
  }

  async stop(): Promise<void> {
    this.serving = false;
    const server = this.server;
    if (server) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          for (const s of this.sockets) s.destroy();
        }, this.config.shutdown.drainTimeoutMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      });
    }
    await this.revocations.stop();
    await this.admin.stop();
    this.keys.stop();
    this.policy.stop();
    this.identity.stop();
  }

  private async startServer(snapshot: IdentitySnapshot): Promise<AddressInfo> {
    const server = createHttpsServer({
      ...serverContextOptions(snapshot),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ALPN_PROTOCOLS,
      headersTimeout: 10_000,
      requestTimeout: 30_000,
    });
    this.server = server;
    server.on('connection', (socket: Socket) => {
      const own = this.identity.current();
      if (!own || !isUsable(own.svid)) {
        this.logger.warn('refusing connection: no usable SVID', { reason: 'svid_unavailable' });
        socket.destroy();
        return;
      }
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    // Before the HTTP parser: a peer that fails SPIFFE verification never has a byte read.
    server.prependListener('secureConnection', (socket: TLSSocket) => {
      let peer: VerifiedPeer;
      try {
        const own = this.identity.current();
        if (!own) throw new PeerVerificationError('peer_untrusted', 'svid_unavailable', 'the broker has no SVID right now');
        peer = this.verifier.verifySocket(socket, own.bundles);
      } catch (err) {
        const detail = err instanceof PeerVerificationError ? err.detail : 'internal_error';
        this.logger.info('peer refused', { reason: 'peer_untrusted', detail, remote: socket.remoteAddress });
        socket.destroy();
        return;
      }
      // revocation.failClosedAfter: no new connection while the list is older than that.
      if (this.revocations.stale()) {
        this.logger.warn('peer refused', { reason: 'revocation_stale', peer: peer.id.toString(), remote: socket.remoteAddress });
        socket.destroy();
        return;
      }
      this.peers.set(socket, peer);
      // A revocation of the peer's agent or SVID closes its open (keep-alive) connection.
      const unregister = this.revocations.registry.register({
        kind: 'connection',
        agents: [peer.id],
        svid: svidKeys(peer.serial, peer.leafHash),
        close: () => socket.destroy(),
      });
      socket.once('close', unregister);
    });
    server.on('tlsClientError', (err, socket) => {
      this.logger.debug('TLS handshake failed', { error: err, remote: socket.remoteAddress });
    });
    server.on('request', (req: IncomingMessage, res: ServerResponse) => void this.onRequest(req, res));
    return listen(server, this.config.listen);
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const socket = req.socket as TLSSocket;
    // Verified again per request (cached): the peer's SVID may have expired, or trust changed.
    let peer: VerifiedPeer;
    try {
      const snapshot = this.identity.current();
      if (!snapshot) throw new Error('the broker has no SVID right now');
      peer = this.verifier.verifySocket(socket, snapshot.bundles);
    } catch {
      res.setHeader('connection', 'close');
      return send(res, 401, new TokenEndpointError('invalid_client', 'the client certificate is not a valid SVID').body());
    }
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/jwks' || path === '/.well-known/jwks.json') {
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'method_not_allowed' }, { allow: 'GET, HEAD' });
      req.resume();
      return send(res, 200, this.keys.jwks(), { 'content-type': 'application/jwk-set+json' });
    }
    if (path !== '/token') {
      req.resume();
      return send(res, 404, { error: 'not_found' });
    }
    if (req.method !== 'POST') {
      req.resume();
      return send(res, 405, new TokenEndpointError('invalid_request', 'the token endpoint only accepts POST').body(), { allow: 'POST' });
    }
    const started = process.hrtime.bigint();
    let body: string;
    try {
      body = await readForm(req);
    } catch (err) {
      const error = err instanceof TokenEndpointError ? err : new TokenEndpointError('invalid_request', 'could not read the request body');
      this.recordRefusal(error, { peer: peer.id.toString() }, started);
      if (error.reason === 'body_too_large') res.setHeader('connection', 'close');
      return send(res, error.status, error.body());
    }
    try {
      const { response, record } = await this.exchanger.exchange(peer.id, body);
      this.metrics.exchanges.inc({ result: 'issued', error: '', reason: 'ok' });
      this.metrics.issuedDepth.inc({ chain_depth: String(record.depth ?? 0) });
      this.metrics.exchangeDuration.observe(seconds(started));
      this.logger.info('token issued', { ...record });
      return send(res, 200, response);
    } catch (err) {
      if (err instanceof ExchangeRefusal) {
        this.recordRefusal(err.error, err.record, started);
        return send(res, err.error.status, err.error.body());
      }
      this.logger.error('token exchange failed', { peer: peer.id.toString(), error: err as Error });
      const error = new TokenEndpointError('server_error', 'the broker could not complete the exchange');
      this.recordRefusal(error, { peer: peer.id.toString() }, started);
      return send(res, 500, error.body());
    }
  }

  private recordRefusal(error: TokenEndpointError, record: ExchangeRecord, started: bigint): void {
    this.metrics.exchanges.inc({ result: 'refused', error: error.error, reason: error.reason });
    this.metrics.exchangeDuration.observe(seconds(started));
    this.logger.info('token exchange refused', { error: error.error, reason: error.reason, description: error.description, ...record });
  }

  /** The broker's own JWKS as a key set for chained subject tokens, rebuilt when keys change. */
  private brokerJwks(): JWKSet {
    const generation = this.keys.generation;
    if (this.brokerSet?.generation !== generation) this.brokerSet = { generation, set: new JWKSet(this.keys.jwks().keys) };
    return this.brokerSet.set;
  }

  private isReady(): boolean {
    const snapshot = this.identity.current();
    return this.serving && !this.draining && this.revocations.ready && snapshot !== undefined && isUsable(snapshot.svid);
  }

  private status(): unknown {
    const snapshot = this.identity.current();
    return {
      ready: this.isReady(),
      spiffeId: snapshot?.svid.id.toString(),
      svid: snapshot && { serial: snapshot.svid.serial, notAfter: snapshot.svid.notAfter.toISOString(), source: this.config.identity.kind },
      trustDomains: snapshot?.bundles.trustDomains().map((td) => td.name),
      issuer: this.config.issuer,
      signingKeys: this.serving ? this.keys.status() : undefined,
      subjectIssuers: this.users.map((u) => ({ issuer: u.issuer, audience: u.audience, ...(u.keys.lastError ? { lastError: u.keys.lastError } : {}) })),
      policy: { version: this.policy.version },
      limits: { maxTtlSeconds: Math.floor(this.config.maxTtlMs / 1000), maxDepth: this.config.maxDepth },
      revocation: this.revocations.status,
      listeners: this.addresses,
      startedAt: this.startedAt.toISOString(),
    };
  }
}

/** The form body, or a TokenEndpointError for a wrong content type or an oversized body. */
function readForm(req: IncomingMessage): Promise<string> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') {
    req.resume();
    return Promise.reject(new TokenEndpointError('invalid_request', 'the request body must be application/x-www-form-urlencoded', 'content_type'));
  }
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) {
    req.resume();
    return Promise.reject(new TokenEndpointError('invalid_request', `the request body is larger than ${MAX_BODY_BYTES} bytes`, 'body_too_large'));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        failed = true;
        reject(new TokenEndpointError('invalid_request', `the request body is larger than ${MAX_BODY_BYTES} bytes`, 'body_too_large'));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', (err) => {
      if (!failed) reject(err);
    });
  });
}

/** JSON answer; RFC 6749 §5.1: no caching of anything the token endpoint says. */
function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'cache-control': 'no-store',
    pragma: 'no-cache',
    'content-length': Buffer.byteLength(payload),
    ...headers,
  });
  res.end(payload);
}

function seconds(started: bigint): number {
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/** A NATS server CA file (revocation.nats.tls.ca), read once at startup. */
function readCaFile(path: string, key: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, [{ path: key, message: `cannot be read: ${(err as Error).message}` }]);
  }
}

function formatAddress(address: AddressInfo): string {
  return address.family === 'IPv6' ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}
