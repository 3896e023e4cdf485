/**
 * `SIGIL_*` environment overrides: containers set per-instance values (a SPIFFE ID, a listen
 * address, the NATS servers) without templating the mounted config file. Each override names
 * one key by its dotted path; the variable is `SIGIL_` + the path in UPPER_SNAKE_CASE
 * (`admin.tokenFile` → `SIGIL_ADMIN_TOKEN_FILE`). Overrides are applied to the parsed document
 * before validation, so a bad value is reported like a bad key, with the variable named.
 *
 * Lists of objects (`outbound.routes`, `outbound.egress`) and maps (`trust.bundles`) have no
 * override: they do not fit in one variable, and a deployment that differs in them is a
 * different config file.
 */
import path from 'node:path';
import { ConfigError, type ConfigIssue } from './errors.js';
import { levenshtein } from './issues.js';

/** How a variable's text becomes a config value; the schema validates the value afterwards. */
export type OverrideKind =
  /** Taken as is (durations, addresses, URLs, SPIFFE IDs). */
  | 'string'
  /** A file or folder: must be absolute (relative to what? the file's folder or the cwd; neither is obvious). */
  | 'path'
  /** `true` or `false`. */
  | 'boolean'
  /** A decimal number. */
  | 'number'
  /** Comma-separated; blanks around items are dropped. */
  | 'list';

export interface EnvOverride {
  /** `SIGIL_ADMIN_LISTEN` */
  readonly env: string;
  /** `admin.listen` */
  readonly key: string;
  readonly kind: OverrideKind;
}

export const ENV_PREFIX = 'SIGIL_';

/** `identity.workloadApi.startupTimeout` → `SIGIL_IDENTITY_WORKLOAD_API_STARTUP_TIMEOUT`. */
export function envNameForKey(key: string, prefix = ENV_PREFIX): string {
  return prefix + key.split('.').map((seg) => seg.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}

/** An override table from `[key, kind]` pairs; the variable names follow from the keys. */
export function overrideTable(entries: readonly OverrideEntry[], prefix = ENV_PREFIX): readonly EnvOverride[] {
  return entries.map(([key, kind]) => ({ env: envNameForKey(key, prefix), key, kind }));
}

type OverrideEntry = readonly [string, OverrideKind];

/** Keys the sidecar and the broker share (their identity, trust domain, admin, shutdown, revocation sections). */
const SHARED_ENTRIES: readonly OverrideEntry[] = [
  ['trustDomain', 'string'],
  ['identity.dev.caDir', 'path'],
  ['identity.dev.spiffeId', 'string'],
  ['identity.dev.ttl', 'string'],
  ['identity.files.cert', 'path'],
  ['identity.files.key', 'path'],
  ['identity.files.bundle', 'path'],
  ['identity.workloadApi.socket', 'string'],
  ['identity.workloadApi.spiffeId', 'string'],
  ['identity.workloadApi.hint', 'string'],
  ['identity.workloadApi.startupTimeout', 'string'],
  ['identity.workloadApi.retry.initial', 'string'],
  ['identity.workloadApi.retry.max', 'string'],
  ['revocation.file', 'path'],
  ['revocation.nats.servers', 'list'],
  ['revocation.nats.tls.ca', 'path'],
  ['revocation.nats.subject', 'string'],
  ['revocation.nats.stream', 'string'],
  ['revocation.nats.createStream', 'boolean'],
  ['revocation.failClosedAfter', 'string'],
  ['revocation.syncInterval', 'string'],
  ['admin.listen', 'string'],
  ['admin.tokenFile', 'path'],
  ['shutdown.delay', 'string'],
  ['shutdown.drainTimeout', 'string'],
];

/** The sidecar's overrides (`sigil run`, `sigil config check`). docs/config.md lists them. */
export const SIDECAR_ENV_OVERRIDES = overrideTable([
  ...SHARED_ENTRIES,
  ['inbound.listen', 'string'],
  ['inbound.upstream', 'string'],
  ['inbound.requireSignedFrames', 'boolean'],
  ['outbound.listen', 'string'],
  ['policy.mode', 'string'],
  ['policy.allow', 'list'],
  ['policy.cedar', 'path'],
  ['bus.local', 'string'],
  ['bus.nats.servers', 'list'],
  ['bus.nats.tls.ca', 'path'],
  ['bus.nats.bufferMessages', 'number'],
  ['bus.envelope.ttl', 'string'],
  ['bus.envelope.maxTtl', 'string'],
  ['bus.envelope.leeway', 'string'],
  ['bus.envelope.maxBytes', 'number'],
  ['bus.envelope.replayWindowEntries', 'number'],
  ['delegation.issuer', 'string'],
  ['delegation.jwks', 'path'],
  ['delegation.header', 'string'],
  ['delegation.require', 'boolean'],
  ['delegation.maxDepth', 'number'],
  ['delegation.leeway', 'string'],
  ['delegation.broker.url', 'string'],
  ['delegation.broker.spiffeId', 'string'],
  ['audit.path', 'path'],
  ['audit.sampleAllows', 'number'],
  ['metrics.enabled', 'boolean'],
  ['metrics.principalLabelLimit', 'number'],
  ['metrics.principalPathSegments', 'number'],
]);

export const BROKER_ENV_PREFIX = 'SIGIL_BROKER_';

/** The broker's overrides (`sigil broker`): `SIGIL_BROKER_` + the key, so one environment can hold both. */
export const BROKER_ENV_OVERRIDES = overrideTable(
  [
    ...SHARED_ENTRIES,
    ['listen', 'string'],
    ['issuer', 'string'],
    ['signingKeys', 'path'],
    ['keyActivationDelay', 'string'],
    ['jwksOut', 'path'],
    ['maxTtl', 'string'],
    ['maxDepth', 'number'],
    ['leeway', 'string'],
    ['policy.cedar', 'path'],
  ],
  BROKER_ENV_PREFIX,
);

/**
 * `SIGIL_*` variables that are not config overrides but are read elsewhere, so a near-miss
 * warning never fires for them.
 */
export const OTHER_SIGIL_VARIABLES: readonly string[] = ['SIGIL_CONFIG', 'SIGIL_LOG_LEVEL', 'SIGIL_UNSAFE_TEST_WEAKEN'];

/** One override that took effect. */
export interface AppliedOverride {
  env: string;
  key: string;
}

export interface OverrideResult {
  /** A copy of the document with the overrides set; the input is not modified. */
  document: unknown;
  applied: AppliedOverride[];
  /** Values that could not be read as their kind (reported with the schema's issues). */
  issues: ConfigIssue[];
}

/**
 * Sets every override whose variable is present and non-empty (an empty value counts as unset:
 * Compose and Kubernetes manifests often template variables to ""). Missing sections are created;
 * `identity.workloadApi:` given as null ("all defaults") becomes an object.
 */
export function applyEnvOverrides(raw: unknown, env: Record<string, string | undefined>, table: readonly EnvOverride[] = SIDECAR_ENV_OVERRIDES): OverrideResult {
  const applied: AppliedOverride[] = [];
  const issues: ConfigIssue[] = [];
  if (!isPlainObject(raw)) return { document: raw, applied, issues };
  const document = structuredClone(raw);
  for (const o of table) {
    const text = env[o.env];
    if (text === undefined || text.trim() === '') continue;
    const value = readValue(o, text);
    if (typeof value === 'object' && value !== null && 'problem' in value) {
      issues.push({ path: o.key, message: `${o.env}: ${value.problem}` });
      continue;
    }
    const conflict = setKey(document, o.key.split('.'), value);
    if (conflict) {
      issues.push({ path: conflict, message: `${o.env}: cannot set ${o.key}: ${conflict} in the file is not a section` });
      continue;
    }
    applied.push({ env: o.env, key: o.key });
  }
  return { document, applied, issues };
}

/**
 * Applies the overrides to a parsed document and runs `validate` on the result (with the
 * overrides' own issues, to be reported alongside the schema's); a ConfigError it throws has its
 * issues about overridden keys attributed to their variables.
 */
export function validateWithOverrides<T>(
  raw: unknown,
  env: Record<string, string | undefined>,
  table: readonly EnvOverride[],
  validate: (document: unknown, overrideIssues: ConfigIssue[]) => T,
  onOverrides?: (applied: AppliedOverride[]) => void,
): T {
  const { document, applied, issues } = applyEnvOverrides(raw, env, table);
  onOverrides?.(applied);
  try {
    return validate(document, issues);
  } catch (err) {
    if (err instanceof ConfigError && applied.length > 0) throw new ConfigError(err.file, attributeIssues(err.issues, applied));
    throw err;
  }
}

/**
 * Appends "(from SIGIL_X)" to issues about overridden keys, so the reader looks in the
 * environment rather than the file.
 */
export function attributeIssues(issues: readonly ConfigIssue[], applied: readonly AppliedOverride[]): ConfigIssue[] {
  return issues.map((issue) => {
    const o = applied.find((a) => issue.path === a.key || issue.path.startsWith(`${a.key}.`) || issue.path.startsWith(`${a.key}[`));
    if (o) return issue.message.includes(o.env) ? issue : { path: issue.path, message: `${issue.message} (from ${o.env})` };
    // A rule about a section an override wrote into ("exactly one of dev, files, workloadApi").
    const inside = issue.path === '' ? [] : applied.filter((a) => a.key.startsWith(`${issue.path}.`));
    if (inside.length === 0) return issue;
    return { path: issue.path, message: `${issue.message} (${inside.map((a) => `${a.env} sets ${a.key}`).join(', ')})` };
  });
}

/**
 * `SIGIL_*` variables that match no override but are within two edits of one: almost surely
 * a typo that would otherwise be silently ignored. Unrelated `SIGIL_*` names are left alone:
 * Kubernetes injects `<SERVICE>_PORT`-style variables for a Service named "sigil".
 */
export function misspelledOverrides(env: Record<string, string | undefined>, table: readonly EnvOverride[] = SIDECAR_ENV_OVERRIDES): { env: string; suggestion: string }[] {
  const known = new Set([...SIDECAR_ENV_OVERRIDES, ...BROKER_ENV_OVERRIDES].map((o) => o.env).concat(OTHER_SIGIL_VARIABLES));
  const out: { env: string; suggestion: string }[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith(ENV_PREFIX) || known.has(name)) continue;
    const near = table.find((o) => levenshtein(name, o.env) <= 2);
    if (near) out.push({ env: name, suggestion: near.env });
  }
  return out;
}

/** `SIGIL_X → key`, with ` = value` where the value cannot be a secret (booleans, numbers, policy.mode). */
export function describeOverride(a: AppliedOverride, env: Record<string, string | undefined>, table: readonly EnvOverride[]): string {
  const kind = table.find((o) => o.env === a.env)?.kind;
  const shown = kind === 'boolean' || kind === 'number' || a.key === 'policy.mode';
  return `${a.env} → ${a.key}${shown ? ` = ${String(env[a.env]).trim()}` : ''}`;
}

/**
 * Variables of the other command's table set in this one's environment (a broker given
 * `SIGIL_ADMIN_LISTEN`): ignored here, which is easy to miss. The suggestion is this command's
 * variable for the same key, if it has one.
 */
export function foreignOverrides(env: Record<string, string | undefined>, table: readonly EnvOverride[], other: readonly EnvOverride[]): { env: string; suggestion?: string }[] {
  const own = new Set(table.map((o) => o.env));
  return other
    .filter((o) => !own.has(o.env) && env[o.env] !== undefined && env[o.env]!.trim() !== '')
    .map((o) => {
      const same = table.find((t) => t.key === o.key);
      return same ? { env: o.env, suggestion: same.env } : { env: o.env };
    });
}

type ReadResult = string | boolean | number | string[] | { problem: string };

function readValue(o: EnvOverride, text: string): ReadResult {
  const t = text.trim();
  switch (o.kind) {
    case 'string':
      return t;
    case 'path':
      return path.isAbsolute(t) ? t : { problem: `must be an absolute path (got ${JSON.stringify(t)})` };
    case 'boolean':
      if (t === 'true') return true;
      if (t === 'false') return false;
      return { problem: `must be true or false (got ${JSON.stringify(t)})` };
    case 'number':
      return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : { problem: `must be a number (got ${JSON.stringify(t)})` };
    case 'list': {
      const items = t.split(',').map((s) => s.trim()).filter((s) => s !== '');
      return items.length > 0 ? items : { problem: 'must list at least one comma-separated value' };
    }
  }
}

/** Sets doc[a][b][c] = value, creating sections; returns the dotted key of a non-section in the way. */
function setKey(doc: Record<string, unknown>, keys: string[], value: unknown): string | undefined {
  let node = doc;
  for (let i = 0; i < keys.length - 1; i++) {
    const k = keys[i]!;
    const next = node[k];
    if (next === undefined || next === null) node[k] = {};
    else if (!isPlainObject(next)) return keys.slice(0, i + 1).join('.');
    node = node[k] as Record<string, unknown>;
  }
  node[keys[keys.length - 1]!] = value;
  return undefined;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
