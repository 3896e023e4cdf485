// Every Sigil metric is defined here, in one place, so names, labels and their bounded value
// sets can be reviewed together (docs/metrics.md mirrors this file). Label values are always
// from closed sets (actions, reason codes, results) — never a raw user id, token id or path.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class SigilMetrics {
  readonly registry = new Registry();

  /** decision: allow | deny | would_deny (dry-run: allowed through, but the policy denied it). */
  readonly authzDecisions = new Counter({
    name: 'sigil_authz_decisions_total',
    help: 'Authorization decisions, by action, outcome and reason code.',
    labelNames: ['action', 'decision', 'reason'] as const,
    registers: [this.registry],
  });

  readonly authzEvaluation = new Histogram({
    name: 'sigil_authz_evaluation_seconds',
    help: 'Time to evaluate one authorization request against the policy in force.',
    buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01],
    registers: [this.registry],
  });

  readonly policyReloads = new Counter({
    name: 'sigil_policy_reloads_total',
    help: 'Policy reload attempts (file change or POST /v1/policy/reload), by result.',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly policyVersion = new Gauge({
    name: 'sigil_policy_version_info',
    help: 'The policy in force (value 1): its kind (cedar|allow|none) and content-hash version.',
    labelNames: ['kind', 'version'] as const,
    registers: [this.registry],
  });

  /** Marks `version` as the one in force (a single series at a time). */
  setPolicyVersion(kind: string, version: string): void {
    this.policyVersion.reset();
    this.policyVersion.set({ kind, version }, 1);
  }

  exposition(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
