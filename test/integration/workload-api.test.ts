// identity.workloadApi on real `sigil run` processes against the in-repo fake Workload API
// (grpc-js on a temp Unix socket): startup and readiness, SVID selection, rotation under load,
// trust withdrawn by the stream (own CA, federated bundle), malformed updates, reconnects,
// PermissionDenied and InvalidArgument, and an agent socket that appears late.
import { Agent as HttpAgent } from 'node:http';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { spawnJsonLines, SIGIL_BIN } from '../../src/cli/processes.js';
import { createCa, createLeaf, type Issued } from '../fixtures/certs.js';
import { mtlsRequest, plainRequest, type HttpResult } from '../helpers/clients.js';
import { closedPort, runSigil, sidecarConfig, sleep, splitAddress, tempDir, waitUntil, writeConfig, type RunningSigil } from '../helpers/env.js';
import { FakeWorkloadApi, trustDomainKey, x509SvidMessage, derConcat } from '../helpers/fake-workload-api.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';
import { startNats, withNatsServer } from '../helpers/nats.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_B2 = 'spiffe://example.org/agent/b2';
const ID_P = 'spiffe://partner.org/agent/p';

let dir: string;
let ca: Issued;
let ca2: Issued;
let partnerCa: Issued;
let upstream: EchoUpstream;
let clientA: Issued;
let clientA2: Issued;
let partnerClient: Issued;

t.before(async () => {
  dir = await tempDir(t, 'sigil-wl-');
  ca = await createCa({ trustDomain: 'example.org' });
  ca2 = await createCa({ trustDomain: 'example.org' });
  partnerCa = await createCa({ trustDomain: 'partner.org' });
  upstream = await startEchoUpstream(t);
  clientA = await createLeaf(ca, ID_A);
  clientA2 = await createLeaf(ca2, ID_A);
  partnerClient = await createLeaf(partnerCa, ID_P);
});

/** A FetchX509SVID response for B: fresh leaf(s) from `ca`, own bundle `bundle`, `federated`. */
async function svidResponse(opts: { ids?: { id: string; hint?: string }[]; bundle?: Issued[]; federated?: Record<string, Issued[]> } = {}) {
  const ids = opts.ids ?? [{ id: ID_B }];
  const leaves = await Promise.all(ids.map((i) => createLeaf(ca, i.id)));
  const svids = ids.map((i, n) => x509SvidMessage(i.id, [leaves[n]!], opts.bundle ?? [ca], i.hint ?? ''));
  const federated = Object.fromEntries(Object.entries(opts.federated ?? {}).map(([td, certs]) => [trustDomainKey(td), derConcat(certs)]));
  return { response: { svids, federated_bundles: federated }, serials: leaves.map((l) => l.cert.serialNumber) };
}

async function startB(t: Test, fake: FakeWorkloadApi, name: string, identity: Record<string, unknown> = {}, extra: Record<string, unknown> = {}): Promise<RunningSigil> {
  const cfg = await writeConfig(
    dir,
    `${name}.yaml`,
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { workloadApi: { socket: fake.endpoint, retry: { initial: '100ms', max: '400ms' }, ...identity } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A, ID_P] },
      ...extra,
    }),
  );
  return runSigil(t, cfg);
}

/** A B config for the startup cases: `identity.workloadApi` as given, the rest fixed. */
function startupConfig(name: string, workloadApi: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<string> {
  return writeConfig(
    dir,
    `${name}.yaml`,
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { workloadApi },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
      ...extra,
    }),
  );
}

/** `sigil run` that is expected to exit: its exit code and everything it printed. */
async function runToExit(t: Test, cfg: string): Promise<{ code: number | null; out: string }> {
  const proc = spawnJsonLines([SIGIL_BIN, 'run', '--config', cfg], { SIGIL_LOG_LEVEL: 'info' });
  t.teardown(() => proc.stop('SIGKILL'));
  const code = await new Promise<number | null>((resolve) => proc.child.once('exit', resolve));
  return { code, out: JSON.stringify(proc.lines) + proc.stderr() };
}

/** The serial B presents to a fresh mTLS client, and whether the request succeeded. */
async function callB(b: RunningSigil, client: Issued = clientA, path = '/wl'): Promise<HttpResult> {
  return mtlsRequest({ address: b.inbound, certPem: client.pem, keyPem: client.keyPem, path, timeoutMs: 3_000 });
}

const ok = (r: HttpResult): boolean => r.gotHttpResponse && r.status === 200;

/**
 * An mTLS connection to B that made one request and now sits idle: `closed` settles when B
 * closes it — so a cut is seen without sending anything that B could merely refuse.
 */
async function idleConnection(b: RunningSigil, client: Issued = clientA): Promise<{ closed: Promise<void>; isOpen(): boolean; socket: TLSSocket }> {
  const { host, port } = splitAddress(b.inbound);
  const socket = tlsConnect({ host, port, cert: client.pem, key: client.keyPem, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', () => resolve());
    socket.once('error', reject);
  });
  let received = '';
  socket.setEncoding('utf8');
  const answered = new Promise<void>((resolve) => socket.on('data', (d: string) => ((received += d), received.includes('\r\n\r\n') && resolve())));
  socket.write('GET /idle HTTP/1.1\r\nhost: b\r\n\r\n');
  await answered;
  if (!received.startsWith('HTTP/1.1 200')) throw new Error(`idle connection: first request failed: ${received.slice(0, 80)}`);
  let open = true;
  void closed.then(() => (open = false));
  return { closed, isOpen: () => open, socket };
}

async function readyz(admin: string): Promise<number | undefined> {
  const r = await plainRequest({ address: admin, path: '/readyz', timeoutMs: 2_000 });
  return r.gotHttpResponse ? r.status : undefined;
}

async function statusOf(admin: string): Promise<Record<string, any>> {
  const r = await plainRequest({ address: admin, path: '/status', timeoutMs: 2_000 });
  return (r.gotHttpResponse ? r.json : {}) as Record<string, any>;
}

t.test('starts from the Workload API: the first SVID is the default, the header is on every call', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  const { response, serials } = await svidResponse({ ids: [{ id: ID_B }, { id: ID_B2, hint: 'internal' }] });
  fake.setX509Svids(response);
  const b = await startB(t, fake, 'default');
  const r = await callB(b);
  t.ok(ok(r), 'a peer from the bundle is served');
  t.equal(r.peerCert?.serialNumber, serials[0], 'B presents the first (default) SVID');
  t.equal(await readyz(b.admin), 200, '/readyz is 200 once the SVID arrived');
  const s = await statusOf(b.admin);
  t.equal(s.spiffeId, ID_B);
  t.match(s.identitySource, { kind: 'workloadApi', workloadApi: { endpoint: fake.endpoint, state: 'receiving' } });
  t.ok(fake.calls.length >= 1, 'the Workload API was called');
  t.same(
    fake.calls.filter((c) => JSON.stringify(c.metadata['workload.spiffe.io']) !== '["true"]').map((c) => c.method),
    [],
    'every call carried workload.spiffe.io: true',
  );
});

t.test('explicit selection by SPIFFE ID and by hint', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  const { response, serials } = await svidResponse({ ids: [{ id: ID_B }, { id: ID_B2, hint: 'internal' }] });
  fake.setX509Svids(response);
  const byId = await startB(t, fake, 'by-id', { spiffeId: ID_B2 });
  t.equal((await callB(byId)).peerCert?.serialNumber, serials[1], 'spiffeId picks the second SVID');
  const byHint = await startB(t, fake, 'by-hint', { hint: 'internal' });
  t.equal((await callB(byHint)).peerCert?.serialNumber, serials[1], 'hint picks the second SVID');
  t.equal((await statusOf(byHint.admin)).spiffeId, ID_B2);

  // The selected SVID disappears from the stream (its entry deleted): it is no longer used.
  fake.setX509Svids((await svidResponse({ ids: [{ id: ID_B }] })).response);
  t.ok(await waitUntil(async () => (await readyz(byId.admin)) === 503, 3_000), 'redacted: the sidecar stops using the SVID (not ready)');
  t.notOk(ok(await callB(byId)), 'redacted: connections are refused');
  t.match((await statusOf(byId.admin)).identitySource, { withdrawn: /no longer offers this workload's SVID/ });
  const back = await svidResponse({ ids: [{ id: ID_B }, { id: ID_B2, hint: 'internal' }] });
  fake.setX509Svids(back.response);
  t.ok(await waitUntil(async () => (await callB(byId)).peerCert?.serialNumber === back.serials[1], 3_000), 'offered again: served with it');
});

t.test('rotation pushed mid-traffic: zero failed requests, new handshakes get the new SVID at once', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  const first = await svidResponse();
  fake.setX509Svids(first.response);
  const b = await startB(t, fake, 'rotation');
  const aCfg = await writeConfig(
    dir,
    'rotation-a.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { files: { cert: join(dir, 'a.pem'), key: join(dir, 'a.key'), bundle: join(dir, 'ca.pem') } },
      outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: b.inbound, spiffeId: ID_B }] },
      policy: { allow: [ID_B] },
    }),
  );
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(dir, 'a.pem'), clientA.pem);
  await writeFile(join(dir, 'a.key'), clientA.keyPem);
  await writeFile(join(dir, 'ca.pem'), ca.pem);
  const a = await runSigil(t, aCfg);

  const failures: string[] = [];
  const counts = { keepalive: 0, fresh: 0 };
  const seen = new Set<string>();
  let running = true;
  const keepAliveAgent = new HttpAgent({ keepAlive: true, maxSockets: 2 });
  t.teardown(() => keepAliveAgent.destroy());
  const keepalive = async (): Promise<void> => {
    while (running) {
      const r = await plainRequest({ address: a.outbound, path: '/rot', headers: { host: 'agent-b' }, agent: keepAliveAgent });
      counts.keepalive++;
      if (!ok(r)) failures.push(`keepalive: ${r.gotHttpResponse ? r.status : r.error}`);
    }
  };
  const fresh = async (): Promise<void> => {
    while (running) {
      const r = await callB(b, clientA, '/rot-direct');
      counts.fresh++;
      if (!ok(r)) failures.push(`fresh: ${r.gotHttpResponse ? r.status : r.error}`);
      if (r.peerCert) seen.add(r.peerCert.serialNumber);
      await sleep(20);
    }
  };
  const load = Promise.all([keepalive(), keepalive(), fresh()]);
  const pushed: string[] = [first.serials[0]!];
  for (let i = 0; i < 4; i++) {
    await sleep(600);
    const next = await svidResponse();
    fake.setX509Svids(next.response);
    pushed.push(next.serials[0]!);
    // New handshakes use the pushed SVID at once (within the time a push takes to arrive).
    const presented = await waitUntil(async () => (await callB(b)).peerCert?.serialNumber === next.serials[0], 2_000, 20);
    t.ok(presented, `push ${i + 1}: the next handshake presents the new SVID`);
  }
  await sleep(300);
  running = false;
  await load;
  t.ok(counts.keepalive > 30 && counts.fresh > 20, `load was continuous (${JSON.stringify(counts)})`);
  t.same(failures.slice(0, 5), [], `zero failed requests (${failures.length} failures)`);
  t.ok(pushed.filter((s) => seen.has(s)).length >= 4, `the load saw the pushed SVIDs (${seen.size} distinct serials)`);
});

t.test('a CA removed from the pushed bundle stops being trusted, for new and open connections', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids((await svidResponse({ bundle: [ca, ca2] })).response);
  const b = await startB(t, fake, 'ca-removed');
  t.ok(ok(await callB(b, clientA2)), 'positive control: a peer from the second CA is served while it is in the bundle');
  const agent = new (await import('node:https')).Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const kept = () => mtlsRequest({ address: b.inbound, certPem: clientA2.pem, keyPem: clientA2.keyPem, path: '/kept', agent });
  t.ok(ok(await kept()), 'a kept-alive connection from the second CA works');

  fake.setX509Svids((await svidResponse({ bundle: [ca] })).response);
  t.ok(await waitUntil(async () => !ok(await callB(b, clientA2)), 3_000), 'a new handshake from the removed CA is refused');
  const again = await kept();
  t.notOk(ok(again), `the open connection from the removed CA is cut at its next request (${again.gotHttpResponse ? again.status : again.error})`);
  t.ok(ok(await callB(b, clientA)), 'peers from the remaining CA are still served');
  const s = await statusOf(b.admin);
  t.same(s.trustDomains, [{ name: 'example.org', authorities: 1 }], '/status shows one authority left');
});

t.test('a federated bundle dropped from the stream stops trusting that trust domain', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  fake.setX509Svids((await svidResponse({ federated: { 'partner.org': [partnerCa] } })).response);
  const b = await startB(t, fake, 'federated');
  t.ok(ok(await callB(b, partnerClient)), 'positive control: the partner peer is served while federated');
  fake.setX509Svids((await svidResponse()).response);
  t.ok(await waitUntil(async () => !ok(await callB(b, partnerClient)), 3_000), 'the partner peer is refused once its bundle is gone');
  t.ok(ok(await callB(b, clientA)), 'own-domain peers are unaffected');
  fake.setX509Svids((await svidResponse({ federated: { 'partner.org': [partnerCa] } })).response);
  t.ok(await waitUntil(async () => ok(await callB(b, partnerClient)), 3_000), 'federation restored by the stream is trusted again');
});

t.test('malformed updates are discarded, one per mandatory field; the last good SVID keeps serving', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  const good = await svidResponse();
  fake.setX509Svids(good.response);
  const b = await startB(t, fake, 'malformed');
  const serial = good.serials[0];
  t.equal((await callB(b)).peerCert?.serialNumber, serial);
  const fresh = (await svidResponse()).response.svids[0]!;
  const cases: [string, object, string][] = [
    ['svids empty', { svids: [] }, 'svids'],
    ['spiffe_id missing', { svids: [{ ...fresh, spiffe_id: '' }] }, 'svids[0].spiffe_id'],
    ['x509_svid missing', { svids: [{ ...fresh, x509_svid: Buffer.alloc(0) }] }, 'svids[0].x509_svid'],
    ['x509_svid_key missing', { svids: [{ ...fresh, x509_svid_key: Buffer.alloc(0) }] }, 'svids[0].x509_svid_key'],
    ['bundle missing', { svids: [{ ...fresh, bundle: Buffer.alloc(0) }] }, 'svids[0].bundle'],
  ];
  for (const [name, response, field] of cases) {
    const mark = b.proc.lines.length;
    fake.setX509Svids(response);
    const logged = await b.proc.waitFor((l) => b.proc.lines.indexOf(l) >= mark && l.msg === 'SVID update failed; keeping the last good SVID', 3_000).catch(() => undefined);
    t.ok(JSON.stringify(logged?.error ?? '').includes(`${field}: `), `${name}: discarded and logged naming ${field}`);
    const r = await callB(b);
    t.ok(ok(r) && r.peerCert?.serialNumber === serial, `${name}: the last good SVID still serves`);
  }
  t.equal((await statusOf(b.admin)).identitySource?.workloadApi?.rejectedUpdates, cases.length, '/status counts the discarded updates');
  t.equal(await readyz(b.admin), 200, 'still ready');
  // Positive control: the stream is live and a valid update is applied.
  const next = await svidResponse();
  fake.setX509Svids(next.response);
  t.ok(await waitUntil(async () => (await callB(b)).peerCert?.serialNumber === next.serials[0], 3_000), 'a valid update after them is applied');
});

t.test('Unavailable and a stream that ends: the sidecar reconnects and keeps receiving', async (t) => {
  const sockDir = await mkdtemp(join(tmpdir(), 'wl-'));
  t.teardown(() => rm(sockDir, { recursive: true, force: true }));
  const fake = await FakeWorkloadApi.start(t, { socketPath: FakeWorkloadApi.socketPathIn(sockDir) });
  fake.setX509Svids((await svidResponse()).response);
  const b = await startB(t, fake, 'reconnect');
  const before = fake.callsTo('FetchX509SVID').length;
  fake.closeStreams('FetchX509SVID', status.UNAVAILABLE, 'agent restarting');
  await fake.waitForCalls('FetchX509SVID', before + 1, 5_000);
  t.pass('reopened after Unavailable');
  fake.closeStreams('FetchX509SVID');
  await fake.waitForCalls('FetchX509SVID', before + 2, 5_000);
  t.pass('reopened after a clean end of stream');
  t.ok(ok(await callB(b)), 'kept serving throughout');
  const next = await svidResponse();
  fake.setX509Svids(next.response);
  t.ok(await waitUntil(async () => (await callB(b)).peerCert?.serialNumber === next.serials[0], 3_000), 'a push on the new stream is applied');

  // The agent goes away entirely and comes back at the same path.
  const path = fake.socketPath;
  await fake.stop();
  await sleep(500);
  t.ok(ok(await callB(b)), 'the last good SVID serves while the agent is down');
  const back = await FakeWorkloadApi.start(t, { socketPath: path });
  const after = await svidResponse();
  back.setX509Svids(after.response);
  t.ok(await waitUntil(async () => (await callB(b)).peerCert?.serialNumber === after.serials[0], 5_000), 'the restarted agent is found and its SVID used');
});

t.test('PermissionDenied: the SVID is withdrawn (not ready, connections refused and cut), then restored', async (t) => {
  const fake = await FakeWorkloadApi.start(t);
  const good = await svidResponse();
  fake.setX509Svids(good.response);
  const b = await startB(t, fake, 'denied');
  const idle = await idleConnection(b);
  t.teardown(() => idle.socket.destroy());
  await sleep(300);
  t.ok(idle.isOpen(), 'positive control: an idle connection stays open while the identity holds');

  fake.failWith('FetchX509SVID', status.PERMISSION_DENIED, 'no identity issued');
  fake.closeStreams('FetchX509SVID', status.PERMISSION_DENIED, 'no identity issued');
  const cut = await Promise.race([idle.closed.then(() => true), sleep(3_000).then(() => false)]);
  t.ok(cut, 'the open connection is cut by the sidecar (nothing was sent on it)');
  t.ok(await waitUntil(async () => (await readyz(b.admin)) === 503, 3_000), '/readyz is 503 once the identity is withdrawn');
  t.notOk(ok(await callB(b)), 'new connections are refused');
  const s = await statusOf(b.admin);
  t.match(s.identitySource, { workloadApi: { state: 'denied' }, withdrawn: /PERMISSION_DENIED/ });
  const calls = fake.callsTo('FetchX509SVID').length;
  await fake.waitForCalls('FetchX509SVID', calls + 2, 5_000);
  t.pass('it keeps retrying with backoff');

  fake.failWith('FetchX509SVID', undefined);
  t.ok(await waitUntil(async () => (await readyz(b.admin)) === 200, 5_000), 'ready again once the Workload API hands the SVID out');
  const r = await callB(b);
  t.ok(ok(r), 'serving again');
  t.equal(r.peerCert?.serialNumber, good.serials[0], 'with the SVID the Workload API handed out again');
});

t.test('startup: /readyz waits for the first SVID; the bound fails clearly; InvalidArgument is fatal after one call', async (t) => {
  await t.test('not ready until the first SVID, then ready', async (t) => {
    const fake = await FakeWorkloadApi.start(t);
    const adminPort = await closedPort();
    const cfg = await startupConfig('late-svid', { socket: fake.endpoint, startupTimeout: '20s' }, { admin: { listen: `127.0.0.1:${adminPort}` } });
    const proc = spawnJsonLines([SIGIL_BIN, 'run', '--config', cfg], { SIGIL_LOG_LEVEL: 'info' });
    t.teardown(() => proc.stop('SIGKILL'));
    const admin = `127.0.0.1:${adminPort}`;
    t.ok(await waitUntil(async () => (await readyz(admin)) === 503, 5_000), '/readyz answers 503 while waiting');
    const health = await plainRequest({ address: admin, path: '/healthz' });
    t.equal(health.gotHttpResponse && health.status, 200, '/healthz answers while waiting');
    fake.setX509Svids((await svidResponse()).response);
    await proc.waitFor((l) => l.msg === 'ready', 5_000);
    t.equal(await readyz(admin), 200, 'ready after the first SVID');
  });

  await t.test('no SVID within the bound: exits non-zero naming the endpoint', async (t) => {
    const fake = await FakeWorkloadApi.start(t);
    const { code, out } = await runToExit(t, await startupConfig('timeout', { socket: fake.endpoint, startupTimeout: '1500ms' }));
    t.not(code, 0, 'exits non-zero');
    t.match(out, 'no usable SVID from the Workload API at', 'says what it waited for');
    t.match(out, fake.endpoint, 'names the endpoint');
    t.match(out, 'workload_api_startup_timeout', 'with a stable code');
  });

  await t.test('InvalidArgument: one call, no retry, a fatal configuration error', async (t) => {
    const fake = await FakeWorkloadApi.start(t);
    fake.failWith('FetchX509SVID', status.INVALID_ARGUMENT, 'security header missing from request');
    const { code, out } = await runToExit(t, await startupConfig('invalid', { socket: fake.endpoint, startupTimeout: '20s', retry: { initial: '50ms', max: '100ms' } }));
    t.not(code, 0, 'exits non-zero, long before the startup bound');
    t.match(out, 'workload_api_fatal', 'a fatal error with a stable code');
    t.match(out, 'not retrying', 'that says it will not retry');
    t.match(out, 'INVALID_ARGUMENT', 'and why');
    await sleep(300);
    t.equal(fake.callsTo('FetchX509SVID').length, 1, 'exactly one FetchX509SVID call');
    t.same([...new Set(fake.calls.map((c) => c.method))], ['FetchX509SVID'], 'no other method was called');
  });
});

t.test('the agent socket does not exist yet at start: the sidecar connects when it appears', async (t) => {
  const sockDir = await mkdtemp(join(tmpdir(), 'wl-'));
  t.teardown(() => rm(sockDir, { recursive: true, force: true }));
  const socketPath = FakeWorkloadApi.socketPathIn(sockDir);
  const cfg = await startupConfig('appears', { startupTimeout: '20s', retry: { initial: '100ms', max: '300ms' } });
  // The socket comes from the environment, as in a pod spec.
  const started = runSigil(t, cfg, { SPIFFE_ENDPOINT_SOCKET: `unix://${socketPath}` });
  await sleep(800);
  const fake = await FakeWorkloadApi.start(t, { socketPath });
  const { response, serials } = await svidResponse();
  fake.setX509Svids(response);
  const b = await started;
  t.equal((await callB(b)).peerCert?.serialNumber, serials[0], 'serving with the SVID from the late agent');
});

t.test('PermissionDenied on a bus sidecar: its NATS connection (which presents the SVID) closes, and is back on restore', async (t) => {
  await withNatsServer(t, async (natsBinary) => {
    const nats = await startNats(t, natsBinary, ca.pem);
    const fake = await FakeWorkloadApi.start(t);
    fake.setX509Svids((await svidResponse()).response);
    await startB(t, fake, 'bus-denied', {}, { bus: { local: '127.0.0.1:0', nats: { servers: [nats.url], tls: { ca: nats.caFile } } } });
    const connections = async (): Promise<number> => {
      const res = await fetch(`${nats.monitor}/connz?limit=1024`);
      const body = (await res.json()) as { connections?: { name?: string }[] };
      return (body.connections ?? []).filter((c) => c.name === `sigil ${ID_B}`).length;
    };
    t.ok(await waitUntil(async () => (await connections()) === 1, 5_000), 'positive control: connected to NATS with its SVID');
    fake.failWith('FetchX509SVID', status.PERMISSION_DENIED, 'no identity issued');
    fake.closeStreams('FetchX509SVID', status.PERMISSION_DENIED, 'no identity issued');
    t.ok(await waitUntil(async () => (await connections()) === 0, 5_000), 'withdrawn: the NATS connection is closed');
    await sleep(1_500);
    t.equal(await connections(), 0, 'and it does not reconnect with the withdrawn SVID');
    fake.failWith('FetchX509SVID', undefined);
    t.ok(await waitUntil(async () => (await connections()) === 1, 5_000), 'restored: connected again');
  });
});
