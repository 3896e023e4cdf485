// W3C Trace Context (https://www.w3.org/TR/trace-context/) `traceparent` helpers, and request
// ids. The proxies keep an incoming trace id, give each hop through the sidecar a new parent
// (span) id, and start a new trace when the incoming header is absent or invalid; the audit line
// carries the traceparent the sidecar sent on. Pure apart from the random source.
import { randomFillSync, randomUUID } from 'node:crypto';

/** The parsed fields of a valid `traceparent`. Hex fields are lowercase. */
export interface TraceContext {
  /** Always `00`: a higher version is parsed by its version-00 prefix and re-emitted as 00. */
  version: '00';
  /** 32 lowercase hex characters, not all zero. */
  traceId: string;
  /** 16 lowercase hex characters, not all zero: the caller's span id. */
  parentId: string;
  /** The trace-flags byte as received (0..255). */
  flags: number;
  /** Bit 0 of flags. */
  sampled: boolean;
}

const HEX = /^[0-9a-f]+$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_PARENT_ID = '0'.repeat(16);
/** version(2) - trace-id(32) - parent-id(16) - flags(2) */
const V00_LENGTH = 55;
/** Only the sampled flag is propagated (spec Level 1: unknown flags are set to zero on send). */
const PROPAGATED_FLAGS = 0x01;

/**
 * Parses and validates a `traceparent` header value. Returns undefined for anything invalid:
 * a wrong length, uppercase or non-hex characters, version `ff`, an all-zero trace id or parent
 * id, or anything but one value (an array of several headers).
 *
 * Version `00` must be exactly 55 characters. A higher version (`01`..`fe`) is parsed as the
 * spec's versioning rules require: at least 55 characters, the version-00 fields in place, and
 * either the end of the value or a `-` after the flags; fields beyond that are ignored.
 */
export function parseTraceparent(header: string | readonly string[] | undefined | null): TraceContext | undefined {
  if (Array.isArray(header)) return header.length === 1 ? parseTraceparent(header[0] as string) : undefined;
  if (typeof header !== 'string' || header.length < V00_LENGTH) return undefined;
  const version = header.slice(0, 2);
  if (!HEX.test(version) || version === 'ff') return undefined;
  if (version === '00' ? header.length !== V00_LENGTH : header.length > V00_LENGTH && header[V00_LENGTH] !== '-') {
    return undefined;
  }
  if (header[2] !== '-' || header[35] !== '-' || header[52] !== '-') return undefined;
  const traceId = header.slice(3, 35);
  const parentId = header.slice(36, 52);
  const flagsHex = header.slice(53, 55);
  if (!HEX.test(traceId) || !HEX.test(parentId) || !HEX.test(flagsHex)) return undefined;
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_PARENT_ID) return undefined;
  const flags = parseInt(flagsHex, 16);
  return { version: '00', traceId, parentId, flags, sampled: (flags & 0x01) === 1 };
}

/** Formats version-00 `traceparent` from its fields (which the caller guarantees are valid). */
export function formatTraceparent(traceId: string, parentId: string, flags: number): string {
  return `00-${traceId}-${parentId}-${(flags & 0xff).toString(16).padStart(2, '0')}`;
}

export interface NewTraceOptions {
  /** Set the sampled flag (default false: Sigil records audit lines, not spans). */
  sampled?: boolean;
}

/** A new trace: random trace id and parent id, flags `00` (or `01` when `sampled`). */
export function newTraceparent(options: NewTraceOptions = {}): string {
  return formatTraceparent(randomHex(16, ZERO_TRACE_ID), randomHex(8, ZERO_PARENT_ID), options.sampled ? 0x01 : 0);
}

/**
 * The traceparent to send on for a call that arrived with `parent`: the same trace id, a new
 * parent (span) id, the sampled flag kept. When `parent` is absent or invalid, a new trace.
 */
export function childTraceparent(parent: string | readonly string[] | TraceContext | undefined | null): string {
  const ctx = typeof parent === 'object' && parent !== null && !Array.isArray(parent) ? (parent as TraceContext) : parseTraceparent(parent as string | undefined);
  if (!ctx) return newTraceparent();
  return formatTraceparent(ctx.traceId, randomHex(8, ZERO_PARENT_ID), ctx.flags & PROPAGATED_FLAGS);
}

/** Sigil's id for one request or message (a random UUID v4). */
export function newRequestId(): string {
  return randomUUID();
}

// Random bytes come from a pooled buffer so that the hot path makes one CSPRNG call per 256 ids.
const POOL_SIZE = 4096;
const pool = Buffer.alloc(POOL_SIZE);
let poolOffset = POOL_SIZE;

function randomHex(bytes: number, zero: string): string {
  for (;;) {
    if (poolOffset + bytes > POOL_SIZE) {
      randomFillSync(pool);
      poolOffset = 0;
    }
    const hex = pool.toString('hex', poolOffset, poolOffset + bytes);
    poolOffset += bytes;
    if (hex !== zero) return hex;
  }
}
