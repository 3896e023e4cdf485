// The policy in force. Cedar policies come from a watched file and can be reloaded on demand
// (POST /v1/policy/reload); a policy that fails to parse or validate is refused and the last
// good one stays. Every reload outcome is reported to subscribers (logs, metrics, and the
// proxies, which re-check open connections against a new policy).
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { watchFiles, type FileWatch } from '../identity/index.js';
import { AllowListAuthorizer, DenyAllAuthorizer, DryRunAuthorizer } from './allow-list.js';
import { CedarAuthorizer, compileCedarPolicy, PolicyLoadError } from './cedar.js';
import type { Authorizer, AuthzRequest } from './decision.js';

export interface PolicyConfig {
  mode: 'enforce' | 'dry-run';
  allow?: string[];
  cedar?: string;
}

export type ReloadOutcome =
  | { result: 'success'; version: string; changed: boolean }
  | { result: 'failure'; error: PolicyLoadError | Error }
  | { result: 'not_reloadable' };

export interface PolicyStoreEvents {
  /** A new policy version is in force. */
  change: [Authorizer];
  reload: [ReloadOutcome];
  evaluationError: [{ policyId: string; message: string }[], AuthzRequest];
}

export class PolicyStore extends EventEmitter<PolicyStoreEvents> {
  private authorizer: Authorizer;
  private watch: FileWatch | undefined;
  private reloading: Promise<ReloadOutcome> | undefined;
  /** A reload was asked for while one was reading the file: read again when it finishes. */
  private again: Promise<ReloadOutcome> | undefined;

  constructor(private readonly config: PolicyConfig) {
    super();
    this.authorizer = this.wrap(config.allow ? new AllowListAuthorizer(config.allow) : new DenyAllAuthorizer());
  }

  /** Loads the Cedar file (a bad file at startup is fatal) and starts watching it. */
  async start(): Promise<void> {
    const path = this.config.cedar;
    if (!path) return;
    this.authorizer = await this.load(path);
    this.watch = watchFiles([path], () => void this.reload());
  }

  stop(): void {
    this.watch?.close();
  }

  current(): Authorizer {
    return this.authorizer;
  }

  /** Drops the decisions the policy in force has cached (the revocation epoch moved). */
  dropCachedDecisions(): void {
    this.authorizer.dropCachedDecisions?.();
  }

  get kind(): string {
    return this.authorizer.kind;
  }

  /**
   * Re-reads the policy file. A call during a reload in progress is answered by a fresh read
   * after it (the file may have changed since that one started); calls meanwhile share it.
   */
  reload(): Promise<ReloadOutcome> {
    const path = this.config.cedar;
    if (!path) return Promise.resolve({ result: 'not_reloadable' });
    if (!this.reloading) {
      this.reloading = this.doReload(path).finally(() => (this.reloading = undefined));
      return this.reloading;
    }
    this.again ??= this.reloading.then(() => {
      this.again = undefined;
      return this.reload();
    });
    return this.again;
  }

  private async doReload(path: string): Promise<ReloadOutcome> {
    let outcome: ReloadOutcome;
    try {
      const next = await this.load(path);
      const changed = next.version !== this.authorizer.version;
      if (changed) this.authorizer = next;
      outcome = { result: 'success', version: next.version, changed };
    } catch (err) {
      outcome = { result: 'failure', error: err as Error };
    }
    this.emit('reload', outcome);
    if (outcome.result === 'success' && outcome.changed) this.emit('change', this.authorizer);
    return outcome;
  }

  private async load(path: string): Promise<Authorizer> {
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      throw new PolicyLoadError(path, [{ message: `cannot read policy file (${(err as NodeJS.ErrnoException).code ?? 'error'})` }]);
    }
    // An empty file is what a watcher sees in the middle of an in-place write (truncated, not yet
    // written): taken as a policy it would deny everything and cut every open connection. A
    // policy that means "deny everything" says so in a comment.
    if (text.trim() === '') throw new PolicyLoadError(path, [{ message: 'the policy file is empty (a write in progress?); to deny everything, write a file with only a comment' }]);
    const compiled = compileCedarPolicy(text, path);
    return this.wrap(new CedarAuthorizer(compiled, (errors, request) => this.emit('evaluationError', errors, request)));
  }

  /** Dry-run applies to rules; with no rules at all everything stays denied (fail closed). */
  private wrap(authorizer: Authorizer): Authorizer {
    return this.config.mode === 'dry-run' && !(authorizer instanceof DenyAllAuthorizer) ? new DryRunAuthorizer(authorizer) : authorizer;
  }
}
