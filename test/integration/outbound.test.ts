// Outbound side of a real `sigil run` process (A), dialing a real server sidecar (B) and bare
// TLS servers that present whatever certificate a test chooses. The agent talks plain HTTP/WS
// to A; A must only ever hand a request to a server whose SVID verified and matched the route.
import { Agent as HttpAgent } from 'node:http';
import t from 'tap';
import WebSocket from 'ws';
import { chainPem, createCert, createIntermediate, createLeaf } from '../fixtures/certs.js';
import { assertJsonError, assertStatus } from '../helpers/assert.js';
import { plainRequest, rawExchange, startRawTlsServer, type RawTlsServer } from '../helpers/clients.js';
import { closedPort, runSigil, setupTrustDomain, sidecarConfig, sleep, tempDir, writeConfig, type RunningSigil } from '../helpers/env.js';
import { metrics, metricSum } from '../helpers/observe.js';
import { startEchoUpstream, type EchoReply, type EchoUpstream } from '../helpers/upstream.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_C = 'spiffe://example.org/agent/c';
const ID_VIA_INTER = 'spiffe://example.org/agent/b-intermediate';

let upstream: EchoUpstream;
let sidecarA: RunningSigil;
let sidecarADenied: RunningSigil;
let sidecarB: RunningSigil;
const raw: Record<string, RawTlsServer> = {};

t.before(async () => {
  const dir = await tempDir(t, 'sigil-outbound-');
  const [example, rogue] = await Promise.all([setupTrustDomain(dir, 'example.org'), setupTrustDomain(dir, 'example.org', 'rogue')]);
  upstream = await startEchoUpstream(t);

  const now = Date.now();
  const selfSigned = await createCert({ role: 'Impostor B', uris: [ID_B], ca: false, keyUsage: ['digitalSignature'] });
  const fromRogue = await rogue.leaf(ID_B);
  const expired = await example.leaf(ID_B, { notBefore: new Date(now - 2 * 86_400_000), notAfter: new Date(now - 86_400_000) });
  const agentC = await example.leaf(ID_C);
  const inter = await createIntermediate(example.ca, { trustDomain: 'example.org' });
  const viaInter = await createLeaf(inter, ID_VIA_INTER);
  raw.selfSigned = await startRawTlsServer(t, selfSigned.pem, selfSigned.keyPem);
  raw.rogue = await startRawTlsServer(t, fromRogue.pem, fromRogue.keyPem);
  raw.expired = await startRawTlsServer(t, expired.pem, expired.keyPem);
  raw.agentC = await startRawTlsServer(t, agentC.pem, agentC.keyPem);
  raw.viaInter = await startRawTlsServer(t, chainPem(viaInter, inter), viaInter.keyPem, { respond: true });
  // A genuine B SVID, but the server only speaks TLS 1.0/1.1.
  const legacyB = await example.leaf(ID_B);
  raw.legacy = await startRawTlsServer(t, legacyB.pem, legacyB.keyPem, {
    respond: true,
    tls: { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' },
  });

  const bCfg = await writeConfig(
    dir,
    'b.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: example.caDir, spiffeId: ID_B, ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
    }),
  );
  sidecarB = await runSigil(t, bCfg);
  const dead = await closedPort();
  const routes = [
    { host: 'agent-b', address: sidecarB.inbound, spiffeId: ID_B },
    { host: 'Pattern-OK', address: sidecarB.inbound, spiffeId: 'spiffe://example.org/agent/*' },
    { host: 'pattern-bad', address: sidecarB.inbound, spiffeId: 'spiffe://example.org/other/*' },
    { host: 'wrong-id', address: sidecarB.inbound, spiffeId: ID_C },
    { host: 'port-only:8080', address: sidecarB.inbound, spiffeId: ID_B },
    { host: 'self-signed', address: raw.selfSigned.address, spiffeId: ID_B },
    { host: 'rogue-ca', address: raw.rogue.address, spiffeId: ID_B },
    { host: 'expired', address: raw.expired.address, spiffeId: ID_B },
    { host: 'not-allowed', address: raw.agentC.address, spiffeId: ID_C },
    { host: 'via-intermediate', address: raw.viaInter.address, spiffeId: ID_VIA_INTER },
    { host: 'closed', address: `127.0.0.1:${dead}`, spiffeId: ID_B },
    { host: 'legacy-tls', address: raw.legacy.address, spiffeId: ID_B },
  ];
  const [aCfg, a2Cfg] = await Promise.all([
    writeConfig(
      dir,
      'a.yaml',
      sidecarConfig({
        trustDomain: 'example.org',
        identity: { dev: { caDir: example.caDir, spiffeId: ID_A, ttl: '15m' } },
        outbound: { listen: '127.0.0.1:0', routes },
        policy: { allow: [ID_B, ID_VIA_INTER] },
      }),
    ),
    writeConfig(
      dir,
      'a-denied.json',
      sidecarConfig({
        trustDomain: 'example.org',
        identity: { dev: { caDir: example.caDir, spiffeId: ID_A, ttl: '15m' } },
        outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: sidecarB.inbound, spiffeId: ID_B }] },
        policy: { allow: ['spiffe://example.org/agent/someone-else'] },
      }),
    ),
  ]);
  [sidecarA, sidecarADenied] = await Promise.all([runSigil(t, aCfg), runSigil(t, a2Cfg)]);
});

const viaA = (host: string, path = '/', extra: Partial<Parameters<typeof plainRequest>[0]> = {}) =>
  plainRequest({ address: sidecarA.outbound, path, headers: { host }, ...extra });

t.test('A → B over HTTP, routed by the Host header', async (t) => {
  const r = await viaA('agent-b', '/via-host?q=1', { method: 'POST', body: 'payload', headers: { host: 'agent-b', 'content-type': 'text/plain' } });
  assertStatus(t, r, 'Host routing');
  const seen = r.json as EchoReply;
  t.equal(seen.method, 'POST');
  t.equal(seen.url, '/via-host?q=1', 'path and query preserved');
  t.equal(seen.headers['x-sigil-peer-id'], ID_A, 'B verified A');
  t.match(seen.headers['x-forwarded-client-cert'], new RegExp(`^By=${ID_B};Hash=[0-9a-f]{64};URI=${ID_A}$`));
  const caseInsensitive = await viaA('AGENT-B:1234', '/upper');
  assertStatus(t, caseInsensitive, 'route host matches case-insensitively, port ignored');
});

t.test('A → B over HTTP as a forward proxy (absolute-form URI)', async (t) => {
  const r = await plainRequest({ address: sidecarA.outbound, path: 'http://agent-b/absolute?x=y' });
  assertStatus(t, r, 'absolute-form');
  t.equal((r.json as EchoReply).url, '/absolute?x=y', 'rewritten to origin-form');
  t.equal((r.json as EchoReply).headers['x-sigil-peer-id'], ID_A);
  const https = await plainRequest({ address: sidecarA.outbound, path: 'https://agent-b/' });
  assertJsonError(t, https, 'https:// target', 400, 'bad_request', 'bad_request');
});

t.test('keep-alive: several requests reuse connections, all succeed', async (t) => {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const ports = new Set<number>();
  const before = upstream.connections;
  for (let i = 0; i < 8; i++) {
    const r = await viaA('agent-b', `/keepalive/${i}`, { agent });
    assertStatus(t, r, `request ${i}`);
    if (i > 0) t.ok(r.reusedSocket, `request ${i} reused the agent → A connection`);
    if (r.localPort) ports.add(r.localPort);
  }
  t.equal(ports.size, 1, 'one agent → A connection for all requests');
  const seenPorts = new Set(upstream.requests.filter((q) => q.url.startsWith('/keepalive/')).map((q) => q.remotePort));
  t.ok(seenPorts.size <= 2, `B → upstream connections reused (${seenPorts.size} for 8 requests)`);
  t.ok(upstream.connections - before <= 2, 'no connection per request at the upstream');
});

t.test('an idle A → B connection outlives a 6 s pause: no new mTLS handshake', async (t) => {
  const handshakes = async (): Promise<number> => metricSum(await metrics(sidecarB), 'sigil_tls_handshakes_total', { reporter: 'inbound', result: 'success' });
  assertStatus(t, await viaA('agent-b', '/idle/before'), 'before the pause');
  const before = await handshakes();
  t.ok(before >= 1, `positive control: B counts the handshakes it verified (${before} so far)`);
  // Longer than Node's default keep-alive (5 s, which the peer's pool would retire after 4 s).
  await sleep(6_000);
  assertStatus(t, await viaA('agent-b', '/idle/after'), 'after the pause');
  t.equal(await handshakes(), before, 'the pooled connection was reused: B verified no new handshake');
});

t.test('WebSocket through both sidecars echoes messages', async (t) => {
  const ws = new WebSocket(`ws://${sidecarA.outbound}/ws`, { headers: { host: 'agent-b' } });
  t.teardown(() => ws.terminate());
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_q, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
  const replies: { echo: string; peer: string }[] = [];
  const got = new Promise<void>((resolve) => {
    ws.on('message', (d) => {
      replies.push(JSON.parse(d.toString()) as { echo: string; peer: string });
      if (replies.length === 3) resolve();
    });
  });
  for (const m of ['one', 'two', 'three']) ws.send(m);
  await got;
  t.same(
    replies.map((r) => r.echo),
    ['one', 'two', 'three'],
    'messages echoed in order',
  );
  t.ok(
    replies.every((r) => r.peer === ID_A),
    'upstream saw the verified caller',
  );
});

function wsRefusal(host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${sidecarA.outbound}/ws`, { headers: { host } });
    ws.once('open', () => {
      ws.terminate();
      reject(new Error('upgrade unexpectedly succeeded'));
    });
    ws.once('unexpected-response', (_q, res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', reject);
  });
}

t.test('route expecting another SPIFFE ID: 502 peer_id_mismatch (HTTP and WebSocket)', async (t) => {
  assertJsonError(t, await viaA('wrong-id', '/x'), 'exact ID mismatch', 502, 'bad_gateway', 'peer_id_mismatch');
  const ws = await wsRefusal('wrong-id');
  t.equal(ws.status, 502, 'WebSocket upgrade refused with 502');
  t.match(JSON.parse(ws.body), { reason: 'peer_id_mismatch' });
  t.equal(upstream.requests.filter((q) => q.headers.host === 'wrong-id').length, 0, 'nothing reached B’s upstream');
});

t.test('pattern routes: agent/* matches B, other/* does not', async (t) => {
  const ok = await viaA('pattern-ok', '/pattern');
  assertStatus(t, ok, 'spiffe://example.org/agent/*');
  assertJsonError(t, await viaA('pattern-bad', '/pattern'), 'spiffe://example.org/other/*', 502, 'bad_gateway', 'peer_id_mismatch');
});

t.test('route host with a port matches only that port', async (t) => {
  assertStatus(t, await viaA('port-only:8080', '/port'), 'port-only:8080');
  assertJsonError(t, await viaA('port-only:9090', '/port'), 'port-only:9090', 403, 'forbidden', 'no_route');
  assertJsonError(t, await viaA('port-only', '/port'), 'port-only (no port)', 403, 'forbidden', 'no_route');
});

t.test('server presenting an untrusted certificate: 502 peer_untrusted, zero bytes sent to it', async (t) => {
  for (const [host, server] of [
    ['self-signed', raw.selfSigned],
    ['rogue-ca', raw.rogue],
    ['expired', raw.expired],
  ] as const) {
    const r = await viaA(host, '/secret-path', { method: 'POST', body: 'secret body' });
    assertJsonError(t, r, host, 502, 'bad_gateway', 'peer_untrusted');
    t.ok(server!.connections >= 1, `${host}: A did dial it`);
    await sleep(50);
    t.equal(server!.bytesReceived, 0, `${host}: the server received zero HTTP bytes`);
  }
});

t.test('server that only offers TLS 1.1: refused, nothing sent', async (t) => {
  const r = await viaA('legacy-tls', '/legacy', { method: 'POST', body: 'secret' });
  if (!r.gotHttpResponse) throw new Error(`expected a 502, got no response: ${r.error}`);
  t.equal(r.status, 502, `502 (${r.body})`);
  t.match(r.json, { error: 'bad_gateway', reason: /^peer_(unreachable|untrusted)$/ }, 'JSON refusal');
  t.ok(raw.legacy!.connections >= 1, 'A did dial it');
  await sleep(50);
  t.equal(raw.legacy!.bytesReceived, 0, 'zero HTTP bytes sent over TLS 1.1');
});

t.test('server SVID issued by an intermediate (chain presented) is accepted', async (t) => {
  const r = await viaA('via-intermediate', '/inter');
  assertStatus(t, r, 'intermediate-issued server SVID');
  if (r.gotHttpResponse) t.equal(r.body, 'raw-server');
});

t.test('unknown route host: 403 no_route (HTTP and WebSocket)', async (t) => {
  assertJsonError(t, await viaA('nobody-home', '/x'), 'unknown host', 403, 'forbidden', 'no_route');
  assertJsonError(t, await plainRequest({ address: sidecarA.outbound, path: 'http://nobody-home/x' }), 'unknown absolute URI', 403, 'forbidden', 'no_route');
  const ws = await wsRefusal('nobody-home');
  t.equal(ws.status, 403);
  t.match(JSON.parse(ws.body), { reason: 'no_route' });
});

t.test('route to a closed port: 502 peer_unreachable', async (t) => {
  assertJsonError(t, await viaA('closed', '/x'), 'closed port', 502, 'bad_gateway', 'peer_unreachable');
});

t.test('egress allow list not including the server: 403 policy_denied, nothing sent', async (t) => {
  const before = upstream.requests.length;
  assertJsonError(
    t,
    await plainRequest({ address: sidecarADenied.outbound, path: '/denied', headers: { host: 'agent-b' } }),
    'A2 → B (B not allowed)',
    403,
    'forbidden',
    'policy_denied',
  );
  t.equal(upstream.requests.length, before, 'nothing reached B’s upstream');
  // Same rule on the main A: a verified, route-matching server that the allow list omits.
  assertJsonError(t, await viaA('not-allowed', '/x', { method: 'POST', body: 'secret' }), 'A → agent/c (not allowed)', 403, 'forbidden', 'policy_denied');
  await sleep(50);
  t.equal(raw.agentC!.bytesReceived, 0, 'the denied server received zero HTTP bytes');
  // Positive control on the same listener: an allowed peer still works.
  assertStatus(t, await viaA('agent-b', '/still-ok'), 'allowed peer after denials');
});

t.test('hostile input to the outbound listener', async (t) => {
  assertJsonError(t, await viaA('agent-b', '/big', { headers: { host: 'agent-b', 'x-big': 'a'.repeat(20 * 1024) } }), 'oversized headers', 431, 'headers_too_large', 'headers_too_large');
  const connect = await rawExchange(sidecarA.outbound, 'CONNECT agent-b:443 HTTP/1.1\r\nHost: agent-b:443\r\n\r\n');
  t.match(connect.received, /^HTTP\/1\.1 405 /, 'CONNECT refused with 405');
  t.ok(connect.closedByPeer, 'and the connection closed');
  const garbage = await rawExchange(sidecarA.outbound, '\x00\x01garbage\r\n\r\n');
  t.match(garbage.received, /^(HTTP\/1\.1 400 |)/, 'garbage: 400 or closed');
  t.ok(garbage.closedByPeer, 'garbage: connection closed');
  assertStatus(t, await viaA('agent-b', '/after'), 'still serving');
  t.equal(sidecarA.proc.child.exitCode, null, 'process still running');
});
