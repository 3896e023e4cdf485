// Every failure in src/spiffe is one of these classes. Callers branch on `code` (stable, part
// of the public contract) and `problem`/`detail` (stable, finer-grained); `message` is for humans
// and may change.

export abstract class SpiffeError extends Error {
  abstract readonly code: string;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * Problems: 'empty', 'too_long', 'wrong_scheme', 'missing_trust_domain', 'bad_trust_domain_char',
 * 'trust_domain_too_long', 'userinfo', 'port', 'query', 'fragment', 'percent_encoding',
 * 'empty_segment', 'dot_segment', 'bad_path_char', 'trailing_slash', 'not_a_string';
 * patterns add 'bad_wildcard' and 'wildcard_trust_domain'.
 */
export class SpiffeIdError extends SpiffeError {
  readonly code = 'invalid_spiffe_id' as const;
  constructor(
    readonly problem: string,
    message: string,
  ) {
    super(message);
  }
}

/**
 * Problems: 'pem', 'der', 'malformed', 'duplicate_extension', 'unknown_critical_extension',
 * 'no_uri_san', 'multiple_uri_sans', 'not_spiffe_id', 'root_path', 'ca_leaf', 'missing_key_usage',
 * 'key_usage_not_critical', 'no_digital_signature', 'key_cert_sign', 'crl_sign',
 * 'eku_missing_server_or_client_auth', 'not_ca', 'no_key_cert_sign', 'signing_id_has_path',
 * 'unprocessable_name_constraints'.
 */
export class SvidError extends SpiffeError {
  readonly code = 'svid_invalid' as const;
  constructor(
    readonly problem: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * Problems: 'pem', 'json', 'not_object', 'missing_keys', 'bad_key_entry', 'bad_x5c', 'bad_sequence',
 * 'bad_refresh_hint'. (An x509-svid entry with a missing/empty x5c is ignored and extra x5c
 * values are ignored, per X509-SVID §6.2; 'missing_x5c'/'multiple_x5c' are no longer raised.)
 */
export class BundleError extends SpiffeError {
  readonly code = 'bundle_invalid' as const;
  constructor(
    readonly problem: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export type VerificationCode =
  | 'trust_domain_unknown'
  | 'certificate_expired'
  | 'certificate_not_yet_valid'
  | 'chain_invalid'
  | 'svid_invalid';

export class VerificationError extends SpiffeError {
  constructor(
    readonly code: VerificationCode,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`${code}: ${detail}`, options);
  }
}
