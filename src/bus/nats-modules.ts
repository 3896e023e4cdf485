// The NATS client (@nats-io/transport-node, and @nats-io/jetstream for the revocation feed) is
// only used by a sidecar with `bus` or `revocation.nats` configured, so it is loaded on first
// connect rather than at startup (≈7 MB of resident memory otherwise; both are CommonJS, so
// the load is synchronous).
import { createRequire } from 'node:module';

type NatsTransport = typeof import('@nats-io/transport-node');
type NatsJetStream = typeof import('@nats-io/jetstream');

const load = createRequire(import.meta.url);
let transport: NatsTransport | undefined;
let jetStream: NatsJetStream | undefined;

export function natsTransport(): NatsTransport {
  transport ??= load('@nats-io/transport-node') as NatsTransport;
  return transport;
}

export function natsJetStream(): NatsJetStream {
  jetStream ??= load('@nats-io/jetstream') as NatsJetStream;
  return jetStream;
}
