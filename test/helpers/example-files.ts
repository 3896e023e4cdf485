// For the tests that check a folder of examples as shipped (examples/compose, …): the folder's
// files as a map that negative controls can edit, small accessors for parsed YAML, and external
// validators (promtool, nats-server) that fail in CI and skip loudly elsewhere when missing.
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { onPath } from './prometheus.js';

export type Obj = Record<string, unknown>;
/** Path relative to the example folder (POSIX separators) → text. */
export type Files = Map<string, string>;

export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
export const objs = (v: unknown): Obj[] => (Array.isArray(v) ? v.filter(isObj) : []);
export const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
export const get = (v: unknown, ...keys: string[]): unknown => keys.reduce<unknown>((o, k) => (isObj(o) ? o[k] : undefined), v);

/** Every file under `dir`, recursively, keyed by its path relative to `dir`. */
export async function readTree(dir: string, prefix = ''): Promise<Files> {
  const files: Files = new Map();
  for (const entry of await readdir(path.join(dir, prefix), { withFileTypes: true })) {
    const rel = prefix === '' ? entry.name : `${prefix}/${entry.name}`;
    if (entry.isDirectory()) for (const [k, v] of await readTree(dir, rel)) files.set(k, v);
    else if (entry.isFile()) files.set(rel, await readFile(path.join(dir, rel), 'utf8'));
  }
  return files;
}

/** A copy of `files` with the first match of `from` in `file` replaced; throws when there is none (a stale mutation must not pass silently). */
export function editText(files: Files, file: string, from: string | RegExp, to: string): Files {
  const text = files.get(file);
  if (text === undefined || (typeof from === 'string' ? !text.includes(from) : text.search(from) < 0)) throw new Error(`${file} does not contain ${String(from)}`);
  return new Map(files).set(file, text.replace(from, to));
}

/**
 * An external validator on PATH, or undefined when it is missing — after printing a banner, so
 * the skip is not missed. In CI (`SIGIL_CI`, set by .ci/run, which installs it) a missing tool
 * is a failure, reported through `fail`.
 */
export async function findTool(name: string, purpose: string, install: string, fail: (message: string) => void): Promise<string | undefined> {
  const found = await onPath(name);
  if (found) return found;
  const inCi = Boolean(process.env.SIGIL_CI);
  const bar = '!'.repeat(96);
  console.error(['', bar, `!!! ${name} not found on PATH: ${purpose} ${inCi ? 'FAILS (SIGIL_CI is set)' : 'is SKIPPED'}.`, `!!! Install it with: ${install}`, bar, ''].join('\n'));
  if (inCi) fail(`${name} not found on PATH, and SIGIL_CI is set: ${install}`);
  return undefined;
}
