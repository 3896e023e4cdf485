// Regression tests for the security review of the data path, each against real `sigil run`
// processes: request smuggling through either side, an agent resetting its socket mid-upgrade,
// a listener that cannot bind, a trust-bundle change cutting kept-alive peers, and /readyz
// following the SVID's validity. Every refusal has a positive control next to it.
import { writeFile } from 'node:fs/promises';
import { createServer as createNetServer, connect as netConnect, type AddressInfo, type Server as NetServer } from 'node:net';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { SIGIL_BIN, spawnJsonLines, type JsonLineProcess } from '../../src/cli/processes.js';
import type { Issued } from '../fixtures/certs.js';
import { assertRefused, assertStatus } from '../helpers/assert.js';
import { certHash, mtlsRequest, plainRequest } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, sleep, splitAddress, tempDir, waitUntil, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';
import { chunked, rawTcp, rawTls, startRecordingUpstream, startTcpRelay, type RawHttpConnection, type RecordedRequest, type RecordingUpstream } from '../helpers/raw.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_P_SERVER = 'spiffe://example.org/agent/p-server';
const ID_PARTNER = 'spiffe://partner.example/agent/p';
const FORGED = 'spiffe://example.org/agent/root';
/** How long after the outer response a smuggled request would have reached the upstream. */
const SETTLE_MS = 300;

let dir: string;
let example: TrustDomainFixture;
let partner1: TrustDomainFixture;
let partner2: TrustDomainFixture;
let rec: RecordingUpstream;
let sidecarA: RunningSigil;
let sidecarB: RunningSigil;
let sidecarP: RunningSigil;
let leafA: Issued;
let partnerBundlePath: string;
let shortLived: { sidecar: RunningSigil; notAfter: number; probe: ReadyzProbe };

t.before(async () => {
  dir = await tempDir(t, 'sigil-hardening-');
  [example, partner1, partner2] = await Promise.all([
    setupTrustDomain(dir, 'example.org'),
    setupTrustDomain(dir, 'partner.example', 'partner1'),
    setupTrustDomain(dir, 'partner.example', 'partner2'),
  ]);
  rec = await startRecordingUpstream(t);
  leafA = await example.leaf(ID_A);
  partnerBundlePath = join(dir, 'partner-bundle.pem');
  await writeFile(partnerBundlePath, partner1.ca.pem);
  const [bCfg, pCfg] = await Promise.all([
    writeConfig(
      dir,
      'b.yaml',
      sidecarConfig({
        trustDomain: 'example.org',
        identity: { dev: { caDir: example.caDir, spiffeId: ID_B, ttl: '15m' } },
        inbound: { listen: '127.0.0.1:0', upstream: rec.url },
        policy: { allow: [ID_A] },
      }),
    ),
    writeConfig(
      dir,
      'p.yaml',
      sidecarConfig({
        trustDomain: 'example.org',
        identity: { dev: { caDir: example.caDir, spiffeId: ID_P_SERVER, ttl: '15m' } },
        trust: { bundles: { 'partner.example': partnerBundlePath } },
        inbound: { listen: '127.0.0.1:0', upstream: rec.url },
        policy: { allow: [ID_PARTNER] },
      }),
    ),
  ]);
  // The short-lived files identity starts now, so its SVID expires while the other tests run.
  [sidecarB, sidecarP, shortLived] = await Promise.all([runSigil(t, bCfg), runSigil(t, pCfg), startShortLived()]);
  const aCfg = await writeConfig(
    dir,
    'a.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: example.caDir, spiffeId: ID_A, ttl: '15m' } },
      outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: sidecarB.inbound, spiffeId: ID_B }] },
      policy: { allow: [ID_B] },
    }),
  );
  sidecarA = await runSigil(t, aCfg);
});

interface ReadyzProbe {
  /** Every /readyz answer, with the time it was received. */
  observations: { at: number; status: number }[];
  /** Resolves once a 503 was seen or the deadline passed. */
  done: Promise<void>;
}

/** Polls /readyz every 100 ms until it answers 503 or `deadline` (epoch ms) passes. */
function watchReadyz(address: string, deadline: number): ReadyzProbe {
  const observations: ReadyzProbe['observations'] = [];
  const done = (async () => {
    while (Date.now() < deadline) {
      const r = await plainRequest({ address, path: '/readyz', timeoutMs: 2_000 });
      observations.push({ at: Date.now(), status: r.gotHttpResponse ? r.status : 0 });
      if (r.gotHttpResponse && r.status === 503) return;
      await sleep(100);
    }
  })();
  return { observations, done };
}

/** A sidecar whose identity.files SVID expires ~6 s from now and is never renewed. */
async function startShortLived(): Promise<typeof shortLived> {
  const leaf = await example.leaf('spiffe://example.org/agent/short-lived', { notAfter: new Date(Date.now() + 6_500) });
  const notAfter = new Date(leaf.cert.validTo).getTime(); // whole seconds, as encoded
  const files = { cert: join(dir, 'short.pem'), key: join(dir, 'short.key'), bundle: join(dir, 'short-bundle.pem') };
  await Promise.all([writeFile(files.cert, leaf.pem), writeFile(files.key, leaf.keyPem, { mode: 0o600 }), writeFile(files.bundle, example.ca.pem)]);
  const cfg = await writeConfig(
    dir,
    'short.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { files },
      inbound: { listen: '127.0.0.1:0', upstream: rec.url },
      policy: { allow: [ID_A] },
    }),
  );
  const sidecar = await runSigil(t, cfg);
  return { sidecar, notAfter, probe: watchReadyz(sidecar.admin, notAfter + 3_000) };
}

// ---------------------------------------------------------------------------------------------
// 1 + 2. Request smuggling

/** A complete second request, to be hidden in the body of the first; `tag` tells variants apart. */
const smuggled = (tag: string): string => `GET /admin?${tag} HTTP/1.1\r\nHost: b\r\nx-sigil-peer-id: ${FORGED}\r\n\r\n`;

interface Variant {
  name: string;
  method: string;
  /** The bytes to send; `tag` goes into the outer request's x-variant header and the smuggled URL. */
  raw(host: string, tag: string): string;
  /** The body the upstream must see on the outer request (the smuggled bytes, framed as data). */
  body(tag: string): string;
  /** Extra checks on the one request the upstream saw. */
  check?(t: Test, seen: RecordedRequest, host: string, side: Side): void;
}

type Side = 'inbound' | 'outbound';

const chunkedVariant = (method: string, connection?: string): Variant => ({
  name: `${method} + Transfer-Encoding: chunked${connection ? ` + Connection: ${connection}` : ''}, request in the body`,
  method,
  raw: (host, tag) =>
    `${method} /one HTTP/1.1\r\nHost: ${host}\r\nx-variant: ${tag}\r\n${connection ? `Connection: ${connection}\r\n` : ''}` +
    `Transfer-Encoding: chunked\r\n\r\n${chunked(smuggled(tag))}`,
  body: smuggled,
});

const SMUGGLING_VARIANTS: Variant[] = [
  chunkedVariant('GET'),
  chunkedVariant('DELETE'),
  chunkedVariant('OPTIONS'),
  chunkedVariant('HEAD'),
  chunkedVariant('GET', 'keep-alive, transfer-encoding'),
  {
    name: 'GET + Connection: keep-alive, content-length + Content-Length body holding a request',
    method: 'GET',
    raw: (host, tag) =>
      `GET /one HTTP/1.1\r\nHost: ${host}\r\nx-variant: ${tag}\r\nConnection: keep-alive, content-length\r\n` +
      `Content-Length: ${Buffer.byteLength(smuggled(tag))}\r\n\r\n${smuggled(tag)}`,
    body: smuggled,
  },
  {
    name: 'Connection: x-sigil-peer-id, x-forwarded-client-cert, host',
    method: 'GET',
    raw: (host, tag) =>
      `GET /one HTTP/1.1\r\nHost: ${host}\r\nx-variant: ${tag}\r\nConnection: x-sigil-peer-id, x-forwarded-client-cert, host\r\n` +
      `x-sigil-peer-id: ${FORGED}\r\nx-forwarded-client-cert: By=${FORGED};Hash=00;URI=${FORGED}\r\n\r\n`,
    body: () => '',
    check(t, seen, host, side) {
      t.equal(seen.headers.host, host, `${side}: Host is the one the caller sent`);
      t.equal(seen.headers['x-sigil-peer-id'], ID_A, `${side}: x-sigil-peer-id is the verified caller`);
      const hash = side === 'inbound' ? certHash(leafA.der) : '[0-9a-f]{64}';
      t.match(seen.headers['x-forwarded-client-cert'], new RegExp(`^By=${ID_B};Hash=${hash};URI=${ID_A}$`), `${side}: XFCC from verified material`);
    },
  },
];

const POSITIVE_CONTROL: Variant = {
  name: 'positive control: POST + chunked body "hello world"',
  method: 'POST',
  raw: (host, tag) => `POST /one HTTP/1.1\r\nHost: ${host}\r\nx-variant: ${tag}\r\nTransfer-Encoding: chunked\r\n\r\n${chunked('hello world', 3)}`,
  body: () => 'hello world',
};

/**
 * Sends every variant at once, each on its own connection, waits for the answers and a settle
 * period (a smuggled request would follow the outer one on the same upstream connection within
 * milliseconds), then checks that the upstream saw exactly one request per variant: the outer one.
 */
async function checkSmuggling(t: Test, side: Side, open: () => Promise<RawHttpConnection>, host: string): Promise<void> {
  const variants = [POSITIVE_CONTROL, ...SMUGGLING_VARIANTS];
  const before = rec.requests.length;
  const results = await Promise.all(
    variants.map(async (v, i) => {
      const tag = `${side}-${i}`;
      const conn = await open();
      t.teardown(() => conn.destroy());
      return { v, tag, conn, r: await conn.request(v.raw(host, tag), { head: v.method === 'HEAD' }) };
    }),
  );
  await sleep(SETTLE_MS);
  for (const { conn } of results) conn.destroy();
  const seen = rec.requests.slice(before);
  t.equal(seen.length, variants.length, `${side}: the upstream received ${variants.length} requests for ${variants.length} variants`);
  t.notOk(
    seen.some((q) => q.url.startsWith('/admin')),
    `${side}: no request for /admin reached the upstream (${seen.filter((q) => q.url.startsWith('/admin')).map((q) => q.url).join(', ')})`,
  );
  for (const { v, tag, r } of results) {
    const what = `${side} ${v.name}`;
    if (r.kind !== 'response') t.fail(`${what}: no response (${r.kind}) ${r.partial.slice(0, 200)}`);
    else t.equal(r.status, 200, `${what}: answered 200`);
    const mine = seen.filter((q) => q.headers['x-variant'] === tag || q.url.includes(tag));
    t.equal(mine.length, 1, `${what}: exactly one request upstream (${mine.map((q) => `${q.method} ${q.url}`).join(', ')})`);
    t.ok(
      mine.every((q) => q.headers['x-sigil-peer-id'] === ID_A),
      `${what}: only ever the verified caller's identity, never the forged one`,
    );
    const outer = mine[0];
    if (!outer) continue;
    t.same([outer.method, outer.url, outer.headers['x-variant']], [v.method, '/one', tag], `${what}: it is the outer request`);
    t.equal(outer.body, v.body(tag), `${what}: its body arrived as data, exactly`);
    v.check?.(t, outer, host, side);
  }
}

t.test('request smuggling through the inbound side (mTLS peer writing raw bytes)', async (t) => {
  await checkSmuggling(t, 'inbound', () => rawTls(sidecarB.inbound, { certPem: leafA.pem, keyPem: leafA.keyPem }), 'agent-b.test');
});

t.test('request smuggling through the outbound side (agent → A → B → upstream)', async (t) => {
  await checkSmuggling(t, 'outbound', () => rawTcp(sidecarA.outbound), 'agent-b');
});

// ---------------------------------------------------------------------------------------------
// 3. Socket reset mid-upgrade

const upgradeRequest = (host: string, path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
  `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

/** 0 = reset right after the write, else after that many ms (spreads resets over the proxy's phases). */
const resetDelay = (i: number): Promise<void> => (i % 4 === 0 ? Promise.resolve() : i % 4 === 1 ? new Promise((r) => setImmediate(r)) : sleep(i % 4 === 2 ? 1 : 5));

function assertAlive(t: Test, s: RunningSigil, what: string): void {
  t.equal(s.proc.child.exitCode, null, `${what}: process has not exited`);
  t.equal(s.proc.child.signalCode, null, `${what}: process not killed by a signal`);
  t.notMatch(s.proc.stderr(), /ECONNRESET|Uncaught|Unhandled/i, `${what}: no uncaught error on stderr`);
}

t.test('agent resets its socket mid-WebSocket-upgrade on the outbound listener: sidecar survives', async (t) => {
  const { host, port } = splitAddress(sidecarA.outbound);
  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve) => {
      const s = netConnect({ host, port }, () => {
        s.write(upgradeRequest('agent-b', `/ws-reset-${i}`));
        void resetDelay(i).then(() => s.resetAndDestroy());
      });
      s.on('error', () => {});
      s.once('close', () => resolve());
    });
  }
  await sleep(500);
  assertAlive(t, sidecarA, 'outbound after 20 resets');
  assertStatus(t, await plainRequest({ address: sidecarA.outbound, path: '/after-resets', headers: { host: 'agent-b' } }), 'normal request through A afterwards');
  assertAlive(t, sidecarB, 'B (the server side of those upgrades)');
});

t.test('peer resets its socket mid-WebSocket-upgrade on the inbound listener (TLS): sidecar survives', async (t) => {
  // TLS runs end to end through a relay; the relay resets its TCP connection to B. A regression
  // guard for the inbound half of the fix: before it, this path already survived, because Node's
  // TLSSocket always carries its own 'error' listener (the outbound test above did crash).
  const relay = await startTcpRelay(t, sidecarB.inbound);
  for (let i = 0; i < 20; i++) {
    const conn = await rawTls(relay.address, { certPem: leafA.pem, keyPem: leafA.keyPem });
    const relayed = relay.connections[relay.connections.length - 1]!;
    // One ordinary request first: the handshake is then over and the next bytes are the upgrade.
    const warm = await conn.request(`GET /warm-${i} HTTP/1.1\r\nHost: agent-b\r\n\r\n`);
    if (warm.kind !== 'response' || warm.status !== 200) t.fail(`warm-up request ${i}: ${warm.kind}`);
    relayed.resetAfterNextData(i % 4 === 0 ? 0 : i % 4);
    conn.write(upgradeRequest('agent-b', `/ws-reset-in-${i}`));
    await relayed.closed;
    conn.destroy();
  }
  await sleep(500);
  assertAlive(t, sidecarB, 'inbound after 20 resets');
  assertStatus(t, await mtlsRequest({ address: sidecarB.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, path: '/after-resets-in' }), 'normal request to B afterwards');
});

// ---------------------------------------------------------------------------------------------
// 4. A listener that cannot bind

async function occupiedPort(t: Test): Promise<number> {
  const server: NetServer = createNetServer((s) => s.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as AddressInfo).port;
}

function exitWithin(proc: JsonLineProcess, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null } | 'still running'> {
  return new Promise((resolve) => {
    const child = proc.child;
    if (child.exitCode !== null || child.signalCode !== null) return resolve({ code: child.exitCode, signal: child.signalCode });
    const timer = setTimeout(() => resolve('still running'), ms);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal });
    });
  });
}

t.test('a listener whose port is in use: sigil run exits non-zero, naming EADDRINUSE', async (t) => {
  const [inPort, outPort] = [await occupiedPort(t), await occupiedPort(t)];
  const base = {
    trustDomain: 'example.org',
    identity: { dev: { caDir: example.caDir, spiffeId: ID_B, ttl: '15m' } },
    policy: { allow: [ID_A] },
  };
  const routes = [{ host: 'agent-b', address: sidecarB.inbound, spiffeId: ID_B }];
  const configs = {
    'inbound port in use': sidecarConfig({ ...base, inbound: { listen: `127.0.0.1:${inPort}`, upstream: rec.url } }),
    // Admin and inbound are already up when the outbound bind fails: both must be shut again.
    'outbound port in use (after admin and inbound bound)': sidecarConfig({
      ...base,
      inbound: { listen: '127.0.0.1:0', upstream: rec.url },
      outbound: { listen: `127.0.0.1:${outPort}`, routes },
    }),
  };
  const free = writeConfig(
    dir,
    'busy-free.yaml',
    sidecarConfig({ ...base, inbound: { listen: '127.0.0.1:0', upstream: rec.url }, outbound: { listen: '127.0.0.1:0', routes } }),
  );
  // Positive control, started alongside: the same configuration with free ports reaches readiness.
  const control = free.then((path) => runSigil(t, path));
  const runs = await Promise.all(
    Object.entries(configs).map(async ([name, config], i) => {
      const path = await writeConfig(dir, `busy-${i}.yaml`, config);
      const proc = spawnJsonLines([SIGIL_BIN, 'run', '--config', path], { SIGIL_LOG_LEVEL: 'info' });
      t.teardown(() => void proc.child.kill('SIGKILL'));
      return { name, proc, exit: await exitWithin(proc, 8_000) };
    }),
  );
  for (const { name, proc, exit } of runs) {
    if (exit === 'still running') {
      t.fail(`${name}: process still running 8 s later (stderr: ${proc.stderr().slice(0, 300)})`);
      continue;
    }
    t.not(exit.code, 0, `${name}: non-zero exit (${exit.code ?? exit.signal})`);
    t.not(exit.code, null, `${name}: exited by itself, not by a signal`);
    t.match(proc.stderr(), /EADDRINUSE/, `${name}: stderr names EADDRINUSE`);
    t.notOk(
      proc.lines.some((l) => l.msg === 'ready'),
      `${name}: never logged readiness`,
    );
  }
  const ok = await control;
  t.match(ok.inbound, /^127\.0\.0\.1:\d+$/, 'free ports: ready with an inbound address');
  t.match(ok.outbound, /^127\.0\.0\.1:\d+$/, 'free ports: ready with an outbound address');
  assertStatus(t, await plainRequest({ address: ok.admin, path: '/readyz' }), 'free ports: /readyz');
});

// ---------------------------------------------------------------------------------------------
// 5. A trust-bundle change cuts kept-alive inbound peers

t.test('bundle change: a kept-alive peer that no longer verifies gets no further response', async (t) => {
  const [leafP1, leafP2] = await Promise.all([partner1.leaf(ID_PARTNER), partner2.leaf(ID_PARTNER)]);
  const conn = await rawTls(sidecarP.inbound, { certPem: leafP1.pem, keyPem: leafP1.keyPem });
  t.teardown(() => conn.destroy());
  const get = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: p\r\n\r\n`;
  const r1 = await conn.request(get('/bundle-1'));
  t.equal(r1.kind === 'response' && r1.status, 200, 'request 1 with the partner leaf: 200');
  const r1b = await conn.request(get('/bundle-1b'));
  t.equal(r1b.kind === 'response' && r1b.status, 200, 'request 2 on the same kept-alive connection before the change: 200');
  t.notOk(conn.isClosed, 'connection still open');

  const from = sidecarP.proc.lines.length;
  await writeFile(partnerBundlePath, partner2.ca.pem); // in place: same file, new content
  const reloaded = await waitUntil(() => sidecarP.proc.lines.slice(from).some((l) => l.msg === 'identity updated' && l.cause === 'trust_bundle'), 3_000);
  t.ok(reloaded, 'the sidecar picked up the new partner bundle');

  const r2 = await conn.request(get('/bundle-2'), { timeoutMs: 3_000 });
  t.equal(r2.kind, 'closed', `request after the change: no HTTP response, connection closed (${r2.kind === 'response' ? `${r2.status} ${r2.body.slice(0, 100)}` : r2.kind})`);
  t.notOk(
    rec.requests.some((q) => q.url === '/bundle-2'),
    'the upstream never saw it',
  );
  t.equal(rec.requests.filter((q) => q.url.startsWith('/bundle-1')).length, 2, 'the two requests before the change did reach it');

  // Positive control: a fresh connection with a leaf from the new partner CA succeeds...
  const fresh = await mtlsRequest({ address: sidecarP.inbound, certPem: leafP2.pem, keyPem: leafP2.keyPem, path: '/bundle-new-ca' });
  assertStatus(t, fresh, 'fresh connection, leaf from the new partner CA');
  if (fresh.gotHttpResponse) t.equal(fresh.json?.url, '/bundle-new-ca');
  // ...and a fresh connection with the old partner leaf is refused at the handshake.
  assertRefused(t, await mtlsRequest({ address: sidecarP.inbound, certPem: leafP1.pem, keyPem: leafP1.keyPem, path: '/bundle-old-ca' }), 'fresh connection, old partner leaf');
});

// ---------------------------------------------------------------------------------------------
// 6. /readyz follows the SVID's validity

t.test('/readyz: 200 when ready; 503 once a files-sourced SVID expires, while /healthz stays 200', async (t) => {
  // Positive control on a long-lived dev identity.
  assertStatus(t, await plainRequest({ address: sidecarB.admin, path: '/readyz' }), 'dev identity: /readyz');

  const { sidecar, notAfter, probe } = shortLived;
  await probe.done;
  const obs = probe.observations;
  const first503 = obs.find((o) => o.status === 503);
  t.ok(obs.length > 0 && obs[0]!.status === 200 && obs[0]!.at < notAfter, `files identity: /readyz 200 while the SVID was valid (${JSON.stringify(obs.slice(0, 2))})`);
  t.ok(first503, '/readyz turned 503');
  t.ok(first503 && first503.at >= notAfter, `only once the SVID expired (${first503 && first503.at - notAfter} ms after notAfter)`);
  t.ok(
    obs.filter((o) => o.at < notAfter).every((o) => o.status === 200),
    'every answer before expiry was 200',
  );
  const ready = await plainRequest({ address: sidecar.admin, path: '/readyz' });
  assertStatus(t, ready, '/readyz after expiry', 503);
  t.match(ready.json, { status: 'not_ready' });
  assertStatus(t, await plainRequest({ address: sidecar.admin, path: '/healthz' }), '/healthz after expiry');
  t.equal(sidecar.proc.child.exitCode, null, 'the process keeps running');
});
