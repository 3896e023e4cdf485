// Metrics on the paths that are easy to get wrong, on real `sigil run` processes:
// agent → sidecar A (outbound) ══mTLS══▶ sidecar B (inbound, Cedar in dry-run) → app upstream.
//   - a WebSocket stream through the pair counts as an open connection on both sides;
//   - a JSON-RPC call the policy would deny (dry-run, so forwarded) is a would_deny request;
//   - an outbound WebSocket upgrade without a route is still recorded;
//   - a request dropped because the peer's SVID expired on a kept-alive connection is
//     response_code "0", reason peer_untrusted — not the 200 Node defaults to;
//   - TCP connections reset before the handshake are counted as failures and do not stop
//     handshake durations from being observed.
// Each has a positive control on the same sidecars.
import { join } from 'node:path';
import t from 'tap';
import { startAppUpstream, type AppUpstream } from '../helpers/app-upstream.js';
import { plainRequest } from '../helpers/clients.js';
import { metricSum, metrics, openWs, wsRefusal } from '../helpers/observe.js';
import { rawTcp, rawTls } from '../helpers/raw.js';
import { runSigil, setupTrustDomain, sidecarConfig, sleep, tempDir, waitUntil, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';
import { writeFile } from 'node:fs/promises';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_T = 'spiffe://example.org/agent/tester';

const POLICY_B = `
@id("connect") permit (principal in TrustDomain::"${TD}", action == Action::"connect", resource == Agent::"${ID_B}");
@id("http") permit (principal in TrustDomain::"${TD}", action == Action::"http", resource == Agent::"${ID_B}");
@id("messages") permit (principal in TrustDomain::"${TD}", action == Action::"websocket.message", resource in TrustDomain::"${TD}");
@id("tools") permit (principal in TrustDomain::"${TD}", action == Action::"mcp.tools/call", resource)
unless { resource == Tool::"drop_table" };
`;

let td: TrustDomainFixture;
let upstream: AppUpstream;
let a: RunningSigil;
let b: RunningSigil;

t.before(async () => {
  const dir = await tempDir(t);
  td = await setupTrustDomain(dir, TD);
  upstream = await startAppUpstream(t);
  await writeFile(join(dir, 'policy-b.cedar'), POLICY_B);
  b = await runSigil(
    t,
    await writeConfig(
      dir,
      'b.yaml',
      sidecarConfig({
        trustDomain: TD,
        identity: { dev: { caDir: td.caDir, spiffeId: ID_B, ttl: '15m' } },
        inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
        policy: { cedar: './policy-b.cedar', mode: 'dry-run' },
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
        outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: b.inbound, spiffeId: ID_B }] },
        policy: { allow: [ID_B] },
      }),
    ),
  );
});

const viaA = (path: string, body?: string): ReturnType<typeof plainRequest> =>
  plainRequest({
    address: a.outbound,
    path,
    method: body === undefined ? 'GET' : 'POST',
    headers: { host: 'agent-b', ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body }),
  });

t.test('a WebSocket stream through the pair is an open connection on both sidecars', async (t) => {
  const ws = await openWs(`ws://${a.outbound}/stream`, { headers: { host: 'agent-b' } });
  t.teardown(() => ws.ws.close());
  ws.ws.send('hello');
  t.equal((await ws.next()).data.toString(), 'hello', 'the stream works (positive control)');
  const outbound = metricSum(await metrics(a), 'sigil_active_connections', { reporter: 'outbound' });
  const inbound = metricSum(await metrics(b), 'sigil_active_connections', { reporter: 'inbound' });
  t.ok(inbound >= 1, `B counts the inbound connection (${inbound})`);
  t.ok(outbound >= 1, `A counts the outbound connection carrying the stream (${outbound})`);
  const status = (await (await fetch(`http://${a.admin}/status`)).json()) as { connections: { outbound: number } };
  t.ok(status.connections.outbound >= 1, '/status agrees');
});

t.test('dry-run: a forwarded JSON-RPC call the policy would deny is a would_deny request', async (t) => {
  const labels = { reporter: 'inbound', request_protocol: 'jsonrpc' };
  const before = await metrics(b);
  const allowed = await viaA('/mcp', '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}');
  t.equal(allowed.gotHttpResponse && allowed.status, 200, 'an allowed call (positive control)');
  const denied = await viaA('/mcp', '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"drop_table"}}');
  t.equal(denied.gotHttpResponse && denied.status, 200, 'dry-run forwards the call the policy denies');
  t.ok(upstream.calls().includes('tools/call:drop_table'), 'the upstream received it');
  const after = (await waitUntil(async () => {
    const s = await metrics(b);
    return metricSum(s, 'sigil_requests_total', labels) - metricSum(before, 'sigil_requests_total', labels) >= 2 ? s : undefined;
  }, 5_000))!;
  const delta = (extra: Record<string, string>): number => metricSum(after, 'sigil_requests_total', { ...labels, ...extra }) - metricSum(before, 'sigil_requests_total', { ...labels, ...extra });
  t.equal(delta({ decision: 'would_deny', reason: 'policy_denied' }), 1, 'the drop_table call is would_deny / policy_denied');
  t.equal(delta({ decision: 'allow', reason: 'allowed' }), 1, 'the search call is allow (positive control)');
});

t.test('an outbound WebSocket upgrade without a route is recorded', async (t) => {
  const before = await metrics(a);
  const refused = await wsRefusal(`ws://${a.outbound}/x`, { headers: { host: 'nowhere' } });
  t.equal(refused.status, 403, 'refused with 403');
  const routed = await openWs(`ws://${a.outbound}/x`, { headers: { host: 'agent-b' } });
  routed.ws.close();
  const labels = { reporter: 'outbound', request_protocol: 'websocket' };
  const after = (await waitUntil(async () => {
    const s = await metrics(a);
    return metricSum(s, 'sigil_requests_total', { ...labels, reason: 'no_route' }) > metricSum(before, 'sigil_requests_total', { ...labels, reason: 'no_route' }) ? s : undefined;
  }, 5_000).catch(() => metrics(a)))!;
  t.equal(
    metricSum(after, 'sigil_requests_total', { ...labels, reason: 'no_route', response_code: '403', decision: 'deny' }) -
      metricSum(before, 'sigil_requests_total', { ...labels, reason: 'no_route', response_code: '403', decision: 'deny' }),
    1,
    'one no_route upgrade, 403, deny',
  );
  t.ok(await waitUntil(async () => metricSum(await metrics(a), 'sigil_requests_total', { ...labels, response_code: '101' }) > metricSum(before, 'sigil_requests_total', { ...labels, response_code: '101' }), 5_000), 'the routed stream was recorded with 101 (positive control)');
});

t.test('a request dropped because the peer SVID expired is response_code "0", peer_untrusted', async (t) => {
  const leaf = await td.leaf(ID_T, { notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 2_500) });
  const conn = await rawTls(b.inbound, { certPem: leaf.pem, keyPem: leaf.keyPem });
  t.teardown(() => conn.destroy());
  const before = await metrics(b);
  const first = await conn.request('GET /while-valid HTTP/1.1\r\nHost: b\r\n\r\n');
  t.equal(first.kind === 'response' && first.status, 200, 'answered while the SVID is valid (positive control)');
  await sleep(Math.max(0, new Date(leaf.cert.validTo).getTime() - Date.now()) + 1_200);
  const second = await conn.request('GET /after-expiry HTTP/1.1\r\nHost: b\r\n\r\n');
  t.equal(second.kind, 'closed', 'the connection is dropped without an answer');
  t.notOk(upstream.requests.some((r) => r.url === '/after-expiry'), 'nothing reached the upstream');
  const labels = { reporter: 'inbound', source_principal: ID_T };
  const after = (await waitUntil(async () => {
    const s = await metrics(b);
    return metricSum(s, 'sigil_requests_total', labels) - metricSum(before, 'sigil_requests_total', labels) >= 2 ? s : undefined;
  }, 5_000))!;
  const delta = (extra: Record<string, string>): number => metricSum(after, 'sigil_requests_total', { ...labels, ...extra }) - metricSum(before, 'sigil_requests_total', { ...labels, ...extra });
  t.equal(delta({ response_code: '0', reason: 'peer_untrusted', decision: 'deny' }), 1, 'the dropped request');
  t.equal(delta({ response_code: '200', decision: 'allow' }), 1, 'only the answered request counts as 200');
});

t.test('TCP connections reset before the handshake: counted as failures; durations still observed', async (t) => {
  const before = await metrics(b);
  for (let i = 0; i < 5; i++) {
    const conn = await rawTcp(b.inbound);
    conn.destroy();
  }
  const leaf = await td.leaf(ID_T);
  const conn = await rawTls(b.inbound, { certPem: leaf.pem, keyPem: leaf.keyPem });
  t.teardown(() => conn.destroy());
  const r = await conn.request('GET /after-probes HTTP/1.1\r\nHost: b\r\n\r\n');
  t.equal(r.kind === 'response' && r.status, 200, 'a real client is served after the probes');
  const after = (await waitUntil(async () => {
    const s = await metrics(b);
    const failures = metricSum(s, 'sigil_tls_handshakes_total', { reporter: 'inbound', result: 'failure' }) - metricSum(before, 'sigil_tls_handshakes_total', { reporter: 'inbound', result: 'failure' });
    return failures >= 5 ? s : undefined;
  }, 5_000))!;
  t.equal(
    metricSum(after, 'sigil_tls_handshakes_total', { reporter: 'inbound', result: 'failure', reason: 'connection_reset' }) -
      metricSum(before, 'sigil_tls_handshakes_total', { reporter: 'inbound', result: 'failure', reason: 'connection_reset' }),
    5,
    'five resets',
  );
  t.equal(
    metricSum(after, 'sigil_tls_handshake_duration_seconds_count', { reporter: 'inbound' }) - metricSum(before, 'sigil_tls_handshake_duration_seconds_count', { reporter: 'inbound' }),
    1,
    'the successful handshake has its duration observed',
  );
});
