// The agent-facing side of the bus (`bus.local`, loopback): a WebSocket endpoint `/bus` with
// small JSON frames, and `POST /bus/publish` for clients that only publish. The agent never
// sees keys or envelopes: it publishes data and receives data plus the verified sender.
// Frames and bodies are specified in docs/bus.md ("The local bus API").
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { HostPort } from '../config/index.js';
import { listen } from '../proxy/http-common.js';
import { errorBody, sendError, sendRawError } from '../proxy/responses.js';
import type { LiveWork } from '../revocation/index.js';
import type { SpiffeId } from '../spiffe/index.js';
import type { Logger } from '../telemetry/index.js';
import { BusRefusal, type BusService, type DeliveredMessage, type PublishRequest } from './service.js';

/** Subscriptions one WebSocket client may hold. */
export const MAX_SUBSCRIPTIONS_PER_CLIENT = 100;

/**
 * Unsent bytes a local subscriber may fall behind by; beyond it the sidecar closes the
 * connection (1008, bus_buffer_full) instead of buffering without bound.
 */
export const MAX_SUBSCRIBER_BACKLOG_BYTES = 16 * 1024 * 1024;

export interface LocalBusApiOptions {
  listen: HostPort;
  /** Largest request body / frame accepted from the agent (bytes). */
  maxBytes: number;
  logger: Logger;
  /** Our own agent (its revocation cancels the local subscriptions). */
  self?: () => SpiffeId | undefined;
  /** Registers live work with the revocation registry; returns its removal. */
  live?: (work: LiveWork) => () => void;
}

/** Why a publish request (HTTP body or frame) is malformed, or its parsed form. */
export function parsePublish(body: unknown): PublishRequest | string {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'must be a JSON object';
  const b = body as Record<string, unknown>;
  for (const key of Object.keys(b)) {
    if (!['op', 'ref', 'subject', 'data', 'bytes', 'audience', 'delegation'].includes(key)) return `unknown field "${key}"`;
  }
  if (typeof b.subject !== 'string') return 'subject: must be a string';
  if (b.data !== undefined && b.bytes !== undefined) return 'data and bytes are mutually exclusive';
  const request: PublishRequest = { subject: b.subject };
  if (b.bytes !== undefined) {
    if (typeof b.bytes !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(b.bytes)) return 'bytes: must be a base64 string';
    request.bytes = Buffer.from(b.bytes, 'base64');
  } else if (b.data !== undefined) {
    request.data = b.data;
  }
  if (b.audience !== undefined) {
    if (!Array.isArray(b.audience) || b.audience.length === 0 || !b.audience.every((a) => typeof a === 'string')) {
      return 'audience: must be a non-empty array of SPIFFE IDs or patterns';
    }
    request.audience = b.audience as string[];
  }
  if (b.delegation !== undefined) {
    if (typeof b.delegation !== 'string' || b.delegation.length === 0) return 'delegation: must be a delegation token (string)';
    request.delegation = b.delegation;
  }
  return request;
}

/** The frame a delivered message becomes (bytes as standard base64). */
export function messageFrame(subscription: string, m: DeliveredMessage): Record<string, unknown> {
  const frame: Record<string, unknown> = { op: 'message', id: subscription, subject: m.subject, from: m.from, jti: m.jti, iat: m.iat, exp: m.exp };
  if (m.audience) frame.audience = m.audience;
  if (m.delegation) frame.delegation = { sub: m.delegation.sub, actors: m.delegation.actors, depth: m.delegation.depth, scope: m.delegation.scope, task: m.delegation.task };
  if (m.bytes !== undefined) frame.bytes = m.bytes.toString('base64');
  else frame.data = m.data;
  return frame;
}

/** Any failure as a refusal the agent can read; an unexpected one is logged, never thrown on. */
function asRefusal(err: unknown, logger: Logger): BusRefusal {
  if (err instanceof BusRefusal) return err;
  logger.error('local bus request failed unexpectedly', { error: err as Error });
  return new BusRefusal('internal_error', 503, 'the request could not be handled');
}

export class LocalBusApi {
  private server: Server | undefined;
  private readonly wss = new WebSocketServer({ noServer: true });

  constructor(
    private readonly bus: BusService,
    private readonly options: LocalBusApiOptions,
  ) {
    this.wss.options.maxPayload = options.maxBytes;
  }

  async start(): Promise<AddressInfo> {
    const server = createServer({ headersTimeout: 20_000, requestTimeout: 60_000 });
    this.server = server;
    server.on('request', (req, res) => this.onRequest(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    return listen(server, this.options.listen);
  }

  async stop(): Promise<void> {
    for (const ws of this.wss.clients) ws.close(1001, 'sidecar shutting down');
    this.wss.close();
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private onRequest(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/bus/publish') return sendError(res, 404, errorBody(404, 'bad_request', { detail: 'POST /bus/publish, or a WebSocket on /bus' }));
    if (req.method !== 'POST') return sendError(res, 405, errorBody(405, 'bad_request', { detail: 'use POST' }));
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > this.options.maxBytes) tooLarge = true;
      else chunks.push(c);
    });
    req.on('error', () => undefined);
    req.on('end', () => {
      if (tooLarge) return sendError(res, 413, errorBody(413, 'body_too_large', { detail: `over ${this.options.maxBytes} bytes` }), true);
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return sendError(res, 400, errorBody(400, 'bad_request', { detail: 'body must be JSON' }));
      }
      const parsed = parsePublish(body);
      if (typeof parsed === 'string') return sendError(res, 400, errorBody(400, 'bad_request', { detail: parsed }));
      try {
        const published = this.bus.publish(parsed);
        const payload = JSON.stringify(published);
        res.writeHead(202, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
        res.end(payload);
      } catch (err) {
        const r = asRefusal(err, this.options.logger);
        sendError(res, r.status, errorBody(r.status, r.reason, { detail: r.message, ...(r.decision ? { policies: r.decision.policies } : {}) }));
      }
    });
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => undefined);
    if ((req.url ?? '/').split('?')[0] !== '/bus') return sendRawError(socket, 404, errorBody(404, 'bad_request', { detail: 'the bus WebSocket is /bus' }));
    this.wss.handleUpgrade(req, socket, head, (ws) => this.serve(ws));
  }

  private serve(ws: WebSocket): void {
    const subscriptions = new Map<string, () => void>();
    const send = (frame: Record<string, unknown>): void => {
      if (ws.readyState !== ws.OPEN) return;
      if (ws.bufferedAmount > MAX_SUBSCRIBER_BACKLOG_BYTES) {
        this.options.logger.warn('closing a local bus client that stopped reading', { backlog: ws.bufferedAmount });
        ws.close(1008, 'bus_buffer_full');
        return;
      }
      let text: string;
      try {
        text = JSON.stringify(frame);
      } catch {
        text = JSON.stringify({ op: 'error', reason: 'envelope_malformed', message: 'a message could not be serialized for delivery' });
      }
      ws.send(text);
    };
    const error = (reason: string, message: string, extra: Record<string, unknown> = {}): void => send({ op: 'error', reason, message, ...extra });
    ws.on('error', () => undefined);
    // A revocation of our own agent cancels its subscriptions: the client is closed with 1008.
    const self = this.options.self?.();
    const unregister = self && this.options.live?.({ kind: 'subscription', agents: [self], close: () => ws.close(1008, 'revoked') });
    ws.on('close', () => {
      unregister?.();
      for (const remove of subscriptions.values()) remove();
      subscriptions.clear();
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return error('bad_request', 'frames are JSON text');
      let frame: Record<string, unknown>;
      try {
        const parsed: unknown = JSON.parse(data.toString('utf8'));
        if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
        frame = parsed as Record<string, unknown>;
      } catch {
        return error('bad_request', 'a frame must be a JSON object');
      }
      const ref = typeof frame.ref === 'string' || typeof frame.ref === 'number' ? { ref: frame.ref } : {};
      switch (frame.op) {
        case 'subscribe': {
          const id = frame.id;
          if (typeof id !== 'string' || id.length === 0 || id.length > 128) return error('bad_request', 'subscribe: id must be a string of 1-128 characters', ref);
          if (subscriptions.has(id)) return error('bad_request', `subscription ${id} exists`, { id });
          if (subscriptions.size >= MAX_SUBSCRIPTIONS_PER_CLIENT) return error('bad_request', `at most ${MAX_SUBSCRIPTIONS_PER_CLIENT} subscriptions`, { id });
          if (typeof frame.subject !== 'string') return error('bad_request', 'subscribe: subject must be a string', { id });
          try {
            subscriptions.set(id, this.bus.subscribe(frame.subject, (m) => send(messageFrame(id, m))));
          } catch (err) {
            const r = asRefusal(err, this.options.logger);
            return error(r.reason, r.message, { id });
          }
          return send({ op: 'subscribed', id, subject: frame.subject });
        }
        case 'unsubscribe': {
          const id = String(frame.id);
          const remove = subscriptions.get(id);
          if (!remove) return error('bad_request', `no subscription ${id}`, { id });
          remove();
          subscriptions.delete(id);
          return send({ op: 'unsubscribed', id });
        }
        case 'publish': {
          const parsed = parsePublish(frame);
          if (typeof parsed === 'string') return error('bad_request', parsed, ref);
          try {
            const published = this.bus.publish(parsed);
            return send({ op: 'published', ...ref, ...published });
          } catch (err) {
            const r = asRefusal(err, this.options.logger);
            return error(r.reason, r.message, ref);
          }
        }
        default:
          return error('bad_request', 'op must be subscribe, unsubscribe or publish', ref);
      }
    });
  }
}
