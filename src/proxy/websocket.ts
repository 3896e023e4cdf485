// WebSocket relay with per-message authorization. An accepted upgrade is not piped byte for
// byte: the far side is opened first as a `ws` client (offering the client's subprotocols),
// then the client handshake is completed with the subprotocol the far side chose, and from then
// on every text or binary message, in each direction, passes the gate before it is forwarded.
// A denied message is never forwarded: both sides are closed with 1008 and the reason code.
// Framing, masking, fragmentation and UTF-8 validation are `ws`'s job, never ours.
import { STATUS_CODES, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type ClientOptions, type RawData } from 'ws';
import { REASON_CODES, type Decision, type WebSocketContext } from '../authz/index.js';
import type { FrameCodec } from '../bus/frames.js';
import type { Logger } from '../telemetry/index.js';
import { stripHopByHop } from './headers.js';
import { errorBody, sendRawError } from './responses.js';

/** Largest message accepted from either side (a bigger one closes that side with 1009). */
export const MAX_MESSAGE_BYTES = 1024 * 1024;
/** Policy violation: the close code of a denied message (RFC 6455 §7.4.1). */
export const CLOSE_POLICY_VIOLATION = 1008;

/** How long the far side may take to accept the upgrade. */
const OPEN_TIMEOUT_MS = 30_000;
/** How long a closing handshake may take before both sockets are cut. */
const CLOSE_TIMEOUT_MS = 5_000;
/** A side stops being read while the other has this much unsent, until it drops below LOW_WATER. */
const HIGH_WATER_BYTES = MAX_MESSAGE_BYTES;
const LOW_WATER_BYTES = HIGH_WATER_BYTES / 4;
/** Body of a non-101 answer from the far side that is passed back to the client. */
const MAX_REFUSAL_BODY_BYTES = 64 * 1024;

/** Which end of the relay sent a message: the one that upgraded to us, or the one we opened. */
export type Side = 'client' | 'server';

export interface RelayedMessage {
  from: Side;
  data: Buffer;
  isBinary: boolean;
}

/** What the per-message gate answers; a Decision is one. */
export type MessageVerdict = Pick<Decision, 'allowed' | 'reason' | 'policies' | 'wouldDeny'>;

/** What a text-message inspector decides about one message. */
export interface InspectVerdict {
  /** Forward the message to the other side. */
  forward: boolean;
  /** A text message sent back to the sender instead (e.g. a JSON-RPC error). */
  reply?: string;
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** First significant byte (after JSON whitespace and a UTF-8 BOM) is `{` or `[`. */
/** Logs never carry the query string: tokens often travel there. */
function pathOnly(url: string | undefined): string {
  const q = (url ?? '').indexOf('?');
  return q === -1 ? (url ?? '') : url!.slice(0, q);
}

function looksLikeJson(data: Buffer): boolean {
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d || b === 0xef || b === 0xbb || b === 0xbf) continue;
    return b === 0x7b || b === 0x5b;
  }
  return false;
}

export interface RelayOptions {
  /** The accepted upgrade request, its socket and the bytes that followed its head. */
  req: IncomingMessage;
  socket: Duplex;
  head: Buffer;
  /**
   * Opens the far side (normally with openWebSocket), offering `protocols`: the client's
   * subprotocols. Resolves once it is open. A rejection with FarSideAnswer is passed back to the
   * client as that HTTP response; any other rejection goes to `refuse`.
   */
  open(protocols: string[]): Promise<WebSocket>;
  /** The per-message gate, asked before each text/binary message is forwarded. */
  authorize(message: RelayedMessage): MessageVerdict;
  /** Looks at each allowed text message before it is forwarded (default: forward everything). */
  inspect?(from: Side, text: string): InspectVerdict;
  /** Answers the pending upgrade when the far side could not be opened. */
  refuse(err: Error): void;
  /**
   * Signed streams (src/bus/frames.ts): asked once both sides are open; a codec makes frames
   * from its peer side be verified and unwrapped before anything else looks at them, and frames
   * towards it be wrapped after authorization.
   */
  codec?(): FrameCodec | undefined;
  /** Header lines ("name: value") added to the 101 sent to the client. */
  answerHeaders?: string[];
  /** Gets the stream's denials (info) and lifecycle (debug); give it the stream's identity as fields. */
  logger: Logger;
}

export interface WebSocketRelay {
  /** Closes both sides with `code` and `reason` (e.g. a revocation); no message passes after it. */
  close(code: number, reason: string): void;
  /** Resolves once both sides are closed (or the upgrade was refused). */
  readonly done: Promise<void>;
}

/** The far side answered the upgrade with something other than 101: relayed to the client as is. */
export class FarSideAnswer extends Error {
  constructor(
    readonly status: number,
    readonly headers: IncomingHttpHeaders,
    readonly body: Buffer,
  ) {
    super(`far side answered the upgrade with ${status}`);
  }
}

/** What a policy sees of a message. */
export function websocketContext(message: RelayedMessage): WebSocketContext {
  return { kind: message.isBinary ? 'binary' : 'text', size: message.data.length };
}

/** Where the far side's handshake goes: the connection's ws(s) URL, and the request target. */
export interface FarTarget {
  url: string;
  /** Sent verbatim: never normalized, so the far side gets exactly the path the policy saw. */
  path: string;
}

/**
 * The far side of an upgrade: `base` (an http(s):// or ws(s):// origin, optionally with a path
 * prefix) followed by the request's path and query. The path is appended, never resolved, so a
 * target like `//other-host/x` cannot change the host, and `/a/../b` stays what it was.
 */
export function farTarget(base: string, reqUrl: string | undefined): FarTarget {
  const url = new URL(base);
  const scheme = url.protocol === 'https:' || url.protocol === 'wss:' ? 'wss:' : 'ws:';
  let path = reqUrl ?? '/';
  if (!path.startsWith('/')) {
    try {
      const absolute = new URL(path);
      path = absolute.pathname + absolute.search;
    } catch {
      path = '/';
    }
  }
  return { url: `${scheme}//${url.host}/`, path: `${url.pathname.replace(/\/$/, '')}${path}` };
}

const HANDSHAKE_HEADERS = new Set([
  'connection',
  'upgrade',
  'sec-websocket-key',
  'sec-websocket-version',
  'sec-websocket-extensions',
  'sec-websocket-protocol',
  'sec-websocket-accept',
  'content-length',
  'transfer-encoding',
]);

/**
 * The request's headers for the far side's handshake: everything the proxy left on the request
 * (identity headers included) except the handshake's own, which the `ws` client writes itself.
 */
export function farSideHeaders(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined && !HANDSHAKE_HEADERS.has(name)) headers[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return headers;
}

/**
 * Opens a `ws` client to `target` offering `protocols`, with the relay's limits. Resolves once the
 * handshake completed, with the socket paused (the relay resumes it once both sides are wired,
 * so no message is emitted before anyone listens) and the 101 response, whose `.socket` is the
 * connection the handshake ran on. Rejects with FarSideAnswer for a non-101 answer.
 */
export function openWebSocket(target: FarTarget, protocols: string[], options: ClientOptions = {}): Promise<{ ws: WebSocket; response: IncomingMessage }> {
  return new Promise((resolve, reject) => {
    let ws: WebSocket;
    try {
      ws = new WebSocket(target.url, protocols, {
        handshakeTimeout: OPEN_TIMEOUT_MS,
        ...options,
        maxPayload: MAX_MESSAGE_BYTES,
        perMessageDeflate: false,
        autoPong: false,
        followRedirects: false,
        // `ws` takes the path from a parsed URL, which resolves dot segments and re-encodes; the
        // request line is written on end(), so setting the path here sends it verbatim.
        finishRequest: (request) => {
          request.path = target.path;
          request.end();
        },
      });
    } catch (err) {
      reject(err as Error);
      return;
    }
    let settled = false;
    let response: IncomingMessage | undefined;
    const settle = (fn: () => void): void => {
      if (settled) return;
      settled = true;
      fn();
    };
    // Stays attached: errors after the handshake are the relay's to log, but must never be unhandled.
    ws.on('error', (err) => settle(() => reject(err)));
    ws.once('upgrade', (res) => (response = res));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const finish = (): void => {
        settle(() => reject(new FarSideAnswer(res.statusCode ?? 502, res.headers, Buffer.concat(chunks))));
        ws.terminate();
      };
      res.on('data', (chunk: Buffer) => {
        if (size >= MAX_REFUSAL_BODY_BYTES) return;
        const part = chunk.subarray(0, MAX_REFUSAL_BODY_BYTES - size);
        size += part.length;
        chunks.push(part);
      });
      res.once('end', finish);
      res.once('error', finish);
    });
    ws.once('open', () => {
      ws.pause();
      settle(() => resolve({ ws, response: response! }));
    });
  });
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const KEY = /^[+/0-9A-Za-z]{22}==$/;

/** The subprotocols the client offered, or undefined when the header is malformed. */
export function offeredProtocols(req: IncomingMessage): string[] | undefined {
  const header = req.headers['sec-websocket-protocol'];
  if (header === undefined) return [];
  const protocols = header.split(',').map((p) => p.trim());
  if (protocols.some((p) => !TOKEN.test(p)) || new Set(protocols).size !== protocols.length) return undefined;
  return protocols;
}

/** What `ws` would refuse about the client's handshake; checked before the far side is opened. */
function handshakeProblem(req: IncomingMessage): string | undefined {
  if (req.method !== 'GET') return 'a WebSocket upgrade must be a GET';
  if (req.headers.upgrade?.toLowerCase() !== 'websocket') return 'Upgrade must be websocket';
  if (!KEY.test(req.headers['sec-websocket-key'] ?? '')) return 'missing or invalid Sec-WebSocket-Key';
  const version = req.headers['sec-websocket-version'];
  if (version !== '13' && version !== '8') return 'missing or unsupported Sec-WebSocket-Version';
  if (offeredProtocols(req) === undefined) return 'invalid Sec-WebSocket-Protocol';
  return undefined;
}

/** Completes client handshakes; the subprotocol is the one the far side selected. */
const selectedProtocol = new WeakMap<IncomingMessage, string>();
const acceptor = new WebSocketServer({
  noServer: true,
  clientTracking: false,
  maxPayload: MAX_MESSAGE_BYTES,
  perMessageDeflate: false,
  autoPong: false,
  handleProtocols: (_offered, req) => selectedProtocol.get(req) || false,
});
/** Extra header lines for the 101 a relay answers with (e.g. the signed-frames confirmation). */
const answerHeaders = new WeakMap<IncomingMessage, string[]>();
acceptor.on('headers', (headers: string[], req: IncomingMessage) => {
  const extra = answerHeaders.get(req);
  if (extra) headers.push(...extra);
});

/** Writes the far side's non-101 answer to the raw client socket and closes it. */
function relayAnswer(socket: Duplex, answer: FarSideAnswer): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const headers: Record<string, unknown> = { ...answer.headers };
  stripHopByHop(headers);
  headers['content-length'] = String(answer.body.length);
  headers['connection'] = 'close';
  let head = `HTTP/1.1 ${answer.status} ${STATUS_CODES[answer.status] ?? ''}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) head += `${name}: ${String(v)}\r\n`;
  }
  socket.end(Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), answer.body]));
}

/**
 * Relays one accepted upgrade: opens the far side, completes the client handshake, then
 * forwards messages in both directions, each one authorized first.
 */
export function relayWebSocket(options: RelayOptions): WebSocketRelay {
  const relay = new Relay(options);
  void relay.start();
  return relay;
}

class Relay implements WebSocketRelay {
  readonly done: Promise<void>;
  private finish!: () => void;
  private client: WebSocket | undefined;
  private server: WebSocket | undefined;
  /** Set once either side closes or a message is denied: nothing is forwarded after that. */
  private closing = false;
  /** A close requested before both sides were open, applied once they are. */
  private pendingClose: { code: number; reason: string } | undefined;
  private killTimer: NodeJS.Timeout | undefined;
  /** Sides not yet closed. */
  private openSides = 0;
  private codec: FrameCodec | undefined;

  constructor(private readonly options: RelayOptions) {
    this.done = new Promise((resolve) => (this.finish = resolve));
  }

  async start(): Promise<void> {
    const { req, socket, head, logger } = this.options;
    const problem = handshakeProblem(req);
    if (problem) {
      sendRawError(socket, 400, errorBody(400, 'bad_request', { detail: problem }));
      return this.finish();
    }
    let clientGone = false;
    const onClientGone = (): void => void (clientGone = true);
    socket.once('close', onClientGone);
    let far: WebSocket;
    try {
      far = await this.options.open(offeredProtocols(req)!);
    } catch (err) {
      if (err instanceof FarSideAnswer) relayAnswer(socket, err);
      else this.options.refuse(err as Error);
      return this.finish();
    } finally {
      socket.off('close', onClientGone);
    }
    if (clientGone || !socket.readable || !socket.writable || this.pendingClose) {
      logger.debug('websocket client left before the far side opened', { path: pathOnly(req.url) });
      far.terminate();
      socket.destroy();
      return this.finish();
    }
    if (far.protocol) selectedProtocol.set(req, far.protocol);
    if (this.options.answerHeaders) answerHeaders.set(req, this.options.answerHeaders);
    acceptor.handleUpgrade(req, socket, head, (client) => this.wire(client, far));
  }

  close(code: number, reason: string): void {
    if (!this.client || !this.server) {
      this.pendingClose ??= { code, reason };
      return;
    }
    this.shutdown(code, reason);
  }

  private wire(client: WebSocket, server: WebSocket): void {
    this.client = client;
    this.server = server;
    this.codec = this.options.codec?.();
    this.openSides = 2;
    this.pipe(client, server, 'client');
    this.pipe(server, client, 'server');
    this.options.logger.debug('websocket relay open', { path: pathOnly(this.options.req.url), protocol: server.protocol || undefined });
    server.resume();
  }

  private pipe(source: WebSocket, target: WebSocket, from: Side): void {
    source.on('message', (data: RawData, isBinary: boolean) => this.onMessage(source, target, from, data as Buffer, isBinary));
    // Control frames are relayed for liveness, but without their payload: 125 bytes a frame
    // would otherwise be a channel around the per-message policy.
    source.on('ping', () => {
      if (!this.closing && target.readyState === WebSocket.OPEN) target.ping();
    });
    source.on('pong', () => {
      if (!this.closing && target.readyState === WebSocket.OPEN) target.pong();
    });
    source.on('error', (err: NodeJS.ErrnoException) => {
      this.options.logger.debug('websocket error', { from, detail: err.code ?? err.message });
    });
    source.on('close', (code: number, reason: Buffer) => this.onClose(target, from, code, reason));
  }

  private onMessage(source: WebSocket, target: WebSocket, from: Side, data: Buffer, isBinary: boolean): void {
    if (this.closing) return;
    const codec = this.codec;
    if (codec && from === codec.peerSide) {
      const opened = codec.open(data, isBinary);
      if ('refused' in opened) {
        this.options.logger.info('websocket frame envelope refused; closing the stream', { from, reason: opened.refused, detail: opened.detail, path: pathOnly(this.options.req.url) });
        this.shutdown(CLOSE_POLICY_VIOLATION, opened.refused);
        return;
      }
      data = opened.data;
      isBinary = opened.isBinary;
    }
    // What goes to the peer side is sealed; what goes to the local agent is plain.
    const emit = (ws: WebSocket, payload: Buffer | string, binary: boolean, cb?: (err?: Error) => void): void => {
      if (codec && ws === (codec.peerSide === 'client' ? this.client : this.server)) {
        let sealed: string;
        try {
          sealed = codec.seal(typeof payload === 'string' ? Buffer.from(payload) : payload, binary);
        } catch (err) {
          // No usable SVID to sign with (e.g. it expired during an issuer outage): nothing unsigned goes out.
          this.options.logger.warn('cannot sign a websocket frame; closing the stream', { error: err as Error });
          this.shutdown(CLOSE_POLICY_VIOLATION, 'svid_unavailable');
          return;
        }
        ws.send(sealed, { binary: false }, cb);
      } else ws.send(payload, { binary }, cb);
    };
    let verdict: MessageVerdict;
    try {
      verdict = this.options.authorize({ from, data, isBinary });
    } catch (err) {
      this.options.logger.error('websocket message authorization failed', { from, error: err as Error });
      verdict = { allowed: false, reason: 'internal_error', policies: [], wouldDeny: false };
    }
    if (!verdict.allowed) {
      const kind = isBinary ? 'binary' : 'text';
      this.options.logger.info('websocket message denied; closing the stream', { from, kind, size: data.length, reason: verdict.reason, policies: verdict.policies, path: pathOnly(this.options.req.url) });
      this.shutdown(CLOSE_POLICY_VIOLATION, verdict.reason);
      return;
    }
    if (this.options.inspect) {
      let inspected: InspectVerdict;
      try {
        inspected = this.inspect(from, data, isBinary);
      } catch (err) {
        this.options.logger.error('websocket message inspection failed; closing the stream', { from, error: err as Error });
        this.shutdown(CLOSE_POLICY_VIOLATION, 'internal_error');
        return;
      }
      if (inspected.reply !== undefined && source.readyState === WebSocket.OPEN) emit(source, inspected.reply, false);
      if (!inspected.forward) return;
    }
    if (target.readyState !== WebSocket.OPEN) return;
    emit(target, data, isBinary, (err) => {
      if (!err && source.isPaused && !this.closing && target.bufferedAmount < LOW_WATER_BYTES) source.resume();
    });
    // Backpressure: stop reading the sender while the receiver's side has too much unsent.
    if (target.bufferedAmount >= HIGH_WATER_BYTES) source.pause();
  }

  /**
   * Text is inspected as it is (`ws` has already checked it is UTF-8). Binary frames are too
   * when they look like JSON: servers commonly parse whatever the opcode, so a JSON-RPC call in
   * a binary frame is the same call. JSON-looking binary that is not UTF-8 is refused.
   */
  private inspect(from: Side, data: Buffer, isBinary: boolean): InspectVerdict {
    if (!isBinary) return this.options.inspect!(from, data.toString('utf8'));
    if (!looksLikeJson(data)) return { forward: true };
    let text: string;
    try {
      text = STRICT_UTF8.decode(data);
    } catch {
      this.options.logger.info('websocket binary JSON-like message is not UTF-8; refused', { from });
      return { forward: false };
    }
    return this.options.inspect!(from, text);
  }

  /** One side closed: close the other the same way, unless the relay is already shutting down. */
  private onClose(target: WebSocket, from: Side, code: number, reason: Buffer): void {
    this.openSides--;
    if (!this.closing) {
      this.closing = true;
      this.options.logger.debug('websocket closed', { from, code, reason: reason.toString() });
      target.resume();
      // On a signed stream, what the peer side puts in a close frame is not signed: pass on only
      // a standard code and a Sigil reason code, never free text (it would be an unsigned,
      // unauthorized channel around the per-frame signatures).
      if (this.codec && from === this.codec.peerSide) [code, reason] = signedStreamClose(code, reason);
      closeLike(target, code, reason);
      this.armKillTimer();
    }
    if (this.openSides === 0) {
      clearTimeout(this.killTimer);
      this.finish();
    }
  }

  private shutdown(code: number, reason: string): void {
    if (this.closing) return;
    this.closing = true;
    for (const ws of [this.client!, this.server!]) {
      // A paused side could not read the closing handshake's answer.
      ws.resume();
      if (ws.readyState !== WebSocket.OPEN) continue;
      try {
        ws.close(code, reason);
      } catch {
        // An invalid code or a reason over 123 bytes (from a caller of close()): cut instead.
        ws.terminate();
      }
    }
    this.armKillTimer();
  }

  private armKillTimer(): void {
    this.killTimer ??= setTimeout(() => {
      this.client?.terminate();
      this.server?.terminate();
    }, CLOSE_TIMEOUT_MS);
    this.killTimer.unref();
  }
}

/**
 * Closes `ws` the way its counterpart was closed: 1006 (no closing handshake) is mirrored as a
 * cut connection, 1005 (no status) as a close without a code, anything else as is.
 */
function signedStreamClose(code: number, reason: Buffer): [number, Buffer] {
  const text = reason.toString('utf8');
  if (code === 1008 && (REASON_CODES as readonly string[]).includes(text)) return [code, reason];
  if (code === 1000 || code === 1001 || code === 1011 || code === 1005 || code === 1006) return [code, Buffer.alloc(0)];
  return [1000, Buffer.alloc(0)];
}

function closeLike(ws: WebSocket, code: number, reason: Buffer): void {
  try {
    if (code === 1006) ws.terminate();
    else if (code === 1005) ws.close();
    else ws.close(code, reason);
  } catch {
    ws.terminate();
  }
}
