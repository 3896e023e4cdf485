import t from 'tap';
import { ConcurrencyLimit, KeyedBuckets, TokenBucket } from '../../src/egress/limits.js';
import { pseudonym, renderTemplate, templateProblem } from '../../src/egress/attribution.js';

t.test('token bucket: burst, then the sustained rate, with the wait to the next token', async (t) => {
  let now = 0;
  const b = new TokenBucket({ ratePerSecond: 2, burst: 3 }, () => now);
  t.same([b.take(), b.take(), b.take()], [{ ok: true }, { ok: true }, { ok: true }], 'the burst');
  t.same(b.take(), { ok: false, retryAfterMs: 500 }, 'then refused, 500 ms to the next token at 2/s');
  now = 250;
  t.same(b.take(), { ok: false, retryAfterMs: 250 });
  now = 500;
  t.same(b.take(), { ok: true }, 'a token after 500 ms');
  t.same(b.take(), { ok: false, retryAfterMs: 500 });
  now = 60_000;
  t.ok(b.isIdle(), 'full after a quiet minute');
  t.same([b.take(), b.take(), b.take(), b.take()].map((a) => a.ok), [true, true, true, false], 'never more than the burst');
});

t.test('keyed buckets: users do not share a bucket; bounded', async (t) => {
  let now = 0;
  const k = new KeyedBuckets({ ratePerSecond: 1, burst: 1 }, 2, () => now);
  t.ok(k.take('alice').ok);
  t.notOk(k.take('alice').ok, 'alice is over her rate');
  t.ok(k.take('bob').ok, 'bob is not affected');
  t.ok(k.take('carol').ok, 'a third key evicts, never refuses');
  t.equal(k.size, 2);
  now = 5_000;
  t.ok(k.take('alice').ok);
});

t.test('concurrency: at most max in flight; release is idempotent', async (t) => {
  const c = new ConcurrencyLimit(2);
  const r1 = c.tryAcquire();
  const r2 = c.tryAcquire();
  t.ok(r1 && r2);
  t.equal(c.tryAcquire(), undefined, 'full');
  r1!();
  r1!();
  t.equal(c.current, 1, 'a double release counts once');
  t.ok(c.tryAcquire(), 'room again');
});

t.test('attribution: pseudonyms and header templates', async (t) => {
  const p = pseudonym('secret-1', 'alice');
  t.match(p, /^u_[0-9a-f]{32}$/);
  t.equal(pseudonym('secret-1', 'alice'), p, 'stable');
  t.not(pseudonym('secret-1', 'bob'), p, 'per user');
  t.not(pseudonym('secret-2', 'alice'), p, 'per secret');
  t.notMatch(p, /alice/);
  const values = { agent: 'spiffe://example.org/agent/a', user: p, task: 't-1' };
  t.equal(renderTemplate('{agent}', values), 'spiffe://example.org/agent/a');
  t.equal(renderTemplate('agent={agent}; user={user}', values), `agent=spiffe://example.org/agent/a; user=${p}`);
  t.equal(renderTemplate('{user}', { agent: 'x' }), undefined, 'no delegation: the header is left out');
  t.equal(templateProblem('{agent} {user} {task}'), undefined);
  t.match(templateProblem('{sub}'), /unknown placeholder/);
  t.match(templateProblem('a\r\nb'), /line break/);
});
