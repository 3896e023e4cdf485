import type { ReasonCode } from '../../authz/index.js';

/**
 * The reason codes an envelope operation can fail with: a subset of the closed ReasonCode set
 * (src/authz). `svid_unavailable` is only raised by the signer (no usable SVID to sign with).
 */
export type EnvelopeReason = Extract<
  ReasonCode,
  | 'envelope_malformed'
  | 'envelope_too_large'
  | 'alg_not_allowed'
  | 'signature_invalid'
  | 'signer_untrusted'
  | 'issuer_mismatch'
  | 'envelope_expired'
  | 'replay'
  | 'audience_mismatch'
  | 'svid_revoked'
  | 'svid_unavailable'
>;

/**
 * The only error the envelope module throws. `code` is the stable reason code, `detail` a stable
 * finer-grained token (docs/envelope.md lists them; for `signer_untrusted` it is the SPIFFE
 * VerificationError code). `message` is for humans and may change.
 */
export class EnvelopeError extends Error {
  override readonly name = 'EnvelopeError';

  constructor(
    readonly code: EnvelopeReason,
    readonly detail: string,
    message?: string,
    options?: { cause?: unknown },
  ) {
    super(message ?? `${code}: ${detail}`, options);
  }
}

export function malformed(detail: string, message?: string): EnvelopeError {
  return new EnvelopeError('envelope_malformed', detail, message ?? `envelope_malformed: ${detail}`);
}

/** Attacker-controlled text quoted in a message: bounded and printable. */
export function quote(s: unknown): string {
  const text = typeof s === 'string' ? s : String(s);
  const cut = text.length > 64 ? text.slice(0, 64) + '…' : text;
  return JSON.stringify(cut);
}
