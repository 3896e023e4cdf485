// The sidecar's side of RFC 8693: when the local agent calls a route configured with
// `exchange`, the sidecar trades the agent's bearer token (a user token or a delegation token
// addressed to this agent) at the broker for a token addressed to the route's peer, with the
// route's scope. It dials the broker with its own SVID and accepts only the configured broker
// SPIFFE ID. Results are cached until shortly before they expire; the agent never sees the
// broker or its credentials.
import { createHash } from 'node:crypto';
import { request, type Agent } from 'node:http';
import { TOKEN_TYPE_JWT } from './types.js';

/** Tokens are not reused this close to their expiry. */
const EXPIRY_MARGIN_MS = 10_000;
const CACHE_LIMIT = 4096;
const TIMEOUT_MS = 10_000;
const MAX_RESPONSE_BYTES = 64 * 1024;

export class ExchangeError extends Error {
  readonly code = 'exchange_failed';
  constructor(
    /** The broker's OAuth error code (`invalid_target`, `invalid_scope`, ...) or a transport failure class. */
    readonly detail: string,
    message: string,
  ) {
    super(message);
  }
}

export interface ExchangeClientOptions {
  /** The broker's token endpoint. */
  url: URL;
  /** An agent that dials the broker over mTLS and verifies its SPIFFE ID (a PeerAgent). */
  agent: Agent;
  /** The revocation epoch: a cached token is never reused across a revocation. */
  epoch?: () => number;
  /** This workload's JWT-SVID for the broker, sent as actor_token (RFC 8693 §2.1). */
  actorToken?: () => Promise<string>;
}

export class ExchangeClient {
  private readonly cache = new Map<string, { token: string; expiresAt: number }>();

  constructor(private readonly options: ExchangeClientOptions) {}

  /** Forgets exchanged tokens (the revocation epoch moved: the broker must be asked again). */
  clearCache(): void {
    this.cache.clear();
  }

  /** A token for `audience` (and `scope`) in exchange for `subjectToken`; throws ExchangeError. */
  async exchange(subjectToken: string, audience: string, scope: string[] | undefined): Promise<string> {
    const key = `${this.options.epoch?.() ?? 0}\n${createHash('sha256').update(subjectToken).digest('base64url')}\n${audience}\n${scope?.join(' ') ?? ''}`;
    const hit = this.cache.get(key);
    if (hit && Date.now() < hit.expiresAt - EXPIRY_MARGIN_MS) return hit.token;
    const form = new URLSearchParams({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      subject_token: subjectToken,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      audience,
    });
    if (scope !== undefined && scope.length > 0) form.set('scope', scope.join(' '));
    if (this.options.actorToken) {
      let actorToken: string;
      try {
        actorToken = await this.options.actorToken();
      } catch (err) {
        throw new ExchangeError('actor_token_unavailable', `no JWT-SVID for the actor token: ${(err as Error).message}`);
      }
      form.set('actor_token', actorToken);
      form.set('actor_token_type', TOKEN_TYPE_JWT);
    }
    const { status, body } = await this.post(form.toString());
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(body) as Record<string, unknown>;
    } catch {
      throw new ExchangeError('bad_response', `the broker answered ${status} without JSON`);
    }
    if (status !== 200) {
      const error = typeof json.error === 'string' && /^[a-z_]{1,40}$/.test(json.error) ? json.error : 'broker_error';
      throw new ExchangeError(error, `the broker refused the exchange (${status} ${error})`);
    }
    const token = json.access_token;
    const expiresIn = json.expires_in;
    if (typeof token !== 'string' || token.length === 0 || typeof expiresIn !== 'number' || !(expiresIn > 0)) {
      throw new ExchangeError('bad_response', 'the broker answer lacks access_token or expires_in');
    }
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(key, { token, expiresAt: Date.now() + expiresIn * 1000 });
    return token;
  }

  private post(body: string): Promise<{ status: number; body: string }> {
    const url = this.options.url;
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: url.hostname,
          port: url.port || 443,
          path: url.pathname + url.search,
          method: 'POST',
          agent: this.options.agent,
          headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body), accept: 'application/json' },
          timeout: TIMEOUT_MS,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size > MAX_RESPONSE_BYTES) res.destroy(new Error('broker answer too large'));
            else chunks.push(c);
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', (err) => reject(new ExchangeError('bad_response', err.message)));
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (err: NodeJS.ErrnoException & { code?: string }) => {
        const detail = typeof err.code === 'string' && /^[a-z_]+$/.test(err.code) ? err.code : 'broker_unreachable';
        reject(new ExchangeError(detail, `cannot reach the broker: ${err.message}`));
      });
      req.end(body);
    });
  }
}
