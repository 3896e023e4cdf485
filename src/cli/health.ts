// `sigil health [--config FILE | --broker --config FILE | --url URL] [--timeout 2s]`: exit 0
// when the admin listener's /healthz answers 200. The container image's HEALTHCHECK: the runtime image has Node and
// nothing else (no curl), and the admin address comes from the same config and SIGIL_*
// overrides `sigil run` used, so the check follows the sidecar wherever it listens.
import { request } from 'node:http';
import { loadConfig, parseDuration, type HostPort } from '../config/index.js';
import { loadBrokerConfig } from '../delegation/broker-config.js';
import { formatHostPort } from '../config/effective.js';
import { CliUsageError, configPathFrom, parseFlags } from './args.js';

export async function runHealth(args: string[]): Promise<number> {
  const flags = parseFlags(args, { config: { type: 'string' }, broker: { type: 'boolean' }, url: { type: 'string' }, timeout: { type: 'string' } });
  if (flags.url !== undefined && (flags.config !== undefined || flags.broker !== undefined)) throw new CliUsageError('give --config (with --broker for a broker) or --url, not both');
  // A broker's config is never $SIGIL_CONFIG (the image's sidecar path): --broker needs --config.
  if (flags.broker === true && typeof flags.config !== 'string') throw new CliUsageError('--broker needs --config FILE (the broker config)');
  const timeoutMs = parseDuration(typeof flags.timeout === 'string' ? flags.timeout : '2s');
  const admin = flags.broker === true ? (await loadBrokerConfig(flags.config as string)).admin.listen : undefined;
  const url = typeof flags.url === 'string' ? flags.url : healthzUrl(admin ?? (await loadConfig(configPathFrom(flags.config))).admin.listen);
  const result = await get(url, timeoutMs);
  if (result.status === 200) {
    process.stdout.write(`healthy: ${url}\n`);
    return 0;
  }
  process.stderr.write(`unhealthy: ${url}: ${result.status === undefined ? result.error : `HTTP ${result.status}`}\n`);
  return 1;
}

/**
 * The admin listener's /healthz. A wildcard address is reached at 127.0.0.1, also for `::`
 * (Node binds it dual-stack, and ::1 fails where a container's loopback has no IPv6).
 */
function healthzUrl({ host, port }: HostPort): string {
  const reachable = host === '0.0.0.0' || host === '::' || host === '' ? '127.0.0.1' : host;
  return `http://${formatHostPort({ host: reachable, port })}/healthz`;
}

function get(url: string, timeoutMs: number): Promise<{ status?: number; error?: string }> {
  return new Promise((resolve) => {
    const req = request(url, { method: 'GET', timeout: timeoutMs }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => resolve({ error: err.message }));
    req.end();
  });
}
