// Every Sigil metric is defined here, in one place, so names, labels and their bounded value
// sets can be reviewed together (docs/metrics.md mirrors this file). Label values come from
// closed sets (actions, reason codes, results) or are SPIFFE IDs passed through the cardinality
// guard below — never a raw user id, token id or path: those belong to the audit log.
// Bus and delegation metrics follow the same pattern: define them here, record at the edge.
import { Counter, Gauge, Histogram, Registry, type OpenMetricsContentType } from 'prom-client';
import type { SpiffeId } from '../spiffe/index.js';

export interface MetricsOptions {
  /** Distinct values kept per principal label before folding into "other" (default 100). */
  principalLabelLimit?: number;
  /** Keep only the first N path segments of a SPIFFE ID in principal labels (default: all). */
  principalPathSegments?: number;
}

export type Reporter = 'inbound' | 'outbound' | 'egress';
export type RequestProtocol = 'http' | 'websocket' | 'jsonrpc' | 'bus';
export type DecisionLabel = 'allow' | 'deny' | 'would_deny';

export interface RequestObservation {
  reporter: Reporter;
  source?: SpiffeId;
  destination?: SpiffeId;
  /** Egress: the external API's host (from config, so bounded) instead of a SPIFFE ID. */
  destinationHost?: string;
  protocol: RequestProtocol;
  responseCode: number;
  decision: DecisionLabel;
  reason: string;
  seconds: number;
  /** Delegation chain depth (number of actors); 0 or absent = not delegated. */
  chainDepth?: number;
}

const REQUEST_LABELS = [
  'reporter',
  'source_principal',
  'destination_principal',
  'request_protocol',
  'response_code',
  'decision',
  'reason',
  'delegated',
  'chain_depth',
] as const;

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class SigilMetrics {
  readonly registry = new Registry();
  /** The same metrics, exposed as OpenMetrics when a scraper asks for it. */
  private readonly openMetricsRegistry = openMetricsRegistry();
  /** One cardinality guard per principal label: the cap is per label. */
  private readonly principals: Record<'source_principal' | 'destination_principal', PrincipalLabels>;

  readonly requests = new Counter({
    name: 'sigil_requests_total',
    help: 'Calls handled (HTTP requests, WebSocket streams, JSON-RPC requests, bus messages), attributed to caller and callee.',
    labelNames: REQUEST_LABELS,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly requestDuration = new Histogram({
    name: 'sigil_request_duration_seconds',
    help: 'Time from a call reaching the sidecar to its response being complete.',
    labelNames: REQUEST_LABELS,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry, this.openMetricsRegistry],
  });

  /** decision: allow | deny | would_deny (dry-run: allowed through, but the policy denied it). */
  readonly authzDecisions = new Counter({
    name: 'sigil_authz_decisions_total',
    help: 'Authorization decisions, by action, outcome and reason code.',
    labelNames: ['action', 'decision', 'reason'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly authzEvaluation = new Histogram({
    name: 'sigil_authz_evaluation_seconds',
    help: 'Time to evaluate one authorization request against the policy in force.',
    buckets: [0.000001, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01],
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly tlsHandshakes = new Counter({
    name: 'sigil_tls_handshakes_total',
    help: 'mTLS handshakes by side and result; reason is the SPIFFE verification or TLS failure code.',
    labelNames: ['reporter', 'result', 'reason'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly tlsHandshakeDuration = new Histogram({
    name: 'sigil_tls_handshake_duration_seconds',
    help: 'Time from TCP connect/accept to a verified peer (successful handshakes).',
    labelNames: ['reporter'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly activeConnections = new Gauge({
    name: 'sigil_active_connections',
    help: 'Open verified connections: inbound from peers, outbound to peers (pooled included).',
    labelNames: ['reporter'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly svidExpiry = new Gauge({
    name: 'sigil_svid_expiry_timestamp_seconds',
    help: 'Expiry (Unix seconds) of the SVID this sidecar presents.',
    labelNames: ['spiffe_id'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly svidRotations = new Counter({
    name: 'sigil_svid_rotations_total',
    help: 'SVID updates after startup, by result (failure: renewal or reload refused; the last good SVID stays).',
    labelNames: ['result'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly bundleUpdates = new Counter({
    name: 'sigil_trust_bundle_updates_total',
    help: 'Trust bundle changes applied, per trust domain.',
    labelNames: ['trust_domain'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly bundleAuthorities = new Gauge({
    name: 'sigil_trust_bundle_authorities',
    help: 'X.509 authorities in force per trust domain (0 = that trust domain is not trusted).',
    labelNames: ['trust_domain'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly policyReloads = new Counter({
    name: 'sigil_policy_reloads_total',
    help: 'Policy reload attempts (file change or POST /v1/policy/reload), by result.',
    labelNames: ['result'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly policyVersion = new Gauge({
    name: 'sigil_policy_version_info',
    help: 'The policy in force (value 1): its kind (cedar|allow|none, +dry-run in dry-run mode) and content-hash version.',
    labelNames: ['kind', 'version'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  readonly auditDropped = new Counter({
    name: 'sigil_audit_dropped_total',
    help: 'Audit lines dropped because the audit queue was full or the file unwritable.',
    registers: [this.registry, this.openMetricsRegistry],
  });

  // --- Signed bus (src/bus) ---------------------------------------------------------------

  /**
   * direction: outbound (this agent published) | inbound (arrived for this agent);
   * result: success (sent / delivered) | rejected (refused: policy, bad envelope) | failed
   * (the broker could not take it); reason: a reason code.
   */
  readonly busMessages = new Counter({
    name: 'sigil_bus_messages_total',
    help: 'Bus messages, by direction, result and reason code.',
    labelNames: ['direction', 'result', 'reason'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  // --- Revocation (src/revocation) ----------------------------------------------------------
  readonly revocation = new RevocationMetrics([this.registry, this.openMetricsRegistry]);
  get revocationsApplied(): RevocationMetrics['applied'] {
    return this.revocation.applied;
  }
  get revocationCuts(): RevocationMetrics['cuts'] {
    return this.revocation.cuts;
  }
  setRevocationState(ageSeconds: number | undefined, entries: Record<string, number>): void {
    this.revocation.setState(ageSeconds, entries);
  }

  readonly labelOverflow = new Counter({
    name: 'sigil_metric_label_overflow_total',
    help: 'Observations whose principal label was folded into "other" by the cardinality cap.',
    labelNames: ['label'] as const,
    registers: [this.registry, this.openMetricsRegistry],
  });

  constructor(options: MetricsOptions = {}) {
    const guard = (): PrincipalLabels => new PrincipalLabels(options.principalLabelLimit ?? 100, options.principalPathSegments);
    this.principals = { source_principal: guard(), destination_principal: guard() };
  }

  observeRequest(o: RequestObservation): void {
    const depth = o.chainDepth ?? 0;
    const labels = {
      reporter: o.reporter,
      source_principal: this.principal('source_principal', o.source),
      destination_principal: o.destinationHost ?? this.principal('destination_principal', o.destination),
      request_protocol: o.protocol,
      response_code: String(o.responseCode),
      decision: o.decision,
      reason: o.reason,
      delegated: depth > 0 ? 'true' : 'false',
      chain_depth: depth >= 3 ? '3+' : String(depth),
    };
    this.requests.inc(labels);
    this.requestDuration.observe(labels, o.seconds);
  }

  /** Marks `version` as the one in force (a single series at a time). */
  setPolicyVersion(kind: string, version: string): void {
    this.policyVersion.reset();
    this.policyVersion.set({ kind, version }, 1);
  }

  /**
   * prom-client renames counters in place (drops `_total`) while rendering OpenMetrics, so
   * renderings are serialized and the names restored afterwards; otherwise a concurrent or
   * later Prometheus-text scrape would expose counters without their `_total` suffix.
   */
  exposition(openMetrics = false): Promise<string> {
    const render = (): Promise<string> => (openMetrics ? this.renderOpenMetrics() : this.registry.metrics());
    const result = this.rendering.then(render, render);
    this.rendering = result.catch(() => '');
    return result;
  }

  private rendering: Promise<unknown> = Promise.resolve();

  private async renderOpenMetrics(): Promise<string> {
    try {
      return await this.openMetricsRegistry.metrics();
    } finally {
      for (const metric of this.registry.getMetricsAsArray() as unknown as { type: string; name: string }[]) {
        if (metric.type === 'counter' && !metric.name.endsWith('_total')) metric.name = `${metric.name}_total`;
      }
    }
  }

  contentType(openMetrics = false): string {
    return openMetrics ? Registry.OPENMETRICS_CONTENT_TYPE : Registry.PROMETHEUS_CONTENT_TYPE;
  }

  private principal(label: 'source_principal' | 'destination_principal', id: SpiffeId | undefined): string {
    const { value, folded } = this.principals[label].value(id);
    if (folded) this.labelOverflow.inc({ label });
    return value;
  }
}

function openMetricsRegistry(): Registry<OpenMetricsContentType> {
  const registry = new Registry<OpenMetricsContentType>();
  registry.setContentType(Registry.OPENMETRICS_CONTENT_TYPE);
  return registry;
}

/**
 * The cardinality guard for SPIFFE-ID labels: an optional prefix mapping (first N path
 * segments), then at most `limit` distinct values per process; later ones become "other".
 */
class PrincipalLabels {
  private readonly seen = new Set<string>();

  constructor(
    private readonly limit: number,
    private readonly pathSegments: number | undefined,
  ) {}

  value(id: SpiffeId | undefined): { value: string; folded: boolean } {
    if (!id) return { value: 'unknown', folded: false };
    const value = this.pathSegments === undefined ? id.toString() : `${id.trustDomain.idString()}/${id.segments().slice(0, this.pathSegments).join('/')}`.replace(/\/$/, '');
    if (this.seen.has(value)) return { value, folded: false };
    if (this.seen.size >= this.limit) return { value: 'other', folded: true };
    this.seen.add(value);
    return { value, folded: false };
  }
}

type MetricRegistries = NonNullable<ConstructorParameters<typeof Counter>[0]['registers']>;

/**
 * The kill switch's metrics, shared by the sidecar and the broker. Labels are closed sets
 * (source, result, entry kind, live-work kind); never the revoked value.
 */
export class RevocationMetrics {
  /** source: admin | nats | file; result: applied | lifted | duplicate | rejected | expired. */
  readonly applied: Counter<'source' | 'result'>;
  /** kind: connection | websocket | subscription. */
  readonly cuts: Counter<'kind'>;
  readonly age: Gauge;
  readonly entries: Gauge<'kind'>;

  constructor(registers: MetricRegistries) {
    this.applied = new Counter({
      name: 'sigil_revocations_applied_total',
      help: 'Revocation records and entries processed, by source and result.',
      labelNames: ['source', 'result'] as const,
      registers,
    });
    this.cuts = new Counter({
      name: 'sigil_revocation_cuts_total',
      help: 'Live connections, WebSocket streams and bus subscriptions closed because of a revocation.',
      labelNames: ['kind'] as const,
      registers,
    });
    this.age = new Gauge({
      name: 'sigil_revocation_list_age_seconds',
      help: 'Seconds since every revocation source last confirmed the list is current (0 without sources).',
      registers,
    });
    this.entries = new Gauge({
      name: 'sigil_revocation_entries',
      help: 'Revocation entries in force, by kind.',
      labelNames: ['kind'] as const,
      registers,
    });
  }

  setState(ageSeconds: number | undefined, entries: Record<string, number>): void {
    if (ageSeconds === undefined) this.age.reset();
    else this.age.set(ageSeconds);
    for (const [kind, n] of Object.entries(entries)) this.entries.set({ kind }, n);
  }
}

// --- The token-exchange broker (`sigil broker`, its own admin /metrics) ---------------------
// Label values come from closed sets (OAuth error codes, the broker's reason codes); never a
// user, token id or audience.
export class BrokerMetrics {
  readonly registry = new Registry();

  /** result: issued | refused; error: the OAuth error code ('' when issued); reason: the finer cause. */
  readonly exchanges = new Counter({
    name: 'sigil_broker_exchanges_total',
    help: 'Token-exchange requests answered by the broker, by result, OAuth error and reason.',
    labelNames: ['result', 'error', 'reason'] as const,
    registers: [this.registry],
  });

  readonly exchangeDuration = new Histogram({
    name: 'sigil_broker_exchange_duration_seconds',
    help: 'Time to answer one token-exchange request (verification, policy, signing).',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
    registers: [this.registry],
  });

  /** Depth of the issued token's actor chain. */
  readonly issuedDepth = new Counter({
    name: 'sigil_broker_issued_tokens_total',
    help: 'Delegation tokens issued, by the depth of their actor chain.',
    labelNames: ['chain_depth'] as const,
    registers: [this.registry],
  });

  readonly signingKeys = new Gauge({
    name: 'sigil_broker_signing_keys',
    help: 'Signing keys published in the JWKS.',
    registers: [this.registry],
  });

  readonly keyRotations = new Counter({
    name: 'sigil_broker_signing_key_changes_total',
    help: 'Changes of the published signing keys noticed while running.',
    registers: [this.registry],
  });

  readonly policyReloads = new Counter({
    name: 'sigil_broker_policy_reloads_total',
    help: 'Broker policy reloads, by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  /** 1 for the policy version in force. */
  readonly policyVersion = new Gauge({
    name: 'sigil_broker_policy_info',
    help: 'The broker policy in force (value 1, labelled with its version).',
    labelNames: ['version'] as const,
    registers: [this.registry],
  });

  setPolicyVersion(version: string): void {
    this.policyVersion.reset();
    this.policyVersion.set({ version }, 1);
  }

  readonly revocation = new RevocationMetrics([this.registry]);
}
