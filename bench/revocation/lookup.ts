// Part 1: the cost of the revocation check on the hot path, by the size of the list.
//
// One process, one `Revocations` (src/revocation/service.ts) per list size, filled through
// RevocationSet.add with a mix of entries (see `fill`). Every row times one lookup on a pool
// of distinct requests (so a large map is not always hit at the same, cached slot), in batches
// of BATCH back-to-back calls (one hrtime pair per batch); ns/op = batch time ÷ BATCH; the
// median and p99 are over batches. All lists of a row take turns in alternating rounds. The
// 0-entry list is the baseline: it returns on `size === 0` before any lookup. Besides the
// sizes asked for, each row also runs on "1 + patterns" (its one entry and the agent patterns
// every large list holds), which separates the cost of the patterns (a scan per agent lookup)
// from the cost of the number of entries (map lookups).
import { randomBytes, randomUUID } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { PerformanceObserver } from 'node:perf_hooks';
import { runInNewContext } from 'node:vm';
import { CedarAuthorizer, compileCedarPolicy, type AuthzRequest, type DelegationContext } from '../../src/authz/index.js';
import { Revocations, svidKeys, type RevocationEntry, type RevocationKind } from '../../src/revocation/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';
import { silentLogger } from '../../src/telemetry/index.js';
import { benchCedarPolicy, benchRequests } from '../authz.js';
import { TD, fmt, machineLine, printTable, summarize } from '../lib.js';

export interface LookupOptions {
  sizes: number[];
  /** Measured seconds per (row, size), split over `rounds`. */
  seconds: number;
  rounds: number;
}

const BATCH = 256;
/** Distinct not-revoked requests per row. */
const POOL = 1024;
/** Distinct revoked requests per row (the revoking entries are in every list of ≥ 2 entries). */
const REVOKED_POOL = 256;
const PATTERNS = [
  `spiffe://${TD.name}/quarantine/*`,
  `spiffe://${TD.name}/team-7/agent/*`,
  `spiffe://${TD.name}/legacy/**`,
  `spiffe://${TD.name}/agent/canary/*`,
  `spiffe://${TD.name}/ci/*/runner`,
];
const SERVER = SpiffeId.parse(`spiffe://${TD.name}/agent/server`);
/** The row's one entry plus the agent patterns (its "size" in the tables). */
const ONE_PLUS_PATTERNS = -1;

const agentId = (k: number): string => `spiffe://${TD.name}/agent/client-${k}`;
const revokedAgent = (k: number): string => `spiffe://${TD.name}/agent/revoked-${k}`;
const revokedUser = (k: number): string => `revoked-user-${k}@bench.example`;

/** Values the revoked rows look up; in every list of ≥ 2 entries. */
interface Known {
  agents: string[];
  users: string[];
  serials: string[];
}

/**
 * Random hex from one pool (randomBytes per entry is slow on a busy VM), as flat strings: entries
 * received from NATS or a file have the flat strings JSON.parse makes. (Not randomUUID(): on
 * Node 20 it returns a rope of ~20 concatenated pieces, ≈490 B of heap per id.)
 */
class Hex {
  private buf = Buffer.alloc(0);
  private at = 0;
  next(bytes: number): string {
    if (this.at + bytes > this.buf.length) {
      this.buf = randomBytes(1 << 20);
      this.at = 0;
    }
    const s = this.buf.toString('hex', this.at, this.at + bytes);
    this.at += bytes;
    return s;
  }
  /** A positive, minimally encoded 16-byte serial in lower-case hex (the normalized form). */
  serial(): string {
    const h = this.next(16);
    return ((parseInt(h[0]!, 16) & 0x7) | 0x1).toString(16) + h.slice(1);
  }
  uuid(): string {
    const h = this.next(16);
    return Buffer.from(`${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20)}`, 'latin1').toString('latin1');
  }
}
const hex = new Hex();

function entry(kind: RevocationKind, value: string, now: number, expiresAt?: number): RevocationEntry {
  const e: RevocationEntry = { id: hex.uuid(), kind, value, reason: 'bench', revokedBy: 'bench', revokedAt: now };
  if (expiresAt !== undefined) e.expiresAt = expiresAt;
  return e;
}

/**
 * A list of `n` entries: 5 agent patterns, then (of the rest) 60% SVID serials, 10% SVID
 * fingerprints, 10% tasks, 8% users, 8% exact agents, 4% tokens. The first REVOKED_POOL agents,
 * users and serials are the `known` ones. SVID entries expire with their SVID (in an hour).
 */
function fill(r: Revocations, n: number, known: Known): void {
  const now = Date.now();
  const add = (e: RevocationEntry): void => {
    if (r.set.add(e, now) !== 'added') throw new Error(`entry not added: ${e.kind} ${e.value}`);
  };
  for (const p of PATTERNS) add(entry('agent', p, now));
  const rest = n - PATTERNS.length;
  const counts: [RevocationKind | 'fingerprint', number][] = [
    ['agent', Math.round(rest * 0.08)],
    ['user', Math.round(rest * 0.08)],
    ['task', Math.round(rest * 0.1)],
    ['token', Math.round(rest * 0.04)],
    ['fingerprint', Math.round(rest * 0.1)],
  ];
  const others = counts.reduce((s, [, c]) => s + c, 0);
  counts.push(['svid', rest - others]);
  const expires = now + 3600_000;
  for (const [kind, count] of counts) {
    for (let i = 0; i < count; i++) {
      switch (kind) {
        case 'agent':
          add(entry('agent', i < known.agents.length ? known.agents[i]! : `spiffe://${TD.name}/agent/gone-${i}`, now));
          break;
        case 'user':
          add(entry('user', i < known.users.length ? known.users[i]! : `user-${i}@bench.example`, now));
          break;
        case 'task':
          add(entry('task', `task-${hex.uuid()}`, now));
          break;
        case 'token':
          add(entry('token', hex.uuid(), now));
          break;
        case 'fingerprint':
          add(entry('svid', `sha256:${hex.next(32)}`, now, expires));
          break;
        default:
          add(entry('svid', `serial:${i < known.serials.length ? known.serials[i]! : hex.serial()}`, now, expires));
      }
    }
  }
  if (r.set.size !== n) throw new Error(`list has ${r.set.size} entries, expected ${n}`);
  if (known.agents.length > counts[0]![1] || known.users.length > counts[1]![1] || known.serials.length > counts[5]![1]) {
    throw new Error(`a list of ${n} entries is too small for ${REVOKED_POOL} revoked requests per row`);
  }
}

function newRevocations(): Revocations {
  return new Revocations(
    { syncIntervalMs: 1_000, leewayMs: 5_000, maxRecordBytes: 1 << 20 },
    {
      identity: () => undefined,
      authorize: () => {
        throw new Error('not used');
      },
      auditRejection: () => {},
      logger: silentLogger,
      name: 'bench',
    },
  );
}

function fullGc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

interface Row {
  name: string;
  revoked: boolean;
  /** The lookup on request i of the pool; returns the entry found, if any. */
  run: (r: Revocations, i: number) => RevocationEntry | undefined;
  poolSize: (listSize: number) => number;
  /** A list of exactly one entry for this row: the one that revokes its revoked requests. */
  one: Revocations;
  /** The same entry plus the agent patterns. */
  onePlus: Revocations;
  cells: Map<number, number[]>;
}

export async function runLookupBench(o: LookupOptions): Promise<void> {
  // Requests. Not revoked: 1024 distinct callers, each with its own delegation chain and SVID.
  const clients = Array.from({ length: POOL }, (_, k) => SpiffeId.parse(agentId(k)));
  const revoked = Array.from({ length: REVOKED_POOL }, (_, k) => SpiffeId.parse(revokedAgent(k)));
  const known: Known = {
    agents: revoked.map((id) => id.toString()),
    users: Array.from({ length: REVOKED_POOL }, (_, k) => revokedUser(k)),
    serials: Array.from({ length: REVOKED_POOL }, () => hex.serial()),
  };
  const http = (principal: SpiffeId, delegation?: DelegationContext): AuthzRequest => ({
    action: 'http',
    direction: 'inbound',
    principal,
    peer: principal,
    resource: { type: 'Agent', id: SERVER },
    http: { method: 'GET', path: '/tickets/42', host: 'server' },
    ...(delegation ? { delegation } : {}),
  });
  const chain = (k: number, user: string): DelegationContext => ({
    sub: user,
    actors: [agentId(k), `spiffe://${TD.name}/agent/orchestrator-${k % 16}`],
    depth: 2,
    scope: ['tickets:read'],
    task: `task-ok-${k}`,
    jti: `jti-ok-${k}-${randomUUID()}`,
  });
  const plainOk = clients.map((c) => http(c));
  const plainRevoked = revoked.map((c) => http(c));
  const delegatedOk = clients.map((c, k) => http(c, chain(k, `user-ok-${k}@bench.example`)));
  const delegatedRevoked = clients.slice(0, REVOKED_POOL).map((c, k) => http(c, chain(k, known.users[k]!)));
  // Peer SVIDs as the peer verifier passes them: the serial in upper case (X509Certificate),
  // the SHA-256 of the leaf in lower-case hex.
  const fp = (): string => randomBytes(32).toString('hex');
  const svidOk = Array.from({ length: POOL }, () => ({ serial: hex.serial().toUpperCase(), fingerprint: fp() }));
  const svidRevoked = known.serials.map((s) => ({ serial: s.toUpperCase(), fingerprint: fp() }));
  const keysOk = svidOk.map((s) => svidKeys(s.serial, s.fingerprint));
  const keysRevoked = svidRevoked.map((s) => svidKeys(s.serial, s.fingerprint));

  // Lists: one per size (0 and ≥ 2 shared by every row), and per row a 1-entry list holding
  // exactly the entry its revoked requests hit.
  const now = Date.now();
  const oneOf = (kind: RevocationKind, value: string, expiresAt?: number): [Revocations, Revocations] =>
    [false, true].map((patterns) => {
      const r = newRevocations();
      r.set.add(entry(kind, value, now, expiresAt), now);
      if (patterns) for (const p of PATTERNS) r.set.add(entry('agent', p, now), now);
      return r;
    }) as [Revocations, Revocations];
  // "1 + patterns" separates what the patterns cost from what the number of entries costs.
  const sizes = o.sizes.some((n) => n > 1) ? [...o.sizes.filter((n) => n <= 1), ONE_PLUS_PATTERNS, ...o.sizes.filter((n) => n > 1)] : o.sizes;
  const lists = new Map<number, Revocations>();
  const built: string[] = [];
  for (const n of sizes) {
    if (n === 1 || n === ONE_PLUS_PATTERNS) continue;
    fullGc();
    const heap0 = process.memoryUsage().heapUsed;
    const t0 = process.hrtime.bigint();
    const r = newRevocations();
    if (n > 1) fill(r, n, known);
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    fullGc();
    const heap = process.memoryUsage().heapUsed - heap0;
    lists.set(n, r);
    if (n >= 10_000) built.push(`${n} entries in ${fmt(secs, 2)} s, heap +${fmt(heap / 2 ** 20)} MiB (≈${fmt(heap / n)} B/entry)`);
  }
  const firstSerial = known.serials[0]!;
  const row = (name: string, isRevoked: boolean, [one, onePlus]: [Revocations, Revocations], size: number, run: Row['run']): Row => ({
    name,
    revoked: isRevoked,
    run,
    one,
    onePlus,
    poolSize: (listSize) => (isRevoked && (listSize === 1 || listSize === ONE_PLUS_PATTERNS) ? 1 : size),
    cells: new Map(),
  });
  const oneAgent = oneOf('agent', known.agents[0]!);
  const oneUser = oneOf('user', known.users[0]!);
  const oneSvid = oneOf('svid', `serial:${firstSerial}`, now + 3600_000);
  const rows: Row[] = [
    row('Revocations.check, http call', false, oneAgent, POOL, (r, i) => r.check(plainOk[i]!)),
    row('Revocations.check, http call', true, oneAgent, REVOKED_POOL, (r, i) => r.check(plainRevoked[i]!)),
    row('Revocations.check, delegated call', false, oneUser, POOL, (r, i) => r.check(delegatedOk[i]!)),
    row('Revocations.check, delegated call', true, oneUser, REVOKED_POOL, (r, i) => r.check(delegatedRevoked[i]!)),
    row('Revocations.svid(serial, sha256)', false, oneSvid, POOL, (r, i) => r.svid(svidOk[i]!.serial, svidOk[i]!.fingerprint)),
    row('Revocations.svid(serial, sha256)', true, oneSvid, REVOKED_POOL, (r, i) => r.svid(svidRevoked[i]!.serial, svidRevoked[i]!.fingerprint)),
    row('RevocationSet.agent(id)', false, oneAgent, POOL, (r, i) => r.set.agent(clients[i]!, now)),
    row('RevocationSet.agent(id)', true, oneAgent, REVOKED_POOL, (r, i) => r.set.agent(revoked[i]!, now)),
    row('RevocationSet.svid(keys)', false, oneSvid, POOL, (r, i) => r.set.svid(keysOk[i]!, now)),
    row('RevocationSet.svid(keys)', true, oneSvid, REVOKED_POOL, (r, i) => r.set.svid(keysRevoked[i]!, now)),
    row('RevocationSet.delegation(chain)', false, oneUser, POOL, (r, i) => r.set.delegation(delegatedOk[i]!.delegation!, now)),
    row('RevocationSet.delegation(chain)', true, oneUser, REVOKED_POOL, (r, i) => r.set.delegation(delegatedRevoked[i]!.delegation!, now)),
  ];
  const listFor = (r: Row, n: number): Revocations => (n === 1 ? r.one : n === ONE_PLUS_PATTERNS ? r.onePlus : lists.get(n)!);

  // Sanity: every row finds an entry exactly when it should, on every request of its pool.
  for (const r of rows) {
    for (const n of sizes) {
      const list = listFor(r, n);
      const want = r.revoked && n !== 0;
      for (let i = 0; i < r.poolSize(n); i++) {
        if ((r.run(list, i) !== undefined) !== want) throw new Error(`${r.name} (${r.revoked ? 'revoked' : 'not revoked'}) on ${n} entries: wrong answer for request ${i}`);
      }
    }
  }

  process.stdout.write(
    `\n## revocation (1/3): lookup cost on the hot path by list size (0 entries = baseline)\n${machineLine()}\n` +
      `lists: ${o.sizes.join(', ')} entries; ≥ 2 entries = ${PATTERNS.length} agent patterns + 60% SVID serials, 10% SVID fingerprints, 10% tasks, 8% users, 8% agents, 4% tokens; ` +
      `1 entry = just the entry that revokes the row's revoked requests; "1 + patterns" = that entry and the ${PATTERNS.length} agent patterns (same trust domain, none matching)\n` +
      `requests: ${POOL} distinct not-revoked, ${REVOKED_POOL} distinct revoked (1 on the 1-entry lists), cycled; ` +
      `${fmt(o.seconds, 2)} s per row and size in ${o.rounds} alternating rounds, batches of ${BATCH}\n` +
      (built.length > 0 ? `built: ${built.join('; ')}\n` : ''),
  );

  let sink = 0;
  const slice = (r: Row, n: number, seconds: number, record: boolean): void => {
    const list = listFor(r, n);
    const size = r.poolSize(n);
    const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
    const out = r.cells.get(n) ?? [];
    r.cells.set(n, out);
    let i = 0;
    for (;;) {
      const t0 = process.hrtime.bigint();
      for (let k = 0; k < BATCH; k++) {
        if (r.run(list, i) !== undefined) sink++;
        if (++i === size) i = 0;
      }
      const t1 = process.hrtime.bigint();
      if (record) out.push(Number(t1 - t0) / BATCH);
      if (t1 >= deadline) break;
    }
  };
  fullGc();
  for (const r of rows) for (const n of sizes) slice(r, n, 0.02, false);
  // GC pauses while measuring (they are what the p99 columns mostly show).
  const gcPauses: number[] = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcPauses.push(e.duration);
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  for (let round = 0; round < o.rounds; round++) {
    const order = round % 2 === 0 ? sizes : [...sizes].reverse();
    for (const r of rows) for (const n of order) slice(r, n, o.seconds / o.rounds, true);
    await new Promise((resolve) => setImmediate(resolve));
  }
  await new Promise((resolve) => setImmediate(resolve));
  gcObserver.disconnect();
  if (sink < 0) throw new Error('unreachable');

  const label = (n: number): string => (n === ONE_PLUS_PATTERNS ? `1 + ${PATTERNS.length} patterns` : n.toLocaleString('en-US').replaceAll(',', ' '));
  const base = sizes[0]!;
  const ratioCols: [number, number][] = sizes.slice(1).map((n) => [n, base]);
  const big = sizes[sizes.length - 1]!;
  if (big > 1 && sizes.includes(ONE_PLUS_PATTERNS)) ratioCols.push([big, ONE_PLUS_PATTERNS]);
  const mid = sizes.filter((n) => n >= 2 && n !== big).pop();
  if (mid !== undefined) ratioCols.push([big, mid]);
  const table = (stat: 'median' | 'p99'): void => {
    const rowsOut = rows.map((r) => {
      const s = new Map(sizes.map((n) => [n, summarize(r.cells.get(n)!)[stat]]));
      return [
        r.name,
        r.revoked ? 'revoked' : 'not revoked',
        ...sizes.map((n) => fmt(s.get(n)!, 1)),
        ...ratioCols.map(([a, b]) => `${fmt(s.get(a)! / s.get(b)!, 2)}x`),
      ];
    });
    printTable(
      ['lookup', 'request', ...sizes.map((n) => `${label(n)}${n === base ? ' (baseline)' : ''} ns/op`), ...ratioCols.map(([a, b]) => `${label(a)} vs ${label(b)}`)],
      rowsOut,
    );
  };
  process.stdout.write(`### ${'median'} ns/op over batches\n`);
  table('median');
  process.stdout.write(`### p99 ns/op over batches\n`);
  table('p99');
  const gc = summarize(gcPauses);
  const heapMiB = process.memoryUsage().heapUsed / 2 ** 20;
  process.stdout.write(
    `GC while measuring (heap ${fmt(heapMiB)} MiB with all lists live): ${gcPauses.length} pauses, total ${fmt(gcPauses.reduce((a, b) => a + b, 0))} ms, ` +
      `median ${fmt(gc.median, 2)} ms, max ${fmt(Math.max(0, ...gcPauses), 1)} ms; a batch that contains a pause shows up in the p99 column of whichever list was running\n`,
  );

  // For scale: one Cedar decision with the authz bench's 100-rule policy, cached (repeating
  // traffic) and uncached (what a miss costs; also every decision right after the revocation
  // epoch moves, since that drops the decision cache).
  const cedar = cedarReference();
  const checkBig = summarize(rows[0]!.cells.get(big)!).median;
  const checkDelegatedBig = summarize(rows[2]!.cells.get(big)!).median;
  process.stdout.write(
    `for scale, one Cedar decision (100 rules, bench/authz.ts policy, same process): cached ${fmt(cedar.hitUs * 1000)} ns, uncached ${fmt(cedar.missUs, 1)} µs; ` +
      `Revocations.check on ${label(big)} entries (not revoked): http call ${fmt(checkBig, 1)} ns = ${fmt((checkBig * 100) / (cedar.hitUs * 1000), 1)}% of a cached decision, ` +
      `${fmt((checkBig * 100) / (cedar.missUs * 1000), 3)}% of an uncached one; delegated call ${fmt(checkDelegatedBig, 1)} ns = ${fmt((checkDelegatedBig * 100) / (cedar.hitUs * 1000), 1)}% of a cached decision\n`,
  );
  lists.clear();
  fullGc();
}

function cedarReference(): { hitUs: number; missUs: number } {
  const compiled = compileCedarPolicy(benchCedarPolicy(), 'bench-100-rules.cedar');
  const authz = new CedarAuthorizer(compiled);
  const requests = benchRequests();
  let sink = 0;
  for (let pass = 0; pass < 3; pass++) for (const r of requests) sink += authz.authorize(r).allowed ? 1 : 0;
  const batches: number[] = [];
  for (let b = 0; b < 400; b++) {
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < 64; k++) sink += authz.authorize(requests[(b * 64 + k) % requests.length]!).allowed ? 1 : 0;
    batches.push(Number(process.hrtime.bigint() - t0) / 1000 / 64);
  }
  const misses: number[] = [];
  for (let k = 0; k < 300; k++) {
    authz.dropCachedDecisions();
    const t0 = process.hrtime.bigint();
    sink += authz.authorize(requests[k % requests.length]!).allowed ? 1 : 0;
    misses.push(Number(process.hrtime.bigint() - t0) / 1000);
  }
  if (sink < 0) throw new Error('unreachable');
  return { hitUs: summarize(batches).median, missUs: summarize(misses.slice(20)).median };
}
