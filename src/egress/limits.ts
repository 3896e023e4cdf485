// Per-route limits on egress calls: token-bucket rates (for the agent, and for each user it acts
// for) and a concurrency cap. Pure and clock-injectable; nothing here waits — a call over a
// limit is refused at once with the time after which it may succeed (429 Retry-After).

export interface RateSpec {
  /** Sustained calls per second. */
  ratePerSecond: number;
  /** Calls that may be made at once after a quiet period. */
  burst: number;
}

export type Admission = { ok: true } | { ok: false; retryAfterMs: number };

export class TokenBucket {
  private tokens: number;
  private updated: number;

  constructor(private readonly spec: RateSpec, private readonly now: () => number = Date.now) {
    this.tokens = spec.burst;
    this.updated = now();
  }

  take(): Admission {
    const now = this.now();
    this.tokens = Math.min(this.spec.burst, this.tokens + ((now - this.updated) / 1000) * this.spec.ratePerSecond);
    this.updated = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil(((1 - this.tokens) / this.spec.ratePerSecond) * 1000) };
  }

  /** Full again (nothing taken for a whole burst's worth of time): the bucket can be forgotten. */
  isIdle(): boolean {
    return this.tokens + ((this.now() - this.updated) / 1000) * this.spec.ratePerSecond >= this.spec.burst;
  }
}

/**
 * One bucket per key (a user's pseudonym). Bounded: when `maxKeys` is reached, idle buckets are
 * dropped first; if none is idle the oldest goes (it refills as a new one, which only errs on
 * the side of the caller — never blocks another key).
 */
export class KeyedBuckets {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(private readonly spec: RateSpec, private readonly maxKeys = 10_000, private readonly now: () => number = Date.now) {}

  take(key: string): Admission {
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= this.maxKeys) this.evict();
      bucket = new TokenBucket(this.spec, this.now);
      this.buckets.set(key, bucket);
    }
    return bucket.take();
  }

  get size(): number {
    return this.buckets.size;
  }

  private evict(): void {
    for (const [key, bucket] of this.buckets) if (bucket.isIdle()) this.buckets.delete(key);
    if (this.buckets.size >= this.maxKeys) this.buckets.delete(this.buckets.keys().next().value!);
  }
}

/** At most `max` calls in flight; `tryAcquire` returns the release, or undefined when full. */
export class ConcurrencyLimit {
  private inFlight = 0;

  constructor(readonly max: number) {}

  tryAcquire(): (() => void) | undefined {
    if (this.inFlight >= this.max) return undefined;
    this.inFlight++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inFlight--;
    };
  }

  get current(): number {
    return this.inFlight;
  }
}
