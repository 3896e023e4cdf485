// The outbound side: a plain-HTTP listener on loopback that the local agent uses either as a
// forward proxy (absolute-form request URI) or by naming the peer in the Host header. Each
// request is routed, dialed over mTLS with our SVID, and re-authorized against the verified
// server before it is sent.
import { createServer, type ClientRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Readable, type Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import { agentResource, type Decide } from '../authz/index.js';
import type { HostPort, RouteConfig } from '../config/index.js';
import type { IdentitySnapshot } from '../identity/index.js';
import type { Logger } from '../telemetry/index.js';
import type { PeerVerifier, VerifiedPeer } from '../tls/index.js';
import { ConnectionTracker } from './connections.js';
import { forwardableRequestHeaders, stripIdentityHeaders } from './headers.js';
import { bufferOrRefuse, forwardResponseHeaders, frameBufferedBody, guardUpgradeSocket, listen, needsBufferedBody, onClientError } from './http-common.js';
import { OutboundError, PeerAgent } from './peer-agent.js';
import { errorBody, sendError, sendRawError, type ErrorBody } from './responses.js';
import { RouteTable, type Route } from './routes.js';

export interface OutboundOptions {
  listen: HostPort;
  routes: RouteConfig[];
  identity: () => IdentitySnapshot | undefined;
  /** Evaluates a request with the policy in force and records the decision. */
  decide: Decide;
  verifier: PeerVerifier;
  logger: Logger;
}

interface Target {
  route: Route;
  agent: PeerAgent;
}

export class OutboundProxy {
  private server: Server | undefined;
  private readonly proxy = httpProxy.createProxyServer({ xfwd: false, ws: true });
  private readonly routes: RouteTable;
  private readonly agents = new Map<string, PeerAgent>();
  private readonly tracker = new ConnectionTracker();
  private readonly targets = new WeakMap<IncomingMessage, Target>();

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
    const route = this.routes.resolve(authority);
    if (!route) return errorBody(403, 'no_route', { detail: `no outbound route for host "${authority}"` });
    const target = { route, agent: this.agents.get(route.key)! };
    this.targets.set(req, target);
    return target;
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const target = this.route(req);
    if ('error' in target) {
      sendError(res, target.reason === 'no_route' ? 403 : 400, target);
      return;
    }
    stripIdentityHeaders(req.headers);
    forwardableRequestHeaders(req.headers, false);
    void this.forward(req, res, target);
  }

  private async forward(req: IncomingMessage, res: ServerResponse, target: Target): Promise<void> {
    const options = this.proxyOptions(target);
    if (needsBufferedBody(req)) {
      const body = await bufferOrRefuse(req, res);
      if (!body) return;
      frameBufferedBody(req, body);
      options.buffer = Readable.from([body]);
    }
    this.proxy.web(req, res, options, (err: Error) => sendError(res, ...this.failure(err, req)));
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    guardUpgradeSocket(socket);
    const target = this.route(req);
    if ('error' in target) {
      sendRawError(socket, target.reason === 'no_route' ? 403 : 400, target);
      return;
    }
    stripIdentityHeaders(req.headers);
    forwardableRequestHeaders(req.headers, true);
    this.proxy.ws(req, socket, head, this.proxyOptions(target), (err: Error) => sendRawError(socket, ...this.failure(err, req)));
  }

  private proxyOptions(target: Target): httpProxy.ServerOptions {
    const { host, port } = target.route.address;
    return { target: `http://${host.includes(':') ? `[${host}]` : host}:${port}`, agent: target.agent };
  }

  /** Per-request egress authorization against the verified server of the bound connection. */
  private authorizeRequest(req: ClientRequest, peer: VerifiedPeer, own: IdentitySnapshot): OutboundError | undefined {
    const host = req.getHeader('host');
    const path = req.path;
    const q = path.indexOf('?');
    const decision = this.options.decide({
      action: 'http',
      direction: 'outbound',
      principal: own.svid.id,
      resource: agentResource(peer.id),
      peer: peer.id,
      http: { method: req.method, path: q === -1 ? path : path.slice(0, q), host: typeof host === 'string' ? host : '' },
    });
    return decision.allowed ? undefined : new OutboundError('policy_denied', `egress to ${peer.id} denied`, undefined, decision);
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
        return [403, errorBody(403, err.decision?.reason ?? 'policy_denied', { policies: err.decision?.policies ?? [] })];
      case 'svid_unavailable':
        return [503, errorBody(503, 'svid_unavailable', { detail: err.message })];
      default:
        return [502, errorBody(502, err.code, { detail: err.detail ? `${err.message} (${err.detail})` : err.message })];
    }
  }
}
