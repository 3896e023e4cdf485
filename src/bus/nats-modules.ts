// The NATS client (@nats-io/transport-node, and @nats-io/jetstream for the revocation feed) is
// only used by a sidecar with `bus` or `revocation.nats` configured, so it is loaded on first
// connect rather than at startup.
import { lazyRequire } from '../lazy-require.js';

export const natsTransport = lazyRequire<typeof import('@nats-io/transport-node')>('@nats-io/transport-node');
export const natsJetStream = lazyRequire<typeof import('@nats-io/jetstream')>('@nats-io/jetstream');
