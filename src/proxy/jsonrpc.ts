// JSON-RPC 2.0 call extraction and the answers Sigil gives in JSON-RPC terms. Pure: no I/O.
//
// What is a JSON-RPC request here. A body is JSON-RPC when its top-level value is an object, or
// an array containing an object, that *claims* JSON-RPC: it has a `jsonrpc` member, or a string
// `method` together with `params` or `id` (JSON-RPC 1.0 shape, which lenient servers execute).
// Member names are compared case-insensitively (Unicode case folding) for this test, because
// common servers (Go's encoding/json, for one) match member names that way: `"Method"` must
// not slip past as "not a call". Everything else — REST JSON, JSON-RPC *responses* (a client
// answering a server request) — is `none` and passes with the plain `http` decision only.
//
// A claiming element must be an exact JSON-RPC 2.0 request or response: `jsonrpc` exactly
// "2.0", member names spelled exactly, `id` a string/number/null, `params` structured, no
// member name appearing twice in any spelling anywhere in the body (parsers disagree on which
// duplicate wins, so the body is ambiguous), valid UTF-8 without BOM. Otherwise the body is
// `invalid` and answered with a JSON-RPC error: nothing is forwarded (fail closed).
//
// Error codes (JSON-RPC 2.0 §5.1; -32000..-32099 are implementation-defined):
//   -32700  Parse error       — not JSON, not UTF-8, or ambiguous (duplicate member names)
//   -32600  Invalid Request   — an element claims JSON-RPC but is not a valid request/response,
//                               an empty batch `[]`, or a batch over MAX_BATCH_ELEMENTS
//   -32602  Invalid params    — `tools/call` without a string `params.name`
//   -32603  Internal error    — a `tools/list` answer that could not be filtered (fail closed)
//   -32043  Refused by Sigil  — forbidden by policy (`data.reason` = `policy_denied`, …), or not
//                               executed because another element of its batch was refused
//                               (`data.reason` = `batch_rejected`). Chosen to avoid the codes MCP
//                               (-32000, -32001, -32002, -32042) and A2A (-32001..-32007) define.
// Every error carries `data.reason` (a reason code from the closed set); denials also carry
// `data.policies` (ids, never policy text).
//
// Batch semantics. A batch is forwarded only if every call in it is allowed. Otherwise nothing
// is forwarded and the answer is an array with one entry per request element (in order): the
// denial for a refused call, `-32043 "not executed: batch rejected"` (reason `batch_rejected`)
// for an allowed one. Notifications and response elements get no entry; when no entry remains
// (a batch of notifications only), or a single refused call is a notification, there is no
// JSON-RPC answer to give and the proxy answers the plain HTTP 403 JSON denial instead.
import type { Decision, ReasonCode } from '../authz/index.js';

export type JsonRpcId = string | number | null;

export interface JsonRpcCall {
  /** Absent for a notification. */
  id?: JsonRpcId;
  notification: boolean;
  method: string;
  /** `params.name` of `tools/call`. */
  tool?: string;
}

export type JsonRpcParse =
  | { kind: 'none' }
  | { kind: 'invalid'; reply: JsonRpcErrorResponse | JsonRpcErrorResponse[] }
  | { kind: 'calls'; batch: boolean; calls: JsonRpcCall[] };

export interface JsonRpcErrorResponse {
  jsonrpc: '2.0';
  id: JsonRpcId;
  error: { code: number; message: string; data: { reason: ReasonCode; policies?: string[]; detail?: string } };
}

export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;
export const INVALID_PARAMS = -32602;
export const INTERNAL_ERROR = -32603;
/** Refused by Sigil: forbidden by policy, or not executed because its batch was refused. */
export const SIGIL_REFUSED = -32043;

/**
 * Most elements a batch may have. Every call is a policy evaluation on the event loop; without a
 * bound one 1 MiB body of tiny calls would stall the proxy for seconds.
 */
export const MAX_BATCH_ELEMENTS = 256;

const REQUEST_MEMBERS = ['jsonrpc', 'method', 'params', 'id', 'result', 'error'];

/** Case folding close to Unicode simple folding (covers ſ→s, K→k as Go's EqualFold does). */
function fold(name: string): string {
  return name.toUpperCase().toLowerCase();
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Strict UTF-8 (a BOM is kept, so JSON.parse refuses it); undefined when not valid UTF-8. */
function decode(body: Buffer | string): string | undefined {
  if (typeof body === 'string') return body;
  try {
    return utf8.decode(body);
  } catch {
    return undefined;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isId(v: unknown): v is JsonRpcId {
  return typeof v === 'string' || typeof v === 'number' || v === null;
}

export function errorResponse(id: JsonRpcId, code: number, message: string, data: JsonRpcErrorResponse['error']['data']): JsonRpcErrorResponse {
  return { jsonrpc: '2.0', id, error: { code, message, data } };
}

function parseError(detail: string): JsonRpcParse {
  return { kind: 'invalid', reply: errorResponse(null, PARSE_ERROR, 'Parse error', { reason: 'jsonrpc_invalid', detail }) };
}

/** Some member name of `obj` that folds to one of `names` without being spelled exactly so. */
function misspelledMember(obj: Record<string, unknown>, names: readonly string[]): string | undefined {
  for (const key of Object.keys(obj)) {
    const f = fold(key);
    if (f !== key && names.includes(f)) return key;
  }
  return undefined;
}

function hasFolded(obj: Record<string, unknown>, name: string): string | undefined {
  return Object.keys(obj).find((k) => fold(k) === name);
}

/** Does this value claim to be a JSON-RPC message (see the header comment)? */
function claims(v: unknown): boolean {
  if (!isObject(v)) return false;
  if (hasFolded(v, 'jsonrpc') !== undefined) return true;
  const method = hasFolded(v, 'method');
  return method !== undefined && typeof v[method] === 'string' && (hasFolded(v, 'params') !== undefined || hasFolded(v, 'id') !== undefined);
}

type Element =
  | { kind: 'call'; call: JsonRpcCall }
  | { kind: 'response' }
  | { kind: 'invalid'; error: JsonRpcErrorResponse; notification: boolean };

function invalidElement(id: JsonRpcId, code: number, message: string, detail: string, notification = false): Element {
  return { kind: 'invalid', error: errorResponse(id, code, message, { reason: 'jsonrpc_invalid', detail }), notification };
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** String.prototype.isWellFormed (ES2024), spelled out for the ES2023 lib this project targets. */
function isWellFormed(s: string): boolean {
  return !LONE_SURROGATE.test(s);
}

function element(v: unknown): Element {
  if (!isObject(v)) return invalidElement(null, INVALID_REQUEST, 'Invalid Request', 'a batch element is not an object');
  const id = 'id' in v && isId(v['id']) ? v['id'] : null;
  const misspelled = misspelledMember(v, REQUEST_MEMBERS);
  if (misspelled !== undefined) return invalidElement(id, INVALID_REQUEST, 'Invalid Request', `member "${misspelled}" is not spelled as JSON-RPC 2.0 requires`);
  if (v['jsonrpc'] !== '2.0') return invalidElement(id, INVALID_REQUEST, 'Invalid Request', 'jsonrpc must be exactly "2.0"');
  if ('id' in v && !isId(v['id'])) return invalidElement(null, INVALID_REQUEST, 'Invalid Request', 'id must be a string, a number or null');
  if (!('method' in v)) {
    if (('result' in v || 'error' in v) && 'id' in v) return { kind: 'response' };
    return invalidElement(id, INVALID_REQUEST, 'Invalid Request', 'neither a request (method) nor a response (result/error with id)');
  }
  const method = v['method'];
  if (typeof method !== 'string') return invalidElement(id, INVALID_REQUEST, 'Invalid Request', 'method must be a string');
  // A lone surrogate (legal in JSON's \u escapes) is not a string anyone can name in a policy.
  if (!isWellFormed(method)) return invalidElement(id, INVALID_REQUEST, 'Invalid Request', 'method is not well-formed Unicode');
  const notification = !('id' in v);
  if ('result' in v || 'error' in v) return invalidElement(id, INVALID_REQUEST, 'Invalid Request', 'a request must not carry result or error', notification);
  const params = v['params'];
  if ('params' in v && (typeof params !== 'object' || params === null)) {
    return invalidElement(id, INVALID_REQUEST, 'Invalid Request', 'params must be an object or an array', notification);
  }
  const call: JsonRpcCall = notification ? { notification, method } : { id, notification, method };
  if (method === 'tools/call') {
    if (!isObject(params)) return invalidElement(id, INVALID_PARAMS, 'Invalid params', 'tools/call needs params.name (a string)', notification);
    const bad = misspelledMember(params, ['name']);
    if (bad !== undefined) return invalidElement(id, INVALID_PARAMS, 'Invalid params', `member "${bad}" is not spelled "name"`, notification);
    const name = params['name'];
    if (typeof name !== 'string') return invalidElement(id, INVALID_PARAMS, 'Invalid params', 'tools/call needs params.name (a string)', notification);
    if (!isWellFormed(name)) return invalidElement(id, INVALID_PARAMS, 'Invalid params', 'params.name is not well-formed Unicode', notification);
    call.tool = name;
  }
  return { kind: 'call', call };
}

/**
 * Member names that repeat within one object, compared after case folding; `text` must already
 * be valid JSON. Returns the first repeated name.
 */
export function duplicateMember(text: string): string | undefined {
  const stack: ({ keys: Set<string>; expectKey: boolean } | undefined)[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      let j = i + 1;
      let escaped = false;
      while (j < text.length) {
        const d = text.charCodeAt(j);
        if (d === 0x5c) {
          escaped = true;
          j += 2;
          continue;
        }
        if (d === 0x22) break;
        j++;
      }
      const top = stack[stack.length - 1];
      if (top?.expectKey) {
        const raw = text.slice(i + 1, j);
        const key = fold(escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : raw);
        if (top.keys.has(key)) return escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : raw;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b) stack.push({ keys: new Set(), expectKey: true });
    else if (c === 0x5b) stack.push(undefined);
    else if (c === 0x7d || c === 0x5d) stack.pop();
    else if (c === 0x2c) {
      const top = stack[stack.length - 1];
      if (top) top.expectKey = true;
    }
  }
  return undefined;
}

/**
 * Classifies an HTTP body: not JSON-RPC (`none`), refused with a JSON-RPC error reply
 * (`invalid`), or the calls to authorize (`calls`; response elements of a batch are not calls).
 * An empty or whitespace-only body is `none`: it cannot carry a call.
 */
export function parseJsonRpc(body: Buffer | string): JsonRpcParse {
  const text = decode(body);
  if (text === undefined) return parseError('body is not valid UTF-8');
  if (text.trim() === '') return { kind: 'none' };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return parseError('body is not valid JSON');
  }
  const batch = Array.isArray(value);
  const elements: unknown[] = Array.isArray(value) ? (value as unknown[]) : [value];
  if (batch && elements.length === 0) {
    return { kind: 'invalid', reply: errorResponse(null, INVALID_REQUEST, 'Invalid Request', { reason: 'jsonrpc_invalid', detail: 'empty batch' }) };
  }
  if (!elements.some(claims)) return { kind: 'none' };
  if (elements.length > MAX_BATCH_ELEMENTS) {
    return {
      kind: 'invalid',
      reply: errorResponse(null, INVALID_REQUEST, 'Invalid Request', { reason: 'jsonrpc_invalid', detail: `batch of ${elements.length} elements; at most ${MAX_BATCH_ELEMENTS} are accepted` }),
    };
  }
  const dup = duplicateMember(text);
  if (dup !== undefined) return parseError(`ambiguous JSON: member "${dup}" appears more than once in an object`);

  const parsed = elements.map(element);
  if (parsed.some((e) => e.kind === 'invalid')) {
    if (!batch) return { kind: 'invalid', reply: (parsed[0] as Extract<Element, { kind: 'invalid' }>).error };
    const reply: JsonRpcErrorResponse[] = [];
    for (const e of parsed) {
      if (e.kind === 'invalid') reply.push(e.error);
      else if (e.kind === 'call' && !e.call.notification) reply.push(batchRejectedReply(e.call));
    }
    return { kind: 'invalid', reply };
  }
  const calls = parsed.flatMap((e) => (e.kind === 'call' ? [e.call] : []));
  if (calls.length === 0) return { kind: 'none' };
  return { kind: 'calls', batch, calls };
}

/** The answer to a call refused by `decision`; the reason and policy ids, never policy text. */
export function deniedReply(call: JsonRpcCall, decision: Pick<Decision, 'reason' | 'policies'>): JsonRpcErrorResponse {
  return errorResponse(call.id ?? null, SIGIL_REFUSED, `forbidden: ${decision.reason}`, { reason: decision.reason, policies: [...decision.policies] });
}

/** The answer to an allowed call that was not executed because its batch was refused. */
export function batchRejectedReply(call: JsonRpcCall): JsonRpcErrorResponse {
  return errorResponse(call.id ?? null, SIGIL_REFUSED, 'not executed: batch rejected', { reason: 'batch_rejected', policies: [] });
}

export type CallsVerdict =
  | { forward: true; decisions: Decision[] }
  /** `reply` is the JSON-RPC answer; undefined when there is none to give (notifications only). */
  | { forward: false; decisions: Decision[]; reply?: JsonRpcErrorResponse | JsonRpcErrorResponse[]; denied: Decision };

/**
 * Authorizes every call (all are evaluated, so each gets its decision recorded) and applies the
 * batch semantics described at the top of this file.
 */
export function judgeCalls(parsed: { batch: boolean; calls: JsonRpcCall[] }, decide: (call: JsonRpcCall) => Decision): CallsVerdict {
  const decisions = parsed.calls.map(decide);
  const deniedIndex = decisions.findIndex((d) => !d.allowed);
  if (deniedIndex === -1) return { forward: true, decisions };
  const denied = decisions[deniedIndex]!;
  const entries: JsonRpcErrorResponse[] = [];
  parsed.calls.forEach((call, i) => {
    if (call.notification) return;
    const d = decisions[i]!;
    entries.push(d.allowed ? batchRejectedReply(call) : deniedReply(call, d));
  });
  if (entries.length === 0) return { forward: false, decisions, denied };
  return { forward: false, decisions, denied, reply: parsed.batch ? entries : entries[0]! };
}

// ---------------------------------------------------------------------------------------------
// tools/list filtering

export type AllowedTool = (toolName: string) => boolean;

export interface FilterContext {
  /** Ids of the request's calls, for the fail-closed replacement answer. */
  ids?: JsonRpcId[];
  /** Whether the request was a batch (the replacement is then an array). */
  batch?: boolean;
}

export interface FilteredBody {
  body: Buffer;
  contentType: string;
}

type BodyKind = 'json' | 'sse' | 'other';

export function bodyKind(contentType: string | undefined): BodyKind {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'))) return 'json';
  if (type === 'text/event-stream') return 'sse';
  return 'other';
}

/** The fail-closed answer when a tools/list response cannot be filtered. */
export function unfilterableReply(ctx: FilterContext = {}): JsonRpcErrorResponse | JsonRpcErrorResponse[] {
  const make = (id: JsonRpcId): JsonRpcErrorResponse =>
    errorResponse(id, INTERNAL_ERROR, 'tools/list response could not be filtered', { reason: 'internal_error' });
  const ids = ctx.ids ?? [];
  return ctx.batch ? (ids.length > 0 ? ids : [null]).map(make) : make(ids[0] ?? null);
}

type FilterOutcome = { changed: boolean; value: unknown } | 'fail';

function filterResponse(msg: unknown, allowed: AllowedTool): FilterOutcome {
  if (!isObject(msg)) return { changed: false, value: msg };
  if (misspelledMember(msg, ['result']) !== undefined) return 'fail';
  const result = msg['result'];
  if (!isObject(result)) return { changed: false, value: msg };
  if (misspelledMember(result, ['tools']) !== undefined) return 'fail';
  if (!('tools' in result)) return { changed: false, value: msg };
  const tools = result['tools'];
  if (!Array.isArray(tools)) return 'fail';
  // Unnamed or ambiguously named tools cannot be authorized: they are dropped.
  const kept = tools.filter((tool) => isObject(tool) && misspelledMember(tool, ['name']) === undefined && typeof tool['name'] === 'string' && allowed(tool['name']));
  if (kept.length === tools.length) return { changed: false, value: msg };
  return { changed: true, value: { ...msg, result: { ...result, tools: kept } } };
}

/** Filters a JSON text holding one response or a batch of responses; 'fail' when unusable. */
function filterJsonText(text: string, allowed: AllowedTool): { changed: boolean; text: string } | 'fail' {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'fail';
  }
  if (duplicateMember(text) !== undefined) return 'fail';
  if (Array.isArray(value)) {
    let changed = false;
    const out: unknown[] = [];
    for (const m of value) {
      const r = filterResponse(m, allowed);
      if (r === 'fail') return 'fail';
      changed ||= r.changed;
      out.push(r.value);
    }
    return { changed, text: changed ? JSON.stringify(out) : text };
  }
  const r = filterResponse(value, allowed);
  if (r === 'fail') return 'fail';
  return { changed: r.changed, text: r.changed ? JSON.stringify(r.value) : text };
}

/**
 * Removes from a `tools/list` answer every tool the caller may not call. `application/json`
 * (and `+json`) bodies hold a response or a batch of responses; `text/event-stream` bodies are
 * rewritten event by event; any other type is tried as JSON. Returns the new body and its
 * content type, or undefined when nothing needs to change (forward the original bytes). An
 * answer that cannot be parsed is replaced by a -32603 error (fail closed), in the same framing.
 */
export function filterToolsListResult(body: Buffer | string, contentType: string | undefined, allowed: AllowedTool, ctx: FilterContext = {}): FilteredBody | undefined {
  const kind = bodyKind(contentType);
  const text = decode(body);
  if (kind === 'sse') {
    if (text === undefined) return { body: Buffer.from(sseEventText(JSON.stringify(unfilterableReply(ctx)))), contentType: contentType! };
    const splitter = new SseSplitter();
    const events = [...splitter.push(text), ...splitter.flush()];
    let changed = false;
    const out = events.map((e) => {
      const r = filterSseEvent(e, allowed, ctx);
      if (r === undefined) return e.raw;
      changed = true;
      return r;
    });
    return changed ? { body: Buffer.from(out.join('')), contentType: contentType! } : undefined;
  }
  const failed = (): FilteredBody => ({ body: Buffer.from(JSON.stringify(unfilterableReply(ctx))), contentType: kind === 'json' ? contentType! : 'application/json' });
  if (text === undefined) return failed();
  if (kind === 'other' && text.trim() === '') return undefined;
  const r = filterJsonText(text, allowed);
  if (r === 'fail') return failed();
  return r.changed ? { body: Buffer.from(r.text), contentType: kind === 'json' ? contentType! : 'application/json' } : undefined;
}

// ---------------------------------------------------------------------------------------------
// Server-sent events (WHATWG HTML §9.2): lines end in CRLF, LF or CR; a blank line ends an event.

export interface SseEvent {
  /** The exact text of the event, terminating blank line included (absent at end of stream). */
  raw: string;
  /** Its lines, without terminators. */
  lines: string[];
}

/** Incremental event splitter; keeps the exact bytes so unchanged events pass verbatim. */
export class SseSplitter {
  private pending = '';
  /** Where the next line starts within `pending`. */
  private lineStart = 0;
  private lines: string[] = [];

  /** Characters held for an event not yet complete. */
  get buffered(): number {
    return this.pending.length;
  }

  push(text: string): SseEvent[] {
    this.pending += text;
    return this.scan(false);
  }

  /** At end of stream: the events still held, the last one possibly unterminated. */
  flush(): SseEvent[] {
    const events = this.scan(true);
    const rest = this.pending;
    if (this.lineStart < rest.length) this.lines.push(rest.slice(this.lineStart));
    if (rest !== '') events.push({ raw: rest, lines: this.lines });
    this.pending = '';
    this.lineStart = 0;
    this.lines = [];
    return events;
  }

  private scan(final: boolean): SseEvent[] {
    const events: SseEvent[] = [];
    const p = this.pending;
    let eventStart = 0;
    let i = this.lineStart;
    while (i < p.length) {
      const c = p.charCodeAt(i);
      if (c !== 0x0a && c !== 0x0d) {
        i++;
        continue;
      }
      // A CR at the end of the buffer may be the first half of a CRLF.
      if (c === 0x0d && i + 1 === p.length && !final) break;
      const end = c === 0x0d && p.charCodeAt(i + 1) === 0x0a ? i + 2 : i + 1;
      const line = p.slice(this.lineStart, i);
      if (line === '') {
        events.push({ raw: p.slice(eventStart, end), lines: this.lines });
        this.lines = [];
        eventStart = end;
      } else {
        this.lines.push(line);
      }
      this.lineStart = end;
      i = end;
    }
    if (eventStart > 0) {
      this.pending = p.slice(eventStart);
      this.lineStart -= eventStart;
    }
    return events;
  }
}

/** One SSE event carrying `data` (one line: JSON has no raw newlines). */
export function sseEventText(data: string, event = 'message'): string {
  return `event: ${event}\ndata: ${data}\n\n`;
}

/**
 * Filters one SSE event: its data (data lines joined by LF) is read as JSON-RPC response(s).
 * Returns the rewritten event text, or undefined to pass it unchanged. Data that is not JSON is
 * replaced by the -32603 answer (fail closed); other fields (event, id, retry) are kept.
 */
export function filterSseEvent(event: SseEvent, allowed: AllowedTool, ctx: FilterContext = {}): string | undefined {
  const data: string[] = [];
  for (const line of event.lines) {
    if (line === 'data') data.push('');
    else if (line.startsWith('data:')) data.push(line.slice(line.charCodeAt(5) === 0x20 ? 6 : 5));
  }
  if (data.length === 0) return undefined;
  const joined = data.join('\n');
  if (joined.trim() === '') return undefined;
  const r = filterJsonText(joined, allowed);
  if (r !== 'fail' && !r.changed) return undefined;
  const replacement = r === 'fail' ? JSON.stringify(unfilterableReply(ctx)) : r.text;
  const out: string[] = [];
  let placed = false;
  for (const line of event.lines) {
    if (line === 'data' || line.startsWith('data:')) {
      if (!placed) out.push(`data: ${replacement}`);
      placed = true;
    } else out.push(line);
  }
  return out.join('\n') + '\n\n';
}
