// The kill switch at the token-exchange broker, with real `sigil broker` processes: a revoked
// user, actor (requesting or anywhere in the chain), task or token id gets `invalid_grant`
// before the policy is asked; a revoked SVID never completes the mTLS peer check. Every refusal
// has a positive control next to it, and every revocation is lifted again (and works again).
// The list's sources: the admin API, `revocation.file` (relative to the config file) and, with a
// real nats-server, signed records from another broker authorized by this broker's policy.
import { X509Certificate } from 'node:crypto';
import { appendFile, writeFile } from 'node:fs/promises';
import { Agent as HttpsAgent } from 'node:https';
import { join } from 'node:path';
import t from 'tap';
import { decodeJwt } from 'jose';
import { ConfigError } from '../../src/config/index.js';
import { parseBrokerConfig } from '../../src/delegation/broker-config.js';
import { GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, initDevIdp, mintDevUserToken } from '../../src/delegation/index.js';
import type { Issued } from '../fixtures/certs.js';
import { assertRefused, assertStatus, type Asserts } from '../helpers/assert.js';
import { mtlsRequest, type HttpResult } from '../helpers/clients.js';
import { runBroker, runCli, setupTrustDomain, tempDir, waitUntil, writeConfig, type CliExit, type RunningBroker, type TrustDomainFixture } from '../helpers/env.js';
import { startNats, withNatsServer } from '../helpers/nats.js';

const TD = 'example.org';
const ISSUER = 'https://broker.example.org';
const USER_AUD = 'sigil-broker';
const ID = {
  a: 'spiffe://example.org/agent/a',
  b: 'spiffe://example.org/agent/b',
  c: 'spiffe://example.org/agent/c',
  d: 'spiffe://example.org/agent/d',
} as const;
type Agent = keyof typeof ID;

const EXCHANGE_POLICY = `
@id("exchange-within-example")
permit (principal in TrustDomain::"example.org", action == Action::"delegation.exchange", resource in TrustDomain::"example.org");
`;

let dir: string;
let idpDir: string;
let example: TrustDomainFixture;
let broker: RunningBroker;
const leaf = {} as Record<Agent, Issued>;

/** Broker config on loopback ports; `extra` wins. */
function brokerConfig(spiffeId: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    trustDomain: TD,
    identity: { dev: { caDir: example.caDir, spiffeId } },
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    issuer: ISSUER,
    signingKeys: './keys',
    subjectIssuers: [{ issuer: 'https://dev-idp.sigil.invalid', audience: USER_AUD, jwks: './idp/jwks.json' }],
    policy: { cedar: './broker.cedar' },
    shutdown: { drainTimeout: '1s' },
    ...extra,
  };
}

function userToken(sub: string): Promise<string> {
  return mintDevUserToken(idpDir, { sub, scope: ['read', 'write'], audience: USER_AUD, ttlSeconds: 3600 });
}

/** POST /token at `at` as `as` (its SVID as the client certificate): `subject` for `audience`. */
function exchange(as: Issued, subject: string, audience: string, at: RunningBroker = broker): Promise<HttpResult> {
  const body = new URLSearchParams({ grant_type: GRANT_TYPE_TOKEN_EXCHANGE, subject_token: subject, subject_token_type: TOKEN_TYPE_ACCESS_TOKEN, audience }).toString();
  return mtlsRequest({
    address: at.address,
    certPem: as.pem,
    keyPem: as.keyPem,
    method: 'POST',
    path: '/token',
    headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) },
    body,
  });
}

function issued(t: Asserts, r: HttpResult, what: string): string {
  assertStatus(t, r, what, 200);
  return String(r.json?.access_token ?? '');
}

/** 400 invalid_grant naming the revoked kind; the broker logs the entry that refused it. */
async function revoked(t: Asserts, r: HttpResult, what: string, kind: string, id: string, at: RunningBroker = broker): Promise<void> {
  assertStatus(t, r, what, 400);
  t.equal(r.json?.error, 'invalid_grant', `${what}: error=invalid_grant`);
  t.equal(r.json?.error_description, `the subject token's delegation is revoked (${kind})`, `${what}: says what kind of revocation`);
  t.equal(r.headers['cache-control'], 'no-store', `${what}: Cache-Control: no-store`);
  const line = await at.proc.waitFor((l) => l.msg === 'token exchange refused' && (l.revocation as { id?: string } | undefined)?.id === id, 5_000).catch(() => undefined);
  t.match(line, { error: 'invalid_grant', reason: 'revoked', revocation: { kind, id } }, `${what}: logged with reason revoked and the entry`);
}

/** POST /v1/revocations on `at`'s admin; returns the entry's id. */
async function revoke(t: Asserts, kind: string, value: string, at: RunningBroker = broker): Promise<string> {
  const res = await fetch(`http://${at.admin}/v1/revocations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind, value, reason: 'test', by: 'broker-revocation.test' }) });
  const body = (await res.json()) as { revocation?: { id: string } };
  t.equal(res.status, 201, `revoke ${kind}: 201 (${JSON.stringify(body)})`);
  return String(body.revocation?.id);
}

async function lift(t: Asserts, id: string, at: RunningBroker = broker): Promise<void> {
  const res = await fetch(`http://${at.admin}/v1/revocations/${id}`, { method: 'DELETE' });
  t.equal(res.status, 200, `lift ${id}: 200`);
}

/** `sigil ...args` to completion. */
const sigil = (args: string[]): Promise<CliExit> => runCli(args);

t.before(async () => {
  dir = await tempDir(t, 'sigil-broker-revocation-');
  example = await setupTrustDomain(dir, TD);
  for (const k of Object.keys(ID) as Agent[]) leaf[k] = await example.leaf(ID[k]);
  idpDir = join(dir, 'idp');
  await initDevIdp(idpDir);
  await writeConfig(dir, 'broker.cedar', EXCHANGE_POLICY);
  // revocation.file is relative to the config file's folder; mallory is revoked from the start.
  await writeFile(join(dir, 'revoked.yaml'), 'revocations:\n  - { kind: user, value: mallory, reason: left the company }\n');
  const config = await writeConfig(dir, 'broker.yaml', brokerConfig('spiffe://example.org/broker', { revocation: { file: './revoked.yaml', syncInterval: '200ms' } }));
  broker = await runBroker(t, config);
});

t.test('a revoked user: refused with invalid_grant, other users unaffected; lifting restores', async (t) => {
  const alice = await userToken('alice');
  const tAB = issued(t, await exchange(leaf.a, alice, ID.b), 'positive control: alice → A, a token for B');
  const id = await revoke(t, 'user', 'alice');
  await revoked(t, await exchange(leaf.a, alice, ID.b), 'the same exchange after revoking alice', 'user', id);
  await revoked(t, await exchange(leaf.b, tAB, ID.c), 'a chained exchange of a token issued for alice before', 'user', id);
  issued(t, await exchange(leaf.a, await userToken('bob'), ID.b), 'positive control: bob is not revoked');
  const list = (await (await fetch(`http://${broker.admin}/v1/revocations`)).json()) as { revocations: { id: string; kind: string; value: string }[] };
  t.match(list.revocations.find((e) => e.id === id), { kind: 'user', value: 'alice' }, 'GET /v1/revocations lists it');
  await lift(t, id);
  issued(t, await exchange(leaf.a, alice, ID.b), 'after the lift: alice → A works again');
  issued(t, await exchange(leaf.b, tAB, ID.c), 'and the chain she started continues');
});

t.test('a user revoked in revocation.file (relative path) is refused from the start; the file is watched', async (t) => {
  const mallory = await userToken('mallory');
  const r = await exchange(leaf.a, mallory, ID.b);
  assertStatus(t, r, 'mallory', 400);
  t.equal(r.json?.error, 'invalid_grant', 'mallory: invalid_grant (revoked by the file at start)');
  const status = (await (await fetch(`http://${broker.admin}/status`)).json()) as Record<string, any>;
  t.match(status.revocation, { ready: true, entries: Number, sources: { file: true, nats: false } }, '/status has the revocation section');
  t.equal((await fetch(`http://${broker.admin}/readyz`)).status, 200, '/readyz: ready (the list is loaded)');
  const fileEntry = ((await (await fetch(`http://${broker.admin}/v1/revocations`)).json()) as { revocations: { id: string; value: string }[] }).revocations.find((e) => e.value === 'mallory');
  t.ok(fileEntry, 'the file entry is listed');
  const del = await fetch(`http://${broker.admin}/v1/revocations/${fileEntry?.id}`, { method: 'DELETE' });
  t.equal(del.status, 404, 'a file entry cannot be lifted through the API (the file is the list)');

  const eve = await userToken('eve');
  issued(t, await exchange(leaf.a, eve, ID.b), 'positive control: eve, before she is added to the file');
  await appendFile(join(dir, 'revoked.yaml'), '  - { kind: user, value: eve }\n');
  const refused = await waitUntil(async () => {
    const res = await exchange(leaf.a, eve, ID.b);
    return res.gotHttpResponse && res.status === 400 ? res : undefined;
  }, 5_000);
  t.equal(refused && refused.gotHttpResponse ? refused.json?.error : undefined, 'invalid_grant', 'eve is refused once the file names her');
  await writeFile(join(dir, 'revoked.yaml'), 'revocations:\n  - { kind: user, value: mallory }\n');
  const back = await waitUntil(async () => {
    const res = await exchange(leaf.a, eve, ID.b);
    return res.gotHttpResponse && res.status === 200;
  }, 5_000);
  t.ok(back, 'removed from the file: eve works again');
});

t.test('a revoked actor: its exchanges get invalid_grant (not a TLS refusal), and so does any chain it is in', async (t) => {
  const alice = await userToken('alice');
  const tAB = issued(t, await exchange(leaf.a, alice, ID.b), 'before: A obtains a token for B');
  const tCB = issued(t, await exchange(leaf.c, alice, ID.b), 'before: C obtains a token for B');
  // A keeps a connection open (keep-alive): the revocation closes it.
  const keepAlive = new HttpsAgent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => keepAlive.destroy());
  const viaKept = () => mtlsRequest({ address: broker.address, certPem: leaf.a.pem, keyPem: leaf.a.keyPem, path: '/jwks', agent: keepAlive });
  assertStatus(t, await viaKept(), 'A: a kept-alive connection', 200);
  const again = await viaKept();
  t.ok(again.gotHttpResponse && again.reusedSocket, 'positive control: the connection is reused while A is not revoked');
  const id = await revoke(t, 'agent', ID.a);
  const cuts = await (await fetch(`http://${broker.admin}/metrics`)).text();
  t.match(cuts, /sigil_revocation_cuts_total\{kind="connection"\} [1-9]/, 'A\'s open connection was closed by the revocation');
  await revoked(t, await exchange(leaf.a, alice, ID.b), 'A, the requesting actor, is revoked', 'agent', id);
  const jwks = await mtlsRequest({ address: broker.address, certPem: leaf.a.pem, keyPem: leaf.a.keyPem, path: '/jwks' });
  assertStatus(t, jwks, 'A still passes the mTLS peer check (its SVID is not revoked: GET /jwks)', 200);
  await revoked(t, await exchange(leaf.b, tAB, ID.c), 'B exchanging a token whose chain contains A', 'agent', id);
  issued(t, await exchange(leaf.b, tCB, ID.c), 'positive control: B exchanging a chain without A');
  issued(t, await exchange(leaf.d, alice, ID.b), 'positive control: another actor, D');
  await lift(t, id);
  issued(t, await exchange(leaf.a, alice, ID.b), 'after the lift: A works again');
  issued(t, await exchange(leaf.b, tAB, ID.c), 'and so does the chain through A');
});

t.test('a revoked task (and a revoked token id): chained exchanges refused, other tasks fine', async (t) => {
  const alice = await userToken('alice');
  const t1 = issued(t, await exchange(leaf.a, alice, ID.b), 'task 1: alice → A, for B');
  const t2 = issued(t, await exchange(leaf.a, alice, ID.b), 'task 2: the same again (a new task)');
  const task1 = String(decodeJwt(t1).task);
  t.not(task1, decodeJwt(t2).task, 'two tasks');
  const id = await revoke(t, 'task', task1);
  await revoked(t, await exchange(leaf.b, t1, ID.c), 'B exchanging the token of the revoked task', 'task', id);
  issued(t, await exchange(leaf.b, t2, ID.c), 'positive control: the other task');
  issued(t, await exchange(leaf.a, alice, ID.b), 'positive control: alice can start new tasks');

  const jti = String(decodeJwt(t2).jti);
  const tokenId = await revoke(t, 'token', jti);
  await revoked(t, await exchange(leaf.b, t2, ID.c), 'B exchanging the token whose jti is revoked', 'token', tokenId);
  const t3 = issued(t, await exchange(leaf.a, alice, ID.b), 'a new token (another jti)');
  issued(t, await exchange(leaf.b, t3, ID.c), 'positive control: its exchange works');

  await lift(t, id);
  await lift(t, tokenId);
  issued(t, await exchange(leaf.b, t1, ID.c), 'after the lift: the task continues');
  issued(t, await exchange(leaf.b, t2, ID.c), 'after the lift: the token is exchangeable again');
});

t.test('a revoked SVID (by serial, or by fingerprint): the connection is refused, no token', async (t) => {
  const alice = await userToken('alice');
  issued(t, await exchange(leaf.c, alice, ID.b), 'positive control: C before');
  const serial = new X509Certificate(leaf.c.pem).serialNumber;
  const id = await revoke(t, 'svid', `serial:${serial}`);
  assertRefused(t, await exchange(leaf.c, alice, ID.b), 'C with the revoked SVID');
  const line = await broker.proc.waitFor((l) => l.msg === 'peer refused' && l.detail === 'svid_revoked', 5_000).catch(() => undefined);
  t.match(line, { reason: 'peer_untrusted', detail: 'svid_revoked' }, 'logged: peer refused, svid_revoked');
  issued(t, await exchange(leaf.a, alice, ID.b), 'positive control: another agent, A');
  const renewed = await example.leaf(ID.c);
  issued(t, await exchange(renewed, alice, ID.b), 'positive control: C with a new SVID (only the one SVID is revoked)');

  const fingerprint = new X509Certificate(leaf.d.pem).fingerprint256; // AB:CD:… as openssl prints it
  const byHash = await revoke(t, 'svid', fingerprint);
  assertRefused(t, await exchange(leaf.d, alice, ID.b), 'D with an SVID revoked by its SHA-256 fingerprint');
  await lift(t, byHash);
  await lift(t, id);
  issued(t, await exchange(leaf.c, alice, ID.b), 'after the lift: C\'s SVID works again');
  issued(t, await exchange(leaf.d, alice, ID.b), 'after the lift: D\'s too');
});

t.test('revocation metrics on the broker\'s /metrics', async (t) => {
  const metrics = await (await fetch(`http://${broker.admin}/metrics`)).text();
  t.match(metrics, /sigil_revocations_applied_total\{source="admin",result="applied"\} [1-9]/, 'admin revocations applied');
  t.match(metrics, /sigil_revocations_applied_total\{source="admin",result="lifted"\} [1-9]/, 'admin lifts');
  t.match(metrics, /sigil_revocations_applied_total\{source="file",result="applied"\} [1-9]/, 'file entries applied');
  t.match(metrics, /sigil_revocation_entries\{kind="user"\} 1/, 'entries in force by kind (mallory, from the file)');
  t.match(metrics, /sigil_revocation_list_age_seconds \d/, 'list age (a file source is configured)');
  t.match(metrics, /sigil_broker_exchanges_total\{result="refused",error="invalid_grant",reason="revoked"\} [1-9]/, 'revoked exchanges counted');
  t.notMatch(metrics, /alice|mallory/, 'no user in metrics');
});

t.test('config: revocation is the sidecar\'s section; without a bus, revocation.nats needs servers', async (t) => {
  const doc = (revocation: unknown): string => JSON.stringify({ ...brokerConfig('spiffe://example.org/broker'), revocation });
  const issues = (revocation: unknown): { path: string; message: string }[] => {
    try {
      parseBrokerConfig(doc(revocation), 'json', '/etc/sigil/broker.json');
      return [];
    } catch (err) {
      if (err instanceof ConfigError) return err.issues;
      throw err;
    }
  };
  t.match(issues({ nats: {} }), [{ path: 'revocation.nats.servers', message: /is required/ }], 'nats without servers');
  t.match(issues({ nats: { server: ['tls://n:4222'] } }), [{ path: 'revocation.nats', message: /unknown key "server".*servers/ }], 'unknown key, with a suggestion');
  t.match(issues({ syncInterval: '10ms' }), [{ path: 'revocation.syncInterval', message: /at least 100ms/ }], 'the sidecar\'s range checks');
  t.match(issues({ failClosedAfter: '10s' }), [{ path: 'revocation.failClosedAfter', message: /needs a source/ }], 'failClosedAfter needs a source');
  const ok = parseBrokerConfig(doc({ file: './revoked.yaml', nats: { servers: ['tls://nats:4222'], tls: { ca: './nats-ca.pem' } } }), 'json', '/etc/sigil/broker.json');
  t.same(
    ok.revocation,
    {
      syncIntervalMs: 1000,
      file: '/etc/sigil/revoked.yaml',
      nats: { servers: ['tls://nats:4222'], subject: 'sigil.revocations', stream: 'SIGIL_REVOCATIONS', createStream: true, ca: '/etc/sigil/nats-ca.pem' },
    },
    'positive control: relative paths resolve against the config file, defaults as for a sidecar',
  );
  t.equal(parseBrokerConfig(doc(undefined), 'json', '/etc/sigil/broker.json').revocation, undefined, 'no section: no sources (admin API only)');

  const bad = await writeConfig(dir, 'bad-revocation.yaml', brokerConfig('spiffe://example.org/broker', { revocation: { nats: { subject: 'sigil.revocations' } } }));
  const out = await sigil(['broker', '--config', bad]);
  t.equal(out.code, 1, 'sigil broker exits 1');
  t.match(out.stderr, /revocation\.nats\.servers: is required/, 'and names revocation.nats.servers');
});

t.test('records over NATS: applied when this broker\'s policy permits revocation.issue, refused otherwise', async (t) => {
  await withNatsServer(t, async (binary) => {
    const nats = await startNats(t, binary, example.ca.pem, { jetstream: true });
    const revocation = { nats: { servers: [nats.url], tls: { ca: nats.caFile } }, syncInterval: '200ms' };
    // broker1 takes user revocations from broker2, and nothing else; broker2 may issue anything.
    await writeConfig(dir, 'broker1.cedar', `${EXCHANGE_POLICY}
@id("broker2-revokes-users")
permit (principal == Agent::"spiffe://example.org/broker2", action == Action::"revocation.issue", resource == Topic::"sigil.revocations")
when { context.kind == "user" };
`);
    await writeConfig(dir, 'broker2.cedar', `${EXCHANGE_POLICY}
permit (principal == Agent::"spiffe://example.org/broker2", action == Action::"revocation.issue", resource == Topic::"sigil.revocations");
`);
    const b1 = await runBroker(t, await writeConfig(dir, 'broker1.yaml', brokerConfig('spiffe://example.org/broker1', { signingKeys: './keys1', policy: { cedar: './broker1.cedar' }, revocation })));
    const b2 = await runBroker(t, await writeConfig(dir, 'broker2.yaml', brokerConfig('spiffe://example.org/broker2', { signingKeys: './keys2', policy: { cedar: './broker2.cedar' }, revocation })));

    const carol = await userToken('carol');
    const tAB = issued(t, await exchange(leaf.a, carol, ID.b, b1), 'positive control: carol at broker1');
    const task = String(decodeJwt(tAB).task);

    // A task revocation from broker2: broker1's policy does not permit it.
    const taskId = await revoke(t, 'task', task, b2);
    const rejected = await b1.proc.waitFor((l) => l.msg === 'revocation record refused', 10_000).catch(() => undefined);
    t.match(rejected, { reason: 'policy_denied', signer: 'spiffe://example.org/broker2' }, 'broker1 refuses the task record (policy_denied)');
    issued(t, await exchange(leaf.b, tAB, ID.c, b1), 'so the task still works at broker1');

    const userId = await revoke(t, 'user', 'carol', b2);
    const refused = await waitUntil(async () => {
      const r = await exchange(leaf.a, carol, ID.b, b1);
      return r.gotHttpResponse && r.status === 400 ? r : undefined;
    }, 10_000);
    t.ok(refused, 'broker1 applies broker2\'s user record');
    if (refused) await revoked(t, refused, 'carol at broker1, revoked by broker2', 'user', userId, b1);
    issued(t, await exchange(leaf.a, await userToken('dave'), ID.b, b1), 'positive control: dave at broker1');

    await lift(t, userId, b2);
    const back = await waitUntil(async () => {
      const r = await exchange(leaf.a, carol, ID.b, b1);
      return r.gotHttpResponse && r.status === 200;
    }, 10_000);
    t.ok(back, 'the lift propagates: carol works at broker1 again');
    await lift(t, taskId, b2);

    const status = (await (await fetch(`http://${b1.admin}/status`)).json()) as Record<string, any>;
    t.match(status.revocation, { ready: true, sources: { nats: { connected: true } } }, 'broker1 /status: NATS source connected');
    const metrics = await (await fetch(`http://${b1.admin}/metrics`)).text();
    t.match(metrics, /sigil_revocations_applied_total\{source="nats",result="applied"\} [1-9]/, 'broker1 counts applied NATS records');
    t.match(metrics, /sigil_revocations_applied_total\{source="nats",result="rejected"\} [1-9]/, 'and rejected ones');
  });
});
