import t from 'tap';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { agentResource, type AuthzRequest, type Decision } from '../../src/authz/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';
import { AuditLog, childTraceparent, createLogger, newRequestId, type AuditLogOptions } from '../../src/telemetry/index.js';

const A = SpiffeId.parse('spiffe://example.org/agent/a');
const B = SpiffeId.parse('spiffe://example.org/agent/b');

const ALWAYS = ['time', 'reporter', 'source', 'destination', 'action', 'resource', 'decision', 'wouldDeny', 'reason', 'policies', 'policyVersion'];

function httpAllow(): Decision {
  const request: AuthzRequest = {
    action: 'http',
    direction: 'inbound',
    principal: A,
    resource: agentResource(B),
    peer: A,
    http: { method: 'POST', path: '/v1/tasks', host: 'agent-b' },
  };
  return { allowed: true, reason: 'allowed', policies: ['allow[0]'], wouldDeny: false, policyVersion: 'v1abc', request };
}

function toolDeny(): Decision {
  const request: AuthzRequest = {
    action: 'mcp.tools/call',
    direction: 'outbound',
    principal: A,
    resource: { type: 'Tool', name: 'delete_repo', agent: B },
    peer: B,
    http: { method: 'POST', path: '/mcp', host: 'tools' },
    jsonrpc: { method: 'tools/call', tool: 'delete_repo' },
    delegation: { sub: 'alice@example.org', actors: [A.toString()], depth: 1, scope: ['repo:read'], task: 'task-7', jti: 'tok-123' },
  };
  return { allowed: false, reason: 'policy_denied', policies: ['forbid-delete'], wouldDeny: false, policyVersion: 'v2def', request };
}

function wouldDeny(): Decision {
  return { ...httpAllow(), reason: 'policy_denied', policies: [], wouldDeny: true };
}

function topicDeny(): Decision {
  const request: AuthzRequest = { action: 'bus.publish', direction: 'outbound', principal: A, resource: { type: 'Topic', subject: 'orders.created' }, peer: B };
  return { allowed: false, reason: 'policy_denied', policies: [], wouldDeny: false, policyVersion: 'v1abc', request };
}

async function tmp(t: Teardown): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sigil-audit-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface LogRecord {
  level: string;
  msg: string;
  code?: string;
  [k: string]: unknown;
}

function capture(): { logs: LogRecord[]; options: Pick<AuditLogOptions, 'logger'> } {
  const logs: LogRecord[] = [];
  return { logs, options: { logger: createLogger({ level: 'debug', write: (l) => logs.push(JSON.parse(l) as LogRecord) }) } };
}

function audit(t: Teardown, options: AuditLogOptions): AuditLog {
  const log = new AuditLog({ retryMs: 25, ...options });
  t.teardown(() => log.close());
  return log;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function lines(file: string): Promise<Record<string, unknown>[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The part of a tap Test the helpers need. */
interface Teardown {
  teardown(fn: () => unknown): void;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('one line per decision with exactly the documented fields', async (t) => {
  const file = path.join(await tmp(t), 'audit.jsonl');
  const log = audit(t, { path: file });
  const requestId = newRequestId();
  const traceparent = childTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
  const before = Date.now();
  log.record(httpAllow(), { requestId, traceparent });
  log.record(toolDeny(), { requestId: 'r-2' });
  log.record(wouldDeny());
  log.record(topicDeny());
  await log.close();
  const got = await lines(file);
  t.equal(got.length, 4);
  const [allow, deny, dry, topic] = got as [Record<string, unknown>, Record<string, unknown>, Record<string, unknown>, Record<string, unknown>];

  t.strictSame(Object.keys(allow), ['time', 'requestId', 'traceparent', ...ALWAYS.slice(1), 'http'], 'allow: keys in order');
  const time = Date.parse(allow.time as string);
  t.ok(time >= before - 1 && time <= Date.now(), 'time is now');
  t.match(allow.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'ISO time');
  t.strictSame(
    { ...allow, time: 'T' },
    {
      time: 'T',
      requestId,
      traceparent,
      reporter: 'inbound',
      source: 'spiffe://example.org/agent/a',
      destination: 'spiffe://example.org/agent/b',
      action: 'http',
      resource: { type: 'Agent', id: 'spiffe://example.org/agent/b' },
      decision: 'allow',
      wouldDeny: false,
      reason: 'allowed',
      policies: ['allow[0]'],
      policyVersion: 'v1abc',
      http: { method: 'POST', path: '/v1/tasks', host: 'agent-b' },
    },
  );

  t.strictSame(Object.keys(deny), ['time', 'requestId', ...ALWAYS.slice(1), 'http', 'jsonrpc', 'delegation'], 'deny: no traceparent given, none written');
  t.strictSame(
    { ...deny, time: 'T' },
    {
      time: 'T',
      requestId: 'r-2',
      reporter: 'outbound',
      source: 'spiffe://example.org/agent/a',
      destination: 'spiffe://example.org/agent/b',
      action: 'mcp.tools/call',
      resource: { type: 'Tool', name: 'delete_repo', agent: 'spiffe://example.org/agent/b' },
      decision: 'deny',
      wouldDeny: false,
      reason: 'policy_denied',
      policies: ['forbid-delete'],
      policyVersion: 'v2def',
      http: { method: 'POST', path: '/mcp', host: 'tools' },
      jsonrpc: { method: 'tools/call', tool: 'delete_repo' },
      delegation: { sub: 'alice@example.org', actors: ['spiffe://example.org/agent/a'], depth: 1, scope: ['repo:read'], task: 'task-7', jti: 'tok-123' },
    },
  );

  t.strictSame(Object.keys(dry), [...ALWAYS, 'http'], 'dry-run: no meta, no requestId/traceparent');
  t.equal(dry.decision, 'allow', 'dry-run lets the call through');
  t.equal(dry.wouldDeny, true);
  t.equal(dry.reason, 'policy_denied');

  t.strictSame(topic.resource, { type: 'Topic', subject: 'orders.created' });
  t.equal(topic.destination, 'spiffe://example.org/agent/b', 'a topic has no agent: destination is the peer');
  t.strictSame(Object.keys(topic), ALWAYS);
});

t.test('no query string, token or body in the line', async (t) => {
  const file = path.join(await tmp(t), 'audit.jsonl');
  const log = audit(t, { path: file });
  const d = httpAllow();
  d.request.http = { method: 'GET', path: '/ws?access_token=SECRET', host: 'agent-b' };
  d.request.websocket = { kind: 'text', size: 12 };
  log.record(d);
  await log.close();
  const text = await readFile(file, 'utf8');
  t.notMatch(text, /SECRET|access_token|websocket/);
  t.strictSame((await lines(file))[0]?.http, { method: 'GET', path: '/ws', host: 'agent-b' });
});

t.test('sampling: 0 writes denies and would-denies only; 1 writes all; fractions sample allows', async (t) => {
  const dir = await tmp(t);
  const none = audit(t, { path: path.join(dir, 'none.jsonl'), sampleAllows: 0 });
  const all = audit(t, { path: path.join(dir, 'all.jsonl'), sampleAllows: 1 });
  const dflt = audit(t, { path: path.join(dir, 'default.jsonl') });
  let i = 0;
  const tenth = audit(t, { path: path.join(dir, 'tenth.jsonl'), sampleAllows: 0.1, random: () => (i++ % 10) / 10 });
  for (const log of [none, all, dflt, tenth]) {
    for (let n = 0; n < 100; n++) log.record(httpAllow());
    for (let n = 0; n < 7; n++) log.record(toolDeny());
    for (let n = 0; n < 3; n++) log.record(wouldDeny());
    await log.close();
  }
  const count = async (f: string) => {
    const ls = await lines(path.join(dir, f));
    return { allow: ls.filter((l) => l.decision === 'allow' && !l.wouldDeny).length, deny: ls.filter((l) => l.decision === 'deny').length, would: ls.filter((l) => l.wouldDeny).length };
  };
  t.strictSame(await count('none.jsonl'), { allow: 0, deny: 7, would: 3 });
  t.equal(none.stats().sampledOut, 100);
  t.equal(none.dropped, 0, 'sampled-out allows are not drops');
  t.strictSame(await count('all.jsonl'), { allow: 100, deny: 7, would: 3 });
  t.strictSame(await count('default.jsonl'), { allow: 100, deny: 7, would: 3 }, 'default samples every allow');
  t.strictSame(await count('tenth.jsonl'), { allow: 10, deny: 7, would: 3 });
  t.equal(tenth.sampleAllows, 0.1);
});

t.test('record() does not block: 50k records return quickly; written + dropped account for all', async (t) => {
  const file = path.join(await tmp(t), 'audit.jsonl');
  const log = audit(t, { path: file });
  await until('open', () => log.stats().open);
  const d = httpAllow();
  const start = process.hrtime.bigint();
  for (let i = 0; i < 50_000; i++) log.record(d, { requestId: `r-${i}` });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  t.ok(ms < 2000, `50k record() calls took ${ms.toFixed(1)} ms`);
  const s = log.stats();
  t.ok(s.queued <= 10_000, `queue bounded (${s.queued})`);
  t.equal(s.dropped, 50_000 - s.queued, 'overflow counted as dropped');
  await until('drained', () => log.stats().queued === 0 && log.stats().inFlight === 0);
  const after = log.stats();
  t.equal(after.written + after.dropped, 50_000);
  t.equal((await lines(file)).length, after.written, 'the file has every written line');
  // spread over event-loop turns, nothing is dropped
  for (let batch = 0; batch < 20; batch++) {
    for (let i = 0; i < 1_000; i++) log.record(d);
    await sleep(5);
  }
  await log.close();
  const end = log.stats();
  t.equal(end.dropped, after.dropped, 'no drops when the writer keeps up');
  t.equal((await lines(file)).length, after.written + 20_000);
});

t.test('close() flushes what is queued; records after close are counted as dropped', async (t) => {
  const file = path.join(await tmp(t), 'audit.jsonl');
  const log = new AuditLog({ path: file });
  for (let i = 0; i < 100; i++) log.record(toolDeny());
  await log.close();
  t.equal((await lines(file)).length, 100);
  t.equal(log.stats().written, 100);
  log.record(toolDeny());
  t.equal(log.dropped, 1);
  await log.close(); // idempotent
});

t.test('close() gives up after closeTimeoutMs on a hung stream; everything is accounted for', async (t) => {
  const log = new AuditLog({
    path: '/hung',
    closeTimeoutMs: 100,
    openStream: async () => new Writable({ highWaterMark: 16, write: () => {} }), // never calls back
  });
  await until('open', () => log.stats().open);
  for (let i = 0; i < 3; i++) log.record(toolDeny());
  await sleep(10);
  log.record(toolDeny()); // waits behind the hung write
  const start = Date.now();
  await log.close();
  t.ok(Date.now() - start < 2000, 'close resolved');
  t.strictSame({ ...log.stats(), open: false }, { written: 0, dropped: 4, sampledOut: 0, errors: 0, inFlight: 0, queued: 0, open: false });
});

t.test('path is a directory (EISDIR): never throws, one warning, retried', async (t) => {
  const dir = await tmp(t);
  const { logs, options } = capture();
  const log = audit(t, { path: dir, ...options });
  t.doesNotThrow(() => {
    for (let i = 0; i < 10; i++) log.record(toolDeny());
  });
  await until('several attempts', () => log.stats().errors >= 4);
  const warnings = logs.filter((l) => l.level === 'warn');
  t.equal(warnings.length, 1, 'logged once per error kind');
  t.equal(warnings[0]?.code, 'EISDIR');
  t.equal(warnings[0]?.path, dir);
  t.equal(log.stats().queued, 10, 'lines wait in the bounded queue');
  await log.close();
  t.equal(log.dropped, 10, 'what could not be written is counted');
});

t.test('folder does not exist (ENOENT) → recovers once it appears, queued lines are written', async (t) => {
  const dir = path.join(await tmp(t), 'later');
  const file = path.join(dir, 'audit.jsonl');
  const { logs, options } = capture();
  const log = audit(t, { path: file, ...options });
  for (let i = 0; i < 5; i++) log.record(toolDeny(), { requestId: `early-${i}` });
  await until('several attempts', () => log.stats().errors >= 3);
  t.equal(logs.filter((l) => l.level === 'warn').length, 1);
  t.equal(logs.find((l) => l.level === 'warn')?.code, 'ENOENT');
  await mkdir(dir);
  await until('recovered', () => log.stats().written === 5);
  log.record(toolDeny(), { requestId: 'late' });
  await log.close();
  t.strictSame((await lines(file)).map((l) => l.requestId), ['early-0', 'early-1', 'early-2', 'early-3', 'early-4', 'late']);
  t.ok(logs.some((l) => l.level === 'info' && l.msg === 'audit log writable again'), 'recovery is logged');
  t.equal(log.dropped, 0);
});

t.test('the folder vanishes while open → reported, then recovers when it is back', async (t) => {
  const dir = path.join(await tmp(t), 'logs');
  await mkdir(dir);
  const file = path.join(dir, 'audit.jsonl');
  const { logs, options } = capture();
  const log = audit(t, { path: file, ...options });
  log.record(toolDeny(), { requestId: 'one' });
  await until('first line', () => log.stats().written === 1);
  await rm(dir, { recursive: true });
  await until('noticed', () => logs.some((l) => l.level === 'warn' && l.code === 'ENOENT'));
  log.record(toolDeny(), { requestId: 'two' });
  await sleep(60);
  await mkdir(dir);
  await until('recovered', () => log.stats().written === 2);
  await log.close();
  t.strictSame((await lines(file)).map((l) => l.requestId), ['two']);
  t.equal(logs.filter((l) => l.level === 'warn').length, 1, 'one warning');
});

t.test('rotation by rename: later lines go to a new file at the path', async (t) => {
  const dir = await tmp(t);
  const file = path.join(dir, 'audit.jsonl');
  const log = audit(t, { path: file });
  log.record(toolDeny(), { requestId: 'old' });
  await until('first line', () => log.stats().written === 1);
  await rename(file, file + '.1');
  await until('reopened', async () => (await lines(file)).length === 0 && log.stats().open && (await readFile(file).then(() => true, () => false)));
  log.record(toolDeny(), { requestId: 'new' });
  await log.close();
  t.strictSame((await lines(file + '.1')).map((l) => l.requestId), ['old']);
  t.strictSame((await lines(file)).map((l) => l.requestId), ['new']);
});

t.test('a new file is created with mode 0640 (minus the umask); an existing file keeps its mode', async (t) => {
  const dir = await tmp(t);
  const file = path.join(dir, 'audit.jsonl');
  const log = new AuditLog({ path: file });
  log.record(toolDeny());
  await log.close();
  t.equal((await stat(file)).mode & 0o777, 0o640 & ~process.umask());
  const existing = path.join(dir, 'existing.jsonl');
  await writeFile(existing, '', { mode: 0o600 });
  await chmod(existing, 0o600);
  const log2 = new AuditLog({ path: existing });
  log2.record(toolDeny());
  await log2.close();
  t.equal((await stat(existing)).mode & 0o777, 0o600);
});

t.test('a torn last line (crash, full disk) does not swallow the next line', async (t) => {
  const file = path.join(await tmp(t), 'audit.jsonl');
  await writeFile(file, '{"time":"2024-01-01T00:00:00.000Z"}\n{"time":"2024-01-01T00:0');
  const log = new AuditLog({ path: file });
  log.record(toolDeny(), { requestId: 'after' });
  await log.close();
  const text = (await readFile(file, 'utf8')).split('\n');
  t.equal(text[1], '{"time":"2024-01-01T00:0');
  t.equal(JSON.parse(text[2] ?? '').requestId, 'after');
});

/** A file stream that fails writes with ENOSPC while `full` is set (a full disk cannot be caused safely). */
class FaultyDisk {
  full = true;
  opens = 0;
  data = '';
  factory = async (): Promise<Writable> => {
    this.opens++;
    return new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        setImmediate(() => {
          if (this.full) cb(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28, syscall: 'write' }));
          else {
            this.data += chunk.toString();
            cb();
          }
        });
      },
    });
  };
}

t.test('write error (ENOSPC, fault-injected): counted, logged once, never thrown, recovers', async (t) => {
  const disk = new FaultyDisk();
  const { logs, options } = capture();
  const log = audit(t, { path: '/nonexistent/fault-injected', openStream: disk.factory, ...options });
  let uncaught: unknown;
  const onUncaught = (e: unknown) => (uncaught = e);
  process.on('uncaughtException', onUncaught);
  t.teardown(() => void process.off('uncaughtException', onUncaught));

  for (let round = 0; round < 5; round++) {
    t.doesNotThrow(() => log.record(toolDeny()));
    await until(`failure ${round + 1}`, () => log.stats().errors >= round + 1);
  }
  const s = log.stats();
  t.equal(s.dropped, 5, 'each failed line is counted');
  t.equal(s.written, 0);
  t.ok(disk.opens >= 5, 'reopened after each failure');
  const warnings = logs.filter((l) => l.level === 'warn');
  t.equal(warnings.length, 1, 'one warning for the error kind');
  t.equal(warnings[0]?.code, 'ENOSPC');

  disk.full = false;
  log.record(toolDeny(), { requestId: 'after' });
  await until('recovered', () => log.stats().written === 1);
  t.equal(JSON.parse(disk.data.trim()).requestId, 'after');
  t.ok(logs.some((l) => l.msg === 'audit log writable again'));
  await log.close();
  t.equal(uncaught, undefined, 'nothing escaped');
});

t.test('an open that throws synchronously or a stream that errors later never escapes', async (t) => {
  const { logs, options } = capture();
  const log = audit(t, {
    path: '/x',
    ...options,
    openStream: () => {
      throw Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
    },
  });
  log.record(toolDeny());
  await until('reported', () => log.stats().errors >= 2);
  t.equal(logs.filter((l) => l.level === 'warn' && l.code === 'EACCES').length, 1);

  let stream: Writable | undefined;
  const log2 = audit(t, {
    path: '/y',
    ...options,
    openStream: async () => (stream = new Writable({ write: (_c, _e, cb) => cb() })),
  });
  await until('open', () => log2.stats().open);
  stream?.destroy(Object.assign(new Error('EIO: i/o error'), { code: 'EIO' }));
  await until('reported', () => logs.some((l) => l.code === 'EIO'));
  await until('reopened', () => log2.stats().open);
  log2.record(toolDeny());
  await until('written', () => log2.stats().written === 1);
});

/** A slow disk: each write takes 2 ms; counts writes made while the stream asked to wait. */
class SlowStream extends Writable {
  data = '';
  writes = 0;
  writesWhileFull = 0;
  constructor() {
    super({ highWaterMark: 1024 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    setTimeout(() => {
      this.data += chunk.toString();
      cb();
    }, 2);
  }
  override write(chunk: unknown, ...rest: unknown[]): boolean {
    this.writes++;
    if (this.writableNeedDrain) this.writesWhileFull++;
    return (super.write as (...a: unknown[]) => boolean)(chunk, ...rest);
  }
}

t.test('backpressure: no write while the stream asks to wait; everything arrives in order', async (t) => {
  const slow = new SlowStream();
  const log = audit(t, { path: '/slow', openStream: async () => slow });
  await until('open', () => log.stats().open);
  for (let batch = 0; batch < 20; batch++) {
    for (let i = 0; i < 50; i++) log.record(toolDeny(), { requestId: `${batch}-${i}` });
    await sleep(1);
  }
  await until('written', () => log.stats().written === 1000);
  const ids = slow.data.trim().split('\n').map((l) => JSON.parse(l).requestId);
  t.equal(ids.length, 1000);
  t.equal(ids[999], '19-49');
  t.ok(slow.writes < 20, `lines are batched (${slow.writes} writes for 20 bursts)`);
  t.equal(slow.writesWhileFull, 0, 'backpressure honoured');
  t.equal(log.dropped, 0);
});
