import { readFile } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import type { z } from 'zod';
import type { HostPort } from './address.js';
import { listenersConflict, splitHostPort } from './address.js';
import { parseDuration } from './duration.js';
import { ConfigError, formatPath, type ConfigIssue } from './errors.js';
import { KNOWN_KEYS, RootSchema, socketProblem, spiffeIdProblem, TRUST_DOMAIN_RE, trustDomainProblem, type RawConfig } from './schema.js';

export interface RouteConfig {
  /** Lowercased; routes match the request host case-insensitively. */
  host: string;
  /** Present only if the route host named one (e.g. `agent-b:8080`); otherwise the port is ignored. */
  port?: number;
  address: HostPort;
  /** Exact SPIFFE ID or pattern; only checked to start with `spiffe://` here. */
  spiffeId: string;
  /** WebSocket frames on this route are signed envelopes both ways. */
  signFrames?: boolean;
  /** Exchange the agent's bearer token at the broker for the route's peer (scope: space-separated). */
  exchange?: { scope?: string[] };
}

export interface DelegationConfig {
  issuer: string;
  jwks: string;
  /** Lower-case header name. */
  header: string;
  require: boolean;
  maxDepth: number;
  leewayMs: number;
  broker?: { url: string; spiffeId: string };
}

export type IdentityConfig =
  | { kind: 'dev'; caDir: string; spiffeId: string; ttlMs: number }
  | { kind: 'files'; cert: string; key: string; bundle: string }
  | { kind: 'workloadApi'; socket: string };

export interface SigilConfig {
  /** Absolute path of the loaded file. */
  configPath: string;
  trustDomain: string;
  identity: IdentityConfig;
  trust: { bundles: Record<string, string> };
  inbound?: { listen: HostPort; upstream: string; requireSignedFrames: boolean };
  outbound?: { listen: HostPort; routes: RouteConfig[] };
  policy: { mode: 'enforce' | 'dry-run'; allow?: string[]; cedar?: string };
  bus?: BusConfig;
  delegation?: DelegationConfig;
  admin: { listen: HostPort };
  /** `sampleAllows`: fraction of allows written, 0..1 (default 1); denies are always written. */
  audit?: { path: string; sampleAllows: number };
  /** Principal-label cardinality guard (docs/metrics.md). */
  metrics: { enabled: boolean; principalLabelLimit: number; principalPathSegments?: number };
  shutdown: { drainTimeoutMs: number };
}

export interface BusConfig {
  local: HostPort;
  nats?: { servers: string[]; ca?: string; bufferMessages: number };
  envelope: { ttlMs: number; maxTtlMs: number; leewayMs: number; maxBytes: number; replayWindowEntries: number };
}

export interface ParseOptions {
  /** Environment used for defaults (`SPIFFE_ENDPOINT_SOCKET`); defaults to `process.env`. */
  env?: Record<string, string | undefined>;
}

export const DEFAULTS = {
  devTtl: '15m',
  inboundListen: { host: '0.0.0.0', port: 8443 },
  outboundListen: { host: '127.0.0.1', port: 15001 },
  adminListen: { host: '127.0.0.1', port: 15000 },
  drainTimeout: '10s',
  auditSampleAllows: 1,
  envelopeTtl: '60s',
  envelopeMaxTtl: '5m',
  envelopeLeeway: '5s',
  envelopeMaxBytes: 1024 * 1024,
  replayWindowEntries: 200_000,
  natsBufferMessages: 1000,
} as const;

type Format = 'yaml' | 'json';

function formatForFile(file: string): Format | undefined {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.yaml' || ext === '.yml') return 'yaml';
  if (ext === '.json') return 'json';
  return undefined;
}

/** Reads, parses and validates a config file. Every failure is a `ConfigError`. */
export async function loadConfig(file: string): Promise<SigilConfig> {
  const abs = path.resolve(file);
  const format = formatForFile(abs);
  if (!format) {
    const ext = path.extname(abs);
    throw new ConfigError(abs, [
      {
        path: '',
        message: `unsupported config file extension ${JSON.stringify(ext)} (use .yaml, .yml or .json)`,
      },
    ]);
  }
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const message =
      code === 'ENOENT'
        ? `file not found: ${abs}`
        : code === 'EISDIR'
          ? `is a directory, not a file: ${abs}`
          : code === 'EACCES'
            ? `permission denied reading ${abs}`
            : `cannot read ${abs}: ${(e as Error).message}`;
    throw new ConfigError(abs, [{ path: '', message }]);
  }
  return parseConfig(text, format, abs);
}

/** Pure: parses and validates config text. `configPath` anchors relative paths. */
export function parseConfig(text: string, format: Format, configPath: string, options: ParseOptions = {}): SigilConfig {
  const abs = path.resolve(configPath);
  const raw = format === 'json' ? parseJson(text, abs) : parseYaml(text, abs);
  if (raw === null || raw === undefined) {
    throw new ConfigError(abs, [{ path: '', message: 'config is empty' }]);
  }
  const env = options.env ?? process.env;

  const result = RootSchema.safeParse(raw, { reportInput: true });
  const issues: ConfigIssue[] = result.success ? [] : result.error.issues.flatMap(toConfigIssues);
  issues.push(...crossFieldIssues(raw, env));
  if (result.success) issues.push(...listenerIssues(result.data), ...busIssues(result.data), ...delegationIssues(result.data));
  if (issues.length > 0 || !result.success) throw new ConfigError(abs, dedupe(issues));
  return build(result.data, abs, env);
}

// ---------------------------------------------------------------------------------------------
// Syntax

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(stripBom(text));
  } catch (e) {
    let message = (e as Error).message;
    const pos = /at position (\d+)/.exec(message);
    message = message
      .replace(/\s*\(line \d+ column \d+\)/, '')
      .replace(/ in JSON at position \d+/, '')
      .replace(/^JSON\.parse: /, '');
    const where = pos ? lineCol(stripBom(text), Number(pos[1])) : undefined;
    throw new ConfigError(file, [
      {
        path: '',
        message: where
          ? `JSON syntax error at line ${where.line}, column ${where.col}: ${message}`
          : `JSON syntax error: ${message}`,
      },
    ]);
  }
}

function stripBom(s: string): string {
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

function lineCol(text: string, offset: number): { line: number; col: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, col: offset - lineStart + 1 };
}

function parseYaml(text: string, file: string): unknown {
  let doc: YAML.Document.Parsed;
  try {
    doc = YAML.parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  } catch (e) {
    throw new ConfigError(file, [{ path: '', message: `YAML syntax error: ${(e as Error).message}` }]);
  }
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((err) => {
        const first = (err.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?\s*$/, '');
        const pos = err.linePos?.[0];
        return {
          path: '',
          message: pos
            ? `YAML syntax error at line ${pos.line}, column ${pos.col}: ${first}`
            : `YAML syntax error: ${first}`,
        };
      }),
    );
  }
  try {
    return doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new ConfigError(file, [{ path: '', message: `YAML error: ${(e as Error).message}` }]);
  }
}

// ---------------------------------------------------------------------------------------------
// Schema issues → plain words

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v); // NaN, Infinity (YAML .nan, .inf)
  return typeof v;
}

function toConfigIssues(issue: z.core.$ZodIssue): ConfigIssue[] {
  const p = formatPath(issue.path);
  switch (issue.code) {
    case 'unrecognized_keys': {
      const pattern = p.replace(/\[\d+\]/g, '[]');
      const known = KNOWN_KEYS[pattern] ?? [];
      return issue.keys.map((key) => {
        const suggestion = closest(key, known);
        return {
          path: p,
          message: `unknown key ${JSON.stringify(key)}` + (suggestion ? ` (did you mean "${suggestion}"?)` : ''),
        };
      });
    }
    case 'invalid_type':
      if (issue.input === undefined) return [{ path: p, message: 'is required' }];
      return [{ path: p, message: `expected ${issue.expected}, got ${typeName(issue.input)}` }];
    case 'invalid_value':
      return [
        {
          path: p,
          message: `expected ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, got ${JSON.stringify(issue.input)}`,
        },
      ];
    case 'too_small':
      if (issue.origin === 'string' && Number(issue.minimum) === 1) return [{ path: p, message: 'must not be empty' }];
      if (issue.origin === 'array') {
        const n = Number(issue.minimum);
        return [{ path: p, message: `must have at least ${n} ${n === 1 ? 'entry' : 'entries'}` }];
      }
      return [{ path: p, message: issue.message }];
    case 'invalid_key':
      return [{ path: p, message: `invalid key: ${issue.issues.map((i) => i.message).join('; ')}` }];
    default:
      return [{ path: p, message: issue.message }];
  }
}

function closest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDist = Infinity;
  for (const k of known) {
    const d = levenshtein(key.toLowerCase(), k.toLowerCase());
    if (d < bestDist) {
      bestDist = d;
      best = k;
    }
  }
  return best !== undefined && bestDist <= Math.max(1, Math.min(2, Math.floor(best.length / 3))) ? best : undefined;
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

// ---------------------------------------------------------------------------------------------
// Cross-field rules, checked on the raw document so they are reported alongside schema issues.

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const IDENTITY_SOURCES = ['dev', 'files', 'workloadApi'] as const;

function crossFieldIssues(raw: unknown, env: Record<string, string | undefined>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (!isObj(raw)) return issues;

  if (raw.inbound === undefined && raw.outbound === undefined && raw.bus === undefined) {
    issues.push({ path: '', message: 'at least one of inbound, outbound, bus is required' });
  }

  const td = typeof raw.trustDomain === 'string' && TRUST_DOMAIN_RE.test(raw.trustDomain) ? raw.trustDomain : undefined;

  // identity: exactly one source
  if (isObj(raw.identity)) {
    const id = raw.identity;
    const present = IDENTITY_SOURCES.filter((k) => id[k] !== undefined);
    if (present.length === 0) {
      issues.push({ path: 'identity', message: 'exactly one of dev, files, workloadApi is required (got none)' });
    } else if (present.length > 1) {
      issues.push({
        path: 'identity',
        message: `exactly one of dev, files, workloadApi is allowed (got ${present.join(', ')})`,
      });
    }
    if (isObj(id.dev) && typeof id.dev.spiffeId === 'string') {
      const s = id.dev.spiffeId;
      const syntax = spiffeIdProblem(s);
      if (syntax) issues.push({ path: 'identity.dev.spiffeId', message: syntax });
      else if (td !== undefined && !(s.startsWith(`spiffe://${td}/`) && s.length > `spiffe://${td}/`.length)) {
        issues.push({
          path: 'identity.dev.spiffeId',
          message: `${JSON.stringify(s)} is not in this sidecar's trust domain (expected spiffe://${td}/<path>)`,
        });
      }
    }
    if (isObj(id.dev) && typeof id.dev.ttl === 'string') {
      try {
        if (parseDuration(id.dev.ttl) === 0) issues.push({ path: 'identity.dev.ttl', message: 'must be greater than 0' });
      } catch {
        /* reported by the schema */
      }
    }
    const wa = id.workloadApi;
    if ((wa === null || isObj(wa)) && (wa === null || wa.socket === undefined)) {
      const fromEnv = env.SPIFFE_ENDPOINT_SOCKET;
      if (fromEnv === undefined || fromEnv === '') {
        issues.push({
          path: 'identity.workloadApi.socket',
          message: 'not set, and SPIFFE_ENDPOINT_SOCKET is not set in the environment',
        });
      } else {
        const problem = socketProblem(fromEnv);
        if (problem) issues.push({ path: 'identity.workloadApi.socket', message: `from SPIFFE_ENDPOINT_SOCKET: ${problem}` });
      }
    }
  }

  // trust.bundles keys are trust domains
  if (isObj(raw.trust) && isObj(raw.trust.bundles)) {
    for (const key of Object.keys(raw.trust.bundles)) {
      const problem = trustDomainProblem(key);
      if (problem) issues.push({ path: formatPath(['trust', 'bundles', key]), message: problem });
    }
  }

  // policy: allow and cedar are mutually exclusive
  if (isObj(raw.policy) && raw.policy.allow !== undefined && raw.policy.cedar !== undefined) {
    issues.push({ path: 'policy', message: 'allow and cedar are mutually exclusive (use one or the other)' });
  }

  // outbound.routes: no duplicate host (+ port)
  if (isObj(raw.outbound) && Array.isArray(raw.outbound.routes)) {
    const seen = new Map<string, number>();
    raw.outbound.routes.forEach((route, i) => {
      if (!isObj(route) || typeof route.host !== 'string') return;
      const parts = splitHostPort(route.host);
      if (!parts || parts.host === '') return;
      const key = `${parts.host.toLowerCase()}|${parts.port === undefined ? '' : Number(parts.port)}`;
      const first = seen.get(key);
      if (first !== undefined) {
        issues.push({
          path: `outbound.routes[${i}].host`,
          message: `duplicate route host ${JSON.stringify(route.host)} (same as outbound.routes[${first}].host)`,
        });
      } else {
        seen.set(key, i);
      }
    });
  }

  return issues;
}

function delegationIssues(data: RawConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  (data.outbound?.routes ?? []).forEach((r, i) => {
    if (!r.exchange) return;
    if (!data.delegation?.broker) issues.push({ path: `outbound.routes[${i}].exchange`, message: 'needs delegation.broker (where tokens are exchanged)' });
    if (spiffeIdProblem(r.spiffeId)) issues.push({ path: `outbound.routes[${i}].spiffeId`, message: 'must be an exact SPIFFE ID (the audience of exchanged tokens), not a pattern' });
  });
  return issues;
}

function busIssues(data: RawConfig): ConfigIssue[] {
  const e = data.bus?.envelope;
  if (!e) return [];
  const issues: ConfigIssue[] = [];
  const ttl = e.ttl ?? parseDuration(DEFAULTS.envelopeTtl);
  const maxTtl = e.maxTtl ?? parseDuration(DEFAULTS.envelopeMaxTtl);
  if (e.ttl !== undefined && ttl < 1000) issues.push({ path: 'bus.envelope.ttl', message: 'must be at least 1s' });
  if (ttl > maxTtl) issues.push({ path: 'bus.envelope.ttl', message: `must not exceed bus.envelope.maxTtl (${maxTtl / 1000}s): receivers would refuse the envelopes` });
  return issues;
}

function listenerIssues(data: RawConfig): ConfigIssue[] {
  const listeners: { path: string; addr: HostPort }[] = [];
  if (data.inbound) listeners.push({ path: 'inbound.listen', addr: data.inbound.listen ?? DEFAULTS.inboundListen });
  if (data.outbound) listeners.push({ path: 'outbound.listen', addr: data.outbound.listen ?? DEFAULTS.outboundListen });
  if (data.bus) listeners.push({ path: 'bus.local', addr: data.bus.local });
  listeners.push({ path: 'admin.listen', addr: data.admin?.listen ?? DEFAULTS.adminListen });
  const issues: ConfigIssue[] = [];
  for (let i = 0; i < listeners.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = listeners[j]!;
      const b = listeners[i]!;
      if (listenersConflict(a.addr, b.addr)) {
        issues.push({
          path: b.path,
          message: `address ${showAddr(b.addr)} conflicts with ${a.path} (${showAddr(a.addr)})`,
        });
      }
    }
  }
  return issues;
}

function showAddr(a: HostPort): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

// ---------------------------------------------------------------------------------------------
// Defaults and path resolution

function build(data: RawConfig, configPath: string, env: Record<string, string | undefined>): SigilConfig {
  const dir = path.dirname(configPath);
  const abs = (p: string) => path.resolve(dir, p);

  let identity: IdentityConfig;
  const id = data.identity;
  if (id.dev) {
    identity = {
      kind: 'dev',
      caDir: abs(id.dev.caDir),
      spiffeId: id.dev.spiffeId,
      ttlMs: id.dev.ttl ?? parseDuration(DEFAULTS.devTtl),
    };
  } else if (id.files) {
    identity = { kind: 'files', cert: abs(id.files.cert), key: abs(id.files.key), bundle: abs(id.files.bundle) };
  } else {
    // Validated above: either the key or the environment variable is set.
    identity = { kind: 'workloadApi', socket: id.workloadApi?.socket ?? env.SPIFFE_ENDPOINT_SOCKET ?? '' };
  }

  const bundles: Record<string, string> = {};
  for (const [td, file] of Object.entries(data.trust?.bundles ?? {})) bundles[td] = abs(file);

  const policy: SigilConfig['policy'] = { mode: data.policy?.mode ?? 'enforce' };
  if (data.policy?.allow !== undefined) policy.allow = [...data.policy.allow];
  if (data.policy?.cedar !== undefined) policy.cedar = abs(data.policy.cedar);

  const config: SigilConfig = {
    configPath,
    trustDomain: data.trustDomain,
    identity,
    trust: { bundles },
    policy,
    metrics: { enabled: data.metrics?.enabled ?? true, principalLabelLimit: data.metrics?.principalLabelLimit ?? 100 },
    admin: { listen: data.admin?.listen ?? { ...DEFAULTS.adminListen } },
    shutdown: { drainTimeoutMs: data.shutdown?.drainTimeout ?? parseDuration(DEFAULTS.drainTimeout) },
  };
  if (data.inbound) {
    config.inbound = { listen: data.inbound.listen ?? { ...DEFAULTS.inboundListen }, upstream: data.inbound.upstream, requireSignedFrames: data.inbound.requireSignedFrames ?? false };
  }
  if (data.outbound) {
    config.outbound = {
      listen: data.outbound.listen ?? { ...DEFAULTS.outboundListen },
      routes: (data.outbound.routes ?? []).map((r) => {
        const route: RouteConfig = { host: r.host.host, address: r.address, spiffeId: r.spiffeId };
        if (r.host.port !== undefined) route.port = r.host.port;
        if (r.signFrames) route.signFrames = true;
        if (r.exchange) route.exchange = r.exchange.scope === undefined ? {} : { scope: r.exchange.scope.split(' ') };
        return route;
      }),
    };
  }
  if (data.bus) {
    const e = data.bus.envelope;
    config.bus = {
      local: data.bus.local,
      envelope: {
        ttlMs: e?.ttl ?? parseDuration(DEFAULTS.envelopeTtl),
        maxTtlMs: e?.maxTtl ?? parseDuration(DEFAULTS.envelopeMaxTtl),
        leewayMs: e?.leeway ?? parseDuration(DEFAULTS.envelopeLeeway),
        maxBytes: e?.maxBytes ?? DEFAULTS.envelopeMaxBytes,
        replayWindowEntries: e?.replayWindowEntries ?? DEFAULTS.replayWindowEntries,
      },
    };
    const n = data.bus.nats;
    if (n) {
      config.bus.nats = { servers: [...n.servers], bufferMessages: n.bufferMessages ?? DEFAULTS.natsBufferMessages };
      if (n.tls?.ca !== undefined) config.bus.nats.ca = abs(n.tls.ca);
    }
  }
  if (data.delegation) {
    const d = data.delegation;
    config.delegation = {
      issuer: d.issuer,
      jwks: abs(d.jwks),
      header: (d.header ?? 'authorization').toLowerCase(),
      require: d.require ?? false,
      maxDepth: d.maxDepth ?? 4,
      leewayMs: d.leeway ?? 5_000,
    };
    if (d.broker) config.delegation.broker = { url: d.broker.url, spiffeId: d.broker.spiffeId };
  }
  if (data.audit) config.audit = { path: abs(data.audit.path), sampleAllows: data.audit.sampleAllows ?? DEFAULTS.auditSampleAllows };
  if (data.metrics?.principalPathSegments !== undefined) config.metrics.principalPathSegments = data.metrics.principalPathSegments;
  return config;
}
