/**
 * Zod schemas for the raw config document (YAML/JSON). Every object is strict: unknown keys
 * are errors. Values that need parsing (durations, addresses, route hosts) are transformed here;
 * defaults, relative-path resolution and cross-field rules live in load.ts. The broker's document
 * (delegation/broker-config.ts) reuses the shared sections and building blocks exported here.
 */
import { z } from 'zod';
import { durationErrorMessage, parseDuration } from './duration.js';
import { addressErrorMessage, parseHostPortWithMin, parsePort, splitHostPort } from './address.js';
import { SpiffeId, SpiffeIdPattern } from '../spiffe/index.js';
import { parseWorkloadEndpoint } from '../identity/workload-api/endpoint.js';
import { redactUrl } from './effective.js';

/** Trust domain name: lowercase letters, digits, '.', '-', '_'; 1..255 characters. */
export const TRUST_DOMAIN_RE = /^[a-z0-9._-]{1,255}$/;

export function trustDomainProblem(td: string): string | undefined {
  if (TRUST_DOMAIN_RE.test(td)) return undefined;
  if (td.startsWith('spiffe://')) return `invalid trust domain ${JSON.stringify(td)} (give the bare name, e.g. example.org, without spiffe://)`;
  if (td.length > 255) return `invalid trust domain (longer than 255 characters)`;
  return `invalid trust domain ${JSON.stringify(td)} (only lowercase letters, digits, '.', '-' and '_' are allowed)`;
}

/** A SPIFFE ID per the spec grammar (the spiffe module's parser is the single source of truth). */
export function spiffeIdProblem(s: string): string | undefined {
  try {
    SpiffeId.parse(s);
    return undefined;
  } catch (err) {
    return `invalid SPIFFE ID ${JSON.stringify(s)}: ${(err as Error).message}`;
  }
}

/** An exact SPIFFE ID or a pattern (`*` one segment, `**` trailing segments). */
export function spiffeIdPatternProblem(s: string): string | undefined {
  try {
    SpiffeIdPattern.parse(s);
    return undefined;
  } catch (err) {
    return `invalid SPIFFE ID or pattern ${JSON.stringify(s)}: ${(err as Error).message}`;
  }
}

/** SPIFFE Workload Endpoint §4: `unix:///absolute/path` or `tcp://IP:port`, nothing else. */
export function socketProblem(s: string): string | undefined {
  try {
    parseWorkloadEndpoint(s);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** A string refinement from a `…Problem` function: its message, if any, becomes the issue. */
export function check(fn: (s: string) => string | undefined) {
  return (s: string, ctx: z.RefinementCtx) => {
    const message = fn(s);
    if (message !== undefined) ctx.addIssue({ code: 'custom', message });
  };
}

export const nonEmpty = z.string().min(1);

/** A file or folder path; relative paths are resolved against the config file's folder later. */
export const filePath = z.string().min(1);

/** A duration (`30s`, `1h30m`) → milliseconds. */
export const duration = z.string().transform((s, ctx) => {
  try {
    return parseDuration(s);
  } catch {
    ctx.addIssue({ code: 'custom', message: durationErrorMessage(s) });
    return z.NEVER;
  }
});

function hostPort(minPort: number) {
  return z.string().transform((s, ctx) => {
    try {
      return parseHostPortWithMin(s, minPort);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });
}

/** Listen address: port 0 allowed (ephemeral). */
export const listen = hostPort(0);
/** Dial address: port 1..65535. */
const dialAddress = hostPort(1);

const trustDomain = z.string().superRefine(check(trustDomainProblem));
const spiffeIdOrPattern = z.string().superRefine(check(spiffeIdPatternProblem));
const exactSpiffeId = z.string().superRefine(check(spiffeIdProblem));
const scopeString = z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/, { error: 'must be space-separated scope tokens (RFC 6749 §3.3)' });

/** Route host: `name` or `name:port` (IPv6 as `[addr]` / `[addr]:port`); lowercased. */
const routeHost = z.string().transform((s, ctx) => {
  const parts = s === '' ? undefined : splitHostPort(s);
  if (!parts || parts.host === '') {
    ctx.addIssue({
      code: 'custom',
      message: s === '' ? 'must not be empty' : `invalid route host ${JSON.stringify(s)} (expected a host name, optionally with :port)`,
    });
    return z.NEVER;
  }
  if (parts.port === undefined) return { host: parts.host.toLowerCase() };
  const port = parsePort(parts.port, 1);
  if (port === undefined) {
    ctx.addIssue({ code: 'custom', message: addressErrorMessage(s, 'port must be 1-65535') });
    return z.NEVER;
  }
  return { host: parts.host.toLowerCase(), port };
});

const httpUrl = z.string().superRefine(
  check((s) => {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      return `invalid URL ${JSON.stringify(redactUrl(s))} (expected http://host:port or https://host:port)`;
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      return `unsupported URL scheme ${JSON.stringify(u.protocol)} in ${JSON.stringify(redactUrl(s))} (expected http: or https:)`;
    }
    return undefined;
  }),
);

export const DevIdentitySchema = z.strictObject({
  caDir: filePath,
  spiffeId: z.string(),
  ttl: duration.optional(),
});

export const FilesIdentitySchema = z.strictObject({
  cert: filePath,
  key: filePath,
  bundle: filePath,
});

export const WorkloadApiRetrySchema = z.strictObject({
  initial: duration.optional(),
  max: duration.optional(),
});

export const WorkloadApiIdentitySchema = z.strictObject({
  socket: z.string().superRefine(check(socketProblem)).optional(),
  // Which of the SVIDs the Workload API offers to present; default: the first (the default SVID).
  spiffeId: exactSpiffeId.optional(),
  hint: nonEmpty.optional(),
  startupTimeout: duration.optional(),
  retry: WorkloadApiRetrySchema.optional(),
});

export const IdentitySchema = z.strictObject({
  dev: DevIdentitySchema.optional(),
  files: FilesIdentitySchema.optional(),
  // `workloadApi:` with nothing after it (YAML null) means "all defaults".
  workloadApi: WorkloadApiIdentitySchema.nullable().optional(),
});

export const TrustSchema = z.strictObject({
  bundles: z.record(z.string(), filePath).optional(),
});

export const InboundSchema = z.strictObject({
  listen: listen.optional(),
  upstream: httpUrl,
  /** Refuse WebSocket streams whose dialing sidecar does not sign every frame. */
  requireSignedFrames: z.boolean().optional(),
});

export const RouteSchema = z.strictObject({
  host: routeHost,
  address: dialAddress,
  spiffeId: spiffeIdOrPattern,
  /** Sign every WebSocket frame sent on this route, and require the peer's frames signed. */
  signFrames: z.boolean().optional(),
  /**
   * Exchange the agent's bearer token at the delegation broker for one addressed to this
   * route's peer (RFC 8693), with this scope. Needs `delegation.broker` and an exact spiffeId.
   */
  exchange: z.strictObject({ scope: scopeString.optional() }).optional(),
});

const headerName = z.string().regex(/^[A-Za-z0-9-]+$/, { error: 'must be a header name (letters, digits, -)' });

const httpsUrl = z.string().superRefine(
  check((s) => {
    let u: URL;
    try {
      u = new URL(s);
    } catch {
      return `invalid URL ${JSON.stringify(redactUrl(s))} (expected https://host[:port][/base/path])`;
    }
    if (u.protocol !== 'https:') return `must be an https:// URL (got ${u.protocol}); egress always leaves over TLS`;
    if (u.username !== '' || u.password !== '') return 'must not carry user info (credentials go in `credential`)';
    if (u.search !== '' || u.hash !== '') return 'must not have a query or fragment';
    return undefined;
  }),
);

/** Where a secret comes from: exactly one of a file (watched), an environment variable, or an HTTP JSON endpoint. */
export const SecretHttpSchema = z.strictObject({
  url: z.string().min(1),
  /** RFC 6901 JSON pointer to the string in the response, e.g. `/data/data/api_key` (Vault KV v2). */
  pointer: z.string().regex(/^(\/[^/]*)+$/, { error: 'must be a JSON pointer such as /data/data/api_key' }),
  refresh: duration.optional(),
  timeout: duration.optional(),
  /** Request headers read from files at every fetch (e.g. `x-vault-token`). */
  headers: z.record(z.string(), z.strictObject({ file: filePath })).optional(),
  tls: z.strictObject({ ca: filePath.optional(), cert: filePath.optional(), key: filePath.optional() }).optional(),
});

export const SecretSourceSchema = z.strictObject({
  file: filePath.optional(),
  env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { error: 'must be an environment variable name' }).optional(),
  http: SecretHttpSchema.optional(),
});

export const EgressCredentialSchema = SecretSourceSchema.extend({
  /** The header the credential goes in (default `authorization`); the agent's own copy is removed. */
  header: headerName.optional(),
  /** The header value; `{credential}` is replaced (default `Bearer {credential}` for authorization, else `{credential}`). */
  value: z.string().optional(),
});

const rateSpec = z.strictObject({ rate: z.number().positive(), burst: z.number().int().positive().optional() });

export const EgressRouteSchema = z.strictObject({
  host: routeHost,
  /** The real API: `https://host[:port][/base]`; the agent's path is appended to the base. */
  upstream: httpsUrl,
  /** PEM CA(s) for the upstream's certificate (default: the system store). */
  ca: filePath.optional(),
  credential: EgressCredentialSchema.optional(),
  attribution: z
    .strictObject({
      /** Header → template with {agent}, {user} (pseudonym), {task}. */
      headers: z.record(z.string(), z.string()).optional(),
      /**
       * Top-level fields set in JSON request bodies (e.g. OpenAI's `user`), same templates; the
       * agent's own values for them are overwritten. Bodies are then read whole (≤ maxBodyBytes).
       */
      bodyFields: z.record(z.string(), z.string()).optional(),
      /** The secret the user pseudonym is an HMAC under (same on every sidecar that should agree). */
      userSecret: SecretSourceSchema.optional(),
    })
    .optional(),
  limits: z
    .strictObject({
      agent: rateSpec.optional(),
      user: rateSpec.optional(),
      concurrency: z.number().int().positive().optional(),
      maxBodyBytes: z.number().int().positive().optional(),
    })
    .optional(),
});

export const OutboundSchema = z.strictObject({
  listen: listen.optional(),
  routes: z.array(RouteSchema).optional(),
  /** Model providers and SaaS APIs: the sidecar holds the credential and calls them over TLS. */
  egress: z.array(EgressRouteSchema).optional(),
});

export const PolicySchema = z.strictObject({
  mode: z.enum(['enforce', 'dry-run']).optional(),
  allow: z.array(spiffeIdOrPattern).optional(),
  cedar: filePath.optional(),
});

const natsServer = z.string().refine((s) => /^(tls|nats):\/\/[^/\s]+$/.test(s) || /^[^/\s:]+:\d+$/.test(s), {
  error: 'must be tls://host:port, nats://host:port or host:port',
});

const positiveInt = z.number().int({ error: 'must be a whole number' }).min(1, { error: 'must be at least 1' });

export const NatsTlsSchema = z.strictObject({
  /** PEM file of the CA(s) that sign the NATS server's certificate; default: the trust bundles. */
  ca: filePath.optional(),
});

export const NatsSchema = z.strictObject({
  servers: z.array(natsServer).min(1, { error: 'must list at least one server' }),
  tls: NatsTlsSchema.optional(),
  /** Publishes held while the broker is unreachable before they are refused (bus_buffer_full). */
  bufferMessages: z.number().int({ error: 'must be a whole number' }).min(0, { error: 'must be 0 or more' }).optional(),
});

export const EnvelopeSchema = z.strictObject({
  /** Lifetime of envelopes this sidecar signs. */
  ttl: duration.optional(),
  /** Largest lifetime (exp - iat) accepted from others. */
  maxTtl: duration.optional(),
  /** Clock skew tolerated on iat/exp. */
  leeway: duration.optional(),
  /** Largest envelope accepted or produced, in bytes. */
  maxBytes: positiveInt.optional(),
  /** Distinct (iss, jti) pairs remembered for replay detection. */
  replayWindowEntries: positiveInt.optional(),
});

export const DelegationBrokerSchema = z.strictObject({
  /** The broker's token endpoint, e.g. https://127.0.0.1:8444/token. */
  url: httpUrl,
  /** The broker's SPIFFE ID: its SVID must be exactly this. */
  spiffeId: exactSpiffeId,
});

export const DelegationSchema = z.strictObject({
  /** `iss` of delegation tokens (the broker's issuer). */
  issuer: z.string().min(1),
  /** The broker's JWKS file (watched). */
  jwks: filePath,
  /** Header carrying `Bearer <token>` (case-insensitive). */
  header: z.string().regex(/^[A-Za-z0-9-]+$/, { error: 'must be a header name' }).optional(),
  /** Refuse inbound requests without a delegation token (401). */
  require: z.boolean().optional(),
  maxDepth: z.number().int({ error: 'must be a whole number' }).min(1, { error: 'must be at least 1' }).optional(),
  leeway: duration.optional(),
  /** Where outbound routes with `exchange` get their tokens. */
  broker: DelegationBrokerSchema.optional(),
});

export const BusSchema = z.strictObject({
  local: listen,
  nats: NatsSchema.optional(),
  envelope: EnvelopeSchema.optional(),
});

const literalSubject = z.string().regex(/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/, { error: 'must be a NATS subject of literal tokens (no wildcards), e.g. sigil.revocations' });

export const RevocationNatsSchema = z.strictObject({
  /** Default: bus.nats.servers. */
  servers: z.array(natsServer).min(1, { error: 'must list at least one server' }).optional(),
  /** Default: bus.nats.tls. */
  tls: NatsTlsSchema.optional(),
  /** Records are published on `<subject>.<entry id>.<op>`. */
  subject: literalSubject.optional(),
  /** The JetStream stream holding the current list (for sidecars that start later). */
  stream: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, { error: 'must be 1-64 characters of A-Z a-z 0-9 _ -' }).optional(),
  /** Create the stream when it is missing (needs JetStream API permissions). */
  createStream: z.boolean().optional(),
});

export const RevocationSchema = z.strictObject({
  /** Propagation over NATS JetStream: signed records, verified and authorized on receipt. */
  nats: RevocationNatsSchema.optional(),
  /** A watched YAML/JSON list of entries, for environments without NATS. */
  file: filePath.optional(),
  /** Deny new connections while the list is older than this (default: never). */
  failClosedAfter: duration.optional(),
  /** How often the list's freshness is confirmed with its sources and expired entries pruned. */
  syncInterval: duration.optional(),
});

export const AdminSchema = z.strictObject({
  listen: listen.optional(),
  /**
   * A file holding a bearer token the changing endpoints (revocations, policy reload) require.
   * The agent shares loopback with its sidecar: without a token it could lift its own revocation.
   */
  tokenFile: filePath.optional(),
});

const fraction = z
  .number()
  .min(0, { error: 'must be between 0 and 1 (a fraction, e.g. 0.1 for 10%)' })
  .max(1, { error: 'must be between 0 and 1 (a fraction, e.g. 0.1 for 10%)' });

export const AuditSchema = z.strictObject({
  path: filePath,
  /** Fraction of allow decisions written (denies are always written). */
  sampleAllows: fraction.optional(),
});

export const MetricsSchema = z.strictObject({
  /** false: no per-call metrics are recorded (for overhead measurements); /metrics still answers. */
  enabled: z.boolean().optional(),
  /** Distinct values per principal label before the rest fold into "other". */
  principalLabelLimit: z.number().int({ error: 'must be a whole number' }).min(1, { error: 'must be at least 1' }).optional(),
  /** Keep only the first N path segments of SPIFFE IDs in principal labels. */
  principalPathSegments: z.number().int({ error: 'must be a whole number' }).min(0, { error: 'must be 0 or more' }).optional(),
});

export const ShutdownSchema = z.strictObject({
  /**
   * On SIGTERM, how long the listeners keep accepting while /readyz already answers 503: the
   * time load balancers and Kubernetes endpoints need to stop sending new connections.
   */
  delay: duration.optional(),
  drainTimeout: duration.optional(),
});

export const RootSchema = z.strictObject({
  trustDomain,
  identity: IdentitySchema,
  trust: TrustSchema.optional(),
  inbound: InboundSchema.optional(),
  outbound: OutboundSchema.optional(),
  policy: PolicySchema.optional(),
  bus: BusSchema.optional(),
  delegation: DelegationSchema.optional(),
  revocation: RevocationSchema.optional(),
  admin: AdminSchema.optional(),
  audit: AuditSchema.optional(),
  metrics: MetricsSchema.optional(),
  shutdown: ShutdownSchema.optional(),
});

export type RawConfig = z.output<typeof RootSchema>;

/** Allowed keys per object, keyed by path pattern (array indices written as `[]`); for "did you mean". */
export const KNOWN_KEYS: Readonly<Record<string, readonly string[]>> = {
  '': Object.keys(RootSchema.shape),
  identity: Object.keys(IdentitySchema.shape),
  'identity.dev': Object.keys(DevIdentitySchema.shape),
  'identity.files': Object.keys(FilesIdentitySchema.shape),
  'identity.workloadApi': Object.keys(WorkloadApiIdentitySchema.shape),
  'identity.workloadApi.retry': Object.keys(WorkloadApiRetrySchema.shape),
  trust: Object.keys(TrustSchema.shape),
  inbound: Object.keys(InboundSchema.shape),
  outbound: Object.keys(OutboundSchema.shape),
  'outbound.routes[]': Object.keys(RouteSchema.shape),
  'outbound.egress[]': Object.keys(EgressRouteSchema.shape),
  'outbound.egress[].credential': Object.keys(EgressCredentialSchema.shape),
  'outbound.egress[].credential.http': Object.keys(SecretHttpSchema.shape),
  'outbound.egress[].attribution': ['headers', 'bodyFields', 'userSecret'],
  'outbound.egress[].attribution.userSecret': Object.keys(SecretSourceSchema.shape),
  'outbound.egress[].limits': ['agent', 'user', 'concurrency', 'maxBodyBytes'],
  policy: Object.keys(PolicySchema.shape),
  bus: Object.keys(BusSchema.shape),
  'bus.nats': Object.keys(NatsSchema.shape),
  'bus.nats.tls': Object.keys(NatsTlsSchema.shape),
  'bus.envelope': Object.keys(EnvelopeSchema.shape),
  delegation: Object.keys(DelegationSchema.shape),
  'delegation.broker': Object.keys(DelegationBrokerSchema.shape),
  'outbound.routes[].exchange': ['scope'],
  revocation: Object.keys(RevocationSchema.shape),
  'revocation.nats': Object.keys(RevocationNatsSchema.shape),
  'revocation.nats.tls': Object.keys(NatsTlsSchema.shape),
  admin: Object.keys(AdminSchema.shape),
  audit: Object.keys(AuditSchema.shape),
  metrics: Object.keys(MetricsSchema.shape),
  shutdown: Object.keys(ShutdownSchema.shape),
};
