/**
 * Schema problems in plain words: zod issues become ConfigIssues ("is required", "expected
 * number, got string", `unknown key "tll" (did you mean "ttl"?)`), and one ConfigError lists
 * every problem of a document at once. Shared by the sidecar's loader (load.ts) and the
 * broker's (delegation/broker-config.ts); the rules themselves stay with each loader.
 */
import type { z } from 'zod';
import { ConfigError, formatPath, type ConfigIssue } from './errors.js';

/** Allowed keys per object, keyed by path pattern (array indices written as `[]`); for "did you mean". */
export type KnownKeys = Readonly<Record<string, readonly string[]>>;

export interface IssueWording {
  knownKeys: KnownKeys;
  /**
   * How an unknown key finds its "did you mean": 'closest' (default) is the nearest known key
   * within a distance that grows with its length; 'first-within-2' the first known key within 2.
   */
  suggest?: 'closest' | 'first-within-2';
  /** "got NaN" / "got Infinity" for non-finite numbers (default); false: "got number". */
  nameNonFinite?: boolean;
}

export interface DocumentChecks<T> {
  wording: IssueWording;
  /** Found on the raw document, so they are reported alongside the schema's issues. */
  rawIssues?: ConfigIssue[];
  /** Found on the validated data; checked only when the schema passes. */
  dataIssues?: (data: T) => ConfigIssue[];
}

/**
 * Validates a parsed document against `schema` and returns its output, or throws one ConfigError
 * listing schema issues, then `rawIssues`, then `dataIssues` (each distinct issue once).
 */
export function validateDocument<S extends z.ZodType>(schema: S, raw: unknown, file: string, checks: DocumentChecks<z.output<S>>): z.output<S> {
  const result = schema.safeParse(raw, { reportInput: true });
  const issues: ConfigIssue[] = result.success ? [] : result.error.issues.flatMap((issue) => zodConfigIssues(issue, checks.wording));
  issues.push(...(checks.rawIssues ?? []));
  if (result.success) issues.push(...(checks.dataIssues?.(result.data) ?? []));
  if (issues.length > 0 || !result.success) throw new ConfigError(file, dedupeIssues(issues));
  return result.data;
}

export function zodConfigIssues(issue: z.core.$ZodIssue, wording: IssueWording): ConfigIssue[] {
  const p = formatPath(issue.path);
  switch (issue.code) {
    case 'unrecognized_keys': {
      const known = wording.knownKeys[p.replace(/\[\d+\]/g, '[]')] ?? [];
      const suggest = wording.suggest === 'first-within-2' ? firstWithin2 : closest;
      return issue.keys.map((key) => {
        const suggestion = suggest(key, known);
        return {
          path: p,
          message: `unknown key ${JSON.stringify(key)}` + (suggestion ? ` (did you mean "${suggestion}"?)` : ''),
        };
      });
    }
    case 'invalid_type':
      if (issue.input === undefined) return [{ path: p, message: 'is required' }];
      return [{ path: p, message: `expected ${issue.expected}, got ${typeName(issue.input, wording.nameNonFinite !== false)}` }];
    case 'invalid_value':
      return [
        {
          path: p,
          message: `expected ${issue.values.map((v) => JSON.stringify(v)).join(' or ')}, got ${JSON.stringify(issue.input)}`,
        },
      ];
    case 'too_small':
      if (issue.origin === 'string' && Number(issue.minimum) === 1) return [{ path: p, message: 'must not be empty' }];
      if (issue.origin === 'array') {
        const n = Number(issue.minimum);
        return [{ path: p, message: `must have at least ${n} ${n === 1 ? 'entry' : 'entries'}` }];
      }
      return [{ path: p, message: issue.message }];
    case 'invalid_key':
      return [{ path: p, message: `invalid key: ${issue.issues.map((i) => i.message).join('; ')}` }];
    default:
      return [{ path: p, message: issue.message }];
  }
}

/** The same issue (path and message) reported twice, e.g. by the schema and a cross-field rule, is listed once. */
export function dedupeIssues(issues: ConfigIssue[]): ConfigIssue[] {
  const seen = new Set<string>();
  return issues.filter((i) => {
    const k = `${i.path}\0${i.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function typeName(v: unknown, nameNonFinite: boolean): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (nameNonFinite && typeof v === 'number' && !Number.isFinite(v)) return String(v); // NaN, Infinity (YAML .nan, .inf)
  return typeof v;
}

function closest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDist = Infinity;
  for (const k of known) {
    const d = levenshtein(key.toLowerCase(), k.toLowerCase());
    if (d < bestDist) {
      bestDist = d;
      best = k;
    }
  }
  return best !== undefined && bestDist <= Math.max(1, Math.min(2, Math.floor(best.length / 3))) ? best : undefined;
}

function firstWithin2(key: string, known: readonly string[]): string | undefined {
  return known.find((k) => k.toLowerCase() === key.toLowerCase() || levenshtein(k.toLowerCase(), key.toLowerCase()) <= 2);
}

/** Edit distance (insertions, deletions, substitutions). */
export function levenshtein(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = tmp;
    }
  }
  return prev[b.length]!;
}
