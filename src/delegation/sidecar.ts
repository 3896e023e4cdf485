// Builds the sidecar's delegation parts from `delegation` config: the inbound gate (token
// verification against the broker's JWKS) and, when a broker is configured, the exchange client
// for outbound routes. The broker is dialed like a route peer (PeerAgent): mTLS with our SVID,
// its SVID verified per SPIFFE and required to be exactly the configured broker ID.
import type { AuthzRequest, Decision } from '../authz/index.js';
import type { LiveWork } from '../revocation/index.js';
import type { DelegationConfig } from '../config/index.js';
import type { IdentitySnapshot } from '../identity/index.js';
import type { HandshakeObservation } from '../proxy/http-common.js';
import { PeerAgent } from '../proxy/peer-agent.js';
import { SpiffeIdPattern } from '../spiffe/index.js';
import type { PeerVerifier } from '../tls/index.js';
import { ExchangeClient } from './exchange-client.js';
import { DelegationGate } from './gate.js';
import { DelegationVerifier, jwksFromFile } from './index.js';

export interface DelegationDeps {
  identity: () => IdentitySnapshot | undefined;
  verifier: PeerVerifier;
  observeHandshake: (h: HandshakeObservation) => void;
  /** The revocation entry refusing this request, if any (the broker itself may be revoked). */
  revoked?: (request: AuthzRequest) => { kind: string; id: string } | undefined;
  /** Registers connections to the broker so a revocation of it cuts them. */
  live?: (work: LiveWork) => () => void;
  /** The revocation epoch: exchanged tokens are not reused across a revocation. */
  revocationEpoch?: () => number;
  /**
   * A JWT-SVID of this workload for the given audience (the broker's SPIFFE ID), sent as the
   * RFC 8693 actor_token. Present when the identity source can mint one (Workload API).
   */
  actorToken?: (audience: string) => Promise<string>;
  /** UNSAFE, tests of `sigil probe` only: see DelegationVerifierOptions.unsafeSkipActorCheck. */
  unsafeSkipActorCheck?: boolean;
}

export function buildDelegation(config: DelegationConfig, deps: DelegationDeps): { verifier: DelegationVerifier; gate: DelegationGate; exchange?: ExchangeClient } {
  const verifier = new DelegationVerifier({
    issuer: config.issuer,
    keys: jwksFromFile(config.jwks),
    maxDepth: config.maxDepth,
    leewaySeconds: config.leewayMs / 1000,
    ...(deps.unsafeSkipActorCheck ? { unsafeSkipActorCheck: true } : {}),
  });
  const gate = new DelegationGate({ verifier, header: config.header, require: config.require });
  if (!config.broker) return { verifier, gate };
  const url = new URL(config.broker.url);
  const port = Number(url.port || 443);
  const agent = new PeerAgent(
    { host: url.hostname, address: { host: url.hostname, port }, expected: SpiffeIdPattern.parse(config.broker.spiffeId), signFrames: false, key: 'delegation-broker' },
    {
      identity: deps.identity,
      verifier: deps.verifier,
      observeHandshake: deps.observeHandshake,
      // The broker is named in our own config; reaching it is not an agent's egress to police.
      // Only revocation applies: a revoked broker (agent or SVID) is not dialed or used.
      decide: (request) => {
        const revoked = deps.revoked?.(request);
        return revoked ? { ...allow(request), allowed: false, reason: 'revoked', revocation: revoked } : allow(request);
      },
      onRequestBound: () => undefined,
      ...(deps.live ? { live: deps.live } : {}),
    },
  );
  return { verifier, gate, exchange: new ExchangeClient({
      url,
      agent,
      ...(deps.revocationEpoch ? { epoch: deps.revocationEpoch } : {}),
      ...(deps.actorToken ? { actorToken: () => deps.actorToken!(config.broker!.spiffeId) } : {}),
    }),
  };
}

function allow(request: Decision['request']): Decision {
  return { allowed: true, reason: 'allowed', policies: [], wouldDeny: false, policyVersion: 'delegation-broker', request };
}
