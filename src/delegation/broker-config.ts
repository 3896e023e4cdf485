// `sigil broker --config FILE`: the broker's config document. Same conventions as the sidecar's
// (docs/config.md): YAML for .yaml/.yml, JSON for .json, strict objects (unknown keys are
// errors), every problem reported at once with the dotted path of its key, relative paths
// resolved against the config file's folder. Identity and trust reuse the sidecar's schemas.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import type { HostPort } from '../config/index.js';
import { listenersConflict, parseHostPortWithMin } from '../config/address.js';
import { durationErrorMessage, parseDuration } from '../config/duration.js';
import { ConfigError, formatPath, type ConfigIssue } from '../config/errors.js';
import type { IdentityConfig } from '../config/index.js';
import {
  AdminSchema,
  DevIdentitySchema,
  FilesIdentitySchema,
  IdentitySchema,
  ShutdownSchema,
  spiffeIdPatternProblem,
  spiffeIdProblem,
  TRUST_DOMAIN_RE,
  trustDomainProblem,
  TrustSchema,
  WorkloadApiIdentitySchema,
} from '../config/schema.js';
import { DEFAULT_LEEWAY_SECONDS, DEFAULT_MAX_DEPTH, DEFAULT_MAX_TOKEN_TTL_SECONDS } from './types.js';

export interface SubjectIssuerConfig {
  /** Expected `iss` of user tokens. */
  issuer: string;
  /** Expected `aud` of user tokens (the broker, as the IdP knows it). */
  audience: string;
  /** Absolute path of the issuer's JWKS file (watched), or */
  jwks?: string;
  /** the issuer's `jwks_uri` (fetched, cached, refetched on an unknown kid). Exactly one of the two. */
  jwksUri?: string;
}

export interface AudienceScopes {
  /** Exact SPIFFE ID or pattern (`*` one segment, `**` trailing segments). */
  audience: string;
  /** The most a token for a matching audience may carry. */
  allow: string[];
}

export interface BrokerConfig {
  /** Absolute path of the loaded file. */
  configPath: string;
  trustDomain: string;
  /** The broker's own SVID (it is an mTLS server like a sidecar's inbound side). */
  identity: IdentityConfig;
  trust: { bundles: Record<string, string> };
  /** The token endpoint (HTTPS, mTLS required). */
  listen: HostPort;
  /** `iss` of the tokens this broker issues. */
  issuer: string;
  /** Folder of signing keys; the newest signs, all are published. */
  signingKeys: string;
  /** A newly added key signs only after it has been published this long. */
  keyActivationDelayMs: number;
  /** Where the JWKS is also written (atomically) whenever the keys change. */
  jwksOut?: string;
  maxTtlMs: number;
  maxDepth: number;
  leewayMs: number;
  subjectIssuers: SubjectIssuerConfig[];
  /** Per-audience scope ceilings, first match wins; no match = no ceiling beyond the parent's. */
  scopes: AudienceScopes[];
  /** Cedar file with `delegation.exchange` rules (required: without a policy nothing is exchanged). */
  policy: { cedar: string };
  admin: { listen: HostPort };
  shutdown: { drainTimeoutMs: number };
}

export const BROKER_DEFAULTS = {
  listen: { host: '0.0.0.0', port: 8444 },
  adminListen: { host: '127.0.0.1', port: 15010 },
  devTtl: '15m',
  maxTtlMs: DEFAULT_MAX_TOKEN_TTL_SECONDS * 1000,
  maxDepth: DEFAULT_MAX_DEPTH,
  leewayMs: DEFAULT_LEEWAY_SECONDS * 1000,
  keyActivationDelayMs: 0,
  drainTimeout: '5s',
} as const;

/** Upper bounds that keep a typo from issuing day-long tokens or unbounded chains. */
const MAX_TTL_CEILING_MS = 24 * 3_600_000;
const MAX_DEPTH_CEILING = 16;
const MAX_LEEWAY_MS = 60_000;

// ---------------------------------------------------------------------------------------------
// Schema

const duration = z.string().transform((s, ctx) => {
  try {
    return parseDuration(s);
  } catch {
    ctx.addIssue({ code: 'custom', message: durationErrorMessage(s) });
    return z.NEVER;
  }
});

const listen = z.string().transform((s, ctx) => {
  try {
    return parseHostPortWithMin(s, 0);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
});

const filePath = z.string().min(1);
const nonEmpty = z.string().min(1);

function check(fn: (s: string) => string | undefined) {
  return (s: string, ctx: z.RefinementCtx) => {
    const message = fn(s);
    if (message !== undefined) ctx.addIssue({ code: 'custom', message });
  };
}

/** `iss` values: an https/http URL or any absolute URI (e.g. a SPIFFE ID); no whitespace. */
function issuerProblem(s: string): string | undefined {
  if (/\s/.test(s)) return `invalid issuer ${JSON.stringify(s)} (must not contain whitespace)`;
  try {
    new URL(s);
    return undefined;
  } catch {
    return `invalid issuer ${JSON.stringify(s)} (expected an absolute URI, e.g. https://broker.example.org)`;
  }
}

/** RFC 6749 §3.3 scope-token. */
const scopeToken = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, { error: 'must be a scope token (printable ASCII, no spaces, quotes or backslashes)' });

const jwksUri = z.string().superRefine(
  check((s) => {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      return `invalid URL ${JSON.stringify(s)} (expected https://...)`;
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return `unsupported URL scheme ${JSON.stringify(u.protocol)} (expected https:)`;
    return undefined;
  }),
);

export const SubjectIssuerSchema = z.strictObject({
  issuer: z.string().min(1).superRefine(check(issuerProblem)),
  audience: nonEmpty,
  jwks: filePath.optional(),
  jwksUri: jwksUri.optional(),
});

export const AudienceScopesSchema = z.strictObject({
  audience: z.string().superRefine(check(spiffeIdPatternProblem)),
  allow: z.array(scopeToken),
});

export const BrokerPolicySchema = z.strictObject({
  cedar: filePath,
});

const wholeNumber = z.number().int({ error: 'must be a whole number' });

export const BrokerRootSchema = z.strictObject({
  trustDomain: z.string().superRefine(check(trustDomainProblem)),
  identity: IdentitySchema,
  trust: TrustSchema.optional(),
  listen: listen.optional(),
  issuer: z.string().min(1).superRefine(check(issuerProblem)),
  signingKeys: filePath,
  keyActivationDelay: duration.optional(),
  jwksOut: filePath.optional(),
  maxTtl: duration.optional(),
  maxDepth: wholeNumber.min(1, { error: 'must be at least 1' }).max(MAX_DEPTH_CEILING, { error: `must be at most ${MAX_DEPTH_CEILING}` }).optional(),
  leeway: duration.optional(),
  subjectIssuers: z.array(SubjectIssuerSchema).min(1),
  scopes: z.array(AudienceScopesSchema).optional(),
  policy: BrokerPolicySchema,
  admin: AdminSchema.optional(),
  shutdown: ShutdownSchema.optional(),
});

type RawBrokerConfig = z.output<typeof BrokerRootSchema>;

const KNOWN_KEYS: Readonly<Record<string, readonly string[]>> = {
  '': Object.keys(BrokerRootSchema.shape),
  identity: Object.keys(IdentitySchema.shape),
  'identity.dev': Object.keys(DevIdentitySchema.shape),
  'identity.files': Object.keys(FilesIdentitySchema.shape),
  'identity.workloadApi': Object.keys(WorkloadApiIdentitySchema.shape),
  trust: Object.keys(TrustSchema.shape),
  'subjectIssuers[]': Object.keys(SubjectIssuerSchema.shape),
  'scopes[]': Object.keys(AudienceScopesSchema.shape),
  policy: Object.keys(BrokerPolicySchema.shape),
  admin: Object.keys(AdminSchema.shape),
  shutdown: Object.keys(ShutdownSchema.shape),
};

// ---------------------------------------------------------------------------------------------
// Loading

type Format = 'yaml' | 'json';

/** Reads, parses and validates a broker config file. Every failure is a `ConfigError`. */
export async function loadBrokerConfig(file: string): Promise<BrokerConfig> {
  const abs = path.resolve(file);
  const ext = path.extname(abs).toLowerCase();
  const format: Format | undefined = ext === '.yaml' || ext === '.yml' ? 'yaml' : ext === '.json' ? 'json' : undefined;
  if (!format) {
    throw new ConfigError(abs, [{ path: '', message: `unsupported config file extension ${JSON.stringify(path.extname(abs))} (use .yaml, .yml or .json)` }]);
  }
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const message = code === 'ENOENT' ? `file not found: ${abs}` : code === 'EISDIR' ? `is a directory, not a file: ${abs}` : `cannot read ${abs}: ${(e as Error).message}`;
    throw new ConfigError(abs, [{ path: '', message }]);
  }
  return parseBrokerConfig(text, format, abs);
}

/** Pure: parses and validates broker config text. `configPath` anchors relative paths. */
export function parseBrokerConfig(text: string, format: Format, configPath: string): BrokerConfig {
  const abs = path.resolve(configPath);
  const raw = format === 'json' ? parseJson(text, abs) : parseYaml(text, abs);
  if (raw === null || raw === undefined) throw new ConfigError(abs, [{ path: '', message: 'config is empty' }]);
  const result = BrokerRootSchema.safeParse(raw, { reportInput: true });
  const issues: ConfigIssue[] = result.success ? [] : result.error.issues.flatMap(toConfigIssues);
  issues.push(...crossFieldIssues(raw));
  if (result.success) issues.push(...valueIssues(result.data));
  if (issues.length > 0 || !result.success) throw new ConfigError(abs, dedupe(issues));
  return build(result.data, abs);
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (e) {
    throw new ConfigError(file, [{ path: '', message: `JSON syntax error: ${(e as Error).message.replace(/^JSON\.parse: /, '')}` }]);
  }
}

function parseYaml(text: string, file: string): unknown {
  const doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((err) => {
        const first = (err.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?\s*$/, '');
        const pos = err.linePos?.[0];
        return { path: '', message: pos ? `YAML syntax error at line ${pos.line}, column ${pos.col}: ${first}` : `YAML syntax error: ${first}` };
      }),
    );
  }
  try {
    return doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new ConfigError(file, [{ path: '', message: `YAML error: ${(e as Error).message}` }]);
  }
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function toConfigIssues(issue: z.core.$ZodIssue): ConfigIssue[] {
  const p = formatPath(issue.path);
  switch (issue.code) {
    case 'unrecognized_keys': {
      const known = KNOWN_KEYS[p.replace(/\[\d+\]/g, '[]')] ?? [];
      return issue.keys.map((key) => {
        const suggestion = known.find((k) => k.toLowerCase() === key.toLowerCase() || levenshtein(k.toLowerCase(), key.toLowerCase()) <= 2);
        return { path: p, message: `unknown key ${JSON.stringify(key)}` + (suggestion ? ` (did you mean "${suggestion}"?)` : '') };
      });
    }
    case 'invalid_type':
      if (issue.input === undefined) return [{ path: p, message: 'is required' }];
      return [{ path: p, message: `expected ${issue.expected}, got ${typeName(issue.input)}` }];
    case 'too_small':
      if (issue.origin === 'string' && Number(issue.minimum) === 1) return [{ path: p, message: 'must not be empty' }];
      if (issue.origin === 'array') {
        const n = Number(issue.minimum);
        return [{ path: p, message: `must have at least ${n} ${n === 1 ? 'entry' : 'entries'}` }];
      }
      return [{ path: p, message: issue.message }];
    default:
      return [{ path: p, message: issue.message }];
  }
}

function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}

function dedupe(issues: ConfigIssue[]): ConfigIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${i.path}\0${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Rules across keys, on the raw document so they are reported alongside schema issues. */
function crossFieldIssues(raw: unknown): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (!isObj(raw)) return issues;
  const td = typeof raw.trustDomain === 'string' && TRUST_DOMAIN_RE.test(raw.trustDomain) ? raw.trustDomain : undefined;
  if (isObj(raw.identity)) {
    const id = raw.identity;
    const present = ['dev', 'files', 'workloadApi'].filter((k) => id[k] !== undefined);
    if (present.length !== 1) {
      issues.push({ path: 'identity', message: `exactly one of dev, files is required (got ${present.length === 0 ? 'none' : present.join(', ')})` });
    }
    if (id.workloadApi !== undefined) issues.push({ path: 'identity.workloadApi', message: 'not yet supported by the broker (use dev or files)' });
    if (isObj(id.dev) && typeof id.dev.spiffeId === 'string') {
      const s = id.dev.spiffeId;
      const syntax = spiffeIdProblem(s);
      if (syntax) issues.push({ path: 'identity.dev.spiffeId', message: syntax });
      else if (td !== undefined && !s.startsWith(`spiffe://${td}/`)) {
        issues.push({ path: 'identity.dev.spiffeId', message: `${JSON.stringify(s)} is not in this broker's trust domain (expected spiffe://${td}/<path>)` });
      }
    }
  }
  if (isObj(raw.trust) && isObj(raw.trust.bundles)) {
    for (const key of Object.keys(raw.trust.bundles)) {
      const problem = trustDomainProblem(key);
      if (problem) issues.push({ path: formatPath(['trust', 'bundles', key]), message: problem });
    }
  }
  if (Array.isArray(raw.subjectIssuers)) {
    const seen = new Map<string, number>();
    raw.subjectIssuers.forEach((entry, i) => {
      if (!isObj(entry)) return;
      if ((entry.jwks === undefined) === (entry.jwksUri === undefined)) {
        issues.push({ path: `subjectIssuers[${i}]`, message: 'exactly one of jwks (a file) and jwksUri (a URL) is required' });
      }
      if (typeof entry.issuer !== 'string') return;
      const first = seen.get(entry.issuer);
      if (first !== undefined) {
        issues.push({ path: `subjectIssuers[${i}].issuer`, message: `duplicate issuer ${JSON.stringify(entry.issuer)} (same as subjectIssuers[${first}].issuer)` });
      } else seen.set(entry.issuer, i);
      if (entry.issuer === raw.issuer) {
        issues.push({ path: `subjectIssuers[${i}].issuer`, message: 'must differ from the broker\'s own issuer (its tokens are accepted as chained subject tokens already)' });
      }
    });
  }
  return issues;
}

/** Range checks on parsed values (durations are milliseconds by now). */
function valueIssues(data: RawBrokerConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (data.maxTtl !== undefined) {
    if (data.maxTtl < 1000) issues.push({ path: 'maxTtl', message: 'must be at least 1s' });
    else if (data.maxTtl > MAX_TTL_CEILING_MS) issues.push({ path: 'maxTtl', message: 'must be at most 24h (delegation tokens are meant to be short-lived)' });
  }
  if (data.leeway !== undefined && data.leeway > MAX_LEEWAY_MS) issues.push({ path: 'leeway', message: 'must be at most 60s' });
  if (data.identity.dev?.ttl === 0) issues.push({ path: 'identity.dev.ttl', message: 'must be greater than 0' });
  const addrListen = data.listen ?? BROKER_DEFAULTS.listen;
  const addrAdmin = data.admin?.listen ?? BROKER_DEFAULTS.adminListen;
  if (listenersConflict(addrListen, addrAdmin)) issues.push({ path: 'admin.listen', message: `address conflicts with listen (port ${addrAdmin.port})` });
  return issues;
}

function build(data: RawBrokerConfig, configPath: string): BrokerConfig {
  const dir = path.dirname(configPath);
  const abs = (p: string) => path.resolve(dir, p);
  const id = data.identity;
  const identity: IdentityConfig = id.dev
    ? { kind: 'dev', caDir: abs(id.dev.caDir), spiffeId: id.dev.spiffeId, ttlMs: id.dev.ttl ?? parseDuration(BROKER_DEFAULTS.devTtl) }
    : { kind: 'files', cert: abs(id.files!.cert), key: abs(id.files!.key), bundle: abs(id.files!.bundle) };
  const bundles: Record<string, string> = {};
  for (const [td, file] of Object.entries(data.trust?.bundles ?? {})) bundles[td] = abs(file);
  const config: BrokerConfig = {
    configPath,
    trustDomain: data.trustDomain,
    identity,
    trust: { bundles },
    listen: data.listen ?? { ...BROKER_DEFAULTS.listen },
    issuer: data.issuer,
    signingKeys: abs(data.signingKeys),
    keyActivationDelayMs: data.keyActivationDelay ?? BROKER_DEFAULTS.keyActivationDelayMs,
    maxTtlMs: data.maxTtl ?? BROKER_DEFAULTS.maxTtlMs,
    maxDepth: data.maxDepth ?? BROKER_DEFAULTS.maxDepth,
    leewayMs: data.leeway ?? BROKER_DEFAULTS.leewayMs,
    subjectIssuers: data.subjectIssuers.map((s) => {
      const entry: SubjectIssuerConfig = { issuer: s.issuer, audience: s.audience };
      if (s.jwks !== undefined) entry.jwks = abs(s.jwks);
      if (s.jwksUri !== undefined) entry.jwksUri = s.jwksUri;
      return entry;
    }),
    scopes: (data.scopes ?? []).map((s) => ({ audience: s.audience, allow: [...new Set(s.allow)] })),
    policy: { cedar: abs(data.policy.cedar) },
    admin: { listen: data.admin?.listen ?? { ...BROKER_DEFAULTS.adminListen } },
    shutdown: { drainTimeoutMs: data.shutdown?.drainTimeout ?? parseDuration(BROKER_DEFAULTS.drainTimeout) },
  };
  if (data.jwksOut !== undefined) config.jwksOut = abs(data.jwksOut);
  return config;
}
