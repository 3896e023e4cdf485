// Token-endpoint errors, exactly as RFC 6749 §5.2 and RFC 8693 §2.2.2 define them: an `error`
// code from a closed set, a human-readable `error_description`, HTTP 400 (401 for client
// authentication failures). docs/delegation.md §4 lists which check produces which code.

/** The error codes the broker answers with. */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'invalid_grant'
  | 'invalid_scope'
  | 'invalid_target'
  | 'server_error';

export const OAUTH_ERROR_CODES: readonly OAuthErrorCode[] = [
  'invalid_request',
  'invalid_client',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_grant',
  'invalid_scope',
  'invalid_target',
  'server_error',
];

export class TokenEndpointError extends Error {
  readonly status: number;
  /** Sent to the client as `error_description`: never token contents, never key material. */
  readonly description: string;
  constructor(
    readonly error: OAuthErrorCode,
    description: string,
    /** A finer machine-readable reason for logs and metrics (e.g. `actor_mismatch`). */
    readonly reason: string = error,
  ) {
    super(`${error}: ${description}`);
    this.description = safeDescription(description);
    this.status = error === 'invalid_client' ? 401 : error === 'server_error' ? 500 : 400;
  }

  body(): { error: OAuthErrorCode; error_description: string } {
    return { error: this.error, error_description: this.description };
  }
}

/** `error_description` must be printable ASCII without `"` and `\` (RFC 6749 §5.2). */
export function safeDescription(text: string): string {
  return text.replace(/[^\x20-\x21\x23-\x5b\x5d-\x7e]/g, '?').slice(0, 300);
}
