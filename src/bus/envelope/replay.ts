/**
 * Remembers (issuer, jti) pairs of accepted envelopes until the envelope could no longer be
 * accepted anyway (its exp + leeway), so a second delivery of the same envelope is refused.
 *
 * Memory is bounded by `maxEntries`. When the window is full and nothing has expired yet, a new
 * envelope is refused (`full`) instead of evicting a live entry: evicting would reopen the
 * replay window for the evicted envelope, so the window fails closed. Entries are grouped in
 * one-second buckets by the time they may be forgotten; a min-heap of bucket times makes the
 * purge O(1) amortized per entry (each entry is inserted and removed once, heap work is per
 * bucket). A bucket is dropped only once its whole second has passed, so an entry can outlive
 * its retention time by up to one second, never the other way round.
 *
 * Pure: time is always a parameter.
 */
export class ReplayWindow {
  readonly maxEntries: number;
  /** key → bucket (second) the entry is stored in. */
  private readonly entries = new Map<string, number>();
  private readonly buckets = new Map<number, string[]>();
  /** Min-heap of the bucket seconds in `buckets`. */
  private readonly heap: number[] = [];

  constructor(opts: { maxEntries?: number } = {}) {
    const max = opts.maxEntries ?? 200_000;
    if (!Number.isSafeInteger(max) || max < 1) throw new RangeError('ReplayWindow maxEntries must be a positive integer');
    this.maxEntries = max;
  }

  /** Entries currently held (some may be past their retention until the next purge). */
  get size(): number {
    return this.entries.size;
  }

  /** Whether (iss, jti) is currently remembered. */
  has(iss: string, jti: string, nowMs: number): boolean {
    this.purge(nowMs);
    return this.entries.has(key(iss, jti));
  }

  /**
   * Atomically checks and records (iss, jti), to be remembered until `retainUntilMs`:
   * 'recorded' (first sighting, now remembered), 'seen' (a replay; nothing changes) or 'full'
   * (window full of live entries; nothing recorded, the caller must refuse the envelope).
   */
  checkAndRecord(iss: string, jti: string, retainUntilMs: number, nowMs: number): 'recorded' | 'seen' | 'full' {
    this.purge(nowMs);
    const k = key(iss, jti);
    if (this.entries.has(k)) return 'seen';
    if (this.entries.size >= this.maxEntries) return 'full';
    // NaN/Infinity retention would never be purged; such calls are refused as full.
    if (!Number.isFinite(retainUntilMs)) return 'full';
    const bucket = Math.ceil(retainUntilMs / 1000);
    let list = this.buckets.get(bucket);
    if (!list) {
      list = [];
      this.buckets.set(bucket, list);
      heapPush(this.heap, bucket);
    }
    list.push(k);
    this.entries.set(k, bucket);
    return 'recorded';
  }

  /** Forgets every entry whose retention (rounded up to the second) ended before `nowMs`. */
  purge(nowMs: number): void {
    const heap = this.heap;
    while (heap.length > 0 && heap[0]! * 1000 < nowMs) {
      const bucket = heapPop(heap);
      const list = this.buckets.get(bucket);
      this.buckets.delete(bucket);
      if (!list) continue;
      for (const k of list) if (this.entries.get(k) === bucket) this.entries.delete(k);
    }
  }

  clear(): void {
    this.entries.clear();
    this.buckets.clear();
    this.heap.length = 0;
  }
}

function key(iss: string, jti: string): string {
  // jti is base64url and a SPIFFE ID has no spaces, so the pair is unambiguous.
  return iss + ' ' + jti;
}

function heapPush(heap: number[], v: number): void {
  let i = heap.length;
  heap.push(v);
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent]! <= v) break;
    heap[i] = heap[parent]!;
    i = parent;
  }
  heap[i] = v;
}

function heapPop(heap: number[]): number {
  const top = heap[0]!;
  const last = heap.pop()!;
  if (heap.length > 0) {
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= heap.length) break;
      const r = l + 1;
      const c = r < heap.length && heap[r]! < heap[l]! ? r : l;
      if (heap[c]! >= last) break;
      heap[i] = heap[c]!;
      i = c;
    }
    heap[i] = last;
  }
  return top;
}
