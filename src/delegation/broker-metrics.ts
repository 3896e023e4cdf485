// The broker's metrics (`sigil broker`, admin /metrics). Label values come from closed sets
// (OAuth error codes, the broker's reason codes); never a user, token id or audience.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

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
}
