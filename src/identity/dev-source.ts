// identity.dev: mints the sidecar's own SVID in process from a dev CA directory and renews it
// at half its lifetime. The CA directory is the one `sigil ca init` writes.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BundleSet, X509Bundle, type SpiffeId } from '../spiffe/index.js';
import { DevIssuer } from './devca.js';
import { renewalDelayMs, retryDelayMs } from './rotation.js';
import { svidFromPem } from './svid.js';
import type { SourceCallbacks, SvidSource, SvidUpdate, X509Svid } from './types.js';

export interface DevSourceOptions {
  caDir: string;
  spiffeId: SpiffeId;
  ttlMs: number;
  /**
   * Asked before every issuance: a reason not to issue (the agent is revoked — decommissioned),
   * or undefined. A refused renewal is reported like any other issuance failure.
   */
  refuseIssue?: (id: SpiffeId) => string | undefined;
}

export class DevSourceError extends Error {
  readonly code = 'dev_ca_unavailable';
}

export class DevSvidSource implements SvidSource {
  readonly kind = 'dev';
  private timer: NodeJS.Timeout | undefined;
  private issuer: DevIssuer | undefined;
  private bundles: BundleSet | undefined;
  private current: X509Svid | undefined;
  /** When the current SVID was minted; its notBefore is backdated for clock skew. */
  private issuedAt = 0;
  private stopped = false;

  constructor(private readonly options: DevSourceOptions, private readonly callbacks: SourceCallbacks) {}

  async start(): Promise<SvidUpdate> {
    const td = this.options.spiffeId.trustDomain;
    const read = async (name: string): Promise<string> => {
      try {
        return await readFile(join(this.options.caDir, name), 'utf8');
      } catch (err) {
        throw new DevSourceError(
          `identity.dev.caDir: cannot read ${join(this.options.caDir, name)} (${(err as NodeJS.ErrnoException).code ?? 'error'}); create it with \`sigil ca init --trust-domain ${td.name} --dir ${this.options.caDir}\``,
        );
      }
    };
    const [certPem, keyPem] = [await read('ca.pem'), await read('ca.key')];
    this.issuer = await DevIssuer.fromPem(td, { certPem, keyPem });
    this.bundles = new BundleSet([X509Bundle.fromPem(td, certPem)]);
    const update = await this.mint();
    this.schedule();
    return update;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private async mint(): Promise<SvidUpdate> {
    const refusal = this.options.refuseIssue?.(this.options.spiffeId);
    if (refusal !== undefined) throw new DevSourceError(`not issuing an SVID for ${this.options.spiffeId}: ${refusal}`);
    const issuedAt = Date.now();
    const issued = await this.issuer!.issue(this.options.spiffeId, this.options.ttlMs);
    this.issuedAt = issuedAt;
    this.current = svidFromPem(issued.certChainPem, issued.privateKeyPem, this.options.spiffeId.trustDomain);
    return { svid: this.current, bundles: this.bundles! };
  }

  private schedule(delay?: number): void {
    if (this.stopped || !this.current) return;
    // Renewal is scheduled from the issue time, not notBefore: notBefore is backdated by the
    // clock-skew allowance, which would make short TTLs renew immediately, forever.
    const wait = delay ?? renewalDelayMs(new Date(this.issuedAt), this.current.notAfter, Date.now());
    this.timer = setTimeout(() => void this.renew(), wait);
    this.timer.unref();
  }

  private async renew(): Promise<void> {
    try {
      const update = await this.mint();
      if (this.stopped) return;
      this.callbacks.onUpdate(update);
      this.schedule();
    } catch (err) {
      this.callbacks.onError(err as Error);
      this.schedule(retryDelayMs(this.current!.notAfter, Date.now()));
    }
  }
}
