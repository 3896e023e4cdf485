// The revocation file format (parseRevocationFile): YAML or JSON, a bare list or
// { revocations: [...] }, stable derived ids, and errors that point at the offending line item.
import t from 'tap';
import { RevocationFileError, parseRevocationFile, parseRevocationEntry, type RevocationEntry } from '../../src/revocation/index.js';

const NOW = Date.parse('2030-06-01T12:00:00.000Z');
const PATH = '/etc/sigil/revocations.yaml';
const FP = 'ef'.repeat(32);

const parse = (text: string, now = NOW): RevocationEntry[] => parseRevocationFile(text, PATH, now);

/** The message of the RevocationFileError `text` raises; '(accepted)' when it parses. */
function errorOf(text: string): string {
  try {
    parse(text);
  } catch (err) {
    if (err instanceof RevocationFileError) {
      if (err.code !== 'revocation_file_invalid') return `wrong code ${err.code}`;
      return err.message;
    }
    throw err;
  }
  return '(accepted)';
}

const YAML_DOC = `
revocations:
  - kind: agent
    value: spiffe://example.org/agent/rogue
    reason: compromised
  - kind: svid
    value: ${FP.toUpperCase()}
    expiresAt: 2030-07-01T00:00:00Z
  - id: explicit-id-01
    kind: trust_domain
    value: partner.example
`;

t.test('YAML with { revocations: [...] }', async (t) => {
  const entries = parse(YAML_DOC);
  t.equal(entries.length, 3);
  const [agent, svid, td] = entries as [RevocationEntry, RevocationEntry, RevocationEntry];
  t.match(agent, { kind: 'agent', value: 'spiffe://example.org/agent/rogue', reason: 'compromised', revokedBy: `file:${PATH}`, revokedAt: NOW });
  t.match(agent.id, /^file-[0-9a-f]{32}$/, 'derived id');
  t.notOk('expiresAt' in agent);
  t.match(svid, { kind: 'svid', value: `sha256:${FP}`, reason: '', expiresAt: Date.parse('2030-07-01T00:00:00Z') }, 'values normalized; an unquoted YAML timestamp is a time');
  t.same(td, { id: 'file-explicit-id-01', kind: 'trust_domain', value: 'partner.example', reason: '', revokedBy: `file:${PATH}`, revokedAt: NOW }, 'an explicit id is kept, under the file- prefix (records can never name it)');
});

t.test('YAML bare list, JSON object and JSON bare list give the same entries', async (t) => {
  const items = [
    { kind: 'agent', value: 'spiffe://example.org/agent/rogue', reason: 'compromised' },
    { kind: 'task', value: 'task-42' },
  ];
  const yamlList = `- kind: agent\n  value: spiffe://example.org/agent/rogue\n  reason: compromised\n- kind: task\n  value: task-42\n`;
  const fromYamlList = parse(yamlList);
  const fromJsonObject = parse(JSON.stringify({ revocations: items }, null, 2));
  const fromJsonList = parse(JSON.stringify(items));
  t.equal(fromYamlList.length, 2);
  t.same(fromJsonObject, fromYamlList);
  t.same(fromJsonList, fromYamlList);
  t.match(fromYamlList[1], { kind: 'task', value: 'task-42', reason: '' });
});

t.test('derived ids: stable across parses, different for different values', async (t) => {
  const one = parse(YAML_DOC, NOW);
  const two = parse(YAML_DOC, NOW + 60_000);
  t.same(
    one.map((e) => e.id),
    two.map((e) => e.id),
    'same file parsed again later: same ids',
  );
  const reordered = parse(`- {kind: task, value: b}\n- {kind: task, value: a}\n- {kind: user, value: a}\n`);
  const [b, a, userA] = reordered as [RevocationEntry, RevocationEntry, RevocationEntry];
  const aAgain = parse(`- {kind: task, value: a, reason: other words}\n`)[0]!;
  t.not(a.id, b.id, 'different values, different ids');
  t.not(a.id, userA.id, 'same value, different kind: different ids');
  t.equal(aAgain.id, a.id, 'the id depends on kind and value only (the reason may be edited)');
  t.equal(parse(`- {kind: task, value: a}`)[0]!.id, a.id, 'position in the file does not matter');
  t.ok(new Set([a.id, b.id, userA.id]).size === 3);
  for (const e of reordered) t.match(e.id, /^file-[0-9a-f]{32}$/);
});

t.test('an explicitly empty list is no entries; an empty file is refused (a writer caught mid-write must not lift everything)', async (t) => {
  for (const text of ['[]', 'revocations: []', '{"revocations": []}']) {
    t.same(parse(text), [], JSON.stringify(text));
  }
  for (const text of ['', '\n', '# only a comment\n', 'null', '~', '---\n', '{}', 'revocations:', 'revocations: ~']) {
    t.throws(() => parse(text), RevocationFileError, `${JSON.stringify(text)} is refused`);
  }
});

t.test('an entry whose expiresAt has passed (and no revokedAt) is valid: it just no longer applies', async (t) => {
  const [e] = parse(`- {kind: task, value: old, expiresAt: 2020-01-01T00:00:00Z}\n`);
  t.ok(e!.expiresAt! < NOW && e!.revokedAt < e!.expiresAt!, 'parsed, with a revocation time before its expiry');
  const [f] = parse(`- {kind: task, value: new, expiresAt: 2099-01-01T00:00:00Z}\n`);
  t.equal(f!.revokedAt, NOW, 'positive control: an entry still in force is dated at the read time');
});

t.test('unknown top-level keys and other shapes are refused', async (t) => {
  for (const text of [
    'revocation:\n  - {kind: task, value: a}\n',
    'revocations: []\nextra: 1\n',
    '{"revocations": [], "version": 1}',
    'revocations: {kind: task, value: a}\n',
    'revocations: just text\n',
    'just text',
    '42',
    'true',
  ]) {
    t.match(errorOf(text), /^revocation\.file: \/etc\/sigil\/revocations\.yaml: expected a list of entries or \{ revocations: \[\.\.\.\] \} \(write `revocations: \[\]` to clear it\)$/, JSON.stringify(text));
  }
});

t.test('text that is not YAML is refused with one line of explanation', async (t) => {
  for (const text of ['revocations: [', '{"revocations": [}', 'a: b: c', '- kind: task\n value: x\n  bad indent: [']) {
    const msg = errorOf(text);
    t.match(msg, /^revocation\.file: \/etc\/sigil\/revocations\.yaml: not valid YAML or JSON: /, JSON.stringify(text));
    t.notMatch(msg, /\n/, 'one line');
  }
  t.match(errorOf('revocations:\n  - {kind: task, value: a}\nrevocations: []\n'), /not valid YAML or JSON/, 'duplicate top-level key');
});

t.test('invalid entries name revocations[i].field', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['unknown field', `- {kind: task, value: a}\n- {kind: task, value: b, comment: x}\n`, /revocations\[1\]\.comment: unknown field$/],
    ['bad kind', `- {kind: everything, value: a}\n`, /revocations\[0\]\.kind: must be one of /],
    ['missing kind', `- {value: a}\n`, /revocations\[0\]\.kind: /],
    ['empty value', `- {kind: task, value: a}\n- {kind: task, value: a2}\n- {kind: task, value: ""}\n`, /revocations\[2\]\.value: must be a non-empty string$/],
    ['value not a string', `- {kind: task, value: 42}\n`, /revocations\[0\]\.value: /],
    ['bad agent', `- {kind: agent, value: "spiffe://example.org/a*"}\n`, /revocations\[0\]\.value: not a SPIFFE ID or pattern/],
    ['bad svid', `- {kind: svid, value: nothex}\n`, /revocations\[0\]\.value: /],
    ['control character', `- {kind: user, value: "a\\u0007b"}\n`, /revocations\[0\]\.value: /],
    ['bad id', `- {id: short, kind: task, value: a}\n`, /revocations\[0\]\.id: must be 8-64 characters/],
    ['id not a string', `- {id: 123456789, kind: task, value: a}\n`, /revocations\[0\]\.id: /],
    ['expiry before the revocation', `- {kind: task, value: a, revokedAt: 2021-01-01T00:00:00Z, expiresAt: 2020-01-01T00:00:00Z}\n`, /revocations\[0\]\.expiresAt: must be after the revocation time$/],
    ['bad time', `- {kind: task, value: a, expiresAt: next tuesday}\n`, /revocations\[0\]\.expiresAt: /],
    ['not an object', `- {kind: task, value: a}\n- just a string\n`, /revocations\[1\]\.entry: must be an object$/],
    ['a list item', `- [kind, task]\n`, /revocations\[0\]\.entry: must be an object$/],
    ['null item', `- {kind: task, value: a}\n- \n`, /revocations\[1\]\.entry: must be an object$/],
  ];
  for (const [what, text, pattern] of cases) {
    const msg = errorOf(text);
    t.match(msg, /^revocation\.file: \/etc\/sigil\/revocations\.yaml: revocations\[\d+\]\./, `${what}: names the path and the item`);
    t.match(msg, pattern, what);
  }
  // Positive control: the same shapes, valid.
  t.equal(parse(`- {kind: task, value: a}\n- {kind: task, value: b, reason: x}\n- {id: long-enough, kind: task, value: a, expiresAt: 2031-01-01T00:00:00Z}\n`).length, 3);
});

t.test('one bad entry refuses the whole file', async (t) => {
  t.match(errorOf(`- {kind: task, value: good}\n- {kind: nope, value: bad}\n`), /revocations\[1\]\.kind/);
  t.equal(parse(`- {kind: task, value: good}\n`).length, 1, 'positive control: the good entry alone parses');
});

t.test('entries carry what the file says, and the file path otherwise', async (t) => {
  const [e] = parse(`- kind: user\n  value: mallory\n  revokedBy: ops-team\n  revokedAt: 2030-05-01T00:00:00Z\n  reason: left\n`);
  t.same(e, { id: e!.id, kind: 'user', value: 'mallory', reason: 'left', revokedBy: 'ops-team', revokedAt: Date.parse('2030-05-01T00:00:00Z') });
  // A file entry is an ordinary entry: the parser agrees with parseRevocationEntry.
  const direct = parseRevocationEntry({ kind: 'user', value: 'mallory', reason: 'left', revokedBy: 'ops-team', revokedAt: '2030-05-01T00:00:00Z' }, { id: e!.id, revokedBy: 'x', now: 0 });
  t.same(e, direct);
});

t.test('an expired file entry is parsed; expiry is the set’s business', async (t) => {
  const [e] = parse(`- {kind: task, value: a, revokedAt: 2020-01-01T00:00:00Z, expiresAt: 2020-02-01T00:00:00Z}\n`);
  t.equal(e!.expiresAt, Date.parse('2020-02-01T00:00:00Z'));
});

t.test('the same entry twice in one file is refused (explicit ids, prefixed ids, or the same kind and value)', async (t) => {
  for (const text of [
    '- {id: abcdefgh, kind: task, value: a}\n- {id: file-abcdefgh, kind: task, value: b}\n',
    '- {kind: task, value: a}\n- {kind: task, value: a, reason: again}\n',
  ]) {
    t.match(errorOf(text), /revocations\[1\]\.id: the same entry as revocations\[0\]/, JSON.stringify(text));
  }
  t.equal(parse('- {id: abcdefgh, kind: task, value: a}\n- {id: abcdefgi, kind: task, value: b}\n').length, 2, 'positive control: two different entries');
});
