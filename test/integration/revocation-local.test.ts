// The kill switch on one real `sigil run` sidecar, without NATS: revocations made at its admin
// API (and from a watched file) at the granularity of delegation. Revoking a task stops only
// that chain — its open WebSocket stream is cut within 100 ms — while the same agents acting
// for another task go on; revoking a user stops every chain for that user; a token id, an actor
// anywhere in the chain, an SVID (also over a resumed TLS session) each have their own test.
// The dev issuer refuses to renew a revoked agent's SVID. Every refusal has a positive control.
import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import t from 'tap';
import { nestAct, signDelegationToken, SigningKeyRing, type DelegationTokenClaims, type SigningKey } from '../../src/delegation/index.js';
import type { Issued } from '../fixtures/certs.js';
import { startAppUpstream } from '../helpers/app-upstream.js';
import { metricSum, metrics, openWs, type WsClient } from '../helpers/observe.js';
import { rawTls } from '../helpers/raw.js';
import { runCli, runSigil, setupTrustDomain, sidecarConfig, sleep, splitAddress, tempDir, waitUntil, writeConfig, type CliExit, type RunningSigil, type Teardown, type TrustDomainFixture } from '../helpers/env.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_D = 'spiffe://example.org/agent/d';
const ID_E = 'spiffe://example.org/agent/e';
const ISSUER = 'https://broker.example.org';

const POLICY = `
@id("calls") permit (principal in TrustDomain::"${TD}", action in [Action::"connect", Action::"http", Action::"websocket.message"], resource);
`;

let dir: string;
let td: TrustDomainFixture;
let b: RunningSigil;
let key: SigningKey;
let leafA: Issued;
let appUrl: string;

t.before(async () => {
  dir = await tempDir(t);
  td = await setupTrustDomain(dir, TD);
  appUrl = (await startAppUpstream(t)).url;
  const ring = await SigningKeyRing.load(join(dir, 'broker-keys'));
  key = ring.current();
  await ring.writeJwks(join(dir, 'broker.jwks.json'));
  await writeFile(join(dir, 'policy.cedar'), POLICY);
  b = await startSidecar(t, 'b', ID_B, { inbound: { listen: '127.0.0.1:0', upstream: appUrl }, delegation: { issuer: ISSUER, jwks: './broker.jwks.json' } });
  leafA = await td.leaf(ID_A);
});

/** `sigil run` with a dev identity for `spiffeId`, the shared policy, and `extra` config. */
async function startSidecar(t: Teardown, name: string, spiffeId: string, extra: Record<string, unknown>, ttl = '15m'): Promise<RunningSigil> {
  const config = sidecarConfig({ trustDomain: TD, identity: { dev: { caDir: td.caDir, spiffeId, ttl } }, policy: { cedar: './policy.cedar' }, ...extra });
  return runSigil(t, await writeConfig(dir, `${name}.yaml`, config));
}

function token(over: Partial<DelegationTokenClaims> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const claims: DelegationTokenClaims = {
    iss: ISSUER,
    sub: 'alice@example.org',
    aud: ID_B,
    client_id: ID_A,
    act: nestAct(ID_A, undefined),
    scope: 'search',
    iat: now,
    exp: now + 300,
    jti: randomBytes(16).toString('base64url'),
    task: 'task-1',
    ...over,
  };
  return signDelegationToken(claims, key);
}

async function call(leaf: Issued, bearer?: string, target: RunningSigil = b): Promise<{ status: number; reason?: string }> {
  let conn;
  try {
    conn = await rawTls(target.inbound, { certPem: leaf.pem, keyPem: leaf.keyPem });
  } catch {
    return { status: 0 };
  }
  try {
    const auth = bearer === undefined ? '' : `Authorization: Bearer ${bearer}\r\n`;
    const r = await conn.request(`GET /work HTTP/1.1\r\nHost: b\r\n${auth}\r\n`);
    if (r.kind !== 'response') return { status: 0 };
    let reason: string | undefined;
    try {
      reason = (JSON.parse(r.body) as { reason?: string }).reason;
    } catch {
      reason = undefined;
    }
    return { status: r.status, ...(reason === undefined ? {} : { reason }) };
  } finally {
    conn.destroy();
  }
}

const stream = (leaf: Issued, bearer: string): Promise<WsClient> =>
  openWs(`wss://${b.inbound}/stream`, { cert: leaf.pem, key: leaf.keyPem, rejectUnauthorized: false, headers: { authorization: `Bearer ${bearer}` } });

async function admin(path: string, init: RequestInit = {}, target: RunningSigil = b): Promise<{ status: number; json: any }> {
  const r = await fetch(`http://${target.admin}${path}`, { ...init, headers: { 'content-type': 'application/json' } });
  return { status: r.status, json: await r.json() };
}
const revoke = (body: Record<string, unknown>, target: RunningSigil = b): Promise<{ status: number; json: any }> =>
  admin('/v1/revocations', { method: 'POST', body: JSON.stringify(body) }, target);
const lift = (id: string, target: RunningSigil = b): Promise<{ status: number; json: any }> => admin(`/v1/revocations/${id}`, { method: 'DELETE' }, target);

t.test('revoking a task stops that chain only, and cuts its open stream within 100 ms', async (t) => {
  const t1 = await token({ task: 'task-1' });
  const t2 = await token({ task: 'task-2' });
  const s1 = await stream(leafA, t1);
  const s2 = await stream(leafA, t2);
  t.equal((await s1.roundTrip('one')).data.toString(), 'one', 'positive control: task-1 stream works');
  t.equal((await s2.roundTrip('two')).data.toString(), 'two', 'positive control: task-2 stream works');
  t.equal((await call(leafA, t1)).status, 200, 'positive control: task-1 requests work');

  const started = Date.now();
  const made = await revoke({ kind: 'task', value: 'task-1', reason: 'runaway task' });
  t.equal(made.status, 201);
  t.equal(made.json.propagated, false, 'no NATS: applied here only');
  const closed = await s1.closeWithin(1_000);
  const elapsed = Date.now() - started;
  t.same(closed, { code: 1008, reason: 'revoked' }, 'the task-1 stream is closed with 1008 revoked');
  t.ok(elapsed < 100 + 50, `within ~100 ms of the admin call (${elapsed} ms, incl. the HTTP round trip)`);
  t.same(await call(leafA, t1), { status: 403, reason: 'revoked' }, 'a task-1 request is refused: revoked');
  t.equal((await s2.roundTrip('still')).data.toString(), 'still', 'the task-2 stream goes on');
  t.equal((await call(leafA, t2)).status, 200, 'task-2 requests go on (same user, same agent)');
  t.equal((await call(leafA)).status, 200, 'A without a delegation goes on');
  const fresh = await token({ task: 'task-1' });
  t.same(await call(leafA, fresh), { status: 403, reason: 'revoked' }, 'a brand-new token for task-1 is refused too');
  t.equal((await lift(made.json.revocation.id)).status, 200, 'lifted');
  t.equal((await call(leafA, fresh)).status, 200, 'task-1 works again after the lift');
  s2.ws.close();
});

t.test('revoking a user stops every chain for that user', async (t) => {
  const alice1 = await token({ task: 'a-1' });
  const alice2 = await token({ task: 'a-2' });
  const bob = await token({ task: 'b-1', sub: 'bob@example.org' });
  const s = await stream(leafA, alice2);
  const made = await revoke({ kind: 'user', value: 'alice@example.org' });
  t.same(await s.closeWithin(1_000), { code: 1008, reason: 'revoked' }, 'alice\'s open stream is cut');
  t.same(await call(leafA, alice1), { status: 403, reason: 'revoked' }, 'alice task a-1 refused');
  t.same(await call(leafA, alice2), { status: 403, reason: 'revoked' }, 'alice task a-2 refused');
  t.equal((await call(leafA, bob)).status, 200, 'positive control: bob\'s chain through the same agent goes on');
  await lift(made.json.revocation.id);
  t.equal((await call(leafA, alice1)).status, 200, 'alice works again after the lift');
});

t.test('revoking a token id refuses that token only', async (t) => {
  const jti = randomBytes(16).toString('base64url');
  const revoked = await token({ jti, task: 'tok' });
  const other = await token({ task: 'tok' });
  const made = await revoke({ kind: 'token', value: jti });
  t.same(await call(leafA, revoked), { status: 403, reason: 'revoked' }, 'the revoked token is refused');
  t.equal((await call(leafA, other)).status, 200, 'positive control: another token of the same task works');
  await lift(made.json.revocation.id);
});

t.test('revoking an agent that acted earlier in the chain stops the chain', async (t) => {
  // alice → D → A → B: D acted first, A presents the token.
  const viaD = await token({ act: nestAct(ID_A, nestAct(ID_D, undefined)), task: 'via-d' });
  const direct = await token({ task: 'direct' });
  t.equal((await call(leafA, viaD)).status, 200, 'positive control: the chain through D works');
  const made = await revoke({ kind: 'agent', value: ID_D });
  t.same(await call(leafA, viaD), { status: 403, reason: 'revoked' }, 'a chain D acted in is refused');
  t.equal((await call(leafA, direct)).status, 200, 'a chain without D goes on');
  const pattern = await revoke({ kind: 'agent', value: 'spiffe://example.org/agent/*' });
  t.same(await call(leafA, direct), { status: 403, reason: 'revoked' }, 'a pattern revokes every agent it matches (A itself here)');
  await lift(pattern.json.revocation.id);
  await lift(made.json.revocation.id);
  t.equal((await call(leafA, viaD)).status, 200, 'works again after both lifts');
});

/** One TLS connection as `leaf`, resuming `session` when given; a request on it; the new session. */
async function tlsCall(leaf: Issued, session?: Buffer): Promise<{ reused: boolean; status: number; session?: Buffer }> {
  const { host, port } = splitAddress(b.inbound);
  return new Promise((resolve) => {
    let newSession: Buffer | undefined;
    let reused = false;
    let data = '';
    const socket: TLSSocket = tlsConnect({ host, port, cert: leaf.pem, key: leaf.keyPem, rejectUnauthorized: false, checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'], ...(session ? { session } : {}) });
    socket.on('session', (s: Buffer) => (newSession = s));
    socket.on('error', () => undefined);
    socket.once('secureConnect', () => {
      reused = socket.isSessionReused(); // only meaningful while the socket is open
      socket.write('GET /work HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n');
    });
    socket.on('data', (d: Buffer) => (data += d.toString()));
    socket.once('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0);
      resolve({ reused, status, ...(newSession ? { session: newSession } : {}) });
    });
  });
}

t.test('a revoked SVID is refused on full and on resumed TLS sessions; another SVID of the agent is not', async (t) => {
  const leafE = await td.leaf(ID_E);
  const first = await tlsCall(leafE);
  t.equal(first.status, 200, 'positive control: full handshake served');
  t.ok(first.session, 'the server issued a session ticket');
  const resumed = await tlsCall(leafE, first.session);
  t.ok(resumed.reused, 'positive control: the session is resumed');
  t.equal(resumed.status, 200, 'and served');
  const made = await revoke({ kind: 'svid', value: `serial:${leafE.cert.serialNumber}` });
  t.equal(made.status, 201);
  const afterResume = await tlsCall(leafE, resumed.session ?? first.session);
  t.ok(afterResume.reused, 'the TLS layer did resume the session (so this checks the resumed path)');
  t.equal(afterResume.status, 0, 'a resumed session of the revoked SVID gets no HTTP response');
  const afterFull = await tlsCall(leafE);
  t.equal(afterFull.status, 0, 'a full handshake with the revoked SVID gets no HTTP response');
  const renewed = await td.leaf(ID_E);
  t.equal((await tlsCall(renewed)).status, 200, 'the same agent with another SVID is served (the SVID, not the agent, is revoked)');
  const handshakes = metricSum(await metrics(b), 'sigil_tls_handshakes_total', { reporter: 'inbound', result: 'failure', reason: 'svid_revoked' });
  t.ok(handshakes >= 2, `counted as failed handshakes, reason svid_revoked (${handshakes})`);
  await lift(made.json.revocation.id);
  t.equal((await tlsCall(leafE)).status, 200, 'served again after the lift');
});

t.test('the admin API refuses bad input with the field named, and unknown ids', async (t) => {
  const bad = await revoke({ kind: 'robot', value: 'x' });
  t.equal(bad.status, 400);
  t.match(bad.json, { error: 'revocation_invalid', detail: /^kind: / });
  const badAgent = await revoke({ kind: 'agent', value: 'not-a-spiffe-id' });
  t.match(badAgent.json, { error: 'revocation_invalid', detail: /^value: / });
  const badTime = await revoke({ kind: 'task', value: 'x', expiresAt: 'tomorrow' });
  t.match(badTime.json, { error: 'revocation_invalid', detail: /^expiresAt: / });
  const unknown = await revoke({ kind: 'task', value: 'x', colour: 'red' });
  t.match(unknown.json, { error: 'revocation_invalid', detail: /^colour: unknown field/ });
  const notJson = await fetch(`http://${b.admin}/v1/revocations`, { method: 'POST', body: '{nope' });
  t.equal(notJson.status, 400, 'a body that is not JSON');
  t.equal((await lift('0000000000000000')).status, 404, 'lifting an unknown id');
  const badBy = await admin('/v1/revocations/0000000000000000?by=', { method: 'DELETE' });
  t.match(badBy, { status: 400, json: { error: 'revocation_invalid', detail: /^by: / } }, 'an empty ?by= is refused');
  const good = await revoke({ kind: 'task', value: 'expiring', expiresAt: new Date(Date.now() + 60_000).toISOString(), by: 'oncall' });
  t.equal(good.status, 201, 'positive control: a valid entry is accepted');
  t.match(good.json.revocation, { kind: 'task', value: 'expiring', revokedBy: 'oncall' });
  const list = await admin('/v1/revocations');
  t.ok(list.json.revocations.some((e: { id: string }) => e.id === good.json.revocation.id), 'listed');
  t.equal(list.json.ageSeconds, null, 'no propagating source: no age');
  await lift(good.json.revocation.id);
});

t.test('an entry with an expiry stops applying once it expires', async (t) => {
  const tk = await token({ task: 'short' });
  await revoke({ kind: 'task', value: 'short', expiresAt: new Date(Date.now() + 1_200).toISOString() });
  t.same(await call(leafA, tk), { status: 403, reason: 'revoked' }, 'refused while in force');
  await sleep(1_500);
  t.equal((await call(leafA, tk)).status, 200, 'served after expiry');
});

t.test('a watched revocation file: entries apply, removal lifts, an invalid file keeps the last good list', async (t) => {
  const file = join(dir, 'revocations.yaml');
  await writeFile(file, `revocations:\n  - { kind: agent, value: "${ID_D}", reason: "from file" }\n`);
  const f = await startSidecar(t, 'f', 'spiffe://example.org/agent/f', { inbound: { listen: '127.0.0.1:0', upstream: appUrl }, revocation: { file: './revocations.yaml', syncInterval: '200ms' } });
  const leafD = await td.leaf(ID_D);
  t.same(await call(leafD, undefined, f), { status: 403, reason: 'revoked' }, 'the file\'s entry applies from startup');
  t.equal((await call(leafA, undefined, f)).status, 200, 'positive control: another agent is served');
  const listed = await admin('/v1/revocations', {}, f);
  const fileEntry = listed.json.revocations[0];
  t.match(fileEntry, { kind: 'agent', value: ID_D, reason: 'from file' });
  t.equal((await lift(fileEntry.id, f)).status, 404, 'a file entry cannot be lifted at the API (it would come back)');
  await writeFile(`${file}.tmp`, 'revocations: [ { kind: nope } ]\n');
  await rename(`${file}.tmp`, file);
  await sleep(800);
  t.same(await call(leafD, undefined, f), { status: 403, reason: 'revoked' }, 'an invalid new file keeps the last good list');
  await writeFile(file, `revocations:\n  - { kind: agent, value: "${ID_A}" }\n`);
  await waitUntil(async () => (await call(leafA, undefined, f)).status === 403, 3_000, 100);
  t.same(await call(leafA, undefined, f), { status: 403, reason: 'revoked' }, 'an entry added to the file (written in place) applies');
  t.equal((await call(leafD, undefined, f)).status, 200, 'an entry removed from the file stops applying');
  // An edited line keeps its id but names another agent: the old value stops, the new applies.
  await writeFile(file, `revocations:\n  - { id: edited-line, kind: agent, value: "${ID_A}" }\n`);
  t.ok(await waitUntil(async () => (await call(leafA, undefined, f)).status === 403, 3_000, 100), 'the edited file revokes A');
  await writeFile(file, `revocations:\n  - { id: edited-line, kind: agent, value: "${ID_D}" }\n`);
  t.ok(await waitUntil(async () => (await call(leafA, undefined, f)).status === 200, 3_000, 100), 'the same line naming D no longer revokes A');
  t.same(await call(leafD, undefined, f), { status: 403, reason: 'revoked' }, 'an edited line (same id, new value) replaces its entry');
  const age = metricSum(await metrics(f), 'sigil_revocation_list_age_seconds');
  t.ok(age < 1, `the file source keeps the list fresh (age ${age} s)`);
});

t.test('the dev issuer does not renew the SVID of a revoked agent (decommission)', async (t) => {
  const g = await startSidecar(t, 'g', 'spiffe://example.org/agent/g', { inbound: { listen: '127.0.0.1:0', upstream: appUrl } }, '2s');
  const rotations = async (result: string): Promise<number> => metricSum(await metrics(g), 'sigil_svid_rotations_total', { result });
  t.ok(await waitUntil(async () => (await rotations('success')) >= 1, 5_000, 100), 'positive control: the SVID renews while the agent is not revoked');
  await revoke({ kind: 'agent', value: 'spiffe://example.org/agent/g', reason: 'decommissioned' }, g);
  const before = await rotations('success');
  t.ok(await waitUntil(async () => (await rotations('failure')) >= 1, 5_000, 100), 'renewal is refused after the revocation');
  t.equal(await rotations('success'), before, 'no SVID was issued since');
  t.ok(await waitUntil(async () => (await fetch(`http://${g.admin}/readyz`)).status === 503, 5_000, 100), 'once its last SVID expired the sidecar is not ready');
});

t.test('admin.tokenFile: changing endpoints need the token (the agent shares loopback); reads do not', async (t) => {
  const tokenFile = join(dir, 'admin.token');
  const token = randomBytes(24).toString('base64url');
  await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  const h = await startSidecar(t, 'h', 'spiffe://example.org/agent/h', { inbound: { listen: '127.0.0.1:0', upstream: appUrl }, admin: { listen: '127.0.0.1:0', tokenFile: './admin.token' } });
  const post = (auth?: string): Promise<Response> =>
    fetch(`http://${h.admin}/v1/revocations`, { method: 'POST', headers: { 'content-type': 'application/json', ...(auth ? { authorization: auth } : {}) }, body: JSON.stringify({ kind: 'task', value: 'guarded' }) });
  const none = await post();
  t.equal(none.status, 401, 'no token: 401');
  t.match(none.headers.get('www-authenticate') ?? '', /^Bearer /, 'with a Bearer challenge');
  t.equal((await post('Bearer wrong-token-of-enough-length')).status, 401, 'a wrong token: 401');
  t.equal((await fetch(`http://${h.admin}/v1/policy/reload`, { method: 'POST' })).status, 401, 'policy reload needs it too');
  const ok = await post(`Bearer ${token}`);
  t.equal(ok.status, 201, 'positive control: the right token revokes');
  const id = ((await ok.json()) as { revocation: { id: string } }).revocation.id;
  t.equal((await fetch(`http://${h.admin}/v1/revocations/${id}`, { method: 'DELETE' })).status, 401, 'lifting without the token: 401');
  t.equal((await fetch(`http://${h.admin}/v1/revocations`)).status, 401, 'listing needs the token too (it names users and entry ids)');
  t.equal((await fetch(`http://${h.admin}/v1/revocations`, { headers: { authorization: `Bearer ${token}` } })).status, 200, 'positive control: listing with the token');
  t.equal((await fetch(`http://${h.admin}/metrics`)).status, 200, 'scraping needs no token');
  t.equal((await fetch(`http://${h.admin}/status`)).status, 200, 'status needs no token');
  const cli = await runCli(['revoke', '--admin', `http://${h.admin}`, '--lift', id, '--token-file', tokenFile]);
  t.equal(cli.code, 0, `sigil revoke --token-file lifts it (${cli.stderr.trim()})`);
  t.notOk(cli.stdout.includes(token) || cli.stderr.includes(token), 'the token is never printed');
  const noToken = await runCli(['revoke', '--admin', `http://${h.admin}`, '--task', 'x']);
  t.equal(noToken.code, 1, 'sigil revoke without the token is refused');
  t.match(noToken.stderr, /401/);
});

/** `sigil ...args` to completion (without tap's NODE_OPTIONS). */
const sigilCli = (args: string[]): Promise<CliExit> => runCli(args, { NODE_OPTIONS: '' });

t.test('a delegated request is live work only while it runs (pipelined and aborted requests leave nothing behind)', async (t) => {
  const slow = createServer((req, res) => {
    req.resume();
    setTimeout(() => res.end('ok'), req.url?.startsWith('/slow') ? 800 : 0);
  });
  await new Promise<void>((resolve) => slow.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    slow.closeAllConnections();
    slow.close();
  });
  const p = await startSidecar(t, 'p', ID_B, { inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${(slow.address() as AddressInfo).port}` }, delegation: { issuer: ISSUER, jwks: './broker.jwks.json' } });
  const liveWork = async (): Promise<number> => ((await (await fetch(`http://${p.admin}/status`)).json()) as { revocation: { liveWork: number } }).revocation.liveWork;
  const bearer = await token({ task: 'pipelined' });
  const { host, port } = splitAddress(p.inbound);
  for (let i = 0; i < 3; i++) {
    const socket = tlsConnect({ host, port, cert: leafA.pem, key: leafA.keyPem, rejectUnauthorized: false, checkServerIdentity: () => undefined, ALPNProtocols: ['http/1.1'] });
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    const head = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer ${bearer}\r\n\r\n`;
    socket.write(head(`/slow${i}`) + head(`/next${i}`));
    await sleep(300);
    if (i === 0) t.ok((await liveWork()) >= 1, 'positive control: the running delegated request is registered');
    socket.destroy();
  }
  t.ok(await waitUntil(async () => (await liveWork()) === 0, 3_000, 100), 'nothing is left registered once the clients went away');
});
