// The kill switch, exercised end to end on the target (needs its admin API): revoke the probe's
// own test SVID (by fingerprint, so nothing else is touched, with a short expiry so it lapses by
// itself if the probe dies), check that a new connection is refused and that an open stream is
// cut, then lift the revocation and check the identity works again.
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { STREAM_PATH } from '../echo.js';
import { callInbound, describeExchange, identityCredentials, legitimateRequest, refusedAtHandshake } from '../inbound-steps.js';
import type { Attack, Outcome, ProbeContext } from '../types.js';

/** The revocation lapses by itself after this long, should the probe never lift it. */
const REVOCATION_TTL_MS = 5 * 60_000;
const CUT_WINDOW_MS = 3_000;
const RESTORE_WINDOW_MS = 5_000;
const LIFT_TIMEOUT_MS = 4_000;
const PROBE_BY = 'sigil-probe';

interface AdminAnswer {
  status: number;
  body: Record<string, unknown>;
}

async function admin(ctx: ProbeContext, method: 'POST' | 'DELETE', path: string, body: unknown, signal: AbortSignal, query: Record<string, string> = {}): Promise<AdminAnswer> {
  const url = new URL(ctx.admin!.url.href);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}${path}`;
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  const headers: Record<string, string> = { accept: 'application/json' };
  if (ctx.admin!.token !== undefined) headers['authorization'] = `Bearer ${ctx.admin!.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(url, { method, headers, redirect: 'error', signal, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (typeof parsed !== 'object' || parsed === null) throw new Error(`the admin API at ${url.origin} answered ${res.status} without JSON: is --admin a Sigil admin listener?`);
  return { status: res.status, body: parsed as Record<string, unknown> };
}

/** Opens the echo upstream's endless stream through the target and waits for its first chunk. */
async function openStream(ctx: ProbeContext, signal: AbortSignal): Promise<IncomingMessage> {
  const exchange = await callInbound(ctx, identityCredentials(ctx), { path: STREAM_PATH, stream: true }, signal);
  if (exchange.kind !== 'response' || exchange.status !== 200 || !exchange.response) throw new Error(`could not open a stream through the target: ${describeExchange(exchange)}`);
  const response = exchange.response;
  await new Promise<void>((resolve, reject) => {
    response.once('data', () => resolve());
    response.once('error', reject);
    response.once('close', () => reject(new Error('the stream closed before its first chunk')));
  });
  return response;
}

/** Resolves true when the stream ends or breaks within `ms`; false at `ms` or on abort. */
function cutWithin(response: IncomingMessage, ms: number, signal: AbortSignal): Promise<boolean> {
  if (response.destroyed || response.complete) return Promise.resolve(true);
  return new Promise((resolve) => {
    const settle = (cut: boolean): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
      resolve(cut);
    };
    const onAbort = (): void => settle(false);
    const timer = setTimeout(() => settle(false), ms);
    signal.addEventListener('abort', onAbort, { once: true });
    response.once('close', () => settle(true));
    response.once('end', () => settle(true));
    response.once('error', () => settle(true));
  });
}

/**
 * Lifts every revocation of the test SVID this probe made (by value and `by`): used when the
 * revoke's answer was lost, so an entry the target did apply is never left behind.
 */
async function liftLeftovers(ctx: ProbeContext, value: string): Promise<void> {
  const url = new URL(ctx.admin!.url.href);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/revocations`;
  const headers: Record<string, string> = { accept: 'application/json', ...(ctx.admin!.token === undefined ? {} : { authorization: `Bearer ${ctx.admin!.token}` }) };
  const res = await fetch(url, { headers, redirect: 'error', signal: AbortSignal.timeout(LIFT_TIMEOUT_MS) });
  const list = ((await res.json()) as { revocations?: Array<{ id?: unknown; value?: unknown; revokedBy?: unknown }> }).revocations ?? [];
  for (const entry of list) {
    if (entry.value === value && entry.revokedBy === PROBE_BY && typeof entry.id === 'string') {
      await admin(ctx, 'DELETE', `/v1/revocations/${encodeURIComponent(entry.id)}`, undefined, AbortSignal.timeout(LIFT_TIMEOUT_MS), { by: PROBE_BY });
    }
  }
}

async function restored(ctx: ProbeContext, signal: AbortSignal): Promise<Outcome> {
  const until = Date.now() + RESTORE_WINDOW_MS;
  let last: Outcome;
  do {
    last = await legitimateRequest(ctx, signal);
    if (last.ok) return last;
    await new Promise((r) => setTimeout(r, 200));
  } while (Date.now() < until);
  return last;
}

export function revocationAttacks(): Attack[] {
  return [
    {
      id: 'revocation.revoked-svid',
      family: 'revocation',
      title: "the test SVID revoked on the target's admin API",
      expected: 'new connections refused; open stream cut; works again once lifted',
      proves: 'The kill switch takes effect at once on this target: a revoked SVID cannot connect, and what it already had open is cut, not left to run out.',
      skip: (ctx) => (ctx.admin ? undefined : 'needs --admin (the target sidecar admin API)'),
      timeoutMs: (ctx) => ctx.stepTimeoutMs + CUT_WINDOW_MS + RESTORE_WINDOW_MS,
      async control(ctx, signal) {
        const plain = await legitimateRequest(ctx, signal);
        if (!plain.ok || !ctx.echo) return plain;
        const stream = await openStream(ctx, signal);
        stream.destroy();
        return { ok: true, observed: `${plain.observed}; stream open` };
      },
      async attack(ctx, signal) {
        const stream = ctx.echo ? await openStream(ctx, signal) : undefined;
        const value = `sha256:${createHash('sha256').update(ctx.identity.chain[0]!.raw).digest('hex')}`;
        const expiresAt = new Date(Date.now() + REVOCATION_TTL_MS).toISOString();
        // Its own bound: an answer lost to the step's timeout must not hide an applied revocation.
        const revoked = await admin(ctx, 'POST', '/v1/revocations', { kind: 'svid', value, reason: 'sigil probe: revocation check', by: PROBE_BY, expiresAt }, AbortSignal.timeout(LIFT_TIMEOUT_MS)).catch(
          async (err: Error) => {
            stream?.destroy();
            await liftLeftovers(ctx, value).catch(() => undefined);
            throw new Error(`the revocation request failed (${err.message}); any entry it made was lifted`);
          },
        );
        const id = (revoked.body['revocation'] as { id?: unknown } | undefined)?.id;
        if (revoked.status !== 201 || typeof id !== 'string') {
          stream?.destroy();
          throw new Error(`the admin API refused the revocation (HTTP ${revoked.status} ${String(revoked.body['error'] ?? '')})`);
        }
        const observed: string[] = [];
        let ok = true;
        try {
          const refused = refusedAtHandshake(await callInbound(ctx, identityCredentials(ctx), {}, signal));
          ok &&= refused.ok;
          observed.push(refused.ok ? `new connection ${refused.observed}` : `new connection ${refused.observed}`);
          if (stream) {
            const cut = await cutWithin(stream, CUT_WINDOW_MS, signal);
            ok &&= cut;
            observed.push(cut ? 'open stream cut' : `open stream still running after ${CUT_WINDOW_MS} ms`);
          }
        } finally {
          stream?.destroy();
          // Its own bound, not the step's: the lift must happen even when the step timed out.
          const lifted = await admin(ctx, 'DELETE', `/v1/revocations/${encodeURIComponent(id)}`, undefined, AbortSignal.timeout(LIFT_TIMEOUT_MS), { by: PROBE_BY }).catch((err: Error) => ({ status: 0, body: { error: err.message } }));
          if (lifted.status !== 200) {
            // Loud: the test identity stays revoked until the entry lapses.
            throw new Error(`could not lift revocation ${id} (HTTP ${lifted.status}); it lapses at ${expiresAt}`);
          }
        }
        const back = await restored(ctx, signal);
        if (!back.ok) throw new Error(`${observed.join('; ')}; but the identity was still refused after the lift: ${back.observed}`);
        observed.push('lifted');
        return { ok, observed: observed.join('; ') };
      },
    },
  ];
}
