import t from 'tap';
import { SpiffeId, SpiffeIdError, SpiffeIdPattern } from '../../src/spiffe/index.js';

const cases: Array<[string, string[], string[]]> = [
  // [pattern, matches, does not match]
  [
    'spiffe://example.org/agent/a',
    ['spiffe://example.org/agent/a'],
    ['spiffe://example.org/agent/A', 'spiffe://example.org/agent/a/b', 'spiffe://example.org/agent', 'spiffe://example.com/agent/a'],
  ],
  [
    'spiffe://example.org/agent/*',
    ['spiffe://example.org/agent/a', 'spiffe://example.org/agent/b-2'],
    [
      'spiffe://example.org/agent/a/b',
      'spiffe://example.org/agent',
      'spiffe://example.org',
      'spiffe://example.org/other/a',
      'spiffe://partner.example/agent/a',
    ],
  ],
  [
    'spiffe://example.org/agent/**',
    ['spiffe://example.org/agent/a', 'spiffe://example.org/agent/a/b', 'spiffe://example.org/agent/a/b/c/d'],
    ['spiffe://example.org/agent', 'spiffe://example.org', 'spiffe://example.org/agents/a', 'spiffe://partner.example/agent/a'],
  ],
  [
    'spiffe://example.org/ns/*/sa/*',
    ['spiffe://example.org/ns/default/sa/web'],
    ['spiffe://example.org/ns/default/sa', 'spiffe://example.org/ns/default/sa/web/x', 'spiffe://example.org/ns/default/xx/web'],
  ],
  [
    'spiffe://example.org/*/x/**',
    ['spiffe://example.org/a/x/b', 'spiffe://example.org/a/x/b/c'],
    ['spiffe://example.org/a/x', 'spiffe://example.org/a/b/x/c'],
  ],
  ['spiffe://example.org/**', ['spiffe://example.org/a', 'spiffe://example.org/a/b'], ['spiffe://example.org', 'spiffe://other.org/a']],
  ['spiffe://example.org/*', ['spiffe://example.org/a'], ['spiffe://example.org', 'spiffe://example.org/a/b']],
  ['spiffe://example.org', ['spiffe://example.org'], ['spiffe://example.org/a']],
];

t.test('matching', async (t) => {
  for (const [pattern, yes, no] of cases) {
    const p = SpiffeIdPattern.parse(pattern);
    t.equal(p.toString(), pattern);
    for (const id of yes) {
      t.ok(p.matches(id), `${pattern} matches ${id}`);
      t.ok(p.matches(SpiffeId.parse(id)), `${pattern} matches parsed ${id}`);
    }
    for (const id of no) t.notOk(p.matches(id), `${pattern} does not match ${id}`);
  }
});

t.test('wildcards never match literally-named segments with stars', async (t) => {
  // "*" is not a legal path character, so an ID cannot smuggle a literal "*" past a pattern.
  const p = SpiffeIdPattern.parse('spiffe://example.org/agent/*');
  t.notOk(p.matches('spiffe://example.org/agent/*'));
  t.ok(p.matches('spiffe://example.org/agent/x'), 'positive control');
});

t.test('invalid ID strings do not match and do not throw', async (t) => {
  const p = SpiffeIdPattern.parse('spiffe://example.org/agent/**');
  for (const id of ['', 'spiffe://example.org/agent/../admin', 'spiffe://example.org/agent/a/', 'spiffe://EXAMPLE.org/agent/a']) {
    t.notOk(p.matches(id), JSON.stringify(id));
  }
});

t.test('invalid patterns', async (t) => {
  const bad: Array<[string, string]> = [
    ['spiffe://example.org/agent/a*', 'bad_wildcard'],
    ['spiffe://example.org/agent/*a', 'bad_wildcard'],
    ['spiffe://example.org/agent/***', 'bad_wildcard'],
    ['spiffe://example.org/**/a', 'bad_wildcard'],
    ['spiffe://example.org/**/**', 'bad_wildcard'],
    ['spiffe://*.example.org/a', 'wildcard_trust_domain'],
    ['spiffe://*/a', 'wildcard_trust_domain'],
    ['spiffe://**', 'wildcard_trust_domain'],
    ['spiffe://example.org/agent/', 'trailing_slash'],
    ['spiffe://example.org/agent//*', 'empty_segment'],
    ['spiffe://example.org/../*', 'dot_segment'],
    ['spiffe://example.org/a b/*', 'bad_path_char'],
    ['spiffe://example.org/*?x', 'query'],
    ['spiffe://Example.org/*', 'bad_trust_domain_char'],
    ['example.org/*', 'wrong_scheme'],
    ['', 'empty'],
  ];
  for (const [pattern, problem] of bad) {
    try {
      SpiffeIdPattern.parse(pattern);
      t.fail(`${pattern} should be rejected`);
    } catch (e) {
      t.ok(e instanceof SpiffeIdError, pattern);
      t.equal((e as SpiffeIdError).problem, problem, `${pattern} → ${problem}`);
    }
  }
});
