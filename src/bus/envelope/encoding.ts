// Strict encodings. Node's decoders are lenient (they skip characters outside the alphabet and
// accept both base64 alphabets), so every decode here is checked by re-encoding: only the one
// canonical spelling of a byte string is accepted.

/** base64url without padding (RFC 7515 §2), canonical; undefined if `s` is anything else. */
export function decodeBase64url(s: string): Buffer | undefined {
  const buf = Buffer.from(s, 'base64url');
  return buf.toString('base64url') === s ? buf : undefined;
}

/** Standard base64 with padding (RFC 7515 §4.1.6, x5c), canonical; undefined otherwise. */
export function decodeBase64(s: string): Buffer | undefined {
  const buf = Buffer.from(s, 'base64');
  return buf.toString('base64') === s ? buf : undefined;
}

/**
 * A reusable buffer for the synchronous hot path (sign/verify never yield, so one per signer or
 * verifier is safe). Up to 4 MiB it grows and stays; larger requests get a one-off buffer so one
 * huge message does not pin memory.
 */
export class Scratch {
  private buf: Buffer = Buffer.alloc(0);
  private static readonly KEEP = 4 * 1024 * 1024;

  /** A buffer of at least `size` bytes whose first bytes are `prefix` (if given). Valid until the next call. */
  reserve(size: number, prefix?: Buffer): Buffer {
    if (this.buf.length >= size) return this.buf;
    const next = Buffer.allocUnsafeSlow(Math.max(size, Math.min(2 * this.buf.length, Scratch.KEEP), 4096));
    if (prefix) prefix.copy(next, 0);
    if (next.length <= Scratch.KEEP) this.buf = next;
    return next;
  }
}

interface WellFormed {
  isWellFormed(): boolean;
}

// A string that needs no escaping is its own JSON text between quotes. V8 (Node 20) escapes
// strings in JSON.stringify about 4x slower than JSON.parse scans them, so for long strings the
// check "parsing the quoted text gives the string back" is the cheaper way to the same output.
// It is exact: any '"', '\\' or control character makes the parse throw or change the value;
// lone surrogates (which JSON.stringify escapes) are excluded by isWellFormed.
const FAST_STRING_MIN = 128;

/** Exactly JSON.stringify(s), faster for long strings that need no escaping. */
export function jsonString(s: string): string {
  if (s.length >= FAST_STRING_MIN && (s as unknown as WellFormed).isWellFormed()) {
    const quoted = '"' + s + '"';
    try {
      if (JSON.parse(quoted) === s) return quoted;
    } catch {
      // needs escaping
    }
  }
  return JSON.stringify(s);
}

// ---- duplicate member names ------------------------------------------------------------------
// JSON.parse keeps the last of two equal member names silently; other parsers keep the first or
// fail. A parsed object has one key per distinct name, so the text repeats a name exactly when
// it has more top-level members than the parsed object has keys. memberCount finds that number
// for a text JSON.parse has already accepted as an object, so it can assume valid JSON and only
// skips values. It works on the UTF-8 bytes: every structural character is ASCII and no byte
// of a multi-byte sequence is below 0x80, and a byte loop runs several times faster in V8 than
// charCodeAt over a string. Long strings are crossed with indexOf (memchr) jumps.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
/** Strings are scanned byte by byte up to this length, then with indexOf jumps. */
const INLINE_STRING = 64;

function isWsByte(c: number | undefined): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** Index of the quote that closes the string opening at `i`. */
function closingQuote(b: Buffer, i: number): number {
  let j = i + 1;
  const inlineEnd = Math.min(b.length, j + INLINE_STRING);
  for (; j < inlineEnd; j++) {
    const c = b[j];
    if (c === QUOTE) return j;
    if (c === BACKSLASH) j++;
  }
  for (;;) {
    const q = b.indexOf(QUOTE, j);
    if (q < 0) return b.length; // unreachable for valid JSON
    // Escaped iff preceded by an odd run of backslashes (a maximal run is a sequence of "\\"
    // pairs, possibly followed by the "\" of an escape).
    let k = q - 1;
    while (b[k] === BACKSLASH) k--;
    if ((q - 1 - k) % 2 === 0) return q;
    j = q + 1;
  }
}

function skipWsBytes(b: Buffer, i: number): number {
  while (isWsByte(b[i])) i++;
  return i;
}

/** Index just after the value starting at `i`. */
function skipValueBytes(b: Buffer, i: number): number {
  const c = b[i];
  if (c === QUOTE) return closingQuote(b, i) + 1;
  const n = b.length;
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    for (let j = i; j < n; j++) {
      const d = b[j];
      if (d === QUOTE) j = closingQuote(b, j);
      else if (d === 0x7b || d === 0x5b) depth++;
      else if ((d === 0x7d || d === 0x5d) && --depth === 0) return j + 1;
    }
    return n;
  }
  // number, true, false, null
  let j = i;
  while (j < n) {
    const d = b[j];
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWsByte(d)) break;
    j++;
  }
  return j;
}

/**
 * Number of top-level members (duplicates included) of the JSON text in `b` (UTF-8), which MUST
 * be a text JSON.parse accepted as an object.
 */
export function memberCount(b: Buffer): number {
  const n = b.length;
  let i = skipWsBytes(b, 0) + 1; // past '{'
  let count = 0;
  while (i < n) {
    i = skipWsBytes(b, i);
    const c = b[i];
    if (c === 0x7d) return count;
    if (c === 0x2c) {
      i++;
      continue;
    }
    i = skipWsBytes(b, closingQuote(b, i) + 1) + 1; // past the name and ':'
    i = skipValueBytes(b, skipWsBytes(b, i));
    count++;
  }
  return count;
}

// String-side helpers, for duplicateMember (error messages only).

function stringEnd(text: string, i: number): number {
  let j = text.indexOf('"', i + 1);
  for (;;) {
    let k = j - 1;
    while (text.charCodeAt(k) === BACKSLASH) k--;
    if ((j - 1 - k) % 2 === 0) return j;
    j = text.indexOf('"', j + 1);
  }
}

function isWs(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function skipWs(text: string, i: number): number {
  while (isWs(text.charCodeAt(i))) i++;
  return i;
}

function skipValue(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === QUOTE) return stringEnd(text, i) + 1;
  if (c === 0x7b || c === 0x5b) {
    let depth = 0;
    for (let j = i; ; j++) {
      const d = text.charCodeAt(j);
      if (d === QUOTE) j = stringEnd(text, j);
      else if (d === 0x7b || d === 0x5b) depth++;
      else if ((d === 0x7d || d === 0x5d) && --depth === 0) return j + 1;
    }
  }
  let j = i;
  for (;;) {
    const d = text.charCodeAt(j);
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d) || Number.isNaN(d)) return j;
    j++;
  }
}

/**
 * The first top-level member name that occurs twice (after unescaping), or undefined; for error
 * messages only (memberCount is the check). Same precondition as memberCount.
 */
export function duplicateMember(text: string): string | undefined {
  let i = skipWs(text, 0) + 1;
  const seen = new Set<string>();
  for (;;) {
    i = skipWs(text, i);
    const c = text.charCodeAt(i);
    if (c === 0x7d || Number.isNaN(c)) return undefined;
    if (c === 0x2c) {
      i++;
      continue;
    }
    const end = stringEnd(text, i);
    const name = JSON.parse(text.slice(i, end + 1)) as string;
    if (seen.has(name)) return name;
    seen.add(name);
    i = skipValue(text, skipWs(text, skipWs(text, end + 1) + 1));
  }
}

// ---- base64url without allocation, for short tokens ------------------------------------------

const BASE64URL = /^[A-Za-z0-9_-]*$/;
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** The decoded length if `s` is canonical unpadded base64url, else -1. */
export function base64urlLength(s: string): number {
  const r = s.length % 4;
  if (r === 1 || !BASE64URL.test(s)) return -1;
  if (r !== 0) {
    // The unused low bits of the last character must be zero.
    const last = ALPHABET.indexOf(s[s.length - 1]!);
    if ((r === 2 && (last & 0x0f) !== 0) || (r === 3 && (last & 0x03) !== 0)) return -1;
  }
  return Math.floor((s.length * 3) / 4);
}
