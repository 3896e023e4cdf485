// The inbound side: terminates mutual TLS from other sidecars, verifies the peer's SVID per
// trust domain, authorizes the connection and then every request, sets identity headers from
// verified material only, and proxies to the local agent.
import { Agent as HttpAgent, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { Readable, type Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import httpProxy from 'http-proxy';
import { agentResource, type AuthzRequest, type CallMeta, type Decide, type Decision, type DelegationContext, type HttpContext, type ReasonCode } from '../authz/index.js';
import type { HostPort } from '../config/index.js';
import { isUsable, type IdentitySnapshot } from '../identity/index.js';
import type { BundleSet } from '../spiffe/index.js';
import type { Logger, RequestObservation } from '../telemetry/index.js';
import { ALPN_PROTOCOLS, PeerVerificationError, serverContextOptions, type PeerVerifier, type VerifiedPeer } from '../tls/index.js';
import { ConnectionTracker } from './connections.js';
import { DELEGATION_HEADER, forwardableRequestHeaders, setIdentityHeaders, stripIdentityHeaders } from './headers.js';
import { tlsFailureReason, type HandshakeObservation, callObservation, type CallOutcome, beginCall, forwardResponseHeaders, frameBufferedBody, guardUpgradeSocket, httpContext, listen, needsBufferedBody, onClientError, nonCanonicalTarget } from './http-common.js';
import { answerRefusal, asksForToolsList, authorizeCalls, filterContext, inspectWebSocketText, memoAllowed, readRequestBody, respondFiltered, sendJson } from './jsonrpc-http.js';
import type { AllowedTool, FilterContext, JsonRpcParse } from './jsonrpc.js';
import { denialBody, errorBody, sendError, sendRawError } from './responses.js';
import { SIGNED_FRAMES_HEADER, SIGNED_FRAMES_VERSION, type FrameSigning } from '../bus/frames.js';
import { delegationHeader, type DelegationGate, type GrantedDelegation } from '../delegation/gate.js';
import { farSideHeaders, farTarget, openWebSocket, relayWebSocket, websocketContext, type MessageVerdict, type RelayedMessage } from './websocket.js';
import { svidKeys, type LiveWork, type RevocationEntry } from '../revocation/index.js';

export interface InboundOptions {
  listen: HostPort;
  upstream: string;
  identity: () => IdentitySnapshot | undefined;
  /** Evaluates a request with the policy in force and records the decision. */
  decide: Decide;
  /**
   * Whether JSON bodies must be parsed for JSON-RPC calls: only a policy that can decide per
   * call (Cedar) needs it; with a peer allow-list every call on an allowed connection is allowed.
   */
  inspectCalls: () => boolean;
  /** Version of the policy in force now. */
  policyVersion: () => string;
  /** Records a finished call (metrics). */
  observe: (observation: RequestObservation) => void;
  /** Records a TLS handshake outcome (metrics). */
  observeHandshake: (observation: HandshakeObservation) => void;
  verifier: PeerVerifier;
  /** Refuse WebSocket streams whose dialing sidecar does not sign every frame. */
  requireSignedFrames?: boolean;
  /** Signs and verifies frames of signed streams. */
  frames?: FrameSigning;
  /** Verifies delegation tokens on requests (when `delegation` is configured). */
  delegation?: DelegationGate;
  /** Records a refusal that no policy made (e.g. an invalid delegation token) like a decision. */
  refuse?: (request: AuthzRequest, reason: ReasonCode, meta?: CallMeta) => void;
  /** Registers live work (connections, streams) so a revocation can cut it; returns its removal. */
  live?: (work: LiveWork) => () => void;
  /** UNSAFE, tests of `sigil probe` only (SIGIL_UNSAFE_TEST_WEAKEN=identity-headers): keep incoming identity headers. */
  unsafeKeepIncomingIdentityHeaders?: boolean;
  /** Changes with every revocation: a request decided before one is decided again before forwarding. */
  revocationEpoch?: () => number;
  logger: Logger;
}

interface ConnectionState {
  peer: VerifiedPeer;
  /** The bundles the peer was verified under; a bundle change means verifying again. */
  bundles: BundleSet;
  connect: Decision;
}

/** Idle time after which an inbound peer connection is closed (announced as `Keep-Alive: timeout=60`). */
export const PEER_KEEP_ALIVE_MS = 60_000;

export class InboundProxy {
  private server: HttpsServer | undefined;
  private readonly proxy = httpProxy.createProxyServer({ xfwd: false });
  private readonly upstreamAgent = new HttpAgent({ keepAlive: true, maxSockets: 512 });
  private readonly connections = new WeakMap<Socket, ConnectionState>();
  private readonly tracker = new ConnectionTracker();
  private readonly outcomes = new WeakMap<IncomingMessage, CallOutcome>();
  /** The verified delegation of a request; every decision on the request carries it. */
  private readonly delegations = new WeakMap<IncomingMessage, GrantedDelegation>();
  /**
   * Accept time per raw TCP socket, for handshake duration. Keyed weakly by the socket object
   * (not by remote address, which is gone once a connection resets before its handshake), so
   * nothing accumulates for connections that never finish.
   */
  private readonly accepted = new WeakMap<Socket, bigint>();
  /** Requests whose answer is a tools/list to filter (sent with `selfHandleResponse`). */
  private readonly toolsListFilters = new WeakMap<IncomingMessage, { allowed: AllowedTool; ctx: FilterContext }>();

  constructor(private readonly options: InboundOptions) {
    this.proxy.on('proxyRes', forwardResponseHeaders);
    this.proxy.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse) => {
      const filter = this.toolsListFilters.get(req);
      if (filter) respondFiltered(proxyRes, res, filter.allowed, filter.ctx, this.options.logger);
    });
  }

  async start(snapshot: IdentitySnapshot): Promise<AddressInfo> {
    const server = createHttpsServer({
      ...serverContextOptions(snapshot),
      requestCert: true,
      rejectUnauthorized: true,
      ALPNProtocols: ALPN_PROTOCOLS,
      // Bounded: a request decided now must not be parked for minutes before it is forwarded.
      headersTimeout: 20_000,
      requestTimeout: 60_000,
    });
    // Peers are sidecars that pool their connections to us. Node's default of 5 s idle made a
    // peer re-open (a full mTLS handshake on both sides) after any pause of 4 s or more; the
    // peer's agent reads this from `Keep-Alive: timeout=60` and retires the connection 1 s
    // before we would close it, so a request never races the close.
    server.keepAliveTimeout = PEER_KEEP_ALIVE_MS;
    this.server = server;
    server.on('connection', (socket: Socket) => this.onTcpConnection(socket));
    // Prepended so it runs before the HTTP parser is attached: a peer that fails verification
    // never has a byte of HTTP read, let alone answered.
    server.prependListener('secureConnection', (socket: TLSSocket) => this.onSecureConnection(socket));
    server.on('tlsClientError', (err, socket) => {
      // OpenSSL's verdict on the client certificate (self-signed, unknown CA, expired) is on the
      // socket; the error itself is often just the reset that followed the alert.
      const verdict = (socket as TLSSocket & { authorizationError?: Error | string }).authorizationError;
      const code = typeof verdict === 'string' ? verdict : (verdict as NodeJS.ErrnoException | undefined)?.code;
      const reason = code && /^[A-Z0-9_]{1,80}$/.test(code) ? code.toLowerCase() : tlsFailureReason(err);
      this.options.observeHandshake({ reporter: 'inbound', result: 'failure', reason });
      this.options.logger.debug('inbound TLS handshake failed', { reason, remote: socket.remoteAddress });
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => onClientError(err, socket));
    server.on('request', (req, res) => this.onRequest(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    return listen(server, this.options.listen);
  }

  /** New handshakes use the new SVID and bundles at once; open connections keep theirs. */
  updateIdentity(snapshot: IdentitySnapshot): void {
    this.server?.setSecureContext(serverContextOptions(snapshot));
  }

  /**
   * After a policy change: every live connection's `connect` is evaluated again and the ones no
   * longer allowed are closed (WebSocket streams included). Requests on the others are
   * evaluated against the new policy anyway, since every request is.
   */
  reauthorizeConnections(): void {
    const own = this.options.identity();
    if (!own) return;
    for (const socket of this.tracker) {
      const state = this.connections.get(socket);
      if (!state) continue;
      const connect = this.options.decide({
        action: 'connect',
        direction: 'inbound',
        principal: state.peer.id,
        resource: agentResource(own.svid.id),
        peer: state.peer.id,
      });
      state.connect = connect;
      if (!connect.allowed) {
        this.options.logger.info('closing inbound connection: connect no longer allowed', { peer: state.peer.id.toString(), reason: connect.reason });
        socket.destroy();
      }
    }
  }

  /** Open verified connections (for sigil_active_connections). */
  get connectionCount(): number {
    return this.tracker.size;
  }

  async stop(drainTimeoutMs: number): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.close();
    await this.tracker.drain(drainTimeoutMs, () => server.closeIdleConnections());
    this.upstreamAgent.destroy();
    this.proxy.close();
  }

  private onTcpConnection(socket: Socket): void {
    this.accepted.set(socket, process.hrtime.bigint());
    // An expired SVID is never presented: refuse new handshakes until a fresh one arrives.
    const snapshot = this.options.identity();
    if (!snapshot || !isUsable(snapshot.svid)) {
      this.options.logger.warn('refusing inbound connection: no usable SVID', { reason: 'svid_unavailable' });
      socket.destroy();
    }
  }

  private onSecureConnection(socket: TLSSocket): void {
    const snapshot = this.options.identity();
    // Withdrawn during the handshake: the connection never becomes usable.
    if (!snapshot) {
      socket.destroy();
      return;
    }
    let peer: VerifiedPeer;
    try {
      peer = this.options.verifier.verifySocket(socket, snapshot.bundles);
    } catch (err) {
      const detail = err instanceof PeerVerificationError ? err.detail : 'internal_error';
      this.options.observeHandshake({ reporter: 'inbound', result: 'failure', reason: detail });
      this.options.logger.info('inbound peer refused', { reason: 'peer_untrusted', detail, remote: socket.remoteAddress });
      socket.destroy();
      return;
    }
    // The server's TLS socket wraps the raw socket the 'connection' event saw (Node keeps it as
    // `_parent`); without it the duration is simply not observed.
    const raw = (socket as TLSSocket & { _parent?: Socket })._parent;
    const acceptedAt = raw ? this.accepted.get(raw) : undefined;
    this.options.observeHandshake({
      reporter: 'inbound',
      result: 'success',
      reason: 'ok',
      ...(acceptedAt === undefined ? {} : { seconds: Number(process.hrtime.bigint() - acceptedAt) / 1e9 }),
    });
    const connect = this.options.decide({
      action: 'connect',
      direction: 'inbound',
      principal: peer.id,
      resource: agentResource(snapshot.svid.id),
      peer: peer.id,
    });
    this.connections.set(socket, { peer, bundles: snapshot.bundles, connect });
    this.tracker.add(socket);
    const unregister = this.options.live?.({
      kind: 'connection',
      agents: [peer.id, snapshot.svid.id],
      svid: svidKeys(peer.serial, peer.leafHash),
      close: (entry) => {
        this.logRevoked('connection', peer, entry);
        socket.destroy();
      },
    });
    if (unregister) socket.once('close', unregister);
  }

  private logRevoked(what: string, peer: VerifiedPeer, entry: RevocationEntry): void {
    this.options.logger.info(`inbound ${what} cut: revoked`, { reason: 'revoked', kind: entry.kind, revocation: entry.id, peer: peer.id.toString() });
  }

  /**
   * Common checks for plain requests and upgrades. Returns the admitted request (headers
   * rewritten), a refusal to answer, or 'drop' when the peer no longer holds a valid
   * certificate: like a peer that fails verification, it gets no HTTP response at all.
   */
  private admit(req: IncomingMessage, upgrade: boolean, meta: CallMeta): 'admitted' | 'drop' | { decision?: Decision } {
    const state = this.connections.get(req.socket);
    const own = this.options.identity();
    if (!state || !own) return {};
    if (!this.stillTrusted(req.socket as TLSSocket, state, own.bundles)) return 'drop';
    if (!state.connect.allowed) {
      const outcome = this.outcomes.get(req);
      if (outcome) outcome.decision = state.connect;
      return { decision: state.connect };
    }
    const decision = this.httpDecision(req, state, own, meta);
    const outcome = this.outcomes.get(req);
    if (outcome) outcome.decision = decision;
    if (!decision.allowed) return { decision };
    // Hop-by-hop first, so nothing named in `Connection` is removed after we set identity.
    forwardableRequestHeaders(req.headers, upgrade);
    if (!this.options.unsafeKeepIncomingIdentityHeaders) stripIdentityHeaders(req.headers);
    setIdentityHeaders(req.headers, own.svid.id, state.peer.leafHash, state.peer.id);
    const delegation = this.delegations.get(req);
    if (delegation) req.headers[DELEGATION_HEADER] = delegationHeader(delegation.context);
    return 'admitted';
  }

  private httpDecision(req: IncomingMessage, state: ConnectionState, own: IdentitySnapshot, meta: CallMeta): Decision {
    return this.decideIn(req)(
      { action: 'http', direction: 'inbound', principal: state.peer.id, resource: agentResource(own.svid.id), peer: state.peer.id, http: httpContext(req) },
      meta,
    );
  }

  /**
   * `decide` for the calls of one request: with the request's verified delegation, if any. A
   * delegation does not outlive its token: once it has expired (a long-lived WebSocket, a slow
   * body) every further decision on the request is a deny, `delegation_expired`.
   */
  private decideIn(req: IncomingMessage): Decide {
    const granted = this.delegations.get(req);
    if (!granted) return this.options.decide;
    return (request, meta) => {
      const withDelegation = { ...request, delegation: granted.context };
      if (Date.now() <= granted.validUntil) return this.options.decide(withDelegation, meta);
      this.options.refuse?.(withDelegation, 'delegation_expired', meta);
      return { allowed: false, reason: 'delegation_expired', policies: [], wouldDeny: false, policyVersion: this.options.policyVersion(), request: withDelegation };
    };
  }

  /** What a decision depends on besides the request: the policy version and the revocation epoch. */
  private decisionScope(): string {
    return `${this.options.policyVersion()}#${this.options.revocationEpoch?.() ?? 0}`;
  }

  /**
   * A request decided when its head arrived may reach the point of forwarding after a policy
   * reload or a revocation (its body took a while): it must then pass what is in force now.
   */
  private stillAllowed(req: IncomingMessage, res: ServerResponse, meta: CallMeta, decidedUnder: string): boolean {
    if (this.decisionScope() === decidedUnder) return true;
    const state = this.connections.get(req.socket);
    const own = this.options.identity();
    const decision = state && own && state.connect.allowed ? this.httpDecision(req, state, own, meta) : undefined;
    const outcome = this.outcomes.get(req);
    if (outcome) outcome.decision = decision ?? state?.connect;
    if (decision?.allowed) return true;
    const d = this.logDenied(req, decision ?? state?.connect);
    sendError(res, 403, denialBody(d));
    return false;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    this.recordWhenDone(req, res);
    const nonCanonical = nonCanonicalTarget(req.url);
    if (nonCanonical) {
      sendError(res, 400, errorBody(400, 'bad_request', { detail: nonCanonical }));
      return;
    }
    const meta = beginCall(req);
    const decidedUnder = this.decisionScope();
    if (this.needsDelegationCheck(req)) {
      void this.checkDelegation(req, meta).then((refusal) => {
        if (!refusal) return this.serveRequest(req, res, meta, decidedUnder);
        res.setHeader('www-authenticate', refusal.challenge);
        sendError(res, 401, errorBody(401, refusal.reason, { detail: refusal.detail }));
      });
      return;
    }
    this.serveRequest(req, res, meta, decidedUnder);
  }

  /** Whether a request must go through the delegation gate first (only on an admitted connection). */
  private needsDelegationCheck(req: IncomingMessage): boolean {
    return this.options.delegation !== undefined && this.connections.get(req.socket)?.connect.allowed === true;
  }

  /**
   * Verifies the request's delegation token; remembers the context for its decisions, or says
   * why it is refused (recorded like a decision: metrics and audit).
   */
  private async checkDelegation(req: IncomingMessage, meta: CallMeta): Promise<{ reason: ReasonCode; detail: string; challenge: string } | undefined> {
    const state = this.connections.get(req.socket);
    const own = this.options.identity();
    if (!state || !own) return { reason: 'internal_error', detail: 'no connection state', challenge: 'Bearer realm="sigil"' };
    const result = await this.options.delegation!.check(req.headers, own.svid.id.toString(), state.peer.id.toString());
    if (!('refused' in result)) {
      if (result.granted) this.delegations.set(req, result.granted);
      return undefined;
    }
    const { reason, detail } = result.refused;
    const outcome = this.outcomes.get(req);
    if (outcome) outcome.reason = reason;
    this.options.refuse?.({ action: 'http', direction: 'inbound', principal: state.peer.id, resource: agentResource(own.svid.id), peer: state.peer.id, http: httpContext(req) }, reason, meta);
    this.options.logger.info('inbound request refused: delegation', { reason, detail, peer: state.peer.id.toString() });
    return result.refused;
  }

  private serveRequest(req: IncomingMessage, res: ServerResponse, meta: CallMeta, decidedUnder: string): void {
    const admitted = this.admit(req, false, meta);
    if (admitted === 'drop') {
      const outcome = this.outcomes.get(req);
      if (outcome) outcome.reason = 'peer_untrusted';
      return void req.socket.destroy();
    }
    if (admitted !== 'admitted') {
      const d = this.logDenied(req, admitted.decision);
      // A connection refused at connect time is closed after the answer; a per-request deny keeps it.
      sendError(res, 403, denialBody(d), d.action !== 'http');
      return;
    }
    this.forward(req, res, meta, decidedUnder).catch((err: Error) => {
      this.options.logger.error('inbound request failed unexpectedly', { error: err });
      sendError(res, 403, errorBody(403, 'internal_error'), true);
    });
  }

  /**
   * A request made under a delegation (a long body, a streamed or SSE answer) is live work of
   * that task, user and token: revoking any of them cuts it (its connection is closed).
   */
  private registerDelegated(req: IncomingMessage, res: ServerResponse): void {
    const granted = this.delegations.get(req);
    const state = this.connections.get(req.socket);
    const own = this.options.identity();
    if (!granted || !state || !own || !this.options.live || req.socket.destroyed) return;
    const unregister = this.options.live({
      kind: 'connection',
      agents: [state.peer.id, own.svid.id],
      svid: svidKeys(state.peer.serial, state.peer.leafHash),
      delegation: granted.context,
      close: (entry) => {
        this.logRevoked('delegated request', state.peer, entry);
        req.socket.destroy();
      },
    });
    // Whichever ends first: a pipelined response that never gets the socket never emits 'close'.
    res.once('close', unregister);
    req.socket.once('close', unregister);
  }

  /** One `sigil_requests_total` observation per request, once its response is complete. */
  private recordWhenDone(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint();
    const outcome: CallOutcome = { protocol: 'http' };
    this.outcomes.set(req, outcome);
    res.once('close', () => {
      const peer = this.connections.get(req.socket)?.peer.id;
      const parties = { reporter: 'inbound' as const, source: peer, destination: this.options.identity()?.svid.id };
      // No response at all (dropped, or the client went away first): response_code "0",
      // never the 200 that Node's statusCode defaults to.
      const code = res.headersSent ? res.statusCode : 0;
      this.options.observe(callObservation(outcome, parties, code, Number(process.hrtime.bigint() - started) / 1e9));
    });
  }

  private async forward(req: IncomingMessage, res: ServerResponse, meta: CallMeta, decidedUnder: string): Promise<void> {
    this.registerDelegated(req, res);
    const options: httpProxy.ServerOptions = { target: this.options.upstream, agent: this.upstreamAgent };
    const body = await readRequestBody(req, res, { force: needsBufferedBody(req), inspect: this.options.inspectCalls() });
    if (!body) {
      const outcome = this.outcomes.get(req);
      if (outcome) outcome.reason = res.statusCode === 413 ? 'body_too_large' : 'bad_request';
      return;
    }
    if (!this.stillAllowed(req, res, meta, decidedUnder)) return;
    if (body.kind === 'buffered') {
      frameBufferedBody(req, body.body);
      options.buffer = Readable.from([body.body]);
      if (body.rpc.kind !== 'none' && !this.authorizeCalls(req, res, body.rpc, options, meta)) return;
    } else if (body.kind === 'streamed') {
      options.buffer = body.stream;
    }
    this.proxy.web(req, res, options, (err: NodeJS.ErrnoException) => {
      const outcome = this.outcomes.get(req);
      if (outcome) outcome.reason = 'upstream_unavailable';
      this.options.logger.warn('upstream request failed', { reason: 'upstream_unavailable', detail: err.code ?? err.message });
      sendError(res, 502, errorBody(502, 'upstream_unavailable', { detail: `upstream ${this.options.upstream}: ${err.code ?? err.message}` }));
    });
  }

  /**
   * JSON-RPC in the body: every call is authorized (caller = the verified peer, serving agent =
   * ours) in addition to the request's `http` decision; see jsonrpc.ts for batch semantics.
   * Returns false when the request was answered here and nothing may be forwarded. A tools/list
   * that goes through has its answer filtered to the tools the caller may call.
   */
  private authorizeCalls(
    req: IncomingMessage,
    res: ServerResponse,
    rpc: Exclude<JsonRpcParse, { kind: 'none' }>,
    options: httpProxy.ServerOptions,
    meta: CallMeta,
  ): boolean {
    const state = this.connections.get(req.socket);
    const own = this.options.identity();
    if (rpc.kind === 'invalid') {
      const outcome = this.outcomes.get(req);
      if (outcome) {
        outcome.protocol = 'jsonrpc';
        outcome.reason = 'jsonrpc_invalid';
      }
      this.options.logger.info('inbound JSON-RPC request invalid', { reason: 'jsonrpc_invalid', peer: state?.peer.id.toString() });
      sendJson(res, 200, rpc.reply);
      return false;
    }
    if (!state || !own) {
      sendError(res, 403, errorBody(403, 'internal_error'));
      return false;
    }
    const scope = { direction: 'inbound' as const, principal: state.peer.id, peer: state.peer.id, serving: own.svid.id, http: httpContext(req) };
    const verdict = authorizeCalls(rpc, scope, (request) => this.decideIn(req)(request, meta));
    const outcome = this.outcomes.get(req);
    if (outcome) {
      outcome.protocol = 'jsonrpc';
      if (!verdict.forward) outcome.decision = verdict.denied;
      else if (verdict.wouldDeny) outcome.decision = verdict.wouldDeny;
    }
    if (!verdict.forward) {
      const d = verdict.denied.request;
      this.options.logger.info('inbound JSON-RPC call denied', { reason: verdict.denied.reason, action: d.action, method: d.jsonrpc?.method, peer: state.peer.id.toString(), batch: rpc.batch });
      answerRefusal(res, verdict);
      return false;
    }
    if (asksForToolsList(rpc)) {
      // The answer is buffered or rewritten event by event: ask for it uncompressed.
      delete req.headers['accept-encoding'];
      options.selfHandleResponse = true;
      const allowed = memoAllowed(
        (name) =>
          this.decideIn(req)({ ...scope, action: 'mcp.tools/call', resource: { type: 'Tool', name, agent: own.svid.id }, jsonrpc: { method: 'tools/call', tool: name, listing: 'tools/list' } }, meta)
            .allowed,
      );
      this.toolsListFilters.set(req, { allowed, ctx: filterContext(rpc) });
    }
    return true;
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    guardUpgradeSocket(socket);
    // Read before the identity headers are stripped: the dialing sidecar asks for signed frames.
    const signed = req.headers[SIGNED_FRAMES_HEADER] === SIGNED_FRAMES_VERSION && this.options.frames !== undefined;
    const started = process.hrtime.bigint();
    const outcome: CallOutcome = { protocol: 'websocket' };
    this.outcomes.set(req, outcome);
    // A stream is one call: recorded when it is refused, or when it ends (101, its lifetime).
    const record = (status: number): void => {
      const parties = { reporter: 'inbound' as const, source: this.connections.get(req.socket)?.peer.id, destination: this.options.identity()?.svid.id };
      this.options.observe(callObservation(outcome, parties, status, Number(process.hrtime.bigint() - started) / 1e9));
    };
    const nonCanonical = nonCanonicalTarget(req.url);
    if (nonCanonical) {
      sendRawError(socket, 400, errorBody(400, 'bad_request', { detail: nonCanonical }));
      return record(400);
    }
    const meta = beginCall(req);
    if (this.needsDelegationCheck(req)) {
      void this.checkDelegation(req, meta).then((refusal) => {
        if (!refusal) return this.serveUpgrade(req, socket, head, meta, signed, outcome, record);
        sendRawError(socket, 401, errorBody(401, refusal.reason, { detail: refusal.detail }));
        record(401);
      });
      return;
    }
    this.serveUpgrade(req, socket, head, meta, signed, outcome, record);
  }

  private serveUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, meta: CallMeta, signed: boolean, outcome: CallOutcome, record: (status: number) => void): void {
    const admitted = this.admit(req, true, meta);
    if (admitted === 'drop') {
      outcome.reason = 'peer_untrusted';
      socket.destroy();
      return record(0);
    }
    if (admitted !== 'admitted') {
      const d = this.logDenied(req, admitted.decision);
      sendRawError(socket, 403, denialBody(d));
      return record(403);
    }
    const tlsSocket = req.socket as TLSSocket;
    const state = this.connections.get(tlsSocket)!;
    if (!signed && this.options.requireSignedFrames) {
      outcome.reason = 'bad_request';
      this.options.logger.info('websocket refused: signed frames required', { peer: state.peer.id.toString() });
      sendRawError(socket, 400, errorBody(400, 'bad_request', { detail: `this sidecar requires signed frames (${SIGNED_FRAMES_HEADER}: ${SIGNED_FRAMES_VERSION})` }));
      return record(400);
    }
    // Our own ID for the stream's lifetime: the identity can be withdrawn while it is open, and
    // the stream is then cut, but its callbacks must never see "no identity".
    const own = this.options.identity()?.svid.id;
    if (!own) {
      outcome.reason = 'svid_unavailable';
      sendRawError(socket, 503, errorBody(503, 'svid_unavailable', { detail: 'this sidecar has no SVID to serve with' }));
      return record(503);
    }
    const http = httpContext(req);
    const target = farTarget(this.options.upstream, req.url);
    let refused = false;
    const frames = signed ? this.options.frames : undefined;
    const relay = relayWebSocket({
      req,
      ...(frames ? { codec: () => frames.codec('client', state.peer.id, http.path), answerHeaders: [`${SIGNED_FRAMES_HEADER}: ${SIGNED_FRAMES_VERSION}`] } : {}),
      socket,
      head,
      logger: this.options.logger.child({ peer: state.peer.id.toString() }),
      open: async (protocols) => (await openWebSocket(target, protocols, { headers: farSideHeaders(req) })).ws,
      authorize: (message) => this.authorizeMessage(req, tlsSocket, state, http, message, meta),
      inspect: (from, text) => {
        const [sender, receiver] = from === 'client' ? [state.peer.id, own] : [own, state.peer.id];
        const scope = { direction: 'inbound' as const, principal: sender, peer: state.peer.id, serving: receiver, http };
        return inspectWebSocketText(text, scope, (request) => this.decideIn(req)(request, meta));
      },
      refuse: (err: NodeJS.ErrnoException) => {
        refused = true;
        outcome.reason = 'upstream_unavailable';
        this.options.logger.warn('upstream websocket failed', { reason: 'upstream_unavailable', detail: err.code ?? err.message });
        sendRawError(socket, 502, errorBody(502, 'upstream_unavailable', { detail: `upstream ${this.options.upstream}: ${err.code ?? err.message}` }));
      },
    });
    const granted = this.delegations.get(req);
    const unregister = this.options.live?.({
      kind: 'websocket',
      agents: [state.peer.id, own],
      svid: svidKeys(state.peer.serial, state.peer.leafHash),
      ...(granted ? { delegation: granted.context } : {}),
      close: (entry) => {
        this.logRevoked('websocket stream', state.peer, entry);
        relay.close(1008, 'revoked');
      },
    });
    void relay.done.then(() => {
      unregister?.();
      record(refused ? 502 : 101);
    });
  }

  /**
   * `websocket.message`, before each message is forwarded: its sender acts on its receiver (the
   * peer's messages on our agent, our agent's on the peer), on a connection that must still be
   * trusted and allowed. Re-reading the policy every time is what makes a reload apply at once.
   */
  private authorizeMessage(req: IncomingMessage, socket: TLSSocket, state: ConnectionState, http: HttpContext, message: RelayedMessage, meta: CallMeta): MessageVerdict {
    const own = this.options.identity();
    if (!own) return { allowed: false, reason: 'svid_unavailable', policies: [], wouldDeny: false };
    if (!this.stillTrusted(socket, state, own.bundles)) return { allowed: false, reason: 'peer_untrusted', policies: [], wouldDeny: false };
    if (!state.connect.allowed) return state.connect;
    const fromPeer = message.from === 'client';
    return this.decideIn(req)({
      action: 'websocket.message',
      direction: 'inbound',
      principal: fromPeer ? state.peer.id : own.svid.id,
      resource: agentResource(fromPeer ? own.svid.id : state.peer.id),
      peer: state.peer.id,
      http,
      websocket: websocketContext(message),
    }, meta);
  }

  /**
   * A kept-alive connection stays admitted only while the peer's certificate path is valid and
   * it still verifies under the current bundles (a removed or rotated CA cuts it off).
   */
  private stillTrusted(socket: TLSSocket, state: ConnectionState, bundles: BundleSet): boolean {
    let detail: string | undefined;
    if (Date.now() > state.peer.validTo) detail = 'certificate_expired';
    else if (state.bundles !== bundles) {
      try {
        state.peer = this.options.verifier.verifySocket(socket, bundles);
        state.bundles = bundles;
      } catch (err) {
        detail = err instanceof PeerVerificationError ? err.detail : 'internal_error';
      }
    }
    if (detail === undefined) return true;
    this.options.logger.info('inbound peer refused', { reason: 'peer_untrusted', detail, peer: state.peer.id.toString() });
    return false;
  }

  /** Logs a refusal; a refusal without a decision is an unexpected state and fails closed. */
  private logDenied(req: IncomingMessage, decision: Decision | undefined): { reason: ReasonCode; policies: string[]; action?: string; revocation?: { kind: string; id: string } } {
    const refusal = {
      reason: decision?.reason ?? 'internal_error',
      policies: decision?.policies ?? [],
      action: decision?.request.action,
      ...(decision?.revocation ? { revocation: decision.revocation } : {}),
    };
    this.options.logger.info('inbound request denied', {
      reason: refusal.reason,
      action: refusal.action,
      peer: this.connections.get(req.socket)?.peer.id.toString(),
      method: req.method,
    });
    return refusal;
  }
}

