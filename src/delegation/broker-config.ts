// `sigil broker --config FILE`: the broker's config document. Same conventions as the sidecar's
// (docs/config.md): YAML for .yaml/.yml, JSON for .json, strict objects (unknown keys are
// errors), every problem reported at once with the dotted path of its key, relative paths
// resolved against the config file's folder. Reading, parsing and the wording of issues are the
// config module's (shared with `sigil run`); identity and trust reuse the sidecar's schemas and
// checks. What is here is the broker's own: its schema, cross-field rules and defaults.
// `revocation` is the sidecar's section (RevocationSchema, its checks and build), except that the
// broker has no bus to take NATS servers from.
import path from 'node:path';
import { z } from 'zod';
import {
  AdminSchema,
  BROKER_ENV_OVERRIDES,
  check,
  DevIdentitySchema,
  devSpiffeIdIssues,
  duration,
  FilesIdentitySchema,
  filePath,
  IdentitySchema,
  isObj,
  listen,
  listenersConflict,
  nonEmpty,
  parseConfigText,
  parseDuration,
  readConfigFile,
  ShutdownSchema,
  spiffeIdPatternProblem,
  trustBundleKeyIssues,
  trustDomainProblem,
  TrustSchema,
  validateDocument,
  validateWithOverrides,
  WorkloadApiIdentitySchema,
  WorkloadApiRetrySchema,
  workloadApiIdentity,
  workloadApiIssues,
  type AppliedOverride,
  type ConfigFormat,
  type ConfigIssue,
  type HostPort,
  type IdentityConfig,
  type KnownKeys,
  type RevocationConfig,
} from '../config/index.js';
import { adminExposureIssues, buildRevocation, revocationIssues } from '../config/load.js';
import { NatsTlsSchema, RevocationNatsSchema, RevocationSchema } from '../config/schema.js';
import { MAX_CLOCK_LEEWAY_MS } from '../config/duration.js';
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
  admin: { listen: HostPort; tokenFile?: string };
  /** `delayMs`: the listener keeps accepting this long after SIGTERM (readiness already 503); then drain. */
  shutdown: { delayMs: number; drainTimeoutMs: number };
  /** The kill switch (docs/delegation.md §4): sources of the revocation list; absent = admin API only. */
  revocation?: RevocationConfig;
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

// ---------------------------------------------------------------------------------------------
// Schema

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
  revocation: RevocationSchema.optional(),
});

type RawBrokerConfig = z.output<typeof BrokerRootSchema>;

export const BROKER_KNOWN_KEYS: KnownKeys = {
  '': Object.keys(BrokerRootSchema.shape),
  identity: Object.keys(IdentitySchema.shape),
  'identity.dev': Object.keys(DevIdentitySchema.shape),
  'identity.files': Object.keys(FilesIdentitySchema.shape),
  'identity.workloadApi': Object.keys(WorkloadApiIdentitySchema.shape),
  'identity.workloadApi.retry': Object.keys(WorkloadApiRetrySchema.shape),
  trust: Object.keys(TrustSchema.shape),
  'subjectIssuers[]': Object.keys(SubjectIssuerSchema.shape),
  'scopes[]': Object.keys(AudienceScopesSchema.shape),
  policy: Object.keys(BrokerPolicySchema.shape),
  admin: Object.keys(AdminSchema.shape),
  shutdown: Object.keys(ShutdownSchema.shape),
  revocation: Object.keys(RevocationSchema.shape),
  'revocation.nats': Object.keys(RevocationNatsSchema.shape),
  'revocation.nats.tls': Object.keys(NatsTlsSchema.shape),
};

// ---------------------------------------------------------------------------------------------
// Loading

/**
 * How this loader words problems. It predates the shared loading code and words a few things
 * differently from `sigil run` (EACCES, JSON error positions, non-finite numbers, "did you
 * mean"); kept as it is so its messages do not change.
 */
const READ = { explainPermissionDenied: false } as const;
const PARSE = { locateJsonErrors: false } as const;
const WORDING = { knownKeys: BROKER_KNOWN_KEYS, suggest: 'first-within-2', nameNonFinite: false } as const;

/** Reads, parses and validates a broker config file. Every failure is a `ConfigError`. */
export async function loadBrokerConfig(file: string, env: Record<string, string | undefined> = process.env, onOverrides?: (applied: AppliedOverride[]) => void): Promise<BrokerConfig> {
  const { abs, format, text } = await readConfigFile(file, READ);
  return parseBrokerConfig(text, format, abs, env, onOverrides);
}

/** Pure: parses and validates broker config text, `SIGIL_BROKER_*` overrides applied. `configPath` anchors relative paths. */
export function parseBrokerConfig(
  text: string,
  format: ConfigFormat,
  configPath: string,
  env: Record<string, string | undefined> = process.env,
  onOverrides?: (applied: AppliedOverride[]) => void,
): BrokerConfig {
  const abs = path.resolve(configPath);
  return validateWithOverrides(
    parseConfigText(text, format, abs, PARSE),
    env,
    BROKER_ENV_OVERRIDES,
    (raw, overrideIssues) => {
      const data = validateDocument(BrokerRootSchema, raw, abs, { wording: WORDING, rawIssues: [...overrideIssues, ...crossFieldIssues(raw, env)], dataIssues: valueIssues });
      return build(data, abs, env);
    },
    onOverrides,
  );
}

/** Rules across keys, on the raw document so they are reported alongside schema issues. */
function crossFieldIssues(raw: unknown, env: Record<string, string | undefined>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (!isObj(raw)) return issues;
  if (isObj(raw.identity)) {
    const id = raw.identity;
    const present = ['dev', 'files', 'workloadApi'].filter((k) => id[k] !== undefined);
    if (present.length !== 1) {
      issues.push({ path: 'identity', message: `exactly one of dev, files, workloadApi is required (got ${present.length === 0 ? 'none' : present.join(', ')})` });
    }
    issues.push(...workloadApiIssues(raw, env));
    issues.push(...devSpiffeIdIssues(raw, 'broker'));
  }
  issues.push(...trustBundleKeyIssues(raw));
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
  if (data.leeway !== undefined && data.leeway > MAX_CLOCK_LEEWAY_MS) issues.push({ path: 'leeway', message: 'must be at most 60s' });
  if (data.identity.dev?.ttl === 0) issues.push({ path: 'identity.dev.ttl', message: 'must be greater than 0' });
  const addrListen = data.listen ?? BROKER_DEFAULTS.listen;
  const addrAdmin = data.admin?.listen ?? BROKER_DEFAULTS.adminListen;
  if (listenersConflict(addrListen, addrAdmin)) issues.push({ path: 'admin.listen', message: `address conflicts with listen (port ${addrAdmin.port})` });
  issues.push(...adminExposureIssues(data.admin, BROKER_DEFAULTS.adminListen));
  // No bus here: revocation.nats.servers cannot default to bus.nats.servers.
  issues.push(...revocationIssues({ revocation: data.revocation }, 'is required (the broker has no bus.nats to take servers from)'));
  return issues;
}

function build(data: RawBrokerConfig, configPath: string, env: Record<string, string | undefined>): BrokerConfig {
  const dir = path.dirname(configPath);
  const abs = (p: string) => path.resolve(dir, p);
  const id = data.identity;
  const identity: IdentityConfig = id.dev
    ? { kind: 'dev', caDir: abs(id.dev.caDir), spiffeId: id.dev.spiffeId, ttlMs: id.dev.ttl ?? parseDuration(BROKER_DEFAULTS.devTtl) }
    : id.files
      ? { kind: 'files', cert: abs(id.files.cert), key: abs(id.files.key), bundle: abs(id.files.bundle) }
      : workloadApiIdentity(id.workloadApi ?? undefined, env);
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
    admin: { listen: data.admin?.listen ?? { ...BROKER_DEFAULTS.adminListen }, ...(data.admin?.tokenFile === undefined ? {} : { tokenFile: abs(data.admin.tokenFile) }) },
    shutdown: { delayMs: data.shutdown?.delay ?? 0, drainTimeoutMs: data.shutdown?.drainTimeout ?? parseDuration(BROKER_DEFAULTS.drainTimeout) },
  };
  if (data.jwksOut !== undefined) config.jwksOut = abs(data.jwksOut);
  if (data.revocation) config.revocation = buildRevocation({ revocation: data.revocation }, abs);
  return config;
}
