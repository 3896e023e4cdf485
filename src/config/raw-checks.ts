/**
 * Rules for the sections the sidecar's and the broker's config documents share (identity, trust)
 * that the schema cannot express. They run on the raw document, so they are reported alongside
 * the schema's issues; each loader keeps its own rules and calls these where they belong.
 */
import { parseDuration } from './duration.js';
import { formatPath, type ConfigIssue } from './errors.js';
import { socketProblem, spiffeIdProblem, TRUST_DOMAIN_RE, trustDomainProblem } from './schema.js';

export function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** identity.dev.spiffeId: a valid SPIFFE ID in the document's trust domain; `owner` is whose trust domain the message names. */
export function devSpiffeIdIssues(raw: Record<string, unknown>, owner: 'sidecar' | 'broker'): ConfigIssue[] {
  const dev = isObj(raw.identity) ? raw.identity.dev : undefined;
  if (!isObj(dev) || typeof dev.spiffeId !== 'string') return [];
  const s = dev.spiffeId;
  const syntax = spiffeIdProblem(s);
  if (syntax) return [{ path: 'identity.dev.spiffeId', message: syntax }];
  const td = typeof raw.trustDomain === 'string' && TRUST_DOMAIN_RE.test(raw.trustDomain) ? raw.trustDomain : undefined;
  // A valid SPIFFE ID's path never ends with '/', so one starting with `spiffe://td/` has a path after it.
  if (td !== undefined && !s.startsWith(`spiffe://${td}/`)) {
    return [{ path: 'identity.dev.spiffeId', message: `${JSON.stringify(s)} is not in this ${owner}'s trust domain (expected spiffe://${td}/<path>)` }];
  }
  return [];
}

/**
 * identity.workloadApi: a socket from the key or SPIFFE_ENDPOINT_SOCKET (the spec's fallback),
 * and a selected SPIFFE ID, if any, in the configured trust domain.
 */
export function workloadApiIssues(raw: Record<string, unknown>, env: Record<string, string | undefined>): ConfigIssue[] {
  const wa = isObj(raw.identity) ? raw.identity.workloadApi : undefined;
  if (wa !== null && !isObj(wa)) return [];
  const issues: ConfigIssue[] = [];
  if (wa === null || wa.socket === undefined) {
    const fromEnv = env.SPIFFE_ENDPOINT_SOCKET;
    if (fromEnv === undefined || fromEnv === '') {
      issues.push({ path: 'identity.workloadApi.socket', message: 'not set, and SPIFFE_ENDPOINT_SOCKET is not set in the environment' });
    } else {
      const problem = socketProblem(fromEnv);
      if (problem) issues.push({ path: 'identity.workloadApi.socket', message: `from SPIFFE_ENDPOINT_SOCKET: ${problem}` });
    }
  }
  const td = typeof raw.trustDomain === 'string' && TRUST_DOMAIN_RE.test(raw.trustDomain) ? raw.trustDomain : undefined;
  if (wa !== null && typeof wa.spiffeId === 'string' && td !== undefined && spiffeIdProblem(wa.spiffeId) === undefined && !wa.spiffeId.startsWith(`spiffe://${td}/`)) {
    issues.push({ path: 'identity.workloadApi.spiffeId', message: `${JSON.stringify(wa.spiffeId)} is not in the configured trust domain (expected spiffe://${td}/<path>)` });
  }
  // Timers cannot wait longer than 2^31-1 ms (about 24.8 days): Node would fire them at once.
  const MAX_TIMER_MS = 2_147_483_647;
  const positive = (value: unknown, key: string): void => {
    if (typeof value !== 'string') return;
    try {
      const ms = parseDuration(value);
      if (ms === 0) issues.push({ path: `identity.workloadApi.${key}`, message: 'must be greater than 0' });
      if (ms > MAX_TIMER_MS) issues.push({ path: `identity.workloadApi.${key}`, message: 'must be at most 24 days' });
    } catch {
      /* reported by the schema */
    }
  };
  if (wa !== null) {
    positive(wa.startupTimeout, 'startupTimeout');
    if (isObj(wa.retry)) {
      positive(wa.retry.initial, 'retry.initial');
      positive(wa.retry.max, 'retry.max');
      const ms = (v: unknown): number | undefined => {
        try {
          return typeof v === 'string' ? parseDuration(v) : undefined;
        } catch {
          return undefined;
        }
      };
      const initial = ms(wa.retry.initial);
      const max = ms(wa.retry.max);
      if (max !== undefined && max < (initial ?? 500)) {
        issues.push({ path: 'identity.workloadApi.retry.max', message: `must be at least retry.initial (${initial ?? 500} ms)` });
      }
    }
  }
  return issues;
}

/** trust.bundles: every key is a trust domain name. */
export function trustBundleKeyIssues(raw: Record<string, unknown>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (isObj(raw.trust) && isObj(raw.trust.bundles)) {
    for (const key of Object.keys(raw.trust.bundles)) {
      const problem = trustDomainProblem(key);
      if (problem) issues.push({ path: formatPath(['trust', 'bundles', key]), message: problem });
    }
  }
  return issues;
}
