// Keeps one Workload API stream open for as long as it is wanted. The spec fixes how each end
// of a stream is handled (Workload Endpoint §6): Unavailable, any other transient status, or a
// clean end → reopen after a jittered backoff; PermissionDenied → tell the owner (it must stop
// presenting its SVID) and keep retrying; InvalidArgument or Unimplemented → never retry.
import type { ClientReadableStream, status } from '@grpc/grpc-js';
import { grpc } from './grpc.js';
import type { Backoff } from './backoff.js';
import { callError, WorkloadApiCallError } from './client.js';

export interface StreamWatcherHandlers<T> {
  /** True when the message was usable: only then is the backoff reset (junk is not health). */
  message(message: T): boolean;
  /** The stream ended or failed and will be reopened in `retryInMs`. */
  interrupted(error: WorkloadApiCallError, retryInMs: number): void;
  /** PermissionDenied: this workload has no identity (yet, or any more); retrying in `retryInMs`. */
  permissionDenied(error: WorkloadApiCallError, retryInMs: number): void;
  /** A status the spec says not to retry. The watcher has stopped. */
  fatal(error: WorkloadApiCallError): void;
}

/** Statuses after which retrying cannot help: the request itself is wrong (spec, Appendix A). */
function isFatal(code: status): boolean {
  const { INVALID_ARGUMENT, UNIMPLEMENTED } = grpc().status;
  return code === INVALID_ARGUMENT || code === UNIMPLEMENTED;
}

export class StreamWatcher<T> {
  private call: ClientReadableStream<T> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly method: string,
    private readonly open: () => ClientReadableStream<T>,
    private readonly backoff: Backoff,
    private readonly handlers: StreamWatcherHandlers<T>,
  ) {}

  start(): void {
    this.stopped = false;
    this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    const call = this.call;
    this.call = undefined;
    call?.cancel();
  }

  private connect(): void {
    if (this.stopped) return;
    const call = this.open();
    this.call = call;
    let finished = false;
    call.on('data', (message: T) => {
      if (this.call !== call) return;
      if (this.handlers.message(message)) this.backoff.reset();
    });
    // grpc-js reports the end of every call exactly once through 'status'; 'error' repeats a
    // non-OK status and must have a listener so it is not thrown.
    call.on('error', () => undefined);
    call.on('status', (s: { code: status; details: string }) => {
      if (finished || this.call !== call) return;
      finished = true;
      this.call = undefined;
      if (this.stopped) return;
      const error =
        s.code === grpc().status.OK
          ? new WorkloadApiCallError(this.method, grpc().status.UNAVAILABLE, 'the server ended the stream')
          : callError(this.method, s);
      if (isFatal(s.code)) {
        this.stopped = true;
        this.handlers.fatal(error);
        return;
      }
      const delay = this.backoff.next();
      if (s.code === grpc().status.PERMISSION_DENIED) this.handlers.permissionDenied(error, delay);
      else this.handlers.interrupted(error, delay);
      this.timer = setTimeout(() => this.connect(), delay);
      this.timer.unref();
    });
  }
}
