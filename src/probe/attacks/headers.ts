// Identity-header spoofing: a verified peer sends its own copies of the headers the target's
// agent trusts (XFCC, x-sigil-peer-id, x-sigil-delegation), in the spellings some upstream
// frameworks fold together (underscores, repeats). The probe's echo upstream reports what the
// agent side received: only the sidecar's own values may arrive.
import { createHash } from 'node:crypto';
import { parseEchoReply, type EchoReply } from '../echo.js';
import { callInbound, describeExchange, identityCredentials } from '../inbound-steps.js';
import type { Attack, Outcome, ProbeContext } from '../types.js';

const XFCC = 'x-forwarded-client-cert';
const PEER_ID = 'x-sigil-peer-id';
const DELEGATION = 'x-sigil-delegation';

function needsEcho(ctx: ProbeContext): string | undefined {
  return ctx.echo ? undefined : "needs --echo-listen, with the target's inbound.upstream pointing at it";
}

/** What the target must set for the probe's own identity. */
function expectedHeaders(ctx: ProbeContext): { xfcc: string; peerId: string } {
  const leafHash = createHash('sha256').update(ctx.identity.chain[0]!.raw).digest('hex');
  return { xfcc: `By=${ctx.targetId};Hash=${leafHash};URI=${ctx.identity.id}`, peerId: ctx.identity.id.toString() };
}

/** Sends a request with `headers` and returns what the echo upstream received. */
async function echoed(ctx: ProbeContext, headers: Record<string, string | string[]>, signal: AbortSignal): Promise<EchoReply> {
  const exchange = await callInbound(ctx, identityCredentials(ctx), { headers }, signal);
  if (exchange.kind !== 'response') throw new Error(`the legitimate identity was refused: ${describeExchange(exchange)}`);
  const reply = parseEchoReply(exchange.body, ctx.echo!.nonce);
  if (!reply) throw new Error(`the response did not come from the probe's echo upstream (${describeExchange(exchange)}): is the target's inbound.upstream the --echo-listen address?`);
  return reply;
}

/** Control: the sidecar sets exactly the verified values (so the echo path and header names are right). */
async function control(ctx: ProbeContext, signal: AbortSignal): Promise<Outcome> {
  const reply = await echoed(ctx, {}, signal);
  const want = expectedHeaders(ctx);
  const got = { xfcc: reply.headers[XFCC], peerId: reply.headers[PEER_ID] };
  const ok = got.xfcc === want.xfcc && got.peerId === want.peerId;
  return { ok, observed: ok ? 'verified identity headers set' : `identity headers not as expected: ${PEER_ID}=${String(got.peerId)}, ${XFCC}=${String(got.xfcc)}` };
}

/** The names, in any spelling, whose values the agent side received. */
function identityHeadersSeen(reply: EchoReply): Record<string, string> {
  const seen: Record<string, string> = {};
  for (const [name, value] of Object.entries(reply.headers)) {
    const normalized = name.toLowerCase().replace(/_/g, '-');
    if (normalized === XFCC || normalized.startsWith('x-sigil-')) seen[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return seen;
}

/** Attack reading: only the sidecar's own headers arrived, with its values, and nothing forged. */
function onlyVerified(ctx: ProbeContext, reply: EchoReply, forgedMarker: string): Outcome {
  const want = expectedHeaders(ctx);
  const seen = identityHeadersSeen(reply);
  const problems: string[] = [];
  for (const [name, value] of Object.entries(seen)) {
    if (value.includes(forgedMarker)) problems.push(`${name} carried the forged value`);
    else if (name === XFCC && value !== want.xfcc) problems.push(`${XFCC} is not exactly the verified value`);
    else if (name === PEER_ID && value !== want.peerId) problems.push(`${PEER_ID} is not the verified ID`);
    else if (name !== XFCC && name !== PEER_ID) problems.push(`${name} reached the agent`);
  }
  if (seen[PEER_ID] === undefined) problems.push(`${PEER_ID} missing`);
  return problems.length === 0 ? { ok: true, observed: 'forged copies removed; verified values only' } : { ok: false, observed: problems.join('; ') };
}

function forgedXfcc(ctx: ProbeContext, marker: string): string {
  return `By=${ctx.targetId};Hash=${marker};URI=${ctx.victim}`;
}

function headerAttack(name: string, title: string, forged: (ctx: ProbeContext, marker: string) => Record<string, string | string[]>, proves: string): Attack {
  return {
    id: `headers.${name}`,
    family: 'headers',
    title,
    expected: 'forged copies never reach the agent',
    proves,
    skip: needsEcho,
    control,
    async attack(ctx, signal) {
      const marker = `forged${ctx.echo!.nonce.slice(0, 8)}`;
      return onlyVerified(ctx, await echoed(ctx, forged(ctx, marker), signal), marker);
    },
  };
}

export function headerAttacks(): Attack[] {
  return [
    headerAttack('forged-xfcc', `forged ${XFCC} naming the victim`, (ctx, m) => ({ [XFCC]: forgedXfcc(ctx, m) }), 'The agent can trust XFCC: a caller cannot make it name another workload or add a second element.'),
    headerAttack('forged-peer-id', `forged ${PEER_ID} naming the victim`, (ctx, m) => ({ [PEER_ID]: `${ctx.victim.toString()}?${m}` }), `The agent can trust ${PEER_ID}: only the verified peer ID arrives.`),
    headerAttack(
      'forged-delegation',
      `forged ${DELEGATION} (no token sent)`,
      (_ctx, m) => ({ [DELEGATION]: JSON.stringify({ sub: `admin-${m}`, actors: [], depth: 0, scope: ['*'] }) }),
      `A caller cannot claim to act for a user: ${DELEGATION} only ever comes from a verified delegation token.`,
    ),
    headerAttack(
      'underscore-variants',
      'identity headers spelled with underscores',
      (ctx, m) => ({ x_forwarded_client_cert: forgedXfcc(ctx, m), x_sigil_peer_id: `${ctx.victim.toString()}?${m}`, x_sigil_delegation: m }),
      'Frameworks that map headers to CGI-style variables (WSGI, Rack, PHP) cannot be fed an identity through an underscore spelling.',
    ),
    headerAttack(
      'repeated-headers',
      'identity headers sent twice, mixed case',
      (ctx, m) => ({ [PEER_ID]: [`${ctx.victim.toString()}?${m}`, `${ctx.victim.toString()}?${m}`], 'X-Sigil-Peer-Id': `${ctx.victim.toString()}?${m}`, [XFCC]: [forgedXfcc(ctx, m), forgedXfcc(ctx, m)] }),
      'Repeats and case variants are removed too: no upstream that joins or picks among duplicates can see a forged value.',
    ),
  ];
}
