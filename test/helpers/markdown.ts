// Checks that keep a docs page honest against the repository: its relative links and heading
// anchors resolve, and the names it quotes (environment variables, metrics) exist in the code.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/** GitHub's heading anchors: lower case, punctuation dropped, each space a dash, repeats numbered. */
export function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const m = !fenced && /^#{1,6} (.+)$/.exec(line);
    if (!m) continue;
    const base = m[1]!.trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** Targets of `[text](target)` links outside code fences that are not absolute URLs (`https:`, `mailto:`). */
export function relativeLinks(markdown: string): string[] {
  let fenced = false;
  const out: string[] = [];
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    if (fenced) continue;
    for (const m of line.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)\)/g)) {
      if (!/^[a-z][a-z0-9+.-]*:/i.test(m[1]!)) out.push(m[1]!);
    }
  }
  return [...new Set(out)];
}

/**
 * The relative links of the page at `file` whose file does not exist or whose `#anchor` is not
 * a heading of the Markdown file it points at; each with the reason.
 */
export function brokenLinks(file: string, markdown = readFileSync(file, 'utf8')): string[] {
  const problems: string[] = [];
  const headings = new Map<string, Set<string>>();
  for (const href of relativeLinks(markdown)) {
    const [path, anchor] = href.split('#') as [string, string | undefined];
    const target = path === '' ? file : resolve(dirname(file), decodeURIComponent(path));
    if (!existsSync(target)) {
      problems.push(`${href}: no such file`);
      continue;
    }
    if (anchor === undefined || !target.endsWith('.md')) continue;
    let known = headings.get(target);
    if (!known) headings.set(target, (known = anchors(target === file ? markdown : readFileSync(target, 'utf8'))));
    if (!known.has(anchor)) problems.push(`${href}: no such heading`);
  }
  return problems;
}

/** `SIGIL_*` names the text mentions that are not in `known` (a trailing `_`, as in `SIGIL_BROKER_*`, is a prefix, not a name). */
export function unknownVariables(text: string, known: ReadonlySet<string>): string[] {
  const named = new Set([...text.matchAll(/\bSIGIL_[A-Z0-9_]+/g)].map((m) => m[0]).filter((n) => !n.endsWith('_')));
  return [...named].filter((n) => !known.has(n)).sort();
}

/** `sigil_*` metric names the text mentions (histogram series folded into their metric) that are not in `known`. */
export function unknownMetrics(text: string, known: ReadonlySet<string>): string[] {
  const named = new Set([...text.matchAll(/\bsigil_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, '')));
  return [...named].filter((n) => !known.has(n)).sort();
}

/** Every metric name `src/telemetry/metrics.ts` registers (`name: 'sigil_…'`). */
export function registeredMetrics(metricsSource: string): Set<string> {
  return new Set([...metricsSource.matchAll(/\bname: '(sigil_[a-z0-9_]+)'/g)].map((m) => m[1]!));
}
