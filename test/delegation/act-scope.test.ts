import t from 'tap';
import { DelegationError, actDepth, actorsOf, formatScope, narrowScope, nestAct, parseAct, parseScope } from '../../src/delegation/index.js';

const A = 'spiffe://example.org/agent/a';
const B = 'spiffe://example.org/agent/b';
const C = 'spiffe://example.org/agent/c';

t.test('nestAct / actorsOf / actDepth', async (t) => {
  const one = nestAct(A, undefined);
  t.same(one, { sub: A });
  const two = nestAct(B, one);
  t.same(two, { sub: B, act: { sub: A } });
  const three = nestAct(C, two);
  t.same(actorsOf(three), [C, B, A], 'outermost (current) first');
  t.same(actorsOf(undefined), []);
  t.equal(actDepth(undefined), 0);
  t.equal(actDepth(one), 1);
  t.equal(actDepth(three), 3);
  t.equal(two.act, one, 'the parent chain is kept as is');
});

t.test('parseAct validates untrusted act values', async (t) => {
  t.same(parseAct({ sub: B, act: { sub: A, iss: 'x' }, extra: 1 }), { sub: B, act: { sub: A } }, 'positive control; extra members dropped');
  for (const bad of [null, 'x', [], {}, { sub: '' }, { sub: 1 }, { sub: B, act: 'A' }, { sub: B, act: { sub: 2 } }, { sub: B, act: null }]) {
    t.throws(() => parseAct(bad), { code: 'delegation_invalid', detail: 'invalid_claim:act' }, JSON.stringify(bad));
  }
  let deep: unknown = { sub: A };
  for (let i = 0; i < 40; i++) deep = { sub: B, act: deep };
  t.throws(() => parseAct(deep), { code: 'delegation_too_deep' }, 'bounded walk');
  t.throws(() => parseAct({ sub: C, act: { sub: B, act: { sub: A } } }, 2), { code: 'delegation_too_deep', detail: 'depth' });
  t.same(actorsOf(parseAct({ sub: C, act: { sub: B, act: { sub: A } } }, 3)), [C, B, A]);
});

t.test('parseScope', async (t) => {
  t.same(parseScope('a b c'), ['a', 'b', 'c']);
  t.same(parseScope('b a b'), ['b', 'a'], 'unique, first-seen order');
  t.same(parseScope('  a  b '), ['a', 'b'], 'runs of spaces tolerated');
  t.same(parseScope(''), []);
  t.same(parseScope(undefined), []);
  t.same(parseScope(['x', 'y', 'x']), ['x', 'y'], 'array form (scp)');
  t.same(parseScope('tools:call mcp/tools.read !#$%&()*+,-./:;<=>?@[]^_`{|}~'), ['tools:call', 'mcp/tools.read', '!#$%&()*+,-./:;<=>?@[]^_`{|}~'], 'the RFC 6749 charset');
  for (const bad of ['a\tb', 'a\nb', 'a"b', 'a\\b', 'é', null, 42, {}, ['a b'], ['a', 1], ['']]) {
    t.throws(() => parseScope(bad), new DelegationError('delegation_invalid', 'scope'), JSON.stringify(bad));
  }
  t.throws(() => parseScope('x'.repeat(9000)), { code: 'delegation_invalid' }, 'too long');
  t.throws(() => parseScope(Array.from({ length: 300 }, (_, i) => `s${i}`).join(' ')), { code: 'delegation_invalid' }, 'too many tokens');
  t.equal(formatScope(['a', 'b']), 'a b');
});

t.test('narrowScope', async (t) => {
  t.same(narrowScope(['read', 'write'], ['read', 'write', 'admin']), { granted: ['read', 'write'], dropped: [] });
  t.same(narrowScope(['write', 'read', 'admin'], ['read', 'write']), { granted: ['write', 'read'], dropped: ['admin'] }, 'never wider than the parent; order of the request');
  t.same(narrowScope(undefined, ['read', 'write']), { granted: ['read', 'write'], dropped: [] }, 'no request → the parent');
  t.same(narrowScope(undefined, ['read', 'write'], ['read']), { granted: ['read'], dropped: ['write'] }, 'policy limit applies to inherited scope');
  t.same(narrowScope(['read', 'write'], ['read', 'write'], ['write']), { granted: ['write'], dropped: ['read'] });
  t.same(narrowScope(['read', 'read'], ['read']), { granted: ['read'], dropped: [] }, 'dedup');
  t.same(narrowScope([], ['read']), { granted: [], dropped: [] }, 'empty request → empty grant');
  t.same(narrowScope(['read'], [], ['read']), { granted: [], dropped: ['read'] }, 'empty parent grants nothing');
  t.same(narrowScope(['read'], ['read'], []), { granted: [], dropped: ['read'] }, 'empty allow-list grants nothing');
});
