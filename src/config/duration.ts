/**
 * Durations in config files and on the command line: one or more `<integer><unit>` parts with
 * units `h`, `m`, `s`, `ms`, largest unit first, each unit at most once.
 * Examples: `500ms`, `30s`, `15m`, `1h`, `1h30m`, `1m30s`, `0s`.
 * Rejected: bare numbers (`30`), fractions (`1.5h`), signs, whitespace, other units (`1d`),
 * repeated or out-of-order units (`30m1h`).
 */

/**
 * The most clock skew any check may tolerate (token and envelope leeways): a larger leeway would
 * let expired credentials live on, so configuration refuses it.
 */
export const MAX_CLOCK_LEEWAY_MS = 60_000;

const UNIT_MS = { h: 3_600_000, m: 60_000, s: 1_000, ms: 1 } as const;
type Unit = keyof typeof UNIT_MS;
const ORDER: readonly Unit[] = ['h', 'm', 's', 'ms'];

// `ms` must be tried before `m` so that `500ms` is not read as `500m` + garbage.
const PART = /(\d+)(ms|h|m|s)/y;

export function durationErrorMessage(s: unknown): string {
  return `invalid duration ${JSON.stringify(s)} (use e.g. 500ms, 30s, 15m, 1h)`;
}

/** Parses a duration string to milliseconds; throws `Error` with a plain-words message otherwise. */
export function parseDuration(s: string): number {
  if (typeof s !== 'string' || s.length === 0) throw new Error(durationErrorMessage(s));
  let pos = 0;
  let total = 0;
  let lastUnitIndex = -1;
  while (pos < s.length) {
    PART.lastIndex = pos;
    const m = PART.exec(s);
    if (!m) throw new Error(durationErrorMessage(s));
    const unit = m[2] as Unit;
    const unitIndex = ORDER.indexOf(unit);
    if (unitIndex <= lastUnitIndex) throw new Error(durationErrorMessage(s));
    lastUnitIndex = unitIndex;
    total += Number(m[1]) * UNIT_MS[unit];
    pos = PART.lastIndex;
  }
  if (!Number.isSafeInteger(total)) throw new Error(durationErrorMessage(s));
  return total;
}
