// Signed WebSocket streams through a real sidecar pair: route `signFrames: true` on A, inbound
// `requireSignedFrames: true` on B. Every frame on the A══B hop is an envelope signed by the
// sending sidecar; the agents on both ends see plain frames. An attacker holding a valid SVID
// of the trust domain (allowed to connect) dials B directly and tries unsigned, mis-signed and
// replayed frames: each closes the stream with 1008 and the reason, and nothing reaches the
// upstream agent. Each refusal has a positive control.
import t from 'tap';
import { createEnvelopeSigner } from '../../src/bus/envelope/index.js';
import type { Issued } from '../fixtures/certs.js';
import { startAppUpstream, type AppUpstream } from '../helpers/app-upstream.js';
import { svidOf } from '../helpers/envelope.js';
import { openWs, wsRefusal, type WsClient } from '../helpers/observe.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_EVIL = 'spiffe://example.org/agent/evil';
const ID_C = 'spiffe://example.org/agent/c';

let td: TrustDomainFixture;
let upstream: AppUpstream;
let a: RunningSigil;
let b: RunningSigil;
let evilLeaf: Issued;


t.before(async () => {
  const dir = await tempDir(t);
  td = await setupTrustDomain(dir, TD);
  upstream = await startAppUpstream(t);
  b = await runSigil(
    t,
    await writeConfig(
      dir,
      'b.yaml',
      sidecarConfig({
        trustDomain: TD,
        identity: { dev: { caDir: td.caDir, spiffeId: ID_B, ttl: '15m' } },
        inbound: { listen: '127.0.0.1:0', upstream: upstream.url, requireSignedFrames: true },
        policy: { allow: [ID_A, ID_EVIL, ID_C] },
      }),
    ),
  );
  a = await runSigil(
    t,
    await writeConfig(
      dir,
      'a.yaml',
      sidecarConfig({
        trustDomain: TD,
        identity: { dev: { caDir: td.caDir, spiffeId: ID_A, ttl: '15m' } },
        outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: b.inbound, spiffeId: ID_B, signFrames: true }] },
        policy: { allow: [ID_B] },
      }),
    ),
  );
  evilLeaf = await td.leaf(ID_EVIL);
});

/** A direct mTLS WebSocket to B as the attacker, announcing signed frames. */
const asEvil = (path: string, announce = true): Promise<WsClient> =>
  openWs(`wss://${b.inbound}${path}`, { cert: evilLeaf.pem, key: evilLeaf.keyPem, rejectUnauthorized: false, headers: announce ? { 'x-sigil-signed-frames': 'v1' } : {} });

t.test('agent → A ══signed══▶ B → upstream: plain frames at both ends, both directions', async (t) => {
  const ws = await openWs(`ws://${a.outbound}/chat`, { headers: { host: 'agent-b' } });
  t.teardown(() => ws.ws.close());
  ws.ws.send('hello');
  const echo = await ws.next();
  t.equal(echo.data.toString(), 'hello', 'the echo comes back plain');
  t.equal(echo.isBinary, false);
  ws.ws.send(Buffer.from([1, 2, 3]), { binary: true });
  const bin = await ws.next();
  t.same([...bin.data], [1, 2, 3], 'binary frames round-trip');
  t.equal(bin.isBinary, true);
  const seen = upstream.messages.filter((m) => m.path === '/chat');
  t.same(
    seen.map((m) => (m.isBinary ? [...m.data] : m.data.toString())),
    ['hello', [1, 2, 3]],
    'the upstream agent received plain frames, never envelopes',
  );
  t.equal(upstream.wsConnections.find((c) => c.path === '/chat')?.headers['x-sigil-peer-id'], ID_A, 'with the verified peer');
  t.notOk(upstream.wsConnections.find((c) => c.path === '/chat')?.headers['x-sigil-signed-frames'], 'the negotiation header is not passed on');
});

t.test('B refuses a stream that does not announce signed frames', async (t) => {
  const r = await wsRefusal(`wss://${b.inbound}/plain`, { cert: evilLeaf.pem, key: evilLeaf.keyPem, rejectUnauthorized: false });
  t.equal(r.status, 400);
  t.match(r.json, { reason: 'bad_request' });
  t.notOk(upstream.wsConnections.some((c) => c.path === '/plain'), 'never reached the upstream');
});

t.test('attacker frames: valid envelope delivered; unsigned, foreign-signed and replayed ones close the stream', async (t) => {
  const evil = createEnvelopeSigner(svidOf(evilLeaf));
  const frame = (path: string, text: string): string => evil.sign({ subject: `ws:${path}`, data: text, audience: [ID_B] }).jws;

  const good = await asEvil('/evil-ok');
  t.teardown(() => good.ws.close());
  good.ws.send(frame('/evil-ok', 'signed by me'));
  const reply = await good.next();
  t.ok(reply.data.toString().startsWith('eyJ'), 'B answers with a signed envelope (positive control)');
  t.ok(upstream.messages.some((m) => m.path === '/evil-ok' && m.data.toString() === 'signed by me'), 'the upstream got the plain frame');

  const expectClosed = async (path: string, send: string, reason: string): Promise<void> => {
    const ws = await asEvil(path);
    ws.ws.send(send);
    const closed = await ws.closed;
    t.equal(closed.code, 1008, `${path}: closed with 1008`);
    t.equal(closed.reason, reason, `${path}: reason ${reason}`);
    t.notOk(upstream.messages.some((m) => m.path === path), `${path}: nothing reached the upstream`);
  };
  await expectClosed('/unsigned', 'plain text', 'envelope_malformed');
  const cLeaf = await td.leaf(ID_C);
  const c = createEnvelopeSigner(svidOf(cLeaf));
  await expectClosed('/foreign', c.sign({ subject: 'ws:/foreign', data: 'x', audience: [ID_B] }).jws, 'issuer_mismatch');
  await expectClosed('/other-path', frame('/elsewhere', 'x'), 'subject_mismatch');
  await expectClosed('/wrong-aud', evil.sign({ subject: 'ws:/wrong-aud', data: 'x', audience: [ID_C] }).jws, 'audience_mismatch');

  const replay = await asEvil('/replay');
  const once = frame('/replay', 'once');
  replay.ws.send(once);
  await replay.next();
  t.ok(upstream.messages.some((m) => m.path === '/replay' && m.data.toString() === 'once'), 'first copy delivered (positive control)');
  replay.ws.send(once);
  const closed = await replay.closed;
  t.match(closed, { code: 1008, reason: 'replay' }, 'the replayed frame closes the stream');
  t.equal(upstream.messages.filter((m) => m.path === '/replay').length, 1, 'delivered exactly once');
});
