// Cedar evaluates every policy of a set on every call (≈2.5–3 µs per rule on the bench VM, see
// bench/README.md "scale"), so a large policy slows every uncached decision, although only the
// policies whose scope admits the request's principal and action can ever match it. This keeps,
// per (action, principal) seen, a preparsed set holding just those policies.
//
// Why the decision is unchanged: a policy left out has a scope `principal == P` or
// `action == A` that the request does not satisfy. Cedar checks the scope before the
// conditions, so such a policy is neither satisfied nor raises an error on this request: the
// decision, the determining policies and the evaluation errors are those of the full set.
import type * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { cedarWasm } from './cedar-wasm.js';
import type { PolicyScope } from './cedar.js';

/**
 * Slices per policy version. cedar-wasm keeps preparsed sets for the life of the process and
 * has no call to drop one, so the number is bounded; pairs beyond it use the full set.
 */
export const MAX_SLICES = 256;

export class PolicySlices {
  private readonly slices = new Map<string, string>();

  constructor(
    /** The full set's preparsed id (the policy version). */
    private readonly version: string,
    private readonly scopes: readonly PolicyScope[],
  ) {}

  /** The preparsed set to evaluate a request of this action and principal with. */
  setFor(action: string, principal: string): string {
    const key = `${action}\n${principal}`;
    const known = this.slices.get(key);
    if (known !== undefined) return known;
    if (this.slices.size >= MAX_SLICES) return this.version;
    const kept = this.scopes.filter((s) => (s.principal === undefined || s.principal === principal) && (s.action === undefined || s.action === action));
    let id = this.version;
    if (kept.length < this.scopes.length) {
      // A function of the version and the key only: another authorizer of the same version
      // (the same text reloaded) registers the same policies under the same id.
      const sliceId = `${this.version}\n${key}`;
      const registered = cedarWasm().preparsePolicySet(sliceId, { staticPolicies: Object.fromEntries(kept.map((s) => [s.id, s.text])) });
      // The full set is always correct; a slice that cannot be registered is not used.
      if (registered.type === 'success') id = sliceId;
    }
    this.slices.set(key, id);
    return id;
  }
}
