// Signed-bus impersonation: envelopes published straight to NATS by a client holding a
// legitimate SVID of the trust domain (so the broker lets it in, as it would any workload), each
// wrong in exactly one way. The probe listens through the target's local bus API, so "not
// delivered" means the target's agent never saw the message.
//
// Controls. A direct-publish attack's control is an envelope the probe signs correctly with the
// test identity (Sigil's own signer, then re-signed by the probe's JWS builder that the crafted
// attacks use): delivered, it proves the subscription, the broker path and the probe's envelope
// construction, so a refusal of the attack is due to the one thing the attack changed. Attacks
// that claim the victim's identity also publish through the target's local API first when the
// victim is the target: the target's own message arriving proves that messages from the victim
// are deliverable on this subject, so a refusal is not merely the policy on the victim.
import { setTimeout as sleep } from 'node:timers/promises';
import { constants, createPrivateKey, sign as cryptoSign, type KeyObject, type X509Certificate } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { createEnvelopeSigner, type EnvelopeSigner } from '../../bus/envelope/index.js';
import { publishSubjectProblem } from '../../bus/subjects.js';
import { svidFromParts, svidFromPem } from '../../identity/index.js';
import type { SpiffeId } from '../../spiffe/index.js';
import {
  abortable,
  connectNats,
  markedData,
  newMarker,
  publishLocal,
  publishNats,
  subscribeLocal,
  warmUp,
  type BusOptions,
  type LocalSubscription,
} from '../bus-client.js';
import { createLeaf, type Issued } from '../mint.js';
import type { Attack, Outcome, ProbeContext } from '../types.js';

const NEEDS_BUS = 'needs --nats, --bus-local and --bus-subject';
/**
 * A replayed envelope is made this much older than the target's clock leeway: `iat` is whole
 * seconds and the target compares whole seconds, and its clock may lag the probe's a little.
 */
const REPLAY_MARGIN_MS = 2_500;

/** Everything one run shares: one NATS connection, one local subscription. */
interface BusSession {
  bus: BusOptions;
  nc: NatsConnection;
  sub: LocalSubscription;
  /** Sigil's signer for the test identity. */
  signer: EnvelopeSigner;
  /** The test identity's private key (the probe's own JWS builder signs with it). */
  key: KeyObject;
  /** The replay control's envelope, once it was delivered. */
  replayable?: { jws: string; marker: string };
}

const sessions = new WeakMap<ProbeContext, Promise<BusSession>>();

/**
 * Closes the run's NATS connection and local subscription, if the bus attacks opened them.
 * The runner calls it once after the last attack; safe to call when nothing was opened.
 */
export async function closeBus(ctx: ProbeContext): Promise<void> {
  const pending = sessions.get(ctx);
  sessions.delete(ctx);
  if (!pending) return;
  const s = await pending.catch(() => undefined);
  if (!s) return;
  s.sub.close();
  await s.nc.close().catch(() => undefined);
}

function session(ctx: ProbeContext, signal: AbortSignal): Promise<BusSession> {
  let pending = sessions.get(ctx);
  if (!pending) {
    // Not bounded by the first caller's signal: later attacks reuse the session (or its failure).
    pending = openSession(ctx);
    pending.catch(() => undefined);
    sessions.set(ctx, pending);
  }
  return abortable(pending, signal);
}

async function openSession(ctx: ProbeContext): Promise<BusSession> {
  const bus = ctx.bus;
  if (!bus) throw new Error(NEEDS_BUS);
  const problem = publishSubjectProblem(bus.subject);
  if (problem) throw new Error(`--bus-subject ${JSON.stringify(bus.subject)}: ${problem} (the probe publishes on it)`);
  const svid = svidFromPem(ctx.identity.certChainPem, ctx.identity.keyPem, ctx.identity.id.trustDomain);
  const signer = createEnvelopeSigner(svid);
  const key = createPrivateKey(ctx.identity.keyPem);
  const nc = await connectNats(ctx, bus);
  let sub: LocalSubscription;
  try {
    sub = await subscribeLocal(bus.local, bus.subject, ctx.stepTimeoutMs);
  } catch (err) {
    await nc.close().catch(() => undefined);
    throw err;
  }
  const s: BusSession = { bus, nc, sub, signer, key };
  // The target subscribes at the broker asynchronously; until then a control could be lost.
  await warmUp(nc, sub, bus.subject, (marker) => probeEnvelope(s, bus.subject, marker, 'warm-up'));
  return s;
}

// ---- envelopes --------------------------------------------------------------------------------

const b64url = (v: unknown): string => Buffer.from(JSON.stringify(v), 'utf8').toString('base64url');

function decodeSegment(segment: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** A JWS signature over `input` as `alg` prescribes (RFC 7518); empty for `none`. */
function jwsSignature(alg: unknown, input: string, key: KeyObject | undefined): string {
  const data = Buffer.from(input, 'latin1');
  if (alg === 'none' || !key) return '';
  switch (alg) {
    case 'ES256':
      return cryptoSign('sha256', data, { key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
    case 'ES384':
      return cryptoSign('sha384', data, { key, dsaEncoding: 'ieee-p1363' }).toString('base64url');
    case 'PS256':
      return cryptoSign('sha256', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }).toString('base64url');
    case 'RS256':
      return cryptoSign('sha256', data, { key, padding: constants.RSA_PKCS1_PADDING }).toString('base64url');
    default:
      throw new Error(`the probe cannot sign ${String(alg)}`);
  }
}

/**
 * The probe's JWS builder: `jws` with header members and claims replaced, signed again with
 * `key` (no key: no signature). With no changes it yields an equally valid envelope, which is
 * what the controls send, so the builder every crafted attack uses is proven by its control.
 */
function resign(jws: string, key: KeyObject | undefined, change: { header?: Record<string, unknown>; claims?: Record<string, unknown> } = {}): string {
  const [h, p] = jws.split('.');
  const header = { ...decodeSegment(h!), ...change.header };
  const claims = { ...decodeSegment(p!), ...change.claims };
  const input = `${b64url(header)}.${b64url(claims)}`;
  return `${input}.${jwsSignature(header.alg, input, key)}`;
}

/** A correct envelope from the test identity, signed for `signedSubject`. */
function probeEnvelope(s: BusSession, signedSubject: string, marker: string, attackId: string): string {
  return resign(s.signer.sign({ subject: signedSubject, data: markedData(marker, attackId) }).jws, s.key);
}

/** An envelope signed by Sigil's signer with `leaf` (+ `chain`) and its key: well formed in every other way. */
function envelopeFrom(ctx: ProbeContext, leaf: Issued, chain: X509Certificate[], marker: string, attackId: string): string {
  const svid = svidFromParts([leaf.cert, ...chain], leaf.privateKey, ctx.victim.trustDomain);
  return createEnvelopeSigner(svid).sign({ subject: ctx.bus!.subject, data: markedData(marker, attackId) }).jws;
}

// ---- readings ---------------------------------------------------------------------------------

function describe(d: { from: string } | undefined, ms: number): string {
  return d ? `delivered (from ${d.from})` : `not delivered within ${ms} ms`;
}

/** Control reading: the `n`-th delivery of `marker` arrives within the delivery window. */
async function delivered(s: BusSession, marker: string, signal: AbortSignal, n = 1): Promise<Outcome> {
  const ms = s.bus.deliveryWindowMs;
  const d = await s.sub.waitFor(marker, n, ms, signal);
  const hint = !d && s.sub.lastError ? ` (the target said ${s.sub.lastError})` : '';
  return { ok: d !== undefined, observed: describe(d, ms) + hint };
}

/**
 * Attack reading: the `n`-th delivery of `marker` does not arrive. Silence alone proves nothing
 * (a slow target, a stalled subscription), so a correct "trailer" envelope follows the attack:
 * the target handles a subscription's messages in order, so once the trailer is delivered, an
 * attack message that was not has been refused.
 */
async function notDelivered(s: BusSession, marker: string, signal: AbortSignal, n = 1, sub: LocalSubscription = s.sub): Promise<Outcome> {
  const ms = s.bus.deliveryWindowMs;
  const early = await sub.waitFor(marker, n, ms, signal);
  if (early) return { ok: false, observed: describe(early, ms) };
  const trailer = newMarker();
  await publishNats(s.nc, s.bus.subject, probeEnvelope(s, s.bus.subject, trailer, 'trailer'), signal);
  if (!(await sub.waitFor(trailer, 1, ms, signal))) {
    throw new Error(`inconclusive: a correct message sent after the attack was not delivered within ${ms} ms either`);
  }
  const late = sub.count(marker) >= n;
  return late ? { ok: false, observed: 'delivered (after the delivery window)' } : { ok: true, observed: `not delivered (a correct message sent after it was)` };
}

// ---- steps ------------------------------------------------------------------------------------

/** Control (b): a correct envelope from the test identity, straight to NATS, is delivered. */
async function directControl(ctx: ProbeContext, attackId: string, signal: AbortSignal): Promise<Outcome & { jws: string; marker: string }> {
  const s = await session(ctx, signal);
  const marker = newMarker();
  const jws = probeEnvelope(s, s.bus.subject, marker, attackId);
  await publishNats(s.nc, s.bus.subject, jws, signal);
  return { ...(await delivered(s, marker, signal)), jws, marker };
}

/** Control (a): the target's agent publishes through the local API; the target's own message arrives. */
async function localControl(ctx: ProbeContext, attackId: string, signal: AbortSignal): Promise<Outcome> {
  const s = await session(ctx, signal);
  const marker = newMarker();
  const r = await publishLocal(s.bus.local, s.bus.subject, markedData(marker, attackId), signal);
  if (r.status !== 202) {
    return { ok: false, observed: `the target refused its agent's publish on ${s.bus.subject}: HTTP ${r.status}${r.reason ? ` ${r.reason}` : ''} (the target must be allowed bus.publish on the subject)` };
  }
  return delivered(s, marker, signal);
}

/** The control of an attack that claims the victim's identity: (a) when the victim is the target, then (b). */
async function victimControl(ctx: ProbeContext, attackId: string, signal: AbortSignal): Promise<Outcome> {
  const parts: string[] = [];
  if (ctx.victim.equals(ctx.targetId)) {
    const own = await localControl(ctx, attackId, signal);
    if (!own.ok) return { ok: false, observed: `the target's own message: ${own.observed}` };
    parts.push(`the target's own message: ${own.observed}`);
  }
  const direct = await directControl(ctx, attackId, signal);
  parts.push(`probe-signed: ${direct.observed}`);
  return { ok: direct.ok, observed: parts.join('; ') };
}

/** Attack step: publish `build(marker)` straight to NATS; it must not be delivered. */
async function publishAttack(ctx: ProbeContext, signal: AbortSignal, build: (s: BusSession, marker: string) => string | Promise<string>): Promise<Outcome> {
  const s = await session(ctx, signal);
  const marker = newMarker();
  await publishNats(s.nc, s.bus.subject, await build(s, marker), signal);
  return notDelivered(s, marker, signal);
}

// ---- the attacks ------------------------------------------------------------------------------

function needsBus(ctx: ProbeContext): string | undefined {
  return ctx.bus ? undefined : NEEDS_BUS;
}

function needsVictim(ctx: ProbeContext): string | undefined {
  if (!ctx.bus) return NEEDS_BUS;
  return ctx.victim.equals(ctx.identity.id) ? 'the victim is the test identity itself: give --victim another ID' : undefined;
}

type Spec = Omit<Attack, 'family' | 'control' | 'skip'> & {
  /** The attack claims the victim's identity (its control then includes the target's own message). */
  victim?: boolean;
  /** A further input the attack needs (the missing flag), beyond the bus options. */
  needs?: (ctx: ProbeContext) => string | undefined;
  control?: Attack['control'];
};

function busAttack(spec: Spec): Attack {
  const { victim, needs, control, ...rest } = spec;
  const standard: Attack['control'] = victim ? (ctx, signal) => victimControl(ctx, spec.id, signal) : async (ctx, signal) => {
    const c = await directControl(ctx, spec.id, signal);
    return { ok: c.ok, observed: c.observed };
  };
  return {
    ...rest,
    family: 'bus',
    skip: (ctx) => (victim ? needsVictim(ctx) : needsBus(ctx)) ?? needs?.(ctx),
    control: control ?? standard,
  };
}

/** A replay attack's control: a correct envelope is delivered, and kept to be replayed. */
async function replayControl(ctx: ProbeContext, attackId: string, signal: AbortSignal): Promise<Outcome> {
  const c = await directControl(ctx, attackId, signal);
  const s = await session(ctx, signal);
  if (c.ok) s.replayable = { jws: c.jws, marker: c.marker };
  return { ok: c.ok, observed: c.observed };
}

/** The envelope the control delivered (once): there is nothing to replay unless it arrived. */
function takeReplayable(s: BusSession): { jws: string; marker: string } {
  const r = s.replayable;
  if (!r || s.sub.count(r.marker) < 1) throw new Error('the replay control was not delivered, so there is nothing to replay');
  s.replayable = undefined;
  return r;
}

/** The subject with its last token replaced by `*` (`probe.checks` → `probe.*`; `checks` → `*`). */
function wildcardOf(subject: string): string {
  const tokens = subject.split('.');
  tokens[tokens.length - 1] = '*';
  return tokens.join('.');
}

/** A leaf for the victim's ID under `signer` (self-signed without one). */
function victimLeaf(victim: SpiffeId, signer: Issued | undefined): Promise<Issued> {
  return createLeaf(signer, victim.toString());
}

export function busAttacks(): Attack[] {
  return [
    busAttack({
      id: 'bus.forged-envelope',
      title: "envelope signed with a self-signed certificate claiming the victim's ID",
      expected: 'not delivered (signer_untrusted)',
      proves: "The target verifies the envelope's x5c chain against its trust bundle: holding a key and naming the victim is not enough to speak as the victim.",
      victim: true,
      attack: (ctx, signal) => publishAttack(ctx, signal, async (_s, marker) => envelopeFrom(ctx, await victimLeaf(ctx.victim, undefined), [], marker, 'bus.forged-envelope')),
    }),
    busAttack({
      id: 'bus.untrusted-signer',
      title: "envelope signed by a rogue CA of the same trust-domain name, for the victim's ID",
      expected: 'not delivered (signer_untrusted)',
      proves: 'Trust comes from the bundle\'s keys, not from a CA that merely carries the trust domain\'s name.',
      victim: true,
      attack: (ctx, signal) => publishAttack(ctx, signal, async (_s, marker) => envelopeFrom(ctx, await victimLeaf(ctx.victim, ctx.rogue.sameTrustDomainCa), [], marker, 'bus.untrusted-signer')),
    }),
    busAttack({
      id: 'bus.svid-as-ca',
      title: "envelope from a leaf for the victim's ID issued by the test SVID (an SVID used as a CA)",
      expected: 'not delivered (signer_untrusted)',
      proves: 'The chain rules are enforced on envelopes: a workload SVID (cA=false) cannot mint identities, although the chain is cryptographically sound up to a trusted root.',
      victim: true,
      attack: (ctx, signal) => publishAttack(ctx, signal, async (_s, marker) => envelopeFrom(ctx, await victimLeaf(ctx.victim, ctx.identity.asIssuer), ctx.identity.chain, marker, 'bus.svid-as-ca')),
    }),
    busAttack({
      id: 'bus.cross-domain-signer',
      title: "envelope from a leaf for the victim's ID issued by the federated (probe-only) CA",
      expected: 'not delivered (signer_untrusted)',
      proves: "A signer is verified against its own trust domain's bundle only: an authority the target federates with cannot vouch for IDs of another trust domain.",
      victim: true,
      needs: (ctx) => (ctx.federatedCa ? undefined : 'needs --federated-ca (a probe-only trust domain the target federates with)'),
      attack: (ctx, signal) => publishAttack(ctx, signal, async (_s, marker) => envelopeFrom(ctx, await victimLeaf(ctx.victim, ctx.federatedCa), [], marker, 'bus.cross-domain-signer')),
    }),
    busAttack({
      id: 'bus.issuer-mismatch',
      title: "envelope signed with the test identity's real key and chain, but iss = the victim's ID",
      expected: 'not delivered (issuer_mismatch)',
      proves: "The sender is the certificate that signed, never the envelope's own claim: a legitimate workload cannot sign in another's name.",
      victim: true,
      attack: (ctx, signal) => publishAttack(ctx, signal, (s, marker) => resign(probeEnvelope(s, s.bus.subject, marker, 'bus.issuer-mismatch'), s.key, { claims: { iss: ctx.victim.toString() } })),
    }),
    busAttack({
      id: 'bus.tampered-payload',
      title: 'correctly signed envelope whose payload was changed after signing (signature kept)',
      expected: 'not delivered (signature_invalid)',
      proves: 'The signature covers the claims: data altered on the broker or in transit is not delivered.',
      attack: (ctx, signal) =>
        publishAttack(ctx, signal, (s, marker) => {
          const [h, p, sig] = s.signer.sign({ subject: s.bus.subject, data: markedData(newMarker(), 'bus.tampered-payload') }).jws.split('.');
          const claims = { ...decodeSegment(p!), data: markedData(marker, 'bus.tampered-payload') };
          return `${h}.${b64url(claims)}.${sig}`;
        }),
    }),
    busAttack({
      id: 'bus.replay',
      title: "the control's envelope, already delivered, published again",
      expected: 'not delivered a second time (replay)',
      proves: 'The target remembers delivered envelopes (iss, jti) for their lifetime: a recorded message cannot be played again.',
      control: (ctx, signal) => replayControl(ctx, 'bus.replay', signal),
      attack: async (ctx, signal) => {
        const s = await session(ctx, signal);
        const r = takeReplayable(s);
        await publishNats(s.nc, s.bus.subject, r.jws, signal);
        return notDelivered(s, r.marker, signal, 2);
      },
    }),
    busAttack({
      id: 'bus.replay-new-subscription',
      timeoutMs: (ctx) => ctx.stepTimeoutMs + ctx.targetLeewayMs + REPLAY_MARGIN_MS,
      title: "the control's envelope, already delivered, replayed to a subscription the agent opens afterwards",
      expected: 'not delivered to the new subscription (replay)',
      proves: 'Replay protection does not start from zero for a new subscription (another subject pattern, or any subscription after a sidecar restart): a message recorded earlier cannot be played to it.',
      control: (ctx, signal) => replayControl(ctx, 'bus.replay-new-subscription', signal),
      attack: async (ctx, signal) => {
        const s = await session(ctx, signal);
        const r = takeReplayable(s);
        // Envelopes signed within the target's clock leeway (bus.envelope.leeway, default 5 s,
        // --target-leeway) before a subscription existed are tolerated as skew: replay an older one.
        const iat = Number(decodeSegment(r.jws.split('.')[1]!)['iat']);
        await sleep(Math.max(0, iat * 1000 + ctx.targetLeewayMs + REPLAY_MARGIN_MS - Date.now()), undefined, { signal });
        // A pattern that matches the subject but is not it: the target opens a new subscription.
        const pattern = wildcardOf(s.bus.subject);
        const fresh = await subscribeLocal(s.bus.local, pattern, ctx.stepTimeoutMs);
        try {
          // Positive control on the new subscription: a freshly signed envelope reaches it.
          if (!(await warmUp(s.nc, fresh, s.bus.subject, (marker) => probeEnvelope(s, s.bus.subject, marker, 'bus.replay-new-subscription')))) {
            throw new Error(`a new subscription to ${pattern} received no fresh message: cannot tell a replay refusal from a dead subscription`);
          }
          await publishNats(s.nc, s.bus.subject, r.jws, signal);
          return await notDelivered(s, r.marker, signal, 1, fresh);
        } finally {
          fresh.close();
        }
      },
    }),
    busAttack({
      id: 'bus.subject-moved',
      title: 'valid envelope signed for another subject, published on the probe subject',
      expected: 'not delivered (subject_mismatch)',
      proves: 'The signed subject must be the one the message arrived on: a valid message cannot be redirected to another topic.',
      attack: (ctx, signal) => publishAttack(ctx, signal, (s, marker) => probeEnvelope(s, `${s.bus.subject}.sigil-probe-moved`, marker, 'bus.subject-moved')),
    }),
    busAttack({
      id: 'bus.expired-envelope',
      title: 'envelope signed by the test identity with iat 10 min and exp 9 min in the past',
      expected: 'not delivered (envelope_expired)',
      proves: 'Envelopes expire: an old message (e.g. recorded before its sender was revoked) is not delivered.',
      attack: (ctx, signal) =>
        publishAttack(ctx, signal, (s, marker) => {
          const now = Math.floor(Date.now() / 1000);
          return resign(probeEnvelope(s, s.bus.subject, marker, 'bus.expired-envelope'), s.key, { claims: { iat: now - 600, exp: now - 540 } });
        }),
    }),
    busAttack({
      id: 'bus.alg-none',
      title: 'unsigned envelope: alg "none", empty signature, otherwise the test identity\'s',
      expected: 'not delivered (alg_not_allowed)',
      proves: 'The target never accepts an unsigned envelope, whatever the header says.',
      attack: (ctx, signal) => publishAttack(ctx, signal, (s, marker) => resign(probeEnvelope(s, s.bus.subject, marker, 'bus.alg-none'), undefined, { header: { alg: 'none' } })),
    }),
  ];
}
