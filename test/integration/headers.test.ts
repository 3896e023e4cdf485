// Header hygiene at the trust boundary, on real `sigil run` processes: a caller can never forge
// the identity headers the local agent relies on, and hop-by-hop headers stop at each hop —
// both when calling a sidecar's inbound port directly and through the full pair
// (agent → outbound sidecar A → inbound sidecar B → upstream).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Agent as HttpAgent } from 'node:http';
import t from 'tap';
import WebSocket from 'ws';
import type { Issued } from '../fixtures/certs.js';
import { assertStatus, type Asserts } from '../helpers/assert.js';
import { certHash, mtlsRequest, plainRequest } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, writeConfig, type RunningSigil } from '../helpers/env.js';
import { startEchoUpstream, type EchoReply, type EchoUpstream } from '../helpers/upstream.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';

const FORGED = {
  'X-Forwarded-Client-Cert': `By=${ID_B};Hash=${'0'.repeat(64)};URI=spiffe://example.org/admin`,
  'x-sigil-peer-id': 'spiffe://example.org/admin',
  'X-Sigil-Delegation': JSON.stringify({ sub: 'user:root', act: { sub: 'spiffe://example.org/admin' }, scope: '*' }),
  'X-SiGiL-Anything': 'forged-anything',
  'X-SIGIL-PEER-ID-2': 'forged-suffix',
};

const HOP_BY_HOP = {
  Connection: 'x-custom, X-Other-Custom',
  'x-custom': 'connection-scoped',
  'x-other-custom': 'connection-scoped-too',
  'keep-alive': 'timeout=5, max=100',
  te: 'trailers',
  'proxy-authorization': 'Basic c2VjcmV0OnNlY3JldA==',
  'proxy-connection': 'keep-alive',
};

let upstream: EchoUpstream;
let sidecarA: RunningSigil;
let sidecarB: RunningSigil;
let leafA: Issued;

t.before(async () => {
  const dir = await tempDir(t, 'sigil-headers-');
  const example = await setupTrustDomain(dir, 'example.org');
  upstream = await startEchoUpstream(t);
  // A runs from files so the test knows the exact leaf it presents (and the XFCC hash of it).
  leafA = await example.leaf(ID_A);
  await writeFile(join(dir, 'a-svid.pem'), leafA.pem);
  await writeFile(join(dir, 'a-svid.key'), leafA.keyPem);
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
  const aCfg = await writeConfig(
    dir,
    'a.json',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { files: { cert: 'a-svid.pem', key: 'a-svid.key', bundle: example.bundlePem } },
      outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: sidecarB.inbound, spiffeId: ID_B }] },
      policy: { allow: [ID_B] },
    }),
  );
  sidecarA = await runSigil(t, aCfg);
});

function checkIdentityHeaders(t: Asserts, seen: EchoReply, what: string): void {
  t.equal(seen.headers['x-sigil-peer-id'], ID_A, `${what}: x-sigil-peer-id is the verified caller`);
  t.equal(seen.headers['x-forwarded-client-cert'], `By=${ID_B};Hash=${certHash(leafA.der)};URI=${ID_A}`, `${what}: XFCC set by the sidecar`);
  t.equal(seen.headers['x-sigil-delegation'], undefined, `${what}: forged x-sigil-delegation removed`);
  t.equal(seen.headers['x-sigil-anything'], undefined, `${what}: forged x-sigil-anything removed`);
  t.equal(seen.headers['x-sigil-peer-id-2'], undefined, `${what}: any x-sigil-* removed`);
  // On the wire, exactly one copy of each identity header, and no forged value anywhere.
  const names = seen.rawHeaders.filter((_, i) => i % 2 === 0).map((n) => n.toLowerCase());
  t.equal(names.filter((n) => n === 'x-sigil-peer-id').length, 1, `${what}: one x-sigil-peer-id line`);
  t.equal(names.filter((n) => n === 'x-forwarded-client-cert').length, 1, `${what}: one XFCC line`);
  t.same(names.filter((n) => n.startsWith('x-sigil-')).sort(), ['x-sigil-peer-id'], `${what}: no other x-sigil-* header`);
  const values = seen.rawHeaders.filter((_, i) => i % 2 === 1).join('\n');
  t.notMatch(values, /forged|admin|user:root|0{64}/, `${what}: no forged value reached the upstream`);
}

function checkHopByHop(t: Asserts, seen: EchoReply, what: string): void {
  for (const name of ['x-custom', 'x-other-custom', 'keep-alive', 'te', 'proxy-authorization', 'proxy-connection']) {
    t.equal(seen.headers[name], undefined, `${what}: ${name} not forwarded`);
  }
  t.notMatch(String(seen.headers['connection'] ?? ''), /custom/i, `${what}: Connection does not carry the caller's tokens`);
  t.equal(seen.headers['x-end-to-end'], 'kept', `${what}: end-to-end headers are forwarded (control)`);
}

t.test('direct mTLS to the inbound port: forged identity headers are replaced', async (t) => {
  const r = await mtlsRequest({
    address: sidecarB.inbound,
    certPem: leafA.pem,
    keyPem: leafA.keyPem,
    path: '/forged',
    headers: { ...FORGED, 'x-end-to-end': 'kept', 'x-sigil-peer-id': [FORGED['x-sigil-peer-id'], 'spiffe://example.org/second'] },
  });
  assertStatus(t, r, 'direct');
  checkIdentityHeaders(t, r.json as EchoReply, 'direct');
});

t.test('direct mTLS to the inbound port: hop-by-hop headers are not forwarded', async (t) => {
  const r = await mtlsRequest({
    address: sidecarB.inbound,
    certPem: leafA.pem,
    keyPem: leafA.keyPem,
    path: '/hop',
    headers: { ...HOP_BY_HOP, 'x-end-to-end': 'kept' },
  });
  assertStatus(t, r, 'direct hop-by-hop');
  checkHopByHop(t, r.json as EchoReply, 'direct');
});

t.test('through the pair: forged identity headers never reach the upstream', async (t) => {
  const r = await plainRequest({ address: sidecarA.outbound, path: '/pair-forged', headers: { host: 'agent-b', ...FORGED, 'x-end-to-end': 'kept' } });
  assertStatus(t, r, 'pair');
  checkIdentityHeaders(t, r.json as EchoReply, 'pair');
});

t.test('through the pair: hop-by-hop headers stop at each hop', async (t) => {
  const r = await plainRequest({ address: sidecarA.outbound, path: '/pair-hop', headers: { host: 'agent-b', ...HOP_BY_HOP, 'x-end-to-end': 'kept' } });
  assertStatus(t, r, 'pair hop-by-hop');
  checkHopByHop(t, r.json as EchoReply, 'pair');
});

t.test('through the pair: a WebSocket upgrade with forged headers gets only the verified identity', async (t) => {
  const ws = new WebSocket(`ws://${sidecarA.outbound}/ws-forged`, { headers: { host: 'agent-b', ...FORGED } });
  t.teardown(() => ws.terminate());
  const reply = await new Promise<{ echo: string; peer: string; xfcc: string }>((resolve, reject) => {
    ws.once('open', () => ws.send('hello'));
    ws.once('message', (d) => resolve(JSON.parse(d.toString()) as { echo: string; peer: string; xfcc: string }));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
  t.equal(reply.echo, 'hello');
  t.equal(reply.peer, ID_A, 'upstream WebSocket sees the verified caller');
  t.equal(reply.xfcc, `By=${ID_B};Hash=${certHash(leafA.der)};URI=${ID_A}`);
  const seen = upstream.requests.find((q) => q.kind === 'websocket' && q.url === '/ws-forged');
  t.ok(seen, 'upgrade reached the upstream');
  if (seen) checkIdentityHeaders(t, { method: seen.method, url: seen.url, headers: seen.headers, rawHeaders: seen.rawHeaders }, 'websocket');
});

t.test('a Connection header naming the identity headers cannot remove them', async (t) => {
  const headers = { Connection: 'x-sigil-peer-id, x-forwarded-client-cert, x-custom', 'x-custom': 'c', 'x-end-to-end': 'kept' };
  const direct = await mtlsRequest({ address: sidecarB.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, path: '/conn-strip', headers });
  assertStatus(t, direct, 'direct');
  const seenDirect = direct.json as EchoReply;
  t.equal(seenDirect.headers['x-sigil-peer-id'], ID_A, 'direct: x-sigil-peer-id still set');
  t.equal(seenDirect.headers['x-forwarded-client-cert'], `By=${ID_B};Hash=${certHash(leafA.der)};URI=${ID_A}`, 'direct: XFCC still set');
  t.equal(seenDirect.headers['x-custom'], undefined, 'direct: listed ordinary header removed (control)');

  const pair = await plainRequest({ address: sidecarA.outbound, path: '/conn-strip-pair', headers: { host: 'agent-b', ...headers } });
  assertStatus(t, pair, 'pair');
  const seenPair = pair.json as EchoReply;
  t.equal(seenPair.headers['x-sigil-peer-id'], ID_A, 'pair: x-sigil-peer-id still set');
  t.equal(seenPair.headers['x-forwarded-client-cert'], `By=${ID_B};Hash=${certHash(leafA.der)};URI=${ID_A}`, 'pair: XFCC still set');
});

t.test('a WebSocket upgrade whose Connection header names the identity headers still carries them', async (t) => {
  // Raw upgrade request over mTLS straight to B, so the Connection header is exactly ours.
  const { connect } = await import('node:tls');
  const { splitAddress } = await import('../helpers/env.js');
  const { host, port } = splitAddress(sidecarB.inbound);
  const head = await new Promise<string>((resolve, reject) => {
    const s = connect({ host, port, cert: leafA.pem, key: leafA.keyPem, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      s.write(
        'GET /ws-conn-strip HTTP/1.1\r\nHost: agent-b\r\nUpgrade: websocket\r\nConnection: Upgrade, x-sigil-peer-id, x-forwarded-client-cert\r\n' +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
    });
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', reject);
    s.setTimeout(5000, () => s.destroy(new Error('timeout')));
  });
  t.match(head, /^HTTP\/1\.1 101/, 'upgrade accepted');
  const seen = upstream.requests.find((q) => q.kind === 'websocket' && q.url === '/ws-conn-strip');
  t.ok(seen, 'upgrade reached the upstream');
  t.equal(seen?.headers['x-sigil-peer-id'], ID_A, 'x-sigil-peer-id still set on the upgrade');
  t.equal(seen?.headers['x-forwarded-client-cert'], `By=${ID_B};Hash=${certHash(leafA.der)};URI=${ID_A}`, 'XFCC still set on the upgrade');
});

t.test('the client connection\'s own keep-alive choice is honoured, not the upstream\'s', async (t) => {
  // Node's client sends `Connection: close` when no agent is used.
  const closing = await plainRequest({ address: sidecarA.outbound, path: '/conn-close', headers: { host: 'agent-b' } });
  assertStatus(t, closing, 'Connection: close request');
  t.equal(closing.headers.connection, 'close', 'outbound answers Connection: close');
  const direct = await mtlsRequest({ address: sidecarB.inbound, certPem: leafA.pem, keyPem: leafA.keyPem, path: '/conn-close-direct', headers: { connection: 'close' } });
  assertStatus(t, direct, 'direct Connection: close request');
  t.equal(direct.headers.connection, 'close', 'inbound answers Connection: close');

  const agent = new HttpAgent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const kept = await plainRequest({ address: sidecarA.outbound, path: '/conn-keep', headers: { host: 'agent-b' }, agent });
  assertStatus(t, kept, 'keep-alive request (positive control)');
  t.equal(kept.headers.connection, 'keep-alive');
});
