// OAuth scopes (RFC 6749 §3.3): space-delimited, case-sensitive tokens of
// %x21 / %x23-5B / %x5D-7E (printable ASCII except space, `"` and `\`).
import { invalid } from './errors.js';

const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
/** Bounds on untrusted input. */
export const MAX_SCOPE_LENGTH = 8192;
export const MAX_SCOPE_TOKENS = 256;

/**
 * A scope value → its unique tokens in first-seen order. Accepts a space-delimited string (runs
 * of spaces are tolerated) or an array of token strings (as some identity providers send `scp`);
 * `undefined` → []. Anything else, a token outside the charset, or more than MAX_SCOPE_TOKENS /
 * MAX_SCOPE_LENGTH → DelegationError delegation_invalid 'scope'.
 */
export function parseScope(scope: unknown): string[] {
  if (scope === undefined) return [];
  let parts: unknown[];
  if (typeof scope === 'string') {
    if (scope.length > MAX_SCOPE_LENGTH) throw invalid('scope');
    parts = scope.split(' ');
  } else if (Array.isArray(scope)) {
    parts = scope;
  } else {
    throw invalid('scope');
  }
  const seen = new Set<string>();
  let total = 0;
  for (const p of parts) {
    if (typeof p !== 'string') throw invalid('scope');
    if (p === '' && typeof scope === 'string') continue;
    total += p.length + 1;
    if (!SCOPE_TOKEN.test(p) || total > MAX_SCOPE_LENGTH) throw invalid('scope');
    seen.add(p);
    if (seen.size > MAX_SCOPE_TOKENS) throw invalid('scope');
  }
  return [...seen];
}

/** Tokens → the space-delimited claim value. */
export function formatScope(tokens: readonly string[]): string {
  return tokens.join(' ');
}

/**
 * Narrowing: granted = requested ∩ parent ∩ allowed, in the order of `requested` (or of
 * `parent` when nothing was requested, which means "everything the parent had"). `allowed`
 * undefined means no policy limit. `dropped` lists the tokens that were asked for (or, with no
 * request, inherited) but not granted, so callers can refuse instead of silently narrowing.
 */
export function narrowScope(requested: string[] | undefined, parent: string[], allowed?: string[]): { granted: string[]; dropped: string[] } {
  const parentSet = new Set(parent);
  const allowedSet = allowed === undefined ? undefined : new Set(allowed);
  const granted: string[] = [];
  const dropped: string[] = [];
  const seen = new Set<string>();
  for (const t of requested ?? parent) {
    if (seen.has(t)) continue;
    seen.add(t);
    if (parentSet.has(t) && (allowedSet === undefined || allowedSet.has(t))) granted.push(t);
    else dropped.push(t);
  }
  return { granted, dropped };
}
