// Runs the battery: for each attack, its positive control and then the attack, one at a time
// (never in parallel: the probe must stay a gentle client of a production target), each bounded
// by its own timeout. A control that is not accepted makes the attack's verdict `error`: a
// target that refuses everything proves nothing and must not pass.
import { ProbeStepError } from './client.js';
import { AttackSkipped, type Attack, type AttackResult, type Outcome, type ProbeContext, type Verdict } from './types.js';

export interface RunHooks {
  /** Before an attack starts (progress display). */
  onStart?(attack: Attack, index: number, total: number): void;
  onResult?(result: AttackResult, index: number, total: number): void;
}

export async function runAttacks(ctx: ProbeContext, attacks: readonly Attack[], hooks: RunHooks = {}): Promise<AttackResult[]> {
  const results: AttackResult[] = [];
  for (const [index, attack] of attacks.entries()) {
    hooks.onStart?.(attack, index, attacks.length);
    const result = await runOne(ctx, attack);
    results.push(result);
    hooks.onResult?.(result, index, attacks.length);
  }
  return results;
}

async function runOne(ctx: ProbeContext, attack: Attack): Promise<AttackResult> {
  const started = Date.now();
  const result = (verdict: Verdict, observed: string, control?: string): AttackResult => ({
    id: attack.id,
    family: attack.family,
    title: attack.title,
    expected: attack.expected,
    verdict,
    observed,
    ...(control === undefined ? {} : { control }),
    durationMs: Date.now() - started,
  });

  const skipped = attack.skip?.(ctx);
  if (skipped !== undefined) return result('skip', skipped);

  const control = await bounded(ctx.stepTimeoutMs, 'positive control', (signal) => attack.control(ctx, signal));
  if ('skipped' in control) return result('skip', control.skipped);
  if ('failed' in control) return result('error', `positive control failed: ${control.failed}`);
  if (!control.outcome.ok) return result('error', `positive control not accepted: ${control.outcome.observed}`, control.outcome.observed);

  const timeout = attack.timeoutMs?.(ctx) ?? ctx.stepTimeoutMs;
  const step = await bounded(timeout, 'attack', (signal) => attack.attack(ctx, signal));
  if ('skipped' in step) return result('skip', step.skipped, control.outcome.observed);
  if ('failed' in step) return result('error', step.failed, control.outcome.observed);
  return result(step.outcome.ok ? 'pass' : 'fail', step.outcome.observed, control.outcome.observed);
}

type Bounded = { outcome: Outcome } | { failed: string } | { skipped: string };

/**
 * After a timeout, how long the runner still waits for the aborted step to wind down (close its
 * sockets, lift a revocation) before the next step starts: steps never overlap on the target.
 */
const WIND_DOWN_MS = 8_000;

/** Runs a step with an abort signal that fires after `ms`; never throws. */
async function bounded(ms: number, what: string, step: (signal: AbortSignal) => Promise<Outcome>): Promise<Bounded> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();
  const expired = new Promise<Bounded>((resolve) => {
    timer = setTimeout(() => {
      controller.abort();
      let grace: NodeJS.Timeout | undefined;
      void Promise.race([running, new Promise((r) => (grace = setTimeout(r, WIND_DOWN_MS)))]).then(() => {
        clearTimeout(grace);
        resolve({ failed: `${what} timed out after ${ms} ms` });
      });
    }, ms);
  });
  try {
    // A step that throws before its first await is a rejection like any other.
    const started = Promise.resolve().then(() => step(controller.signal));
    running = started.catch(() => undefined);
    return await Promise.race([
      started.then(
        // A result that comes after the bound (while winding down) is not a verdict.
        (outcome): Bounded => (controller.signal.aborted ? { failed: `${what} timed out after ${ms} ms` } : { outcome }),
        (err: unknown): Bounded => {
          // After the bound nothing is a verdict or a skip; what the step said on the way out is kept.
          if (controller.signal.aborted) return { failed: `${what} timed out after ${ms} ms; then: ${(err as Error).message}` };
          if (err instanceof AttackSkipped) return { skipped: err.message };
          const e = err as Error & { code?: unknown };
          const code = err instanceof ProbeStepError ? `[${e.code as string}] ` : '';
          return { failed: `${code}${e.message}` };
        },
      ),
      expired,
    ]);
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

/** Counts per verdict, and whether the run proves the target (no fail, no error). */
export function summarize(results: readonly AttackResult[]): { pass: number; fail: number; error: number; skip: number; ok: boolean } {
  const count = (v: Verdict): number => results.filter((r) => r.verdict === v).length;
  const s = { pass: count('pass'), fail: count('fail'), error: count('error'), skip: count('skip') };
  return { ...s, ok: s.fail === 0 && s.error === 0 && s.pass > 0 };
}
