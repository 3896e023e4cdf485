/**
 * Rules for the sections the sidecar's and the broker's config documents share (identity, trust)
 * that the schema cannot express. They run on the raw document, so they are reported alongside
 * the schema's issues; each loader keeps its own rules and calls these where they belong.
 */
import { formatPath, type ConfigIssue } from './errors.js';
import { spiffeIdProblem, TRUST_DOMAIN_RE, trustDomainProblem } from './schema.js';

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
