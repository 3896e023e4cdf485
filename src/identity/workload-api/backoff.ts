/**
 * Exponential backoff with jitter for Workload API retries: each delay is drawn uniformly from
 * [base/2, base] and the base doubles up to `maxMs`, so a fleet restarted together (or an agent
 * restarting under many sidecars) is not hit in lockstep. `reset()` after a healthy message.
 */
export class Backoff {
  private base: number;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.base = initialMs;
  }

  next(): number {
    const delay = Math.round(this.base / 2 + (this.random() * this.base) / 2);
    this.base = Math.min(this.maxMs, this.base * 2);
    return delay;
  }

  reset(): void {
    this.base = this.initialMs;
  }
}
