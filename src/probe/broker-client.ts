// The probe's client of the delegation broker: one RFC 8693 token exchange (a form POST to the
// token endpoint) and the broker's published keys, both over mTLS with the legitimate test
// identity. The broker's SVID is verified against the probe's bundles (and must be the given
// broker ID) before the subject token is sent: the probe never hands a user's token to a
// server it has not verified. Tokens never appear in an error message.
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN } from '../delegation/index.js';
import type { SpiffeId } from '../spiffe/index.js';
import { inboundRequest, ProbeStepError, type Exchange, type ProbeHttpRequest } from './client.js';
import { identityCredentials } from './inbound-steps.js';
import type { ProbeContext, ProbeTarget } from './types.js';

/** The broker's OAuth error code (`invalid_target`, `invalid_scope`, ...) or a transport failure class. */
export type BrokerErrorCode = string;

export class BrokerError extends Error {
  override readonly name = 'BrokerError';
  constructor(
    /** RFC 6749 §5.2 `error` from the broker, or: broker_unverified, broker_refused_connection, broker_unreachable, bad_response, bad_url. */
    readonly code: BrokerErrorCode,
    message: string,
    /** The broker's HTTP status, when it answered. */
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface ExchangedToken {
  /** The delegation token. Never printed. */
  token: string;
  /** The broker's `expires_in`, in seconds. */
  expiresIn: number;
}

export interface ExchangeParams {
  audience: SpiffeId | string;
  scope?: string[];
}

export type Jwks = { keys: Array<Record<string, unknown>> };

/** Exchanges ctx.delegation.subjectToken for a token addressed to `audience`; throws BrokerError. */
export async function exchangeToken(ctx: ProbeContext, params: ExchangeParams, signal: AbortSignal): Promise<ExchangedToken> {
  const d = delegationInputs(ctx);
  const form = new URLSearchParams({
    grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
    subject_token: d.subjectToken,
    subject_token_type: TOKEN_TYPE_ACCESS_TOKEN,
    audience: params.audience.toString(),
  });
  if (params.scope !== undefined && params.scope.length > 0) form.set('scope', params.scope.join(' '));
  const body = form.toString();
  const response = await brokerRequest(ctx, d.brokerUrl, {
    method: 'POST',
    path: d.brokerUrl.pathname + d.brokerUrl.search,
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)), accept: 'application/json' },
    body,
  }, signal);
  const json = jsonObject(response.body, response.status);
  if (response.status !== 200) throw refusal(json, response.status, params.audience.toString());
  const token = json.access_token;
  const expiresIn = json.expires_in;
  if (typeof token !== 'string' || token.length === 0 || typeof expiresIn !== 'number' || !(expiresIn > 0)) {
    throw new BrokerError('bad_response', 'the broker answered 200 without access_token or expires_in', 200);
  }
  return { token, expiresIn };
}

/** The broker's public keys from GET /.well-known/jwks.json on the token endpoint's origin. */
export async function fetchBrokerJwks(ctx: ProbeContext, signal: AbortSignal): Promise<Jwks> {
  const d = delegationInputs(ctx);
  const response = await brokerRequest(ctx, d.brokerUrl, { method: 'GET', path: '/.well-known/jwks.json', headers: { accept: 'application/json' } }, signal);
  if (response.status !== 200) throw new BrokerError('bad_response', `the broker answered HTTP ${response.status} for /.well-known/jwks.json`, response.status);
  const keys = jsonObject(response.body, response.status).keys;
  if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'object' && k !== null && !Array.isArray(k))) {
    throw new BrokerError('bad_response', 'the broker\'s /.well-known/jwks.json is not a JWK set', response.status);
  }
  return { keys: keys as Array<Record<string, unknown>> };
}

function delegationInputs(ctx: ProbeContext): NonNullable<ProbeContext['delegation']> {
  if (!ctx.delegation) throw new Error('no broker configured (needs --broker and --subject-token)');
  return ctx.delegation;
}

/**
 * One request to the broker. The inbound client already does exactly what is needed (mTLS
 * with the test identity, SPIFFE verification of the server and of its expected ID before any
 * byte of HTTP): the broker is simply its target here.
 */
async function brokerRequest(ctx: ProbeContext, url: URL, request: ProbeHttpRequest, signal: AbortSignal): Promise<{ status: number; body: string }> {
  if (url.protocol !== 'https:') throw new BrokerError('bad_url', `the broker URL must be https:// (got ${url.protocol}): tokens only travel over mTLS`);
  const target: ProbeTarget = {
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: Number(url.port || 443),
    ...(ctx.delegation?.brokerId ? { expectedId: ctx.delegation.brokerId } : {}),
  };
  let exchange: Exchange;
  try {
    exchange = await inboundRequest({ target, bundles: ctx.bundles, credentials: identityCredentials(ctx), request, signal });
  } catch (err) {
    throw brokerTransportError(err, url);
  }
  if (exchange.kind === 'refused') {
    throw new BrokerError('broker_refused_connection', `the broker at ${url.origin} refused the test identity's connection (${exchange.detail}): does it trust ${ctx.identity.id}?`);
  }
  return { status: exchange.status, body: exchange.body };
}

/** Re-labels the inbound client's failures as the broker's; an abort stays an abort (the runner's timeout). */
function brokerTransportError(err: unknown, url: URL): unknown {
  if (!(err instanceof ProbeStepError)) return err;
  if (err.code === 'target_unverified') return new BrokerError('broker_unverified', `the broker is not who it should be: ${err.message}`);
  if (err.code === 'unreachable') return new BrokerError('broker_unreachable', `cannot reach the broker at ${url.origin}: ${err.message}`);
  if (err.code === 'bad_response') return new BrokerError('bad_response', `the broker's answer broke off: ${err.message}`);
  return err;
}

function jsonObject(body: string, status: number): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(body);
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // reported below
  }
  throw new BrokerError('bad_response', `the broker answered HTTP ${status} without a JSON object`, status);
}

function refusal(json: Record<string, unknown>, status: number, audience: string): BrokerError {
  const code = typeof json.error === 'string' && /^[a-z_]{1,40}$/.test(json.error) ? json.error : 'broker_error';
  const description = typeof json.error_description === 'string' ? ` (${printable(json.error_description)})` : '';
  return new BrokerError(code, `the broker refused a token for ${audience}: HTTP ${status} ${code}${description}`, status);
}

/**
 * Sigil's broker never puts token text into error_description, but this text ends up in a
 * report, so anything that looks like a JWT is blanked regardless of who wrote it.
 */
function printable(text: string): string {
  return text
    .replace(/eyJ[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)*/g, '<redacted>')
    .replace(/[^\x20-\x7e]/g, '?')
    .slice(0, 200);
}
