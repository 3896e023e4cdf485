// Inbound side of a real `sigil run` process: which client certificates get through, what the
// local agent is told about the caller, and that hostile input never takes the sidecar down.
// Every refusal has a positive control in this file, so a sidecar that refuses everything fails.
import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { chainPem, createCa, createCert, createIntermediate, createLeaf, type Issued } from '../fixtures/certs.js';
import { assertJsonError, assertRefused, assertStatus } from '../helpers/assert.js';
import { certHash, mtlsRequest, type HttpResult } from '../helpers/clients.js';
import { closedPort, runSigil, setupTrustDomain, sidecarConfig, sleep, splitAddress, tempDir, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';
import { startEchoUpstream, type EchoReply, type EchoUpstream } from '../helpers/upstream.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_INTER = 'spiffe://example.org/agent/via-intermediate';
const ID_DENIED = 'spiffe://example.org/agent/not-on-the-list';
const ID_PARTNER = 'spiffe://partner.example/x';

let example: TrustDomainFixture;
let partner: TrustDomainFixture;
let rogue: TrustDomainFixture;
let upstream: EchoUpstream;
let sidecar: RunningSigil;
let sidecarNoUpstream: RunningSigil;
let leafA: Issued;

t.before(async () => {
  const dir = await tempDir(t, 'sigil-inbound-');
  [example, partner, rogue] = await Promise.all([
    setupTrustDomain(dir, 'example.org'),
    setupTrustDomain(dir, 'partner.example'),
    // Same trust domain name, different (untrusted) CA.
    setupTrustDomain(dir, 'example.org', 'rogue'),
  ]);
  upstream = await startEchoUpstream(t);
  leafA = await example.leaf(ID_A);
  const base = {
    trustDomain: 'example.org',
    identity: { dev: { caDir: './ca-example.org', spiffeId: ID_B, ttl: '15m' } },
    // Both domains' bundles come from trust.bundles: one PEM, one SPIFFE JWKS.
    trust: { bundles: { 'example.org': example.bundlePem, 'partner.example': partner.bundleJwks } },
    policy: { allow: [ID_A, ID_INTER, ID_PARTNER] },
  };
  const [b, b2] = await Promise.all([
    writeConfig(dir, 'sidecar-b.yaml', sidecarConfig({ ...base, inbound: { listen: '127.0.0.1:0', upstream: upstream.url } })),
    writeConfig(dir, 'sidecar-b2.json', sidecarConfig({ ...base, inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${await closedPort()}` } })),
  ]);
  [sidecar, sidecarNoUpstream] = await Promise.all([runSigil(t, b), runSigil(t, b2)]);
});

function call(cert: Issued | { pem: string; keyPem: string } | undefined, extra: Partial<Parameters<typeof mtlsRequest>[0]> = {}): Promise<HttpResult> {
  return mtlsRequest({ address: sidecar.inbound, certPem: cert?.pem, keyPem: cert?.keyPem, path: '/hello', ...extra });
}

t.test('valid SVID from the trusted CA with an allowed ID: 200 and verified identity headers', async (t) => {
  const r = await call(leafA, { headers: { 'x-test': 'positive' } });
  assertStatus(t, r, 'agent/a');
  const seen = r.json as EchoReply;
  t.equal(seen.url, '/hello');
  t.equal(seen.headers['x-sigil-peer-id'], ID_A, 'x-sigil-peer-id is the caller');
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${ID_B};Hash=${certHash(leafA.der)};URI=${ID_A}`, 'XFCC exact');
  t.match(seen.headers['x-forwarded-client-cert'], /Hash=[0-9a-f]{64};/, 'hash is lowercase hex');
  t.equal(seen.headers['x-test'], 'positive', 'ordinary headers pass');
  t.notOk(seen.headers['x-sigil-delegation'], 'no delegation header without a delegation token');
  // The sidecar presents its own SVID.
  t.ok(r.peerCert, 'server certificate seen');
  t.match(r.peerCert?.subjectAltName ?? '', `URI:${ID_B}`, 'sidecar presents its SVID');
  t.equal(upstream.requests.filter((q) => q.headers['x-test'] === 'positive').length, 1, 'upstream got it once');
});

t.test('leaf issued by an intermediate, chain presented: accepted', async (t) => {
  const inter = await createIntermediate(example.ca, { trustDomain: 'example.org' });
  const leaf = await createLeaf(inter, ID_INTER);
  const r = await call({ pem: chainPem(leaf, inter), keyPem: leaf.keyPem });
  assertStatus(t, r, 'leaf via intermediate');
  const seen = r.json as EchoReply;
  t.equal(seen.headers['x-sigil-peer-id'], ID_INTER);
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${ID_B};Hash=${certHash(leaf.der)};URI=${ID_INTER}`, 'XFCC hashes the leaf, not the chain');
});

t.test('federated trust domain: a leaf properly signed by the partner CA is accepted', async (t) => {
  const leaf = await partner.leaf(ID_PARTNER);
  const r = await call(leaf);
  assertStatus(t, r, 'partner leaf');
  t.equal((r.json as EchoReply).headers['x-sigil-peer-id'], ID_PARTNER);
});

t.test('TLS 1.2 client (positive control for the version test): accepted', async (t) => {
  const r = await call(leafA, { tls: { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } });
  assertStatus(t, r, 'TLS 1.2');
});

t.test('refused certificate classes: the connection ends without any HTTP response', async (t) => {
  const now = Date.now();
  const DAY = 86_400_000;
  const selfSigned = await createCert({ role: 'Impostor', uris: [ID_A], ca: false, keyUsage: ['digitalSignature'] });
  const cases: Array<[string, Promise<Issued | undefined>]> = [
    ['self-signed leaf claiming a trusted ID', Promise.resolve(selfSigned)],
    ['valid SVID from an untrusted CA of the same trust domain', rogue.leaf(ID_A)],
    ['expired leaf', example.leaf(ID_A, { notBefore: new Date(now - 2 * DAY), notAfter: new Date(now - DAY) })],
    ['not-yet-valid leaf', example.leaf(ID_A, { notBefore: new Date(now + DAY), notAfter: new Date(now + 2 * DAY) })],
    ['leaf with cA=true', example.leaf(ID_A, { ca: true })],
    ['leaf without digitalSignature', example.leaf(ID_A, { keyUsage: ['keyEncipherment'] })],
    ['leaf with keyCertSign', example.leaf(ID_A, { keyUsage: ['digitalSignature', 'keyCertSign'] })],
    ['leaf with cRLSign', example.leaf(ID_A, { keyUsage: ['digitalSignature', 'cRLSign'] })],
    ['two URI SANs', example.leaf(ID_A, { uris: [ID_A, 'spiffe://example.org/agent/other'] })],
    ['no URI SAN', example.leaf(ID_A, { uris: [], dnsNames: ['agent-a.example.org'] })],
    ['non-SPIFFE URI SAN', example.leaf(ID_A, { uris: ['https://example.org/agent/a'] })],
    ['SPIFFE ID without a path', example.leaf('spiffe://example.org')],
    ['cross trust domain: partner ID signed by the example.org CA', example.leaf(ID_PARTNER)],
    ['cross trust domain: example.org ID signed by the partner CA', partner.leaf(ID_A)],
    ['unknown trust domain', createTdLeaf('elsewhere.test', 'spiffe://elsewhere.test/agent/a')],
    ['no client certificate at all', Promise.resolve(undefined)],
  ];
  for (const [name, pending] of cases) {
    const cert = await pending;
    const r = await call(cert);
    assertRefused(t, r, name);
  }
  // The positive control still passes on the same sidecar afterwards.
  assertStatus(t, await call(leafA), 'valid caller after all refusals');
  const refusals = sidecar.proc.lines.filter((l) => l.msg === 'inbound peer refused');
  t.ok(refusals.length >= 4, `SPIFFE-level refusals are logged (${refusals.length})`);
  t.ok(refusals.every((l) => l.reason === 'peer_untrusted'), 'with reason peer_untrusted');
});

async function createTdLeaf(td: string, id: string): Promise<Issued> {
  const ca = await createCa({ trustDomain: td });
  return createLeaf(ca, id);
}

t.test('TLS 1.1 client is refused (and the client really offers TLS 1.1)', async (t) => {
  const legacy = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } as const;
  const r = await call(leafA, { tls: legacy });
  assertRefused(t, r, 'TLS 1.1');
  if (!r.gotHttpResponse) t.match(`${r.code ?? ''} ${r.error}`, /version|protocol|alert|handshake/i, 'refused at the protocol version');

  // Control: the same client options negotiate TLS 1.1 with a server that allows it.
  const { createServer } = await import('node:tls');
  const server = createServer({ cert: leafA.pem, key: leafA.keyPem, minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }, (s) => s.end());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const protocol = await new Promise<string>((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...legacy }, () => {
      resolve(s.getProtocol() ?? 'none');
      s.destroy();
    });
    s.on('error', (err) => resolve(`error: ${err.message}`));
  });
  t.equal(protocol, 'TLSv1.1', 'client negotiates TLS 1.1 where allowed');
});

t.test('verified peer not on the allow list: 403 JSON policy_denied, nothing forwarded', async (t) => {
  const leaf = await example.leaf(ID_DENIED);
  const r = await call(leaf, { headers: { 'x-test': 'denied' } });
  assertJsonError(t, r, 'peer not on the allow list', 403, 'forbidden', 'policy_denied');
  t.ok(r.gotHttpResponse && Array.isArray(r.json?.policies), 'policies array present');
  t.equal(upstream.requests.filter((q) => q.headers['x-test'] === 'denied').length, 0, 'upstream never saw it');
});

t.test('upstream down: 502 JSON upstream_unavailable naming the cause', async (t) => {
  const r = await mtlsRequest({ address: sidecarNoUpstream.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, path: '/x' });
  assertJsonError(t, r, 'upstream down', 502, 'bad_gateway', 'upstream_unavailable');
  t.match(r.gotHttpResponse && r.json?.detail, /ECONNREFUSED/, 'detail names the cause');
});

t.test('hostile input never crashes the sidecar', async (t) => {
  const { host, port } = splitAddress(sidecar.inbound);
  const open: Socket[] = [];
  t.teardown(() => open.forEach((s) => s.destroy()));

  // Garbage bytes straight at the TLS port. The first two bytes never read as the start of a
  // record header (no high bit: not SSLv2; second byte not 3: not a TLS version): random bytes
  // that do (about 1 in 500) announce more data than was sent, and OpenSSL rightly waits for
  // it, which is a slow handshake (covered by the half-open cases below), not garbage.
  /** Whether the sidecar closes a connection that sent these bytes, within 5 s. */
  const closedAfter = (bytes: Buffer): Promise<boolean> =>
    new Promise<boolean>((resolve) => {
      const s = netConnect({ host, port }, () => s.write(bytes));
      s.on('error', () => {});
      s.on('close', () => resolve(true));
      s.setTimeout(5000, () => {
        s.destroy();
        resolve(false);
      });
      s.resume();
    });
  for (let i = 0; i < 5; i++) {
    const garbage = randomBytes(4096);
    garbage[0] = [0x00, 0x16, 0x47, 0x7f, 0x30][i]!;
    garbage[1] = 0xee;
    t.ok(await closedAfter(garbage), `garbage connection ${i} closed by the sidecar`);
  }
  // A well-formed handshake record header (64 bytes announced) carrying a bogus ClientHello.
  const bogusHello = Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0x00, 0x40]), randomBytes(64)]);
  t.ok(await closedAfter(bogusHello), 'a handshake record with a bogus ClientHello: closed by the sidecar');
  // Half-open: idle TCP connections, a truncated ClientHello, and a half-closed socket.
  for (let i = 0; i < 5; i++) {
    const s = netConnect({ host, port });
    s.on('error', () => {});
    open.push(s);
  }
  const partial = netConnect({ host, port }, () => partial.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])));
  partial.on('error', () => {});
  open.push(partial);
  const halfClosed = netConnect({ host, port }, () => halfClosed.end(Buffer.from([0x16, 0x03, 0x01])));
  halfClosed.on('error', () => {});
  open.push(halfClosed);
  await sleep(200);
  assertStatus(t, await call(leafA), 'valid request while half-open sockets are held');

  // After a verified handshake: garbage instead of HTTP.
  const garbageReply = await new Promise<string>((resolve) => {
    let got = '';
    const s = tlsConnect({ host, port, cert: leafA.pem, key: leafA.keyPem, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () =>
      s.write('\x00\x01\x02 NOT HTTP AT ALL\r\n\r\n'),
    );
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('error', () => {});
    s.on('close', () => resolve(got));
    s.setTimeout(5000, () => s.destroy());
  });
  t.match(garbageReply, /^(HTTP\/1\.1 400|)/, `garbage after the handshake: 400 or closed (${garbageReply.split('\r\n')[0]})`);

  // Oversized headers (> 16 KB).
  const big = await call(leafA, { headers: { 'x-big': 'a'.repeat(20 * 1024) } });
  if (!big.gotHttpResponse) t.fail(`oversized headers: expected 431, got no response: ${big.error}`);
  else {
    t.equal(big.status, 431, 'oversized headers: 431');
    t.match(big.json, { reason: 'headers_too_large' });
  }
  // Many headers, each small, together too large.
  const many: Record<string, string> = {};
  for (let i = 0; i < 400; i++) many[`x-h-${i}`] = 'b'.repeat(60);
  const bigMany = await call(leafA, { headers: many });
  t.ok(bigMany.gotHttpResponse && bigMany.status === 431, 'many headers totalling > 16 KB: 431');

  assertStatus(t, await call(leafA), 'valid request after all of it');
  t.equal(sidecar.proc.child.exitCode, null, 'process still running');
  t.notMatch(sidecar.proc.stderr(), /Error|uncaught/i, 'nothing on stderr');
});
