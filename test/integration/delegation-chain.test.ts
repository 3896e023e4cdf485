// The whole delegation chain on real processes: user alice → orchestrator → worker → tool.
//   client (alice's user token) → sidecar O (outbound, exchange) ══▶ sidecar W (inbound) → worker app
//   worker app (the token it was handed) → sidecar W (outbound, exchange) ══▶ sidecar T (inbound) → tool
// Each outbound sidecar exchanges the token it is given at a real `sigil broker` (mTLS with its
// SVID) for one addressed to the next hop; each inbound sidecar verifies that the token's
// current actor is its mTLS peer. Every hop narrows the scope; the tool sees sub=alice and the
// full actor chain, with the task id unchanged.
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { initDevIdp, mintDevUserToken } from '../../src/delegation/index.js';
import { startAppUpstream, type AppUpstream } from '../helpers/app-upstream.js';
import { plainRequest } from '../helpers/clients.js';
import { runBroker, runSigil, setupTrustDomain, sidecarConfig, tempDir, waitUntil, writeConfig, type RunningSigil } from '../helpers/env.js';
import { existsSync } from 'node:fs';

const TD = 'example.org';
const ID_O = 'spiffe://example.org/agent/orchestrator';
const ID_W = 'spiffe://example.org/agent/worker';
const ID_T = 'spiffe://example.org/mcp/tool';
const ID_BROKER = 'spiffe://example.org/broker';
const ISSUER = 'https://broker.example.org';

const SIDECAR_POLICY = `
@id("connect") permit (principal in TrustDomain::"${TD}", action == Action::"connect", resource in TrustDomain::"${TD}");
@id("http") permit (principal in TrustDomain::"${TD}", action == Action::"http", resource in TrustDomain::"${TD}");
// The tool only serves people, never a bare agent (decided where the token is verified: inbound at the tool).
@id("tool-needs-a-human") forbid (principal, action == Action::"http", resource == Agent::"${ID_T}")
when { context.direction == "inbound" } unless { context has delegation };
`;

const BROKER_POLICY = `
@id("orchestrator-for-users") permit (principal == Agent::"${ID_O}", action == Action::"delegation.exchange", resource == Agent::"${ID_W}")
when { context.subjectTokenType == "user" };
@id("worker-to-tool") permit (principal == Agent::"${ID_W}", action == Action::"delegation.exchange", resource == Agent::"${ID_T}")
when { context.subjectTokenType == "delegation" && context.actors.contains("${ID_O}") };
`;

let dir: string;
let tool: AppUpstream;
let o: RunningSigil;
let alice: string;
let workerSaw: Array<{ delegation: string | undefined; toolStatus: number; toolBody: string }> = [];

t.before(async () => {
  dir = await tempDir(t);
  const td = await setupTrustDomain(dir, TD);
  const idp = await initDevIdp(join(dir, 'dev-idp'));
  await writeFile(join(dir, 'broker.cedar'), BROKER_POLICY);
  await writeFile(join(dir, 'sidecar.cedar'), SIDECAR_POLICY);
  const broker = await runBroker(
    t,
    await writeConfig(dir, 'broker.yaml', {
      trustDomain: TD,
      identity: { dev: { caDir: td.caDir, spiffeId: ID_BROKER, ttl: '15m' } },
      listen: '127.0.0.1:0',
      issuer: ISSUER,
      signingKeys: './broker-keys',
      jwksOut: './broker-jwks.json',
      subjectIssuers: [{ issuer: idp.issuer, audience: 'sigil-broker', jwks: idp.jwksPath }],
      policy: { cedar: './broker.cedar' },
      admin: { listen: '127.0.0.1:0' },
    }),
  );
  await waitUntil(() => existsSync(join(dir, 'broker-jwks.json')), 5_000);
  const delegation = { issuer: ISSUER, jwks: './broker-jwks.json', broker: { url: `https://${broker.address}/token`, spiffeId: ID_BROKER } };
  const sidecar = (name: string, id: string, extra: Record<string, unknown>): Promise<RunningSigil> =>
    writeConfig(dir, `${name}.yaml`, sidecarConfig({ trustDomain: TD, identity: { dev: { caDir: td.caDir, spiffeId: id, ttl: '15m' } }, policy: { cedar: './sidecar.cedar' }, delegation, ...extra })).then((cfg) => runSigil(t, cfg));

  tool = await startAppUpstream(t);
  const sidecarT = await sidecar('t', ID_T, { inbound: { listen: '127.0.0.1:0', upstream: tool.url } });

  // The worker app: handles /work by calling the tool through its own sidecar with the token it got.
  let wOutbound = '';
  const workerApp = createServer((req, res) => {
    const auth = req.headers.authorization;
    const path = req.url === '/work-wide' ? '/wide' : req.url === '/work-admin' ? '/admin-only' : '/tool';
    const onward = httpRequest({ host: '127.0.0.1', port: Number(wOutbound.split(':')[1]), path, headers: { host: path === '/tool' ? 'tool' : path === '/wide' ? 'tool-wide' : 'tool-admin', ...(auth ? { authorization: auth } : {}) } }, (r) => {
      let body = '';
      r.on('data', (d: Buffer) => (body += d));
      r.on('end', () => {
        workerSaw.push({ delegation: req.headers['x-sigil-delegation'] as string | undefined, toolStatus: r.statusCode ?? 0, toolBody: body });
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ toolStatus: r.statusCode }));
      });
    });
    onward.on('error', (err) => res.writeHead(500).end(err.message));
    onward.end();
  });
  await new Promise<void>((resolve) => workerApp.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => workerApp.close(() => resolve())));
  const w = await sidecar('w', ID_W, {
    inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${(workerApp.address() as AddressInfo).port}` },
    outbound: {
      listen: '127.0.0.1:0',
      routes: [
        { host: 'tool', address: sidecarT.inbound, spiffeId: ID_T, exchange: { scope: 'tools.call' } },
        // Asks for more than the worker was given: the broker grants the intersection.
        { host: 'tool-wide', address: sidecarT.inbound, spiffeId: ID_T, exchange: { scope: 'tools.call admin' } },
        // Asks only for what the worker was never given: nothing is left.
        { host: 'tool-admin', address: sidecarT.inbound, spiffeId: ID_T, exchange: { scope: 'admin' } },
      ],
    },
  });
  wOutbound = w.outbound;
  o = await sidecar('o', ID_O, { outbound: { listen: '127.0.0.1:0', routes: [{ host: 'worker', address: w.inbound, spiffeId: ID_W, exchange: { scope: 'tasks.read tools.call' } }] } });
  alice = await mintDevUserToken(join(dir, 'dev-idp'), { sub: 'alice', scope: ['tasks.read', 'tools.call', 'billing.write'], audience: 'sigil-broker' });
});

const callWorker = (path: string, token?: string) =>
  plainRequest({ address: o.outbound, path, headers: { host: 'worker', ...(token ? { authorization: `Bearer ${token}` } : {}) } });

t.test('alice → orchestrator → worker → tool: every hop narrows; the tool sees alice and the whole chain', async (t) => {
  workerSaw = [];
  const r = await callWorker('/work', alice);
  t.equal(r.gotHttpResponse && r.status, 200);
  const atWorker = JSON.parse(workerSaw[0]!.delegation ?? '{}');
  t.match(atWorker, { sub: 'alice', actors: [ID_O], depth: 1 }, 'the worker sees alice, acted for by the orchestrator');
  t.same([...atWorker.scope].sort(), ['tasks.read', 'tools.call'], 'billing.write was never passed on');
  t.equal(workerSaw[0]!.toolStatus, 200, `the tool answered the worker (${workerSaw[0]!.toolBody})`);
  const atTool = JSON.parse(String(tool.requests.find((q) => q.url === '/tool')!.headers['x-sigil-delegation']));
  t.match(atTool, { sub: 'alice', actors: [ID_W, ID_O], depth: 2, scope: ['tools.call'] }, 'the tool sees alice and the full chain, newest actor first');
  t.equal(atTool.task, atWorker.task, 'the task id is the same along the chain');
  const toolAuth = String(tool.requests.find((q) => q.url === '/tool')!.headers.authorization);
  t.not(toolAuth, `Bearer ${alice}`, "the user's own token never reaches the tool");
});

t.test('a hop asking for a wider scope gets the intersection; asking only for more is refused', async (t) => {
  workerSaw = [];
  await callWorker('/work-wide', alice);
  t.equal(workerSaw[0]!.toolStatus, 200);
  const atTool = JSON.parse(String(tool.requests.find((q) => q.url === '/wide')!.headers['x-sigil-delegation']));
  t.same(atTool.scope, ['tools.call'], '"admin" was dropped: never wider than the parent');
  await callWorker('/work-admin', alice);
  t.equal(workerSaw[1]!.toolStatus, 502, 'nothing left to grant: the exchange fails');
  t.match(JSON.parse(workerSaw[1]!.toolBody), { reason: 'exchange_failed', detail: 'invalid_scope' });
  t.notOk(tool.requests.some((q) => q.url === '/admin-only'), 'the tool never saw it');
});

t.test('without a user token the chain is not delegated, and the tool refuses the bare agent', async (t) => {
  workerSaw = [];
  const r = await callWorker('/work');
  t.equal(r.gotHttpResponse && r.status, 200);
  t.equal(workerSaw[0]!.delegation, undefined, 'no delegation at the worker');
  t.equal(workerSaw[0]!.toolStatus, 403, 'the tool requires a human behind the call');
  t.match(JSON.parse(workerSaw[0]!.toolBody), { reason: 'policy_denied', policies: ['tool-needs-a-human'] });
});

t.test('a user token the broker does not accept: the orchestrator gets 502 exchange_failed', async (t) => {
  const forged = alice.slice(0, -4) + (alice.endsWith('AAAA') ? 'BBBB' : 'AAAA');
  const r = await callWorker('/work', forged);
  t.equal(r.gotHttpResponse && r.status, 502);
  t.match(r.gotHttpResponse ? JSON.parse(r.body) : {}, { reason: 'exchange_failed', detail: 'invalid_request' });
});
