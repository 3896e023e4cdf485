// The admin listener (loopback by default): liveness, readiness and a status document.
// Metrics and the revocation/policy endpoints are added by their components.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ReloadOutcome } from '../authz/index.js';
import type { HostPort } from '../config/index.js';
import { listen } from '../proxy/index.js';

export interface AdminHooks {
  /** True once an SVID, the bundles and the policy are loaded and every listener is bound. */
  ready(): boolean;
  status(): unknown;
  reloadPolicy(): Promise<ReloadOutcome>;
  metrics(openMetrics: boolean): Promise<{ contentType: string; body: string }>;
}

export class AdminServer {
  private server: Server | undefined;

  constructor(private readonly listenAt: HostPort, private readonly hooks: AdminHooks) {}

  async start(): Promise<AddressInfo> {
    const server = createServer((req, res) => this.handle(req, res));
    this.server = server;
    return listen(server, this.listenAt);
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/v1/policy/reload') {
      if (req.method !== 'POST') return json(res, 405, { error: 'method_not_allowed' });
      req.resume();
      void this.hooks.reloadPolicy().then((outcome) => answerReload(res, outcome));
      return;
    }
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
