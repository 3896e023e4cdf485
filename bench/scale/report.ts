// One table per scale curve: the median and p99 of per-batch means, each row beside the
// curve's baseline.
import { fmt, printTable, summarize } from '../lib.js';

export interface CurveRow {
  name: string;
  /** Mean µs per call of each timed batch. */
  batchUs: number[];
  /** Calls per batch. */
  batch: number;
}

export function reportCurve(title: string, rows: CurveRow[], baseline: CurveRow, extra: { header: string; cell: (r: CurveRow) => string }[] = []): void {
  const base = summarize(baseline.batchUs).median;
  process.stdout.write(`\n### ${title}\n`);
  printTable(
    ['row', 'µs/call median', 'p99 (batch mean)', 'calls', 'vs baseline', ...extra.map((e) => e.header)],
    rows.map((r) => {
      const s = summarize(r.batchUs);
      return [r.name, fmt(s.median, 2), fmt(s.p99, 2), String(s.n * r.batch), r === baseline ? 'baseline' : `${fmt(s.median / base, 2)}x`, ...extra.map((e) => e.cell(r))];
    }),
  );
}
