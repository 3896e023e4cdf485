// The probe's two ends of the bus: a NATS connection of its own (authenticated with the test
// identity, as any workload of the trust domain could be) to publish envelopes straight to the
// broker, and a subscription through the target's local bus API, so the probe sees exactly what
// the target's agent would be delivered. One of each per run, shared by every bus attack and
// closed by closeBus. Messages are told apart by a marker in their data, never by timing, so
// other traffic on the subject is never taken for the probe's.
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import WebSocket from 'ws';
import { ProbeStepError } from './client.js';
import type { ProbeContext } from './types.js';

export type BusOptions = NonNullable<ProbeContext['bus']>;

/** The data member every probe message carries; its value is the message's unique marker. */
export const MARKER_FIELD = 'sigilProbe';

/** The local subscription's id (the probe holds only this one). */
const SUBSCRIPTION_ID = 'sigil-probe';

/** Bound on a warm-up: until the target's broker subscription is known to be in place. */
const WARM_UP_MS = 5_000;
const WARM_UP_INTERVAL_MS = 150;

/** One message frame as the target's local API delivered it. */
export interface Delivered {
  from: string;
  jti: string;
  data: unknown;
}

export function newMarker(): string {
  return `probe-${randomBytes(12).toString('base64url')}`;
}

/** The data of a probe message: the marker, and the attack it belongs to (for anyone else watching the subject). */
export function markedData(marker: string, attackId: string): Record<string, string> {
  return { [MARKER_FIELD]: marker, attack: attackId };
}

function markerOf(data: unknown): string | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const m = (data as Record<string, unknown>)[MARKER_FIELD];
  return typeof m === 'string' ? m : undefined;
}

/** `path` under the local API's base URL (which may itself have a path prefix). */
export function localUrl(local: URL, path: string, protocol?: 'ws'): URL {
  const url = new URL(local.href);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}${path}`;
  url.search = '';
  if (protocol === 'ws') url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url;
}

/** Rejects when `signal` aborts; resolves or rejects with `p` otherwise. */
export function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new ProbeStepError('aborted', 'aborted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new ProbeStepError('aborted', 'aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}

/**
 * What the probe's subscription at the target received, by marker. A message can arrive more
 * than once (that is what the replay attack looks for), so every delivery is kept.
 */
export class LocalSubscription {
  private readonly deliveries = new Map<string, Delivered[]>();
  private readonly waiters = new Set<() => void>();
  private closedBecause: string | undefined;
  /** The last `error` frame the target sent (e.g. a client closed for falling behind). */
  lastError: string | undefined;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (raw: Buffer, isBinary: boolean) => {
      if (!isBinary) this.onFrame(raw.toString('utf8'));
    });
    ws.on('close', (code: number, reason: Buffer) => {
      this.closedBecause = `the target closed the local bus subscription (${code}${reason.length ? ` ${reason.toString()}` : ''})`;
      this.notify();
    });
  }

  /** Deliveries of `marker` so far. */
  count(marker: string): number {
    return this.deliveries.get(marker)?.length ?? 0;
  }

  /**
   * The `n`-th delivery of `marker` (1-based) once it arrives within `ms`, or undefined. Throws
   * when the subscription closes first: then "not delivered" would prove nothing.
   */
  async waitFor(marker: string, n: number, ms: number, signal: AbortSignal): Promise<Delivered | undefined> {
    const deadline = Date.now() + ms;
    for (;;) {
      const got = this.deliveries.get(marker);
      if (got && got.length >= n) return got[n - 1];
      if (this.closedBecause) throw new ProbeStepError('unreachable', this.closedBecause);
      if (signal.aborted) throw new ProbeStepError('aborted', 'aborted');
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      await this.nextEvent(left, signal);
    }
  }

  close(): void {
    this.ws.close(1000, 'probe done');
  }

  private nextEvent(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      this.waiters.add(done);
    });
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  private onFrame(text: string): void {
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    if (frame.op === 'error') this.lastError = `${String(frame.reason)}: ${String(frame.message)}`;
    if (frame.op !== 'message' || frame.id !== SUBSCRIPTION_ID) return;
    const marker = markerOf(frame.data);
    if (marker === undefined) return; // someone else's traffic on the subject
    const list = this.deliveries.get(marker) ?? [];
    list.push({ from: String(frame.from), jti: String(frame.jti), data: frame.data });
    this.deliveries.set(marker, list);
    this.notify();
  }
}

/** Opens `/bus` on the target's local API and subscribes to `subject`; resolves once subscribed. */
export function subscribeLocal(local: URL, subject: string, timeoutMs: number): Promise<LocalSubscription> {
  const url = localUrl(local, '/bus', 'ws');
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: timeoutMs });
    const fail = (message: string): void => {
      clearTimeout(timer);
      ws.terminate();
      reject(new ProbeStepError('unreachable', message));
    };
    const timer = setTimeout(() => fail(`no answer to the subscription from ${url.href} within ${timeoutMs} ms`), timeoutMs);
    ws.on('error', (err: Error) => fail(`the target's local bus API at ${url.href} is unreachable: ${err.message}`));
    ws.once('unexpected-response', (_req, res) => fail(`${url.href} refused the WebSocket (HTTP ${res.statusCode}): is --bus-local the target's bus.local address?`));
    ws.once('open', () => {
      const sub = new LocalSubscription(ws);
      ws.on('message', function onAck(raw: Buffer) {
        let frame: Record<string, unknown>;
        try {
          frame = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
        } catch {
          return;
        }
        if (frame.id !== SUBSCRIPTION_ID) return;
        ws.off('message', onAck);
        if (frame.op === 'subscribed') {
          clearTimeout(timer);
          resolve(sub);
        } else {
          fail(`the target refused the subscription to ${subject}: ${String(frame.reason)} ${String(frame.message ?? '')}`.trim());
        }
      });
      ws.send(JSON.stringify({ op: 'subscribe', id: SUBSCRIPTION_ID, subject }));
    });
  });
}

/** Publishes through the target's local API, as its agent would; returns the HTTP status and reason. */
export async function publishLocal(local: URL, subject: string, data: unknown, signal: AbortSignal): Promise<{ status: number; reason?: string }> {
  const res = await fetch(localUrl(local, '/bus/publish'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ subject, data }),
    redirect: 'error',
    signal,
  });
  const text = await res.text();
  let reason: string | undefined;
  try {
    const body = JSON.parse(text) as { reason?: unknown };
    if (typeof body.reason === 'string') reason = body.reason;
  } catch {
    // not JSON: the status says enough
  }
  return { status: res.status, ...(reason === undefined ? {} : { reason }) };
}

/** The probe's NATS connection: the test identity as client certificate, the server verified. */
export async function connectNats(ctx: ProbeContext, bus: BusOptions): Promise<NatsConnection> {
  const ca = bus.natsCa ?? ctx.bundles.allAuthorities().map((c) => c.toString()).join('\n');
  try {
    return await connect({
      servers: bus.servers,
      name: `sigil probe ${ctx.identity.id.toString()}`,
      tls: { cert: ctx.identity.certChainPem, key: ctx.identity.keyPem, ca },
      timeout: ctx.stepTimeoutMs,
      // A broken connection fails the running step instead of silently queueing its publishes.
      reconnect: false,
      ignoreClusterUpdates: true,
    });
  } catch (err) {
    throw new ProbeStepError('unreachable', `cannot connect to NATS (${bus.servers.join(', ')}) with the test identity: ${(err as Error).message}`);
  }
}

/** Publishes `payload` on `subject` and waits until the broker has it, so a delivery window starts after it. */
export async function publishNats(nc: NatsConnection, subject: string, payload: string, signal: AbortSignal): Promise<void> {
  nc.publish(subject, payload);
  await abortable(nc.flush(), signal);
}

/**
 * Publishes fresh envelopes (from `makeEnvelope`, each with a new marker) until one is delivered
 * to `sub`, so the target's broker subscription is known to be in place before any control
 * counts. Best effort: a target that delivers nothing shows it in the controls, with a reason.
 */
export async function warmUp(nc: NatsConnection, sub: LocalSubscription, subject: string, makeEnvelope: (marker: string) => string): Promise<boolean> {
  const deadline = Date.now() + WARM_UP_MS;
  const signal = AbortSignal.timeout(WARM_UP_MS);
  const markers: string[] = [];
  while (Date.now() < deadline) {
    const marker = newMarker();
    markers.push(marker);
    try {
      await publishNats(nc, subject, makeEnvelope(marker), signal);
      await sub.waitFor(marker, 1, WARM_UP_INTERVAL_MS, signal);
    } catch {
      return false;
    }
    if (markers.some((m) => sub.count(m) > 0)) return true;
  }
  return false;
}
