// The one error type of src/delegation. `code` is a reason code from src/authz/reasons.ts (the
// closed set); `detail` is a short stable token naming the rule that failed (e.g. 'bad_signature',
// 'typ', 'alg', 'iss', 'missing_claim:jti'). Neither ever contains token text or claim values, so
// both may go to logs, audit lines and denial bodies.
import type { ReasonCode } from '../authz/reasons.js';

export type DelegationErrorCode = Extract<
  ReasonCode,
  'delegation_required' | 'delegation_invalid' | 'delegation_expired' | 'actor_mismatch' | 'audience_mismatch' | 'scope_widened' | 'delegation_too_deep'
>;

export class DelegationError extends Error {
  override readonly name = 'DelegationError';
  constructor(
    readonly code: DelegationErrorCode,
    readonly detail: string,
  ) {
    super(`${code}: ${detail}`);
  }
}

export function isDelegationError(err: unknown): err is DelegationError {
  return err instanceof DelegationError;
}

/** Shorthand for the most common refusal. */
export function invalid(detail: string): DelegationError {
  return new DelegationError('delegation_invalid', detail);
}
