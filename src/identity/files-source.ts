// identity.files: an SVID, key and bundle written by something else (cert-manager, a SPIRE
// helper, a volume). Reloaded when any file changes; a half-written or invalid set keeps the
// last good SVID, and the reason is reported.
import { readFile } from 'node:fs/promises';
import { BundleSet, verifyX509Svid, X509Bundle, type TrustDomain } from '../spiffe/index.js';
import { svidFromPem, SvidLoadError } from './svid.js';
import { isUsable, type SourceCallbacks, type SvidSource, type SvidUpdate } from './types.js';
import { watchFiles, type FileWatch } from './watch.js';

export interface FilesSourceOptions {
  cert: string;
  key: string;
  bundle: string;
  trustDomain: TrustDomain;
}

export class FilesSvidSource implements SvidSource {
  readonly kind = 'files';
  private watch: FileWatch | undefined;
  private lastSerial = '';
  private lastBundle = '';

  constructor(private readonly options: FilesSourceOptions, private readonly callbacks: SourceCallbacks) {}

  async start(): Promise<SvidUpdate> {
    const first = await this.load();
    this.watch = watchFiles([this.options.cert, this.options.key, this.options.bundle], () => void this.reload());
    return first;
  }

  stop(): void {
    this.watch?.close();
  }

  private async load(): Promise<SvidUpdate> {
    const { cert, key, bundle, trustDomain } = this.options;
    const [certPem, keyPem, bundleText] = await Promise.all([
      readFile(cert, 'utf8'),
      readFile(key, 'utf8'),
      readFile(bundle, 'utf8'),
    ]);
    const svid = svidFromPem(certPem, keyPem, trustDomain);
    const bundles = new BundleSet([X509Bundle.parse(trustDomain, bundleText)]);
    // Only material we could actually present replaces the last good SVID.
    if (!isUsable(svid)) {
      throw new SvidLoadError(`SVID ${svid.serial} is outside its validity period (${svid.notBefore.toISOString()} – ${svid.notAfter.toISOString()})`);
    }
    try {
      verifyX509Svid(svid.certificates, bundles);
    } catch (err) {
      throw new SvidLoadError(`SVID does not verify against the bundle file: ${(err as Error).message}`);
    }
    this.lastSerial = svid.serial;
    this.lastBundle = bundleText;
    return { svid, bundles };
  }

  private async reload(): Promise<void> {
    const before = { serial: this.lastSerial, bundle: this.lastBundle };
    try {
      const update = await this.load();
      if (update.svid.serial === before.serial && this.lastBundle === before.bundle) return;
      this.callbacks.onUpdate(update);
    } catch (err) {
      this.callbacks.onError(err as Error);
    }
  }
}
