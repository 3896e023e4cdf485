// The broker's signing keys at run time: the key ring folder is polled, a key file added while
// running is loaded and (after `keyActivationDelay`) becomes the signer, removed files leave
// the published JWKS. Every key in the folder stays published, so tokens signed before a
// rotation keep verifying. The JWKS is also written (atomically) to `jwksOut` on every change,
// for sidecars that watch a file. A folder that cannot be read, or a bad new key file, keeps
// the last good ring (and is logged).
import { mkdir, readdir, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { JWK } from 'jose';
import type { Logger } from '../telemetry/index.js';
import { SigningKeyRing, type SigningKey } from './keys.js';

export const KEY_POLL_INTERVAL_MS = 500;
const KEY_FILE = /^signing-[A-Za-z0-9_-]+\.json$/;

export interface BrokerKeysOptions {
  dir: string;
  /** A new newest key signs only once it has been published this long (0 = at once). */
  activationDelayMs: number;
  jwksOut?: string;
  logger: Logger;
  pollIntervalMs?: number;
  /** Called whenever the published set changes (after the JWKS file is written). */
  onChange?: (keyCount: number) => void;
}

export class BrokerKeys {
  private ring: SigningKeyRing | undefined;
  private active: SigningKey | undefined;
  /** kid → when this process first published it. */
  private readonly publishedAt = new Map<string, number>();
  private stamp = '';
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  /** Bumped on every change of the published set (for the JWKS endpoint's ETag-free clients). */
  generation = 0;

  constructor(private readonly options: BrokerKeysOptions) {}

  async start(): Promise<void> {
    const before = await this.keyFiles().catch(() => []);
    this.ring = await SigningKeyRing.load(this.options.dir);
    if (before.length === 0) {
      this.options.logger.info('no signing key found; generated one', { dir: this.options.dir, kid: this.ring.current().kid });
    }
    this.active = this.ring.current();
    const now = Date.now();
    for (const k of this.ring.keys()) this.publishedAt.set(k.kid, now - this.options.activationDelayMs);
    this.stamp = await this.dirStamp();
    await this.published('initial');
    const interval = this.options.pollIntervalMs ?? KEY_POLL_INTERVAL_MS;
    this.timer = setInterval(() => void this.poll(), interval);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** The key that signs now. */
  signer(now = Date.now()): SigningKey {
    const ring = this.ring!;
    const newest = ring.current();
    const active = this.active!;
    if (newest.kid === active.kid) return active;
    const stillPublished = ring.keys().some((k) => k.kid === active.kid);
    const seen = this.publishedAt.get(newest.kid) ?? now;
    if (!stillPublished || now - seen >= this.options.activationDelayMs) {
      this.active = newest;
      this.options.logger.info('signing key activated', { kid: newest.kid, previous: active.kid });
    }
    return this.active!;
  }

  jwks(): { keys: JWK[] } {
    return this.ring!.jwks();
  }

  status(): { signer: string; keys: { kid: string; createdAt: string }[] } {
    return {
      signer: this.signer().kid,
      keys: this.ring!.keys().map((k) => ({ kid: k.kid, createdAt: new Date(k.createdAt).toISOString() })),
    };
  }

  /** Re-reads the folder now if anything in it changed (also called by the poll timer). */
  async poll(): Promise<void> {
    if (this.polling || !this.ring) return;
    this.polling = true;
    try {
      const stamp = await this.dirStamp();
      if (stamp === this.stamp) return;
      const previous = new Set(this.ring.keys().map((k) => k.kid));
      try {
        await this.ring.reload();
      } catch (err) {
        // Keep the last good ring; look again when the folder changes next (a file being
        // written changes again when it is complete).
        this.stamp = stamp;
        this.options.logger.warn('signing key folder reload failed; keeping the last good keys', { dir: this.options.dir, error: err as Error });
        return;
      }
      this.stamp = stamp;
      const now = Date.now();
      const current = this.ring.keys().map((k) => k.kid);
      for (const kid of current) if (!this.publishedAt.has(kid)) this.publishedAt.set(kid, now);
      for (const kid of [...this.publishedAt.keys()]) if (!current.includes(kid)) this.publishedAt.delete(kid);
      const added = current.filter((k) => !previous.has(k));
      const removed = [...previous].filter((k) => !current.includes(k));
      if (added.length === 0 && removed.length === 0) return;
      this.options.logger.info('signing keys changed', { added, removed, newest: this.ring.current().kid, activationDelayMs: this.options.activationDelayMs });
      await this.published('rotation');
      this.signer(now);
    } catch (err) {
      this.options.logger.warn('signing key folder check failed', { dir: this.options.dir, error: err as Error });
    } finally {
      this.polling = false;
    }
  }

  private async published(cause: string): Promise<void> {
    this.generation++;
    try {
      await this.writeJwksOut(cause);
    } finally {
      this.options.onChange?.(this.ring!.keys().length);
    }
  }

  private async writeJwksOut(cause: string): Promise<void> {
    const out = this.options.jwksOut;
    if (out === undefined) return;
    try {
      await mkdir(dirname(out), { recursive: true });
      await this.ring!.writeJwks(out);
      this.options.logger.info('JWKS written', { path: out, cause, kids: this.ring!.keys().map((k) => k.kid) });
    } catch (err) {
      if (cause === 'initial') throw new Error(`jwksOut: cannot write ${out}: ${(err as Error).message}`);
      this.options.logger.error('JWKS write failed', { path: out, error: err as Error });
    }
  }

  private async keyFiles(): Promise<string[]> {
    return (await readdir(this.options.dir)).filter((n) => KEY_FILE.test(n)).sort();
  }

  /** Names, sizes and mtimes of the key files: changes when a key is added, replaced or removed. */
  private async dirStamp(): Promise<string> {
    const names = await this.keyFiles();
    const parts: string[] = [];
    for (const n of names) {
      try {
        const st = await stat(join(this.options.dir, n));
        parts.push(`${n}:${st.size}:${st.mtimeMs}:${st.ino}`);
      } catch {
        parts.push(`${n}:gone`);
      }
    }
    return parts.join('|');
  }
}
