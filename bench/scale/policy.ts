// Policy size curve: the cost of one uncached Cedar decision (CedarAuthorizer.authorize, decision
// cache dropped before every batch) with 10, 100 and 1,000 rules, and of compiling the policy
// (what a reload costs). Each size runs in its own child process (see policy-child.ts for why),
// one process per size and round; sizes take turns in alternating order.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { fmt, summarize } from '../lib.js';
import type { ScaleOptions } from './options.js';
import type { PolicyShape } from './policy-fixture.js';
import { reportCurve, type CurveRow } from './report.js';

const run = promisify(execFile);
const CHILD = fileURLToPath(new URL('./policy-child.js', import.meta.url));

interface ChildResult {
  compileMs: number;
  firstCallUs: number[];
  rssGrowthMiB: number;
  slices: number;
  batchUs: number[];
  allowed: number;
  calls: number;
}

interface SizeRow extends CurveRow {
  rules: number;
  shape: PolicyShape;
  compileMs: number[];
  firstCallUs: number[];
  rssGrowthMiB: number[];
  slices: number;
  allowed: number;
  calls: number;
}

async function measureOnce(rules: number, shape: PolicyShape, seconds: number): Promise<ChildResult> {
  const { stdout } = await run(process.execPath, [CHILD, '--rules', String(rules), '--shape', shape, '--seconds', String(seconds), '--warmup', String(Math.min(0.3, seconds))], {
    maxBuffer: 64 * 1024 * 1024,
    timeout: Math.ceil((seconds + 120) * 1000),
  });
  return JSON.parse(stdout) as ChildResult;
}

export async function runPolicyCurve(o: ScaleOptions): Promise<void> {
  const row = (rules: number, shape: PolicyShape, name: string): SizeRow => ({ name, rules, shape, batchUs: [], batch: 64, compileMs: [], firstCallUs: [], rssGrowthMiB: [], slices: 0, allowed: 0, calls: 0 });
  const largest = o.policySizes[o.policySizes.length - 1]!;
  const rows: SizeRow[] = [
    ...o.policySizes.map((rules) => row(rules, 'pinned', `Cedar, ${rules} rules`)),
    // The same rules with the agent in the condition: no slice, the whole policy per call.
    ...(o.policySizes.length > 1 ? [row(largest, 'unpinned', `Cedar, ${largest} rules, agent in the condition (no slice)`)] : []),
  ];
  for (let round = 0; round < o.rounds; round++) {
    for (const r of round % 2 === 0 ? rows : [...rows].reverse()) {
      const res = await measureOnce(r.rules, r.shape, o.seconds / o.rounds);
      r.batchUs.push(...res.batchUs);
      r.compileMs.push(res.compileMs);
      r.firstCallUs.push(...res.firstCallUs);
      r.rssGrowthMiB.push(res.rssGrowthMiB);
      r.slices = res.slices;
      r.allowed += res.allowed;
      r.calls += res.calls;
    }
  }
  reportCurve('policy size: one uncached Cedar decision, a process per size and round (baseline: the smallest policy)', rows, rows[0]!, [
    { header: 'compile ms (reload)', cell: (r) => fmt(summarize((r as SizeRow).compileMs).median, 0) },
    { header: 'first call per agent µs (median, p99)', cell: (r) => `${fmt(summarize((r as SizeRow).firstCallUs).median, 0)}, ${fmt(summarize((r as SizeRow).firstCallUs).p99, 0)}` },
    { header: 'slices', cell: (r) => String((r as SizeRow).slices) },
    { header: 'RSS added by 63 agents MiB', cell: (r) => fmt(summarize((r as SizeRow).rssGrowthMiB).median, 1) },
  ]);
  process.stdout.write(
    `allowed: ${rows.map((r) => `${r.rules} rules ${fmt((100 * r.allowed) / Math.max(1, r.calls), 0)}%`).join(', ')} (requests cycle over 63 agent pairs, each rule names one pair)\n`,
  );
}
