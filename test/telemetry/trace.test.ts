import t from 'tap';
import { childTraceparent, formatTraceparent, newRequestId, newTraceparent, parseTraceparent } from '../../src/telemetry/index.js';

// The W3C Trace Context example value.
const EXAMPLE = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const V00 = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

t.test('valid values', async (t) => {
  t.strictSame(parseTraceparent(EXAMPLE), {
    version: '00',
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    parentId: '00f067aa0ba902b7',
    flags: 1,
    sampled: true,
  });
  t.strictSame(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00')?.sampled, false);
  // unknown flag bits are accepted (and only the sampled bit is read)
  t.strictSame(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09')?.flags, 9);
  t.strictSame(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff')?.sampled, true);
  // a single-element header array is the same as the string
  t.equal(parseTraceparent([EXAMPLE])?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
});

t.test('invalid values are rejected', async (t) => {
  const bad: [string, string | string[] | undefined | null][] = [
    ['absent', undefined],
    ['null', null],
    ['empty', ''],
    ['uppercase trace id', '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01'],
    ['uppercase parent id', '00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01'],
    ['uppercase flags', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A'],
    ['uppercase version', '0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
    ['all-zero trace id', '00-00000000000000000000000000000000-00f067aa0ba902b7-01'],
    ['all-zero parent id', '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01'],
    ['version ff', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
    ['non-hex version', 'xx-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
    ['version 00 with trailing data', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra'],
    ['version 00 with a trailing dash', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-'],
    ['trace id too short', '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01'],
    ['trace id too long', '00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01'],
    ['parent id too short', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01'],
    ['parent id too long', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b77-01'],
    ['flags one digit', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1'],
    ['flags three digits', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011'],
    ['non-hex trace id', '00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01'],
    ['non-hex flags', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g'],
    ['wrong separator', '00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01'],
    ['leading space', ' 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'],
    ['trailing space', '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 '],
    ['two headers joined by a proxy', `${EXAMPLE}, ${EXAMPLE}`],
    ['two headers', [EXAMPLE, EXAMPLE]],
    ['higher version, too short', '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0'],
    ['higher version, no dash after flags', '01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x'],
  ];
  for (const [name, value] of bad) t.equal(parseTraceparent(value), undefined, name);
});

t.test('a higher version is parsed by its version-00 fields (spec: versioning of traceparent)', async (t) => {
  const future = 'cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like';
  t.strictSame(parseTraceparent(future), {
    version: '00',
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    parentId: '00f067aa0ba902b7',
    flags: 1,
    sampled: true,
  });
  t.ok(parseTraceparent('01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'), 'exactly 55 characters');
  // and is re-emitted as version 00
  t.match(childTraceparent(future), /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
});

t.test('newTraceparent: valid, random, not sampled unless asked', async (t) => {
  const seen = new Set<string>();
  const bad: string[] = [];
  for (let i = 0; i < 1000; i++) {
    const tp = newTraceparent();
    const ctx = parseTraceparent(tp);
    if (!V00.test(tp) || !ctx || ctx.flags !== 0) bad.push(tp);
    else seen.add(ctx.traceId);
  }
  t.strictSame(bad, [], '1000 new traceparents are valid version-00 values with flags 00');
  t.equal(seen.size, 1000, 'trace ids are unique');
  t.equal(parseTraceparent(newTraceparent({ sampled: true }))?.flags, 1);
});

t.test('childTraceparent: same trace id, new parent id, sampled flag kept', async (t) => {
  const child = childTraceparent(EXAMPLE);
  const ctx = parseTraceparent(child);
  if (!ctx) return t.fail(`invalid child ${child}`);
  t.equal(ctx.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  t.not(ctx.parentId, '00f067aa0ba902b7');
  t.equal(ctx.flags, 1);
  t.not(childTraceparent(EXAMPLE), child, 'a new span id each hop');
  // the parsed form works too; unknown flag bits are not propagated
  const parsed = parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0b');
  t.match(childTraceparent(parsed), /^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/);
  t.match(childTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02'), /-00$/);
});

t.test('childTraceparent: absent or invalid → a new trace', async (t) => {
  for (const v of [undefined, null, '', 'garbage', '00-00000000000000000000000000000000-00f067aa0ba902b7-01', [EXAMPLE, EXAMPLE]]) {
    const tp = childTraceparent(v);
    t.match(tp, V00, JSON.stringify(v));
    t.not(parseTraceparent(tp)?.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  }
});

t.test('formatTraceparent', async (t) => {
  t.equal(formatTraceparent('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', 1), EXAMPLE);
  t.equal(formatTraceparent('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', 0x1ff), EXAMPLE.slice(0, -2) + 'ff');
});

t.test('newRequestId: a UUID v4, unique', async (t) => {
  const a = newRequestId();
  t.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  t.not(newRequestId(), a);
});
