// Delegation-token attacks: every way an agent (or whoever stole a token) might get the target to
// act on a delegation the broker never issued to it. One token is exchanged legitimately at the
// real broker (audience = the target, actor = the test identity) and shared by the run; each
// attack presents a token derived from it, and the control presents it unmodified. A correct
// target answers every attack with 401 and the reason that names the broken rule.
import { createHmac, createPublicKey, generateKeyPairSync, type JsonWebKey } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { CompactSign, type CompactJWSHeaderParameters } from 'jose';
import { decodeUnverified } from '../../delegation/index.js';
import { trustDomainOfCa } from '../../identity/devca.js';
import type { SpiffeId } from '../../spiffe/index.js';
import { BrokerError, exchangeToken, fetchBrokerJwks } from '../broker-client.js';
import type { ClientCredentials, Exchange } from '../client.js';
import { parseEchoReply } from '../echo.js';
import { acceptedOutcome, callInbound, denialReason, describeExchange, identityCredentials } from '../inbound-steps.js';
import { createLeaf } from '../mint.js';
import { AttackSkipped, type Attack, type Outcome, type ProbeContext } from '../types.js';

const DELEGATION_HEADER = 'x-sigil-delegation';
/** The probe waits this long past `exp` + the sidecar's default leeway before presenting an expired token. */
const EXPIRY_MARGIN_MS = 1_000;
/** A shared token is reused only while this much (or half its lifetime, if more) is left. */
const REUSE_MIN_MS = 2_000;
/** The user the tampered token claims to act for: the probe's own marker, never a real user. */
const FORGED_SUB = 'sigil-probe-forged-user';
/** The scope the forged token adds. */
const FORGED_SCOPE = 'admin:*';
const NEEDS_BROKER = 'needs --broker and --subject-token';

/** The legitimately exchanged token, decoded (unverified: the probe only reads what it was given). */
interface LegitToken {
  token: string;
  parts: [string, string, string];
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  expiresAtMs: number;
  lifetimeMs: number;
}

/** One legitimate token per run (per context), re-exchanged when it gets close to its expiry. */
const shared = new WeakMap<ProbeContext, LegitToken>();

export function delegationAttacks(): Attack[] {
  return [wrongAudience(), actorMismatch(), algNone(), hs256KeyConfusion(), tamperedClaims(), widenedScope(), expired()];
}

// ---------------------------------------------------------------------------------------------
// The attacks

function wrongAudience(): Attack {
  return delegationAttack({
    id: 'delegation.wrong-audience',
    title: 'a token the broker issued for another agent, presented to the target by its own actor',
    expected: '401 audience_mismatch',
    proves: "The target checks a delegation token's audience: a token a user delegated for one agent cannot be replayed against another, not even by the actor it was issued to.",
    async attack(ctx, signal) {
      const other = ctx.delegation!.otherAudience;
      if (other.equals(ctx.targetId)) throw new Error(`the other audience ${other} is the target itself: choose another agent's SPIFFE ID`);
      const token = await tokenForOtherAudience(ctx, other, signal);
      return delegationRefused(await present(ctx, token.token, identityCredentials(ctx), signal), { proving: ['audience_mismatch'] }, ctx.echo?.nonce);
    },
  });
}

function actorMismatch(): Attack {
  return delegationAttack({
    id: 'delegation.actor-mismatch',
    title: 'the legitimate token presented by another agent the target trusts at TLS (a stolen token)',
    expected: '401 actor_mismatch',
    proves: "The target binds a delegation token to its mTLS peer (the token's current actor): a token stolen in transit or from logs is useless to any other workload, even a trusted one.",
    skip: (ctx) => needsBroker(ctx) ?? (ctx.federatedCa ? undefined : 'needs --federated-ca'),
    async attack(ctx, signal) {
      const legit = await legitimateToken(ctx, signal);
      const thief = await createLeaf(ctx.federatedCa!, `spiffe://${federatedTrustDomain(ctx)}/sigil-probe/token-thief`);
      const exchange = await present(ctx, legit.token, { certChainPem: thief.pem, keyPem: thief.keyPem }, signal);
      if (exchange.kind === 'refused') {
        throw new Error(`the target refused the --federated-ca identity at TLS (${exchange.detail}), so the token was never judged: the target must have that CA in trust.bundles`);
      }
      return delegationRefused(exchange, { proving: ['actor_mismatch'], policyFirst: true }, ctx.echo?.nonce);
    },
  });
}

function algNone(): Attack {
  return forgedTokenAttack({
    id: 'delegation.alg-none',
    title: 'the legitimate claims under a header with `alg: none` and an empty signature',
    expected: '401 delegation_invalid',
    proves: "The target never accepts an unsigned token: the algorithm comes from its own allow-list, never from the token's header.",
    proving: ['delegation_invalid'],
    forge: (legit) => `${b64Json({ ...legit.header, alg: 'none' })}.${legit.parts[1]}.`,
  });
}

function hs256KeyConfusion(): Attack {
  return forgedTokenAttack({
    id: 'delegation.hs256-key-confusion',
    title: "the legitimate claims signed HS256 with the broker's public key (SPKI PEM) as the HMAC secret",
    expected: '401 delegation_invalid',
    proves: "The target does not let a token switch an asymmetric key to a symmetric algorithm, so whoever has the broker's public key (everyone) still cannot mint tokens.",
    proving: ['delegation_invalid'],
    async forge(legit, ctx, signal) {
      const kid = kidOf(legit);
      const secret = await brokerKeyPem(ctx, kid, signal);
      const signingInput = `${b64Json({ ...legit.header, alg: 'HS256', kid })}.${legit.parts[1]}`;
      return `${signingInput}.${createHmac('sha256', secret).update(signingInput).digest('base64url')}`;
    },
  });
}

function tamperedClaims(): Attack {
  return forgedTokenAttack({
    id: 'delegation.tampered-claims',
    title: 'the legitimate token with `sub` changed to another user, original signature kept',
    expected: '401 delegation_invalid',
    proves: 'The target verifies the signature over exactly the claims it acts on: an agent cannot re-address a delegation to a user who never granted it.',
    proving: ['delegation_invalid'],
    forge: (legit) => `${legit.parts[0]}.${b64Json({ ...legit.payload, sub: FORGED_SUB })}.${legit.parts[2]}`,
  });
}

function widenedScope(): Attack {
  return forgedTokenAttack({
    id: 'delegation.widened-scope',
    title: `the legitimate claims with scope widened by \`${FORGED_SCOPE}\`, signed ES256 by a probe key under the broker's kid`,
    expected: '401 delegation_invalid',
    proves: "The target trusts the broker's keys, not a kid a token names: a well-formed token granting more than the user delegated, signed by anyone else, is refused.",
    proving: ['delegation_invalid', 'scope_widened'],
    async forge(legit) {
      const scope = typeof legit.payload.scope === 'string' && legit.payload.scope !== '' ? `${legit.payload.scope} ${FORGED_SCOPE}` : FORGED_SCOPE;
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const header = { ...legit.header, alg: 'ES256', kid: kidOf(legit) } as CompactJWSHeaderParameters;
      return new CompactSign(Buffer.from(JSON.stringify({ ...legit.payload, scope }))).setProtectedHeader(header).sign(privateKey);
    },
  });
}

function expired(): Attack {
  return delegationAttack({
    id: 'delegation.expired',
    title: "the legitimate token, presented once it has expired (exp + the target's leeway + 1 s)",
    expected: '401 delegation_expired',
    proves: 'The target enforces `exp` (within its clock leeway): a delegation ends when the broker said it would, not when the agent stops using it.',
    skip: (ctx) => needsBroker(ctx) ?? (ctx.delegation!.expiryWaitMs > 0 ? undefined : 'needs --expiry-wait (how long the probe may wait for a token to expire)'),
    // The wait happens inside the attack step: its bound is the wait plus an ordinary step.
    timeoutMs: (ctx) => ctx.stepTimeoutMs + (ctx.delegation?.expiryWaitMs ?? 0),
    async attack(ctx, signal) {
      const legit = await legitimateToken(ctx, signal);
      const leewayS = Math.ceil(ctx.targetLeewayMs / 1000);
      const presentAt = legit.expiresAtMs + ctx.targetLeewayMs + EXPIRY_MARGIN_MS;
      const waitMs = presentAt - Date.now();
      if (waitMs > ctx.delegation!.expiryWaitMs) {
        const lifetime = Math.ceil(legit.lifetimeMs / 1000);
        const needed = lifetime + leewayS + Math.ceil(EXPIRY_MARGIN_MS / 1000);
        throw new AttackSkipped(`the broker's tokens live ${lifetime} s; pass --expiry-wait ≥ ${needed}s (lifetime + the target's ${leewayS} s leeway + 1 s)`);
      }
      if (waitMs > 0) {
        ctx.progress(`delegation.expired: waiting ${Math.ceil(waitMs / 1000)} s for the token to expire`);
        await sleep(waitMs, undefined, { signal });
      }
      const exchange = await present(ctx, legit.token, identityCredentials(ctx), signal);
      const outcome = delegationRefused(exchange, { proving: ['delegation_expired'] }, ctx.echo?.nonce);
      if (outcome.ok) return outcome;
      const late = Math.floor((Date.now() - legit.expiresAtMs) / 1000);
      return { ok: false, observed: `${outcome.observed}, ${late} s after exp (the target's leeway is ${leewayS} s by --target-leeway)` };
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Shared steps

type AttackSpec = Omit<Attack, 'family' | 'control'> & Partial<Pick<Attack, 'control'>>;

function delegationAttack(spec: AttackSpec): Attack {
  return { family: 'delegation', skip: needsBroker, control: legitimateControl, ...spec };
}

/** An attack that alters the legitimate token (`forge`) and presents it as the legitimate identity. */
function forgedTokenAttack(
  spec: Omit<AttackSpec, 'attack'> & { proving: string[]; forge(legit: LegitToken, ctx: ProbeContext, signal: AbortSignal): string | Promise<string> },
): Attack {
  const { proving, forge, ...rest } = spec;
  return delegationAttack({
    ...rest,
    async attack(ctx, signal) {
      const token = await forge(await legitimateToken(ctx, signal), ctx, signal);
      return delegationRefused(await present(ctx, token, identityCredentials(ctx), signal), { proving }, ctx.echo?.nonce);
    },
  });
}

function needsBroker(ctx: ProbeContext): string | undefined {
  return ctx.delegation ? undefined : NEEDS_BROKER;
}

/** Control: the shared legitimate token, presented by the identity it was issued to, is accepted. */
async function legitimateControl(ctx: ProbeContext, signal: AbortSignal): Promise<Outcome> {
  const legit = await legitimateToken(ctx, signal);
  const exchange = await present(ctx, legit.token, identityCredentials(ctx), signal);
  return acceptedWithDelegation(exchange, legit.payload.sub, ctx.echo?.nonce);
}

async function legitimateToken(ctx: ProbeContext, signal: AbortSignal): Promise<LegitToken> {
  const cached = shared.get(ctx);
  if (cached && reusable(cached)) return cached;
  const fresh = await exchangeFor(ctx, ctx.targetId, signal);
  shared.set(ctx, fresh);
  return fresh;
}

/** Enough life left that no check can fail for expiry before the attack it serves is judged. */
function reusable(token: LegitToken, nowMs = Date.now()): boolean {
  return token.expiresAtMs - nowMs >= Math.max(REUSE_MIN_MS, token.lifetimeMs / 2);
}

async function exchangeFor(ctx: ProbeContext, audience: SpiffeId, signal: AbortSignal): Promise<LegitToken> {
  const scope = ctx.delegation!.scope;
  const { token, expiresIn } = await exchangeToken(ctx, { audience, ...(scope ? { scope } : {}) }, signal);
  return decodeToken(token, expiresIn);
}

/** A refusal here proves nothing about the target: the run must say so (error), not fail it. */
async function tokenForOtherAudience(ctx: ProbeContext, other: SpiffeId, signal: AbortSignal): Promise<LegitToken> {
  let token: LegitToken;
  try {
    token = await exchangeFor(ctx, other, signal);
  } catch (err) {
    if (!(err instanceof BrokerError)) throw err;
    throw new Error(`the broker would not issue a token for ${other} (${err.code}), so nothing was tried: name an agent the broker issues tokens for as the other audience`);
  }
  const aud = token.payload.aud;
  if (aud === ctx.targetId.toString() || (Array.isArray(aud) && aud.includes(ctx.targetId.toString()))) {
    throw new Error(`the broker's token for ${other} also names the target as its audience: nothing can be tried`);
  }
  return token;
}

function decodeToken(token: string, expiresIn: number): LegitToken {
  let decoded: ReturnType<typeof decodeUnverified>;
  try {
    decoded = decodeUnverified(token);
  } catch {
    throw new Error('the broker issued something that is not a compact JWS');
  }
  const { header, payload } = decoded;
  const receivedAt = Date.now();
  // The target judges `exp`, so that is what counts; expires_in only when there is none.
  const expiresAtMs = typeof payload.exp === 'number' ? payload.exp * 1000 : receivedAt + expiresIn * 1000;
  const lifetimeMs = typeof payload.exp === 'number' && typeof payload.iat === 'number' ? (payload.exp - payload.iat) * 1000 : expiresIn * 1000;
  return { token, parts: token.split('.') as [string, string, string], header, payload, expiresAtMs, lifetimeMs };
}

function kidOf(token: LegitToken): string {
  const kid = token.header.kid;
  if (typeof kid !== 'string' || kid === '') throw new Error("the broker's token has no kid: the key-confusion and forged-key attacks need one");
  return kid;
}

/**
 * The broker key `kid` as SPKI PEM text: what a confused verifier would use as the HMAC secret.
 * From the JWKS given to the probe, else (or when that one predates a key rotation) the broker's.
 */
async function brokerKeyPem(ctx: ProbeContext, kid: string, signal: AbortSignal): Promise<string> {
  const byKid = (keys: Array<Record<string, unknown>>): Record<string, unknown> | undefined => keys.find((k) => k.kid === kid);
  const jwk = byKid(ctx.delegation!.jwks?.keys ?? []) ?? byKid((await fetchBrokerJwks(ctx, signal)).keys);
  if (!jwk) throw new Error(`the broker's JWKS has no key ${kid} (the kid of a token it just issued)`);
  return createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString();
}

/** The trust domain the federated CA vouches for (its spiffe:// URI SAN, as `sigil ca init` writes it). */
function federatedTrustDomain(ctx: ProbeContext): string {
  return trustDomainOfCa(ctx.federatedCa!.cert).name;
}

function present(ctx: ProbeContext, token: string, credentials: ClientCredentials, signal: AbortSignal): Promise<Exchange> {
  return callInbound(ctx, credentials, { headers: { [ctx.delegation!.header]: `Bearer ${token}` } }, signal);
}

function b64Json(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

// ---------------------------------------------------------------------------------------------
// Readings (exported for tests: a target that accepts must make them report ok:false)

export interface RefusalRule {
  /** 401 reasons that show the target refused for the rule the attack breaks. */
  proving: readonly string[];
  /**
   * A 403 means policy refused the peer itself before its token was judged: nothing is proven
   * about the token, so the attack is skipped (with what to allow), never passed.
   */
  policyFirst?: boolean;
}

/**
 * Attack reading. 401 with a proving reason: rejected (ok). A response that let the request
 * through, or a 403 where a 401 was due (the token passed the delegation check and only policy
 * stopped it): not rejected. Anything that proves neither (a 401 for an unrelated reason, a
 * 5xx, a closed connection) throws, so the run reports an error rather than a verdict.
 */
export function delegationRefused(exchange: Exchange, rule: RefusalRule, echoNonce?: string): Outcome {
  if (exchange.kind === 'refused') throw new Error(`the target closed the connection instead of answering (${exchange.detail}): nothing can be concluded about the token`);
  const observed = describeRefusal(exchange);
  if (exchange.status === 401) {
    if (rule.proving.includes(denialReason(exchange) ?? '')) return { ok: true, observed };
    throw new Error(`refused, but with ${observed}, which does not show the rule under test (expected ${rule.proving.join(' or ')})`);
  }
  if (exchange.status === 403) {
    if (rule.policyFirst) throw new AttackSkipped(`${observed}: policy refused the other agent before its token was judged; allow it http on the target to test token binding`);
    return { ok: false, observed: `${observed}: the token got past the delegation check (401 due); only policy stopped this request` };
  }
  if (exchange.status >= 500) throw new Error(`the target failed (${observed}): nothing can be concluded`);
  return { ok: false, observed: `accepted: ${observed}${agentSaw(exchange, echoNonce)}` };
}

/** Control reading: accepted, and (with the echo upstream) the agent got this token's delegation. */
export function acceptedWithDelegation(exchange: Exchange, sub: unknown, echoNonce?: string): Outcome {
  const accepted = acceptedOutcome(exchange);
  if (!accepted.ok || echoNonce === undefined || exchange.kind !== 'response') return accepted;
  const reply = parseEchoReply(exchange.body, echoNonce);
  if (!reply) return { ok: false, observed: `${accepted.observed}, but not from the probe's echo upstream (is the target's inbound.upstream the echo address?)` };
  const seen = delegationSeen(reply.headers[DELEGATION_HEADER]);
  if (!seen) return { ok: false, observed: `${accepted.observed}, but the agent got no ${DELEGATION_HEADER}: the token was not verified` };
  if (seen.sub !== sub) return { ok: false, observed: `${accepted.observed}, but ${DELEGATION_HEADER} names another user than the token's sub` };
  return { ok: true, observed: `${accepted.observed}; the agent got the verified delegation` };
}

/** "HTTP 401 delegation_invalid (bad_signature)": Sigil's denial body names the failed rule. */
function describeRefusal(exchange: Extract<Exchange, { kind: 'response' }>): string {
  const base = describeExchange(exchange);
  if (exchange.status !== 401) return base;
  try {
    const detail = (JSON.parse(exchange.body) as { detail?: unknown }).detail;
    return typeof detail === 'string' && /^[a-z_:]{1,40}$/.test(detail) ? `${base} (${detail})` : base;
  } catch {
    return base;
  }
}

/** What the echo upstream says the agent was told about the (unwanted) delegation. */
function agentSaw(exchange: Extract<Exchange, { kind: 'response' }>, echoNonce: string | undefined): string {
  if (echoNonce === undefined) return '';
  const reply = parseEchoReply(exchange.body, echoNonce);
  if (!reply) return '';
  return reply.headers[DELEGATION_HEADER] === undefined ? '; the agent got it as a non-delegated call' : '; the agent was handed it as a verified delegation';
}

function delegationSeen(value: string | string[] | undefined): { sub?: unknown } | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    const parsed: unknown = JSON.parse(value);
    return typeof parsed === 'object' && parsed !== null ? (parsed as { sub?: unknown }) : undefined;
  } catch {
    return undefined;
  }
}
