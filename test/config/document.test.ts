// The shared config-file layer (src/config/document.ts): format from the extension, read errors
// in plain words, YAML/JSON syntax errors with positions, and the broker's wording options.
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { ConfigError, parseConfigText, readConfigFile } from '../../src/config/index.js';

function issuesOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.issues;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

async function rejectedIssues(p: Promise<unknown>): Promise<{ path: string; message: string }[]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ConfigError) return e.issues;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

t.test('readConfigFile: format, text and file errors', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sigil-document-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(path.join(dir, 'a.YML'), 'x: 1\n');
  await writeFile(path.join(dir, 'b.json'), '{}');
  await writeFile(path.join(dir, 'c.toml'), '');
  await mkdir(path.join(dir, 'd.yaml'));

  t.strictSame(await readConfigFile(path.join(dir, 'a.YML')), { abs: path.join(dir, 'a.YML'), format: 'yaml', text: 'x: 1\n' }, 'extension case-insensitive');
  t.equal((await readConfigFile(path.join(dir, 'b.json'))).format, 'json');
  t.strictSame(await rejectedIssues(readConfigFile(path.join(dir, 'c.toml'))), [
    { path: '', message: 'unsupported config file extension ".toml" (use .yaml, .yml or .json)' },
  ]);
  const missing = path.join(dir, 'nope.yaml');
  t.strictSame(await rejectedIssues(readConfigFile(missing)), [{ path: '', message: `file not found: ${missing}` }]);
  const folder = path.join(dir, 'd.yaml');
  t.strictSame(await rejectedIssues(readConfigFile(folder)), [{ path: '', message: `is a directory, not a file: ${folder}` }]);
  const under = path.join(dir, 'b.json', 'x.yaml');
  t.match(await rejectedIssues(readConfigFile(under)), [{ path: '', message: `cannot read ${under}: ENOTDIR` }], 'other errors: generic');
});

t.test('readConfigFile: EACCES worded by option', { skip: process.getuid?.() === 0 ? 'root reads unreadable files' : false }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sigil-document-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const locked = path.join(dir, 'locked.yaml');
  await writeFile(locked, 'x: 1\n');
  await chmod(locked, 0o000);
  t.strictSame(await rejectedIssues(readConfigFile(locked)), [{ path: '', message: `permission denied reading ${locked}` }]);
  t.match(await rejectedIssues(readConfigFile(locked, { explainPermissionDenied: false })), [{ path: '', message: `cannot read ${locked}: EACCES` }]);
});

t.test('parseConfigText: JSON', async (t) => {
  t.strictSame(parseConfigText('\ufeff{"a": [1]}', 'json', '/x.json'), { a: [1] }, 'BOM stripped');
  const bad = '{\n  "a": 1\n  "b": 2\n}';
  t.match(issuesOf(() => parseConfigText(bad, 'json', '/x.json')), [{ path: '', message: /^JSON syntax error at line 3, column 3: [^]*[^0-9]$/ }], 'located');
  t.match(
    issuesOf(() => parseConfigText(bad, 'json', '/x.json', { locateJsonErrors: false })),
    [{ path: '', message: /^JSON syntax error: .*position 13/ }],
    'not located: the runtime message as it is',
  );
  t.strictSame(issuesOf(() => parseConfigText('null', 'json', '/x.json')), [{ path: '', message: 'config is empty' }]);
});

t.test('parseConfigText: YAML', async (t) => {
  t.strictSame(parseConfigText('a:\n  - 1\n', 'yaml', '/x.yaml'), { a: [1] });
  t.match(issuesOf(() => parseConfigText('a: 1\na: 2\n', 'yaml', '/x.yaml')), [{ path: '', message: /^YAML syntax error at line 2, column 1: / }], 'duplicate keys');
  t.match(
    issuesOf(() => parseConfigText(`a: &x [1]\n${Array.from({ length: 200 }, (_, i) => `b${i}: *x`).join('\n')}\n`, 'yaml', '/x.yaml')),
    [{ path: '', message: /^YAML error: / }],
    'alias limit',
  );
  t.strictSame(issuesOf(() => parseConfigText('', 'yaml', '/x.yaml')), [{ path: '', message: 'config is empty' }]);
});
