/**
 * `sigil run --config FILE`: the sidecar's config document: its types, defaults, cross-field
 * rules and the build into a SigilConfig. Reading and parsing the file (document.ts) and the
 * wording of schema issues (issues.ts) are shared with the broker's loader.
 */
import path from 'node:path';
import type { HostPort } from './address.js';
import { isLoopbackHost, listenersConflict, splitHostPort } from './address.js';
import { parseConfigText, readConfigFile, type ConfigFormat } from './document.js';
import { MAX_CLOCK_LEEWAY_MS, parseDuration } from './duration.js';
import type { ConfigIssue } from './errors.js';
import { SIDECAR_ENV_OVERRIDES, validateWithOverrides, type AppliedOverride } from './env-overrides.js';
import { validateDocument } from './issues.js';
import { devSpiffeIdIssues, isObj, trustBundleKeyIssues, workloadApiIssues } from './raw-checks.js';
import { KNOWN_KEYS, RootSchema, spiffeIdProblem, type RawConfig } from './schema.js';
import type { CredentialSourceConfig } from '../egress/credentials.js';
import type { RateSpec } from '../egress/limits.js';
import { templateProblem } from '../egress/attribution.js';

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

/** Where a secret comes from (egress credentials, the pseudonym secret); paths are absolute. */
export type SecretSourceConfig = CredentialSourceConfig;

export interface EgressRouteConfig {
  /** Lowercased, matched like outbound routes. */
  host: string;
  port?: number;
  /** `https://host[:port][/base]`. */
  upstream: string;
  /** PEM file of the CA(s) the upstream certificate must chain to; absent = the system store. */
  ca?: string;
  credential?: { source: SecretSourceConfig; header: string; value: string };
  attribution: { headers: Record<string, string>; bodyFields: Record<string, string>; userSecret?: SecretSourceConfig };
  limits: { agent?: RateSpec; user?: RateSpec; concurrency?: number; maxBodyBytes?: number };
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
  | WorkloadApiIdentityConfig;

export interface WorkloadApiIdentityConfig {
  kind: 'workloadApi';
  /** `unix:///abs/path` or `tcp://IP:port`, from the key or SPIFFE_ENDPOINT_SOCKET. */
  socket: string;
  spiffeId?: string;
  hint?: string;
  startupTimeoutMs: number;
  retryInitialMs: number;
  retryMaxMs: number;
}

export interface SigilConfig {
  /** Absolute path of the loaded file. */
  configPath: string;
  trustDomain: string;
  identity: IdentityConfig;
  trust: { bundles: Record<string, string> };
  inbound?: { listen: HostPort; upstream: string; requireSignedFrames: boolean };
  outbound?: { listen: HostPort; routes: RouteConfig[]; egress: EgressRouteConfig[] };
  policy: { mode: 'enforce' | 'dry-run'; allow?: string[]; cedar?: string };
  bus?: BusConfig;
  delegation?: DelegationConfig;
  revocation?: RevocationConfig;
  admin: { listen: HostPort; tokenFile?: string };
  /** `sampleAllows`: fraction of allows written, 0..1 (default 1); denies are always written. */
  audit?: { path: string; sampleAllows: number };
  /** Principal-label cardinality guard (docs/metrics.md). */
  metrics: { enabled: boolean; principalLabelLimit: number; principalPathSegments?: number };
  /** `delayMs`: listeners keep accepting this long after SIGTERM (readiness already 503); then drain. */
  shutdown: { delayMs: number; drainTimeoutMs: number };
}

export interface BusConfig {
  local: HostPort;
  nats?: { servers: string[]; ca?: string; bufferMessages: number };
  envelope: { ttlMs: number; maxTtlMs: number; leewayMs: number; maxBytes: number; replayWindowEntries: number };
}

export interface RevocationConfig {
  file?: string;
  nats?: { servers: string[]; ca?: string; subject: string; stream: string; createStream: boolean };
  failClosedAfterMs?: number;
  syncIntervalMs: number;
}

export interface ParseOptions {
  /** Environment for `SIGIL_*` overrides and defaults (`SPIFFE_ENDPOINT_SOCKET`); defaults to `process.env`. */
  env?: Record<string, string | undefined>;
  /** Told which overrides took effect (`sigil config check` prints them). */
  onOverrides?: (applied: AppliedOverride[]) => void;
}

export const DEFAULTS = {
  devTtl: '15m',
  workloadApiStartupTimeout: '30s',
  secretRefresh: '5m',
  secretTimeout: '5s',
  workloadApiRetryInitial: '500ms',
  workloadApiRetryMax: '30s',
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
  revocationSubject: 'sigil.revocations',
  revocationStream: 'SIGIL_REVOCATIONS',
  revocationSyncInterval: '1s',
} as const;

/** Reads, parses and validates a config file, `SIGIL_*` overrides applied. Every failure is a `ConfigError`. */
export async function loadConfig(file: string, options: ParseOptions = {}): Promise<SigilConfig> {
  const { abs, format, text } = await readConfigFile(file);
  return parseConfig(text, format, abs, options);
}

/** Pure: parses and validates config text. `configPath` anchors relative paths. */
export function parseConfig(text: string, format: ConfigFormat, configPath: string, options: ParseOptions = {}): SigilConfig {
  const abs = path.resolve(configPath);
  const env = options.env ?? process.env;
  return validateWithOverrides(
    parseConfigText(text, format, abs),
    env,
    SIDECAR_ENV_OVERRIDES,
    (raw, overrideIssues) => {
      const data = validateDocument(RootSchema, raw, abs, {
        wording: { knownKeys: KNOWN_KEYS },
        rawIssues: [...overrideIssues, ...crossFieldIssues(raw, env)],
        dataIssues: (d) => [...listenerIssues(d), ...exposureIssues(d), ...busIssues(d), ...delegationIssues(d), ...revocationIssues(d), ...egressIssues(d)],
      });
      return build(data, abs, env);
    },
    options.onOverrides,
  );
}

// ---------------------------------------------------------------------------------------------
// Cross-field rules, checked on the raw document so they are reported alongside schema issues.

const IDENTITY_SOURCES = ['dev', 'files', 'workloadApi'] as const;

function crossFieldIssues(raw: unknown, env: Record<string, string | undefined>): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  if (!isObj(raw)) return issues;

  if (raw.inbound === undefined && raw.outbound === undefined && raw.bus === undefined) {
    issues.push({ path: '', message: 'at least one of inbound, outbound, bus is required' });
  }

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
    issues.push(...devSpiffeIdIssues(raw, 'sidecar'));
    if (isObj(id.dev) && typeof id.dev.ttl === 'string') {
      try {
        if (parseDuration(id.dev.ttl) === 0) issues.push({ path: 'identity.dev.ttl', message: 'must be greater than 0' });
      } catch {
        /* reported by the schema */
      }
    }
    issues.push(...workloadApiIssues(raw, env));
  }

  // trust.bundles keys are trust domains
  issues.push(...trustBundleKeyIssues(raw));

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

/** Headers Sigil or HTTP itself controls: never a credential or attribution header. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'te', 'trailer', 'connection', 'keep-alive', 'upgrade', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'expect', 'traceparent']);

/** A secret source: exactly one kind; an HTTP one on https (http only on loopback), paired TLS files, sane header names and times. */
function sourceIssues(s: RawSecret | undefined, path: string, issues: ConfigIssue[]): void {
  if (!s) return;
  const n = [s.file, s.env, s.http].filter((v) => v !== undefined).length;
  if (n !== 1) issues.push({ path, message: `exactly one of file, env, http is required (got ${n})` });
  const h = s.http;
  if (!h) return;
  try {
    const u = new URL(h.url);
    const loopback = ['127.0.0.1', '[::1]', 'localhost'].includes(u.hostname);
    if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback)) issues.push({ path: `${path}.http.url`, message: 'must be https:// (http:// only on loopback)' });
    if (u.protocol === 'http:' && h.tls) issues.push({ path: `${path}.http.tls`, message: 'needs an https:// url' });
  } catch {
    issues.push({ path: `${path}.http.url`, message: 'is not a valid URL' });
  }
  for (const name of Object.keys(h.headers ?? {})) {
    if (!/^[A-Za-z0-9-]+$/.test(name)) issues.push({ path: `${path}.http.headers.${name}`, message: 'is not a header name' });
  }
  if (h.tls && (h.tls.cert === undefined) !== (h.tls.key === undefined)) issues.push({ path: `${path}.http.tls`, message: 'cert and key go together (a client certificate needs its key)' });
  if (h.refresh === 0) issues.push({ path: `${path}.http.refresh`, message: 'must be greater than 0' });
  if (h.timeout === 0) issues.push({ path: `${path}.http.timeout`, message: 'must be greater than 0' });
}

/** outbound.egress: one secret source each, hosts unique across routes and egress, sane templates. */
function egressIssues(data: RawConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const listenHost = data.outbound?.listen?.host ?? DEFAULTS.outboundListen.host;
  if ((data.outbound?.egress ?? []).length > 0 && !isLoopbackHost(listenHost)) {
    // Whoever reaches the outbound listener spends the egress credentials.
    issues.push({ path: 'outbound.listen', message: `must be on loopback when outbound.egress is configured (got ${listenHost}): whoever reaches it spends the credentials` });
  }
  const hosts = new Map<string, string>();
  (data.outbound?.routes ?? []).forEach((r, i) => hosts.set(`${r.host.host}|${r.host.port ?? ''}`, `outbound.routes[${i}]`));
  (data.outbound?.egress ?? []).forEach((e, i) => {
    const at = `outbound.egress[${i}]`;
    const key = `${e.host.host}|${e.host.port ?? ''}`;
    const first = hosts.get(key);
    if (first) issues.push({ path: `${at}.host`, message: `duplicate host ${JSON.stringify(e.host.host)} (same as ${first}.host)` });
    else hosts.set(key, at);
    sourceIssues(e.credential, `${at}.credential`, issues);
    sourceIssues(e.attribution?.userSecret, `${at}.attribution.userSecret`, issues);
    if (e.credential?.value !== undefined && e.credential.value.split('{credential}').length !== 2) {
      issues.push({ path: `${at}.credential.value`, message: 'must contain {credential} exactly once' });
    }
    if (e.credential?.value !== undefined && /[\r\n\0]/.test(e.credential.value)) {
      issues.push({ path: `${at}.credential.value`, message: 'must not contain a line break or NUL' });
    }
    if (e.credential?.header !== undefined && RESERVED_HEADERS.has(e.credential.header.toLowerCase())) {
      issues.push({ path: `${at}.credential.header`, message: `${JSON.stringify(e.credential.header)} cannot carry a credential (framing, routing or hop-by-hop header)` });
    }
    const credentialHeader = (e.credential?.header ?? 'authorization').toLowerCase();
    for (const [name, template] of Object.entries(e.attribution?.headers ?? {})) {
      const path = `${at}.attribution.headers.${name}`;
      if (!/^[A-Za-z0-9-]+$/.test(name)) issues.push({ path, message: 'is not a header name' });
      if (RESERVED_HEADERS.has(name.toLowerCase())) issues.push({ path, message: 'is a framing, routing or hop-by-hop header' });
      const problem = templateProblem(template);
      if (problem) issues.push({ path, message: problem });
      if (e.credential && name.toLowerCase() === credentialHeader) issues.push({ path, message: 'is the credential header' });
      if (template.includes('{user}') && !e.attribution?.userSecret) issues.push({ path, message: '{user} needs attribution.userSecret (the pseudonym is an HMAC under it)' });
    }
    for (const [name, template] of Object.entries(e.attribution?.bodyFields ?? {})) {
      const path = `${at}.attribution.bodyFields.${name}`;
      if (name === '' || name === '__proto__' || name === 'constructor' || name === 'prototype') issues.push({ path, message: 'is not a usable field name' });
      const problem = templateProblem(template);
      if (problem) issues.push({ path, message: problem });
      if (template.includes('{user}') && !e.attribution?.userSecret) issues.push({ path, message: '{user} needs attribution.userSecret (the pseudonym is an HMAC under it)' });
    }
  });
  return issues;
}

function delegationIssues(data: RawConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  (data.outbound?.routes ?? []).forEach((r, i) => {
    if (!r.exchange) return;
    if (!data.delegation?.broker) issues.push({ path: `outbound.routes[${i}].exchange`, message: 'needs delegation.broker (where tokens are exchanged)' });
    if (spiffeIdProblem(r.spiffeId)) issues.push({ path: `outbound.routes[${i}].spiffeId`, message: 'must be an exact SPIFFE ID (the audience of exchanged tokens), not a pattern' });
  });
  const leeway = data.delegation?.leeway;
  if (leeway !== undefined && leeway > MAX_CLOCK_LEEWAY_MS) issues.push({ path: 'delegation.leeway', message: 'must be at most 60s (a larger leeway keeps expired tokens valid)' });
  return issues;
}

/**
 * The `revocation` section's cross-field rules (exported for the broker, which has no bus: there
 * `revocation.nats.servers` is always required and `serversRequired` says why).
 */
export function revocationIssues(data: Pick<RawConfig, 'revocation' | 'bus'>, serversRequired = 'is required when bus.nats is not configured'): ConfigIssue[] {
  const r = data.revocation;
  const issues: ConfigIssue[] = [];
  if (!r) return issues;
  if (r.nats && r.nats.servers === undefined && data.bus?.nats === undefined) {
    issues.push({ path: 'revocation.nats.servers', message: serversRequired });
  }
  if (r.failClosedAfter !== undefined && !r.nats && r.file === undefined) {
    issues.push({ path: 'revocation.failClosedAfter', message: 'needs a source whose freshness can be checked (revocation.nats or revocation.file)' });
  }
  if (r.syncInterval !== undefined && r.syncInterval < 100) issues.push({ path: 'revocation.syncInterval', message: 'must be at least 100ms' });
  if (r.failClosedAfter !== undefined && r.failClosedAfter < (r.syncInterval ?? 1000) * 2) {
    issues.push({ path: 'revocation.failClosedAfter', message: 'must be at least twice revocation.syncInterval, or a healthy list would look stale' });
  }
  return issues;
}

/** revocation: NATS settings default to the bus's connection (exported for the broker, which has none). */
export function buildRevocation(data: Pick<RawConfig, 'revocation' | 'bus'>, abs: (p: string) => string): RevocationConfig {
  const r = data.revocation!;
  const config: RevocationConfig = { syncIntervalMs: r.syncInterval ?? parseDuration(DEFAULTS.revocationSyncInterval) };
  if (r.file !== undefined) config.file = abs(r.file);
  if (r.failClosedAfter !== undefined) config.failClosedAfterMs = r.failClosedAfter;
  if (r.nats) {
    const ca = r.nats.tls?.ca ?? (r.nats.servers === undefined ? data.bus?.nats?.tls?.ca : undefined);
    config.nats = {
      servers: [...(r.nats.servers ?? data.bus?.nats?.servers ?? [])],
      subject: r.nats.subject ?? DEFAULTS.revocationSubject,
      stream: r.nats.stream ?? DEFAULTS.revocationStream,
      createStream: r.nats.createStream ?? true,
    };
    if (ca !== undefined) config.nats.ca = abs(ca);
  }
  return config;
}

function busIssues(data: RawConfig): ConfigIssue[] {
  const e = data.bus?.envelope;
  if (!e) return [];
  const issues: ConfigIssue[] = [];
  const ttl = e.ttl ?? parseDuration(DEFAULTS.envelopeTtl);
  const maxTtl = e.maxTtl ?? parseDuration(DEFAULTS.envelopeMaxTtl);
  if (e.ttl !== undefined && ttl < 1000) issues.push({ path: 'bus.envelope.ttl', message: 'must be at least 1s' });
  if (ttl > maxTtl) issues.push({ path: 'bus.envelope.ttl', message: `must not exceed bus.envelope.maxTtl (${maxTtl / 1000}s): receivers would refuse the envelopes` });
  if (e.leeway !== undefined && e.leeway > MAX_CLOCK_LEEWAY_MS) issues.push({ path: 'bus.envelope.leeway', message: 'must be at most 60s (a larger leeway keeps expired envelopes valid)' });
  return issues;
}

/**
 * Listeners that act with this sidecar's authority must not be reachable from the network: the
 * outbound listener and the local bus API speak as the agent (its SVID, its signature), and
 * the admin API's changing endpoints lift revocations and reload the policy. The agent reaches
 * them over loopback (same pod / network namespace); an admin listener the kubelet and
 * Prometheus reach needs a token.
 */
function exposureIssues(data: RawConfig): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const outbound = data.outbound?.listen ?? DEFAULTS.outboundListen;
  if (data.outbound && !isLoopbackHost(outbound.host) && (data.outbound.egress ?? []).length === 0) {
    issues.push({ path: 'outbound.listen', message: `must be on loopback (got ${outbound.host}): whoever reaches it calls other agents as this one; run the agent in the sidecar's network namespace (same pod)` });
  }
  if (data.bus && !isLoopbackHost(data.bus.local.host)) {
    issues.push({ path: 'bus.local', message: `must be on loopback (got ${data.bus.local.host}): whoever reaches it publishes messages signed as this agent` });
  }
  issues.push(...adminExposureIssues(data.admin, DEFAULTS.adminListen));
  return issues;
}

/** admin.listen beyond loopback needs admin.tokenFile (shared with the broker). */
export function adminExposureIssues(admin: RawConfig['admin'], defaultListen: HostPort): ConfigIssue[] {
  const listen = admin?.listen ?? defaultListen;
  if (isLoopbackHost(listen.host) || admin?.tokenFile !== undefined) return [];
  return [{ path: 'admin.listen', message: `${listen.host} is reachable beyond loopback: set admin.tokenFile too (without a token, whoever reaches the port can lift revocations and reload the policy)` }];
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

/** identity.workloadApi with its defaults; shared with the broker's config. */
export function workloadApiIdentity(wa: RawConfig['identity']['workloadApi'] | undefined, env: Record<string, string | undefined>): WorkloadApiIdentityConfig {
  const retryInitialMs = wa?.retry?.initial ?? parseDuration(DEFAULTS.workloadApiRetryInitial);
  return {
    kind: 'workloadApi',
    // Validated above: either the key or the environment variable is set.
    socket: wa?.socket ?? env.SPIFFE_ENDPOINT_SOCKET ?? '',
    ...(wa?.spiffeId !== undefined ? { spiffeId: wa.spiffeId } : {}),
    ...(wa?.hint !== undefined ? { hint: wa.hint } : {}),
    startupTimeoutMs: wa?.startupTimeout ?? parseDuration(DEFAULTS.workloadApiStartupTimeout),
    retryInitialMs,
    retryMaxMs: Math.max(retryInitialMs, wa?.retry?.max ?? parseDuration(DEFAULTS.workloadApiRetryMax)), // checked >= initial when given
  };
}

type RawEgress = NonNullable<NonNullable<RawConfig['outbound']>['egress']>[number];
type RawSecret = NonNullable<NonNullable<RawEgress['attribution']>['userSecret']>;

function secretSource(s: RawSecret, abs: (p: string) => string): SecretSourceConfig {
  if (s.file !== undefined) return { kind: 'file', path: abs(s.file) };
  if (s.env !== undefined) return { kind: 'env', name: s.env };
  const h = s.http!;
  return {
    kind: 'http',
    url: h.url,
    pointer: h.pointer,
    refreshMs: h.refresh ?? parseDuration(DEFAULTS.secretRefresh),
    timeoutMs: h.timeout ?? parseDuration(DEFAULTS.secretTimeout),
    ...(h.headers ? { headers: Object.fromEntries(Object.entries(h.headers).map(([k, v]) => [k.toLowerCase(), { file: abs(v.file) }])) } : {}),
    ...(h.tls ? { tls: { ...(h.tls.ca ? { ca: abs(h.tls.ca) } : {}), ...(h.tls.cert ? { cert: abs(h.tls.cert) } : {}), ...(h.tls.key ? { key: abs(h.tls.key) } : {}) } } : {}),
  };
}

function egressRoute(e: RawEgress, abs: (p: string) => string): EgressRouteConfig {
  const rate = (r: { rate: number; burst?: number } | undefined): RateSpec | undefined => r && { ratePerSecond: r.rate, burst: r.burst ?? Math.max(1, Math.ceil(r.rate)) };
  const header = (e.credential?.header ?? 'authorization').toLowerCase();
  const agent = rate(e.limits?.agent);
  const user = rate(e.limits?.user);
  return {
    host: e.host.host,
    ...(e.host.port !== undefined ? { port: e.host.port } : {}),
    upstream: e.upstream,
    ...(e.ca ? { ca: abs(e.ca) } : {}),
    ...(e.credential ? { credential: { source: secretSource(e.credential, abs), header, value: e.credential.value ?? (header === 'authorization' ? 'Bearer {credential}' : '{credential}') } } : {}),
    attribution: {
      headers: Object.fromEntries(Object.entries(e.attribution?.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
      bodyFields: { ...(e.attribution?.bodyFields ?? {}) },
      ...(e.attribution?.userSecret ? { userSecret: secretSource(e.attribution.userSecret, abs) } : {}),
    },
    limits: {
      ...(agent ? { agent } : {}),
      ...(user ? { user } : {}),
      ...(e.limits?.concurrency !== undefined ? { concurrency: e.limits.concurrency } : {}),
      ...(e.limits?.maxBodyBytes !== undefined ? { maxBodyBytes: e.limits.maxBodyBytes } : {}),
    },
  };
}

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
    identity = workloadApiIdentity(id.workloadApi ?? undefined, env);
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
    admin: { listen: data.admin?.listen ?? { ...DEFAULTS.adminListen }, ...(data.admin?.tokenFile === undefined ? {} : { tokenFile: abs(data.admin.tokenFile) }) },
    shutdown: { delayMs: data.shutdown?.delay ?? 0, drainTimeoutMs: data.shutdown?.drainTimeout ?? parseDuration(DEFAULTS.drainTimeout) },
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
      egress: (data.outbound.egress ?? []).map((e) => egressRoute(e, abs)),
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
  if (data.revocation) config.revocation = buildRevocation(data, abs);
  if (data.audit) config.audit = { path: abs(data.audit.path), sampleAllows: data.audit.sampleAllows ?? DEFAULTS.auditSampleAllows };
  if (data.metrics?.principalPathSegments !== undefined) config.metrics.principalPathSegments = data.metrics.principalPathSegments;
  return config;
}
