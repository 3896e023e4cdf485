// The shared issue wording (src/config/issues.ts): zod issues in plain words, "did you mean" by
// either strategy, one ConfigError listing schema, raw and data issues in that order, once each.
import t from 'tap';
import { z } from 'zod';
import { ConfigError, dedupeIssues, validateDocument, zodConfigIssues, type IssueWording } from '../../src/config/index.js';

const Schema = z.strictObject({ trust: z.number().optional(), count: z.number().optional(), mode: z.enum(['a', 'b']).optional() });
const knownKeys = { '': Object.keys(Schema.shape) };

function issues(raw: unknown, wording: IssueWording = { knownKeys }) {
  const r = Schema.safeParse(raw, { reportInput: true });
  return r.success ? [] : r.error.issues.flatMap((i) => zodConfigIssues(i, wording));
}

t.test('zodConfigIssues: wording', async (t) => {
  t.strictSame(issues({ count: 'x' }), [{ path: 'count', message: 'expected number, got string' }]);
  t.strictSame(issues({ count: NaN }), [{ path: 'count', message: 'expected number, got NaN' }]);
  t.strictSame(issues({ count: NaN }, { knownKeys, nameNonFinite: false }), [{ path: 'count', message: 'expected number, got number' }]);
  t.strictSame(issues({ mode: 'c' }), [{ path: 'mode', message: 'expected "a" or "b", got "c"' }]);
});

t.test('zodConfigIssues: did you mean', async (t) => {
  t.strictSame(issues({ cont: 1 }), [{ path: '', message: 'unknown key "cont" (did you mean "count"?)' }]);
  t.strictSame(issues({ tru: 1 }), [{ path: '', message: 'unknown key "tru"' }], 'closest: too far for a short key');
  t.strictSame(issues({ tru: 1 }, { knownKeys, suggest: 'first-within-2' }), [{ path: '', message: 'unknown key "tru" (did you mean "trust"?)' }]);
});

t.test('validateDocument: one error, every issue once, in order', async (t) => {
  const checks = { wording: { knownKeys }, rawIssues: [{ path: 'x', message: 'raw' }, { path: 'count', message: 'expected number, got string' }], dataIssues: () => [{ path: 'y', message: 'data' }] };
  try {
    validateDocument(Schema, { count: 'x' }, '/f.yaml', checks);
    t.fail('expected a ConfigError');
  } catch (e) {
    t.ok(e instanceof ConfigError);
    t.strictSame((e as ConfigError).issues, [{ path: 'count', message: 'expected number, got string' }, { path: 'x', message: 'raw' }], 'no data issues when the schema fails; duplicates once');
  }
  try {
    validateDocument(Schema, {}, '/f.yaml', checks);
    t.fail('expected a ConfigError');
  } catch (e) {
    t.strictSame((e as ConfigError).issues, [{ path: 'x', message: 'raw' }, { path: 'count', message: 'expected number, got string' }, { path: 'y', message: 'data' }], 'schema passes: raw, then data issues');
  }
  t.strictSame(validateDocument(Schema, { count: 1 }, '/f.yaml', { wording: { knownKeys } }), { count: 1 });
  t.strictSame(dedupeIssues([{ path: 'a', message: 'm' }, { path: 'a', message: 'm' }, { path: 'b', message: 'm' }]), [{ path: 'a', message: 'm' }, { path: 'b', message: 'm' }]);
});
