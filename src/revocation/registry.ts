// The live registry: every open connection, WebSocket stream and bus subscription, indexed by
// what a revocation can name (peer SPIFFE ID, SVID, delegation task / user / token / actors).
// Applying a revocation looks up the new entry's value in the index and closes each match —
// no scan over all live work, except for agent patterns and trust domains, which cannot be a
// map key and are matched against every handle.
import type { DelegationContext } from '../authz/index.js';
import type { SpiffeId } from '../spiffe/index.js';
import type { RevocationEntry, RevocationKind } from './entry.js';
import type { RevocationSet } from './set.js';

export type LiveKind = 'connection' | 'websocket' | 'subscription';

export interface LiveWork {
  kind: LiveKind;
  /** The agents it involves: the peer and our own agent (a local bus subscription: ours). */
  agents: readonly SpiffeId[];
  /** The other end's SVID keys (svidKeys()), when it presented one. */
  svid?: readonly [string, string];
  /** The delegation the work runs under, when it has one. */
  delegation?: DelegationContext;
  /** Closes it (HTTP: destroy the socket; WebSocket: close 1008; subscription: cancel). */
  close(entry: RevocationEntry): void;
}

type Index = Map<string, Set<LiveWork>>;

export class LiveRegistry {
  /** Live work and how to remove it from every index. */
  private readonly all = new Map<LiveWork, () => void>();
  private readonly index = new Map<RevocationKind, Index>();

  constructor() {
    for (const kind of ['svid', 'agent', 'task', 'token', 'user'] as const) this.index.set(kind, new Map());
  }

  get size(): number {
    return this.all.size;
  }

  /** Adds live work; returns its removal (call it when the work ends). */
  register(work: LiveWork): () => void {
    const keys = keysOf(work);
    for (const [kind, value] of keys) add(this.index.get(kind)!, value, work);
    const unregister = (): void => {
      if (!this.all.delete(work)) return;
      for (const [kind, value] of keys) remove(this.index.get(kind)!, value, work);
    };
    this.all.set(work, unregister);
    return unregister;
  }

  /**
   * Closes every live work the new entry revokes (re-checked against the set, so an entry that
   * has meanwhile been lifted or expired closes nothing). Returns how many were closed per kind.
   */
  cut(entry: RevocationEntry, set: RevocationSet, now: number): Record<LiveKind, number> {
    const closed = { connection: 0, websocket: 0, subscription: 0 };
    const candidates = this.candidates(entry);
    for (const work of candidates) {
      const hit = revokedBy(work, set, now);
      if (!hit) continue;
      // Out of every index now: a second entry matching it before its owner unregisters it
      // (on the socket's close) must not close or count it again.
      this.all.get(work)?.();
      closed[work.kind]++;
      try {
        work.close(hit);
      } catch {
        // A close that throws (socket already gone) has nothing left to close.
      }
    }
    return closed;
  }

  /**
   * Closes all live work, whoever it belongs to: this sidecar's own identity is gone (withdrawn
   * by its source), so nothing it carries may continue. `cause` is what the closers report.
   */
  closeAll(cause: RevocationEntry): Record<LiveKind, number> {
    const closed = { connection: 0, websocket: 0, subscription: 0 };
    for (const [work, unregister] of [...this.all]) {
      unregister();
      closed[work.kind]++;
      try {
        work.close(cause);
      } catch {
        // Already gone.
      }
    }
    return closed;
  }

  private candidates(entry: RevocationEntry): LiveWork[] {
    if (entry.kind === 'trust_domain' || (entry.kind === 'agent' && entry.value.includes('*'))) return [...this.all.keys()];
    return [...(this.index.get(entry.kind)?.get(entry.value) ?? [])];
  }
}

/** The entry that revokes this work now, if any. */
export function revokedBy(work: LiveWork, set: RevocationSet, now: number): RevocationEntry | undefined {
  for (const agent of work.agents) {
    const hit = set.agent(agent, now);
    if (hit) return hit;
  }
  return (
    (work.svid ? set.svid(work.svid, now) : undefined) ??
    (work.delegation ? set.delegation(work.delegation, now) : undefined)
  );
}

function keysOf(work: LiveWork): [RevocationKind, string][] {
  const keys: [RevocationKind, string][] = work.agents.map((a) => ['agent', a.toString()]);
  if (work.svid) keys.push(['svid', work.svid[0]], ['svid', work.svid[1]]);
  const d = work.delegation;
  if (d) {
    keys.push(['task', d.task], ['user', d.sub]);
    if (d.jti !== undefined) keys.push(['token', d.jti]);
    for (const actor of d.actors) keys.push(['agent', actor]);
  }
  return keys;
}

function add(index: Index, value: string, work: LiveWork): void {
  const set = index.get(value);
  if (set) set.add(work);
  else index.set(value, new Set([work]));
}

function remove(index: Index, value: string, work: LiveWork): void {
  const set = index.get(value);
  if (!set) return;
  set.delete(work);
  if (set.size === 0) index.delete(value);
}
