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
// fail. These scanners find the top-level member names of a JSON text that JSON.parse has
// already accepted as an object, so they can assume valid JSON and only skip values.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/** Index of the quote that closes the string opening at `i`. */
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

/** Index just after the value starting at `i`. */
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
  // number, true, false, null
  let j = i;
  for (;;) {
    const d = text.charCodeAt(j);
    if (d === 0x2c || d === 0x7d || d === 0x5d || isWs(d) || Number.isNaN(d)) return j;
    j++;
  }
}

/**
 * The first top-level member name that occurs twice (compared after unescaping), or undefined.
 * `text` MUST be a JSON text that JSON.parse accepted as an object.
 */
export function duplicateMember(text: string): string | undefined {
  let i = skipWs(text, 0) + 1; // past '{'
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
    let name = text.slice(i + 1, end);
    if (name.includes('\\')) name = JSON.parse(text.slice(i, end + 1)) as string;
    if (seen.has(name)) return name;
    seen.add(name);
    i = skipWs(text, end + 1) + 1; // past ':'
    i = skipValue(text, skipWs(text, i));
  }
}
