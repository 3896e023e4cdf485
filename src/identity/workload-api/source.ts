// identity.workloadApi: the SVID and trust bundles streamed by SPIRE (or any SPIFFE Workload
// API provider). Each FetchX509SVID response replaces the whole picture, so a CA or federated
// bundle that disappears from the stream stops being trusted at once; a malformed response is
// discarded and the last good state kept; PermissionDenied withdraws the SVID until the
// provider hands one out again.
import { decodeJwt } from 'jose';
import type { TrustDomain } from '../../spiffe/index.js';
import type { Logger } from '../../telemetry/index.js';
import type { SourceCallbacks, SvidSource, SvidUpdate } from '../types.js';
import { Backoff } from './backoff.js';
import { WorkloadApiClient, type WorkloadApiCallError } from './client.js';
import type { WorkloadEndpoint } from './endpoint.js';
import { parseJwtSvidResponse, parseX509SvidResponse, WorkloadApiResponseError, WorkloadApiSelectionError, type JwtSvid, type SvidSelector } from './messages.js';
import type { X509SvidResponse } from './proto.js';
import { StreamWatcher } from './stream.js';

const JWT_SVID_REUSE_MS = 5 * 60_000;

export interface WorkloadApiSourceOptions {
  endpoint: WorkloadEndpoint;
  trustDomain: TrustDomain;
  selector: SvidSelector;
  /** How long start() waits for the first usable SVID before failing. */
  startupTimeoutMs: number;
  backoff: { initialMs: number; maxMs: number };
  /** Startup progress (what the first SVID is waiting on); later problems go to the callbacks. */
  logger?: Logger;
}

/** start() gave up: no usable SVID arrived within the bound. */
export class WorkloadApiStartupError extends Error {
  readonly code = 'workload_api_startup_timeout';
}

/** The Workload API refused our requests in a way retrying cannot fix (InvalidArgument, Unimplemented). */
export class WorkloadApiFatalError extends Error {
  readonly code = 'workload_api_fatal';
}

export interface WorkloadApiStatus {
  endpoint: string;
  /** receiving: a stream is delivering; retrying: between attempts; denied: PermissionDenied; fatal: gave up. */
  state: 'connecting' | 'receiving' | 'retrying' | 'denied' | 'fatal' | 'stopped';
  lastError?: string;
  updates: number;
  rejectedUpdates: number;
}

export class WorkloadApiSvidSource implements SvidSource {
  readonly kind = 'workloadApi';
  private readonly client: WorkloadApiClient;
  private readonly watcher: StreamWatcher<X509SvidResponse>;
  private readonly state: WorkloadApiStatus;
  private last: { serial: string; bundles: string } | undefined;
  private readonly jwtSvids = new Map<string, { svid: JwtSvid; reuseUntil: number }>();
  /** Fetches in flight per audience (one FetchJWTSVID however many exchanges wait for it). */
  private readonly jwtFetches = new Map<string, Promise<JwtSvid>>();
  /** Bumped by a withdrawal: a fetch that started before it is not cached. */
  private jwtGeneration = 0;
  /** The SPIFFE ID of the SVID presented now; JWT-SVIDs are asked for this identity. */
  private presentedId: string | undefined;
  /** Withdrawn (PermissionDenied, or our SVID no longer offered); only a good response clears it. */
  private withdrawn = false;
  private first: { resolve(u: SvidUpdate): void; reject(e: Error): void; timer: NodeJS.Timeout } | undefined;

  constructor(private readonly options: WorkloadApiSourceOptions, private readonly callbacks: SourceCallbacks) {
    this.client = new WorkloadApiClient(options.endpoint, { maxReconnectBackoffMs: options.backoff.maxMs });
    this.state = { endpoint: options.endpoint.uri, state: 'connecting', updates: 0, rejectedUpdates: 0 };
    this.watcher = new StreamWatcher('FetchX509SVID', () => this.client.fetchX509Svid(), new Backoff(options.backoff.initialMs, options.backoff.maxMs), {
      message: (m) => this.onMessage(m),
      interrupted: (err, retryInMs) => this.onInterrupted(err, retryInMs),
      permissionDenied: (err, retryInMs) => this.onPermissionDenied(err, retryInMs),
      fatal: (err) => this.onFatal(err),
    });
  }

  get status(): WorkloadApiStatus {
    return { ...this.state };
  }

  start(): Promise<SvidUpdate> {
    return new Promise<SvidUpdate>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.first = undefined;
        this.stop();
        const last = this.state.lastError ? ` (last problem: ${this.state.lastError})` : ' (nothing was received)';
        reject(new WorkloadApiStartupError(`no usable SVID from the Workload API at ${this.options.endpoint.uri} within ${this.options.startupTimeoutMs} ms${last}`));
      }, this.options.startupTimeoutMs);
      this.first = { resolve, reject, timer };
      this.watcher.start();
    });
  }

  stop(): void {
    this.state.state = 'stopped';
    this.watcher.stop();
    this.client.close();
    const first = this.first;
    if (first) {
      this.first = undefined;
      clearTimeout(first.timer);
      first.reject(new WorkloadApiStartupError(`stopped before the Workload API at ${this.options.endpoint.uri} sent a usable SVID`));
    }
  }

  /**
   * A JWT-SVID for `audience`, reused until a third of its lifetime is left (and at most
   * JWT_SVID_REUSE_MS): minting one per exchange would put the agent on the request path.
   */
  async jwtSvidFor(audience: string): Promise<JwtSvid> {
    const now = Date.now();
    const hit = this.jwtSvids.get(audience);
    if (hit && now < hit.reuseUntil) return hit.svid;
    // Keyed by generation too: a fetch begun before a withdrawal is never joined after it.
    const key = `${this.jwtGeneration}\n${audience}`;
    let pending = this.jwtFetches.get(key);
    if (!pending) {
      pending = this.fetchAndCacheJwtSvid(audience).finally(() => this.jwtFetches.delete(key));
      this.jwtFetches.set(key, pending);
    }
    return pending;
  }

  private async fetchAndCacheJwtSvid(audience: string): Promise<JwtSvid> {
    const generation = this.jwtGeneration;
    const svid = await this.fetchJwtSvid(audience);
    const now = Date.now();
    let exp: number | undefined;
    let iat: number | undefined;
    try {
      ({ exp, iat } = decodeJwt(svid.token));
    } catch {
      throw new WorkloadApiResponseError('svids[].svid', 'is not a JWT');
    }
    if (typeof exp !== 'number' || exp * 1000 <= now) throw new WorkloadApiResponseError('svids[].svid', 'is expired or has no exp');
    const lifetime = exp * 1000 - (typeof iat === 'number' ? iat * 1000 : now);
    const reuseUntil = Math.min(now + JWT_SVID_REUSE_MS, exp * 1000 - lifetime / 3);
    if (generation === this.jwtGeneration) this.jwtSvids.set(audience, { svid, reuseUntil });
    return svid;
  }

  /** A JWT-SVID for `audience` (FetchJWTSVID) for the identity presented now (or the selected one). */
  async fetchJwtSvid(audience: string, timeoutMs?: number): Promise<JwtSvid> {
    // Ask for the X.509-SVID's own identity: the JWT default need not be the same workload ID.
    const spiffeId = this.presentedId ?? this.options.selector.spiffeId ?? '';
    const svids = parseJwtSvidResponse(await this.client.fetchJwtSvid({ audience: [audience], spiffe_id: spiffeId }, timeoutMs));
    const match = spiffeId === '' ? svids[0] : svids.find((s) => s.spiffeId.toString() === spiffeId);
    if (!match) throw new WorkloadApiResponseError('svids', `no JWT-SVID for ${spiffeId}`);
    return match;
  }

  /** Handles one response; true when it was usable (the stream is healthy: backoff resets). */
  private onMessage(message: X509SvidResponse): boolean {
    let update: SvidUpdate;
    try {
      update = parseX509SvidResponse(message, this.options.selector, this.options.trustDomain);
    } catch (err) {
      if (err instanceof WorkloadApiSelectionError) {
        // Well-formed, but our SVID is not (or no longer) offered: stop using it (spec §5.2.1).
        this.state.state = 'denied';
        this.noteStartupProblem(err.message);
        this.state.lastError = err.message;
        this.withdraw(`the Workload API no longer offers this workload's SVID: ${err.message}`);
        return true;
      }
      this.state.rejectedUpdates++;
      this.noteStartupProblem(`discarded a FetchX509SVID response: ${(err as Error).message}`);
      this.state.lastError = `discarded a FetchX509SVID response: ${(err as Error).message}`;
      this.callbacks.onError(new WorkloadApiResponseError((err as WorkloadApiResponseError).field ?? 'response', `discarded; keeping the last good SVID and bundles: ${(err as Error).message}`));
      return false;
    }
    this.state.state = 'receiving';
    this.withdrawn = false;
    this.presentedId = update.svid.id.toString();
    const fingerprint = { serial: update.svid.serial, bundles: update.bundles.trustDomains().map((td) => `${td.name}:${update.bundles.get(td)!.toPem()}`).sort().join('\n') };
    if (this.last && this.last.serial === fingerprint.serial && this.last.bundles === fingerprint.bundles) return true;
    this.last = fingerprint;
    this.state.updates++;
    const first = this.first;
    if (first) {
      this.first = undefined;
      clearTimeout(first.timer);
      first.resolve(update);
      return true;
    }
    this.callbacks.onUpdate(update);
    return true;
  }

  /**
   * Stops presenting the identity until the Workload API hands one out again (even the same
   * one); JWT-SVIDs minted before are not handed out again either. During startup nothing is
   * presented yet: start() keeps waiting.
   */
  private withdraw(reason: string): void {
    this.last = undefined;
    this.jwtSvids.clear();
    this.jwtGeneration++;
    if (this.first) return;
    const wasWithdrawn = this.withdrawn;
    this.withdrawn = true;
    if (!wasWithdrawn) this.callbacks.onWithdraw?.(new Error(reason));
  }

  private onInterrupted(err: WorkloadApiCallError, retryInMs: number): void {
    // Still withdrawn while reconnecting: /status keeps saying so until an SVID comes back.
    this.state.state = this.withdrawn ? 'denied' : 'retrying';
    this.noteStartupProblem(err.message);
    this.state.lastError = err.message;
    if (!this.first) this.callbacks.onError(new Error(`Workload API stream interrupted (${err.message}); reconnecting in ${retryInMs} ms`));
  }

  /** While waiting for the first SVID, each new kind of problem is logged once. */
  private noteStartupProblem(problem: string): void {
    if (this.first && problem !== this.state.lastError) {
      this.options.logger?.warn('waiting for the first SVID from the Workload API', { endpoint: this.options.endpoint.uri, problem });
    }
  }

  private onPermissionDenied(err: WorkloadApiCallError, retryInMs: number): void {
    this.state.state = 'denied';
    this.noteStartupProblem(err.message);
    this.state.lastError = err.message;
    this.withdraw(`Workload API denied this workload its identity (${err.message}); retrying in ${retryInMs} ms`);
  }

  private onFatal(err: WorkloadApiCallError): void {
    this.state.state = 'fatal';
    this.state.lastError = err.message;
    const fatal = new WorkloadApiFatalError(
      `the Workload API at ${this.options.endpoint.uri} refused the request (${err.message}); not retrying: this is a client or configuration error, not an outage`,
    );
    const first = this.first;
    if (first) {
      this.first = undefined;
      clearTimeout(first.timer);
      this.client.close();
      first.reject(fatal);
      return;
    }
    // No more rotations: the SVID in hand serves until it expires (then /readyz turns 503).
    this.options.logger?.error('Workload API: fatal error after startup; the SVID will not rotate again', { error: fatal.message, code: fatal.code });
    this.client.close();
    this.callbacks.onError(fatal);
  }
}
