// An in-process, scriptable SPIFFE Workload API server for tests (a stand-in for a SPIRE agent).
//
// It serves proto/workload.proto over a Unix domain socket with grpc-js, exactly as a real agent
// is reached (`unix:///abs/path`, plaintext, the `workload.spiffe.io: true` security header), so
// the client code under test runs unmodified. Tests drive it by setting the current X.509-SVIDs,
// bundles and JWT responses (pushed to open streams at once, as an agent does on rotation),
// injecting grpc status errors, ending streams, and inspecting every call it received.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { isAbsolute, join, resolve as resolvePath } from 'node:path';
import {
  Server,
  ServerCredentials,
  status,
  type Metadata,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import {
  WORKLOAD_API_HEADER,
  WORKLOAD_API_METHODS,
  workloadApiService,
  type JwtBundlesResponse,
  type JwtSvidRequest,
  type JwtSvidResponse,
  type WorkloadApiMethod,
  type X509BundlesResponse,
  type X509SvidMessage,
  type X509SvidResponse,
} from '../../src/identity/workload-api/proto.js';
import type { Issued } from '../fixtures/certs.js';
import type { Teardown } from './env.js';

/** One call as the fake saw it, recorded before any check so rejected calls show up too. */
export interface RecordedCall {
  method: WorkloadApiMethod;
  /**
   * Every request metadata key with all its values, as strings (binary `-bin` values as base64),
   * so tests can assert on the security header, including repeated or missing values.
   */
  metadata: Record<string, string[]>;
  /** The decoded request message (proto3 defaults filled in; `{}` for the streaming methods). */
  request: unknown;
  /** Date.now() when the handler ran. */
  at: number;
}

export interface FakeWorkloadApiOptions {
  /**
   * Where to listen. Default: `agent.sock` in a fresh short temp dir (removed on stop). A UDS
   * path must stay under ~104 bytes (sun_path), so keep given paths short too.
   */
  socketPath?: string;
  /**
   * Default true: per the SPIFFE Workload Endpoint spec a call without the metadata
   * `workload.spiffe.io: true` is rejected with InvalidArgument. False serves it anyway (for
   * tests about other failures that should not depend on the header).
   */
  requireHeader?: boolean;
}

type StreamMethod = Exclude<WorkloadApiMethod, 'FetchJWTSVID'>;
type AnyStream = ServerWritableStream<unknown, unknown>;
type JwtSvidHandler = (request: JwtSvidRequest) => Partial<JwtSvidResponse>;

interface InjectedFailure {
  code: status;
  details: string;
  /** Calls still to fail; undefined = until cleared. */
  remaining: number | undefined;
}

/** Linux sun_path is 108 bytes including the NUL, macOS 104: stay below the smaller one. */
const MAX_SOCKET_PATH = 103;

const STREAM_METHODS: readonly StreamMethod[] = ['FetchX509SVID', 'FetchX509Bundles', 'FetchJWTBundles'];

/** The same "no registration entry" answer SPIRE's agent gives, used when no JWT handler is set. */
const NO_IDENTITY = 'no identity issued';

export class FakeWorkloadApi {
  readonly socketPath: string;
  /** The target to give clients: `unix://` + absolute path, i.e. `unix:///tmp/...`. */
  readonly endpoint: string;
  /** Every call, in arrival order, including rejected ones. */
  readonly calls: RecordedCall[] = [];

  private readonly server = new Server();
  private readonly requireHeader: boolean;
  /** Removed on stop when the fake created it. */
  private readonly ownedDir: string | undefined;
  private readonly streams = new Map<StreamMethod, Set<AnyStream>>(STREAM_METHODS.map((m) => [m, new Set<AnyStream>()]));
  private readonly state = new Map<StreamMethod, object | undefined>();
  private readonly failures = new Map<WorkloadApiMethod, InjectedFailure>();
  private jwtSvid: JwtSvidHandler | undefined;
  /** Only a bound fake owns the socket file (a failed bind must not delete another server's). */
  private bound = false;
  private stopped: Promise<void> | undefined;

  private constructor(socketPath: string, requireHeader: boolean, ownedDir: string | undefined) {
    this.socketPath = socketPath;
    this.endpoint = `unix://${socketPath}`;
    this.requireHeader = requireHeader;
    this.ownedDir = ownedDir;
  }

  /**
   * Binds `unix://<abs path>` and serves until `stop()`, which `t`'s teardown also calls (so a
   * failing test never leaves a listener or socket file behind).
   */
  static async start(t: Teardown, options: FakeWorkloadApiOptions = {}): Promise<FakeWorkloadApi> {
    let ownedDir: string | undefined;
    let socketPath: string;
    if (options.socketPath !== undefined) {
      socketPath = isAbsolute(options.socketPath) ? options.socketPath : resolvePath(options.socketPath);
    } else {
      // Short prefix: os.tmpdir() can already be long (macOS), and the path must fit sun_path.
      ownedDir = await mkdtemp(join(tmpdir(), 'wl-'));
      socketPath = FakeWorkloadApi.socketPathIn(ownedDir);
    }
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH) {
      if (ownedDir) await rm(ownedDir, { recursive: true, force: true });
      throw new Error(`socket path too long for a Unix socket (${Buffer.byteLength(socketPath)} > ${MAX_SOCKET_PATH} bytes): ${socketPath}`);
    }
    const fake = new FakeWorkloadApi(socketPath, options.requireHeader ?? true, ownedDir);
    t.teardown(() => fake.stop());
    fake.server.addService(workloadApiService().service, fake.implementation());
    try {
      await new Promise<void>((resolve, reject) => {
        fake.server.bindAsync(fake.endpoint, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
      });
      fake.bound = true;
    } catch (err) {
      await fake.stop();
      throw err;
    }
    return fake;
  }

  /**
   * The socket path a later `start({ socketPath })` will use in `dir`, so a test can hand the
   * endpoint to the client before the agent exists ("socket appears later").
   */
  static socketPathIn(dir: string): string {
    return join(dir, 'agent.sock');
  }

  callsTo(method: WorkloadApiMethod): RecordedCall[] {
    return this.calls.filter((c) => c.method === method);
  }

  /**
   * The current X.509-SVID response. Setting it pushes it to every open FetchX509SVID stream
   * (as an agent does on rotation) and makes it the first message of streams opened later.
   * undefined: open streams get nothing, and new streams stay open without a message.
   */
  setX509Svids(response: Partial<X509SvidResponse> | undefined): void {
    this.setState('FetchX509SVID', response && { svids: [], crl: [], federated_bundles: {}, ...response });
  }

  /** Same as setX509Svids, for FetchX509Bundles. */
  setX509Bundles(response: Partial<X509BundlesResponse> | undefined): void {
    this.setState('FetchX509Bundles', response && { crl: [], bundles: {}, ...response });
  }

  /** Same as setX509Svids, for FetchJWTBundles. */
  setJwtBundles(response: Partial<JwtBundlesResponse> | undefined): void {
    this.setState('FetchJWTBundles', response && { bundles: {}, ...response });
  }

  /**
   * How unary FetchJWTSVID answers: a function of the request, or a fixed response. A function
   * may throw `{ code, details }` to answer with that grpc status. Until set, calls get
   * PermissionDenied "no identity issued" (what SPIRE says to a workload with no entries).
   */
  onJwtSvid(handler: JwtSvidHandler | Partial<JwtSvidResponse>): void {
    this.jwtSvid = typeof handler === 'function' ? handler : () => handler;
  }

  /**
   * Error injection: while set, every new call to `method` fails with `code` (streams fail on
   * open, before any message); `count` limits it to the next N calls. `code` undefined clears.
   * Calls rejected for a missing security header do not use up `count` (the header check runs
   * first, as in SPIRE's middleware).
   */
  failWith(method: WorkloadApiMethod, code: status | undefined, details?: string, count?: number): void {
    if (code === undefined) {
      this.failures.delete(method);
      return;
    }
    this.failures.set(method, { code, details: details ?? `injected ${status[code] ?? code}`, remaining: count });
  }

  /**
   * Ends the open streams of `method` (every streaming method if omitted). `code` undefined ends
   * them cleanly with status OK (the client sees 'end' then status OK, no 'error'); otherwise
   * they end with that status and `details` (the client sees 'error' with that code).
   */
  closeStreams(method?: WorkloadApiMethod, code?: status, details?: string): void {
    const methods = method === undefined ? STREAM_METHODS : STREAM_METHODS.filter((m) => m === method);
    for (const m of methods) {
      const open = this.streams.get(m)!;
      for (const stream of [...open]) {
        open.delete(stream);
        if (code === undefined || code === status.OK) stream.end();
        // grpc-js's documented way to end a server stream with a status: its own 'error'
        // listener records the status and ends the call. (destroy(err) would skip sending it.)
        else stream.emit('error', { code, details: details ?? status[code] ?? 'closed by fake' });
      }
    }
  }

  /** Streams of `method` the fake still considers open (the unary FetchJWTSVID is always 0). */
  openStreams(method: WorkloadApiMethod): number {
    return method === 'FetchJWTSVID' ? 0 : this.streams.get(method)!.size;
  }

  /**
   * Resolves once `method` has received at least `n` calls (polled every 10 ms); rejects after
   * `timeoutMs` saying what was expected and seen, so a test fails with a reason, not a hang.
   */
  async waitForCalls(method: WorkloadApiMethod, n: number, timeoutMs = 5_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const seen = this.callsTo(method).length;
      if (seen >= n) return;
      if (Date.now() >= deadline) {
        const all = WORKLOAD_API_METHODS.map((m) => `${m}=${this.callsTo(m).length}`).join(', ');
        throw new Error(`expected ${n} call(s) to ${method} within ${timeoutMs} ms, saw ${seen} (all calls: ${all})`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * Stops at once (forceShutdown, so open streams do not hold it up; clients see UNAVAILABLE or
   * CANCELLED) and removes the socket file (and the temp dir if the fake made it). Idempotent.
   */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      for (const open of this.streams.values()) open.clear();
      this.server.forceShutdown();
      if (this.bound) await rm(this.socketPath, { force: true });
      if (this.ownedDir) await rm(this.ownedDir, { recursive: true, force: true });
    })();
    return this.stopped;
  }

  // --- internals -------------------------------------------------------------------------

  private setState(method: StreamMethod, response: object | undefined): void {
    this.state.set(method, response);
    if (response === undefined) return;
    for (const stream of this.streams.get(method)!) FakeWorkloadApi.send(stream, response);
  }

  private static send(stream: AnyStream, message: object): void {
    if (stream.writableEnded || stream.destroyed || stream.cancelled) return;
    stream.write(message);
  }

  private implementation(): UntypedServiceImplementation {
    const impl: UntypedServiceImplementation = {
      FetchJWTSVID: (call: ServerUnaryCall<JwtSvidRequest, JwtSvidResponse>, callback: sendUnaryData<Partial<JwtSvidResponse>>) => {
        const rejection = this.admit('FetchJWTSVID', call.metadata, call.request);
        if (rejection) return callback(rejection);
        if (!this.jwtSvid) return callback({ code: status.PERMISSION_DENIED, details: NO_IDENTITY });
        let response: Partial<JwtSvidResponse>;
        try {
          response = this.jwtSvid(call.request);
        } catch (err) {
          const e = err as { code?: unknown; details?: unknown; message?: unknown };
          const code = typeof e.code === 'number' ? (e.code as status) : status.UNKNOWN;
          const details = typeof e.details === 'string' ? e.details : String(e.message ?? err);
          return callback({ code, details });
        }
        callback(null, { svids: [], ...response });
      },
    };
    for (const method of STREAM_METHODS) impl[method] = (call: AnyStream) => this.serveStream(method, call);
    return impl;
  }

  private serveStream(method: StreamMethod, call: AnyStream): void {
    const rejection = this.admit(method, call.metadata, call.request);
    if (rejection) {
      call.emit('error', rejection);
      return;
    }
    const open = this.streams.get(method)!;
    open.add(call);
    // Client cancel: 'cancelled' then 'close'; clean or error end: 'finish' then 'close'.
    const forget = (): void => void open.delete(call);
    call.on('cancelled', forget);
    call.on('finish', forget);
    call.on('close', forget);
    const current = this.state.get(method);
    if (current !== undefined) FakeWorkloadApi.send(call, current);
  }

  /** Records the call, then applies the header check and injected failures; returns the status to fail with. */
  private admit(method: WorkloadApiMethod, metadata: Metadata, request: unknown): { code: status; details: string } | undefined {
    this.calls.push({ method, metadata: recordMetadata(metadata), request, at: Date.now() });
    if (this.requireHeader) {
      const values = metadata.get(WORKLOAD_API_HEADER);
      // As SPIRE checks it: exactly one value, exactly "true".
      if (values.length !== 1 || values[0] !== 'true') {
        return { code: status.INVALID_ARGUMENT, details: 'security header missing from request' };
      }
    }
    const failure = this.failures.get(method);
    if (failure) {
      if (failure.remaining !== undefined) {
        failure.remaining -= 1;
        if (failure.remaining <= 0) this.failures.delete(method);
      }
      return { code: failure.code, details: failure.details };
    }
    return undefined;
  }
}

function recordMetadata(metadata: Metadata): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  // getMap() keeps only the first value per key; it serves for the key list.
  for (const key of Object.keys(metadata.getMap())) {
    out[key] = metadata.get(key).map((v) => (typeof v === 'string' ? v : v.toString('base64')));
  }
  return out;
}

/** DER certificates concatenated, in the given order (the wire format of chains and bundles). */
export function derConcat(certs: Issued[]): Buffer {
  return Buffer.concat(certs.map((c) => c.der));
}

/** The map key for a trust domain in `federated_bundles` / `bundles`: its SPIFFE ID. */
export function trustDomainKey(td: string): string {
  return `spiffe://${td}`;
}

/**
 * One X509SVID wire message from fixtures: `chain` leaf first then intermediates (DER,
 * concatenated), the leaf's key as PKCS#8 DER, and `bundle` the trust domain's CA certificates.
 */
export function x509SvidMessage(spiffeId: string, chain: Issued[], bundle: Issued[], hint = ''): X509SvidMessage {
  const leaf = chain[0];
  if (!leaf) throw new Error('x509SvidMessage: chain must start with the leaf');
  return {
    spiffe_id: spiffeId,
    x509_svid: derConcat(chain),
    x509_svid_key: Buffer.from(leaf.privateKey.export({ format: 'der', type: 'pkcs8' })),
    bundle: derConcat(bundle),
    hint,
  };
}
