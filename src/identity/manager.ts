// Combines the SVID source with the configured trust bundles into one IdentitySnapshot and
// tells subscribers (TLS contexts, verifiers) whenever either changes.
import { EventEmitter } from 'node:events';
import type { BundleSet } from '../spiffe/index.js';
import type { Logger } from '../telemetry/index.js';
import { TrustBundleFiles } from './trust-files.js';
import type { IdentitySnapshot, SvidSource, SvidUpdate, SourceCallbacks } from './types.js';

export interface IdentityManagerEvents {
  /** cause: initial | svid | restored | trust_bundle */
  update: [IdentitySnapshot, string];
  /** The SVID source failed to renew or reload; the last good SVID stays. */
  sourceError: [Error];
  /** The source took the identity away: nothing is presented until the next update. */
  withdrawn: [Error];
}

export class IdentityManager extends EventEmitter<IdentityManagerEvents> {
  private snapshot: IdentitySnapshot | undefined;
  private sourceState: SvidUpdate | undefined;
  private readonly trustFiles: TrustBundleFiles;
  private source: SvidSource | undefined;
  private withdrawal: Error | undefined;

  constructor(
    createSource: (callbacks: SourceCallbacks) => SvidSource,
    trustBundleFiles: Record<string, string>,
    private readonly logger: Logger,
  ) {
    super();
    this.trustFiles = new TrustBundleFiles(
      trustBundleFiles,
      () => this.publish('trust_bundle'),
      (err, td) => logger.warn('trust bundle reload failed; keeping the last good bundle', { trustDomain: td, error: err }),
    );
    this.source = createSource({
      onUpdate: (update) => {
        this.sourceState = update;
        const restored = this.withdrawal !== undefined;
        this.withdrawal = undefined;
        this.publish(restored ? 'restored' : 'svid');
      },
      onWithdraw: (reason) => {
        logger.error('SVID withdrawn by the identity source: refusing connections until it is restored', { source: this.source?.kind, error: reason });
        this.withdrawal = reason;
        this.emit('withdrawn', reason);
      },
      onError: (err) => {
        logger.warn('SVID update failed; keeping the last good SVID', { source: this.source?.kind, error: err });
        this.emit('sourceError', err);
      },
    });
  }

  async start(): Promise<IdentitySnapshot> {
    await this.trustFiles.start();
    this.sourceState = await this.source!.start();
    this.publish('initial');
    return this.snapshot!;
  }

  stop(): void {
    this.source?.stop();
    this.trustFiles.stop();
  }

  /** The material to present now; undefined before the first SVID and while withdrawn. */
  current(): IdentitySnapshot | undefined {
    return this.withdrawal ? undefined : this.snapshot;
  }

  /**
   * The trust bundles in force, also while the SVID is withdrawn: verifying others' signatures
   * (revocation records) does not depend on holding our own identity.
   */
  trustBundles(): BundleSet | undefined {
    return this.snapshot?.bundles;
  }

  /** Why the identity is withdrawn, if it is. */
  get withdrawnBecause(): Error | undefined {
    return this.withdrawal;
  }

  get sourceKind(): string | undefined {
    return this.source?.kind;
  }

  /** The running source, for source-specific features (Workload API JWT-SVIDs, status). */
  get activeSource(): SvidSource | undefined {
    return this.source;
  }

  private publish(cause: string): void {
    if (!this.sourceState) return;
    // Source bundles first, then configured ones: an operator's explicit trust.bundles entry
    // for a domain wins over what the source ships.
    let bundles = this.sourceState.bundles;
    for (const b of this.trustFiles.current()) bundles = bundles.with(b);
    this.snapshot = { svid: this.sourceState.svid, bundles, generation: (this.snapshot?.generation ?? 0) + 1 };
    const { svid } = this.snapshot;
    this.logger.info('identity updated', {
      cause,
      spiffeId: svid.id.toString(),
      serial: svid.serial,
      notAfter: svid.notAfter.toISOString(),
      trustDomains: bundles.trustDomains().map((t) => t.name),
    });
    this.emit('update', this.snapshot, cause);
  }
}
