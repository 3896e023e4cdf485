// RFC 8693 §4.1 `act` chains: the current actor outermost, previous actors nested inside.
import type { ActClaim } from './types.js';
import { DelegationError, invalid } from './errors.js';

/** Hard bound on how far an untrusted `act` value is walked, whatever the configured depth cap. */
export const ACT_PARSE_LIMIT = 32;

/** Actor IDs, outermost (current) first. */
export function actorsOf(act: ActClaim | undefined): string[] {
  const out: string[] = [];
  for (let a = act; a !== undefined && out.length < ACT_PARSE_LIMIT; a = a.act) out.push(a.sub);
  return out;
}

/** The `act` of a token issued to `newActor` from a parent token whose `act` was `parent`. */
export function nestAct(newActor: string, parent: ActClaim | undefined): ActClaim {
  return parent === undefined ? { sub: newActor } : { sub: newActor, act: parent };
}

/** Number of actors in the chain (0 for none). */
export function actDepth(act: ActClaim | undefined): number {
  let n = 0;
  for (let a = act; a !== undefined; a = a.act) n++;
  return n;
}

/**
 * Validates an untrusted `act` claim value: an object with a non-empty string `sub` and,
 * optionally, a nested `act` of the same shape. Other members (RFC 8693 allows e.g. `iss`) are
 * dropped. Throws delegation_invalid 'invalid_claim:act', or delegation_too_deep when nested
 * beyond `limit`.
 */
export function parseAct(value: unknown, limit: number = ACT_PARSE_LIMIT): ActClaim {
  const subs: string[] = [];
  let v: unknown = value;
  while (v !== undefined) {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid('invalid_claim:act');
    const rec = v as Record<string, unknown>;
    if (typeof rec.sub !== 'string' || rec.sub.length === 0) throw invalid('invalid_claim:act');
    subs.push(rec.sub);
    if (subs.length > Math.min(limit, ACT_PARSE_LIMIT)) throw new DelegationError('delegation_too_deep', 'depth');
    v = rec.act;
  }
  if (subs.length === 0) throw invalid('invalid_claim:act');
  let out: ActClaim | undefined;
  for (let i = subs.length - 1; i >= 0; i--) out = nestAct(subs[i]!, out);
  return out!;
}
