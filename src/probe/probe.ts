// One probe run: learn who the target is (a handshake with the legitimate identity, the
// target's SVID verified), mint the rogue authorities, run the selected attacks in order and
// build the report. The revocation check runs last: it briefly revokes the test identity.
import { randomBytes } from 'node:crypto';
import { busAttacks, closeBus } from './attacks/bus.js';
import { delegationAttacks } from './attacks/delegation.js';
import { headerAttacks } from './attacks/headers.js';
import { revocationAttacks } from './attacks/revocation.js';
import { tlsAttacks } from './attacks/tls.js';
import { describeExchange, isDenial } from './inbound-steps.js';
import { inboundRequest } from './client.js';
import { createCa } from './mint.js';
import { REPORT_VERSION, type ProbeReport } from './report.js';
import { runAttacks, summarize, type RunHooks } from './runner.js';
import type { Attack, ProbeContext, ProbeOptions, RogueAuthorities } from './types.js';

/** Every attack, in the order they run. */
export function allAttacks(): Attack[] {
  return [...tlsAttacks(), ...headerAttacks(), ...delegationAttacks(), ...busAttacks(), ...revocationAttacks()];
}

/**
 * The attacks `only` selects: each entry is a family (`tls`) or an attack id (`tls.no-client-cert`).
 * An entry that selects nothing is an error, so a typo never silently shrinks the battery.
 */
export function selectAttacks(attacks: Attack[], only: string[] | undefined): Attack[] {
  if (!only || only.length === 0) return attacks;
  for (const entry of only) {
    if (!attacks.some((a) => a.family === entry || a.id === entry)) {
      throw new ProbeInputError(`--only ${entry}: no such family or attack (families: ${[...new Set(attacks.map((a) => a.family))].join(', ')})`);
    }
  }
  return attacks.filter((a) => only.includes(a.family) || only.includes(a.id));
}

export class ProbeInputError extends Error {
  readonly code = 'probe_input';
}

/** The target could not be established (unreachable, not verified, refuses the test identity). */
export class ProbeTargetError extends Error {
  readonly code = 'probe_target';
}

async function mintRogues(targetTrustDomain: string): Promise<RogueAuthorities> {
  const otherTrustDomain = `rogue-${randomBytes(3).toString('hex')}.invalid`;
  const [sameTrustDomainCa, otherTrustDomainCa] = await Promise.all([createCa({ trustDomain: targetTrustDomain, role: 'Rogue CA' }), createCa({ trustDomain: otherTrustDomain, role: 'Rogue CA' })]);
  return { sameTrustDomainCa, otherTrustDomainCa, otherTrustDomain };
}

/** Reaches the target once with the legitimate identity and builds the shared context. */
export async function prepareProbe(options: ProbeOptions, progress: (line: string) => void): Promise<ProbeContext> {
  const signal = AbortSignal.timeout(options.stepTimeoutMs);
  let targetId;
  let targetKeyType: string | undefined;
  try {
    const first = await inboundRequest({
      target: options.target,
      bundles: options.bundles,
      credentials: { certChainPem: options.identity.certChainPem, keyPem: options.identity.keyPem },
      request: { path: options.path },
      signal,
    });
    if (first.kind === 'refused' || isDenial(first)) {
      // Every control would fail: say why once instead of reporting an ERROR per attack.
      throw new ProbeTargetError(
        `the target refused the legitimate test identity ${options.identity.id} (${describeExchange(first)}): is --cert an SVID the target trusts, allowed by its policy to connect and call ${options.path}, and not revoked?`,
      );
    }
    targetId = first.serverId;
    targetKeyType = first.serverKeyType;
  } catch (err) {
    if (err instanceof ProbeTargetError) throw err;
    throw new ProbeTargetError(`cannot establish the target: ${(err as Error).message}`);
  }
  const rogue = await mintRogues(targetId.trustDomain.name);
  return { ...options, targetId, ...(targetKeyType === undefined ? {} : { targetKeyType }), victim: options.victimId ?? targetId, rogue, progress };
}

/** Runs `attacks` against a prepared context; always releases what the attacks opened. */
export async function runProbe(ctx: ProbeContext, attacks: Attack[], hooks: RunHooks = {}, warnings: string[] = []): Promise<ProbeReport> {
  const startedAt = new Date().toISOString();
  let results;
  try {
    results = await runAttacks(ctx, attacks, hooks);
  } finally {
    await closeBus(ctx);
  }
  return {
    version: REPORT_VERSION,
    tool: 'sigil probe',
    target: { address: `${ctx.target.host}:${ctx.target.port}`, spiffeId: ctx.targetId.toString() },
    identity: ctx.identity.id.toString(),
    victim: ctx.victim.toString(),
    startedAt,
    finishedAt: new Date().toISOString(),
    summary: summarize(results),
    warnings,
    results,
  };
}
