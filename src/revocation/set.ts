// The revocation set: every entry in force, indexed for O(1) lookups on the hot path, and an
// epoch that changes with every change of the set. Pure: time is a parameter.
//
// Exact values (an SVID, an agent ID, a trust domain, a task, a token id, a user) are map
// lookups. Agent *patterns* (`spiffe://td/agent/*`) are the one thing that cannot be a map key;
// they are kept in a short list scanned per lookup, which stays flat with the number of exact
// entries (operators revoke a fleet by pattern rarely; docs/revocation.md says so).
//
// Lifting is terminal: a lifted id is remembered (a tombstone), so a record that revokes it
// again — a replay of the original revoke — is ignored. Revoking the same thing again makes a
// new entry with a new id.
import { SpiffeId, SpiffeIdPattern } from '../spiffe/index.js';
import type { DelegationContext } from '../authz/index.js';
import type { RevocationEntry, RevocationKind } from './entry.js';

export type AddOutcome = 'added' | 'duplicate' | 'lifted_before' | 'expired';
export type LiftOutcome = 'lifted' | 'unknown';

export class RevocationSet {
  private readonly byId = new Map<string, RevocationEntry>();
  /** kind → value → entries with that value (usually one). */
  private readonly exact = new Map<RevocationKind, Map<string, RevocationEntry[]>>();
  private patterns: { pattern: SpiffeIdPattern; entry: RevocationEntry }[] = [];
  /** Lifted ids, with the kind the lift named (undefined: not known). */
  private readonly lifted = new Map<string, RevocationKind | undefined>();
  private epochValue = 0;
  /**
   * Agent answers by ID string, for the current contents (cleared on every change). Agents
   * repeat on every call; without it each lookup parses actor IDs and scans every pattern. A
   * remembered hit is re-checked for expiry; a remembered miss (the time it was computed) holds
   * for any later time until the set changes — entries only stop applying as time passes.
   */
  private agentMemo = new Map<string, RevocationEntry | number>();

  constructor() {
    for (const kind of ['svid', 'agent', 'task', 'token', 'user', 'trust_domain'] as const) this.exact.set(kind, new Map());
  }

  private changed(): void {
    this.epochValue++;
    this.agentMemo = new Map();
  }

  /** Changes with every addition, lift and expiry. Caches key on it. */
  get epoch(): number {
    return this.epochValue;
  }

  get size(): number {
    return this.byId.size;
  }

  add(entry: RevocationEntry, now: number): AddOutcome {
    // A lift naming another kind did not lift this entry (a signer may only lift some kinds).
    if (this.lifted.has(entry.id)) {
      const kind = this.lifted.get(entry.id);
      if (kind === undefined || kind === entry.kind) return 'lifted_before';
    }
    if (this.byId.has(entry.id)) return 'duplicate';
    if (entry.expiresAt !== undefined && entry.expiresAt <= now) return 'expired';
    this.byId.set(entry.id, entry);
    if (entry.kind === 'agent' && entry.value.includes('*')) {
      this.patterns = [...this.patterns, { pattern: SpiffeIdPattern.parse(entry.value), entry }];
    } else {
      const values = this.exact.get(entry.kind)!;
      const list = values.get(entry.value);
      if (list) list.push(entry);
      else values.set(entry.value, [entry]);
    }
    this.changed();
    return 'added';
  }

  /**
   * Lifts an entry; the id stays known as lifted even when it was never seen here. With `kind`,
   * the lift only applies to an entry of that kind (also one that arrives later).
   */
  lift(id: string, kind?: RevocationKind): { outcome: LiftOutcome; entry?: RevocationEntry } {
    const entry = this.byId.get(id);
    if (kind !== undefined && entry && entry.kind !== kind) return { outcome: 'unknown' };
    // The first lift's kind is kept (records are write-once; a later one cannot re-aim it).
    if (!this.lifted.has(id)) this.lifted.set(id, kind);
    else if (entry) this.lifted.set(id, entry.kind);
    if (!entry) return { outcome: 'unknown' };
    this.remove(entry);
    this.changed();
    return { outcome: 'lifted', entry };
  }

  /**
   * Removes an entry without remembering it as lifted (a file source dropping a line: the same
   * line may come back). Returns whether it was there.
   */
  withdraw(id: string): boolean {
    const entry = this.byId.get(id);
    if (!entry) return false;
    this.remove(entry);
    this.changed();
    return true;
  }

  isLifted(id: string): boolean {
    return this.lifted.has(id);
  }

  /** Removes entries past their expiry; returns them. */
  prune(now: number): RevocationEntry[] {
    const gone: RevocationEntry[] = [];
    for (const entry of this.byId.values()) {
      if (entry.expiresAt !== undefined && entry.expiresAt <= now) gone.push(entry);
    }
    for (const entry of gone) this.remove(entry);
    if (gone.length > 0) this.changed();
    return gone;
  }

  get(id: string): RevocationEntry | undefined {
    return this.byId.get(id);
  }

  entries(): RevocationEntry[] {
    return [...this.byId.values()];
  }

  countsByKind(): Record<RevocationKind, number> {
    const counts = { svid: 0, agent: 0, task: 0, token: 0, user: 0, trust_domain: 0 };
    for (const entry of this.byId.values()) counts[entry.kind]++;
    return counts;
  }

  // ---- lookups (hot path) --------------------------------------------------------------------

  /** The entry revoking this agent: by exact ID, by pattern, or by its trust domain. */
  agent(id: SpiffeId, now: number): RevocationEntry | undefined {
    if (this.byId.size === 0) return undefined;
    const key = id.toString();
    const memo = this.agentMemo.get(key);
    if (typeof memo === 'number' ? now >= memo : memo !== undefined && live(memo, now)) return typeof memo === 'number' ? undefined : memo;
    return this.remember(key, this.agentUncached(id, key, now), now);
  }

  /** An agent named by string (delegation actors): unparsable IDs are not revoked by ID. */
  agentByName(id: string, now: number): RevocationEntry | undefined {
    if (this.byId.size === 0) return undefined;
    const memo = this.agentMemo.get(id);
    if (typeof memo === 'number' ? now >= memo : memo !== undefined && live(memo, now)) return typeof memo === 'number' ? undefined : memo;
    let parsed: SpiffeId;
    try {
      parsed = SpiffeId.parse(id);
    } catch {
      return this.remember(id, this.lookup('agent', id, now), now);
    }
    return this.remember(id, this.agentUncached(parsed, id, now), now);
  }

  private agentUncached(id: SpiffeId, key: string, now: number): RevocationEntry | undefined {
    const hit = this.lookup('agent', key, now) ?? this.lookup('trust_domain', id.trustDomain.name, now);
    if (hit) return hit;
    for (const p of this.patterns) if (p.pattern.matches(id) && live(p.entry, now)) return p.entry;
    return undefined;
  }

  private remember(key: string, entry: RevocationEntry | undefined, now: number): RevocationEntry | undefined {
    if (this.agentMemo.size >= AGENT_MEMO_LIMIT) this.agentMemo = new Map();
    this.agentMemo.set(key, entry ?? now);
    return entry;
  }

  /** An SVID by its normalized keys (see svidKeys): serial and SHA-256 fingerprint. */
  svid(keys: readonly [string, string], now: number): RevocationEntry | undefined {
    if (this.byId.size === 0) return undefined;
    return this.lookup('svid', keys[0], now) ?? this.lookup('svid', keys[1], now);
  }

  /** A delegation chain: its task, its token, its user, or any agent acting in it. */
  delegation(d: DelegationContext, now: number): RevocationEntry | undefined {
    if (this.byId.size === 0) return undefined;
    const hit =
      this.lookup('task', d.task, now) ?? this.lookup('user', d.sub, now) ?? (d.jti === undefined ? undefined : this.lookup('token', d.jti, now));
    if (hit) return hit;
    for (const actor of d.actors) {
      const a = this.agentByName(actor, now);
      if (a) return a;
    }
    return undefined;
  }

  /** Task, user and token by value (the broker asks before minting). */
  byValue(kind: 'task' | 'user' | 'token', value: string, now: number): RevocationEntry | undefined {
    if (this.byId.size === 0) return undefined;
    return this.lookup(kind, value, now);
  }

  private lookup(kind: RevocationKind, value: string, now: number): RevocationEntry | undefined {
    const list = this.exact.get(kind)!.get(value);
    if (!list) return undefined;
    for (const entry of list) if (live(entry, now)) return entry;
    return undefined;
  }

  private remove(entry: RevocationEntry): void {
    this.byId.delete(entry.id);
    if (entry.kind === 'agent' && entry.value.includes('*')) {
      this.patterns = this.patterns.filter((p) => p.entry !== entry);
      return;
    }
    const values = this.exact.get(entry.kind)!;
    const list = values.get(entry.value)?.filter((e) => e !== entry);
    if (list && list.length > 0) values.set(entry.value, list);
    else values.delete(entry.value);
  }
}

const AGENT_MEMO_LIMIT = 50_000;

function live(entry: RevocationEntry, now: number): boolean {
  return entry.expiresAt === undefined || entry.expiresAt > now;
}
