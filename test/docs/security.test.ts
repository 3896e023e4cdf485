// docs/security.md is what a security review reads: its reason-code table, the `sigil probe`
// attacks its threat model cites as evidence must match the code, so that the page cannot drift
// from what Sigil does (its links are checked with every page's, in links.test.ts).
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { REASON_CODES } from '../../src/authz/reasons.js';
import { allAttacks } from '../../src/probe/probe.js';

const docsDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../../docs');
const doc = readFileSync(resolve(docsDir, 'security.md'), 'utf8');

/** The lines of one `## ` section, up to the next one. */
function section(text: string, heading: string): string {
  const start = text.indexOf(`\n## ${heading}\n`);
  if (start < 0) return '';
  const end = text.indexOf('\n## ', start + 1);
  return text.slice(start, end < 0 ? undefined : end);
}

t.test('the reason-code table lists exactly the closed set (allowed aside)', async (t) => {
  const table = section(doc, 'Reason codes');
  t.ok(table.length > 0, 'the section exists');
  const rows = [...table.matchAll(/^\| `([a-z_]+)`/gm)].map((m) => m[1]!);
  t.ok(rows.length > 30, `the table (${rows.length} rows)`);
  const codes = new Set<string>(REASON_CODES);
  t.same(rows.filter((c) => !codes.has(c)), [], 'no row for a code that does not exist');
  t.same(REASON_CODES.filter((c) => c !== 'allowed' && !rows.includes(c)), [], 'every code has a row');
});

t.test('every probe attack the threat model cites exists, and every attack is cited', async (t) => {
  const ids = allAttacks().map((a) => a.id);
  // "probe: `a`, `b`" (also "Probe:"), possibly wrapped over lines.
  const flat = doc.replace(/\s*\n\s*/g, ' ');
  const cited = [...flat.matchAll(/\b[Pp]robe: ((?:`[a-z0-9.*-]+`(?:, )?)+)/g)].flatMap((m) => [...m[1]!.matchAll(/`([^`]+)`/g)].map((c) => c[1]!));
  t.ok(cited.length > 40, `citations found (${cited.length})`);
  const matches = (token: string, id: string): boolean => (token.endsWith('*') ? id.startsWith(token.slice(0, -1)) : id === token);
  t.same(cited.filter((token) => !ids.some((id) => matches(token, id))), [], 'no citation of an attack that does not exist');
  t.same(ids.filter((id) => !cited.some((token) => matches(token, id))), [], 'every attack backs a threat');
});
