// The probe's vocabulary: an attack is a named check with a positive control (the same path
// taken with the legitimate test identity, which the target must accept) and the attack itself
// (which the target must reject). A target that rejects everything fails its controls, so it
// can never pass the probe.
import type { X509Certificate } from 'node:crypto';
import type { BundleSet, SpiffeId } from '../spiffe/index.js';
import type { EchoUpstream } from './echo.js';
import type { Issued } from './mint.js';

export type Family = 'tls' | 'headers' | 'delegation' | 'bus' | 'revocation';

/**
 * pass: control accepted, attack rejected. fail: the attack was accepted (the target is
 * vulnerable). error: the control was not accepted, or a step failed or timed out, so nothing
 * can be concluded (counts as a failure: an unproven target is not a passing one). skip: the
 * inputs this attack needs were not given.
 */
export type Verdict = 'pass' | 'fail' | 'error' | 'skip';

/**
 * What one step saw. For a control, `ok` means the target accepted the legitimate request; for
 * an attack, `ok` means the target rejected it. `observed` is one short line for the table
 * ("handshake refused: alert 42 bad certificate", "403 policy_denied", "delivered").
 */
export interface Outcome {
  ok: boolean;
  observed: string;
}

export interface Attack {
  /** Stable id, `<family>.<name>` (report keys, JUnit test names, --only filters). */
  id: string;
  family: Family;
  /** One line: what is tried ("self-signed certificate claiming the victim's ID"). */
  title: string;
  /** What a correct target does ("handshake refused"). */
  expected: string;
  /** What a rejection proves about the target, one or two sentences (report and docs). */
  proves: string;
  /** Why the attack cannot run with these inputs (names the missing flag), or undefined. */
  skip?(ctx: ProbeContext): string | undefined;
  /** The attack step's own bound when it must wait longer than a step (e.g. for a token to expire). */
  timeoutMs?(ctx: ProbeContext): number;
  /** The positive control, run immediately before the attack. */
  control(ctx: ProbeContext, signal: AbortSignal): Promise<Outcome>;
  attack(ctx: ProbeContext, signal: AbortSignal): Promise<Outcome>;
}

/**
 * Thrown by a control or attack that finds, once running, that it cannot be attempted here (the
 * broker's tokens outlive the allowed wait, the local TLS library cannot offer TLS 1.0): the
 * verdict is `skip` with this message, never a pass.
 */
export class AttackSkipped extends Error {
  override readonly name = 'AttackSkipped';
}

export interface AttackResult {
  id: string;
  family: Family;
  title: string;
  expected: string;
  verdict: Verdict;
  /** What the attack step saw (or why it did not run). */
  observed: string;
  /** What the control saw. */
  control?: string;
  durationMs: number;
}

/** The legitimate test identity: an SVID the target trusts, used only for positive controls. */
export interface ProbeIdentity {
  id: SpiffeId;
  /** Leaf first, then intermediates. */
  chain: X509Certificate[];
  certChainPem: string;
  keyPem: string;
  /** The same SVID as a signer, to mint children a verifier must refuse (SVID used as a CA). */
  asIssuer: Issued;
}

/** Where the target is and what it should present. */
export interface ProbeTarget {
  host: string;
  port: number;
  /** The SPIFFE ID the target must present (when given, any other is refused by the probe). */
  expectedId?: SpiffeId;
}

export interface ProbeOptions {
  target: ProbeTarget;
  /** The target's trust domain (the test identity's) and every bundle the probe trusts. */
  bundles: BundleSet;
  identity: ProbeIdentity;
  /** The SPIFFE ID the attacks impersonate (default: the target's own ID). */
  victimId?: SpiffeId;
  /**
   * A CA of a probe-only trust domain that the target federates with (its bundle is in the
   * target's trust.bundles). With it the leaf-rule and cross-domain attacks are signed by an
   * authority the target trusts, so a refusal proves the SPIFFE rule, not merely an unknown CA.
   */
  federatedCa?: Issued;
  /** A local echo upstream the target's inbound.upstream points at (header and stream checks). */
  echo?: EchoUpstream;
  /** Request path for controls and attacks over inbound (default `/`). */
  path: string;
  delegation?: {
    /** The broker's token endpoint (https; the probe dials it with the test identity). */
    brokerUrl: URL;
    /** The broker's SPIFFE ID: its SVID must be exactly this before the subject token is sent. */
    brokerId: SpiffeId;
    /** A test user's access token the broker accepts as subject_token. Never printed. */
    subjectToken: string;
    /** The header the target reads `Bearer <token>` from (its delegation.header; default authorization). */
    header: string;
    /** Scope to ask for (default: none, i.e. the subject token's). */
    scope?: string[];
    /** Another agent's SPIFFE ID, for the wrong-audience attack. */
    otherAudience: SpiffeId;
    /** How long the probe may wait for an exchanged token to expire (0: skip that attack). */
    expiryWaitMs: number;
    /** The broker's public keys (JWKS), for the HS256 key-confusion attack. */
    jwks?: { keys: Array<Record<string, unknown>> };
  };
  bus?: {
    /** NATS URLs (tls://...); the probe connects with the test identity. */
    servers: string[];
    /** The target sidecar's local bus API (http://127.0.0.1:15002), to publish and subscribe as its agent. */
    local: URL;
    /** The subject the probe publishes and listens on. */
    subject: string;
    /** PEM of the NATS server's CA, when it is not in the bundles. */
    natsCa?: string;
    /** How long a message has to arrive before it counts as not delivered. */
    deliveryWindowMs: number;
  };
  admin?: {
    url: URL;
    /** Bearer token for the admin API (admin.tokenFile). Never printed. */
    token?: string;
  };
  /** Bound on each control and each attack. */
  stepTimeoutMs: number;
  /**
   * The clock leeway the target tolerates (its delegation.leeway and bus.envelope.leeway; Sigil's
   * default 5 s): the expiry and replay attacks wait past it.
   */
  targetLeewayMs: number;
}

/** What every attack gets: the options plus what the probe learned and made on the way. */
export interface ProbeContext extends ProbeOptions {
  /** The target's verified SPIFFE ID (from a control handshake). */
  targetId: SpiffeId;
  /** Its SVID's key type (`ec`, `rsa`, ...), for attacks that depend on it. */
  targetKeyType?: string;
  /** victimId ?? targetId. */
  victim: SpiffeId;
  /** Rogue material minted once per run and shared between attacks (never trusted by anyone). */
  rogue: RogueAuthorities;
  /** A progress line (stderr). */
  progress(line: string): void;
}

export interface RogueAuthorities {
  /** A self-made CA that claims the target's trust domain name. */
  sameTrustDomainCa: Issued;
  /** A self-made CA of a trust domain nobody trusts. */
  otherTrustDomainCa: Issued;
  otherTrustDomain: string;
}
