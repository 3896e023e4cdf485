// The file source (`revocation.file`): a watched YAML or JSON list of entries, for
// environments without NATS. The file is the list: an entry removed from it stops applying.
// An unreadable or invalid new version keeps the last good one (and says why).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { watchFiles, type FileWatch } from '../identity/index.js';
import { isEntryId, parseRevocationEntry, RevocationInputError, type RevocationEntry } from './entry.js';

export class RevocationFileError extends Error {
  override readonly name = 'RevocationFileError';
  readonly code = 'revocation_file_invalid';
}

export interface RevocationFileOptions {
  path: string;
  onLoad: (entries: RevocationEntry[]) => void;
  onError: (err: RevocationFileError) => void;
}

export class RevocationFileSource {
  private watch: FileWatch | undefined;
  private lastGoodMs: number | undefined;
  private lastText: string | undefined;

  constructor(private readonly options: RevocationFileOptions) {}

  /** When the file was last read and valid (epoch ms). */
  get lastSync(): number | undefined {
    return this.lastGoodMs;
  }

  /** Reads the file once (an invalid file at startup is fatal) and starts watching it. */
  async start(): Promise<void> {
    const entries = await this.read();
    this.options.onLoad(entries);
    this.watch = watchFiles([this.options.path], () => void this.reload());
  }

  /** Re-reads the file; called by the watcher and periodically, so a good file stays fresh. */
  async reload(): Promise<void> {
    try {
      this.options.onLoad(await this.read());
    } catch (err) {
      this.options.onError(err as RevocationFileError);
    }
  }

  stop(): void {
    this.watch?.close();
  }

  private async read(): Promise<RevocationEntry[]> {
    const { path } = this.options;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new RevocationFileError(`revocation.file: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    const entries = parseRevocationFile(text, path, Date.now());
    this.lastGoodMs = Date.now();
    this.lastText = text;
    return entries;
  }

  /** The text last loaded (for tests and status). */
  get loadedText(): string | undefined {
    return this.lastText;
  }
}

function defaultRevokedAt(item: unknown, now: number): number {
  const raw = typeof item === 'object' && item !== null ? (item as Record<string, unknown>)['expiresAt'] : undefined;
  const expiresAt = typeof raw === 'number' ? raw : typeof raw === 'string' ? Date.parse(raw) : NaN;
  return Number.isFinite(expiresAt) && expiresAt <= now ? expiresAt - 1 : now;
}

/**
 * `{ revocations: [ {kind, value, reason?, expiresAt?, id?} ] }` or the bare list. An entry
 * without an id gets one derived from its kind and value, so it keeps its id across reloads.
 */
export function parseRevocationFile(text: string, path: string, now: number): RevocationEntry[] {
  // An empty file is far more often a writer caught between truncate and write than an
  // operator clearing the list; reading it as "nothing revoked" would fail open.
  if (text.trim() === '') throw new RevocationFileError(`revocation.file: ${path}: empty; write \`revocations: []\` to clear the list`);
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new RevocationFileError(`revocation.file: ${path}: not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) throw new RevocationFileError(`revocation.file: ${path}: no document; write \`revocations: []\` to clear the list`);
  // Only an explicit list: `revocations:` with nothing after it, or `{}`, is what a writer caught
  // mid-write leaves behind as often as an operator's intent, and reading it as "nothing
  // revoked" would fail open. Clearing the list is `revocations: []` (or `[]`).
  const keys = typeof doc === 'object' && !Array.isArray(doc) ? Object.keys(doc) : [];
  const list = Array.isArray(doc) ? doc : keys.length === 1 && keys[0] === 'revocations' ? (doc as { revocations?: unknown }).revocations : undefined;
  if (!Array.isArray(list)) throw new RevocationFileError(`revocation.file: ${path}: expected a list of entries or { revocations: [...] } (write \`revocations: []\` to clear it)`);
  const seen = new Map<string, number>();
  return list.map((item, i) => {
    try {
      // Without an id, one derived from the normalized kind and value: stable across reloads,
      // and the same for two spellings of one SVID.
      // revokedAt defaults to the read time, except for an entry whose expiresAt has passed:
      // that one is valid and simply no longer applies (it must not break the whole file).
      const entry = parseRevocationEntry(item, { id: 'file-pending', revokedBy: `file:${path}`, now: defaultRevokedAt(item, now) });
      // File ids always start with `file-`: records never name such ids, so nothing remote can
      // lift (or pre-empt) an entry of this file.
      const given = (item as Record<string, unknown>)['id'];
      if (given === undefined) entry.id = `file-${createHash('sha256').update(`${entry.kind}\u0000${entry.value}`).digest('hex').slice(0, 32)}`;
      else if (!entry.id.startsWith('file-')) entry.id = `file-${entry.id}`;
      if (!isEntryId(entry.id)) throw new RevocationInputError('id', 'with the file- prefix it must stay within 64 characters of A-Z a-z 0-9 _ -');
      const first = seen.get(entry.id);
      if (first !== undefined) throw new RevocationInputError('id', `the same entry as revocations[${first}] (same id, or same kind and value)`);
      seen.set(entry.id, i);
      return entry;
    } catch (err) {
      if (err instanceof RevocationInputError) throw new RevocationFileError(`revocation.file: ${path}: revocations[${i}].${err.field}: ${err.message.slice(err.field.length + 2)}`);
      throw err;
    }
  });
}
