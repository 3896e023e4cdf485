// Egress credential sources: where the sidecar gets the API keys it injects into the agent's
// outbound calls, so the agent itself never holds them. Three kinds: a watched file (a mounted
// Kubernetes secret, a file a helper writes), the sidecar's own environment, and an HTTP(S)
// secrets manager (Vault, a cloud secrets API) polled on an interval.
//
// Two rules run through all of them:
// - A value never appears in an error, a status or a log line. Reasons name the source (its
//   description, which drops query strings and userinfo) and what went wrong, nothing else.
// - A value that could smuggle a header (CR, LF, NUL inside it) or that is empty is refused:
//   the value ends up in a request header, and an empty one would send an unauthenticated call.
import { readFile } from 'node:fs/promises';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { resolve as resolvePath } from 'node:path';
import { watchFiles, type FileWatch } from '../identity/watch.js';
import type { Logger } from '../telemetry/index.js';

export type CredentialSourceConfig =
  /** The whole file, with ONE trailing newline (\n or \r\n) removed; watched. */
  | { kind: 'file'; path: string }
  /** The sidecar's own environment variable, read at start(). */
  | { kind: 'env'; name: string }
  | {
      kind: 'http';
      url: string;
      /** RFC 6901 JSON pointer to the string in the response body. */
      pointer: string;
      refreshMs: number;
      timeoutMs: number;
      /** Request headers whose values are read from files (e.g. x-vault-token), re-read at every fetch. */
      headers?: Record<string, { file: string }>;
      /** PEM file paths; cert+key = mTLS client certificate; ca = the server's CA (default: system store). Re-read at every fetch. */
      tls?: { ca?: string; cert?: string; key?: string };
    };

/** The message names the source and the reason; it NEVER contains the credential value. */
export class CredentialUnavailableError extends Error {
  override readonly name = 'CredentialUnavailableError';
  readonly code = 'credential_unavailable';
}

export interface CredentialStatus {
  /** The source's description. */
  source: string;
  available: boolean;
  /** When the current value was loaded (ISO 8601); absent when there is none. */
  loadedAt?: string;
  /** Why the source is unavailable, or why its last refresh failed (an http source keeps its last good value). */
  lastError?: string;
}

export interface CredentialSource {
  /** Where the value comes from, safe to log: `file /abs/path`, `env NAME`, `http https://host/path#/json/pointer` (no query string, no userinfo). */
  readonly description: string;
  /** First load. Never rejects: a source that cannot load yet is simply unavailable (value() throws) and says why in status(). */
  start(): Promise<void>;
  /** The current value; throws CredentialUnavailableError (with a reason that names the source but never a value) when there is none. */
  value(): string;
  stop(): void;
  status(): CredentialStatus;
}

export interface CredentialSourceOptions {
  /** The environment `env` sources read (default: process.env), for tests. */
  env?: Record<string, string | undefined>;
  /** Clock for loadedAt (epoch ms). */
  now?: () => number;
}

/** Largest secrets-manager response read; a credential is a few hundred bytes at most. */
export const MAX_HTTP_BODY_BYTES = 64 * 1024;
/** setTimeout turns anything larger into 1 ms (with a warning), which would hammer the server. */
const MAX_TIMER_MS = 2_147_483_647;
/** Values shorter than this are not scrubbed from error texts (it would mangle them); such values are not credentials. */
const MIN_REDACT_LENGTH = 4;

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * A source for `config`. Throws (a plain Error, never mentioning a value or a query string) when
 * the config itself is unusable, e.g. plain http to a non-loopback host; anything that can change
 * at run time (a missing file, a server down) only makes the source unavailable.
 */
export function createCredentialSource(config: CredentialSourceConfig, logger: Logger, options: CredentialSourceOptions = {}): CredentialSource {
  const now = options.now ?? Date.now;
  switch (config.kind) {
    case 'file':
      if (typeof config.path !== 'string' || config.path === '') throw new Error('file credential source: path is empty');
      return new FileSource(resolvePath(config.path), logger, now);
    case 'env':
      if (typeof config.name !== 'string' || config.name === '' || /[=\0]/.test(config.name)) {
        throw new Error('env credential source: name must be a non-empty variable name without "=" or NUL');
      }
      return new EnvSource(config.name, options.env ?? process.env, logger, now);
    case 'http':
      return new HttpSource(checkHttpConfig(config), logger, now);
    default:
      throw new Error(`unknown credential source kind ${JSON.stringify((config as { kind?: unknown }).kind)}`);
  }
}

/** Removes ONE trailing "\n" or "\r\n" (what editors and `echo` add); nothing else is trimmed. */
function trimOneNewline(text: string): string {
  if (text.endsWith('\r\n')) return text.slice(0, -2);
  if (text.endsWith('\n')) return text.slice(0, -1);
  return text;
}

/** Why `value` cannot be sent in a header, or undefined when it can. */
function valueProblem(value: string): { code: string; reason: string } | undefined {
  if (value === '') return { code: 'empty', reason: 'empty' };
  // CR/LF would split the header (injection), NUL is refused by every HTTP stack.
  if (/[\r\n\0]/.test(value)) return { code: 'invalid_characters', reason: 'contains a line break or NUL' };
  // Anything else Node would refuse to put in a header: unavailable here, not a 500 per call.
  if (/[^\t\x20-\x7e\x80-\xff]/.test(value)) return { code: 'invalid_characters', reason: 'contains characters not allowed in an HTTP header' };
  return undefined;
}

function errnoCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'EIO';
}

/** A failure whose message is known to be safe to show (no value in it). */
class Problem extends Error {
  constructor(message: string, readonly code: string) {
    super(message);
  }
}

/** Common state: the current value, when it was loaded, the last reason. */
abstract class BaseSource implements CredentialSource {
  protected current: string | undefined;
  protected loadedAtMs: number | undefined;
  protected lastError: string | undefined;
  protected stopped = false;
  private starting: Promise<void> | undefined;

  constructor(
    readonly description: string,
    protected readonly logger: Logger,
    protected readonly now: () => number,
  ) {}

  start(): Promise<void> {
    this.starting ??= this.begin().catch((err: unknown) => {
      // Only a bug gets here (every load path catches its own errors); still no rejection, and
      // only the error's code or class name, in case its message carries something it should not.
      const code = (err as { code?: unknown } | null)?.code;
      this.markUnavailable(`unexpected error (${typeof code === 'string' ? code : (err as Error | null)?.name ?? 'unknown'})`, 'unexpected');
    });
    return this.starting;
  }

  value(): string {
    if (this.current === undefined) throw new CredentialUnavailableError(this.lastError ?? `${this.description}: not loaded yet`);
    return this.current;
  }

  stop(): void {
    this.stopped = true;
    this.end();
  }

  status(): CredentialStatus {
    return {
      source: this.description,
      available: this.current !== undefined,
      ...(this.loadedAtMs !== undefined ? { loadedAt: new Date(this.loadedAtMs).toISOString() } : {}),
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }

  protected abstract begin(): Promise<void>;
  protected end(): void {}

  protected markLoaded(value: string): void {
    const changed = value !== this.current;
    const wasAvailable = this.current !== undefined;
    this.current = value;
    this.loadedAtMs = this.now();
    this.lastError = undefined;
    if (!wasAvailable) this.logger.info('credential loaded', { source: this.description });
    else if (changed) this.logger.info('credential changed', { source: this.description });
    else this.logger.debug('credential unchanged', { source: this.description });
  }

  /** Fail closed: the value is dropped. `reason` must not contain a value. */
  protected markUnavailable(reason: string, code: string): void {
    this.current = undefined;
    this.loadedAtMs = undefined;
    this.lastError = `${this.description}: ${reason}`;
    this.logger.warn('credential unavailable', { source: this.description, code, reason: this.lastError });
  }
}

// ---------------------------------------------------------------------------------------------
// file

class FileSource extends BaseSource {
  private watch: FileWatch | undefined;
  /** Reloads can overlap (a slow read and a new change); only the latest one's result counts. */
  private generation = 0;

  constructor(
    private readonly path: string,
    logger: Logger,
    now: () => number,
  ) {
    super(`file ${path}`, logger, now);
  }

  protected async begin(): Promise<void> {
    if (this.stopped) return;
    // Watch first, then read: a change landing during the first read is not missed. A file
    // missing at start is watched too, so creating it later makes the source available.
    this.watch = watchFiles([this.path], () => void this.reload());
    await this.reload();
  }

  protected override end(): void {
    this.watch?.close();
    this.watch = undefined;
  }

  private async reload(): Promise<void> {
    const generation = ++this.generation;
    let text: string | undefined;
    let readError: string | undefined;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      readError = errnoCode(err);
    }
    if (generation !== this.generation || this.stopped) return;
    // A deleted or unreadable secret must stop being used: no last-good fallback here (a
    // rotated-out key that lingers is exactly what deleting the file is meant to prevent).
    if (text === undefined) return this.markUnavailable(`cannot read (${readError})`, readError ?? 'EIO');
    const value = trimOneNewline(text);
    const problem = valueProblem(value);
    if (problem) return this.markUnavailable(problem.reason, problem.code);
    this.markLoaded(value);
  }
}

// ---------------------------------------------------------------------------------------------
// env

class EnvSource extends BaseSource {
  constructor(
    private readonly name: string,
    private readonly env: Record<string, string | undefined>,
    logger: Logger,
    now: () => number,
  ) {
    super(`env ${name}`, logger, now);
  }

  protected async begin(): Promise<void> {
    if (this.stopped) return;
    const value = this.env[this.name];
    if (value === undefined) return this.markUnavailable('not set', 'not_set');
    // No newline trimming: an environment variable has no editor adding one, so a newline in it
    // is a mistake worth surfacing.
    const problem = valueProblem(value);
    if (problem) return this.markUnavailable(problem.reason, problem.code);
    this.markLoaded(value);
  }
}

// ---------------------------------------------------------------------------------------------
// http

type HttpConfig = Extract<CredentialSourceConfig, { kind: 'http' }>;

interface CheckedHttpConfig {
  url: URL;
  description: string;
  pointer: string[];
  pointerText: string;
  refreshMs: number;
  timeoutMs: number;
  headers: Array<[string, string]>;
  tls: { ca?: string; cert?: string; key?: string };
}

function checkHttpConfig(config: HttpConfig): CheckedHttpConfig {
  let url: URL;
  try {
    url = new URL(config.url);
  } catch {
    // Not echoed: the string may carry a token in its query or userinfo.
    throw new Error('http credential source: url is not a valid absolute URL');
  }
  // Userinfo and query are left out: either may hold a credential of its own.
  const base = `${url.protocol}//${url.host}${url.pathname}`;
  const what = `http credential source ${base}`;
  if (url.protocol === 'http:') {
    // The request carries a secrets-manager token and the answer carries a credential; in the
    // clear that is only acceptable when it never leaves the machine.
    if (!LOOPBACK_HOSTS.has(url.hostname)) throw new Error(`${what}: plain http is only allowed on loopback (127.0.0.1, ::1, localhost); use https`);
  } else if (url.protocol !== 'https:') {
    throw new Error(`${what}: the url must be https (or http on loopback)`);
  }
  if (typeof config.pointer !== 'string') throw new Error(`${what}: pointer must be a JSON pointer string`);
  const pointer = parsePointer(config.pointer, what);
  const refreshMs = checkMs(config.refreshMs, 'refreshMs', what);
  const timeoutMs = checkMs(config.timeoutMs, 'timeoutMs', what);
  const headers: Array<[string, string]> = [];
  for (const [name, spec] of Object.entries(config.headers ?? {})) {
    if (!HEADER_NAME.test(name)) throw new Error(`${what}: header name ${JSON.stringify(name)} is not a valid HTTP header name`);
    if (typeof spec?.file !== 'string' || spec.file === '') throw new Error(`${what}: header ${name}: file is empty`);
    headers.push([name, resolvePath(spec.file)]);
  }
  const tls: CheckedHttpConfig['tls'] = {};
  for (const field of ['ca', 'cert', 'key'] as const) {
    const path = config.tls?.[field];
    if (path === undefined) continue;
    if (typeof path !== 'string' || path === '') throw new Error(`${what}: tls.${field} is empty`);
    tls[field] = resolvePath(path);
  }
  if ((tls.cert === undefined) !== (tls.key === undefined)) throw new Error(`${what}: tls.cert and tls.key go together (the client certificate and its key)`);
  if (url.protocol === 'http:' && Object.keys(tls).length > 0) throw new Error(`${what}: tls is set but the url is plain http`);
  return { url, description: `http ${base}#${config.pointer}`, pointer, pointerText: config.pointer, refreshMs, timeoutMs, headers, tls };
}

function checkMs(value: unknown, field: string, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value <= 0 || value > MAX_TIMER_MS) {
    throw new Error(`${what}: ${field} must be a whole number of milliseconds between 1 and ${MAX_TIMER_MS}`);
  }
  return value;
}

/** RFC 6901: "" is the whole document, otherwise "/"-separated tokens with ~1 → "/" and ~0 → "~". */
export function parsePointer(pointer: string, what = 'JSON pointer'): string[] {
  if (pointer === '') return [];
  if (!pointer.startsWith('/')) throw new Error(`${what}: pointer ${JSON.stringify(pointer)} must be empty or start with "/"`);
  if (/~(?![01])/.test(pointer)) throw new Error(`${what}: pointer ${JSON.stringify(pointer)} has a "~" not followed by 0 or 1`);
  // Order matters: "~01" is the token "~1", not "/".
  return pointer
    .slice(1)
    .split('/')
    .map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'));
}

/** The value at `tokens` in `doc`, or undefined; own properties only, array indexes in canonical form. */
export function resolvePointer(doc: unknown, tokens: string[]): unknown {
  let node = doc;
  for (const token of tokens) {
    if (Array.isArray(node)) {
      if (!/^(0|[1-9][0-9]*)$/.test(token)) return undefined;
      node = node[Number(token)];
    } else if (node !== null && typeof node === 'object') {
      if (!Object.hasOwn(node, token)) return undefined;
      node = (node as Record<string, unknown>)[token];
    } else {
      return undefined;
    }
  }
  return node;
}

function kindOf(value: unknown): string {
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `a ${typeof value}`;
}

/** Replaces each secret in `text`; a second line of defence for messages from node itself (TLS, sockets). */
function redact(text: string, secrets: Array<string | undefined>): string {
  let out = text;
  for (const secret of secrets) {
    if (secret !== undefined && secret.length >= MIN_REDACT_LENGTH) out = out.replaceAll(secret, '[redacted]');
  }
  return out;
}

class HttpSource extends BaseSource {
  private timer: NodeJS.Timeout | undefined;
  private inflight: ClientRequest | undefined;

  constructor(
    private readonly config: CheckedHttpConfig,
    logger: Logger,
    now: () => number,
  ) {
    super(config.description, logger, now);
  }

  protected async begin(): Promise<void> {
    if (this.stopped) return;
    await this.refresh();
    this.schedule();
  }

  protected override end(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.inflight?.destroy();
    this.inflight = undefined;
  }

  /** The next refresh `refreshMs` after the previous one finished, so slow fetches never overlap. */
  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.refresh().finally(() => this.schedule());
    }, this.config.refreshMs);
    this.timer.unref();
  }

  private async refresh(): Promise<void> {
    const secrets: string[] = [];
    try {
      const headers = await this.readHeaders(secrets);
      const tls = await this.readTls();
      if (this.stopped) return;
      const body = await this.fetch(headers, tls);
      let doc: unknown;
      try {
        doc = JSON.parse(body);
      } catch {
        // Not JSON.parse's message: it quotes the start of the body, which may be the secret.
        throw new Problem('response is not valid JSON', 'invalid_json');
      }
      const found = resolvePointer(doc, this.config.pointer);
      const at = this.config.pointerText === '' ? '"" (the whole document)' : this.config.pointerText;
      if (typeof found !== 'string') throw new Problem(`no string at ${at} (found ${kindOf(found)})`, 'no_string');
      const problem = valueProblem(found);
      if (problem) throw new Problem(`the string at ${at} ${problem.reason === 'empty' ? 'is empty' : problem.reason}`, problem.code);
      if (this.stopped) return;
      this.markLoaded(found);
    } catch (err) {
      if (this.stopped) return;
      const message = err instanceof Problem ? err.message : `${errnoCode(err)} ${(err as Error | null)?.message ?? ''}`.trim();
      const code = err instanceof Problem ? err.code : errnoCode(err);
      this.refreshFailed(redact(message, [...secrets, this.current]), code);
    }
  }

  private refreshFailed(reason: string, code: string): void {
    if (this.current === undefined) return this.markUnavailable(reason, code);
    // A secrets-manager outage must not take egress down: the last good value stays in use.
    this.lastError = `${this.description}: ${reason}`;
    this.logger.warn('credential refresh failed, keeping the last good value', { source: this.description, code, reason: this.lastError });
  }

  /** Header values from their files, read now (tokens rotate); each value is added to `secrets`. */
  private async readHeaders(secrets: string[]): Promise<Record<string, string>> {
    const headers: Record<string, string> = {};
    for (const [name, path] of this.config.headers) {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        throw new Problem(`header ${name}: cannot read ${path} (${errnoCode(err)})`, errnoCode(err));
      }
      const value = trimOneNewline(text);
      secrets.push(value);
      const problem = valueProblem(value);
      if (problem) throw new Problem(`header ${name}: ${path} ${problem.reason === 'empty' ? 'is empty' : problem.reason}`, problem.code);
      headers[name] = value;
    }
    return headers;
  }

  /** TLS material read now, so a rotated client certificate is used at the next fetch. */
  private async readTls(): Promise<{ ca?: string; cert?: string; key?: string }> {
    const out: { ca?: string; cert?: string; key?: string } = {};
    for (const field of ['ca', 'cert', 'key'] as const) {
      const path = this.config.tls[field];
      if (path === undefined) continue;
      try {
        out[field] = await readFile(path, 'utf8');
      } catch (err) {
        throw new Problem(`tls.${field}: cannot read ${path} (${errnoCode(err)})`, errnoCode(err));
      }
    }
    return out;
  }

  /** GET the url; resolves with the body of a 200 JSON response of at most MAX_HTTP_BODY_BYTES. */
  private fetch(headers: Record<string, string>, tls: { ca?: string; cert?: string; key?: string }): Promise<string> {
    const { url, timeoutMs } = this.config;
    return new Promise<string>((resolve, reject) => {
      let done = false;
      const settle = (err: Error | undefined, body?: string): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (this.inflight === req) this.inflight = undefined;
        if (err) {
          req.destroy();
          reject(err);
        } else resolve(body ?? '');
      };
      const onResponse = (res: IncomingMessage): void => {
        res.on('error', (err) => settle(err));
        if (res.statusCode !== 200) {
          // The body is not read: an error page may echo the request, token included.
          res.resume();
          return settle(new Problem(`HTTP ${res.statusCode ?? '(no status)'}`, 'http_status'));
        }
        const type = res.headers['content-type'] ?? '';
        if (!type.toLowerCase().includes('json')) {
          res.resume();
          return settle(new Problem(`content type ${JSON.stringify(type.slice(0, 100))} is not JSON`, 'content_type'));
        }
        const declared = Number(res.headers['content-length']);
        if (Number.isFinite(declared) && declared > MAX_HTTP_BODY_BYTES) {
          res.destroy();
          return settle(new Problem(`response larger than ${MAX_HTTP_BODY_BYTES} bytes`, 'too_large'));
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_HTTP_BODY_BYTES) {
            res.destroy();
            return settle(new Problem(`response larger than ${MAX_HTTP_BODY_BYTES} bytes`, 'too_large'));
          }
          chunks.push(chunk);
        });
        res.on('end', () => settle(undefined, Buffer.concat(chunks).toString('utf8')));
        res.on('close', () => settle(new Problem('the response ended early', 'incomplete')));
      };
      // agent: false: a fresh connection per fetch, with the TLS material just read (a pooled
      // one would keep presenting the previous client certificate), closed afterwards.
      const req =
        url.protocol === 'https:'
          ? httpsRequest(url, { method: 'GET', headers: { accept: 'application/json', ...headers }, agent: false, ...tls }, onResponse)
          : httpRequest(url, { method: 'GET', headers: { accept: 'application/json', ...headers }, agent: false }, onResponse);
      this.inflight = req;
      const timer = setTimeout(() => settle(new Problem(`no complete response within ${timeoutMs} ms`, 'timeout')), timeoutMs);
      req.on('error', (err) => settle(err));
      req.end();
    });
  }
}
