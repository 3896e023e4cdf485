// JSON-RPC over HTTP at the proxy edges (both directions): which request bodies are inspected,
// reading them (bounded), the per-call authorization request, answering refusals, and the
// tools/list response filter. The pure parsing and reply building live in jsonrpc.ts.
//
// Which bodies are inspected. Every request that has a body, whatever its method and declared
// content type, as soon as its first significant byte is `{` or `[` (leading JSON whitespace,
// NUL and byte-order-mark bytes skipped, so UTF-16/32 or BOM-prefixed JSON is caught and
// refused as a parse error); and every body declared `application/json` / `application/*+json`.
// Many servers parse a body as JSON without looking at Content-Type or the method (Go's
// json.NewDecoder, Starlette's request.json()), so trusting the header would let a call through
// unchecked. Inspected bodies are buffered up to DEFAULT_MAX_BODY_BYTES (413 `body_too_large`
// beyond, nothing forwarded) and forwarded from the buffer with an exact Content-Length; other
// bodies stream through untouched after the few bytes it took to decide.
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { actionForJsonRpcMethod, agentResource, type AuthzRequest, type Decision, type Direction, type HttpContext, type Resource } from '../authz/index.js';
import type { SpiffeId } from '../spiffe/index.js';
import type { Logger } from '../telemetry/index.js';
import { BodyTooLargeError, DEFAULT_MAX_BODY_BYTES } from './http-common.js';
import {
  bodyKind,
  filterSseEvent,
  filterToolsListResult,
  judgeCalls,
  parseJsonRpc,
  SseSplitter,
  sseEventText,
  unfilterableReply,
  type AllowedTool,
  type CallsVerdict,
  type FilterContext,
  type JsonRpcCall,
  type JsonRpcParse,
} from './jsonrpc.js';
import { errorBody, sendError } from './responses.js';

/**
 * Internal per-request reference (outbound): set by the outbound proxy on the request it
 * forwards so the per-request hook can find the calls parsed from its body. Any copy sent by
 * the agent is removed first (it is an x-sigil-* header); the peer sidecar strips it too.
 */
export const REQUEST_REF_HEADER = 'x-sigil-request-id';

/** Upper bound for a buffered tools/list answer, and for one SSE event of it. */
export const DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

export type RequestBody =
  /** No body, or one that needs no inspection: forward the request as it is. */
  | { kind: 'empty' }
  /** Buffered (forward from `body`, exact Content-Length) and classified. */
  | { kind: 'buffered'; body: Buffer; rpc: JsonRpcParse }
  /** Not JSON: forward `stream` (the bytes read to decide, then the rest). */
  | { kind: 'streamed'; stream: Readable };

function hasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const length = req.headers['content-length'];
  return length !== undefined && length !== '0';
}

function declaredJson(req: IncomingMessage): boolean {
  return bodyKind(req.headers['content-type']) === 'json';
}

/** JSON whitespace, NUL, and the bytes of UTF-8/16/32 byte-order marks. */
function skippable(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d || byte === 0x00 || byte === 0xef || byte === 0xbb || byte === 0xbf || byte === 0xfe || byte === 0xff;
}

interface Peeked {
  chunks: Buffer[];
  size: number;
  /** First significant byte, if the body has one. */
  first?: number;
  ended: boolean;
}

/** Reads until the first significant byte (or the end), then pauses `req`. */
function peek(req: IncomingMessage, limit: number): Promise<Peeked> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      for (const byte of chunk) {
        if (skippable(byte)) continue;
        req.pause();
        cleanup();
        resolve({ chunks, size, first: byte, ended: false });
        return;
      }
      if (size > limit) {
        cleanup();
        req.resume();
        reject(new BodyTooLargeError(limit));
      }
    };
    const onEnd = (): void => {
      cleanup();
      resolve({ chunks, size, ended: true });
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onError);
  });
}

/** Reads the rest of `req` after `start`, up to `limit` bytes in all. */
function collect(req: IncomingMessage, start: Peeked, limit: number): Promise<Buffer> {
  if (start.size > limit) {
    req.resume();
    return Promise.reject(new BodyTooLargeError(limit));
  }
  // `req.readableEnded`: the whole body had arrived before peek() ran (the request waited on
  // something async first, e.g. a delegation token's verification), so peek() took the last
  // chunk and 'end' was emitted right after it removed its listener: nothing more will come.
  if (start.ended || req.readableEnded) return Promise.resolve(Buffer.concat(start.chunks));
  return new Promise((resolve, reject) => {
    const chunks = [...start.chunks];
    let size = start.size;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        req.off('data', onData);
        req.resume();
        reject(new BodyTooLargeError(limit));
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('error', reject);
    req.resume();
  });
}

/**
 * Reads a request body as far as needed to classify it. `force` buffers it whatever it holds
 * (for bodies http-proxy cannot frame itself). Answers 413/400 itself and returns undefined
 * when the body is too large or broke off; nothing is forwarded then.
 */
export async function readRequestBody(
  req: IncomingMessage,
  res: ServerResponse,
  opts: { force?: boolean; limit?: number; inspect?: boolean } = {},
): Promise<RequestBody | undefined> {
  // Not inspecting (a policy that cannot tell calls apart) leaves the body fully streamed.
  if (!hasBody(req) || (opts.inspect === false && !opts.force)) return { kind: 'empty' };
  // A compressed body cannot be inspected without inflating it, and servers do inflate: refuse.
  const encoding = req.headers['content-encoding'];
  if (opts.inspect !== false && encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
    sendError(res, 415, errorBody(415, 'bad_request', { detail: `Content-Encoding "${encoding}" is not accepted: bodies are inspected for JSON-RPC calls` }), true);
    req.resume();
    return undefined;
  }
  const limit = opts.limit ?? DEFAULT_MAX_BODY_BYTES;
  try {
    const start = await peek(req, limit);
    const json = start.first === 0x7b || start.first === 0x5b || declaredJson(req);
    if (json || opts.force) {
      const body = await collect(req, start, limit);
      return { kind: 'buffered', body, rpc: json ? parseJsonRpc(body) : { kind: 'none' } };
    }
    const stream = new PassThrough();
    for (const chunk of start.chunks) stream.write(chunk);
    if (start.ended) stream.end();
    else req.pipe(stream);
    return { kind: 'streamed', stream };
  } catch (err) {
    if (err instanceof BodyTooLargeError) sendError(res, 413, errorBody(413, 'body_too_large', { detail: err.message }), true);
    else sendError(res, 400, errorBody(400, 'bad_request', { detail: 'request body could not be read' }), true);
    return undefined;
  }
}

/** A JSON answer with an exact Content-Length. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const payload = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
}

export interface CallScope {
  direction: Direction;
  /** The caller: the verified peer inbound, our own agent outbound. */
  principal: SpiffeId;
  /** The verified agent at the other end of the connection. */
  peer: SpiffeId;
  /** The agent serving the call (and its tools): ours inbound, the peer outbound. */
  serving: SpiffeId;
  http: HttpContext;
}

/** The resource of a call: the Tool for tools/call, else the serving agent. */
export function callResource(call: JsonRpcCall, serving: SpiffeId): Resource {
  return call.method === 'tools/call' && call.tool !== undefined ? { type: 'Tool', name: call.tool, agent: serving } : agentResource(serving);
}

export function callRequest(call: JsonRpcCall, scope: CallScope): AuthzRequest {
  return {
    action: actionForJsonRpcMethod(call.method),
    direction: scope.direction,
    principal: scope.principal,
    resource: callResource(call, scope.serving),
    peer: scope.peer,
    http: scope.http,
    jsonrpc: call.tool === undefined ? { method: call.method } : { method: call.method, tool: call.tool },
  };
}

/**
 * Authorizes every call of a body with `decide` (see jsonrpc.ts for the batch semantics).
 * `wouldDeny` is the first dry-run "would deny" among the calls, so a forwarded body is still
 * attributed as would_deny in the request metrics.
 */
export function authorizeCalls(rpc: { batch: boolean; calls: JsonRpcCall[] }, scope: CallScope, decide: (request: AuthzRequest) => Decision): CallsVerdict & { wouldDeny?: Decision } {
  let wouldDeny: Decision | undefined;
  const verdict = judgeCalls(rpc, (call) => {
    const d = decide(callRequest(call, scope));
    if (d.wouldDeny && !wouldDeny) wouldDeny = d;
    return d;
  });
  return wouldDeny ? { ...verdict, wouldDeny } : verdict;
}

/**
 * Answers a refused body: its JSON-RPC error(s) with HTTP 200, or — when JSON-RPC has no answer
 * to give (refused notifications) — the plain 403 JSON denial.
 */
export function answerRefusal(res: ServerResponse, verdict: Extract<CallsVerdict, { forward: false }>): void {
  if (verdict.reply !== undefined) sendJson(res, 200, verdict.reply);
  else sendError(res, 403, errorBody(403, verdict.denied.reason, { policies: verdict.denied.policies }));
}

/** Whether a forwarded body needs its answer filtered (it asks for a tools/list). */
export function asksForToolsList(rpc: { calls: JsonRpcCall[] }): boolean {
  return rpc.calls.some((c) => c.method === 'tools/list' && !c.notification);
}

export function filterContext(rpc: { batch: boolean; calls: JsonRpcCall[] }): FilterContext {
  return { batch: rpc.batch, ids: rpc.calls.filter((c) => !c.notification).map((c) => c.id ?? null) };
}

/** Memoizes `allowed` for one answer: a tool name is decided once. */
export function memoAllowed(allowed: AllowedTool): AllowedTool {
  const seen = new Map<string, boolean>();
  return (name) => {
    let v = seen.get(name);
    if (v === undefined) {
      v = allowed(name);
      seen.set(name, v);
    }
    return v;
  };
}

/** Rewrites a text/event-stream answer event by event (long-lived streams keep flowing). */
class SseToolsFilter extends Transform {
  private readonly decoder = new StringDecoder('utf8');
  private readonly splitter = new SseSplitter();
  private done = false;

  constructor(
    private readonly allowed: AllowedTool,
    private readonly ctx: FilterContext,
    private readonly limit: number,
    private readonly onOverflow: () => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.done) return callback();
    this.emitEvents(this.splitter.push(this.decoder.write(chunk)));
    if (this.splitter.buffered > this.limit) {
      // Fail closed: the event cannot be inspected, so the stream ends with the error instead.
      this.done = true;
      this.push(sseEventText(JSON.stringify(unfilterableReply(this.ctx))));
      this.push(null);
      this.onOverflow();
    }
    callback();
  }

  override _flush(callback: TransformCallback): void {
    if (!this.done) this.emitEvents([...this.splitter.push(this.decoder.end()), ...this.splitter.flush()]);
    callback();
  }

  private emitEvents(events: ReturnType<SseSplitter['push']>): void {
    for (const event of events) {
      if (this.done) return;
      let out: string;
      try {
        out = filterSseEvent(event, this.allowed, this.ctx) ?? event.raw;
      } catch {
        // e.g. a schema nested deeper than JSON.stringify can recurse: end with the error event.
        this.done = true;
        this.push(sseEventText(JSON.stringify(unfilterableReply(this.ctx))));
        this.push(null);
        this.onOverflow();
        return;
      }
      this.push(out);
    }
  }
}

function readBounded(stream: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > limit) {
        stream.off('data', onData);
        stream.destroy();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    stream.on('data', onData);
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
    stream.once('aborted', () => reject(new Error('upstream response aborted')));
  });
}

/**
 * Sends the upstream's answer to a request that asked for tools/list, with every tool the caller
 * may not call removed (http-proxy `selfHandleResponse`; hop-by-hop headers were already
 * stripped by the shared proxyRes hook). Non-2xx answers pass unchanged. A 2xx answer that
 * cannot be filtered (unparseable, compressed, too large) is replaced by a -32603 error.
 */
export function respondFiltered(proxyRes: IncomingMessage, res: ServerResponse, allowed: AllowedTool, ctx: FilterContext, logger: Logger, limit = DEFAULT_MAX_RESPONSE_BYTES): void {
  const status = proxyRes.statusCode ?? 502;
  const headers: OutgoingHttpHeaders = { ...proxyRes.headers };
  const failClosed = (why: string): void => {
    logger.warn('tools/list answer could not be filtered; replaced by an error', { reason: 'internal_error', detail: why });
    if (!proxyRes.complete) proxyRes.destroy();
    const payload = JSON.stringify(unfilterableReply(ctx));
    delete headers['content-encoding'];
    delete headers['transfer-encoding'];
    res.writeHead(200, { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
    res.end(payload);
  };
  res.once('close', () => {
    if (!proxyRes.complete) proxyRes.destroy();
  });
  if (status < 200 || status > 299) {
    res.writeHead(status, proxyRes.statusMessage, headers);
    proxyRes.pipe(res);
    return;
  }
  const encoding = proxyRes.headers['content-encoding'];
  if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') return failClosed(`content-encoding ${encoding}`);
  const contentType = proxyRes.headers['content-type'];
  if (bodyKind(contentType) === 'sse') {
    delete headers['content-length'];
    res.writeHead(status, proxyRes.statusMessage, headers);
    const filter = new SseToolsFilter(allowed, ctx, limit, () => {
      proxyRes.unpipe(filter);
      if (!proxyRes.complete) proxyRes.destroy();
      logger.warn('tools/list event stream could not be filtered; ended with an error', { reason: 'internal_error', detail: `event over ${limit} bytes or not filterable` });
    });
    proxyRes.once('aborted', () => res.destroy());
    proxyRes.once('error', () => res.destroy());
    filter.once('error', () => res.destroy());
    proxyRes.pipe(filter).pipe(res);
    return;
  }
  readBounded(proxyRes, limit).then(
    (body) => {
      if (body === undefined) return failClosed(`answer over ${limit} bytes`);
      let filtered: ReturnType<typeof filterToolsListResult>;
      try {
        filtered = filterToolsListResult(body, contentType, allowed, ctx);
      } catch (err) {
        return failClosed((err as Error).message);
      }
      const out = filtered?.body ?? body;
      delete headers['transfer-encoding'];
      if (filtered) headers['content-type'] = filtered.contentType;
      headers['content-length'] = out.length;
      res.writeHead(status, proxyRes.statusMessage, headers);
      res.end(out);
    },
    () => res.destroy(),
  );
}

/** A fresh value for REQUEST_REF_HEADER. */

/**
 * JSON-RPC over a WebSocket: a text message holding JSON-RPC requests is authorized call by
 * call (caller = the message's sender, serving agent = its receiver), like an HTTP body. A
 * refusal is answered on the stream to the sender and nothing is forwarded; messages that are
 * not JSON-RPC requests (responses, other protocols) pass to the `websocket.message` rule alone.
 */
export function inspectWebSocketText(text: string, scope: CallScope, decide: (request: AuthzRequest) => Decision): { forward: boolean; reply?: string } {
  const first = text.trimStart()[0];
  if (first !== '{' && first !== '[') return { forward: true };
  const rpc = parseJsonRpc(text);
  if (rpc.kind === 'none') return { forward: true };
  if (rpc.kind === 'invalid') return { forward: false, reply: JSON.stringify(rpc.reply) };
  const verdict = authorizeCalls(rpc, scope, decide);
  if (verdict.forward) return { forward: true };
  return { forward: false, ...(verdict.reply === undefined ? {} : { reply: JSON.stringify(verdict.reply) }) };
}
