// Every relative link in the README, docs/, bench/ and the examples' READMEs points at a file
// that exists, and every #anchor at a heading of that file: moved or renamed pages and headings
// break here instead of in a reader's browser.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { anchors, relativeLinks } from '../helpers/markdown.js';

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

/** Broken links in one markdown text (read from `file`'s folder). */
export function brokenLinks(file: string, text: string, readAnchors: (file: string) => Set<string>): string[] {
  const broken: string[] = [];
  for (const href of new Set(relativeLinks(text))) {
    const [path, anchor] = href.split('#') as [string, string | undefined];
    const target = path === '' ? file : resolve(dirname(file), decodeURIComponent(path));
    if (!existsSync(target)) {
      broken.push(`${href}: no such file`);
      continue;
    }
    if (anchor !== undefined && target.endsWith('.md') && !readAnchors(target).has(anchor)) broken.push(`${href}: no such heading`);
  }
  return broken;
}

const cache = new Map<string, Set<string>>();
const readAnchors = (file: string): Set<string> => {
  let known = cache.get(file);
  if (!known) cache.set(file, (known = anchors(readFileSync(file, 'utf8'))));
  return known;
};

t.test('relative links resolve', async (t) => {
  const files = markdownFiles();
  t.ok(files.length > 15, `markdown files found (${files.length})`);
  let links = 0;
  for (const file of files) {
    const text = readFileSync(file, 'utf8');
    links += relativeLinks(text).length;
    t.same(brokenLinks(file, text, readAnchors), [], relative(REPO, file));
  }
  t.ok(links > 200, `links checked (${links})`);
});

t.test('the check catches a missing file and a missing heading', async (t) => {
  const file = join(REPO, 'docs/config.md');
  t.same(brokenLinks(file, 'see [x](nope.md) and [y](security.md#no-such-heading) and [z](#keys) and [w](https://example.org)', readAnchors), ['nope.md: no such file', 'security.md#no-such-heading: no such heading']);
});
