/**
 * The closed set of reason codes a decision or a refusal can carry. They appear in denial
 * bodies, WebSocket close frames, JSON-RPC errors, audit lines and metric labels, so they never
 * change meaning; docs/security.md lists them. Anything unexpected maps to a deny with
 * `internal_error` (fail closed).
 */
export const REASON_CODES = [
  'allowed',
  'policy_denied',
  'no_policy',
  'no_route',
  'peer_untrusted',
  'peer_id_mismatch',
  'peer_unreachable',
  'svid_unavailable',
  'upstream_unavailable',
  'bad_request',
  'headers_too_large',
  'body_too_large',
  'jsonrpc_invalid',
  'batch_rejected',
  'internal_error',
  // Signed messages (src/bus): why an envelope was refused, or a publish could not be made.
  'envelope_malformed',
  'envelope_too_large',
  'alg_not_allowed',
  'signature_invalid',
  'signer_untrusted',
  'issuer_mismatch',
  'envelope_expired',
  'replay',
  'audience_mismatch',
  'subject_mismatch',
  'svid_revoked',
  'bus_unavailable',
  'bus_buffer_full',
  // Delegation (src/delegation): why a delegation token was refused or could not be obtained.
  'delegation_required',
  'delegation_invalid',
  'delegation_expired',
  'actor_mismatch',
  'scope_widened',
  'delegation_too_deep',
  'exchange_failed',
  // Revocation (src/revocation): something the request involves is revoked, or the list is too old.
  'revoked',
  'revocation_stale',
  // Egress (src/egress): calls to external APIs through the sidecar.
  'rate_limited',
  'concurrency_limited',
  'credential_unavailable',
  'upstream_untrusted',
] as const;

export type ReasonCode = (typeof REASON_CODES)[number];
