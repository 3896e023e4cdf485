// WorkloadApiSvidSource against the in-process fake Workload API (test/helpers/fake-workload-api.ts):
// SVID selection, the security header, pushes (rotation, dedupe, withdrawn bundles), malformed
// responses, how each grpc status ending a stream is handled (Unavailable, clean end,
// PermissionDenied, InvalidArgument, Unimplemented), JWT-SVIDs, the startup bound and an agent
// whose socket appears after the sidecar started.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { status } from '@grpc/grpc-js';
import { UnsecuredJWT } from 'jose';
import { TrustDomain } from '../../src/spiffe/index.js';
import type { SourceCallbacks, SvidUpdate } from '../../src/identity/types.js';
import { parseWorkloadEndpoint, WorkloadApiClient, WorkloadApiSvidSource, type SvidSelector } from '../../src/identity/workload-api/index.js';
import { WORKLOAD_API_HEADER, WORKLOAD_API_METHODS, type JwtSvidRequest, type X509SvidMessage } from '../../src/identity/workload-api/proto.js';
import { createCa, createLeaf, type Issued } from '../fixtures/certs.js';
import type { Teardown } from '../helpers/env.js';
import { derConcat, FakeWorkloadApi, trustDomainKey, x509SvidMessage } from '../helpers/fake-workload-api.js';

const TD = 'example.org';
const PARTNER = 'partner.org';
const ID_A = `spiffe://${TD}/agent-a`;
const ID_B = `spiffe://${TD}/agent-b`;
const AUDIENCE = `spiffe://${TD}/broker`;
const BACKOFF = { initialMs: 50, maxMs: 200 };

// --- helpers -------------------------------------------------------------------------------

type Kind = 'update' | 'error' | 'withdraw';

/** Records every callback; `nth` waits for the n-th event of a kind and fails clearly if it never comes. */
class Recorder implements SourceCallbacks {
  readonly updates: SvidUpdate[] = [];
  readonly errors: Error[] = [];
  readonly withdrawals: Error[] = [];
  private waiters: Array<{ kind: Kind; n: number; wake: () => void }> = [];

  onUpdate = (update: SvidUpdate): void => this.record('update', update);
  onError = (error: Error): void => this.record('error', error);
  onWithdraw = (reason: Error): void => this.record('withdraw', reason);

  list(kind: Kind): unknown[] {
    return kind === 'update' ? this.updates : kind === 'error' ? this.errors : this.withdrawals;
  }

  /** The n-th (1-based) event of `kind`, or a rejection saying what was seen after `timeoutMs`. */
  nth<K extends Kind>(kind: K, n: number, timeoutMs = 3_000): Promise<K extends 'update' ? SvidUpdate : Error> {
    type R = K extends 'update' ? SvidUpdate : Error;
    const have = (): R | undefined => this.list(kind)[n - 1] as R | undefined;
    const now = have();
    if (now !== undefined) return Promise.resolve(now);
    return new Promise<R>((resolve, reject) => {
      const waiter = {
        kind,
        n,
        wake: () => {
          const got = have();
          if (got === undefined) return;
          clearTimeout(timer);
          this.waiters = this.waiters.filter((w) => w !== waiter);
          resolve(got);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${kind} #${n} (seen: ${this.summary()})`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  summary(): string {
    const errs = this.errors.map((e) => e.message).join(' | ');
    return `${this.updates.length} update(s), ${this.withdrawals.length} withdrawal(s), ${this.errors.length} error(s)${errs ? `: ${errs}` : ''}`;
  }

  private record(kind: Kind, value: unknown): void {
    (this.list(kind) as unknown[]).push(value);
    for (const w of [...this.waiters]) if (w.kind === kind) w.wake();
  }
}

function makeSource(
  t: Teardown,
  endpoint: string,
  opts: { selector?: SvidSelector; startupTimeoutMs?: number } = {},
): { source: WorkloadApiSvidSource; rec: Recorder } {
  const rec = new Recorder();
  const source = new WorkloadApiSvidSource(
    {
      endpoint: parseWorkloadEndpoint(endpoint),
      trustDomain: TrustDomain.parse(TD),
      selector: opts.selector ?? {},
      startupTimeoutMs: opts.startupTimeoutMs ?? 3_000,
      backoff: BACKOFF,
    },
    rec,
  );
  t.teardown(() => source.stop());
  return { source, rec };
}

async function until(what: string, fn: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Fingerprints of a bundle's authorities, for comparing with fixtures. */
function authorities(update: SvidUpdate, td: string): string[] {
  return [...(update.bundles.get(td)?.authorities ?? [])].map((c) => c.fingerprint256);
}

const fp = (...certs: Issued[]): string[] => certs.map((c) => c.cert.fingerprint256);
const tdNames = (update: SvidUpdate): string[] => update.bundles.trustDomains().map((td) => td.name).sort();

/** A trust domain with two CAs (so one can be removed), a partner domain, and SVIDs for A and B. */
async function world() {
  const ca = await createCa({ trustDomain: TD });
  const ca2 = await createCa({ trustDomain: TD });
  const partner = await createCa({ trustDomain: PARTNER });
  const leafA = await createLeaf(ca, ID_A);
  const leafA2 = await createLeaf(ca, ID_A);
  const leafB = await createLeaf(ca2, ID_B);
  const federated = { [trustDomainKey(PARTNER)]: derConcat([partner]) };
  /** A response for leaf `leaf` (id A) with both own CAs and the partner bundle unless told otherwise. */
  const response = (leaf: Issued = leafA, over: { bundle?: Issued[]; federated?: Record<string, Buffer> } = {}) => ({
    svids: [x509SvidMessage(ID_A, [leaf], over.bundle ?? [ca, ca2])],
    federated_bundles: over.federated ?? federated,
  });
  return { ca, ca2, partner, leafA, leafA2, leafB, federated, response };
}

function jwt(audience: string, subject = ID_A): string {
  return new UnsecuredJWT({}).setSubject(subject).setAudience(audience).setIssuedAt().setExpirationTime('1h').encode();
}

// --- 1. selection and bundles --------------------------------------------------------------

t.test('start() resolves with the first SVID by default, or the one the selector names', async (t) => {
  const w = await world();
  const fake = await FakeWorkloadApi.start(t);
  // A rogue example.org entry in the federation map must not replace the SVID's own bundle.
  const rogue = await createCa({ trustDomain: TD });
  fake.setX509Svids({
    svids: [x509SvidMessage(ID_A, [w.leafA], [w.ca], 'first'), x509SvidMessage(ID_B, [w.leafB], [w.ca2], 'second')],
    federated_bundles: { ...w.federated, [trustDomainKey(TD)]: derConcat([rogue]) },
  });

  await t.test('default: the first SVID', async (t) => {
    const { source } = makeSource(t, fake.endpoint);
    const u = await source.start();
    t.equal(u.svid.id.toString(), ID_A);
    t.equal(u.svid.serial, w.leafA.cert.serialNumber);
    t.same(tdNames(u), [PARTNER, TD].sort(), 'own and federated trust domains');
    t.same(authorities(u, TD), fp(w.ca), 'own bundle is the one sent with the SVID');
    t.same(authorities(u, PARTNER), fp(w.partner), 'federated bundle');
    t.equal(source.status.state, 'receiving');
    t.equal(source.status.updates, 1);
  });

  await t.test('selector.spiffeId picks the second SVID', async (t) => {
    const { source } = makeSource(t, fake.endpoint, { selector: { spiffeId: ID_B } });
    const u = await source.start();
    t.equal(u.svid.id.toString(), ID_B);
    t.equal(u.svid.serial, w.leafB.cert.serialNumber);
    t.same(tdNames(u), [PARTNER, TD].sort());
    t.same(authorities(u, TD), fp(w.ca2), "own bundle is the selected SVID's");
    t.same(authorities(u, PARTNER), fp(w.partner));
  });

  await t.test('selector.hint picks the second SVID', async (t) => {
    const { source } = makeSource(t, fake.endpoint, { selector: { hint: 'second' } });
    const u = await source.start();
    t.equal(u.svid.id.toString(), ID_B);
    t.equal(u.svid.serial, w.leafB.cert.serialNumber);
    t.same(tdNames(u), [PARTNER, TD].sort());
  });

  await t.test('selector.hint for the first SVID', async (t) => {
    const { source } = makeSource(t, fake.endpoint, { selector: { hint: 'first' } });
    const u = await source.start();
    t.equal(u.svid.id.toString(), ID_A);
  });
});

// --- 2. security header on every call ------------------------------------------------------

t.test('every call to every method carries workload.spiffe.io: true', async (t) => {
  const w = await world();
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids(w.response());
  fake.setX509Bundles({ bundles: { [trustDomainKey(TD)]: derConcat([w.ca]) } });
  fake.setJwtBundles({ bundles: { [trustDomainKey(TD)]: Buffer.from('{"keys":[]}') } });
  const token = jwt(AUDIENCE);
  const seen: JwtSvidRequest[] = [];
  fake.onJwtSvid((req) => {
    seen.push(req);
    return { svids: [{ spiffe_id: ID_A, svid: token, hint: '' }] };
  });

  const { source } = makeSource(t, fake.endpoint);
  await source.start();
  const jwtSvid = await source.jwtSvidFor(AUDIENCE);
  t.equal(jwtSvid.token, token, 'the JWT-SVID the agent issued');
  t.equal(jwtSvid.spiffeId.toString(), ID_A);

  const client = new WorkloadApiClient(parseWorkloadEndpoint(fake.endpoint));
  t.teardown(() => client.close());
  const firstMessage = <T>(stream: import('@grpc/grpc-js').ClientReadableStream<T>, what: string): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} message within 3000 ms`)), 3_000);
      stream.on('error', (e: Error) => (clearTimeout(timer), reject(e)));
      stream.once('data', (m: T) => {
        clearTimeout(timer);
        resolve(m);
        stream.cancel();
      });
    }).catch((e: Error & { code?: number }) => {
      if (e.code === status.CANCELLED) return undefined as T; // our own cancel, after the message
      throw e;
    });
  const bundles = await firstMessage(client.fetchX509Bundles(), 'FetchX509Bundles');
  t.ok(bundles.bundles[trustDomainKey(TD)], 'FetchX509Bundles answered');
  const jwtBundles = await firstMessage(client.fetchJwtBundles(), 'FetchJWTBundles');
  t.ok(jwtBundles.bundles[trustDomainKey(TD)], 'FetchJWTBundles answered');

  for (const method of WORKLOAD_API_METHODS) {
    const calls = fake.callsTo(method);
    t.ok(calls.length >= 1, `${method} was called (so the check below is not vacuous)`);
    for (const [i, call] of calls.entries()) t.same(call.metadata[WORKLOAD_API_HEADER], ['true'], `${method} call ${i}: header exactly ['true']`);
  }
  const jwtCalls = fake.callsTo('FetchJWTSVID');
  t.equal(jwtCalls.length, 1);
  t.same((jwtCalls[0]!.request as JwtSvidRequest).audience, [AUDIENCE], 'FetchJWTSVID audience');
  t.same(seen.map((r) => r.audience), [[AUDIENCE]], 'the handler saw the same audience');
});

// --- 3. pushes -----------------------------------------------------------------------------

t.test('pushes: rotation, dedupe, a dropped federated bundle, a removed CA', async (t) => {
  const w = await world();
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids(w.response(w.leafA));
  const { source, rec } = makeSource(t, fake.endpoint);
  const first = await source.start();
  t.equal(first.svid.serial, w.leafA.cert.serialNumber);
  t.same(authorities(first, TD).sort(), fp(w.ca, w.ca2).sort(), 'starts with two own CAs');
  t.same(tdNames(first), [PARTNER, TD].sort());
  t.equal(rec.updates.length, 0, 'the first SVID goes to start(), not onUpdate');

  // Rotation.
  fake.setX509Svids(w.response(w.leafA2));
  const rotated = await rec.nth('update', 1);
  t.equal(rotated.svid.serial, w.leafA2.cert.serialNumber, 'new serial');
  t.not(rotated.svid.serial, first.svid.serial);

  // Identical again, then a distinguishable push: the next onUpdate must be the latter, so the
  // identical one (delivered before it on the same stream) produced none.
  fake.setX509Svids(w.response(w.leafA2));
  fake.setX509Svids(w.response(w.leafA2));
  fake.setX509Svids(w.response(w.leafA2, { federated: {} }));
  const dropped = await rec.nth('update', 2);
  t.equal(rec.updates.length, 2, 'identical pushes produced no onUpdate');
  t.equal(dropped.svid.serial, w.leafA2.cert.serialNumber, 'same SVID');
  t.same(tdNames(dropped), [TD], 'partner.org is no longer trusted');
  t.equal(dropped.bundles.get(PARTNER), undefined);

  // Own bundle loses a CA; SVID unchanged.
  fake.setX509Svids(w.response(w.leafA2, { federated: {}, bundle: [w.ca] }));
  const shrunk = await rec.nth('update', 3);
  t.equal(shrunk.svid.serial, w.leafA2.cert.serialNumber);
  t.same(authorities(shrunk, TD), fp(w.ca), 'one authority left');

  t.equal(source.status.updates, 4, 'status counts the first SVID and the three changes');
  t.same(rec.errors, [], 'no errors');
});

// --- 4. malformed pushes -------------------------------------------------------------------

t.test('a malformed push is refused with the field named; the last good state stays', async (t) => {
  const w = await world();
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids(w.response(w.leafA));
  const { source, rec } = makeSource(t, fake.endpoint);
  await source.start();

  const good = x509SvidMessage(ID_A, [w.leafA], [w.ca, w.ca2]);
  const cases: Array<{ name: string; field: string; svids: X509SvidMessage[] }> = [
    { name: 'empty svids', field: 'svids', svids: [] },
    { name: "spiffe_id ''", field: 'svids[0].spiffe_id', svids: [{ ...good, spiffe_id: '' }] },
    { name: 'x509_svid empty', field: 'svids[0].x509_svid', svids: [{ ...good, x509_svid: Buffer.alloc(0) }] },
    { name: 'x509_svid_key empty', field: 'svids[0].x509_svid_key', svids: [{ ...good, x509_svid_key: Buffer.alloc(0) }] },
    { name: 'bundle empty', field: 'svids[0].bundle', svids: [{ ...good, bundle: Buffer.alloc(0) }] },
  ];
  for (const [i, c] of cases.entries()) {
    fake.setX509Svids({ svids: c.svids, federated_bundles: w.federated });
    const err = (await rec.nth('error', i + 1)) as Error & { field?: string };
    t.equal(err.field, c.field, `${c.name}: error names the field`);
    t.ok(err.message.startsWith(`${c.field}: `), `${c.name}: message names the field: ${err.message}`);
    t.equal(source.status.rejectedUpdates, i + 1, `${c.name}: rejectedUpdates incremented`);
    t.equal(rec.updates.length, 0, `${c.name}: no onUpdate`);
  }
  t.equal(source.status.updates, 1, 'only the first SVID counted');

  // Positive control: a valid push (new serial) after all that is accepted.
  fake.setX509Svids(w.response(w.leafA2));
  const u = await rec.nth('update', 1);
  t.equal(u.svid.serial, w.leafA2.cert.serialNumber);
  t.equal(rec.errors.length, cases.length, 'no further errors');
  t.equal(source.status.rejectedUpdates, cases.length);
});

// --- 5. stream ends that are retried -------------------------------------------------------

for (const [label, code] of [
  ['Unavailable', status.UNAVAILABLE],
  ['a clean end', undefined],
] as const) {
  t.test(`after ${label} the stream is reopened and pushes keep arriving`, async (t) => {
    const w = await world();
    const fake = await FakeWorkloadApi.start(t);
    fake.setX509Svids(w.response(w.leafA));
    const { source, rec } = makeSource(t, fake.endpoint);
    await source.start();
    await until('the stream to be open at the fake', () => fake.openStreams('FetchX509SVID') === 1);

    fake.closeStreams('FetchX509SVID', code);
    const interruption = await rec.nth('error', 1);
    t.match(interruption.message, /interrupted/, `reported: ${interruption.message}`);
    await fake.waitForCalls('FetchX509SVID', 2);
    // The reopened stream delivers the current state: the source is receiving again, no update.
    await until("the source's state to be 'receiving' again", () => source.status.state === 'receiving');
    t.equal(rec.updates.length, 0, 'same material on the new stream: no duplicate onUpdate');
    t.equal(source.status.updates, 1);

    fake.setX509Svids(w.response(w.leafA2));
    const u = await rec.nth('update', 1);
    t.equal(u.svid.serial, w.leafA2.cert.serialNumber, 'a later push arrives');
    t.equal(fake.callsTo('FetchX509SVID').length, 2, 'one reconnect');
    t.same(rec.withdrawals, [], 'nothing withdrawn');
  });
}

// --- 6. PermissionDenied -------------------------------------------------------------------

t.test('PermissionDenied withdraws once; the identity is restored when the agent serves it again', async (t) => {
  const w = await world();
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids(w.response(w.leafA));
  const { source, rec } = makeSource(t, fake.endpoint);
  await source.start();
  await until('the stream to be open at the fake', () => fake.openStreams('FetchX509SVID') === 1);

  fake.failWith('FetchX509SVID', status.PERMISSION_DENIED);
  fake.closeStreams('FetchX509SVID', status.PERMISSION_DENIED);
  const withdrawal = await rec.nth('withdraw', 1);
  t.match(withdrawal.message, /PERMISSION_DENIED/);
  await fake.waitForCalls('FetchX509SVID', 4); // the first call + at least 3 denied retries
  t.equal(rec.withdrawals.length, 1, 'exactly one onWithdraw despite repeated denials');
  t.equal(source.status.state, 'denied');
  t.equal(rec.updates.length, 0);

  // The agent restarts meanwhile (Unavailable), then still denies: still one withdrawal, and
  // /status keeps saying "denied" while reconnecting.
  const before = fake.callsTo('FetchX509SVID').length;
  // (Retries are at the backoff cap by now, 100-200 ms apart: room to switch the answer back.)
  fake.failWith('FetchX509SVID', status.UNAVAILABLE, 'agent restarting', 1);
  await fake.waitForCalls('FetchX509SVID', before + 1);
  fake.failWith('FetchX509SVID', status.PERMISSION_DENIED);
  await fake.waitForCalls('FetchX509SVID', before + 3);
  t.equal(rec.updates.length, 0, 'nothing was served in between');
  t.equal(rec.withdrawals.length, 1, 'an Unavailable between two denials does not withdraw twice');
  t.equal(source.status.state, 'denied', 'still reported as denied while reconnecting');

  fake.failWith('FetchX509SVID', undefined);
  const restored = await rec.nth('update', 1);
  t.equal(restored.svid.serial, w.leafA.cert.serialNumber, 'the same SVID comes back as an update');
  t.equal(source.status.state, 'receiving');
  t.equal(rec.withdrawals.length, 1);
});

// --- 7. InvalidArgument / Unimplemented ----------------------------------------------------

for (const [label, code] of [
  ['INVALID_ARGUMENT', status.INVALID_ARGUMENT],
  ['UNIMPLEMENTED', status.UNIMPLEMENTED],
] as const) {
  t.test(`${label} at start: start() rejects at once, no retry`, async (t) => {
    const w = await world();
    const fake = await FakeWorkloadApi.start(t);
    fake.setX509Svids(w.response());
    fake.failWith('FetchX509SVID', code);
    const { source } = makeSource(t, fake.endpoint);
    const started = Date.now();
    await t.rejects(source.start(), { code: 'workload_api_fatal', message: new RegExp(`${label}[\\s\\S]*not retrying`) });
    t.ok(Date.now() - started < 2_000, 'rejected well before the startup timeout');
    t.equal(source.status.state, 'fatal');
    await sleep(1_000);
    t.equal(fake.callsTo('FetchX509SVID').length, 1, 'exactly one FetchX509SVID call after 1 s');
  });
}

t.test('InvalidArgument after start: onError workload_api_fatal, no more calls', async (t) => {
  const w = await world();
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids(w.response());
  const { source, rec } = makeSource(t, fake.endpoint);
  await source.start();
  await until('the stream to be open at the fake', () => fake.openStreams('FetchX509SVID') === 1);

  fake.closeStreams('FetchX509SVID', status.INVALID_ARGUMENT);
  const err = (await rec.nth('error', 1)) as Error & { code?: string };
  t.equal(err.code, 'workload_api_fatal');
  t.match(err.message, /INVALID_ARGUMENT[\s\S]*not retrying/);
  await sleep(1_000);
  t.equal(fake.callsTo('FetchX509SVID').length, 1, 'no reconnect after 1 s');
  t.equal(rec.errors.length, 1);
  t.equal(source.status.state, 'fatal');
});

// --- 8. FetchJWTSVID -----------------------------------------------------------------------

t.test('FetchJWTSVID: InvalidArgument is not retried; results are cached per audience', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  const { source } = makeSource(t, fake.endpoint);

  fake.failWith('FetchJWTSVID', status.INVALID_ARGUMENT);
  await t.rejects(source.jwtSvidFor(AUDIENCE), { code: 'workload_api_invalid_argument' });
  t.equal(fake.callsTo('FetchJWTSVID').length, 1, 'exactly one call, no retry');

  fake.failWith('FetchJWTSVID', undefined);
  fake.onJwtSvid((req) => ({ svids: [{ spiffe_id: ID_A, svid: jwt(req.audience[0]!), hint: '' }] }));
  const a1 = await source.jwtSvidFor(AUDIENCE);
  t.equal(fake.callsTo('FetchJWTSVID').length, 2, 'the failure was not cached');
  const a2 = await source.jwtSvidFor(AUDIENCE);
  t.equal(fake.callsTo('FetchJWTSVID').length, 2, 'same audience: served from the cache');
  t.equal(a2.token, a1.token);
  const other = `spiffe://${TD}/other`;
  const b = await source.jwtSvidFor(other);
  t.equal(fake.callsTo('FetchJWTSVID').length, 3, 'another audience: another call');
  t.same((fake.callsTo('FetchJWTSVID')[2]!.request as JwtSvidRequest).audience, [other]);
  t.not(b.token, a1.token);
});

// --- 9. startup bound ----------------------------------------------------------------------

t.test('start() gives up after startupTimeoutMs', async (t) => {
  await t.test('a silent stream', async (t) => {
    const fake = await FakeWorkloadApi.start(t); // no X509 state: the stream stays open and silent
    const { source } = makeSource(t, fake.endpoint, { startupTimeoutMs: 400 });
    const started = Date.now();
    const err = (await source.start().then(
      () => undefined,
      (e: unknown) => e,
    )) as (Error & { code?: string }) | undefined;
    t.ok(err, 'start() rejected');
    t.equal(err?.code, 'workload_api_startup_timeout');
    t.ok(err?.message.includes(fake.endpoint), `names the endpoint: ${err?.message}`);
    t.ok(err?.message.includes('within 400 ms'), 'names the bound');
    t.ok(Date.now() - started >= 350, 'not before the bound');
    t.ok(fake.callsTo('FetchX509SVID').length >= 1, 'the stream was opened');
  });

  await t.test('PermissionDenied throughout', async (t) => {
    const fake = await FakeWorkloadApi.start(t);
    fake.failWith('FetchX509SVID', status.PERMISSION_DENIED);
    const { source, rec } = makeSource(t, fake.endpoint, { startupTimeoutMs: 400 });
    const err = (await source.start().then(
      () => undefined,
      (e: unknown) => e,
    )) as (Error & { code?: string }) | undefined;
    t.equal(err?.code, 'workload_api_startup_timeout');
    t.ok(err?.message.includes(fake.endpoint), 'names the endpoint');
    t.ok(err?.message.includes('within 400 ms'), 'names the bound');
    t.match(err?.message, /PERMISSION_DENIED/, `includes the last problem: ${err?.message}`);
    t.ok(fake.callsTo('FetchX509SVID').length >= 2, 'kept retrying until the bound');
    t.same(rec.withdrawals, [], 'nothing to withdraw before any identity was handed out');
  });
});

// --- 10. the agent's socket appears later --------------------------------------------------

t.test('the endpoint appears after start(): start() resolves once the agent serves', async (t) => {
  const w = await world();
  const dir = await mkdtemp(join(tmpdir(), 'wl-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const socketPath = FakeWorkloadApi.socketPathIn(dir);
  const { source } = makeSource(t, `unix://${socketPath}`, { startupTimeoutMs: 5_000 });

  let settled = false;
  const starting = source.start().finally(() => (settled = true));
  starting.catch(() => undefined); // awaited below; avoid an unhandled rejection meanwhile
  await sleep(300);
  t.notOk(settled, 'start() is still waiting while no agent listens');

  const fake = await FakeWorkloadApi.start(t, { socketPath });
  fake.setX509Svids(w.response(w.leafA));
  const u = await starting;
  t.equal(u.svid.id.toString(), ID_A);
  t.equal(u.svid.serial, w.leafA.cert.serialNumber);
  t.equal(source.status.state, 'receiving');
});
