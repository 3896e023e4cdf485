// Self-test of the fake SPIFFE Workload API (test/helpers/fake-workload-api.ts) with a raw grpc-js
// client, so the tests of the real client rest on a fake whose behaviour is itself checked.
import { existsSync } from 'node:fs';
import t from 'tap';
import { credentials, Metadata, status, type Client, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import {
  WORKLOAD_API_HEADER,
  workloadApiService,
  type JwtBundlesResponse,
  type JwtSvidRequest,
  type JwtSvidResponse,
  type X509BundlesResponse,
  type X509SvidResponse,
} from '../../src/identity/workload-api/proto.js';
import { createCa, createIntermediate, createLeaf } from '../fixtures/certs.js';
import { tempDir, type Teardown } from '../helpers/env.js';
import { derConcat, FakeWorkloadApi, trustDomainKey, x509SvidMessage } from '../helpers/fake-workload-api.js';

const TD = 'example.org';
const ID = `spiffe://${TD}/agent`;

/** The generated client's methods, typed for this test (the constructor's instances are untyped). */
interface RawClient extends Client {
  FetchX509SVID(request: object, metadata?: Metadata): ClientReadableStream<X509SvidResponse>;
  FetchX509Bundles(request: object, metadata?: Metadata): ClientReadableStream<X509BundlesResponse>;
  FetchJWTBundles(request: object, metadata?: Metadata): ClientReadableStream<JwtBundlesResponse>;
  FetchJWTSVID(request: Partial<JwtSvidRequest>, metadata: Metadata, callback: (err: ServiceError | null, res?: JwtSvidResponse) => void): void;
}

function rawClient(t: Teardown, endpoint: string): RawClient {
  const Ctor = workloadApiService().client;
  const client = new Ctor(endpoint, credentials.createInsecure()) as unknown as RawClient;
  t.teardown(() => client.close());
  return client;
}

function withHeader(value = 'true'): Metadata {
  const md = new Metadata();
  md.set(WORKLOAD_API_HEADER, value);
  return md;
}

/**
 * Wraps a client stream: messages queue up until `next()` takes them; `ended` settles with how
 * the stream finished ('end' = clean OK, or the ServiceError), so tests await events, not sleeps.
 */
function reader<T>(stream: ClientReadableStream<T>) {
  const queue: T[] = [];
  const waiters: Array<{ resolve: (v: T) => void; reject: (e: Error) => void }> = [];
  let finished: { kind: 'end' } | { kind: 'error'; error: ServiceError } | undefined;
  let settle!: (v: { kind: 'end' } | { kind: 'error'; error: ServiceError }) => void;
  const ended = new Promise<{ kind: 'end' } | { kind: 'error'; error: ServiceError }>((r) => (settle = r));
  const finish = (f: { kind: 'end' } | { kind: 'error'; error: ServiceError }): void => {
    if (finished) return;
    finished = f;
    settle(f);
    for (const w of waiters.splice(0)) w.reject(new Error(`stream finished (${f.kind === 'end' ? 'OK' : f.error.code}) before the next message`));
  };
  stream.on('data', (m: T) => {
    const w = waiters.shift();
    if (w) w.resolve(m);
    else queue.push(m);
  });
  stream.on('error', (error: ServiceError) => finish({ kind: 'error', error }));
  stream.on('end', () => finish({ kind: 'end' }));
  return {
    received: queue,
    ended,
    /** The next message; rejects if the stream finishes first or none arrives within `timeoutMs`. */
    next(timeoutMs = 2_000): Promise<T> {
      const m = queue.shift();
      if (m !== undefined) return Promise.resolve(m);
      if (finished) return Promise.reject(new Error('stream already finished'));
      return new Promise<T>((resolve, reject) => {
        const waiter = {
          resolve: (v: T) => (clearTimeout(timer), resolve(v)),
          reject: (e: Error) => (clearTimeout(timer), reject(e)),
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`no message within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.push(waiter);
      });
    },
  };
}

/** `promise`, or a rejection naming `what` after `ms`: a broken fake fails a test, never hangs it. */
function within<T>(promise: Promise<T>, what: string, ms = 2_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** How the stream finished, bounded in time. */
function endOf<T>(r: ReturnType<typeof reader<T>>): ReturnType<typeof reader<T>>['ended'] {
  return within(r.ended, 'the stream to finish');
}

async function errorOf<T>(r: ReturnType<typeof reader<T>>): Promise<ServiceError> {
  const end = await endOf(r);
  if (end.kind !== 'error') throw new Error('stream ended cleanly, expected an error');
  return end.error;
}

function unary(client: RawClient, request: Partial<JwtSvidRequest>, md: Metadata): Promise<JwtSvidResponse> {
  return within(new Promise((resolve, reject) => client.FetchJWTSVID(request, md, (err, res) => (err ? reject(err) : resolve(res!)))), 'the FetchJWTSVID response');
}

async function until(what: string, fn: () => boolean, timeoutMs = 2_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

t.test('X.509-SVID stream: current state first, then pushes; cancel untracks', async (t) => {
  const ca = await createCa({ trustDomain: TD });
  const inter = await createIntermediate(ca);
  const leaf1 = await createLeaf(inter, ID);
  const leaf2 = await createLeaf(inter, ID);
  const fake = await FakeWorkloadApi.start(t);
  t.match(fake.endpoint, /^unix:\/\/\//, 'endpoint is unix:// + absolute path');
  t.ok(existsSync(fake.socketPath), 'socket file exists');

  const first = x509SvidMessage(ID, [leaf1, inter], [ca], 'internal');
  fake.setX509Svids({ svids: [first], federated_bundles: { [trustDomainKey('other.org')]: derConcat([ca]) } });

  const client = rawClient(t, fake.endpoint);
  const stream = client.FetchX509SVID({}, withHeader());
  const r = reader(stream);
  const m1 = await r.next();
  t.equal(m1.svids.length, 1);
  t.equal(m1.svids[0]!.spiffe_id, ID);
  t.equal(m1.svids[0]!.hint, 'internal');
  t.same(m1.svids[0]!.x509_svid, Buffer.concat([leaf1.der, inter.der]), 'chain is DER, leaf first');
  t.same(m1.svids[0]!.x509_svid_key, leaf1.privateKey.export({ format: 'der', type: 'pkcs8' }), 'key is PKCS#8 DER');
  t.same(m1.svids[0]!.bundle, ca.der);
  t.same(Object.keys(m1.federated_bundles), ['spiffe://other.org']);
  t.equal(fake.openStreams('FetchX509SVID'), 1);

  fake.setX509Svids({ svids: [x509SvidMessage(ID, [leaf2, inter], [ca])] });
  const m2 = await r.next();
  t.same(m2.svids[0]!.x509_svid, Buffer.concat([leaf2.der, inter.der]), 'rotation pushed on the same stream');
  t.same(m2.federated_bundles, {}, 'unset fields default to empty');

  // undefined must push nothing: the next message on the stream is the one set after it.
  fake.setX509Svids(undefined);
  fake.setX509Svids({ svids: [], crl: [Buffer.from('third')] });
  t.same((await r.next()).crl, [Buffer.from('third')], 'undefined pushed nothing');

  const [call] = fake.callsTo('FetchX509SVID');
  t.same(call?.metadata[WORKLOAD_API_HEADER], ['true'], 'header recorded');
  t.equal(fake.calls.length, 1);

  stream.cancel();
  await until('the cancelled stream to be untracked', () => fake.openStreams('FetchX509SVID') === 0);
  t.equal(fake.openStreams('FetchX509SVID'), 0);
});

t.test('a call without the security header gets InvalidArgument and is recorded', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids({ svids: [] });
  fake.onJwtSvid({ svids: [{ spiffe_id: ID, svid: 'x.y.z', hint: '' }] });
  const client = rawClient(t, fake.endpoint);

  const r = reader(client.FetchX509SVID({}));
  const err = await errorOf(r);
  t.equal(err.code, status.INVALID_ARGUMENT);
  t.equal(err.details, 'security header missing from request');
  t.equal(r.received.length, 0, 'no message before the error');

  const wrongCase = await errorOf(reader(client.FetchX509SVID({}, withHeader('TRUE'))));
  t.equal(wrongCase.code, status.INVALID_ARGUMENT, 'value is case-sensitive');

  await t.rejects(unary(client, { audience: ['a'] }, new Metadata()), { code: status.INVALID_ARGUMENT }, 'unary too');

  t.equal(fake.calls.length, 3, 'rejected calls are recorded');
  t.equal(fake.calls[0]!.metadata[WORKLOAD_API_HEADER], undefined, 'recorded without the header');
  t.same(fake.calls[1]!.metadata[WORKLOAD_API_HEADER], ['TRUE']);
  t.equal(fake.openStreams('FetchX509SVID'), 0, 'rejected streams are not tracked');

  const ok = await unary(client, { audience: ['a'] }, withHeader());
  t.equal(ok.svids[0]!.svid, 'x.y.z', 'with the header the same client succeeds');
});

t.test('requireHeader: false serves calls without the header', async (t) => {
  const fake = await FakeWorkloadApi.start(t, { requireHeader: false });
  fake.setJwtBundles({ bundles: { [trustDomainKey(TD)]: Buffer.from('{"keys":[]}') } });
  const r = reader(rawClient(t, fake.endpoint).FetchJWTBundles({}));
  const m = await r.next();
  t.equal(m.bundles[trustDomainKey(TD)]?.toString(), '{"keys":[]}');
});

t.test('failWith with a count fails exactly that many calls', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids({ svids: [], crl: [Buffer.from([1, 2, 3])] });
  fake.failWith('FetchX509SVID', status.UNAVAILABLE, 'agent restarting', 1);
  const client = rawClient(t, fake.endpoint);

  const r1 = reader(client.FetchX509SVID({}, withHeader()));
  const err = await errorOf(r1);
  t.equal(err.code, status.UNAVAILABLE);
  t.equal(err.details, 'agent restarting', 'the injected failure, not a connection error');
  t.equal(r1.received.length, 0, 'fails before any message');

  const r2 = reader(client.FetchX509SVID({}, withHeader()));
  const m = await r2.next();
  t.same(m.crl, [Buffer.from([1, 2, 3])], 'the next call succeeds');
  t.equal(fake.callsTo('FetchX509SVID').length, 2);

  // Without a count it persists until cleared, and only for that method.
  fake.failWith('FetchJWTSVID', status.RESOURCE_EXHAUSTED);
  fake.onJwtSvid({ svids: [] });
  for (let i = 0; i < 2; i++) await t.rejects(unary(client, { audience: ['a'] }, withHeader()), { code: status.RESOURCE_EXHAUSTED });
  fake.failWith('FetchJWTSVID', undefined);
  t.same(await unary(client, { audience: ['a'] }, withHeader()), { svids: [] }, 'cleared');
});

t.test('closeStreams: with a status the client sees it; without, a clean end', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids({ svids: [] });
  fake.setX509Bundles({ bundles: {} });
  const client = rawClient(t, fake.endpoint);

  const r = reader(client.FetchX509SVID({}, withHeader()));
  await r.next();
  const other = reader(client.FetchX509Bundles({}, withHeader()));
  await other.next();
  fake.closeStreams('FetchX509SVID', status.PERMISSION_DENIED, 'entry removed');
  t.equal(fake.openStreams('FetchX509SVID'), 0, 'untracked at once');
  t.equal(fake.openStreams('FetchX509Bundles'), 1, 'other methods untouched');
  const err = await errorOf(r);
  t.equal(err.code, status.PERMISSION_DENIED);
  t.equal(err.details, 'entry removed');

  const again = reader(client.FetchX509SVID({}, withHeader()));
  await again.next();
  fake.closeStreams();
  t.same(await endOf(again), { kind: 'end' }, 'no code: the client sees a clean end');
  t.same(await endOf(other), { kind: 'end' }, 'no method: every stream ends');
  t.equal(fake.openStreams('FetchX509Bundles'), 0);
});

t.test('FetchJWTSVID: the handler gets the request', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  const client = rawClient(t, fake.endpoint);

  await t.rejects(unary(client, { audience: ['x'] }, withHeader()), { code: status.PERMISSION_DENIED }, 'no handler: no identity issued');

  const seen: JwtSvidRequest[] = [];
  fake.onJwtSvid((req) => {
    seen.push(req);
    return { svids: [{ spiffe_id: ID, svid: `token-for-${req.audience.join('+')}`, hint: '' }] };
  });
  const res = await unary(client, { audience: ['spiffe://example.org/db', 'aud2'], spiffe_id: ID }, withHeader());
  t.same(seen, [{ audience: ['spiffe://example.org/db', 'aud2'], spiffe_id: ID }]);
  t.equal(res.svids[0]?.svid, 'token-for-spiffe://example.org/db+aud2');
  t.same(fake.callsTo('FetchJWTSVID')[1]?.request, seen[0], 'request recorded');

  fake.onJwtSvid(() => {
    throw { code: status.NOT_FOUND, details: 'no such id' };
  });
  await t.rejects(unary(client, { audience: ['x'] }, withHeader()), { code: status.NOT_FOUND, details: 'no such id' }, 'handler can fail with a status');
});

t.test('FetchX509Bundles and FetchJWTBundles deliver what was set, also to streams opened earlier', async (t) => {
  const ca = await createCa({ trustDomain: TD });
  const other = await createCa({ trustDomain: 'other.org' });
  const fake = await FakeWorkloadApi.start(t);
  const client = rawClient(t, fake.endpoint);

  const x509 = { [trustDomainKey(TD)]: derConcat([ca]), [trustDomainKey('other.org')]: derConcat([other]) };
  fake.setX509Bundles({ bundles: x509 });
  const rx = reader(client.FetchX509Bundles({}, withHeader()));
  t.same((await rx.next()).bundles, x509);

  // Opened before any state: nothing on open, then the first set arrives.
  const rj = reader(client.FetchJWTBundles({}, withHeader()));
  await fake.waitForCalls('FetchJWTBundles', 1);
  t.equal(fake.openStreams('FetchJWTBundles'), 1);
  const jwks = Buffer.from(JSON.stringify({ keys: [{ kty: 'EC', kid: 'k1' }] }));
  fake.setJwtBundles({ bundles: { [trustDomainKey(TD)]: jwks } });
  const mj = await rj.next(); // had anything been sent on open, it would come first and fail below
  t.same(mj.bundles, { [trustDomainKey(TD)]: jwks });
  t.same(JSON.parse(mj.bundles[trustDomainKey(TD)]!.toString()).keys[0].kid, 'k1');

  await t.rejects(fake.waitForCalls('FetchJWTBundles', 2, 30), /expected 2 call\(s\) to FetchJWTBundles within 30 ms, saw 1/);
});

t.test('stop() with open streams is quick; a later start() can bind socketPathIn(dir)', async (t) => {
  const dir = await tempDir(t, 'wl-');
  const path = FakeWorkloadApi.socketPathIn(dir);
  t.equal(path.endsWith('/agent.sock'), true);

  const first = await FakeWorkloadApi.start(t, { socketPath: path });
  first.setX509Svids({ svids: [] });
  const r = reader(rawClient(t, first.endpoint).FetchX509SVID({}, withHeader()));
  await r.next();
  const began = Date.now();
  await within(first.stop(), 'stop()', 1_000);
  await within(first.stop(), 'a second stop()', 1_000); // idempotent
  t.ok(Date.now() - began < 1_000, 'did not wait for the open stream');
  t.notOk(existsSync(path), 'socket removed');
  const err = await errorOf(r);
  t.ok([status.UNAVAILABLE, status.CANCELLED, status.INTERNAL].includes(err.code), `client stream failed (${status[err.code]}: ${err.details})`);

  const second = await FakeWorkloadApi.start(t, { socketPath: path });
  await t.rejects(FakeWorkloadApi.start(t, { socketPath: path }), 'a second server cannot bind a path in use');
  t.ok(existsSync(path), "and the failed start left the running server's socket alone");
  t.equal(second.endpoint, `unix://${path}`);
  second.setX509Svids({ svids: [], crl: [Buffer.from('second')] });
  const m = await reader(rawClient(t, second.endpoint).FetchX509SVID({}, withHeader())).next();
  t.same(m.crl, [Buffer.from('second')]);
});
