// The admin listener (loopback by default): liveness, readiness and a status document.
// Metrics and the revocation/policy endpoints are added by their components.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ReloadOutcome } from '../authz/index.js';
import type { HostPort } from '../config/index.js';
import { watchFiles, type FileWatch } from '../identity/index.js';
import { listen } from '../proxy/index.js';
import { entryToJson, RevocationRefusedError, type Revocations } from '../revocation/index.js';

export interface AdminHooks {
  /** True once an SVID, the bundles and the policy are loaded and every listener is bound. */
  ready(): boolean;
  status(): unknown;
  reloadPolicy(): Promise<ReloadOutcome>;
  metrics(openMetrics: boolean): Promise<{ contentType: string; body: string }>;
  /** The kill switch: POST/GET /v1/revocations, DELETE /v1/revocations/<id>. */
  revocations?: Pick<Revocations, 'revoke' | 'lift' | 'list'>;
}

/** Largest admin request body (a revocation is a few hundred bytes). */
const MAX_BODY_BYTES = 64 * 1024;

export interface AdminOptions {
  /** A file with the bearer token the changing endpoints require (admin.tokenFile). */
  tokenFile?: string;
  /** A new token file was refused (the last good token stays in force). */
  onTokenError?: (err: Error) => void;
}

export class AdminTokenError extends Error {
  readonly code = 'admin_token_unavailable';
}

export class AdminServer {
  private server: Server | undefined;
  /** SHA-256 of the token: compared in constant time, never kept or logged in clear. */
  private tokenDigest: Buffer | undefined;
  private watch: FileWatch | undefined;

  constructor(
    private readonly listenAt: HostPort,
    private readonly hooks: AdminHooks,
    private readonly options: AdminOptions = {},
  ) {}

  async start(): Promise<AddressInfo> {
    const tokenFile = this.options.tokenFile;
    if (tokenFile !== undefined) {
      this.tokenDigest = readToken(tokenFile);
      // Rotation: a new token applies at once; an unreadable or empty file keeps the last one.
      this.watch = watchFiles([tokenFile], () => {
        try {
          this.tokenDigest = readToken(tokenFile);
        } catch (err) {
          this.options.onTokenError?.(err as Error); // the last good token stays in force
        }
      });
    }
    const server = createServer((req, res) => this.handle(req, res));
    this.server = server;
    return listen(server, this.listenAt);
  }

  async stop(): Promise<void> {
    this.watch?.close();
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    // The token guards every change, and the revocation list itself (it names users and token
    // ids, and entry ids an agent could race a lift with); health, status and metrics stay open.
    const changing = req.method !== 'GET' && req.method !== 'HEAD';
    const guarded = changing || path === '/v1/revocations' || path.startsWith('/v1/revocations/');
    if (guarded && !this.authorized(req)) {
      req.resume();
      res.setHeader('www-authenticate', 'Bearer realm="sigil-admin"');
      return json(res, 401, { error: 'unauthorized', detail: 'this endpoint needs the admin token (Authorization: Bearer, admin.tokenFile)' });
    }
    if (path === '/v1/policy/reload') {
      if (req.method !== 'POST') return json(res, 405, { error: 'method_not_allowed' });
      req.resume();
      void this.hooks.reloadPolicy().then((outcome) => answerReload(res, outcome));
      return;
    }
    if (path === '/v1/revocations' || path.startsWith('/v1/revocations/')) return this.revocation(req, res, path);
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: 'method_not_allowed' });
    switch (path) {
      case '/healthz':
        return json(res, 200, { status: 'ok' });
      case '/readyz': {
        const ready = this.hooks.ready();
        return json(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not_ready' });
      }
      case '/status':
        return json(res, 200, this.hooks.status());
      case '/metrics':
        // OpenMetrics only when the scraper asks for it; Prometheus text otherwise.
        void this.hooks.metrics(/application\/openmetrics-text/.test(req.headers.accept ?? '')).then(
          ({ contentType, body }) => {
            res.writeHead(200, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
            res.end(body);
          },
          () => json(res, 500, { error: 'metrics_unavailable' }),
        );
        return;
      default:
        return json(res, 404, { error: 'not_found' });
    }
  }

  /** Changing requests need the token when one is configured; reads never do. */
  private authorized(req: IncomingMessage): boolean {
    const expected = this.tokenDigest;
    if (!expected) return true;
    const m = /^Bearer ([^\s]+)$/i.exec(req.headers.authorization ?? '');
    if (!m) return false;
    return timingSafeEqual(createHash('sha256').update(m[1]!).digest(), expected);
  }

  private revocation(req: IncomingMessage, res: ServerResponse, path: string): void {
    const revocations = this.hooks.revocations;
    if (!revocations) return json(res, 404, { error: 'not_found' });
    const id = path.slice('/v1/revocations/'.length);
    const refused = (err: unknown): void => {
      if (!(err instanceof RevocationRefusedError)) return json(res, 500, { error: 'internal_error' });
      const status = err.code === 'revocation_invalid' ? 400 : err.code === 'not_found' ? 404 : 403;
      json(res, status, { error: err.code, detail: err.message });
    };
    if (path === '/v1/revocations' && req.method === 'GET') {
      const list = revocations.list();
      return json(res, 200, { epoch: list.epoch, ageSeconds: list.ageSeconds ?? null, stale: list.stale, revocations: list.entries.map(entryToJson) });
    }
    if (path === '/v1/revocations' && req.method === 'POST') {
      return void readJson(req).then(
        (body) => {
          if (body === undefined) return json(res, 400, { error: 'revocation_invalid', detail: `body must be a JSON object of at most ${MAX_BODY_BYTES} bytes` });
          // `by` names the operator for the audit trail; everything else describes the entry.
          const { by, ...fields } = body;
          if (by !== undefined && !validBy(by)) return json(res, 400, { error: 'revocation_invalid', detail: 'by: must be text of 1-128 characters' });
          revocations.revoke(fields, typeof by === 'string' ? by : 'admin').then(
            (outcome) => json(res, 201, { revocation: entryToJson(outcome.entry), propagated: outcome.propagated }),
            refused,
          );
        },
        () => json(res, 400, { error: 'revocation_invalid', detail: 'body must be JSON' }),
      );
    }
    if (path.startsWith('/v1/revocations/') && req.method === 'DELETE') {
      req.resume();
      const by = new URL(req.url ?? '/', 'http://admin').searchParams.get('by') ?? 'admin';
      if (!validBy(by)) return json(res, 400, { error: 'revocation_invalid', detail: 'by: must be text of 1-128 characters' });
      return void revocations.lift(id, by).then((outcome) => json(res, 200, { lifted: entryToJson(outcome.entry), propagated: outcome.propagated }), refused);
    }
    return json(res, 405, { error: 'method_not_allowed' });
  }
}

/** The digest of the token in `path`; AdminTokenError if unreadable or not one token of ≥ 16 characters (also used by `sigil config check`). */
export function readToken(path: string): Buffer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new AdminTokenError(`admin.tokenFile: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (text.length < 16 || /\s/.test(text)) throw new AdminTokenError(`admin.tokenFile: ${path} must hold one token of at least 16 characters, no whitespace`);
  return createHash('sha256').update(text).digest();
}

/** `by` names an operator: short text without control characters. */
function validBy(by: unknown): by is string {
  // eslint-disable-next-line no-control-regex
  return typeof by === 'string' && by.length > 0 && by.length <= 128 && !/[\u0000-\u001f\u007f]/.test(by);
}

/** A JSON object body; undefined when too large or not an object; rejects when not JSON. */
function readJson(req: IncomingMessage): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) tooLarge = true;
      else chunks.push(chunk);
    });
    req.on('error', reject);
    req.on('end', () => {
      if (tooLarge) return resolve(undefined);
      try {
        const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        resolve(typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined);
      } catch (err) {
        reject(err as Error);
      }
    });
  });
}

function answerReload(res: ServerResponse, outcome: ReloadOutcome): void {
  switch (outcome.result) {
    case 'success':
      return json(res, 200, { status: outcome.changed ? 'reloaded' : 'unchanged', version: outcome.version });
    case 'not_reloadable':
      return json(res, 409, { error: 'policy_not_reloadable', detail: 'only a policy.cedar file can be reloaded; policy.allow comes from the config file' });
    case 'failure': {
      const issues = (outcome.error as { issues?: unknown }).issues;
      // 422: the new policy was refused; the last good one stays in force.
      return json(res, 422, { error: 'policy_invalid', detail: outcome.error.message.split('\n')[0], issues: issues ?? [] });
    }
  }
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) });
  res.end(payload);
}
