// The audit trail: one JSON line per authorization decision (docs/audit.md documents every
// field). `record()` runs on the hot path, so it only samples, formats and enqueues; a writer
// flushes the queue to an append-mode file stream, honouring backpressure. Delivery is best
// effort: the queue is bounded (overflow is dropped and counted), and a file that cannot be
// opened or written (ENOSPC, EACCES, EISDIR, a vanished folder) is reported through the logger,
// counted and retried later — it never throws into the caller and never crashes the process.
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import type { CallMeta, Decision, Direction } from '../authz/index.js';
import { silentLogger, type Logger } from './logger.js';

/** The resource of an audit line: exactly one of id (Agent), name (Tool), subject (Topic). */
export type AuditResource =
  | { type: 'Agent'; id: string }
  | { type: 'Tool'; name: string; agent: string }
  | { type: 'Topic'; subject: string }
  | { type: 'Host'; name: string };

/** One audit line (JSON, one per line). Optional fields are `undefined` here and absent from the JSON. */
export interface AuditLine {
  time: string;
  requestId?: string;
  traceparent?: string;
  reporter: Direction;
  source: string;
  destination: string;
  action: string;
  resource: AuditResource;
  decision: 'allow' | 'deny';
  wouldDeny: boolean;
  reason: string;
  policies: string[];
  policyVersion: string;
  http?: { method: string; path: string; host: string };
  jsonrpc?: { method: string; tool?: string; listing?: 'tools/list' };
  delegation?: { sub: string; actors: string[]; depth: number; scope: string[]; task: string; jti?: string };
  /** A bus message refused before policy: why, in a bounded detail string. */
  bus?: { detail: string };
  /** With reason `revoked`: the revocation entry that refused the call. */
  revocation?: { kind: string; id: string };
}

/** A bus message refused before any policy decision (signature, chain, claims, replay). */
export interface BusRejectionAudit {
  subject: string;
  reason: string;
  detail: string;
  /** The verified signer, or undefined when the signer could not be verified. */
  signer?: string;
  /** This sidecar's own SPIFFE ID (the would-be recipient). */
  self: string;
  policyVersion: string;
  /** What the message was: a bus message (default) or a revocation record. */
  action?: 'bus.deliver' | 'revocation.issue';
}

/** The audit line for a refused bus message or revocation record; the source is "unverified" when no signer was proven. */
export function busRejectionLine(r: BusRejectionAudit, time: Date | string = new Date()): AuditLine {
  return {
    time: typeof time === 'string' ? time : time.toISOString(),
    reporter: 'inbound',
    source: r.signer ?? 'unverified',
    destination: r.self,
    action: r.action ?? 'bus.deliver',
    resource: { type: 'Topic', subject: r.subject },
    decision: 'deny',
    wouldDeny: false,
    reason: r.reason,
    policies: [],
    policyVersion: r.policyVersion,
    bus: { detail: r.detail.slice(0, 200) },
  };
}

/**
 * Builds the audit line for a decision. Only identities, names and ids are copied — never a
 * token, a body, a header other than the HTTP method/path/host, or policy text.
 */
export function auditLine(decision: Decision, meta: CallMeta | undefined, time: Date | string = new Date()): AuditLine {
  const req = decision.request;
  const r = req.resource;
  let resource: AuditResource;
  let destination: string;
  switch (r.type) {
    case 'Agent':
      resource = { type: 'Agent', id: r.id.toString() };
      destination = resource.id;
      break;
    case 'Tool':
      resource = { type: 'Tool', name: r.name, agent: r.agent.toString() };
      destination = resource.agent;
      break;
    case 'Host':
      resource = { type: 'Host', name: r.name };
      destination = r.name;
      break;
    default:
      resource = { type: 'Topic', subject: r.subject };
      destination = req.peer.toString();
  }
  // Absent optional fields are `undefined`, which JSON.stringify omits; key order is fixed.
  const http = req.http;
  const q = http ? http.path.indexOf('?') : -1;
  const d = req.delegation;
  return {
    time: typeof time === 'string' ? time : time.toISOString(),
    requestId: meta?.requestId,
    traceparent: meta?.traceparent,
    reporter: req.direction,
    source: req.principal.toString(),
    destination,
    action: req.action,
    resource,
    decision: decision.allowed ? 'allow' : 'deny',
    wouldDeny: decision.wouldDeny,
    reason: decision.reason,
    policies: decision.policies,
    policyVersion: decision.policyVersion,
    // The query string never reaches the audit trail (it may carry tokens).
    http: http && { method: http.method, path: q === -1 ? http.path : http.path.slice(0, q), host: http.host },
    jsonrpc: req.jsonrpc && { method: req.jsonrpc.method, tool: req.jsonrpc.tool, ...(req.jsonrpc.listing ? { listing: req.jsonrpc.listing } : {}) },
    delegation: d && { sub: d.sub, actors: d.actors, depth: d.depth, scope: d.scope, task: d.task, jti: d.jti },
    revocation: decision.revocation && { kind: decision.revocation.kind, id: decision.revocation.id },
  };
}

/**
 * Opens `path` for the audit writer. Must resolve only once the stream can be written (reject
 * on open errors); the stream reports later write failures through its `error` event.
 */
export type AuditStreamFactory = (path: string) => Promise<Writable>;

/**
 * The default factory: `fs.createWriteStream(path, { flags: 'a' })`, resolved once open. A new
 * file is created with mode 0640 (before the umask): audit lines name people.
 */
export async function openAuditFile(path: string): Promise<Writable> {
  const stream = createWriteStream(path, { flags: 'a', mode: 0o640 });
  await once(stream, 'ready'); // rejects with the open error (ENOENT, EISDIR, EACCES, ...)
  // A torn last line (a crash or ENOSPC mid-write) must not swallow the next line.
  if (await endsMidLine(path)) stream.write('\n');
  return stream;
}

async function endsMidLine(path: string): Promise<boolean> {
  try {
    const st = await stat(path);
    if (!st.isFile() || st.size === 0) return false;
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(1);
      const { bytesRead } = await fh.read(buf, 0, 1, st.size - 1);
      return bytesRead === 1 && buf[0] !== 0x0a;
    } finally {
      await fh.close();
    }
  } catch {
    return false;
  }
}

export interface AuditLogOptions {
  /** File to append to (created if missing; its folder is not created). */
  path: string;
  /** Fraction of allows written, 0..1 (default 1: every allow). Denies and would-denies are always written. */
  sampleAllows?: number;
  logger?: Logger;
  /** Lines waiting for the writer; beyond this, new lines are dropped and counted. Default 10 000. */
  maxQueue?: number;
  /** How often a failed file is reopened and an open file is checked for removal/rename (ms). Default 5000. */
  retryMs?: number;
  /** The same error kind is logged at most once per this interval (ms). Default 60 000. */
  logIntervalMs?: number;
  /** `close()` gives up flushing after this long (ms); what is left is counted as dropped. Default 5000. */
  closeTimeoutMs?: number;
  /** Opens the file; injectable for fault tests. Default `openAuditFile`. */
  openStream?: AuditStreamFactory;
  /** Random source for sampling (default Math.random). */
  random?: () => number;
}

export interface AuditStats {
  /** Lines the file system accepted. */
  written: number;
  /** Lines that will never be written: queue full, write failure, or recorded after close. */
  dropped: number;
  /** Allows skipped by `sampleAllows` (not failures). */
  sampledOut: number;
  /** Open and write failures (each failure once, whatever the number of lines it cost). */
  errors: number;
  /** Lines waiting in the queue. */
  queued: number;
  /** Lines handed to the file stream and not yet confirmed. */
  inFlight: number;
  /** Whether the file is open right now. */
  open: boolean;
}

export const AUDIT_DEFAULTS = {
  sampleAllows: 1,
  maxQueue: 10_000,
  retryMs: 5_000,
  logIntervalMs: 60_000,
  closeTimeoutMs: 5_000,
} as const;

export class AuditLog {
  readonly path: string;
  readonly sampleAllows: number;
  private readonly logger: Logger;
  private readonly maxQueue: number;
  private readonly logIntervalMs: number;
  private readonly closeTimeoutMs: number;
  private readonly openStream: AuditStreamFactory;
  private readonly random: () => number;

  private queue: string[] = [];
  private stream: Writable | undefined;
  /** `dev:ino` of the file when it was opened; a change means it was renamed or removed. */
  private fileId: string | undefined;
  private opening: Promise<void> | undefined;
  private blocked = false;
  private flushScheduled = false;
  private failing = false;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Set once close() has finished: a late open (after a close timeout) is closed at once. */
  private done = false;
  /** Set when close() timed out: late write callbacks no longer change the counts. */
  private abandoned = false;
  /** The stream finish() is ending, so a close timeout can destroy it. */
  private lastStream: Writable | undefined;
  private lastMs = 0;
  private lastIso = '';
  private readonly timer: NodeJS.Timeout;
  private readonly logged = new Map<string, { at: number; suppressed: number }>();
  private readonly counts = { written: 0, dropped: 0, sampledOut: 0, errors: 0, inFlight: 0 };
  private readonly flushNow = (): void => this.flush();

  constructor(options: AuditLogOptions) {
    this.path = options.path;
    const sample = options.sampleAllows ?? AUDIT_DEFAULTS.sampleAllows;
    this.sampleAllows = Number.isFinite(sample) ? Math.min(1, Math.max(0, sample)) : 1;
    this.logger = options.logger ?? silentLogger;
    this.maxQueue = Math.max(1, options.maxQueue ?? AUDIT_DEFAULTS.maxQueue);
    this.logIntervalMs = options.logIntervalMs ?? AUDIT_DEFAULTS.logIntervalMs;
    this.closeTimeoutMs = options.closeTimeoutMs ?? AUDIT_DEFAULTS.closeTimeoutMs;
    this.openStream = options.openStream ?? openAuditFile;
    this.random = options.random ?? Math.random;
    this.timer = setInterval(() => this.tick(), options.retryMs ?? AUDIT_DEFAULTS.retryMs);
    this.timer.unref();
    // Open now, so that a bad path is reported at startup rather than at the first decision.
    this.reopen();
  }

  /**
   * Records one decision. Cheap and synchronous: samples, formats and enqueues; never throws,
   * never waits for the file.
   */
  record(decision: Decision, meta?: CallMeta): void {
    if (decision.allowed && !decision.wouldDeny && this.sampleAllows < 1) {
      if (this.sampleAllows === 0 || this.random() >= this.sampleAllows) {
        this.counts.sampledOut++;
        return;
      }
    }
    this.enqueue(() => auditLine(decision, meta, this.isoNow()));
  }

  /** Records a bus message refused before policy (always written, like every deny). */
  recordBusRejection(r: BusRejectionAudit): void {
    this.enqueue(() => busRejectionLine(r, this.isoNow()));
  }

  private enqueue(build: () => AuditLine): void {
    if (this.closed || this.queue.length >= this.maxQueue) {
      this.counts.dropped++;
      return;
    }
    let line: string;
    try {
      line = JSON.stringify(build());
    } catch {
      this.counts.dropped++;
      return;
    }
    this.queue.push(line);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(this.flushNow);
    }
  }

  /** The current time as ISO 8601, formatted at most once per millisecond. */
  private isoNow(): string {
    const ms = Date.now();
    if (ms !== this.lastMs) {
      this.lastMs = ms;
      this.lastIso = new Date(ms).toISOString();
    }
    return this.lastIso;
  }

  /** Lines dropped so far (queue full, write failures, recorded after close). */
  get dropped(): number {
    return this.counts.dropped;
  }

  stats(): AuditStats {
    return { ...this.counts, queued: this.queue.length, open: this.stream !== undefined };
  }

  /** Flushes what is queued, closes the file and resolves; never rejects. Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    clearInterval(this.timer);
    this.closing = (async () => {
      let timeout: NodeJS.Timeout | undefined;
      const timedOut = new Promise<boolean>((resolve) => {
        timeout = setTimeout(() => resolve(true), this.closeTimeoutMs);
      });
      const done = await Promise.race([this.finish().then(() => false), timedOut]);
      clearTimeout(timeout);
      if (done) {
        // Gave up (e.g. a hung network file system): what was handed to the stream is lost too.
        this.abandoned = true;
        this.counts.dropped += this.counts.inFlight;
        this.counts.inFlight = 0;
        this.stream?.destroy();
        this.stream = undefined;
        this.lastStream?.destroy();
      }
      this.counts.dropped += this.queue.length;
      this.queue = [];
      this.done = true;
    })();
    return this.closing;
  }

  private async finish(): Promise<void> {
    try {
      if (this.opening) await this.opening;
      if (!this.stream && this.queue.length > 0) {
        this.reopen(); // one last attempt
        await this.opening;
      }
      const stream = this.stream;
      if (!stream) return;
      this.blocked = false;
      this.flush();
      this.stream = undefined;
      this.lastStream = stream;
      await new Promise<void>((resolve) => {
        stream.once('error', () => resolve());
        stream.once('close', () => resolve());
        stream.end(() => resolve());
      });
    } catch {
      /* reported already; close never rejects */
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    const stream = this.stream;
    if (!stream || this.blocked || this.queue.length === 0) return;
    const lines = this.queue;
    this.queue = [];
    const n = lines.length;
    this.counts.inFlight += n;
    const ok = stream.write(lines.join('\n') + '\n', (err) => {
      if (this.abandoned) return;
      this.counts.inFlight -= n;
      if (err) {
        this.counts.dropped += n;
        this.onStreamError(err, stream);
      } else {
        this.counts.written += n;
        if (this.failing) {
          // Logged on the first successful write, not on open: a full disk still opens fine.
          this.failing = false;
          this.logger.info('audit log writable again', { path: this.path, dropped: this.counts.dropped });
        }
      }
    });
    if (!ok && !this.closed) {
      this.blocked = true;
      stream.once('drain', () => {
        if (this.stream !== stream) return;
        this.blocked = false;
        this.flush();
      });
    }
  }

  /** Retry a failed file; notice an open file that was removed or renamed (rotation, vanished folder). */
  private tick(): void {
    if (this.closed || this.opening) return;
    if (!this.stream) {
      this.reopen();
      return;
    }
    const id = this.fileId;
    if (id === undefined) return;
    stat(this.path).then(
      (st) => {
        if (this.stream && this.fileId === id && `${st.dev}:${st.ino}` !== id) this.rotate('replaced');
      },
      () => {
        if (this.stream && this.fileId === id) this.rotate('removed');
      },
    );
  }

  private rotate(why: string): void {
    const old = this.stream;
    if (!old || this.opening) return;
    this.logger.info('audit file was ' + why + '; reopening', { path: this.path });
    this.stream = undefined;
    this.fileId = undefined;
    this.blocked = false;
    old.end(); // what is in flight goes to the old file
    this.reopen();
  }

  private reopen(): void {
    if (this.opening) return;
    this.opening = this.doOpen().finally(() => {
      this.opening = undefined;
    });
  }

  private async doOpen(): Promise<void> {
    let stream: Writable;
    try {
      stream = await this.openStream(this.path);
    } catch (err) {
      this.report(err, 'open');
      return;
    }
    stream.on('error', (err: Error) => this.onStreamError(err, stream));
    if (this.done) {
      stream.destroy();
      return;
    }
    this.stream = stream;
    this.blocked = false;
    try {
      const st = await stat(this.path);
      if (this.stream === stream) this.fileId = `${st.dev}:${st.ino}`;
    } catch {
      /* not a path we can watch (e.g. an injected stream); no rotation detection */
    }
    this.flush();
  }

  private onStreamError(err: Error, stream: Writable): void {
    if (this.stream !== stream) return; // this stream's failure was handled already
    this.stream = undefined;
    this.fileId = undefined;
    this.blocked = false;
    stream.destroy();
    this.report(err, 'write');
  }

  /** Counts a failure and logs it once per error kind per `logIntervalMs`. */
  private report(err: unknown, op: 'open' | 'write'): void {
    this.counts.errors++;
    this.failing = true;
    const code = String((err as { code?: unknown } | undefined)?.code ?? 'unknown');
    const kind = `${op}:${code}`;
    const now = Date.now();
    const seen = this.logged.get(kind);
    if (seen && now - seen.at < this.logIntervalMs) {
      seen.suppressed++;
      return;
    }
    this.logged.set(kind, { at: now, suppressed: 0 });
    this.logger.warn(`audit log ${op} failed; decisions are not recorded until it recovers (retrying)`, {
      path: this.path,
      code,
      error: err instanceof Error ? err : String(err),
      ...(seen && seen.suppressed > 0 ? { repeated: seen.suppressed } : {}),
      dropped: this.counts.dropped,
      queued: this.queue.length,
    });
  }
}
