// docs/probe.md lists every attack with what it tries, what a correct target does and what a
// rejection proves: the rows must match the code, so the docs cannot drift from the battery.
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { allAttacks } from '../../src/probe/probe.js';

const doc = await readFile(new URL('../../../docs/probe.md', import.meta.url), 'utf8');
const escape = (text: string): string => text.replace(/\|/g, '\\|').replace(/<td>/g, '&lt;td&gt;');

t.test('every attack has its row in docs/probe.md', async (t) => {
  const attacks = allAttacks();
  t.ok(attacks.length > 40, 'the battery');
  t.equal(new Set(attacks.map((a) => a.id)).size, attacks.length, 'ids are unique');
  for (const a of attacks) {
    t.ok(a.id.startsWith(`${a.family}.`) && /^[a-z0-9.-]+$/.test(a.id), `${a.id}: <family>.<kebab-case>`);
    t.ok(doc.includes(`| \`${a.id}\` | ${escape(a.title)} | ${escape(a.expected)} | ${escape(a.proves)} |`), `${a.id} documented as in the code`);
  }
  const documented = [...doc.matchAll(/^\| `([a-z]+\.[a-z0-9-]+)` \|/gm)].map((m) => m[1]);
  t.same(documented.filter((id) => !attacks.some((a) => a.id === id)), [], 'no row for an attack that does not exist');
});
