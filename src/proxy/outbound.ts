// The outbound side: a plain-HTTP listener on loopback that the local agent uses either as a
// forward proxy (absolute-form request URI) or by naming the peer in the Host header. Each
// request is routed, dialed over mTLS with our SVID, and re-authorized against the verified
// server before it is sent.
import { createServer, type ClientRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Readable, type Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import { agentResource, type CallMeta, type Decide, type Decision, type HttpContext } from '../authz/index.js';
import type { HostPort, RouteConfig } from '../config/index.js';
import type { IdentitySnapshot } from '../identity/index.js';
import type { SpiffeId } from '../spiffe/index.js';
import type { Logger, RequestObservation } from '../telemetry/index.js';
import type { PeerVerifier, VerifiedPeer } from '../tls/index.js';
import { ConnectionTracker } from './connections.js';
import { forwardableRequestHeaders, stripIdentityHeaders } from './headers.js';
import { type HandshakeObservation, callObservation, type CallOutcome, beginCall, forwardResponseHeaders, frameBufferedBody, guardUpgradeSocket, httpContext, listen, needsBufferedBody, onClientError, nonCanonicalTarget } from './http-common.js';
import { OutboundError, PeerAgent } from './peer-agent.js';
import { authorizeCalls, inspectWebSocketText, readRequestBody, REQUEST_REF_HEADER, sendJson } from './jsonrpc-http.js';
import type { JsonRpcCall } from './jsonrpc.js';
import { denialBody, errorBody, sendError, sendRawError, type ErrorBody } from './responses.js';
import { RouteTable, splitAuthority, type Route } from './routes.js';
import type { EgressRoute, EgressRoutes } from '../egress/index.js';
import { SIGNED_FRAMES_HEADER, SIGNED_FRAMES_VERSION, type FrameSigning } from '../bus/frames.js';
import { ExchangeError, type ExchangeClient } from '../delegation/exchange-client.js';
import { bearerToken } from '../delegation/gate.js';
import { svidKeys, type LiveWork } from '../revocation/index.js';
import { FarSideAnswer, farSideHeaders, farTarget, openWebSocket, relayWebSocket, websocketContext, type MessageVerdict, type RelayedMessage } from './websocket.js';

export interface OutboundOptions {
  listen: HostPort;
  routes: RouteConfig[];
  identity: () => IdentitySnapshot | undefined;
  /** Evaluates a request with the policy in force and records the decision. */
  decide: Decide;
  /**
   * Whether JSON bodies must be parsed for JSON-RPC calls: only a policy that can decide per
   * call (Cedar) needs it; with a peer allow-list every call on an allowed connection is allowed.
   */
  inspectCalls: () => boolean;
  /** Records a finished call (metrics). */
  observe: (observation: RequestObservation) => void;
  /** Records a TLS handshake outcome (metrics). */
  observeHandshake: (observation: HandshakeObservation) => void;
  verifier: PeerVerifier;
  /** Signs and verifies frames on routes with `signFrames`. */
  frames?: FrameSigning;
  /** Trades the agent's bearer token for one addressed to the peer, on routes with `exchange`. */
  exchange?: ExchangeClient;
  /** Registers live work (pooled connections, streams) so a revocation can cut it. */
  live?: (work: LiveWork) => () => void;
  /** Egress routes to external APIs (outbound.egress), matched before peer routes' 403 no_route. */
  egressRoutes?: EgressRoutes;
  logger: Logger;
}

interface Target {
  route: Route;
  agent: PeerAgent;
}

interface PendingCall {
  meta: CallMeta;
  rpc?: { batch: boolean; calls: JsonRpcCall[] };
  outcome: CallOutcome;
  /** The verified server, once the request is bound to a connection. */
  peer?: SpiffeId;
}

export class OutboundProxy {
  private server: Server | undefined;
  private readonly proxy = httpProxy.createProxyServer({ xfwd: false });
  private readonly routes: RouteTable;
  private readonly agents = new Map<string, PeerAgent>();
  private readonly tracker = new ConnectionTracker();
  private readonly targets = new WeakMap<IncomingMessage, Target>();
  /**
   * JSON-RPC calls parsed from request bodies, by REQUEST_REF_HEADER value: the serving agent
   * (the verified server) is known only once the request is bound to a connection, so the calls
   * are authorized then, in authorizeRequest. Entries go when the agent's response closes.
   */
  /**
   * Requests on their way to a peer, by the internal request id header this proxy sets on each:
   * their audit/trace metadata and JSON-RPC calls, needed when the request is bound to a
   * verified connection (PeerAgent) and authorized there.
   */
  private readonly pending = new Map<string, PendingCall>();

  constructor(private readonly options: OutboundOptions) {
    this.routes = new RouteTable(options.routes);
    const agentDeps = { ...options, onRequestBound: (req: ClientRequest, peer: VerifiedPeer, own: IdentitySnapshot) => this.authorizeRequest(req, peer, own) };
    for (const route of this.routes.all()) this.agents.set(route.key, new PeerAgent(route, agentDeps));
    this.proxy.on('proxyRes', forwardResponseHeaders);
  }

  async start(): Promise<AddressInfo> {
    const server = createServer();
    this.server = server;
    server.on('connection', (socket: Socket) => this.tracker.add(socket));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => onClientError(err, socket));
    server.on('connect', (_req: IncomingMessage, socket: Duplex) =>
      sendRawError(socket, 405, errorBody(405, 'bad_request', { detail: 'CONNECT tunnels are not supported: send plain HTTP and Sigil adds mTLS' })),
    );
    server.on('request', (req, res) => this.onRequest(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    return listen(server, this.options.listen);
  }

  /** Connections open to peers across all routes (for sigil_active_connections). */
  get connectionCount(): number {
    let n = 0;
    for (const agent of this.agents.values()) n += agent.connectionCount;
    return n;
  }

  /** After a policy change, cut pooled connections to peers we may no longer connect to. */
  reauthorizeConnections(): void {
    for (const agent of this.agents.values()) agent.reauthorizeConnections();
  }

  /** Called on every identity update (new SVID or bundles). */
  updateIdentity(): void {
    for (const agent of this.agents.values()) agent.dropIdleSockets();
  }

  async stop(drainTimeoutMs: number): Promise<void> {
    const server = this.server;
    if (!server) return;
    server.close();
    await this.tracker.drain(drainTimeoutMs, () => server.closeIdleConnections());
    for (const agent of this.agents.values()) agent.destroy();
    this.proxy.close();
  }

  /** Finds the route from an absolute-form URI or the Host header, and rewrites req.url to origin-form. */
  private route(req: IncomingMessage): Target | ErrorBody {
    let authority = req.headers.host ?? '';
    const url = req.url ?? '/';
    if (!url.startsWith('/')) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        return errorBody(400, 'bad_request', { detail: 'request target is neither origin-form nor a valid absolute URI' });
      }
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'ws:') {
        return errorBody(400, 'bad_request', { detail: `scheme ${parsed.protocol} not supported: send plain http:// and Sigil adds mTLS` });
      }
      authority = parsed.host;
      req.url = parsed.pathname + parsed.search;
    }
    const nonCanonical = nonCanonicalTarget(req.url);
    if (nonCanonical) return errorBody(400, 'bad_request', { detail: nonCanonical });
    const route = this.routes.resolve(authority);
    if (!route) return errorBody(403, 'no_route', { detail: `no outbound route for host "${authority}"` });
    const target = { route, agent: this.agents.get(route.key)! };
    this.targets.set(req, target);
    return target;
  }

  /** The egress route a request names (Host or absolute-form), with req.url made origin-form. */
  private egressFor(req: IncomingMessage): EgressRoute | undefined {
    const egress = this.options.egressRoutes;
    if (!egress) return undefined;
    let authority = req.headers.host ?? '';
    const url = req.url ?? '/';
    let parsed: URL | undefined;
    if (!url.startsWith('/')) {
      try {
        parsed = new URL(url);
      } catch {
        return undefined;
      }
      if (parsed.protocol !== 'http:') return undefined;
      authority = parsed.host;
    }
    const { host, port } = splitAuthority(authority);
    const route = egress.resolve(host, port);
    if (route && parsed) {
      req.url = parsed.pathname + parsed.search;
      // The policy's context.http.host is the host the request was routed by.
      req.headers.host = parsed.host;
    }
    return route;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    stripIdentityHeaders(req.headers);
    const egress = this.egressFor(req);
    if (egress) {
      this.options.egressRoutes!.handle(req, res, egress).catch((err: Error) => {
        this.options.logger.error('egress request failed unexpectedly', { error: err });
        sendError(res, 502, errorBody(502, 'internal_error'), true);
      });
      return;
    }
    const { meta, outcome } = this.track(req, res, 'http', () => (res.headersSent ? res.statusCode : 0));
    const target = this.route(req);
    if ('error' in target) {
      outcome.reason = target.reason;
      sendError(res, target.reason === 'no_route' ? 403 : 400, target);
      return;
    }
    forwardableRequestHeaders(req.headers, false);
    this.forward(req, res, target, meta).catch((err: Error) => {
      this.options.logger.error('outbound request failed unexpectedly', { error: err });
      sendError(res, 403, errorBody(403, 'internal_error'), true);
    });
  }

  /**
   * Registers a request for authorization at bind time; when its exchange closes it is
   * forgotten and recorded (one `sigil_requests_total` observation; a stream is one call).
   */
  private track(req: IncomingMessage, closes: { once(event: 'close', listener: () => void): unknown }, protocol: CallOutcome['protocol'], status: () => number): PendingCall {
    const started = process.hrtime.bigint();
    const meta = beginCall(req);
    const id = meta.requestId!;
    req.headers[REQUEST_REF_HEADER] = id;
    const entry: PendingCall = { meta, outcome: { protocol } };
    this.pending.set(id, entry);
    closes.once('close', () => {
      this.pending.delete(id);
      const parties = { reporter: 'outbound' as const, source: this.options.identity()?.svid.id, destination: entry.peer };
      this.options.observe(callObservation(entry.outcome, parties, status(), Number(process.hrtime.bigint() - started) / 1e9));
    });
    return entry;
  }

  private async forward(req: IncomingMessage, res: ServerResponse, target: Target, meta: CallMeta): Promise<void> {
    const refusal = await this.exchangeToken(req, target);
    if (refusal) {
      const entry = this.pending.get(meta.requestId!);
      if (entry) entry.outcome.reason = 'exchange_failed';
      sendError(res, 502, refusal);
      return;
    }
    const options = this.proxyOptions(target);
    const body = await readRequestBody(req, res, { force: needsBufferedBody(req), inspect: this.options.inspectCalls() });
    if (!body) {
      const entry = this.pending.get(meta.requestId!);
      if (entry) entry.outcome.reason = res.statusCode === 413 ? 'body_too_large' : 'bad_request';
      return;
    }
    if (body.kind === 'buffered') {
      frameBufferedBody(req, body.body);
      options.buffer = Readable.from([body.body]);
      if (body.rpc.kind === 'invalid') {
        const entry = this.pending.get(meta.requestId!);
        if (entry) {
          entry.outcome.protocol = 'jsonrpc';
          entry.outcome.reason = 'jsonrpc_invalid';
        }
        this.options.logger.info('outbound JSON-RPC request invalid', { reason: 'jsonrpc_invalid', route: target.route.host });
        sendJson(res, 200, body.rpc.reply);
        return;
      }
      if (body.rpc.kind === 'calls') {
        const entry = this.pending.get(meta.requestId!);
        if (entry) {
          entry.rpc = body.rpc;
          entry.outcome.protocol = 'jsonrpc';
        }
      }
    } else if (body.kind === 'streamed') {
      options.buffer = body.stream;
    }
    this.proxy.web(req, res, options, (err: Error) => {
      if (err instanceof OutboundError && err.jsonRpcReply !== undefined) {
        this.options.logger.info('outbound JSON-RPC call refused', { reason: err.decision?.reason ?? err.code, route: target.route.host, detail: err.message });
        sendJson(res, 200, err.jsonRpcReply);
        return;
      }
      const [status, body] = this.failure(err, req);
      const entry = this.pending.get(meta.requestId!);
      if (entry && err instanceof OutboundError && err.decision) entry.outcome.decision = err.decision;
      else if (entry) entry.outcome.reason = body.reason;
      sendError(res, status, body);
    });
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    guardUpgradeSocket(socket);
    stripIdentityHeaders(req.headers);
    forwardableRequestHeaders(req.headers, true);
    let upgradeStatus = 101;
    // Tracked before routing (and after the header clean-up, which would drop the request
    // reference track() sets), so a refused upgrade (no route, bad target) is recorded too.
    const { meta, outcome } = this.track(req, socket, 'websocket', () => upgradeStatus);
    const target = this.route(req);
    if ('error' in target) {
      upgradeStatus = target.reason === 'no_route' ? 403 : 400;
      outcome.reason = target.reason;
      sendRawError(socket, upgradeStatus, target);
      return;
    }
    // Our own ID for the stream's lifetime (see the inbound side): captured once, checked at open.
    const own = this.options.identity()?.svid.id;
    const far = farTarget(String(this.proxyOptions(target).target), req.url);
    const http = httpContext(req);
    const frames = target.route.signFrames ? this.options.frames : undefined;
    if (frames) req.headers[SIGNED_FRAMES_HEADER] = SIGNED_FRAMES_VERSION;
    // The server the upgrade was sent to, as verified when its connection was dialed.
    let peer: VerifiedPeer | undefined;
    let upgraded: Duplex | undefined;
    let unregister: (() => void) | undefined;
    const relay = relayWebSocket({
      req,
      socket,
      head,
      ...(frames ? { codec: () => frames.codec('server', peer!.id, http.path) } : {}),
      logger: this.options.logger.child({ route: target.route.host }),
      // Through the route's PeerAgent: mTLS dial, SPIFFE verification, the connect check and the
      // per-request `http` check happen exactly as for a plain request.
      open: async (protocols) => {
        if (!own) throw new OutboundError('svid_unavailable', 'this sidecar has no valid SVID to present');
        const refusal = await this.exchangeToken(req, target);
        if (refusal) throw new FarSideAnswer(502, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify(refusal)));
        const { ws, response } = await openWebSocket(far, protocols, { headers: farSideHeaders(req), agent: target.agent });
        peer = target.agent.peerOf(response.socket);
        upgraded = response.socket;
        if (!peer) {
          ws.terminate();
          throw new OutboundError('peer_untrusted', 'the upgraded connection has no verified peer');
        }
        const verified = peer;
        unregister = this.options.live?.({
          kind: 'websocket',
          agents: [verified.id, own],
          svid: svidKeys(verified.serial, verified.leafHash),
          close: (entry) => {
            this.options.logger.info('outbound websocket stream cut: revoked', { reason: 'revoked', kind: entry.kind, revocation: entry.id, peer: verified.id.toString() });
            relay.close(1008, 'revoked');
          },
        });
        // A route that signs frames only talks to a far side that confirmed it verifies them.
        if (frames && response.headers[SIGNED_FRAMES_HEADER] !== SIGNED_FRAMES_VERSION) {
          ws.terminate();
          throw new OutboundError('peer_untrusted', `${peer.id.toString()} did not confirm signed frames`);
        }
        return ws;
      },
      // Each message: the far side must still verify under the bundles in force now.
      authorize: (message) => this.authorizeMessage(upgraded ? target.agent.currentPeerOf(upgraded) : undefined, http, message, meta),
      inspect: (from, text) => {
        const [sender, receiver] = from === 'client' ? [own!, peer!.id] : [peer!.id, own!];
        const scope = { direction: 'outbound' as const, principal: sender, peer: peer!.id, serving: receiver, http };
        return inspectWebSocketText(text, scope, (request) => this.options.decide(request, meta));
      },
      refuse: (err) => {
        const [status, body] = this.failure(err, req);
        upgradeStatus = status;
        if (err instanceof OutboundError && err.decision) outcome.decision = err.decision;
        else outcome.reason = body.reason;
        sendRawError(socket, status, body);
      },
    });
    void relay.done.then(() => unregister?.());
  }

  /**
   * `websocket.message`, before each message is forwarded: its sender acts on its receiver (our
   * agent's messages on the peer, the peer's on our agent), evaluated with the policy in force.
   */
  private authorizeMessage(peer: VerifiedPeer | undefined, http: HttpContext, message: RelayedMessage, meta: CallMeta): MessageVerdict {
    const own = this.options.identity();
    if (!own) return { allowed: false, reason: 'svid_unavailable', policies: [], wouldDeny: false };
    if (!peer) return { allowed: false, reason: 'peer_untrusted', policies: [], wouldDeny: false };
    const fromAgent = message.from === 'client';
    return this.options.decide({
      action: 'websocket.message',
      direction: 'outbound',
      principal: fromAgent ? own.svid.id : peer.id,
      resource: agentResource(fromAgent ? peer.id : own.svid.id),
      peer: peer.id,
      http,
      websocket: websocketContext(message),
    }, meta);
  }

  /**
   * On a route with `exchange`: replaces the agent's bearer token with one the broker issued for
   * the route's peer. A request without a token goes on as non-delegated. Undefined when the
   * request may proceed; the agent's answer when it may not.
   */
  private async exchangeToken(req: IncomingMessage, target: Target): Promise<ErrorBody | undefined> {
    const exchange = target.route.exchange;
    if (!exchange) return undefined;
    const token = bearerToken(req.headers.authorization);
    if (token === undefined) return undefined;
    if (!this.options.exchange) return errorBody(502, 'exchange_failed', { detail: 'no delegation broker configured' });
    try {
      req.headers.authorization = `Bearer ${await this.options.exchange.exchange(token, target.route.expected.toString(), exchange.scope)}`;
      return undefined;
    } catch (err) {
      const detail = err instanceof ExchangeError ? err.detail : 'internal_error';
      this.options.logger.warn('token exchange failed', { reason: 'exchange_failed', detail, route: target.route.host });
      return errorBody(502, 'exchange_failed', { detail });
    }
  }

  private proxyOptions(target: Target): httpProxy.ServerOptions {
    const { host, port } = target.route.address;
    return { target: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, agent: target.agent };
  }

  /** Per-request egress authorization against the verified server of the bound connection. */
  private authorizeRequest(req: ClientRequest, peer: VerifiedPeer, own: IdentitySnapshot): OutboundError | undefined {
    const ref = req.getHeader(REQUEST_REF_HEADER);
    const entry = typeof ref === 'string' ? this.pending.get(ref) : undefined;
    if (entry) entry.peer = peer.id;
    const host = req.getHeader('host');
    const path = req.path;
    const q = path.indexOf('?');
    const decision = this.options.decide(
      {
        action: 'http',
        direction: 'outbound',
        principal: own.svid.id,
        resource: agentResource(peer.id),
        peer: peer.id,
        http: { method: req.method, path: q === -1 ? path : path.slice(0, q), host: typeof host === 'string' ? host : '' },
      },
      entry?.meta,
    );
    if (entry) entry.outcome.decision = decision;
    if (!decision.allowed) return new OutboundError('policy_denied', `egress to ${peer.id} denied`, undefined, decision);
    // Every request this proxy sends is registered; an unknown one cannot be checked: fail closed.
    if (!entry) return new OutboundError('policy_denied', 'request unknown to the outbound proxy', undefined, { ...decision, allowed: false, reason: 'internal_error', policies: [] });
    if (!entry.rpc) return undefined;
    // JSON-RPC calls of the body: each authorized with our agent as caller and the verified
    // server as the serving agent (egress). A refusal carries the JSON-RPC answer for the agent
    // (batch semantics in jsonrpc.ts); nothing is sent to the peer.
    const scope = { direction: 'outbound' as const, principal: own.svid.id, peer: peer.id, serving: peer.id, http: decision.request.http! };
    const verdict = authorizeCalls(entry.rpc, scope, (request) => this.options.decide(request, entry.meta));
    if (verdict.forward) {
      if (verdict.wouldDeny) entry.outcome.decision = verdict.wouldDeny;
      return undefined;
    }
    entry.outcome.decision = verdict.denied;
    const d = verdict.denied.request;
    return new OutboundError('policy_denied', `JSON-RPC ${d.jsonrpc?.method ?? ''} to ${peer.id} denied`, undefined, verdict.denied, verdict.reply);
  }

  private failure(err: Error, req: IncomingMessage): [number, ErrorBody] {
    const route = this.targets.get(req)?.route;
    if (!(err instanceof OutboundError)) {
      const code = (err as NodeJS.ErrnoException).code ?? err.message;
      this.options.logger.warn('outbound request failed', { reason: 'peer_unreachable', route: route?.host, detail: code });
      return [502, errorBody(502, 'peer_unreachable', { detail: code })];
    }
    this.options.logger.info('outbound request refused', { reason: err.code, route: route?.host, detail: err.detail ?? err.message });
    switch (err.code) {
      case 'policy_denied':
        return [403, err.decision ? denialBody(err.decision) : errorBody(403, 'policy_denied', { policies: [] })];
      case 'svid_unavailable':
        return [503, errorBody(503, 'svid_unavailable', { detail: err.message })];
      default:
        return [502, errorBody(502, err.code, { detail: err.detail ? `${err.message} (${err.detail})` : err.message })];
    }
  }
}
