// trust.bundles: extra (federated) trust bundles, one file per trust domain, PEM or SPIFFE
// JWKS. Each file is watched; an unreadable or invalid new file keeps that domain's last good
// bundle.
import { readFile } from 'node:fs/promises';
import { TrustDomain, X509Bundle } from '../spiffe/index.js';
import { watchFiles, type FileWatch } from './watch.js';

export class TrustBundleFiles {
  private readonly bundles = new Map<string, X509Bundle>();
  private readonly watches: FileWatch[] = [];

  constructor(
    private readonly files: Record<string, string>,
    private readonly onChange: () => void,
    private readonly onError: (err: Error, trustDomain: string) => void,
  ) {}

  /** Loads every file once; any failure here is fatal (startup must not run half-trusted). */
  async start(): Promise<void> {
    for (const [td, path] of Object.entries(this.files)) {
      this.bundles.set(td, await this.read(td, path));
      this.watches.push(watchFiles([path], () => void this.reload(td, path)));
    }
  }

  stop(): void {
    for (const w of this.watches) w.close();
  }

  current(): X509Bundle[] {
    return [...this.bundles.values()];
  }

  private async read(td: string, path: string): Promise<X509Bundle> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new Error(`trust.bundles.${td}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    try {
      return X509Bundle.parse(TrustDomain.parse(td), text);
    } catch (err) {
      throw new Error(`trust.bundles.${td}: ${path}: ${(err as Error).message}`);
    }
  }

  private async reload(td: string, path: string): Promise<void> {
    try {
      const next = await this.read(td, path);
      const prev = this.bundles.get(td);
      if (prev && prev.toPem() === next.toPem()) return;
      this.bundles.set(td, next);
      this.onChange();
    } catch (err) {
      this.onError(err as Error, td);
    }
  }
}
