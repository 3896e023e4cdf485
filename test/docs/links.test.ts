// Every relative link in the README, docs/, bench/ and the examples' READMEs points at a file
// that exists, and every #anchor at a heading of that file: moved or renamed pages and headings
// break here instead of in a reader's browser.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { brokenLinks, relativeLinks } from '../helpers/markdown.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

function markdownFiles(): string[] {
  const files = [join(REPO, 'README.md'), join(REPO, 'bench/README.md')];
  for (const f of readdirSync(join(REPO, 'docs'))) if (f.endsWith('.md')) files.push(join(REPO, 'docs', f));
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir)) {
      const p = join(dir, entry);
      if (statSync(p).isDirectory()) walk(p);
      else if (entry.endsWith('.md')) files.push(p);
    }
  };
  walk(join(REPO, 'examples'));
  return files;
}

t.test('relative links resolve', async (t) => {
  const files = markdownFiles();
  t.ok(files.length > 15, `markdown files found (${files.length})`);
  let links = 0;
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    links += relativeLinks(text).length;
    t.same(brokenLinks(file, text), [], relative(REPO, file));
  }
  t.ok(links > 200, `links checked (${links})`);
});

t.test('the check catches a missing file and a missing heading', async (t) => {
  const file = join(REPO, 'docs/config.md');
  t.same(brokenLinks(file, 'see [x](nope.md) and [y](security.md#no-such-heading) and [z](security.md#threat-model) and [w](https://example.org) and `[v](inside-code.md)`'), ['nope.md: no such file', 'security.md#no-such-heading: no such heading']);
});
