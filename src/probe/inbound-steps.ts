// Steps over the target's inbound listener that several attack families share: the positive
// control with the legitimate identity, and the readings of a response (accepted, refused at
// TLS, denied with a reason).
import { inboundRequest, type ClientCredentials, type Exchange, type ProbeHttpRequest, type TlsOffer } from './client.js';
import type { Outcome, ProbeContext } from './types.js';

export function identityCredentials(ctx: ProbeContext): ClientCredentials {
  return { certChainPem: ctx.identity.certChainPem, keyPem: ctx.identity.keyPem };
}

export function callInbound(ctx: ProbeContext, credentials: ClientCredentials, request: Partial<ProbeHttpRequest>, signal: AbortSignal, offer?: TlsOffer): Promise<Exchange> {
  return inboundRequest({
    target: ctx.target,
    bundles: ctx.bundles,
    credentials,
    ...(offer ? { offer } : {}),
    request: { path: ctx.path, ...request },
    signal,
  });
}

/** The Sigil reason in a denial: the 403 JSON `reason`, or the 401 challenge's error_description. */
export function denialReason(exchange: Exchange): string | undefined {
  if (exchange.kind !== 'response') return undefined;
  if (exchange.status === 401) {
    const challenge = String(exchange.headers['www-authenticate'] ?? '');
    return /error_description="([a-z_]+)"/.exec(challenge)?.[1] ?? (challenge ? 'invalid_token' : undefined);
  }
  try {
    const body = JSON.parse(exchange.body) as { reason?: unknown };
    return typeof body.reason === 'string' ? body.reason : undefined;
  } catch {
    return undefined;
  }
}

/** A one-line account of an exchange: "HTTP 200", "HTTP 403 policy_denied", "handshake refused (...)". */
export function describeExchange(exchange: Exchange): string {
  if (exchange.kind === 'refused') return exchange.detail;
  const reason = denialReason(exchange);
  return `HTTP ${exchange.status}${reason ? ` ${reason}` : ''}`;
}

/** Sigil's own refusals of a request: 401 (delegation) and 403 (policy, revocation). */
export function isDenial(exchange: Exchange): boolean {
  return exchange.kind === 'response' && (exchange.status === 401 || exchange.status === 403);
}

/** Control reading: the request reached the agent side (any response that is not a denial). */
export function acceptedOutcome(exchange: Exchange): Outcome {
  const observed = describeExchange(exchange);
  return { ok: exchange.kind === 'response' && !isDenial(exchange) && exchange.status < 500, observed };
}

/**
 * Attack reading for identity checks at the handshake: the connection must be refused before any
 * HTTP response (DESIGN: a peer failing SPIFFE verification gets no HTTP response at all).
 */
export function refusedAtHandshake(exchange: Exchange): Outcome {
  const observed = describeExchange(exchange);
  return exchange.kind === 'refused' ? { ok: true, observed } : { ok: false, observed: `accepted: ${observed}` };
}

/**
 * Attack reading, confirmed. A cut without a TLS alert may be the network (a reset by a
 * middlebox) rather than the target, and Sigil refuses a failed SPIFFE check by closing, with no
 * alert: so the legitimate identity is tried again at once, and only if it is still accepted is
 * the cut taken as the target's refusal. Otherwise nothing can be concluded (an error, never a pass).
 */
export async function refusedByTarget(ctx: ProbeContext, exchange: Exchange, signal: AbortSignal): Promise<Outcome> {
  const reading = refusedAtHandshake(exchange);
  if (!reading.ok || exchange.kind !== 'refused' || /\balert\b/.test(exchange.detail)) return reading;
  const again = await legitimateRequest(ctx, signal);
  if (!again.ok) throw new Error(`inconclusive: the connection was cut without a TLS alert (${exchange.detail}), and the legitimate identity was refused right after too (${again.observed})`);
  return reading;
}

/** The standard control: the legitimate identity's request is accepted. */
export async function legitimateRequest(ctx: ProbeContext, signal: AbortSignal, request: Partial<ProbeHttpRequest> = {}): Promise<Outcome> {
  return acceptedOutcome(await callInbound(ctx, identityCredentials(ctx), request, signal));
}
