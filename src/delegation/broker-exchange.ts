// The token exchange itself (RFC 8693 §2): a validated request from a verified mTLS peer in, a
// signed RFC 9068 delegation token out, or a TokenEndpointError. Every rule, in order:
//
//   1. request syntax (broker-request.ts)                 invalid_request / unsupported_grant_type / invalid_target / invalid_scope
//   2. client_id, if sent, names the mTLS peer            invalid_client (401)
//   3. actor_token (JWT) `sub` = the mTLS peer            invalid_request (consistency only: no JWT-SVID bundles yet)
//   4. subject_token verified (user IdP or this broker)   invalid_request
//      chained: its `aud` must be the mTLS peer           unauthorized_client (a stolen intermediate token)
//   5. nothing in the delegation is revoked: the actor,   invalid_grant (reason `revoked`)
//      the chain's actors, the user, the task, the jti
//   6. may_act, if present, names the mTLS peer           unauthorized_client
//   7. new depth ≤ maxDepth                               invalid_request
//   8. audience: another agent, in a known trust domain   invalid_target
//   9. Cedar delegation.exchange                          invalid_target (or the deny's @error)
//  10. scope = requested ∩ parent ∩ per-audience ceiling  invalid_scope when nothing remains
//  11. exp = min(parent exp, now + maxTtl)                invalid_request when that is not in the future
import { randomBytes } from 'node:crypto';
import type { SpiffeId } from '../spiffe/index.js';
import { SpiffeIdPattern } from '../spiffe/index.js';
import { TokenEndpointError } from './broker-errors.js';
import type { BrokerPolicy, ExchangeDecision } from './broker-policy.js';
import { parseExchangeRequest, type ExchangeRequest } from './broker-request.js';
import type { AudienceScopes } from './broker-config.js';
import {
  actDepth,
  actorsOf,
  decodeUnverified,
  DelegationError,
  formatScope,
  nestAct,
  narrowScope,
  signDelegationToken,
  verifySubjectToken,
  type DelegationTokenClaims,
  type KeySource,
  type SigningKey,
  type UserTokenIssuer,
  type VerifiedSubject,
} from './index.js';
import { TOKEN_TYPE_ACCESS_TOKEN } from './types.js';

export interface ExchangeSettings {
  issuer: string;
  maxTtlSeconds: number;
  maxDepth: number;
  leewaySeconds: number;
  users: UserTokenIssuer[];
  /** The broker's own published keys (verifies chained subject tokens). */
  brokerKeys: KeySource;
  signer: () => SigningKey;
  policy: Pick<BrokerPolicy, 'authorize'>;
  scopes: AudienceScopes[];
  /** Whether the broker holds a trust bundle for this trust domain (unknown audiences are refused). */
  knowsTrustDomain: (td: string) => boolean;
  /**
   * The kill switch: the revocation entry (kind and id) that revokes anything this exchange
   * involves — the requesting actor, an actor of the parent chain, the user, the chain's task
   * (chained tokens), the subject token's `jti` — or undefined. Without it nothing is revoked.
   */
  revoked?: (q: RevocationQuery) => { kind: string; id: string } | undefined;
}

/** What an exchange involves, as the revocation check sees it. */
export interface RevocationQuery {
  /** The requesting actor (the mTLS peer). */
  actor: SpiffeId;
  /** The user. */
  sub: string;
  /** The chain's task (chained subject tokens only: a user token has none yet). */
  task?: string;
  /** The subject token's `jti`, when it has one. */
  jti?: string;
  /** The parent chain's actors (empty for a user token). */
  actors: string[];
}

/** RFC 8693 §2.2.1 successful response. */
export interface TokenResponse {
  access_token: string;
  issued_token_type: typeof TOKEN_TYPE_ACCESS_TOKEN;
  token_type: 'Bearer';
  expires_in: number;
  scope: string;
}

/** What one exchange did, for the log line and metrics: never the tokens. */
export interface ExchangeRecord {
  peer: string;
  audience?: string;
  sub?: string;
  subjectTokenType?: 'user' | 'delegation';
  depth?: number;
  scope?: string[];
  dropped?: string[];
  jti?: string;
  task?: string;
  kid?: string;
  exp?: number;
  policies?: string[];
  policyVersion?: string;
  /** The revocation entry that refused the exchange. */
  revocation?: { kind: string; id: string };
}

export interface ExchangeOutcome {
  response: TokenResponse;
  record: ExchangeRecord;
}

/** A refusal with what was learnt before it (for the log line). */
export class ExchangeRefusal extends Error {
  constructor(
    readonly error: TokenEndpointError,
    readonly record: ExchangeRecord,
  ) {
    super(error.message);
  }
}

export class TokenExchanger {
  private readonly scopePatterns: { pattern: SpiffeIdPattern; allow: string[] }[];

  constructor(private readonly settings: ExchangeSettings) {
    this.scopePatterns = settings.scopes.map((s) => ({ pattern: SpiffeIdPattern.parse(s.audience), allow: s.allow }));
  }

  /** Handles one form-encoded token request from `peer`; rejects with an ExchangeRefusal. */
  async exchange(peer: SpiffeId, body: string, nowMs = Date.now()): Promise<ExchangeOutcome> {
    const record: ExchangeRecord = { peer: peer.toString() };
    try {
      return { response: await this.run(peer, body, nowMs, record), record };
    } catch (err) {
      if (err instanceof TokenEndpointError) throw new ExchangeRefusal(err, record);
      throw err;
    }
  }

  private async run(peer: SpiffeId, body: string, nowMs: number, record: ExchangeRecord): Promise<TokenResponse> {
    const s = this.settings;
    const peerId = peer.toString();
    const request = parseExchangeRequest(body);
    record.audience = request.audience.toString();

    if (request.clientId !== undefined && request.clientId !== peerId) {
      throw new TokenEndpointError('invalid_client', 'client_id does not name the authenticated client (the mTLS peer)', 'client_id_mismatch');
    }
    if (request.actorToken !== undefined) this.checkActorToken(request.actorToken, peerId, nowMs);

    const subject = await this.verifySubject(request, peerId, nowMs);
    record.sub = subject.sub;
    record.subjectTokenType = subject.kind;
    if (subject.task !== undefined) record.task = subject.task;
    this.checkRevoked(peer, subject, record);

    if (subject.mayAct !== undefined && !subject.mayAct.some((m) => m.sub === peerId)) {
      throw new TokenEndpointError('unauthorized_client', 'the subject token\'s may_act does not name this actor', 'may_act');
    }
    const depth = actDepth(subject.act) + 1;
    record.depth = depth;
    if (depth > s.maxDepth) {
      throw new TokenEndpointError('invalid_request', `the delegation chain would exceed the maximum depth (${s.maxDepth})`, 'delegation_too_deep');
    }

    const audience = request.audience;
    if (audience.equals(peer)) throw new TokenEndpointError('invalid_target', 'the audience must be another agent than the requesting one', 'audience_self');
    if (!s.knowsTrustDomain(audience.trustDomain.name)) {
      throw new TokenEndpointError('invalid_target', `unknown audience trust domain ${audience.trustDomain.name}`, 'audience_unknown');
    }

    // Cedar sees the scope asked for, already narrowed to the parent's (never wider).
    const asked = narrowScope(request.scope, subject.scope);
    const decision = s.policy.authorize({
      actor: peer,
      audience,
      sub: subject.sub,
      scope: asked.granted,
      actors: actorsOf(subject.act),
      depth,
      subjectTokenType: subject.kind,
      time: Math.floor(nowMs / 1000),
    });
    record.policies = decision.policies;
    record.policyVersion = decision.policyVersion;
    if (!decision.allowed) throw policyRefusal(decision);

    const ceiling = this.scopeCeiling(audience);
    const { granted, dropped } = narrowScope(request.scope, subject.scope, ceiling);
    record.scope = granted;
    record.dropped = dropped;
    if (granted.length === 0) {
      throw new TokenEndpointError('invalid_scope', 'no requested scope is both held by the subject token and allowed for this audience', 'scope_widened');
    }

    const now = Math.floor(nowMs / 1000);
    // Whole seconds (RFC 7519 allows fractional NumericDates; our tokens use integers), rounded
    // down so the new token never outlives its parent.
    const exp = Math.floor(Math.min(subject.exp, now + s.maxTtlSeconds));
    if (exp <= now) throw new TokenEndpointError('invalid_request', 'the subject token expires too soon to issue a token', 'delegation_expired');

    const key = s.signer();
    const claims: DelegationTokenClaims = {
      iss: s.issuer,
      sub: subject.sub,
      aud: audience.toString(),
      client_id: peerId,
      act: nestAct(peerId, subject.act),
      scope: formatScope(granted),
      iat: now,
      exp,
      jti: randomBytes(18).toString('base64url'),
      task: subject.task ?? randomBytes(16).toString('base64url'),
    };
    const token = await signDelegationToken(claims, key);
    Object.assign(record, { jti: claims.jti, task: claims.task, kid: key.kid, exp });
    return { access_token: token, issued_token_type: TOKEN_TYPE_ACCESS_TOKEN, token_type: 'Bearer', expires_in: exp - now, scope: claims.scope };
  }

  /** The kill switch, before anything else looks at the delegation (policy included). */
  private checkRevoked(peer: SpiffeId, subject: VerifiedSubject, record: ExchangeRecord): void {
    const revoked = this.settings.revoked;
    if (!revoked) return;
    const jti = subject.claims['jti'];
    const hit = revoked({
      actor: peer,
      sub: subject.sub,
      actors: actorsOf(subject.act),
      ...(subject.task !== undefined ? { task: subject.task } : {}),
      ...(typeof jti === 'string' && jti !== '' ? { jti } : {}),
    });
    if (!hit) return;
    record.revocation = { kind: hit.kind, id: hit.id };
    throw new TokenEndpointError('invalid_grant', `the subject token's delegation is revoked (${hit.kind})`, 'revoked');
  }

  /**
   * Consistency check only: Sigil has no JWT-SVID bundles yet, so the actor token's signature is
   * not verified; the mTLS handshake already authenticated the actor. A token naming anyone
   * else, malformed, or expired is refused.
   */
  private checkActorToken(token: string, peerId: string, nowMs: number): void {
    let payload: Record<string, unknown>;
    try {
      payload = decodeUnverified(token).payload;
    } catch {
      throw new TokenEndpointError('invalid_request', 'actor_token is not a well-formed JWT', 'actor_token_invalid');
    }
    if (payload.sub !== peerId) {
      throw new TokenEndpointError('invalid_request', 'actor_token sub is not the authenticated client (the mTLS peer)', 'actor_mismatch');
    }
    if (payload.exp !== undefined && (typeof payload.exp !== 'number' || payload.exp + this.settings.leewaySeconds <= nowMs / 1000)) {
      throw new TokenEndpointError('invalid_request', 'actor_token is expired', 'actor_token_expired');
    }
  }

  private async verifySubject(request: ExchangeRequest, peerId: string, nowMs: number): Promise<VerifiedSubject> {
    const s = this.settings;
    try {
      return await verifySubjectToken(request.subjectToken, {
        users: s.users,
        broker: { issuer: s.issuer, keys: s.brokerKeys },
        audienceForChained: peerId,
        nowMs,
        leewaySeconds: s.leewaySeconds,
      });
    } catch (err) {
      if (!(err instanceof DelegationError)) throw err;
      const chained = isChained(request.subjectToken, s.issuer);
      if (chained && err.code === 'audience_mismatch') {
        throw new TokenEndpointError('unauthorized_client', 'the subject token was not issued to this actor (its aud is another agent)', 'actor_mismatch');
      }
      if (err.code === 'delegation_expired') throw new TokenEndpointError('invalid_request', 'subject_token is expired', 'delegation_expired');
      if (err.detail === 'unknown_issuer') throw new TokenEndpointError('invalid_request', 'subject_token is from an unknown issuer', 'unknown_issuer');
      if (err.code === 'audience_mismatch') throw new TokenEndpointError('invalid_request', 'subject_token is not addressed to this broker (aud)', 'audience_mismatch');
      throw new TokenEndpointError('invalid_request', `subject_token is invalid (${err.detail})`, err.code);
    }
  }

  /** The first configured ceiling whose audience pattern matches; undefined = none. */
  private scopeCeiling(audience: SpiffeId): string[] | undefined {
    return this.scopePatterns.find((p) => p.pattern.matches(audience))?.allow;
  }
}

function isChained(token: string, issuer: string): boolean {
  try {
    return decodeUnverified(token).payload.iss === issuer;
  } catch {
    return false;
  }
}

function policyRefusal(decision: ExchangeDecision): TokenEndpointError {
  switch (decision.error) {
    case 'unauthorized_client':
      return new TokenEndpointError('unauthorized_client', 'the broker policy does not allow this actor to exchange this token', 'policy_denied');
    case 'invalid_scope':
      return new TokenEndpointError('invalid_scope', 'the broker policy refuses the requested scope for this audience', 'policy_denied');
    default:
      return new TokenEndpointError('invalid_target', 'the broker policy refuses a token for this audience', decision.evaluationError ? 'internal_error' : 'policy_denied');
  }
}
