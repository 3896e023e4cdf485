// The live registry: a revocation closes exactly the live work it names, through the index
// (agent IDs, SVID keys, delegation task / user / token / actors) or through the scan (agent
// patterns, trust domains), and nothing else.
import t from 'tap';
import type { DelegationContext } from '../../src/authz/index.js';
import {
  LiveRegistry,
  RevocationSet,
  parseRevocationEntry,
  revokedBy,
  svidKeys,
  type LiveKind,
  type LiveWork,
  type RevocationEntry,
} from '../../src/revocation/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const NOW = Date.parse('2030-06-01T12:00:00.000Z');
const SELF = 'spiffe://example.org/agent/self';

let seq = 0;
function entry(kind: string, value: string, over: Record<string, unknown> = {}): RevocationEntry {
  return parseRevocationEntry({ kind, value, ...over }, { id: `reg-entry-${String(++seq).padStart(5, '0')}`, revokedBy: 'test', now: NOW });
}

interface Probe extends LiveWork {
  name: string;
  closedWith: RevocationEntry[];
}

function work(name: string, o: { kind?: LiveKind; peer?: string; svid?: readonly [string, string]; delegation?: DelegationContext; throws?: boolean } = {}): Probe {
  const closedWith: RevocationEntry[] = [];
  const w: Probe = {
    name,
    closedWith,
    kind: o.kind ?? 'connection',
    agents: [SpiffeId.parse(o.peer ?? `spiffe://example.org/agent/${name}`), SpiffeId.parse(SELF)],
    close(e: RevocationEntry): void {
      closedWith.push(e);
      if (o.throws) throw new Error('socket already gone');
    },
  };
  if (o.svid) w.svid = o.svid;
  if (o.delegation) w.delegation = o.delegation;
  return w;
}

function dlg(over: Partial<DelegationContext> = {}): DelegationContext {
  return { sub: 'alice', actors: ['spiffe://example.org/agent/orch'], depth: 1, scope: [], task: 'task-1', jti: 'jti-1', ...over };
}

const ZERO = { connection: 0, websocket: 0, subscription: 0 };

/** Adds the entry to the set and cuts, as the service does. */
function revoke(reg: LiveRegistry, set: RevocationSet, e: RevocationEntry, now = NOW): Record<LiveKind, number> {
  const outcome = set.add(e, now);
  if (outcome !== 'added') throw new Error(`${e.kind} ${e.value}: ${outcome}`);
  return reg.cut(e, set, now);
}

const closedNames = (ws: Probe[]): string[] => ws.filter((w) => w.closedWith.length > 0).map((w) => w.name);

t.test('register and unregister', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const a = work('a');
  const b = work('b');
  t.equal(reg.size, 0);
  const offA = reg.register(a);
  const offB = reg.register(b);
  t.equal(reg.size, 2);
  offA();
  t.equal(reg.size, 1);
  offA();
  t.equal(reg.size, 1, 'unregistering twice is harmless');
  const e = entry('agent', 'spiffe://example.org/agent/a');
  t.same(revoke(reg, set, e), ZERO, 'unregistered work is not cut');
  t.same(a.closedWith, []);
  offB();
  t.equal(reg.size, 0);
  const e2 = entry('agent', 'spiffe://example.org/agent/b');
  t.same(revoke(reg, set, e2), ZERO, 'nor through the index once removed');
  t.same(b.closedWith, []);
});

t.test('cut by exact agent: the peer, and only its work', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const a1 = work('a1', { peer: 'spiffe://example.org/agent/a' });
  const a2 = work('a2', { peer: 'spiffe://example.org/agent/a', kind: 'websocket' });
  const b = work('b');
  const foreign = work('foreign', { peer: 'spiffe://partner.example/agent/a' });
  const all = [a1, a2, b, foreign];
  for (const w of all) reg.register(w);
  const e = entry('agent', 'spiffe://example.org/agent/a');
  t.same(revoke(reg, set, e), { connection: 1, websocket: 1, subscription: 0 });
  t.same(closedNames(all), ['a1', 'a2']);
  t.same(a1.closedWith, [e], 'close gets the revoking entry');
  t.same(a2.closedWith, [e]);
  t.equal(reg.size, 2, 'positive control: non-matching work stays registered');
  // Still open and still registered: a later, matching revocation closes it.
  t.same(revoke(reg, set, entry('agent', 'spiffe://example.org/agent/b')), { connection: 1, websocket: 0, subscription: 0 });
  t.same(closedNames(all), ['a1', 'a2', 'b']);
  t.same(foreign.closedWith, [], 'same path in another trust domain never closed');
  t.equal(reg.size, 1);
});

t.test('cut of our own agent closes everything that involves it', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const ws = [work('a'), work('b', { kind: 'subscription' }), work('c', { kind: 'websocket' })];
  for (const w of ws) reg.register(w);
  t.same(revoke(reg, set, entry('agent', SELF)), { connection: 1, websocket: 1, subscription: 1 });
  t.equal(reg.size, 0);
});

t.test('cut by svid key: serial or fingerprint', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const fp1 = 'a1'.repeat(32);
  const fp2 = 'b2'.repeat(32);
  const s1 = work('s1', { svid: svidKeys('0A0B', fp1.toUpperCase()) });
  const s2 = work('s2', { svid: svidKeys('0C0D', fp2) });
  const none = work('none');
  const all = [s1, s2, none];
  for (const w of all) reg.register(w);
  t.same(revoke(reg, set, entry('svid', 'serial:a0b')), { connection: 1, websocket: 0, subscription: 0 });
  t.same(closedNames(all), ['s1']);
  t.same(revoke(reg, set, entry('svid', fp2.toUpperCase().match(/../g)!.join(':'))), { connection: 1, websocket: 0, subscription: 0 });
  t.same(closedNames(all), ['s1', 's2']);
  t.equal(reg.size, 1);
  t.same(revoke(reg, set, entry('svid', 'serial:ffff')), ZERO, 'an SVID nobody presented closes nothing');
});

t.test('cut by delegation: task, user, token, actor', async (t) => {
  const cases: Array<[string, RevocationEntry, string]> = [
    ['task', entry('task', 'task-7'), 'byTask'],
    ['user', entry('user', 'mallory'), 'byUser'],
    ['token', entry('token', 'jti-leaked'), 'byToken'],
    ['actor exact', entry('agent', 'spiffe://example.org/agent/rogue'), 'byActor'],
    ['actor pattern', entry('agent', 'spiffe://example.org/compromised/*'), 'byActorPattern'],
    ['actor trust domain', entry('trust_domain', 'partner.example'), 'byActorTd'],
  ];
  for (const [what, e, expected] of cases) {
    const reg = new LiveRegistry();
    const set = new RevocationSet();
    const all = [
      work('byTask', { kind: 'websocket', delegation: dlg({ task: 'task-7' }) }),
      work('byUser', { kind: 'websocket', delegation: dlg({ sub: 'mallory' }) }),
      work('byToken', { kind: 'subscription', delegation: dlg({ jti: 'jti-leaked' }) }),
      work('byActor', { delegation: dlg({ actors: ['spiffe://example.org/agent/orch', 'spiffe://example.org/agent/rogue'] }) }),
      work('byActorPattern', { delegation: dlg({ actors: ['spiffe://example.org/compromised/w1'] }) }),
      work('byActorTd', { delegation: dlg({ actors: ['spiffe://partner.example/agent/p'] }) }),
      work('clean', { delegation: dlg() }),
      work('noDelegation'),
      // Near misses: the revoked values in the wrong field, or one segment too deep.
      work('taskAsSub', { delegation: dlg({ sub: 'task-7', task: 'mallory', jti: 'rogue' }) }),
      work('deepActor', { delegation: dlg({ actors: ['spiffe://example.org/compromised/w1/x'] }) }),
    ];
    for (const w of all) reg.register(w);
    const counts = revoke(reg, set, e);
    t.same(closedNames(all), [expected], `${what}: closes exactly ${expected}`);
    const closedKind = all.find((w) => w.name === expected)!.kind;
    t.same(counts, { ...ZERO, [closedKind]: 1 }, `${what}: counted as ${closedKind}`);
    t.equal(reg.size, all.length - 1, `${what}: the others stay registered`);
  }
});

t.test('cut by pattern and trust domain goes through the scan', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const all = [
    work('w1', { peer: 'spiffe://example.org/pool/w1' }),
    work('w2', { peer: 'spiffe://example.org/pool/w2', kind: 'subscription' }),
    work('deep', { peer: 'spiffe://example.org/pool/w3/x' }),
    work('other', { peer: 'spiffe://example.org/agent/w1' }),
    work('partner1', { peer: 'spiffe://partner.example/agent/p' }),
    work('partner2', { peer: 'spiffe://partner.example/pool/w1', kind: 'websocket' }),
    work('other-td', { peer: 'spiffe://other.example/agent/p' }),
  ];
  for (const w of all) reg.register(w);
  t.same(revoke(reg, set, entry('agent', 'spiffe://example.org/pool/*')), { connection: 1, websocket: 0, subscription: 1 });
  t.same(closedNames(all), ['w1', 'w2']);
  t.same(revoke(reg, set, entry('trust_domain', 'partner.example')), { connection: 1, websocket: 1, subscription: 0 });
  t.same(closedNames(all), ['w1', 'w2', 'partner1', 'partner2']);
  t.same(revoke(reg, set, entry('agent', 'spiffe://example.org/pool/**')), { connection: 1, websocket: 0, subscription: 0 });
  t.same(closedNames(all), ['w1', 'w2', 'deep', 'partner1', 'partner2']);
  t.equal(reg.size, 2, 'positive control: other and other-td still registered');
  t.same(all.find((w) => w.name === 'other')!.closedWith, []);
});

t.test('a lifted or expired entry cuts nothing', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const a = work('a');
  const b = work('b');
  reg.register(a);
  reg.register(b);
  const e = entry('agent', 'spiffe://example.org/agent/a');
  set.add(e, NOW);
  set.lift(e.id);
  t.same(reg.cut(e, set, NOW), ZERO, 'lifted meanwhile');
  const p = entry('agent', 'spiffe://example.org/agent/*');
  set.add(p, NOW);
  set.withdraw(p.id);
  t.same(reg.cut(p, set, NOW), ZERO, 'withdrawn meanwhile (scan path)');
  const short = entry('agent', 'spiffe://example.org/agent/a', { expiresAt: NOW + 1000 });
  set.add(short, NOW);
  t.same(reg.cut(short, set, NOW + 1000), ZERO, 'expired by the time of the cut');
  t.same(a.closedWith, []);
  t.equal(reg.size, 2);
  // Positive control: the same live entry at a time before expiry cuts.
  t.same(reg.cut(short, set, NOW + 999), { connection: 1, websocket: 0, subscription: 0 });
  t.same(a.closedWith, [short]);
  t.same(b.closedWith, []);
});

t.test('an entry not in the set cuts nothing', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const a = work('a');
  reg.register(a);
  t.same(reg.cut(entry('agent', 'spiffe://example.org/agent/a'), set, NOW), ZERO);
  t.same(a.closedWith, []);
});

t.test('a close() that throws does not stop the others', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const all = [
    work('t1', { peer: 'spiffe://example.org/agent/x', throws: true }),
    work('ok1', { peer: 'spiffe://example.org/agent/x', kind: 'websocket' }),
    work('t2', { peer: 'spiffe://example.org/agent/x', kind: 'subscription', throws: true }),
    work('ok2', { peer: 'spiffe://example.org/agent/x' }),
    work('bystander'),
  ];
  for (const w of all) reg.register(w);
  let counts: Record<LiveKind, number> | undefined;
  t.doesNotThrow(() => {
    counts = revoke(reg, set, entry('agent', 'spiffe://example.org/agent/x'));
  });
  t.same(counts, { connection: 2, websocket: 1, subscription: 1 });
  t.same(closedNames(all), ['t1', 'ok1', 't2', 'ok2']);
  t.equal(reg.size, 1);
});

t.test('closed work is no longer live', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const w = work('a', { peer: 'spiffe://example.org/agent/a', svid: svidKeys('01', 'ab'.repeat(32)) });
  reg.register(w);
  revoke(reg, set, entry('agent', 'spiffe://example.org/agent/a'));
  t.equal(w.closedWith.length, 1);
  t.equal(reg.size, 0);
  t.same(revoke(reg, set, entry('trust_domain', 'example.org')), ZERO, 'the scan path does not close it again');
  t.equal(w.closedWith.length, 1);
});


t.test('closed work is not closed again through the index before its owner unregisters it', async (t) => {
  // Owners unregister asynchronously (socket 'close' event, relay.done), so the window is real.
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const w = work('a', { peer: 'spiffe://example.org/agent/a', svid: svidKeys('01', 'ab'.repeat(32)) });
  reg.register(w);
  revoke(reg, set, entry('agent', 'spiffe://example.org/agent/a'));
  t.equal(w.closedWith.length, 1);
  t.equal(reg.size, 0, 'no longer live');
  const second = revoke(reg, set, entry('svid', 'serial:1'));
  t.same(second, ZERO, 'already closed: nothing to cut');
  t.equal(w.closedWith.length, 1, 'close() called once');
  t.equal(reg.size, 0);
});

t.test('revokedBy reports the entry that revokes the work now', async (t) => {
  const set = new RevocationSet();
  const fp = 'cc'.repeat(32);
  const w = work('a', { svid: svidKeys('0F', fp), delegation: dlg() });
  t.equal(revokedBy(w, set, NOW), undefined, 'positive control: nothing revoked');
  const task = entry('task', 'task-1', { expiresAt: NOW + 100 });
  set.add(task, NOW);
  t.equal(revokedBy(w, set, NOW), task, 'by delegation');
  t.equal(revokedBy(w, set, NOW + 100), undefined, 'not after expiry');
  const svid = entry('svid', `serial:f`);
  set.add(svid, NOW);
  t.equal(revokedBy(w, set, NOW), svid, 'svid is checked before delegation');
  const self = entry('agent', SELF);
  set.add(self, NOW);
  t.equal(revokedBy(w, set, NOW), self, 'agents are checked first, including our own');
  t.equal(revokedBy(work('other', { delegation: dlg({ task: 'x' }) }), set, NOW), self);
  set.lift(self.id);
  set.lift(svid.id);
  set.lift(task.id);
  t.equal(revokedBy(w, set, NOW), undefined);
});

t.test('closeAll (our identity withdrawn): every live work is closed once and leaves every index', async (t) => {
  const reg = new LiveRegistry();
  const set = new RevocationSet();
  const ws = [work('a'), work('b', { kind: 'websocket', svid: svidKeys('0A', 'ff'.repeat(32)) }), work('c', { kind: 'subscription', delegation: dlg() }), work('d', { throws: true })];
  const offs = ws.map((w) => reg.register(w));
  offs[0]!();
  const cause = entry('agent', SELF, { reason: 'withdrawn' });
  t.same(reg.closeAll(cause), { connection: 1, websocket: 1, subscription: 1 }, 'counts what was still registered (a was unregistered)');
  t.same(closedNames(ws), ['b', 'c', 'd'], 'closed everything still live, a closer that throws included');
  t.same(ws[1]!.closedWith, [cause], 'closers are told why');
  t.equal(reg.size, 0);
  t.same(reg.closeAll(cause), ZERO, 'a second closeAll finds nothing');
  t.same(revoke(reg, set, entry('task', 'task-1')), ZERO, 'nothing left in the indexes either');
});
