// `sigil health [--config FILE | --url URL] [--timeout 2s]`: exit 0 when the admin listener's
// /healthz answers 200. The container image's HEALTHCHECK: the runtime image has Node and
// nothing else (no curl), and the admin address comes from the same config and SIGIL_*
// overrides `sigil run` used, so the check follows the sidecar wherever it listens.
import { request } from 'node:http';
import { loadConfig, parseDuration } from '../config/index.js';
import { formatHostPort } from '../config/effective.js';
import { CliUsageError, configPathFrom, parseFlags } from './args.js';

export async function runHealth(args: string[]): Promise<number> {
  const flags = parseFlags(args, { config: { type: 'string' }, url: { type: 'string' }, timeout: { type: 'string' } });
  if (flags.url !== undefined && flags.config !== undefined) throw new CliUsageError('give --config or --url, not both');
  const timeoutMs = parseDuration(typeof flags.timeout === 'string' ? flags.timeout : '2s');
  const url = typeof flags.url === 'string' ? flags.url : await healthzUrl(configPathFrom(flags.config));
  const result = await get(url, timeoutMs);
  if (result.status === 200) {
    process.stdout.write(`healthy: ${url}\n`);
    return 0;
  }
  process.stderr.write(`unhealthy: ${url}: ${result.status === undefined ? result.error : `HTTP ${result.status}`}\n`);
  return 1;
}

/** The admin listener's /healthz; a wildcard listen address is reached over loopback. */
async function healthzUrl(configFile: string): Promise<string> {
  const config = await loadConfig(configFile);
  const { host, port } = config.admin.listen;
  const reachable = host === '0.0.0.0' || host === '' ? '127.0.0.1' : host === '::' ? '::1' : host;
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
