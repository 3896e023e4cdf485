// RFC 8693 §2.1 token-exchange request parsing: a form body in, a validated request out, or a
// TokenEndpointError with the code RFC 6749/8693 prescribe. Pure; no token is verified here.
import { SpiffeId } from '../spiffe/index.js';
import { TokenEndpointError } from './broker-errors.js';
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT } from './types.js';

export interface ExchangeRequest {
  subjectToken: string;
  subjectTokenType: typeof TOKEN_TYPE_ACCESS_TOKEN | typeof TOKEN_TYPE_JWT;
  actorToken?: string;
  /** Only `urn:ietf:params:oauth:token-type:jwt` is accepted. */
  actorTokenType?: typeof TOKEN_TYPE_JWT;
  /** The one target agent (from `audience` and/or `resource`). */
  audience: SpiffeId;
  /** Requested scope, deduplicated, in request order; undefined when not asked for (= the parent's). */
  scope?: string[];
  requestedTokenType?: string;
  /** Only for a consistency check against the mTLS peer (RFC 8705 §2). */
  clientId?: string;
}

/** Parameters that RFC 6749 §3.2 allows at most once. `audience` and `resource` may repeat (RFC 8693 §2.1). */
const SINGLE = ['grant_type', 'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'scope', 'requested_token_type', 'client_id'] as const;

const SUBJECT_TYPES = new Set<string>([TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT]);
const REQUESTABLE_TYPES = new Set<string>([TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT]);
/** RFC 6749 §3.3 scope-token = 1*NQCHAR. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const MAX_SCOPE_TOKENS = 64;

/** Parses an `application/x-www-form-urlencoded` token request body. */
export function parseExchangeRequest(body: string): ExchangeRequest {
  const form = new URLSearchParams(body);
  // RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
  const values = (name: string): string[] => form.getAll(name).filter((v) => v !== '');
  const one = (name: (typeof SINGLE)[number]): string | undefined => values(name)[0];
  for (const name of SINGLE) {
    if (values(name).length > 1) throw new TokenEndpointError('invalid_request', `parameter ${name} is repeated`);
  }

  const grantType = one('grant_type');
  if (grantType === undefined) throw new TokenEndpointError('invalid_request', 'grant_type is required');
  if (grantType !== GRANT_TYPE_TOKEN_EXCHANGE) {
    throw new TokenEndpointError('unsupported_grant_type', `only ${GRANT_TYPE_TOKEN_EXCHANGE} is supported`);
  }

  const subjectToken = one('subject_token');
  if (subjectToken === undefined) throw new TokenEndpointError('invalid_request', 'subject_token is required');
  const subjectTokenType = one('subject_token_type');
  if (subjectTokenType === undefined) throw new TokenEndpointError('invalid_request', 'subject_token_type is required');
  if (!SUBJECT_TYPES.has(subjectTokenType)) {
    throw new TokenEndpointError('invalid_request', `unsupported subject_token_type (expected ${TOKEN_TYPE_ACCESS_TOKEN} or ${TOKEN_TYPE_JWT})`);
  }

  const actorToken = one('actor_token');
  const actorTokenType = one('actor_token_type');
  if (actorToken !== undefined && actorTokenType === undefined) {
    throw new TokenEndpointError('invalid_request', 'actor_token_type is required when actor_token is present');
  }
  if (actorToken === undefined && actorTokenType !== undefined) {
    throw new TokenEndpointError('invalid_request', 'actor_token_type must not be sent without actor_token');
  }
  if (actorTokenType !== undefined && actorTokenType !== TOKEN_TYPE_JWT) {
    throw new TokenEndpointError('invalid_request', `unsupported actor_token_type (expected ${TOKEN_TYPE_JWT}: a JWT-SVID)`);
  }

  const requestedTokenType = one('requested_token_type');
  if (requestedTokenType !== undefined && !REQUESTABLE_TYPES.has(requestedTokenType)) {
    throw new TokenEndpointError('invalid_request', `unsupported requested_token_type (this broker issues ${TOKEN_TYPE_ACCESS_TOKEN} JWTs)`);
  }

  const targets = [...new Set([...values('audience'), ...values('resource')])];
  if (targets.length === 0) {
    throw new TokenEndpointError('invalid_request', "audience (or resource) is required: the target agent's SPIFFE ID");
  }
  if (targets.length > 1) {
    throw new TokenEndpointError('invalid_target', 'exactly one target agent per request (audience and resource name different targets)');
  }
  let audience: SpiffeId;
  try {
    audience = SpiffeId.parse(targets[0]!);
  } catch {
    throw new TokenEndpointError('invalid_target', 'the audience must be a SPIFFE ID (spiffe://<trust domain>/<path>)');
  }

  const request: ExchangeRequest = {
    subjectToken,
    subjectTokenType: subjectTokenType as ExchangeRequest['subjectTokenType'],
    audience,
  };
  const scope = one('scope');
  if (scope !== undefined) request.scope = parseRequestedScope(scope);
  if (actorToken !== undefined) {
    request.actorToken = actorToken;
    request.actorTokenType = TOKEN_TYPE_JWT;
  }
  if (requestedTokenType !== undefined) request.requestedTokenType = requestedTokenType;
  const clientId = one('client_id');
  if (clientId !== undefined) request.clientId = clientId;
  return request;
}

/** A space-delimited scope parameter → distinct scope tokens. */
export function parseRequestedScope(scope: string): string[] {
  const tokens = scope.split(' ').filter((s) => s !== '');
  if (tokens.length === 0) throw new TokenEndpointError('invalid_scope', 'scope is empty');
  for (const token of tokens) {
    if (!SCOPE_TOKEN.test(token)) throw new TokenEndpointError('invalid_scope', 'scope contains a character outside RFC 6749 section 3.3 scope-token');
  }
  const distinct = [...new Set(tokens)];
  if (distinct.length > MAX_SCOPE_TOKENS) throw new TokenEndpointError('invalid_scope', `at most ${MAX_SCOPE_TOKENS} scope values per request`);
  return distinct;
}
