// `sigil revoke`: the kill switch client. Talks to a sidecar's admin API (POST/GET
// /v1/revocations, DELETE /v1/revocations/<id>); the sidecar validates and normalizes the
// entry, applies it at once and, with NATS, propagates it to the fleet.
// Exit codes: 0 done, 1 refused by the admin API or the API unreachable, 2 usage error.
//
// parseDuration comes from config/duration.js (what config/index.js re-exports), not the
// index itself: the index pulls in the whole config schema (zod, yaml), a few hundred ms on
// every kill-switch call.
import { readFileSync } from 'node:fs';
import { parseDuration } from '../config/duration.js';
import { CliUsageError, parseFlags } from './args.js';
import type { RevocationEntryJson } from '../revocation/entry.js';

const SYNOPSIS = `usage:
  sigil revoke --admin URL (--agent ID|PATTERN | --svid SERIAL|sha256:FINGERPRINT | --task ID | --token JTI | --user SUB | --trust-domain TD)
               [--reason TEXT] [--ttl DURATION | --expires ISO] [--by NAME] [--token-file PATH] [--json]
  sigil revoke --admin URL --list [--token-file PATH] [--json]
  sigil revoke --admin URL --lift ID [--by NAME] [--token-file PATH] [--json]
`;

export const REVOKE_USAGE = `${SYNOPSIS}
Revokes an identity, credential or delegation on a sidecar (the kill switch), lists the
revocations in force, or lifts one. The sidecar applies a revocation at once (open connections,
streams and subscriptions it covers are cut) and, when it has a NATS revocation feed, propagates
it to every sidecar and broker of the fleet.

Give exactly one subject flag (or --list, or --lift):
  --agent ID|PATTERN              a SPIFFE ID, or a pattern (* one segment, trailing **)
  --svid SERIAL|sha256:FINGERPRINT
                                  one X.509-SVID, by serial (hex) or leaf SHA-256 fingerprint
  --task ID                       a delegation's task id
  --token JTI                     a delegated token, by its jti
  --user SUB                      every delegation on behalf of a user (the token's sub)
  --trust-domain TD               every identity of a trust domain

options:
  --admin URL       the sidecar's admin API (default http://127.0.0.1:15000; http or https)
  --reason TEXT     why (kept with the entry, at most 256 characters)
  --ttl DURATION    the revocation lapses after this long (e.g. 30m, 1h, 24h)
  --expires ISO     the revocation lapses at this time (e.g. 2030-01-01T00:00:00Z);
                    --ttl and --expires are exclusive; without either it stays until lifted
  --by NAME         who is revoking or lifting, for the audit trail (default "admin")
  --token-file PATH the admin token, when the sidecar sets admin.tokenFile (sent as a bearer
                    token; never printed)
  --list            list the revocations in force
  --lift ID         lift the revocation with this id (as printed by revoke and --list)
  --json            print the admin API's JSON answer on stdout instead of a summary line
  -h, --help        this text

exit codes: 0 done; 1 the admin API refused (its error and detail go to stderr; with --json its
answer also goes to stdout) or could not be reached; 2 usage error.
`;

export const DEFAULT_ADMIN = 'http://127.0.0.1:15000';
const REQUEST_TIMEOUT_MS = 10_000;

/** Subject flag → revocation kind. */
const SUBJECTS = {
  agent: 'agent',
  svid: 'svid',
  task: 'task',
  token: 'token',
  user: 'user',
  'trust-domain': 'trust_domain',
} as const;
type SubjectFlag = keyof typeof SUBJECTS;
const SUBJECT_FLAGS = Object.keys(SUBJECTS) as SubjectFlag[];

const OPTIONS = {
  admin: { type: 'string', multiple: true },
  agent: { type: 'string', multiple: true },
  svid: { type: 'string', multiple: true },
  task: { type: 'string', multiple: true },
  token: { type: 'string', multiple: true },
  user: { type: 'string', multiple: true },
  'trust-domain': { type: 'string', multiple: true },
  reason: { type: 'string', multiple: true },
  ttl: { type: 'string', multiple: true },
  expires: { type: 'string', multiple: true },
  by: { type: 'string', multiple: true },
  'token-file': { type: 'string', multiple: true },
  lift: { type: 'string', multiple: true },
  list: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;
type StringFlag = { [K in keyof typeof OPTIONS]: (typeof OPTIONS)[K]['type'] extends 'string' ? K : never }[keyof typeof OPTIONS];

type Request =
  | { op: 'revoke'; body: { kind: string; value: string; reason?: string; expiresAt?: string; by?: string } }
  | { op: 'list' }
  | { op: 'lift'; id: string; by?: string };

interface Invocation {
  admin: URL;
  json: boolean;
  /** The admin token (admin.tokenFile on the sidecar), read from --token-file. */
  token?: string;
  request: Request;
}

export async function runRevoke(args: string[]): Promise<number> {
  let invocation: Invocation | 'help';
  try {
    invocation = parseRevokeArgs(args, Date.now());
  } catch (err) {
    if (!(err instanceof CliUsageError)) throw err;
    process.stderr.write(`sigil revoke: ${err.message}\n\n${SYNOPSIS}(sigil revoke --help for details)\n`);
    return 2;
  }
  if (invocation === 'help') {
    process.stdout.write(REVOKE_USAGE);
    return 0;
  }
  return send(invocation);
}

/** The command line → what to ask the admin API; throws CliUsageError naming the flag. */
export function parseRevokeArgs(args: string[], now: number): Invocation | 'help' {
  const raw = parseFlags(args, OPTIONS) as unknown as Record<string, string[] | boolean | undefined>;
  if (raw['help'] === true) return 'help';
  // Every value flag is `multiple` only so that a repeated flag is refused instead of the last
  // one silently winning (`--agent a --agent b` must not revoke just b).
  const one = (name: StringFlag): string | undefined => {
    const values = raw[name] as string[] | undefined;
    if (values === undefined) return undefined;
    if (values.length > 1) throw new CliUsageError(`--${name} given ${values.length} times (give it once; one revocation per command)`);
    return values[0];
  };
  const nonEmpty = (name: StringFlag): string | undefined => {
    const value = one(name);
    if (value !== undefined && value.trim() === '') throw new CliUsageError(`--${name}: must not be empty`);
    return value;
  };

  const admin = parseAdminUrl(one('admin') ?? DEFAULT_ADMIN);
  const json = raw['json'] === true;
  const tokenFile = nonEmpty('token-file');
  const token = tokenFile === undefined ? undefined : readTokenFile(tokenFile);

  const subjects = SUBJECT_FLAGS.filter((f) => raw[f] !== undefined);
  const modes = [...subjects.map((f) => `--${f}`), ...(raw['list'] === true ? ['--list'] : []), ...(raw['lift'] !== undefined ? ['--lift'] : [])];
  if (modes.length === 0) {
    throw new CliUsageError(`one of ${SUBJECT_FLAGS.map((f) => `--${f}`).join(', ')}, --list or --lift is required`);
  }
  if (modes.length > 1) {
    throw new CliUsageError(`${modes.join(' and ')} cannot be combined (give exactly one subject flag, or --list, or --lift)`);
  }
  const mode = modes[0]!;
  const onlyWhenRevoking = (names: StringFlag[]): void => {
    for (const name of names) if (raw[name] !== undefined) throw new CliUsageError(`--${name} only applies when revoking, not with ${mode}`);
  };

  if (mode === '--list') {
    onlyWhenRevoking(['reason', 'ttl', 'expires']);
    if (raw['by'] !== undefined) throw new CliUsageError('--by only applies when revoking or lifting, not with --list');
    return { admin, json, ...(token === undefined ? {} : { token }), request: { op: 'list' } };
  }

  const by = nonEmpty('by');
  if (mode === '--lift') {
    onlyWhenRevoking(['reason', 'ttl', 'expires']);
    const id = nonEmpty('lift')!;
    return { admin, json, ...(token === undefined ? {} : { token }), request: { op: 'lift', id, ...(by === undefined ? {} : { by }) } };
  }

  const flag = subjects[0]!;
  const value = nonEmpty(flag)!;
  const body: { kind: string; value: string; reason?: string; expiresAt?: string; by?: string } = { kind: SUBJECTS[flag], value };
  const reason = one('reason');
  if (reason !== undefined) body.reason = reason;
  const ttl = one('ttl');
  const expires = one('expires');
  if (ttl !== undefined && expires !== undefined) throw new CliUsageError('--ttl and --expires are exclusive (give at most one)');
  if (ttl !== undefined) {
    let ms: number;
    try {
      ms = parseDuration(ttl);
    } catch (err) {
      throw new CliUsageError(`--ttl: ${(err as Error).message}`);
    }
    if (ms <= 0) throw new CliUsageError(`--ttl: must be longer than 0 (got ${JSON.stringify(ttl)})`);
    body.expiresAt = new Date(now + ms).toISOString();
  }
  if (expires !== undefined) body.expiresAt = parseIsoTime(expires);
  if (by !== undefined) body.by = by;
  return { admin, json, ...(token === undefined ? {} : { token }), request: { op: 'revoke', body } };
}

export function parseAdminUrl(text: string): URL {
  const problem = `--admin: must be an http(s) URL such as ${DEFAULT_ADMIN}`;
  // `host:port` is how the sidecar's ready line and admin.listen spell the address.
  const hint = /^([\w.-]+|\[[0-9a-f:.]+\]):\d+$/i.test(text) ? `; did you mean http://${text}?` : '';
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CliUsageError(`${problem} (got ${JSON.stringify(text)}${hint})`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new CliUsageError(`${problem} (got the scheme "${url.protocol.slice(0, -1)}"${hint})`);
  // Never echoed back: an admin URL with credentials would print them in every message.
  if (url.username !== '' || url.password !== '') throw new CliUsageError('--admin: must not carry credentials (user:password@)');
  if (url.search !== '' || url.hash !== '') throw new CliUsageError('--admin: must not have a query or fragment');
  return url;
}

/** A date-time with a time zone (Z or ±HH:MM), so the instant does not depend on the local zone. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;

function parseIsoTime(text: string): string {
  const ms = ISO_TIME.test(text) ? Date.parse(text) : NaN;
  if (!Number.isFinite(ms)) throw new CliUsageError(`--expires: ${JSON.stringify(text)} is not an ISO 8601 date-time with a time zone (e.g. 2030-01-01T00:00:00Z)`);
  return new Date(ms).toISOString();
}

/** One bearer token from a file (never echoed); `flag` names the option in errors. */
export function readTokenFile(path: string, flag = '--token-file'): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new CliUsageError(`${flag}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (text === '' || /\s/.test(text)) throw new CliUsageError(`${flag}: ${path} must hold one token, no whitespace`);
  return text;
}

/** `<admin>/v1/revocations[/<id>]`, under the admin URL's path if it has one. */
function endpoint(admin: URL, id?: string, by?: string): URL {
  const url = new URL(admin.href);
  url.pathname = `${admin.pathname.replace(/\/+$/, '')}/v1/revocations${id === undefined ? '' : `/${encodeURIComponent(id)}`}`;
  if (by !== undefined) url.searchParams.set('by', by);
  return url;
}

async function send({ admin, json, request, token }: Invocation): Promise<number> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
  let url: URL;
  let init: RequestInit;
  switch (request.op) {
    case 'revoke':
      url = endpoint(admin);
      headers['content-type'] = 'application/json';
      init = { method: 'POST', body: JSON.stringify(request.body) };
      break;
    case 'list':
      url = endpoint(admin);
      init = { method: 'GET' };
      break;
    case 'lift':
      url = endpoint(admin, request.id, request.by);
      init = { method: 'DELETE' };
      break;
  }
  const shown = `${url.origin}${url.pathname}`;

  let status: number;
  let text: string;
  try {
    const res = await fetch(url, { ...init, headers, redirect: 'error', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    status = res.status;
    text = await res.text();
  } catch (err) {
    process.stderr.write(`sigil revoke: cannot reach the admin API at ${shown}: ${describeNetworkError(err)}\n`);
    return 1;
  }

  let body: Record<string, unknown> | undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
  } catch {
    body = undefined;
  }
  if (body === undefined) {
    process.stderr.write(`sigil revoke: unexpected answer from ${shown} (HTTP ${status}, not a JSON object): is --admin a Sigil admin listener?\n`);
    return 1;
  }

  const ok = (request.op === 'revoke' && status === 201) || (request.op !== 'revoke' && status === 200);
  if (json) process.stdout.write(JSON.stringify(body) + '\n');
  if (!ok) {
    const error = typeof body['error'] === 'string' ? body['error'] : 'error';
    const detail = typeof body['detail'] === 'string' ? `: ${body['detail']}` : '';
    process.stderr.write(`sigil revoke: refused by ${shown} (HTTP ${status}): ${clean(error)}${clean(detail)}\n`);
    return 1;
  }
  if (json) return 0;

  switch (request.op) {
    case 'revoke': {
      const entry = asEntry(body['revocation']);
      if (!entry) return malformed(shown, status);
      process.stdout.write(`revoked ${summary(entry, body['propagated'] === true)}\n`);
      return 0;
    }
    case 'lift': {
      const entry = asEntry(body['lifted']);
      if (!entry) return malformed(shown, status);
      process.stdout.write(`lifted ${summary(entry, body['propagated'] === true)}\n`);
      return 0;
    }
    case 'list': {
      const list = body['revocations'];
      const entries = Array.isArray(list) ? list.map(asEntry) : undefined;
      if (!entries || entries.some((e) => e === undefined)) return malformed(shown, status);
      process.stdout.write(formatList(entries as Entry[], body));
      return 0;
    }
  }
}

type Entry = RevocationEntryJson;

function asEntry(value: unknown): Entry | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const o = value as Record<string, unknown>;
  for (const key of ['id', 'kind', 'value', 'revokedBy', 'revokedAt']) if (typeof o[key] !== 'string') return undefined;
  const entry: Entry = {
    id: o['id'] as string,
    kind: o['kind'] as string,
    value: o['value'] as string,
    reason: typeof o['reason'] === 'string' ? o['reason'] : '',
    revokedBy: o['revokedBy'] as string,
    revokedAt: o['revokedAt'] as string,
  };
  if (typeof o['expiresAt'] === 'string') entry.expiresAt = o['expiresAt'];
  return entry;
}

function malformed(shown: string, status: number): number {
  process.stderr.write(`sigil revoke: unexpected answer from ${shown} (HTTP ${status}): not the revocation document this client expects\n`);
  return 1;
}

/** `agent spiffe://… (id …, expires …, propagated)`. */
function summary(entry: Entry, propagated: boolean): string {
  const parts = [`id ${clean(entry.id)}`];
  if (entry.expiresAt !== undefined) parts.push(`expires ${clean(entry.expiresAt)}`);
  parts.push(propagated ? 'propagated' : 'not propagated: this sidecar only');
  return `${clean(entry.kind)} ${clean(entry.value)} (${parts.join(', ')})`;
}

function formatList(entries: Entry[], body: Record<string, unknown>): string {
  const age = typeof body['ageSeconds'] === 'number' ? `, list age ${body['ageSeconds']}s` : '';
  const stale = body['stale'] === true ? ', STALE: new connections are refused' : '';
  const epoch = typeof body['epoch'] === 'number' ? `epoch ${body['epoch']}` : 'epoch ?';
  const head = `${entries.length === 0 ? 'no revocations' : entries.length === 1 ? '1 revocation' : `${entries.length} revocations`} in force (${epoch}${age}${stale})\n`;
  if (entries.length === 0) return head;
  const rows = [
    ['ID', 'KIND', 'VALUE', 'REVOKED AT', 'BY', 'EXPIRES', 'REASON'],
    ...entries.map((e) => [e.id, e.kind, e.value, e.revokedAt, e.revokedBy, e.expiresAt ?? '-', e.reason === '' ? '-' : e.reason].map(clean)),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
  return head + lines.join('\n') + '\n';
}

/** Text from the network, safe for a terminal: control characters escaped. */
function clean(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** `ECONNREFUSED (connect ECONNREFUSED 127.0.0.1:1)`, `timed out after 10s`, … */
function describeNetworkError(err: unknown): string {
  const e = err as Error & { cause?: unknown };
  if (e.name === 'TimeoutError' || e.name === 'AbortError') return `timed out after ${REQUEST_TIMEOUT_MS / 1000}s`;
  // fetch wraps the socket error in `cause` (an AggregateError when several addresses were tried).
  let cause = e.cause as (Error & { code?: string; errors?: Array<Error & { code?: string }> }) | undefined;
  if (cause && cause.code === undefined && Array.isArray(cause.errors) && cause.errors.length > 0) cause = cause.errors[0];
  if (cause && typeof cause.code === 'string') return `${cause.code} (${cause.message})`;
  return cause instanceof Error ? cause.message : e.message;
}
