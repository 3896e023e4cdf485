// SVID rotation on real `sigil run` processes: a dev-issued pair rotating every ~2 s under
// continuous load must not fail a single request and must actually present the new SVIDs; a
// files-sourced sidecar must pick up in-place writes and atomic renames within 2.5 s and keep
// its last good SVID when the new file is garbage.
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent as HttpAgent } from 'node:http';
import t from 'tap';
import type { Issued } from '../fixtures/certs.js';
import { mtlsRequest, plainRequest, type HttpResult } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, sleep, tempDir, writeConfig, type TrustDomainFixture } from '../helpers/env.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_C = 'spiffe://example.org/agent/c';
const LOAD_MS = 9_000;

let dir: string;
let example: TrustDomainFixture;
let upstream: EchoUpstream;
let clientA: Issued;

t.before(async () => {
  dir = await tempDir(t, 'sigil-rotation-');
  example = await setupTrustDomain(dir, 'example.org');
  upstream = await startEchoUpstream(t);
  clientA = await example.leaf(ID_A);
});

interface Failure {
  loop: string;
  at: number;
  detail: string;
}

function describe(r: HttpResult): string {
  return r.gotHttpResponse ? `${r.status} ${r.body.slice(0, 200)}` : `${r.code ?? ''} ${r.error}`;
}

t.test('dev identity, ttl 4s: rotation under continuous load', async (t) => {
  const bCfg = await writeConfig(
    dir,
    'b.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: example.caDir, spiffeId: ID_B, ttl: '4s' } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
    }),
  );
  const b = await runSigil(t, bCfg);
  const aCfg = await writeConfig(
    dir,
    'a.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: example.caDir, spiffeId: ID_A, ttl: '4s' } },
      outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: b.inbound, spiffeId: ID_B }] },
      policy: { allow: [ID_B] },
    }),
  );
  const a = await runSigil(t, aCfg);

  const failures: Failure[] = [];
  const counts: Record<string, number> = { keepalive: 0, fresh: 0, direct: 0 };
  const bSerials: { at: number; serial: string }[] = [];
  const start = Date.now();
  const logStart = { a: a.proc.lines.length, b: b.proc.lines.length };
  const running = (): boolean => Date.now() - start < LOAD_MS;
  const record = (loop: string, r: HttpResult): void => {
    counts[loop]!++;
    if (!r.gotHttpResponse || r.status !== 200) failures.push({ loop, at: Date.now() - start, detail: describe(r) });
  };

  const keepAliveAgent = new HttpAgent({ keepAlive: true, maxSockets: 2 });
  t.teardown(() => keepAliveAgent.destroy());
  const keepalive = async (): Promise<void> => {
    while (running()) {
      record('keepalive', await plainRequest({ address: a.outbound, path: '/load/keepalive', headers: { host: 'agent-b', 'x-loop': 'keepalive' }, agent: keepAliveAgent }));
    }
  };
  const fresh = async (): Promise<void> => {
    while (running()) {
      record('fresh', await plainRequest({ address: a.outbound, path: '/load/fresh', headers: { host: 'agent-b', 'x-loop': 'fresh', connection: 'close' } }));
      await sleep(10);
    }
  };
  // A direct mTLS client to B: a new handshake every time, reading the serial B presents.
  const direct = async (): Promise<void> => {
    while (running()) {
      const r = await mtlsRequest({ address: b.inbound, certPem: clientA.pem, keyPem: clientA.keyPem, path: '/load/direct', headers: { 'x-loop': 'direct' } });
      record('direct', r);
      if (r.peerCert) bSerials.push({ at: Date.now() - start, serial: r.peerCert.serialNumber });
      await sleep(100);
    }
  };
  await Promise.all([keepalive(), keepalive(), fresh(), direct()]);

  t.ok(counts.keepalive! > 50 && counts.fresh! > 20 && counts.direct! > 20, `load was continuous (${JSON.stringify(counts)})`);
  t.same(failures.slice(0, 5), [], `zero failed requests (${failures.length} failures of ${Object.values(counts).reduce((x, y) => x + y)})`);

  const distinctB = new Set(bSerials.map((s) => s.serial));
  t.ok(distinctB.size >= 3, `B's presented leaf serial changed at least twice (${distinctB.size} distinct serials)`);

  const viaA = upstream.requests.filter((q) => q.headers['x-loop'] === 'keepalive' || q.headers['x-loop'] === 'fresh');
  const hashes = viaA.map((q) => /Hash=([0-9a-f]{64})/.exec(String(q.headers['x-forwarded-client-cert']))?.[1]);
  t.ok(hashes.every(Boolean), 'every request through A carried an XFCC hash');
  const distinctA = new Set(hashes);
  t.ok(distinctA.size >= 3, `A's leaf (XFCC Hash at the upstream) changed at least twice (${distinctA.size} distinct hashes over ${viaA.length} requests)`);

  // Renewal cadence: ttl 4s renews at ~50% ± 10% of the lifetime, i.e. every 1.6–2.4 s.
  const renewals = (lines: Record<string, unknown>[]) => lines.filter((l) => l.msg === 'identity updated' && l.cause === 'svid').length;
  const renewA = renewals(a.proc.lines.slice(logStart.a));
  const renewB = renewals(b.proc.lines.slice(logStart.b));
  t.ok(renewA >= 2 && renewA <= 10, `A renewed its SVID at a sane cadence: ${renewA} renewals in ${LOAD_MS / 1000}s (expected ~4-6)`);
  t.ok(renewB >= 2 && renewB <= 10, `B renewed its SVID at a sane cadence: ${renewB} renewals in ${LOAD_MS / 1000}s (expected ~4-6)`);
});

t.test('files identity: in-place writes, atomic renames and invalid files', async (t) => {
  const cert = join(dir, 'svid.pem');
  const key = join(dir, 'svid.key');
  const first = await example.leaf(ID_C);
  await writeFile(cert, first.pem);
  await writeFile(key, first.keyPem);
  const cCfg = await writeConfig(
    dir,
    'c.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { files: { cert: './svid.pem', key: './svid.key', bundle: example.bundlePem } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
    }),
  );
  const c = await runSigil(t, cCfg);

  const presented = async (): Promise<string | undefined> => {
    const r = await mtlsRequest({ address: c.inbound, certPem: clientA.pem, keyPem: clientA.keyPem, path: '/files' });
    if (!r.gotHttpResponse || r.status !== 200) t.fail(`request to the files-sourced sidecar failed: ${describe(r)}`);
    return r.peerCert?.serialNumber;
  };
  /** Polls with new handshakes until `serial` is presented; returns the time it took (or -1). */
  const waitForSerial = async (serial: string, limitMs: number): Promise<number> => {
    const t0 = Date.now();
    while (Date.now() - t0 < limitMs) {
      if ((await presented()) === serial) return Date.now() - t0;
      await sleep(100);
    }
    return -1;
  };

  t.equal(await presented(), first.cert.serialNumber, 'presents the SVID from the files');

  const second = await example.leaf(ID_C);
  await writeFile(cert, second.pem);
  await writeFile(key, second.keyPem);
  const inPlace = await waitForSerial(second.cert.serialNumber, 2_500);
  t.ok(inPlace >= 0, `in-place write picked up within 2.5 s (${inPlace} ms)`);

  const third = await example.leaf(ID_C);
  await writeFile(`${cert}.tmp`, third.pem);
  await writeFile(`${key}.tmp`, third.keyPem);
  await rename(`${cert}.tmp`, cert);
  await rename(`${key}.tmp`, key);
  const renamed = await waitForSerial(third.cert.serialNumber, 2_500);
  t.ok(renamed >= 0, `atomic rename picked up within 2.5 s (${renamed} ms)`);

  for (const [what, content] of [
    ['half-written svid.pem', (await example.leaf(ID_C)).pem.slice(0, 300)],
    ['garbage svid.pem', 'this is not a certificate\n'],
  ] as const) {
    const logMark = c.proc.lines.length;
    await writeFile(cert, content);
    const t0 = Date.now();
    let kept = true;
    while (Date.now() - t0 < 1_500) {
      if ((await presented()) !== third.cert.serialNumber) kept = false;
      await sleep(100);
    }
    t.ok(kept, `${what}: keeps serving the last good SVID`);
    const warn = c.proc.lines.slice(logMark).find((l) => l.level === 'warn');
    t.ok(warn, `${what}: a warn line is logged (${JSON.stringify(warn ?? null).slice(0, 200)})`);
  }

  // And it recovers once a valid SVID is written again.
  const fourth = await example.leaf(ID_C);
  await writeFile(`${key}.tmp`, fourth.keyPem);
  await writeFile(`${cert}.tmp`, fourth.pem);
  await rename(`${key}.tmp`, key);
  await rename(`${cert}.tmp`, cert);
  const recovered = await waitForSerial(fourth.cert.serialNumber, 2_500);
  t.ok(recovered >= 0, `recovers with the next valid SVID within 2.5 s (${recovered} ms)`);
  t.equal(c.proc.child.exitCode, null, 'process still running');
});

t.test('a keep-alive connection does not outlive the peer SVID it was verified with', async (t) => {
  const cfg = await writeConfig(
    dir,
    'd.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: example.caDir, spiffeId: 'spiffe://example.org/agent/d', ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
    }),
  );
  const d = await runSigil(t, cfg);
  const { Agent: HttpsAgent } = await import('node:https');
  const agent = new HttpsAgent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  // X.509 times have one-second precision: expire ~2-3 s from now.
  const notAfter = new Date(Math.floor(Date.now() / 1000) * 1000 + 3_000);
  const shortLived = await example.leaf(ID_A, { notAfter });
  const send = (path: string) => mtlsRequest({ address: d.inbound, certPem: shortLived.pem, keyPem: shortLived.keyPem, path, agent });

  const before = await send('/short-lived/before');
  t.ok(before.gotHttpResponse && before.status === 200, `accepted while valid (${describe(before)})`);
  await sleep(notAfter.getTime() - Date.now() + 600);
  const after = await send('/short-lived/after');
  t.ok(after.gotHttpResponse ? after.reusedSocket : true, 'the second request used the same connection (or was cut)');
  t.equal(
    upstream.requests.filter((q) => q.url === '/short-lived/after').length,
    0,
    `a request on a connection whose peer SVID has expired is not forwarded (got: ${describe(after)})`,
  );
  // Control: a currently valid caller on a new connection is served.
  const fresh = await mtlsRequest({ address: d.inbound, certPem: clientA.pem, keyPem: clientA.keyPem, path: '/short-lived/control' });
  t.ok(fresh.gotHttpResponse && fresh.status === 200, 'valid caller still served');
});
