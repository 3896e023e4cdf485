// The runner's verdict rules and the three report formats, with stand-in attacks: a control
// that is refused can never yield PASS, a timeout is an ERROR, a skip is never a pass, and a run
// without a single PASS is not ok.
import t from 'tap';
import { formatSummary, formatTable, toJunit, type ProbeReport } from '../../src/probe/report.js';
import { runAttacks, summarize } from '../../src/probe/runner.js';
import { selectAttacks } from '../../src/probe/probe.js';
import { AttackSkipped, type Attack, type Outcome, type ProbeContext } from '../../src/probe/types.js';

const ctx = { stepTimeoutMs: 200 } as unknown as ProbeContext;
const ok = (observed = 'fine'): Promise<Outcome> => Promise.resolve({ ok: true, observed });
const notOk = (observed = 'bad'): Promise<Outcome> => Promise.resolve({ ok: false, observed });

function attack(id: string, parts: Partial<Attack>): Attack {
  return { id, family: 'tls', title: `title ${id}`, expected: 'refused', proves: 'p', control: () => ok('control saw 200'), attack: () => ok('refused'), ...parts };
}

t.test('verdicts', async (t) => {
  let attackRan = false;
  const results = await runAttacks(ctx, [
    attack('tls.pass', {}),
    attack('tls.fail', { attack: () => notOk('accepted: HTTP 200') }),
    attack('tls.control-refused', { control: () => notOk('HTTP 403'), attack: () => ((attackRan = true), ok()) }),
    attack('tls.control-throws', { control: () => Promise.reject(new Error('boom')) }),
    attack('tls.attack-throws', { attack: () => Promise.reject(new Error('broken step')) }),
    attack('tls.timeout', { attack: (_c, signal) => new Promise((_r, reject) => signal.addEventListener('abort', () => reject(new Error('aborted')))) }),
    attack('tls.hangs-ignoring-abort', { attack: () => new Promise(() => undefined) }),
    attack('tls.skip', { skip: () => 'needs --x' }),
    attack('tls.skipped-at-run', { attack: () => Promise.reject(new AttackSkipped('cannot offer TLS 1.0 here')) }),
    attack('tls.late-skip', { attack: () => new Promise((_r, reject) => setTimeout(() => reject(new AttackSkipped('too late to skip')), 300)) }),
    attack('tls.sync-throw', {
      attack: () => {
        throw new Error('thrown before any await');
      },
    }),
    attack('tls.late-pass', { attack: () => new Promise((r) => setTimeout(() => r({ ok: true, observed: 'too late' }), 300)) }),
    attack('tls.longer', { timeoutMs: () => 600, attack: () => new Promise((r) => setTimeout(() => r({ ok: true, observed: 'late but in time' }), 350)) }),
  ]);
  const verdict = Object.fromEntries(results.map((r) => [r.id, r.verdict]));
  t.same(verdict, {
    'tls.pass': 'pass',
    'tls.fail': 'fail',
    'tls.control-refused': 'error',
    'tls.control-throws': 'error',
    'tls.attack-throws': 'error',
    'tls.timeout': 'error',
    'tls.hangs-ignoring-abort': 'error',
    'tls.skip': 'skip',
    'tls.skipped-at-run': 'skip',
    'tls.late-skip': 'error',
    'tls.sync-throw': 'error',
    'tls.late-pass': 'error',
    'tls.longer': 'pass',
  });
  const late = results.find((r) => r.id === 'tls.late-pass')!;
  t.ok(late.durationMs >= 290, 'the runner waited for the timed-out step to wind down before going on (steps never overlap)');
  t.notOk(attackRan, 'the attack does not run when its control was refused');
  const by = Object.fromEntries(results.map((r) => [r.id, r]));
  t.equal(by['tls.control-refused']!.observed, 'positive control not accepted: HTTP 403');
  t.equal(by['tls.pass']!.control, 'control saw 200', 'the control observation is kept');
  t.match(by['tls.timeout']!.observed, /attack timed out after 200 ms/);
  t.match(by['tls.hangs-ignoring-abort']!.observed, /timed out/);
  t.equal(by['tls.skip']!.observed, 'needs --x');
  t.same(summarize(results), { pass: 2, fail: 1, error: 8, skip: 2, ok: false });
  t.match(by['tls.late-skip']!.observed, /timed out after 200 ms; then: too late to skip/, 'a skip after the bound is not a skip; what it said is kept');
  t.equal(by['tls.sync-throw']!.observed, 'thrown before any await');
  t.same(summarize(results.filter((r) => r.verdict === 'pass' || r.verdict === 'skip')).ok, true, 'passes and skips: ok');
  t.same(summarize(results.filter((r) => r.verdict === 'skip')).ok, false, 'only skips: not ok (nothing was proven)');
  t.same(summarize([]).ok, false, 'nothing run: not ok');
});

t.test('--only selection', async (t) => {
  const attacks = [attack('tls.a', {}), attack('tls.b', {}), { ...attack('bus.c', {}), family: 'bus' as const }];
  t.same(selectAttacks(attacks, undefined).length, 3);
  t.same(selectAttacks(attacks, ['bus']).map((a) => a.id), ['bus.c']);
  t.same(selectAttacks(attacks, ['tls.b', 'bus']).map((a) => a.id), ['tls.b', 'bus.c']);
  t.throws(() => selectAttacks(attacks, ['tls', 'tsl']), /--only tsl: no such family or attack/);
});

t.test('table, summary and JUnit', async (t) => {
  const results = await runAttacks(ctx, [
    attack('tls.pass', {}),
    attack('tls.fail', { attack: () => notOk('accepted: HTTP 200 <&"\'> \u0001') }),
    { ...attack('bus.skip', { skip: () => 'needs --nats' }), family: 'bus' as const },
    attack('tls.error', { control: () => notOk('HTTP 403') }),
  ]);
  const report: ProbeReport = {
    version: 1,
    tool: 'sigil probe',
    target: { address: '127.0.0.1:1', spiffeId: 'spiffe://example.org/b' },
    identity: 'spiffe://example.org/probe',
    victim: 'spiffe://example.org/a',
    startedAt: '2026-01-01T00:00:00.000Z',
    finishedAt: '2026-01-01T00:00:01.000Z',
    summary: summarize(results),
    warnings: [],
    results,
  };
  const table = formatTable(results, 100);
  t.match(table, /^RESULT\s+ATTACK\s+EXPECTED\s+OBSERVED\n/);
  t.match(table, /^PASS\s+tls\.pass\s+refused\s+refused$/m);
  t.match(table, /^FAIL\s+tls\.fail/m);
  t.match(table, /^SKIP\s+bus\.skip\s+refused\s+needs --nats$/m);
  t.ok(table.split('\n').every((l) => l.length <= 100), 'fits the width');
  t.match(formatSummary(report), /^target FAILED: 1 passed, 1 failed, 1 errors, 1 skipped \(spiffe:\/\/example.org\/b at 127.0.0.1:1\)/);
  const xml = toJunit(report);
  t.match(xml, /<testsuites name="sigil probe" tests="4" failures="1" errors="1" skipped="1">/);
  t.match(xml, /<testsuite name="sigil.probe.tls" tests="3" failures="1" errors="1" skipped="0"/);
  t.match(xml, /<testsuite name="sigil.probe.bus" tests="1" failures="0" errors="0" skipped="1"/);
  t.match(xml, /<testcase classname="sigil.probe.tls" name="tls.pass" time="\d+\.\d{3}"\/>/);
  t.match(xml, /<failure message="title tls.fail: accepted: HTTP 200 &lt;&amp;&quot;&apos;&gt; " type="accepted">/, 'escaped; control characters dropped');
  t.match(xml, /<error message="positive control not accepted: HTTP 403" type="inconclusive">/);
  t.match(xml, /<skipped message="needs --nats"\/>/);
  t.notMatch(xml, /\u0001/);
});
