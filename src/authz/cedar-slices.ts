// Cedar evaluates every policy of a set on every call (≈2.5–3 µs per rule on the bench VM, see
// bench/README.md "scale"), so a large policy slows every uncached decision, although only the
// policies whose scope admits the request's principal and action can ever match it. For each
// (action, principal) seen, this finds those policies and, when they are a small part of the
// policy, evaluates the request against a preparsed set holding just them.
//
// Why the decision is unchanged: a policy left out has a scope `principal == P` or
// `action == A` that the request does not satisfy. Cedar checks the scope before the
// conditions, so such a policy is neither satisfied nor raises an error on this request: the
// decision, the determining policies and the evaluation errors are those of the full set.
import { createHash } from 'node:crypto';
import { cedarWasm } from './cedar-wasm.js';
import type { PolicyScope } from './cedar.js';

/** (action, principal) pairs remembered per policy version; later pairs use the full set. */
export const MAX_PAIRS = 4096;
/**
 * cedar-wasm keeps preparsed sets for the life of the process and cannot drop one, and each
 * costs memory in proportion to its policies (≈2.6 KB per rule). So per policy version the
 * slices hold at most this many times the policy's size, all together; beyond it, the full set.
 */
export const SLICE_BUDGET_FACTOR = 4;
/** A slice is only worth a preparsed set when it leaves out at least half of the policy. */
const MAX_KEPT_SHARE = 0.5;

export class PolicySlices {
  /** (action, principal) → the preparsed set to evaluate it with. */
  private readonly pairs = new Map<string, string>();
  /** Registered slices by the ids they hold: pairs with the same policies share one. */
  private readonly registered = new Set<string>();
  private budget: number;

  constructor(
    /** The full set's preparsed id (the policy version). */
    private readonly version: string,
    private readonly scopes: readonly PolicyScope[],
    budgetFactor = SLICE_BUDGET_FACTOR,
  ) {
    this.budget = budgetFactor * scopes.length;
  }

  /** Slices registered so far (for tests and status). */
  get sliceCount(): number {
    return this.registered.size;
  }

  /** The preparsed set to evaluate a request of this action and principal with. */
  setFor(action: string, principal: string): string {
    const key = JSON.stringify([action, principal]);
    const known = this.pairs.get(key);
    if (known !== undefined) return known;
    const id = this.pairs.size < MAX_PAIRS ? this.sliceFor(action, principal) : this.version;
    if (this.pairs.size < MAX_PAIRS) this.pairs.set(key, id);
    return id;
  }

  private sliceFor(action: string, principal: string): string {
    const kept = this.scopes.filter((s) => (s.principal === undefined || s.principal === principal) && (s.action === undefined || s.action === action));
    if (kept.length > this.scopes.length * MAX_KEPT_SHARE) return this.version;
    // Named by the version and the policies it holds, so one id never holds two different sets
    // (cedar-wasm silently replaces a set registered under an existing id).
    const sliceId = `${this.version}/${createHash('sha256').update(JSON.stringify(kept.map((s) => s.id))).digest('hex').slice(0, 16)}`;
    if (this.registered.has(sliceId)) return sliceId;
    if (kept.length > this.budget) return this.version;
    try {
      const answer = cedarWasm().preparsePolicySet(sliceId, { staticPolicies: Object.fromEntries(kept.map((s) => [s.id, s.text])) });
      if (answer.type !== 'success') return this.version;
    } catch {
      // The full set is always correct; a slice that cannot be registered is not used.
      return this.version;
    }
    this.budget -= kept.length;
    this.registered.add(sliceId);
    return sliceId;
  }
}
