// The probe's three outputs, all from the same results: a table for people, a JSON report for
// tooling (`--report`), and JUnit XML for CI systems (`--junit`): one testsuite per family,
// `fail` as <failure>, `error` as <error>, `skip` as <skipped>.
import type { AttackResult, Family } from './types.js';
import { summarize } from './runner.js';

export const REPORT_VERSION = 1;

export interface ProbeReport {
  version: typeof REPORT_VERSION;
  tool: 'sigil probe';
  target: { address: string; spiffeId: string };
  identity: string;
  victim: string;
  startedAt: string;
  finishedAt: string;
  summary: ReturnType<typeof summarize>;
  /** Notes about the target (e.g. it runs with unsafe test weakening). */
  warnings: string[];
  results: AttackResult[];
}

const LABEL: Record<AttackResult['verdict'], string> = { pass: 'PASS', fail: 'FAIL', error: 'ERROR', skip: 'SKIP' };

/** A fixed-width table: result, attack, expected, observed. Long cells are cut with an ellipsis. */
export function formatTable(results: readonly AttackResult[], width = 160): string {
  const rows = results.map((r) => [LABEL[r.verdict], r.id, r.expected, r.observed]);
  const header = ['RESULT', 'ATTACK', 'EXPECTED', 'OBSERVED'];
  const fixed = [6, Math.max(6, ...rows.map((r) => r[1]!.length)), Math.min(28, Math.max(8, ...rows.map((r) => r[2]!.length)))];
  const observedWidth = Math.max(20, width - fixed.reduce((a, b) => a + b + 2, 0));
  const widths = [...fixed, observedWidth];
  const line = (cells: string[]): string => cells.map((c, i) => fit(c, widths[i]!)).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

function fit(text: string, width: number): string {
  const oneLine = text.replace(/\s+/g, ' ');
  return oneLine.length > width ? `${oneLine.slice(0, width - 1)}…` : oneLine.padEnd(width);
}

export function formatSummary(report: ProbeReport): string {
  const s = report.summary;
  const verdict = s.ok ? 'target PASSED' : 'target FAILED';
  return `${verdict}: ${s.pass} passed, ${s.fail} failed, ${s.error} errors, ${s.skip} skipped (${report.target.spiffeId} at ${report.target.address})\n`;
}

export function toJunit(report: ProbeReport): string {
  const families = new Map<Family, AttackResult[]>();
  for (const r of report.results) families.set(r.family, [...(families.get(r.family) ?? []), r]);
  const suites = [...families].map(([family, results]) => {
    const s = summarize(results);
    const seconds = (ms: number): string => (ms / 1000).toFixed(3);
    const total = results.reduce((a, r) => a + r.durationMs, 0);
    const cases = results.map((r) => {
      const open = `    <testcase classname="sigil.probe.${family}" name="${xml(r.id)}" time="${seconds(r.durationMs)}">`;
      const detail = `expected: ${r.expected}; observed: ${r.observed}${r.control ? `; control: ${r.control}` : ''}`;
      switch (r.verdict) {
        case 'pass':
          return `    <testcase classname="sigil.probe.${family}" name="${xml(r.id)}" time="${seconds(r.durationMs)}"/>`;
        case 'fail':
          return `${open}\n      <failure message="${xml(`${r.title}: ${r.observed}`)}" type="accepted">${xml(detail)}</failure>\n    </testcase>`;
        case 'error':
          return `${open}\n      <error message="${xml(r.observed)}" type="inconclusive">${xml(detail)}</error>\n    </testcase>`;
        case 'skip':
          return `${open}\n      <skipped message="${xml(r.observed)}"/>\n    </testcase>`;
      }
    });
    return `  <testsuite name="sigil.probe.${family}" tests="${results.length}" failures="${s.fail}" errors="${s.error}" skipped="${s.skip}" time="${seconds(total)}" timestamp="${report.startedAt}">\n${cases.join('\n')}\n  </testsuite>`;
  });
  const all = report.summary;
  return `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="sigil probe" tests="${report.results.length}" failures="${all.fail}" errors="${all.error}" skipped="${all.skip}">\n${suites.join('\n')}\n</testsuites>\n`;
}

/** XML-escapes text for attributes and content; drops characters XML 1.0 cannot hold. */
function xml(text: string): string {
  return text
    .replace(/[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\u{10000}-\u{10ffff}]/gu, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}
