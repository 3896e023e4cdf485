// The revocation set: outcomes of add/lift/withdraw/prune, every lookup path, expiry and the
// epoch caches key on. Each rule is tested with a hit and with a near miss.
import t from 'tap';
import type { DelegationContext } from '../../src/authz/index.js';
import { RevocationSet, parseRevocationEntry, svidKeys, type RevocationEntry } from '../../src/revocation/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';

const NOW = Date.parse('2030-06-01T12:00:00.000Z');
const FP = 'cd'.repeat(32);

let seq = 0;
/** A normalized entry, as every source produces it. */
function entry(kind: string, value: string, over: Record<string, unknown> = {}): RevocationEntry {
  return parseRevocationEntry({ kind, value, ...over }, { id: `entry-${String(++seq).padStart(6, '0')}`, revokedBy: 'test', now: NOW });
}

const id = (s: string): SpiffeId => SpiffeId.parse(s);

function dlg(over: Partial<DelegationContext> = {}): DelegationContext {
  return { sub: 'alice', actors: ['spiffe://example.org/agent/orch'], depth: 1, scope: ['read'], task: 'task-1', jti: 'jti-1', ...over };
}

t.test('an empty set revokes nothing', async (t) => {
  const s = new RevocationSet();
  t.equal(s.size, 0);
  t.equal(s.epoch, 0);
  t.equal(s.agent(id('spiffe://example.org/agent/a'), NOW), undefined);
  t.equal(s.agentByName('spiffe://example.org/agent/a', NOW), undefined);
  t.equal(s.svid(['serial:1', `sha256:${FP}`], NOW), undefined);
  t.equal(s.delegation(dlg(), NOW), undefined);
  t.equal(s.byValue('task', 'task-1', NOW), undefined);
  t.same(s.entries(), []);
  t.same(s.countsByKind(), { svid: 0, agent: 0, task: 0, token: 0, user: 0, trust_domain: 0 });
});

t.test('add outcomes: added, duplicate, lifted_before, expired', async (t) => {
  const s = new RevocationSet();
  const e = entry('task', 'task-1');
  t.equal(s.add(e, NOW), 'added');
  t.equal(s.size, 1);
  t.equal(s.get(e.id), e);
  t.equal(s.add(e, NOW), 'duplicate', 'same id again');
  t.equal(s.add({ ...e, value: 'other-task' }, NOW), 'duplicate', 'same id, other value: still the first one');
  t.equal(s.byValue('task', 'other-task', NOW), undefined, 'the duplicate did not index its value');
  t.equal(s.size, 1);

  t.same(s.lift(e.id), { outcome: 'lifted', entry: e });
  t.equal(s.add(e, NOW), 'lifted_before', 'a lifted id cannot come back (replay of the revoke)');
  t.equal(s.byValue('task', 'task-1', NOW), undefined);

  const expired = entry('task', 'task-2', { revokedAt: NOW - 10_000, expiresAt: NOW - 1 });
  t.equal(s.add(expired, NOW), 'expired');
  t.equal(s.get(expired.id), undefined, 'an expired entry is not kept');
  const atEdge = entry('task', 'task-3', { revokedAt: NOW - 10_000, expiresAt: NOW });
  t.equal(s.add(atEdge, NOW), 'expired', 'expiresAt == now is expired');
  const live = entry('task', 'task-4', { revokedAt: NOW - 10_000, expiresAt: NOW + 1 });
  t.equal(s.add(live, NOW), 'added', 'positive control: one ms before expiry is added');
  t.equal(s.size, 1);
});

t.test('lift of an id never seen: unknown, but tombstoned', async (t) => {
  const s = new RevocationSet();
  t.same(s.lift('never-seen-1'), { outcome: 'unknown' });
  t.ok(s.isLifted('never-seen-1'));
  t.equal(s.epoch, 0, 'nothing changed, no epoch bump');
  const e = { ...entry('user', 'mallory'), id: 'never-seen-1' };
  t.equal(s.add(e, NOW), 'lifted_before', 'a lift that arrives before its revoke still wins');
  t.equal(s.byValue('user', 'mallory', NOW), undefined);
  t.notOk(s.isLifted('other-id-1'), 'positive control: other ids are not tombstoned');
});

t.test('withdraw is not terminal; lift is', async (t) => {
  const s = new RevocationSet();
  const e = entry('token', 'jti-9');
  s.add(e, NOW);
  t.equal(s.withdraw(e.id), true);
  t.equal(s.byValue('token', 'jti-9', NOW), undefined, 'withdrawn: no longer applies');
  t.notOk(s.isLifted(e.id));
  t.equal(s.withdraw(e.id), false, 'a second withdraw finds nothing');
  t.equal(s.add(e, NOW), 'added', 're-adding a withdrawn entry works');
  t.equal(s.byValue('token', 'jti-9', NOW), e);
  s.lift(e.id);
  t.equal(s.add(e, NOW), 'lifted_before');
  t.equal(s.withdraw(e.id), false, 'withdraw after lift: nothing there');
});

t.test('agent lookups: exact ID', async (t) => {
  const s = new RevocationSet();
  const e = entry('agent', 'spiffe://example.org/agent/a');
  s.add(e, NOW);
  t.equal(s.agent(id('spiffe://example.org/agent/a'), NOW), e);
  t.equal(s.agentByName('spiffe://example.org/agent/a', NOW), e);
  t.equal(s.agent(id('spiffe://example.org/agent/b'), NOW), undefined, 'another agent');
  t.equal(s.agent(id('spiffe://example.org/agent/a/sub'), NOW), undefined, 'a child path is another ID');
  t.equal(s.agent(id('spiffe://example.org/agent'), NOW), undefined, 'the parent path is another ID');
  t.equal(s.agent(id('spiffe://example.org/Agent/a'), NOW), undefined, 'paths are case-sensitive');
  t.equal(s.agent(id('spiffe://partner.example/agent/a'), NOW), undefined, 'same path in another trust domain');
  t.equal(s.agentByName('spiffe://partner.example/agent/a', NOW), undefined);
  t.equal(s.agentByName('not a spiffe id', NOW), undefined, 'an unparsable name is not revoked');
});

t.test('agent lookups: `*` matches exactly one segment', async (t) => {
  const s = new RevocationSet();
  const e = entry('agent', 'spiffe://example.org/agent/*');
  s.add(e, NOW);
  t.equal(s.agent(id('spiffe://example.org/agent/a'), NOW), e);
  t.equal(s.agent(id('spiffe://example.org/agent/zzz-9'), NOW), e);
  t.equal(s.agentByName('spiffe://example.org/agent/b', NOW), e, 'by name, through parsing');
  t.equal(s.agent(id('spiffe://example.org/agent/a/b'), NOW), undefined, 'two segments: no match');
  t.equal(s.agent(id('spiffe://example.org/agent'), NOW), undefined, 'zero segments: no match');
  t.equal(s.agent(id('spiffe://example.org/ops/a'), NOW), undefined, 'other prefix');
  t.equal(s.agent(id('spiffe://partner.example/agent/a'), NOW), undefined, 'other trust domain, same path');
  t.same(s.countsByKind().agent, 1);
});

t.test('agent lookups: trailing `**` matches one or more segments', async (t) => {
  const s = new RevocationSet();
  const e = entry('agent', 'spiffe://example.org/fleet/**');
  s.add(e, NOW);
  t.equal(s.agent(id('spiffe://example.org/fleet/a'), NOW), e);
  t.equal(s.agent(id('spiffe://example.org/fleet/a/b/c'), NOW), e);
  t.equal(s.agent(id('spiffe://example.org/fleet'), NOW), undefined, 'the prefix itself is not below it');
  t.equal(s.agent(id('spiffe://example.org/fleetx/a'), NOW), undefined, 'segment boundary respected');
  t.equal(s.agent(id('spiffe://example.org/other/fleet/a'), NOW), undefined);
  t.equal(s.agent(id('spiffe://partner.example/fleet/a'), NOW), undefined, 'other trust domain, same path');
});

t.test('agent lookups: trust_domain', async (t) => {
  const s = new RevocationSet();
  const e = entry('trust_domain', 'partner.example');
  s.add(e, NOW);
  t.equal(s.agent(id('spiffe://partner.example/agent/p'), NOW), e);
  t.equal(s.agent(id('spiffe://partner.example'), NOW), e);
  t.equal(s.agentByName('spiffe://partner.example/x/y', NOW), e);
  t.equal(s.agent(id('spiffe://example.org/agent/p'), NOW), undefined, 'other trust domain');
  t.equal(s.agent(id('spiffe://sub.partner.example/agent/p'), NOW), undefined, 'a subdomain is another trust domain');
  t.equal(s.agent(id('spiffe://example.org/partner.example'), NOW), undefined, 'the name as a path segment');
});

t.test('svid lookups by serial and by fingerprint', async (t) => {
  const s = new RevocationSet();
  const bySerial = entry('svid', '00:0A:BC');
  const byFp = entry('svid', FP.toUpperCase());
  s.add(bySerial, NOW);
  s.add(byFp, NOW);
  t.equal(s.svid(svidKeys('0ABC', 'ee'.repeat(32)), NOW), bySerial, 'serial key matches (Node-style upper-case serial)');
  t.equal(s.svid(svidKeys('1234', FP.toUpperCase().match(/../g)!.join(':')), NOW), byFp, 'fingerprint key matches (Node-style)');
  t.equal(s.svid(svidKeys('ABCD', 'ee'.repeat(32)), NOW), undefined, 'neither key matches');
  t.equal(s.svid(svidKeys('0ABC0', 'ee'.repeat(32)), NOW), undefined, 'a serial with the same prefix is another serial');
  // An svid entry never matches as an agent, task, and so on.
  t.equal(s.byValue('task', 'serial:abc', NOW), undefined);
  t.equal(s.byValue('token', `sha256:${FP}`, NOW), undefined);
});

t.test('delegation lookups: task, user, token, actor', async (t) => {
  const s = new RevocationSet();
  const task = entry('task', 'task-7');
  const user = entry('user', 'mallory');
  const token = entry('token', 'jti-leaked');
  const actor = entry('agent', 'spiffe://example.org/agent/rogue');
  const actorPattern = entry('agent', 'spiffe://example.org/compromised/*');
  for (const e of [task, user, token, actor, actorPattern]) t.equal(s.add(e, NOW), 'added');

  t.equal(s.delegation(dlg(), NOW), undefined, 'positive control: a clean chain is not revoked');
  t.equal(s.delegation(dlg({ task: 'task-7' }), NOW), task);
  t.equal(s.delegation(dlg({ sub: 'mallory' }), NOW), user);
  t.equal(s.delegation(dlg({ jti: 'jti-leaked' }), NOW), token);
  const noJti = dlg();
  delete noJti.jti;
  t.equal(s.delegation(noJti, NOW), undefined, 'a chain without jti');
  t.equal(s.delegation(dlg({ actors: ['spiffe://example.org/agent/orch', 'spiffe://example.org/agent/rogue'] }), NOW), actor, 'an inner actor revoked by exact ID');
  t.equal(s.delegation(dlg({ actors: ['spiffe://example.org/compromised/w1'] }), NOW), actorPattern, 'an actor revoked by pattern');
  t.equal(s.delegation(dlg({ actors: ['spiffe://example.org/compromised/w1/x'] }), NOW), undefined, 'the pattern matches one segment only');
  t.equal(s.delegation(dlg({ actors: ['spiffe://partner.example/agent/rogue'] }), NOW), undefined, 'same path, other trust domain');
  t.equal(s.delegation(dlg({ actors: ['not-an-id'] }), NOW), undefined, 'unparsable actor');

  // Values are compared per kind: a user named like a task is not that task.
  t.equal(s.delegation(dlg({ sub: 'task-7' }), NOW), undefined, 'sub equal to a revoked task id');
  t.equal(s.delegation(dlg({ task: 'mallory' }), NOW), undefined, 'task equal to a revoked user');
  t.equal(s.delegation(dlg({ jti: 'task-7' }), NOW), undefined, 'jti equal to a revoked task id');

  t.equal(s.byValue('task', 'task-7', NOW), task);
  t.equal(s.byValue('user', 'mallory', NOW), user);
  t.equal(s.byValue('token', 'jti-leaked', NOW), token);
  t.equal(s.byValue('user', 'Mallory', NOW), undefined, 'verbatim: case matters');
});

t.test('actor revoked through its trust domain', async (t) => {
  const s = new RevocationSet();
  const td = entry('trust_domain', 'partner.example');
  s.add(td, NOW);
  t.equal(s.delegation(dlg({ actors: ['spiffe://example.org/agent/orch', 'spiffe://partner.example/agent/p'] }), NOW), td);
  t.equal(s.delegation(dlg(), NOW), undefined);
});

t.test('expiry: an entry stops matching at expiresAt; prune removes it', async (t) => {
  const s = new RevocationSet();
  const exp = NOW + 60_000;
  const agentE = entry('agent', 'spiffe://example.org/agent/a', { expiresAt: exp });
  const patternE = entry('agent', 'spiffe://example.org/pool/*', { expiresAt: exp });
  const tdE = entry('trust_domain', 'partner.example', { expiresAt: exp });
  const svidE = entry('svid', FP, { expiresAt: exp });
  const taskE = entry('task', 'task-x', { expiresAt: exp });
  const forever = entry('user', 'mallory');
  for (const e of [agentE, patternE, tdE, svidE, taskE, forever]) t.equal(s.add(e, NOW), 'added');
  const svid = svidKeys('01', FP);

  for (const at of [NOW, exp - 1]) {
    t.equal(s.agent(id('spiffe://example.org/agent/a'), at), agentE, `exact at ${at - NOW}`);
    t.equal(s.agent(id('spiffe://example.org/pool/p'), at), patternE, `pattern at ${at - NOW}`);
    t.equal(s.agent(id('spiffe://partner.example/x'), at), tdE, `trust domain at ${at - NOW}`);
    t.equal(s.svid(svid, at), svidE, `svid at ${at - NOW}`);
    t.equal(s.delegation(dlg({ task: 'task-x' }), at), taskE, `task at ${at - NOW}`);
  }
  for (const at of [exp, exp + 1]) {
    t.equal(s.agent(id('spiffe://example.org/agent/a'), at), undefined, `exact past expiry (${at - NOW})`);
    t.equal(s.agentByName('spiffe://example.org/agent/a', at), undefined);
    t.equal(s.agent(id('spiffe://example.org/pool/p'), at), undefined, `pattern past expiry (${at - NOW})`);
    t.equal(s.agent(id('spiffe://partner.example/x'), at), undefined, `trust domain past expiry (${at - NOW})`);
    t.equal(s.svid(svid, at), undefined, `svid past expiry (${at - NOW})`);
    t.equal(s.delegation(dlg({ task: 'task-x' }), at), undefined, `task past expiry (${at - NOW})`);
    t.equal(s.byValue('user', 'mallory', at), forever, 'an entry without expiry keeps matching');
  }
  t.equal(s.size, 6, 'expired entries stay until pruned');

  const before = s.epoch;
  t.same(s.prune(exp - 1), [], 'nothing to prune before expiry');
  t.equal(s.epoch, before, 'an empty prune does not bump the epoch');
  const gone = s.prune(exp);
  t.same(new Set(gone.map((e) => e.id)), new Set([agentE.id, patternE.id, tdE.id, svidE.id, taskE.id]));
  t.equal(s.epoch, before + 1, 'prune bumps the epoch (once)');
  t.equal(s.size, 1);
  t.same(s.entries(), [forever]);
  t.same(s.countsByKind(), { svid: 0, agent: 0, task: 0, token: 0, user: 1, trust_domain: 0 });
  t.notOk(s.isLifted(agentE.id), 'pruning is not lifting');
  t.equal(s.add(agentE, exp + 1), 'expired', 'an expired entry re-arriving is refused as expired');
});

t.test('an expired entry does not shadow a live one with the same value', async (t) => {
  const s = new RevocationSet();
  const short = entry('task', 'task-s', { expiresAt: NOW + 1000 });
  const long = entry('task', 'task-s');
  s.add(short, NOW);
  s.add(long, NOW);
  t.equal(s.byValue('task', 'task-s', NOW), short, 'first live entry');
  t.equal(s.byValue('task', 'task-s', NOW + 5000), long, 'after the first expires, the second still revokes');
  s.lift(long.id);
  t.equal(s.byValue('task', 'task-s', NOW), short, 'lifting one entry leaves the other for the same value');
  t.equal(s.byValue('task', 'task-s', NOW + 5000), undefined);
});

t.test('lifting one of two patterns leaves the other', async (t) => {
  const s = new RevocationSet();
  const p1 = entry('agent', 'spiffe://example.org/agent/*');
  const p2 = entry('agent', 'spiffe://example.org/**');
  s.add(p1, NOW);
  s.add(p2, NOW);
  t.equal(s.agent(id('spiffe://example.org/agent/a'), NOW), p1);
  s.lift(p1.id);
  t.equal(s.agent(id('spiffe://example.org/agent/a'), NOW), p2);
  s.withdraw(p2.id);
  t.equal(s.agent(id('spiffe://example.org/agent/a'), NOW), undefined);
  t.equal(s.size, 0);
});

t.test('the epoch changes on add, lift, withdraw and prune, and only then', async (t) => {
  const s = new RevocationSet();
  const seen = [s.epoch];
  const expect = (changed: boolean, what: string): void => {
    const last = seen[seen.length - 1];
    if (changed) t.not(s.epoch, last, `${what}: epoch changed`);
    else t.equal(s.epoch, last, `${what}: epoch unchanged`);
    if (changed) t.notOk(seen.includes(s.epoch), `${what}: a new epoch value`);
    seen.push(s.epoch);
  };
  const a = entry('agent', 'spiffe://example.org/agent/a');
  const p = entry('agent', 'spiffe://example.org/agent/*');
  const short = entry('task', 't-short', { expiresAt: NOW + 10 });
  s.add(a, NOW);
  expect(true, 'add');
  s.add(p, NOW);
  expect(true, 'add pattern');
  s.add(short, NOW);
  expect(true, 'add with expiry');
  s.add(a, NOW);
  expect(false, 'duplicate add');
  s.add(entry('task', 't-old', { revokedAt: NOW - 100, expiresAt: NOW - 1 }), NOW);
  expect(false, 'expired add');
  s.agent(id('spiffe://example.org/agent/a'), NOW);
  s.agentByName('spiffe://example.org/agent/b', NOW);
  s.svid(['serial:1', `sha256:${FP}`], NOW);
  s.delegation(dlg(), NOW);
  s.byValue('task', 't-short', NOW);
  s.get(a.id);
  s.entries();
  s.countsByKind();
  expect(false, 'lookups');
  s.lift('unknown-id-1');
  expect(false, 'lift of an unknown id');
  s.withdraw('unknown-id-2');
  expect(false, 'withdraw of an unknown id');
  s.prune(NOW);
  expect(false, 'prune with nothing expired');
  s.prune(NOW + 10);
  expect(true, 'prune');
  s.withdraw(p.id);
  expect(true, 'withdraw');
  s.lift(a.id);
  expect(true, 'lift');
  s.add(a, NOW);
  expect(false, 'add of a lifted id');
  s.add(p, NOW);
  expect(true, 're-add after withdraw');
});

t.test('countsByKind, entries and size', async (t) => {
  const s = new RevocationSet();
  const all = [
    entry('svid', FP),
    entry('svid', 'serial:1'),
    entry('agent', 'spiffe://example.org/a'),
    entry('agent', 'spiffe://example.org/*'),
    entry('task', 't'),
    entry('token', 'j'),
    entry('user', 'u'),
    entry('trust_domain', 'partner.example'),
  ];
  for (const e of all) s.add(e, NOW);
  t.equal(s.size, all.length);
  t.same(s.countsByKind(), { svid: 2, agent: 2, task: 1, token: 1, user: 1, trust_domain: 1 });
  t.same(new Set(s.entries()), new Set(all));
  const snapshot = s.entries();
  s.lift(all[0]!.id);
  t.equal(snapshot.length, all.length, 'entries() is a copy');
  t.equal(s.countsByKind().svid, 1);
});

t.test('an exact agent entry does not match through the pattern path, and a pattern not through the exact map', async (t) => {
  const s = new RevocationSet();
  const p = entry('agent', 'spiffe://example.org/agent/*');
  s.add(p, NOW);
  // The literal pattern string is not an ID any agent can hold, but agentByName does an exact
  // map lookup first: the pattern text must not be treated as an exact ID entry either way.
  t.equal(s.agentByName('spiffe://example.org/agent/*', NOW), undefined, 'the pattern text itself is not a revoked name');
  t.equal(s.agentByName('spiffe://example.org/agent/x', NOW), p);
});

t.test('a lift naming another kind lifts nothing, also when it arrives before the revoke', async (t) => {
  const set = new RevocationSet();
  const a = SpiffeId.parse('spiffe://example.org/agent/a');
  const agentEntry = entry('agent', 'spiffe://example.org/agent/a', { id: 'kind-0001' });
  // The lift (claiming kind task) is seen first, the genuine agent revoke after it.
  set.lift('kind-0001', 'task');
  t.equal(set.add(agentEntry, NOW), 'added', 'the agent revoke still applies');
  t.equal(set.agent(a, NOW)?.id, 'kind-0001', 'agent a is revoked');
  t.same(set.lift('kind-0001', 'task'), { outcome: 'unknown' }, 'a task-kind lift does not lift it');
  t.equal(set.agent(a, NOW)?.id, 'kind-0001', 'still revoked');
  // Positive control: a lift of the right kind, before and after.
  t.equal(set.lift('kind-0001', 'agent').outcome, 'lifted', 'the agent-kind lift lifts it');
  t.equal(set.agent(a, NOW), undefined);
  t.equal(set.add(agentEntry, NOW), 'lifted_before', 'and the id stays lifted for that kind');
  const early = new RevocationSet();
  early.lift('kind-0002', 'agent');
  t.equal(early.add(entry('agent', 'spiffe://example.org/agent/b', { id: 'kind-0002' }), NOW), 'lifted_before', 'a lift of the right kind seen first still wins');
});
