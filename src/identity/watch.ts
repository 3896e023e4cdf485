// File watching for identity material, bundles and policy. Polling `stat` is used instead of
// fs.watch because it sees both in-place writes and atomic renames (a new inode at the same
// path) on every platform, including bind-mounted Kubernetes secrets, at a cost of a few
// stat calls per second.
import { watchFile, unwatchFile, type Stats } from 'node:fs';

export const WATCH_INTERVAL_MS = 250;
/** A writer may need a moment to finish; we read after the file has been quiet this long. */
const SETTLE_MS = 100;

export interface FileWatch {
  close(): void;
}

/** Calls `onChange` (debounced) when any of `paths` changes content, inode or presence. */
export function watchFiles(paths: string[], onChange: () => void): FileWatch {
  let timer: NodeJS.Timeout | undefined;
  const listener = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(onChange, SETTLE_MS);
    timer.unref();
  };
  for (const path of paths) watchFile(path, { interval: WATCH_INTERVAL_MS, persistent: false }, listener);
  return {
    close() {
      if (timer) clearTimeout(timer);
      for (const path of paths) unwatchFile(path, listener);
    },
  };
}
