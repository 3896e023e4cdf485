// A keep-alive connection pool to one route's peer sidecar. Each new connection is dialed with
// the SVID current at that moment and handed to HTTP only after the server's SVID verified
// against its own trust domain's bundle, matched the route's expected ID and passed the egress
// `connect` check. Every request — on a new or a reused connection — is then authorized against
// the verified server when the socket is bound to it, before any request byte is written.
import { Agent as HttpAgent, type AgentOptions, type ClientRequest, type ClientRequestArgs } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type SecureContext, type TLSSocket } from 'node:tls';
import { agentResource, type Decide, type Decision } from '../authz/index.js';
import { isUsable, type IdentitySnapshot } from '../identity/index.js';
import { ALPN_PROTOCOLS, clientSecureContext, MIN_TLS_VERSION, PeerVerificationError, type PeerVerifier, type VerifiedPeer } from '../tls/index.js';
import { tlsFailureReason, type HandshakeObservation } from './http-common.js';
import type { Route } from './routes.js';
import { svidKeys, type LiveWork } from '../revocation/index.js';

export type OutboundFailure = 'svid_unavailable' | 'peer_unreachable' | 'peer_untrusted' | 'peer_id_mismatch' | 'policy_denied';

export class OutboundError extends Error {
  constructor(
    readonly code: OutboundFailure,
    message: string,
    readonly detail?: string,
    readonly decision?: Decision,
    /** A JSON-RPC answer to give the agent instead of the HTTP error (refused JSON-RPC calls). */
    readonly jsonRpcReply?: unknown,
  ) {
    super(message);
  }
}

export interface PeerAgentDeps {
  identity: () => IdentitySnapshot | undefined;
  /**
   * Called when a request is bound to a verified connection, before any of its bytes are
   * written; returning an error refuses the request.
   */
  onRequestBound: (req: ClientRequest, peer: VerifiedPeer, own: IdentitySnapshot) => OutboundError | undefined;
  /** Records a TLS handshake outcome (metrics). */
  observeHandshake: (observation: HandshakeObservation) => void;
  /** Evaluates a request with the policy in force and records the decision. */
  decide: Decide;
  verifier: PeerVerifier;
  /** Registers live work so a revocation can cut it; returns its removal. */
  live?: (work: LiveWork) => () => void;
}

interface PooledPeer {
  peer: VerifiedPeer;
  /** Identity generation (our SVID + bundles) the connection was made and verified under. */
  generation: number;
}

const HANDSHAKE_TIMEOUT_MS = 10_000;
/** A pooled connection is not reused this close to its server certificate's expiry. */
const EXPIRY_MARGIN_MS = 1_000;

export class PeerAgent extends HttpAgent {
  private readonly peers = new WeakMap<Duplex, PooledPeer>();
  /** Connections a request took over (WebSocket upgrades): out of the pool, still re-authorized. */
  private readonly upgraded = new Set<Duplex>();
  private context: { generation: number; context: SecureContext } | undefined;

  constructor(private readonly route: Route, private readonly deps: PeerAgentDeps, options: AgentOptions = {}) {
    // FIFO: Node skips destroyed sockets only at the head of the free list.
    super({ keepAlive: true, maxSockets: 256, scheduling: 'fifo', ...options });
  }

  // Registered here, inside the ClientRequest constructor, so this listener runs before any
  // other 'socket' listener and before Node flushes the request onto the socket.
  addRequest(req: ClientRequest, options: ClientRequestArgs): void {
    this.pruneIdleSockets();
    req.once('socket', (socket: Socket) => this.authorizeRequest(req, socket));
    // @types/node omits addRequest from Agent's declared surface; it is Node's public hook.
    (HttpAgent.prototype as unknown as { addRequest(r: ClientRequest, o: ClientRequestArgs): void }).addRequest.call(this, req, options);
  }

  /**
   * A connection goes back to the pool only while it is current: made with our current SVID,
   * verified under the current bundles, and the server's certificate path valid for a while yet.
   */
  override keepSocketAlive(socket: Socket): boolean {
    if (!this.isCurrent(socket, this.deps.identity(), Date.now())) return false;
    // Node's implementation returns true after arming keep-alive; @types/node declares void.
    return super.keepSocketAlive(socket) as unknown as boolean;
  }

  private isCurrent(socket: Duplex, current: IdentitySnapshot | undefined, now: number): boolean {
    const pooled = this.peers.get(socket);
    return !!pooled && !!current && pooled.generation === current.generation && now + EXPIRY_MARGIN_MS < pooled.peer.validTo;
  }

  /**
   * Idle connections that went stale while pooled (our SVID rotated, the server's certificate is
   * about to expire) are closed before Node picks one, so a request never lands on one.
   */
  private pruneIdleSockets(): void {
    // Runs on every request over every idle socket: the identity and the clock are read once.
    const current = this.deps.identity();
    const now = Date.now();
    for (const sockets of Object.values(this.freeSockets)) {
      // In place: Node owns these arrays (an empty one is handled like a missing one).
      for (let i = (sockets?.length ?? 0) - 1; i >= 0; i--) {
        const socket = sockets![i]!;
        if (this.isCurrent(socket, current, now)) continue;
        sockets!.splice(i, 1);
        socket.destroy();
      }
    }
  }

  /**
   * The server of a long-lived connection (an upgraded WebSocket), verified again when our
   * bundles changed since it was last verified: a CA or trust domain withdrawn meanwhile (a
   * bundle file edited, the Workload API dropping it) means it is no longer trusted. Undefined
   * when it is not, or when we have no identity.
   */
  currentPeerOf(socket: Duplex): VerifiedPeer | undefined {
    const pooled = this.peers.get(socket);
    const current = this.deps.identity();
    if (!pooled || !current) return undefined;
    if (pooled.generation !== current.generation) {
      try {
        pooled.peer = this.deps.verifier.verifySocket(socket as TLSSocket, current.bundles);
      } catch {
        return undefined;
      }
      pooled.generation = current.generation;
    }
    return Date.now() < pooled.peer.validTo ? pooled.peer : undefined;
  }

  /** The verified server of a connection this agent made (e.g. the one a WebSocket upgraded). */
  peerOf(socket: Duplex): VerifiedPeer | undefined {
    return this.peers.get(socket)?.peer;
  }

  /** Connections open to this route's peer: pooled, in use by HTTP, or carrying a WebSocket. */
  get connectionCount(): number {
    let n = this.upgraded.size;
    for (const list of [...Object.values(this.sockets), ...Object.values(this.freeSockets)]) n += list?.length ?? 0;
    return n;
  }

  /**
   * After a policy change: close connections whose `connect` is no longer allowed — pooled ones
   * and the ones an upgrade took out of the pool.
   */
  reauthorizeConnections(): void {
    const own = this.deps.identity();
    for (const list of [...Object.values(this.sockets), ...Object.values(this.freeSockets), [...this.upgraded]]) {
      for (const socket of list ?? []) {
        const pooled = this.peers.get(socket);
        if (!pooled || !own) continue;
        const decision = this.deps.decide({
          action: 'connect',
          direction: 'outbound',
          principal: own.svid.id,
          resource: agentResource(pooled.peer.id),
          peer: pooled.peer.id,
        });
        if (!decision.allowed) socket.destroy();
      }
    }
  }

  /** On an identity change idle connections are closed, so the next request dials anew. */
  dropIdleSockets(): void {
    for (const sockets of Object.values(this.freeSockets)) {
      for (const socket of sockets ?? []) socket.destroy();
    }
  }

  // Returning undefined makes http.Agent wait for the callback (Node's async createConnection).
  override createConnection(_options: ClientRequestArgs, callback?: (err: Error | null, socket: Duplex) => void): Duplex {
    this.dial().then(
      (socket) => callback!(null, socket),
      (err: Error) => callback!(err, undefined as unknown as Duplex),
    );
    return undefined as unknown as Duplex;
  }

  private authorizeRequest(req: ClientRequest, socket: Socket): void {
    const pooled = this.peers.get(socket);
    const own = this.deps.identity();
    if (!pooled || !own || Date.now() >= pooled.peer.validTo) {
      req.destroy(new OutboundError('peer_untrusted', 'connection has no currently valid verified peer'));
      return;
    }
    // Destroying the request here destroys the socket too, so Node's flush writes nothing.
    const refusal = this.deps.onRequestBound(req, pooled.peer, own);
    if (refusal) {
      req.destroy(refusal);
      return;
    }
    // Only upgrade requests listen for 'upgrade': without a listener Node destroys a socket that
    // an unexpected 101 would otherwise hand over to nobody.
    if (req.getHeader('upgrade') !== undefined) {
      req.once('upgrade', (_res: unknown, upgradedSocket: Duplex) => {
        this.upgraded.add(upgradedSocket);
        upgradedSocket.once('close', () => this.upgraded.delete(upgradedSocket));
      });
    }
  }

  private secureContext(snapshot: IdentitySnapshot): SecureContext {
    if (this.context?.generation !== snapshot.generation) {
      this.context = { generation: snapshot.generation, context: clientSecureContext(snapshot) };
    }
    return this.context.context;
  }

  private dial(): Promise<TLSSocket> {
    const snapshot = this.deps.identity();
    if (!snapshot || !isUsable(snapshot.svid)) {
      return Promise.reject(new OutboundError('svid_unavailable', 'this sidecar has no valid SVID to present'));
    }
    const { host, port } = this.route.address;
    const started = process.hrtime.bigint();
    const failed = (reason: string): void => this.deps.observeHandshake({ reporter: 'outbound', result: 'failure', reason });
    return new Promise((resolve, reject) => {
      const socket = tlsConnect({
        host,
        port,
        secureContext: this.secureContext(snapshot),
        ALPNProtocols: ALPN_PROTOCOLS,
        minVersion: MIN_TLS_VERSION,
        // The SPIFFE check below replaces hostname and CA checks: identity is the URI SAN.
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
      });
      socket.setTimeout(HANDSHAKE_TIMEOUT_MS, () => socket.destroy(new Error('TLS handshake timed out')));
      let secured = false;
      socket.once('error', (err: NodeJS.ErrnoException) => {
        if (!secured) failed(err.code === 'ECONNREFUSED' || err.code === 'ETIMEDOUT' ? 'peer_unreachable' : tlsFailureReason(err));
        reject(new OutboundError('peer_unreachable', `cannot reach ${host}:${port}`, err.code ?? err.message));
      });
      socket.once('secureConnect', () => {
        secured = true;
        socket.setTimeout(0);
        try {
          resolve(this.admit(socket, snapshot));
          this.deps.observeHandshake({ reporter: 'outbound', result: 'success', reason: 'ok', seconds: Number(process.hrtime.bigint() - started) / 1e9 });
        } catch (err) {
          const e = err as OutboundError;
          // A connect denial is a policy outcome on a good handshake; anything else failed it.
          if (e.code === 'policy_denied') this.deps.observeHandshake({ reporter: 'outbound', result: 'success', reason: 'ok' });
          else failed(e.code === 'peer_untrusted' ? (e.detail ?? 'peer_untrusted') : e.code);
          socket.destroy();
          reject(err);
        }
      });
    });
  }

  private admit(socket: TLSSocket, snapshot: IdentitySnapshot): TLSSocket {
    let peer: VerifiedPeer;
    try {
      peer = this.deps.verifier.verifySocket(socket, snapshot.bundles);
    } catch (err) {
      const detail = err instanceof PeerVerificationError ? err.detail : 'internal_error';
      throw new OutboundError('peer_untrusted', `server at ${this.route.address.host}:${this.route.address.port} presented an untrusted SVID`, detail);
    }
    if (!this.route.expected.matches(peer.id)) {
      throw new OutboundError('peer_id_mismatch', `server is ${peer.id}, route ${this.route.host} expects ${this.route.expected}`);
    }
    const decision = this.deps.decide({
      action: 'connect',
      direction: 'outbound',
      principal: snapshot.svid.id,
      resource: agentResource(peer.id),
      peer: peer.id,
    });
    if (!decision.allowed) throw new OutboundError('policy_denied', `egress to ${peer.id} denied`, undefined, decision);
    this.peers.set(socket, { peer, generation: snapshot.generation });
    const unregister = this.deps.live?.({ kind: 'connection', agents: [peer.id, snapshot.svid.id], svid: svidKeys(peer.serial, peer.leafHash), close: () => socket.destroy() });
    if (unregister) socket.once('close', unregister);
    return socket;
  }
}
