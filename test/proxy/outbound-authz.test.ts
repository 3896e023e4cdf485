// Per-request egress authorization on kept-alive connections, in process: an OutboundProxy with
// a recording test authorizer dials a real `sigil run` server sidecar (B). The authorizer allows
// `connect` but denies outbound `http` to paths starting with /deny, so every request — not only
// the first on a connection, and also `Expect: 100-continue` requests and WebSocket upgrades,
// which http-proxy handles on different paths — must be checked before a byte reaches B.
import { mkdir, writeFile } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import type { Authorizer, AuthzRequest, Decision, ReasonCode } from '../../src/authz/index.js';
import { createDevCa, DevIssuer, svidFromPem, type IdentitySnapshot } from '../../src/identity/index.js';
import { OutboundProxy } from '../../src/proxy/index.js';
import { BundleSet, SpiffeId, TrustDomain, X509Bundle } from '../../src/spiffe/index.js';
import { silentLogger } from '../../src/telemetry/index.js';
import { PeerVerifier } from '../../src/tls/index.js';
import { assertJsonError, assertStatus } from '../helpers/assert.js';
import { plainRequest, type HttpResult } from '../helpers/clients.js';
import { runSigil, sidecarConfig, splitAddress, tempDir, writeConfig } from '../helpers/env.js';
import { rawTcp } from '../helpers/raw.js';
import { startEchoUpstream, type EchoUpstream } from '../helpers/upstream.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';

interface Call {
  action: string;
  direction: string;
  path?: string;
  allowed: boolean;
}

/** Allows everything except outbound `http` to a path starting with /deny; records every call. */
class TestAuthorizer implements Authorizer {
  readonly kind = 'test';
  readonly version = 'test-1';
  readonly calls: Call[] = [];

  authorize(request: AuthzRequest): Decision {
    const path = request.http?.path;
    const deny = request.direction === 'outbound' && request.action === 'http' && (path ?? '').startsWith('/deny');
    this.calls.push({ action: request.action, direction: request.direction, path, allowed: !deny });
    const reason: ReasonCode = deny ? 'policy_denied' : 'allowed';
    const decision = { allowed: !deny, reason, policies: [deny ? 'test-deny' : 'test-allow'], wouldDeny: false, policyVersion: 'test-1', request };
    return decision;
  }

  outboundHttpPaths(): (string | undefined)[] {
    return this.calls.filter((c) => c.direction === 'outbound' && c.action === 'http').map((c) => c.path);
  }

  connects(): number {
    return this.calls.filter((c) => c.direction === 'outbound' && c.action === 'connect').length;
  }
}

let upstream: EchoUpstream;
let outboundAddress: string;
const authz = new TestAuthorizer();

t.before(async () => {
  const dir = await tempDir(t, 'sigil-egress-');
  const td = TrustDomain.parse(TD);
  const ca = await createDevCa(td);
  const caDir = join(dir, 'ca');
  await mkdir(caDir, { recursive: true });
  await Promise.all([writeFile(join(caDir, 'ca.pem'), ca.certPem), writeFile(join(caDir, 'ca.key'), ca.keyPem, { mode: 0o600 }), writeFile(join(caDir, 'bundle.pem'), ca.certPem)]);

  upstream = await startEchoUpstream(t);
  const bCfg = await writeConfig(
    dir,
    'b.yaml',
    sidecarConfig({
      trustDomain: TD,
      identity: { dev: { caDir, spiffeId: ID_B, ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
    }),
  );
  const b = await runSigil(t, bCfg);

  // Sidecar A, in process, with the same CA.
  const issued = await (await DevIssuer.fromPem(td, ca)).issue(SpiffeId.parse(ID_A), 15 * 60_000);
  const snapshot: IdentitySnapshot = {
    svid: svidFromPem(issued.certChainPem, issued.privateKeyPem, td),
    bundles: new BundleSet([X509Bundle.fromPem(td, ca.certPem)]),
    generation: 1,
  };
  const options = {
    listen: { host: '127.0.0.1', port: 0 },
    routes: [{ host: 'agent-b', address: splitAddress(b.inbound), spiffeId: ID_B }],
    identity: () => snapshot,
    decide: (request: AuthzRequest) => authz.authorize(request),
    inspectCalls: () => true,
    observe: () => {},
    observeHandshake: () => {},
    verifier: new PeerVerifier(),
    logger: silentLogger,
  };
  const proxy = new OutboundProxy(options);
  const bound: AddressInfo = await proxy.start();
  outboundAddress = `127.0.0.1:${bound.port}`;
  t.teardown(() => proxy.stop(200));
});

const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
t.teardown(() => agent.destroy());

const viaA = (path: string): Promise<HttpResult> => plainRequest({ address: outboundAddress, path, headers: { host: 'agent-b' }, agent });
const upstreamSaw = (path: string): number => upstream.requests.filter((q) => q.url === path).length;

/** A POST with `Expect: 100-continue` over the keep-alive agent: the body follows the interim 100. */
function expectContinue(path: string, body: string): Promise<HttpResult & { sawContinue?: boolean }> {
  return new Promise((resolve) => {
    let sawContinue = false;
    const req = httpRequest({
      host: '127.0.0.1',
      port: splitAddress(outboundAddress).port,
      method: 'POST',
      path,
      agent,
      headers: { host: 'agent-b', expect: '100-continue', 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) },
    });
    req.setTimeout(8_000, () => req.destroy(new Error('timeout')));
    req.on('continue', () => {
      sawContinue = true;
      req.end(body);
    });
    req.on('response', (res) => {
      if (!req.writableEnded) req.end();
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ gotHttpResponse: true, status: res.statusCode ?? 0, headers: res.headers, body: text, json, reusedSocket: req.reusedSocket, sawContinue });
      });
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ gotHttpResponse: false, error: err.message, code: err.code }));
    req.flushHeaders();
  });
}

t.test('egress authorization runs for every request on a kept-alive connection', async (t) => {
  const ok = await viaA('/ok');
  assertStatus(t, ok, '/ok (positive control)');
  t.equal(upstreamSaw('/ok'), 1, '/ok reached the upstream behind B');
  const connectsAfterOk = authz.connects();
  t.ok(connectsAfterOk >= 1, 'the egress connect check ran when A dialed B');

  const denied = await viaA('/deny-1');
  assertJsonError(t, denied, '/deny-1 on the same connection', 403, 'forbidden', 'policy_denied');
  t.ok(denied.gotHttpResponse && denied.reusedSocket, '/deny-1 went over the same kept-alive agent → A connection');
  t.equal(authz.connects(), connectsAfterOk, '/deny-1 was bound to the pooled A → B connection (no new dial)');
  t.equal(upstreamSaw('/deny-1'), 0, 'the upstream behind B never saw /deny-1');

  const cont = await expectContinue('/deny-2', 'secret body');
  assertJsonError(t, cont, '/deny-2 with Expect: 100-continue', 403, 'forbidden', 'policy_denied');
  t.equal(upstreamSaw('/deny-2'), 0, 'the upstream behind B never saw /deny-2');

  const ok2 = await viaA('/ok2');
  assertStatus(t, ok2, '/ok2 afterwards (positive control)');
  t.equal(upstreamSaw('/ok2'), 1, '/ok2 reached the upstream');

  // Positive control for the Expect path: an allowed 100-continue request goes through.
  const contOk = await expectContinue('/ok-continue', 'fine body');
  assertStatus(t, contOk, '/ok-continue with Expect: 100-continue');
  t.equal(upstreamSaw('/ok-continue'), 1, '/ok-continue reached the upstream');

  t.same(authz.outboundHttpPaths(), ['/ok', '/deny-1', '/deny-2', '/ok2', '/ok-continue'], 'an outbound http decision for every request, in order');
});

const upgrade = (path: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: agent-b\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
  `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

t.test('a WebSocket upgrade to a denied path is refused with 403; an allowed one switches protocols', async (t) => {
  const before = authz.outboundHttpPaths().length;
  const denied = await rawTcp(outboundAddress);
  t.teardown(() => denied.destroy());
  const r = await denied.request(upgrade('/deny-ws'));
  if (r.kind !== 'response') t.fail(`/deny-ws: no response (${r.kind})`);
  else {
    t.equal(r.status, 403, `/deny-ws: 403 (${r.body})`);
    t.match(JSON.parse(r.body), { error: 'forbidden', reason: 'policy_denied' }, '/deny-ws: JSON policy_denied');
  }
  t.equal(upstream.requests.filter((q) => q.url === '/deny-ws').length, 0, 'the upstream behind B never saw /deny-ws');

  const allowed = await rawTcp(outboundAddress);
  t.teardown(() => allowed.destroy());
  const ok = await allowed.request(upgrade('/ok-ws'));
  t.equal(ok.kind === 'response' && ok.status, 101, '/ok-ws: 101 Switching Protocols (positive control)');
  t.equal(upstream.requests.filter((q) => q.url === '/ok-ws' && q.kind === 'websocket').length, 1, 'the upstream accepted the /ok-ws WebSocket');
  t.same(authz.outboundHttpPaths().slice(before), ['/deny-ws', '/ok-ws'], 'both upgrades were authorized as outbound http');
});
