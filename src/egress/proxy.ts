// Egress routes: the agent calls a model provider or SaaS API through its sidecar without any
// key. Per call, in this order: the agent's delegation (if it presents one) is verified,
// revocation is checked, the route's limits are taken and its credential read, the call is
// authorized (`egress.http` on `Host::"<host>"`), and the request is sent over TLS to the real
// upstream (verified against the system store or the route's CA) with the credential injected
// and attribution headers added (docs/egress.md lists every step).
// The agent's own copy of the credential header and its delegation token never leave.
// Responses stream through as they arrive (server-sent events, chunked).
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { decodeJwt } from 'jose';
import type { AuthzRequest, CallMeta, Decide, DelegationContext, ReasonCode } from '../authz/index.js';
import type { EgressRouteConfig } from '../config/index.js';
import { bearerToken } from '../delegation/gate.js';
import { DelegationError, type DelegationVerifier } from '../delegation/index.js';
import type { IdentitySnapshot } from '../identity/index.js';
import { stripHopByHop } from '../proxy/headers.js';
import { beginCall, DEFAULT_MAX_BODY_BYTES, httpContext, nonCanonicalTarget } from '../proxy/http-common.js';
import { REQUEST_REF_HEADER } from '../proxy/jsonrpc-http.js';
import { denialBody, errorBody, sendError } from '../proxy/responses.js';
import type { LiveWork } from '../revocation/index.js';
import type { Logger, RequestObservation } from '../telemetry/index.js';
import { pseudonym, renderTemplate } from './attribution.js';
import { createCredentialSource, CredentialUnavailableError, type CredentialSource } from './credentials.js';
import { ConcurrencyLimit, KeyedBuckets, TokenBucket } from './limits.js';

export interface EgressOptions {
  routes: EgressRouteConfig[];
  identity: () => IdentitySnapshot | undefined;
  /** Evaluates with the policy in force (revocation first) and records the decision. */
  decide: Decide;
  /** Records a refusal no policy made (limits, credentials), like a decision: audit and metrics. */
  refuse: (request: AuthzRequest, reason: ReasonCode, meta?: CallMeta) => void;
  /** Verifies delegation tokens the agent presents (when the sidecar has `delegation`). */
  delegation?: { verifier: DelegationVerifier; header: string };
  observe: (observation: RequestObservation) => void;
  /** Registers in-flight calls so a revocation (of a user, task, token) cuts them. */
  live?: (work: LiveWork) => () => void;
  /** Whether revocation (or a stale list) refuses this call: checked before any limit or credential. */
  revoked?: (request: AuthzRequest) => boolean;
  logger: Logger;
}

/** One configured egress route with its running parts. */
export interface EgressRoute {
  config: EgressRouteConfig;
  upstream: URL;
  agent: HttpsAgent;
  credential?: CredentialSource;
  userSecret?: CredentialSource;
  agentRate?: TokenBucket;
  userRates?: KeyedBuckets;
  concurrency?: ConcurrencyLimit;
}

const NEVER_FORWARDED = ['host', REQUEST_REF_HEADER, 'proxy-authorization'];

export class EgressRoutes {
  private readonly routes: EgressRoute[];

  constructor(private readonly options: EgressOptions) {
    this.routes = options.routes.map((config, i) => {
      const upstream = new URL(config.upstream);
      let ca: string | undefined;
      if (config.ca) {
        try {
          ca = readFileSync(config.ca, 'utf8');
        } catch (err) {
          throw new Error(`outbound.egress[${i}].ca: cannot read ${config.ca} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
        }
      }
      const route: EgressRoute = {
        config,
        upstream,
        // The route's own CA, or Node's bundled/system store; never `rejectUnauthorized: false`.
        agent: new HttpsAgent({ keepAlive: true, ...(ca ? { ca } : {}) }),
      };
      const log = options.logger.child({ egress: config.host });
      if (config.credential) route.credential = createCredentialSource(config.credential.source, log);
      if (config.attribution.userSecret) route.userSecret = createCredentialSource(config.attribution.userSecret, log);
      if (config.limits.agent) route.agentRate = new TokenBucket(config.limits.agent);
      if (config.limits.user) route.userRates = new KeyedBuckets(config.limits.user);
      if (config.limits.concurrency) route.concurrency = new ConcurrencyLimit(config.limits.concurrency);
      return route;
    });
  }

  async start(): Promise<void> {
    await Promise.all(this.routes.flatMap((r) => [r.credential?.start(), r.userSecret?.start()]));
  }

  stop(): void {
    for (const r of this.routes) {
      r.credential?.stop();
      r.userSecret?.stop();
      r.agent.destroy();
    }
  }

  /** The route for a request's host (and port, if the route names one). */
  resolve(host: string, port: number | undefined): EgressRoute | undefined {
    return (
      this.routes.find((r) => r.config.host === host && r.config.port !== undefined && r.config.port === port) ??
      this.routes.find((r) => r.config.host === host && r.config.port === undefined)
    );
  }

  /** For /status: never a credential value. */
  status(): unknown {
    return this.routes.map((r) => ({
      host: r.config.host,
      upstream: r.upstream.origin,
      credential: r.credential?.status(),
      inFlight: r.concurrency?.current,
    }));
  }

  async handle(req: IncomingMessage, res: ServerResponse, route: EgressRoute): Promise<void> {
    const started = process.hrtime.bigint();
    const meta = beginCall(req);
    let decisionLabel: RequestObservation['decision'] = 'deny';
    let reason: string = 'internal_error';
    let chainDepth = 0;
    // Everything a call holds is released on 'close', which is attached before the first await:
    // a client that leaves while its token is verified must not leak a slot or a registration.
    let release: (() => void) | undefined;
    let unregister: (() => void) | undefined;
    let closed = false;
    const own = this.options.identity();
    res.once('close', () => {
      closed = true;
      release?.();
      unregister?.();
      this.options.observe({
        reporter: 'egress',
        ...(own ? { source: own.svid.id } : {}),
        destinationHost: route.config.host,
        protocol: 'http',
        responseCode: res.headersSent ? res.statusCode : 0,
        decision: decisionLabel,
        reason,
        seconds: Number(process.hrtime.bigint() - started) / 1e9,
        chainDepth,
      });
    });
    const respond = (status: number, why: ReasonCode, detail?: string, headers: OutgoingHttpHeaders = {}): void => {
      reason = why;
      if (!res.headersSent) for (const [k, v] of Object.entries(headers)) res.setHeader(k, v as string);
      sendError(res, status, errorBody(status, why, detail === undefined ? {} : { detail }));
    };
    if (!own) return respond(503, 'svid_unavailable', 'this sidecar has no identity to act with');
    const nonCanonical = nonCanonicalTarget(req.url);
    if (nonCanonical) return respond(400, 'bad_request', nonCanonical);
    const request: AuthzRequest = {
      action: 'egress.http',
      direction: 'outbound',
      principal: own.svid.id,
      resource: { type: 'Host', name: route.config.host },
      peer: own.svid.id,
      http: httpContext(req),
    };
    // A refusal Sigil makes itself (not the policy): audited and counted once, as a deny.
    const refuse = (status: number, why: ReasonCode, detail: string, headers: OutgoingHttpHeaders = {}): void => {
      this.options.refuse(request, why, meta);
      respond(status, why, detail, headers);
    };

    // The agent's delegation, if it presents one (never forwarded to the provider).
    const d = this.options.delegation;
    if (d && req.headers[d.header] !== undefined) {
      const token = bearerToken(req.headers[d.header]);
      let why: ReasonCode | undefined;
      if (!token) why = 'delegation_invalid';
      else {
        try {
          // The token is addressed to this agent; on egress there is no mTLS peer to compare its
          // current actor with, so the actor is taken from the token itself (signature, audience,
          // expiry, depth and revocation are still checked).
          const act = (decodeJwt(token) as { act?: { sub?: unknown } }).act?.sub;
          const verified = await d.verifier.verify(token, { audience: own.svid.id.toString(), actor: typeof act === 'string' ? act : '' });
          request.delegation = verified.context;
          chainDepth = verified.context.depth;
        } catch (err) {
          why = err instanceof DelegationError ? err.code : 'delegation_invalid';
        }
      }
      if (closed) return;
      if (why) return refuse(401, why, 'the delegation token was refused', { 'www-authenticate': `Bearer realm="sigil", error="invalid_token", error_description="${why}"` });
    }
    const delegation = request.delegation;
    // Revoked (agent, user, task, token) or a stale list: refused as such (403 revoked), before
    // the limits and the credential could answer with something else.
    if (this.options.revoked?.(request)) {
      const refused = this.options.decide(request, meta);
      reason = refused.reason;
      sendError(res, 403, denialBody(refused));
      return;
    }

    // Limits and Sigil's own refusals come before the policy, so a call refused here has exactly
    // one audit line (the refusal); only what is found after the decision adds a second.
    const limited = (why: 'rate_limited' | 'concurrency_limited', retryAfterMs: number, detail: string): void =>
      refuse(429, why, detail, { 'retry-after': String(Math.max(1, Math.ceil(retryAfterMs / 1000))) });
    if (route.concurrency) {
      release = route.concurrency.tryAcquire();
      if (!release) return limited('concurrency_limited', 1000, `at most ${route.concurrency.max} calls in flight to ${route.config.host}`);
    }
    const agentTake = route.agentRate?.take();
    if (agentTake && !agentTake.ok) return limited('rate_limited', agentTake.retryAfterMs, `agent rate limit for ${route.config.host}`);
    let user: string | undefined;
    if (delegation && route.userSecret) {
      try {
        user = pseudonym(route.userSecret.value(), delegation.sub);
      } catch (err) {
        return this.unavailable(route, refuse, err, 'the user pseudonym secret');
      }
    }
    if (delegation && route.userRates) {
      // Keyed by the pseudonym when there is one; the sub itself never leaves this process.
      const take = route.userRates.take(user ?? `sub:${delegation.sub}`);
      if (!take.ok) return limited('rate_limited', take.retryAfterMs, `per-user rate limit for ${route.config.host}`);
    }
    const max = route.config.limits.maxBodyBytes;
    if (max !== undefined && Number(req.headers['content-length'] ?? 0) > max) {
      return refuse(413, 'body_too_large', `request bodies to ${route.config.host} are limited to ${max} bytes`);
    }
    let credentialValue: string | undefined;
    if (route.credential) {
      try {
        credentialValue = route.credential.value();
      } catch (err) {
        return this.unavailable(route, refuse, err, 'the credential');
      }
    }

    const decision = this.options.decide(request, meta);
    if (!decision.allowed) {
      reason = decision.reason;
      sendError(res, 403, denialBody(decision));
      return;
    }
    decisionLabel = decision.wouldDeny ? 'would_deny' : 'allow';
    reason = decision.wouldDeny ? decision.reason : 'allowed';

    const values = { agent: own.svid.id.toString(), ...(user ? { user } : {}), ...(delegation ? { task: delegation.task } : {}) };
    let body: Buffer | undefined;
    const fields = route.config.attribution.bodyFields;
    if (Object.keys(fields).length > 0 && hasBody(req)) {
      // The body is rewritten, so it is read whole (bounded), and only JSON objects qualify:
      // anything else could carry the agent's own attribution past us.
      const badBody = (detail: string): void => {
        decisionLabel = 'deny';
        refuse(400, 'bad_request', detail);
      };
      if (!isJsonMediaType(req.headers['content-type'])) return badBody(`${route.config.host} sets JSON body fields: send application/json`);
      const raw = await readBounded(req, max ?? DEFAULT_MAX_BODY_BYTES);
      if (raw === 'aborted' || closed) return;
      // Reading the body took time (as long as the agent likes): a revocation meanwhile applies.
      if (this.options.revoked?.(request)) {
        const refused = this.options.decide(request, meta);
        decisionLabel = 'deny';
        reason = refused.reason;
        sendError(res, 403, denialBody(refused));
        return;
      }
      if (raw === 'too_large') {
        decisionLabel = 'deny';
        return refuse(413, 'body_too_large', `request bodies to ${route.config.host} are limited to ${max ?? DEFAULT_MAX_BODY_BYTES} bytes`);
      }
      let doc: unknown;
      try {
        doc = JSON.parse(raw.toString('utf8'));
      } catch {
        return badBody('the JSON body does not parse');
      }
      if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return badBody('a JSON object body is required on this route');
      const object = doc as Record<string, unknown>;
      for (const [name, template] of Object.entries(fields)) {
        const value = renderTemplate(template, values);
        // The agent's own value never stands in for a missing one.
        if (value === undefined) delete object[name];
        else object[name] = value;
      }
      body = Buffer.from(JSON.stringify(object));
    }
    const headers = this.upstreamHeaders(req.headers, route, values, credentialValue);
    if (body) {
      headers['content-length'] = String(body.length);
      // What we send is JSON, whatever parameters the agent's media type carried.
      headers['content-type'] = 'application/json';
    } else if (req.headers['transfer-encoding'] !== undefined) {
      // Framing is hop-by-hop and was stripped: a chunked body must be sent chunked again, or
      // (on GET and friends) it would reach the provider unframed and could smuggle a request
      // that our next call on the pooled connection completes with the credential.
      headers['transfer-encoding'] = 'chunked';
      delete headers['content-length'];
    }
    this.send(req, res, route, headers, max, body, {
      onFailure: (why, detail) => {
        decisionLabel = 'deny';
        if (why === 'body_too_large') return refuse(413, why, detail);
        if (why === 'upstream_untrusted') return refuse(502, why, detail);
        // An outage is not a refusal: the call was allowed, the provider was not reachable.
        decisionLabel = decision.wouldDeny ? 'would_deny' : 'allow';
        respond(502, why, detail);
      },
      register: (cut) => {
        unregister = this.options.live?.({
          kind: 'connection',
          agents: [own.svid.id],
          ...(delegation ? { delegation } : {}),
          close: () => cut(),
        });
      },
    });
  }

  private unavailable(route: EgressRoute, refuse: (status: number, why: ReasonCode, detail: string) => void, err: unknown, what: string): void {
    // The source's reason names where the value comes from, never the value.
    const detail = err instanceof CredentialUnavailableError ? err.message : `${what} is unavailable`;
    this.options.logger.warn('egress call refused: credential unavailable', { reason: 'credential_unavailable', host: route.config.host, detail });
    refuse(502, 'credential_unavailable', detail);
  }

  /** The request headers for the upstream: the agent's, minus what must not leave, plus ours. */
  private upstreamHeaders(incoming: IncomingHttpHeaders, route: EgressRoute, values: { agent: string; user?: string; task?: string }, credential: string | undefined): OutgoingHttpHeaders {
    const headers: OutgoingHttpHeaders = { ...incoming };
    stripHopByHop(headers);
    const cred = route.config.credential;
    // Never forwarded: the agent's own copy of the credential header, its delegation token, and
    // headers we set ourselves. Compared with `_` read as `-`: many server stacks (CGI-style
    // HTTP_X_USER) cannot tell `x_user` from `x-user`, so a variant would pass for ours.
    const removed = new Set([...NEVER_FORWARDED, ...Object.keys(route.config.attribution.headers)]);
    if (this.options.delegation) removed.add(this.options.delegation.header);
    if (cred) removed.add(cred.header);
    for (const name of Object.keys(headers)) if (removed.has(name.toLowerCase().replace(/_/g, '-'))) delete headers[name];
    for (const [name, template] of Object.entries(route.config.attribution.headers)) {
      const value = renderTemplate(template, values);
      // Claims (a task id) may hold characters a header cannot: sent percent-encoded.
      if (value !== undefined) headers[name] = /^[\t\x20-\x7e]*$/.test(value) ? value : encodeURIComponent(value);
    }
    // split/join, not replace(): `$&`-style patterns in a credential must stay literal.
    if (cred && credential !== undefined) headers[cred.header] = cred.value.split('{credential}').join(credential);
    headers['host'] = route.upstream.host;
    return headers;
  }

  private send(
    req: IncomingMessage,
    res: ServerResponse,
    route: EgressRoute,
    headers: OutgoingHttpHeaders,
    maxBodyBytes: number | undefined,
    body: Buffer | undefined,
    hooks: { onFailure(why: ReasonCode, detail: string): void; register(cut: () => void): void },
  ): void {
    const base = route.upstream.pathname.replace(/\/$/, '');
    let upstreamReq: ClientRequest | undefined;
    let failed = false;
    const fail = (why: ReasonCode, detail: string): void => {
      if (failed) return;
      failed = true;
      upstreamReq?.destroy();
      hooks.onFailure(why, detail);
    };
    upstreamReq = httpsRequest(
      {
        protocol: 'https:',
        hostname: route.upstream.hostname.replace(/^\[(.*)\]$/, '$1'),
        port: route.upstream.port || 443,
        path: base + (req.url ?? '/'),
        method: req.method,
        headers,
        agent: route.agent,
        // SNI is for names only: none for an IP literal (the certificate's IP SAN is checked).
        ...(isIP(route.upstream.hostname.replace(/^\[(.*)\]$/, '$1')) === 0 ? { servername: route.upstream.hostname } : {}),
      },
      (upstreamRes) => {
        const status = upstreamRes.statusCode ?? 0;
        // Node parses any three digits; writeHead throws on what it cannot send (e.g. 099).
        if (status < 200 || status > 999) {
          upstreamRes.resume();
          return fail('upstream_unavailable', `upstream ${route.upstream.host} answered with status ${status}`);
        }
        const out: IncomingHttpHeaders = { ...upstreamRes.headers };
        stripHopByHop(out);
        res.writeHead(status, out as OutgoingHttpHeaders);
        // A stream (server-sent events, chunked) gets its headers at once, so the agent sees the
        // response start before the first token; a sized body goes out with them in one write.
        if (out['content-length'] === undefined || /event-stream/i.test(String(out['content-type'] ?? ''))) res.flushHeaders();
        upstreamRes.pipe(res);
        upstreamRes.on('error', () => res.destroy());
      },
    );
    hooks.register(() => {
      upstreamReq?.destroy();
      res.destroy();
    });
    res.once('close', () => {
      if (!upstreamReq?.writableFinished || !res.writableFinished) upstreamReq?.destroy();
    });
    upstreamReq.on('error', (err: NodeJS.ErrnoException) => {
      if (res.headersSent) return void res.destroy();
      const tls = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|altname/i.test(`${err.code ?? ''} ${err.message}`);
      fail(tls ? 'upstream_untrusted' : 'upstream_unavailable', tls ? `the upstream ${route.upstream.host} presented a certificate that does not verify (${err.code ?? 'tls'})` : `upstream ${route.upstream.host}: ${err.code ?? err.message}`);
    });
    if (body) {
      upstreamReq.end(body);
      return;
    }
    let sent = 0;
    req.on('data', (chunk: Buffer) => {
      sent += chunk.length;
      if (maxBodyBytes !== undefined && sent > maxBodyBytes) {
        req.unpipe(upstreamReq!);
        fail('body_too_large', `request bodies to ${route.config.host} are limited to ${maxBodyBytes} bytes`);
      }
    });
    req.pipe(upstreamReq);
  }
}

function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
}

/** The whole request body, or why not: over `limit` bytes, or the agent went away. */
function readBounded(req: IncomingMessage, limit: number): Promise<Buffer | 'too_large' | 'aborted'> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        resolve('too_large');
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => resolve(Buffer.concat(chunks)));
    req.once('aborted', () => resolve('aborted'));
    req.once('error', () => resolve('aborted'));
  });
}

/** `application/json` or any `+json` type, parameters ignored: nothing that merely mentions json. */
function isJsonMediaType(value: string | string[] | undefined): boolean {
  if (typeof value !== 'string') return false;
  const type = value.split(';')[0]!.trim().toLowerCase();
  return type === 'application/json' || /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.-]+\+json$/.test(type);
}
