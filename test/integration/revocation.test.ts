// The kill switch end to end: three real `sigil run` sidecars (agents a, b, c) and a real
// nats-server with JetStream. A revocation made at one admin API (c's) is signed, stored in the
// revocation stream, verified and authorized by every sidecar, and enforced by all three within
// a second — including on work already running: A's WebSocket stream and its kept-alive mTLS
// connection are cut, and a message A signed before the revocation but delivered after it is
// dropped. Forged, tampered and replayed records are refused and audited; a restarted sidecar
// is ready only with the current list; a list that cannot be refreshed ages, and with
// failClosedAfter new connections are refused.
import { writeFile } from 'node:fs/promises';
import { Agent as HttpAgent } from 'node:http';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstream } from '@nats-io/jetstream';
import t from 'tap';
import { createEnvelopeSigner } from '../../src/bus/envelope/index.js';
import { createRecordSigner, signRecord } from '../../src/revocation/index.js';
import type { Issued } from '../fixtures/certs.js';
import { mtlsRequest, plainRequest, type HttpResult } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, sleep, tempDir, waitUntil, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';
import { startAppUpstream } from '../helpers/app-upstream.js';
import { svidOf } from '../helpers/envelope.js';
import { startNats, withNatsServer, type RunningNats } from '../helpers/nats.js';
import { adminStatus, auditLines, metricSum, metrics, openWs, type WsClient } from '../helpers/observe.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_C = 'spiffe://example.org/agent/c';
const ID_D = 'spiffe://example.org/agent/d';
const ID_EVIL = 'spiffe://example.org/agent/evil';
/** May issue records for task entries only. */
const ID_T = 'spiffe://example.org/ops/tasks';
const SUBJECT = 'sigil.revocations';

// Every agent of the trust domain may call every other and use the bus; only agent c (the
// operators' sidecar here) may issue revocation records.
const POLICY = `
@id("calls") permit (principal in TrustDomain::"${TD}", action in [Action::"connect", Action::"http", Action::"websocket.message"], resource);
@id("bus") permit (principal in TrustDomain::"${TD}", action in [Action::"bus.publish", Action::"bus.deliver"], resource);
@id("revokers") permit (principal == Agent::"${ID_C}", action == Action::"revocation.issue", resource == Topic::"${SUBJECT}");
@id("task-revokers") permit (principal == Agent::"${ID_T}", action == Action::"revocation.issue", resource == Topic::"${SUBJECT}") when { context.kind == "task" };
`;

await withNatsServer(t, suite);

async function suite(natsBinary: string): Promise<void> {
  const root = t;
  let dir: string;
  let td: TrustDomainFixture;
  let nats: RunningNats;
  const sidecars: Record<'a' | 'b' | 'c', RunningSigil> = {} as never;
  let dry: RunningSigil;
  const configs: Record<'a' | 'b' | 'c', string> = {} as never;
  let auditB: string;
  let leafA: Issued;
  let leafD: Issued;
  let attacker: NatsConnection;

  const sidecarYaml = async (name: string, id: string, extra: Record<string, unknown>): Promise<string> =>
    writeConfig(
      dir,
      `${name}.yaml`,
      sidecarConfig({
        trustDomain: TD,
        identity: { dev: { caDir: td.caDir, spiffeId: id, ttl: '15m' } },
        bus: { local: '127.0.0.1:0', nats: { servers: [nats.url], tls: { ca: nats.caFile } } },
        revocation: { nats: {}, syncInterval: '200ms' },
        policy: { cedar: './policy.cedar' },
        ...extra,
      }),
    );

  t.before(async () => {
    dir = await tempDir(t);
    td = await setupTrustDomain(dir, TD);
    nats = await startNats(t, natsBinary, td.ca.pem, { jetstream: true });
    await writeFile(join(dir, 'policy.cedar'), POLICY);
    auditB = join(dir, 'audit-b.jsonl');
    const appB = await startAppUpstream(t);
    const appC = await startAppUpstream(t);
    const appA = await startAppUpstream(t);
    configs['c'] = await sidecarYaml('c', ID_C, { inbound: { listen: '127.0.0.1:0', upstream: appC.url } });
    sidecars.c = await runSigil(t, configs['c']);
    configs['b'] = await sidecarYaml('b', ID_B, { inbound: { listen: '127.0.0.1:0', upstream: appB.url }, audit: { path: auditB } });
    sidecars.b = await runSigil(t, configs['b']);
    configs['a'] = await sidecarYaml('a', ID_A, {
      inbound: { listen: '127.0.0.1:0', upstream: appA.url },
      outbound: {
        listen: '127.0.0.1:0',
        routes: [
          { host: 'agent-b', address: sidecars.b.inbound, spiffeId: ID_B },
          { host: 'agent-c', address: sidecars.c.inbound, spiffeId: ID_C },
        ],
      },
    });
    sidecars.a = await runSigil(t, configs['a']);
    // A sidecar whose policy is in dry-run: who may revoke is still enforced there.
    await writeFile(join(dir, 'policy-dry.cedar'), POLICY);
    dry = await runSigil(t, await sidecarYaml('dry', 'spiffe://example.org/agent/dry', { inbound: { listen: '127.0.0.1:0', upstream: appC.url }, policy: { cedar: './policy-dry.cedar', mode: 'dry-run' } }));
    leafA = await td.leaf(ID_A);
    leafD = await td.leaf(ID_D);
    const evilLeaf = await td.leaf(ID_EVIL);
    attacker = await connect({ servers: [nats.url], tls: { cert: evilLeaf.pem, key: evilLeaf.keyPem, ca: nats.caPem }, name: 'attacker' });
    t.teardown(() => attacker.close());
  });

  const admin = (s: RunningSigil, path: string, init: RequestInit = {}): Promise<{ status: number; json: any }> =>
    fetch(`http://${s.admin}${path}`, { ...init, headers: { 'content-type': 'application/json' } }).then(async (r) => ({ status: r.status, json: await r.json() }));
  const revoke = (s: RunningSigil, body: Record<string, unknown>): Promise<{ status: number; json: any }> =>
    admin(s, '/v1/revocations', { method: 'POST', body: JSON.stringify(body) });
  const listed = async (s: RunningSigil, id: string): Promise<boolean> =>
    ((await admin(s, '/v1/revocations')).json.revocations as { id: string }[]).some((e) => e.id === id);
  /** A raw mTLS call to a sidecar's inbound, as the holder of `leaf`. */
  const callAs = (s: RunningSigil, leaf: Issued, path = '/'): Promise<HttpResult> => mtlsRequest({ address: s.inbound, certPem: leaf.pem, keyPem: leaf.keyPem, path });

  t.test('a revocation at one admin API is enforced by all three sidecars within a second, and cuts A\'s open work', async (t) => {
    // Agent A's live work before the revocation: a WebSocket stream to B and a kept-alive
    // mTLS connection from A's sidecar to B (behind a keep-alive agent → sidecar A connection).
    const keepAlive = new HttpAgent({ keepAlive: true });
    t.teardown(() => keepAlive.destroy());
    const viaA = (host: string): Promise<HttpResult> => plainRequest({ address: sidecars.a.outbound, path: '/work', headers: { host }, agent: keepAlive });
    const first = await viaA('agent-b');
    t.equal(first.gotHttpResponse && first.status, 200, 'positive control: A → B works before the revocation');
    const stream: WsClient = await openWs(`ws://${sidecars.a.outbound}/chat`, { headers: { host: 'agent-b' } });
    const busA: WsClient = await openWs(`ws://${String(sidecars.a.ready.bus)}/bus`);
    busA.ws.send(JSON.stringify({ op: 'subscribe', id: 's', subject: 'news.>' }));
    t.equal(JSON.parse((await busA.next()).data.toString()).op, 'subscribed', 'positive control: agent A subscribes on its local bus');
    t.equal((await stream.roundTrip('hello')).data.toString(), 'hello', 'positive control: A\'s WebSocket stream to B echoes');
    t.ok((await adminStatus(sidecars.b)).connections.inbound >= 1, 'B holds A\'s kept-alive mTLS connection(s)');
    for (const s of [sidecars.a, sidecars.b, sidecars.c]) {
      const r = await callAs(s, leafD);
      t.equal(r.gotHttpResponse && r.status, 200, 'positive control: another agent (d) is served by every sidecar');
    }
    const beforeA = await callAs(sidecars.b, leafA);
    t.equal(beforeA.gotHttpResponse && beforeA.status, 200, 'positive control: A\'s own SVID is served by B');

    const started = Date.now();
    const made = await revoke(sidecars.c, { kind: 'agent', value: ID_A, reason: 'compromised', by: 'secops' });
    t.equal(made.status, 201, 'c accepts the revocation');
    t.equal(made.json.propagated, true, 'and stored it in the revocation stream');
    const id = made.json.revocation.id as string;
    for (const [name, s] of Object.entries(sidecars)) {
      t.ok(await waitUntil(() => listed(s, id), 2_000, 10), `${name} lists the revocation`);
      t.ok(Date.now() - started < 1_000, `${name} has the revocation within 1 s (${Date.now() - started} ms)`);
    }
    // Enforced everywhere: A's SVID at b and c, A's own sidecar for A's calls.
    for (const name of ['b', 'c'] as const) {
      const r = await callAs(sidecars[name], leafA);
      t.equal(r.gotHttpResponse && r.status, 403, `${name} refuses A`);
      t.equal(r.gotHttpResponse && r.json?.reason, 'revoked', `${name}: reason revoked`);
      t.same(r.gotHttpResponse && r.json?.revocation, { kind: 'agent', id }, `${name}: the body names the entry kind and id`);
      const d = await callAs(sidecars[name], leafD);
      t.equal(d.gotHttpResponse && d.status, 200, `positive control: ${name} still serves d`);
    }
    const own = await plainRequest({ address: sidecars.a.outbound, path: '/work', headers: { host: 'agent-c' } });
    t.equal(own.gotHttpResponse && own.status, 403, 'A\'s own sidecar refuses A\'s calls');
    const selfLift = await admin(sidecars.a, `/v1/revocations`, { method: 'POST', body: JSON.stringify({ kind: 'task', value: 'x' }) });
    t.match(selfLift, { status: 403, json: { error: 'not_authorized', detail: /itself revoked/ } }, 'a revoked sidecar does not sign records (every receiver would refuse them)');
    t.equal(own.gotHttpResponse && own.json?.reason, 'revoked', 'reason revoked');
    t.ok(Date.now() - started < 1_500, `all checks done ${Date.now() - started} ms after the admin call`);

    const closed = await stream.closeWithin(1_000);
    t.same(closed, { code: 1008, reason: 'revoked' }, 'A\'s WebSocket stream was closed with 1008 revoked');
    t.same(await busA.closeWithin(1_000), { code: 1008, reason: 'revoked' }, 'A\'s local bus subscriptions were cancelled (1008 revoked)');
    t.ok(await waitUntil(async () => (await adminStatus(sidecars.b)).connections.inbound === 0, 1_000, 20), 'B cut the kept-alive mTLS connection from A\'s sidecar');
    const cuts = metricSum(await metrics(sidecars.b), 'sigil_revocation_cuts_total');
    t.ok(cuts >= 2, `B counted the cut connection and stream (sigil_revocation_cuts_total = ${cuts})`);
    const applied = metricSum(await metrics(sidecars.b), 'sigil_revocations_applied_total', { source: 'nats', result: 'applied' });
    t.equal(applied, 1, 'B applied the record from NATS');
    t.ok(metricSum(await metrics(sidecars.b), 'sigil_authz_decisions_total', { reason: 'revoked' }) >= 1, 'B counted the refusal as a decision with reason revoked');
    const audited = await auditLines(auditB, (l) => l.reason === 'revoked');
    t.ok(audited.length >= 1, 'B audited the refusal');
  });

  t.test('a message A signed before the revocation but delivered after it is dropped', async (t) => {
    // The envelope is captured off NATS the way a broker with a backlog would hold it, then
    // delivered after the revocation; c's envelope, held the same way, is the positive control.
    const held: Record<string, string> = {};
    const sniff = attacker.subscribe('late.>', { callback: (_e, m) => void (held[m.subject] = m.string()) });
    const sign = async (s: RunningSigil, subject: string): Promise<void> => {
      // Only A's sidecar is revoked now; sign with the SVIDs directly (as they would have before).
      const leaf = s === sidecars.a ? leafA : await td.leaf(ID_C);
      attacker.publish(subject, createEnvelopeSigner(svidOf(leaf)).sign({ subject, data: { from: subject } }).jws);
    };
    await sign(sidecars.a, 'late.from-a');
    await sign(sidecars.c, 'late.from-c');
    await waitUntil(() => held['late.from-a'] !== undefined && held['late.from-c'] !== undefined, 2_000);
    sniff.unsubscribe();
    const agentB = await openWs(`ws://${String(sidecars.b.ready.bus)}/bus`);
    t.teardown(() => agentB.ws.close());
    agentB.ws.send(JSON.stringify({ op: 'subscribe', id: 'late', subject: 'late.>' }));
    t.equal(JSON.parse((await agentB.next()).data.toString()).op, 'subscribed');
    await sleep(200); // the subscription reaches the server
    const before = metricSum(await metrics(sidecars.b), 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected', reason: 'revoked' });
    attacker.publish('late.from-a', held['late.from-a']!);
    attacker.publish('late.from-c', held['late.from-c']!);
    const got = JSON.parse((await agentB.next(2_000)).data.toString());
    t.equal(got.subject, 'late.from-c', 'positive control: c\'s held message is delivered');
    await t.rejects(agentB.next(700), 'A\'s held message never reaches agent b');
    t.ok(await waitUntil(async () => metricSum(await metrics(sidecars.b), 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected', reason: 'revoked' }) === before + 1, 2_000), 'b counted it as rejected, reason revoked');
  });

  t.test('an agent cannot have its sidecar sign a revocation record through the bus', async (t) => {
    // Agent c sits next to the sidecar that may issue records; its bus API signs with c's SVID.
    const lift = { v: 1, op: 'lift', id: '00000000-0000-4000-8000-000000000000', kind: 'agent', liftedBy: 'x', liftedAt: new Date().toISOString() };
    const r = await fetch(`http://${String(sidecars.c.ready.bus)}/bus/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ subject: `${SUBJECT}.00000000-0000-4000-8000-000000000000.lift`, data: lift }),
    });
    t.equal(r.status, 400, 'publishing on the revocation subjects is refused');
    t.match(await r.json(), { reason: 'bad_request', detail: /reserved for revocation records/ });
    const ok = await fetch(`http://${String(sidecars.c.ready.bus)}/bus/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ subject: 'news.ok', data: lift }) });
    t.equal(ok.status, 202, 'positive control: the same data on an ordinary subject is published');
    // Even delivered straight into the stream, a bus-signed message is not a record (its typ).
    const js = jetstream(attacker);
    const busSigned = createEnvelopeSigner(svidOf(await td.leaf(ID_C))).sign({ subject: `${SUBJECT}.00000000-0000-4000-8000-000000000001.revoke`, data: { v: 1, op: 'revoke', entry: { id: '00000000-0000-4000-8000-000000000001', kind: 'trust_domain', value: TD, reason: 'x', revokedBy: 'x', revokedAt: new Date().toISOString() } } });
    await js.publish(`${SUBJECT}.00000000-0000-4000-8000-000000000001.revoke`, busSigned.jws);
    await sleep(300);
    t.notOk(await listed(sidecars.b, '00000000-0000-4000-8000-000000000001'), 'a bus-signed "record" is refused by b');
    t.equal((await callAs(sidecars.b, leafD)).gotHttpResponse, true, 'the trust domain was not revoked');
  });

  t.test('forged, tampered and replayed revocation records are refused and audited', async (t) => {
    const js = jetstream(attacker);
    const entryFor = (value: string, id: string): Record<string, unknown> => ({ id, kind: 'agent', value, reason: 'x', revokedBy: 'x', revokedAt: Date.now() });
    const victim = ID_D;
    // 1. An agent the policy does not allow to revoke (evil) signs a valid-looking record.
    const evil = createRecordSigner(svidOf(await td.leaf(ID_EVIL)));
    const forged = signRecord(evil, SUBJECT, { op: 'revoke', entry: entryFor(victim, 'forged-0001') as never });
    await js.publish(forged.subject, forged.jws);
    // 2. c's signature over a record, with the payload changed to another victim.
    const cSigner = createRecordSigner(svidOf(await td.leaf(ID_C)));
    const genuine = signRecord(cSigner, SUBJECT, { op: 'revoke', entry: entryFor(ID_B, 'tamper-0001') as never });
    const [h, p, s] = genuine.jws.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    claims.data.entry.value = victim;
    await js.publish(genuine.subject, `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`);
    await sleep(500);
    const r = await callAs(sidecars.b, leafD);
    t.equal(r.gotHttpResponse && r.status, 200, 'd is still served: neither record was applied');
    t.notOk(await listed(sidecars.b, 'forged-0001'), 'the unauthorized signer\'s record is not in b\'s list');
    t.notOk(await listed(sidecars.b, 'tamper-0001'), 'the tampered record is not in b\'s list');
    t.notOk(await listed(dry, 'forged-0001'), 'a sidecar in dry-run refuses the unauthorized signer too');
    const audit = await auditLines(auditB, (l) => l.action === 'revocation.issue', 3_000);
    t.ok(audit.some((l) => l.action === 'revocation.issue' && l.reason === 'policy_denied' && l.source === ID_EVIL), 'b audited the unauthorized signer');
    t.ok(audit.some((l) => l.action === 'revocation.issue' && l.reason === 'signature_invalid'), 'b audited the tampered record');

    // 3. Replay: c revokes d and lifts it; the original revoke record is then published again.
    const made = await revoke(sidecars.c, { kind: 'agent', value: ID_D, reason: 'drill' });
    const id = made.json.revocation.id as string;
    await waitUntil(() => listed(sidecars.b, id), 2_000, 10);
    t.ok(await waitUntil(() => listed(dry, id), 2_000, 10), 'positive control: the dry-run sidecar applies the authorized record');
    const refused = await callAs(sidecars.b, leafD);
    t.equal(refused.gotHttpResponse && refused.status, 403, 'positive control: c\'s genuine revocation of d is enforced at b');
    const lifted = await admin(sidecars.c, `/v1/revocations/${id}`, { method: 'DELETE' });
    t.equal(lifted.status, 200, 'c lifts it');
    await waitUntil(async () => !(await listed(sidecars.b, id)), 2_000, 10);
    const back = await callAs(sidecars.b, leafD);
    t.equal(back.gotHttpResponse && back.status, 200, 'd is served again after the lift');
    // The attacker re-publishes the original revoke record, byte for byte: the write-once stream
    // refuses it (receivers would also ignore it: a lifted id stays lifted, test/revocation/set).
    const original = await fetchStoredRevoke(id);
    await t.rejects(js.publish(`${SUBJECT}.${id}.revoke`, original), /maximum messages per subject exceeded/, 'the stream refuses the replayed record');
    // On another subject its signature does not fit (the subject is signed).
    await js.publish(`${SUBJECT}.${id}x.revoke`, original).catch(() => undefined);
    await sleep(500);
    t.notOk(await listed(sidecars.b, id), 'the replayed revoke does not come back after the lift');
    const again = await callAs(sidecars.b, leafD);
    t.equal(again.gotHttpResponse && again.status, 200, 'd is still served after the replay');
  });

  t.test('stored records cannot be replaced; lifts must name the right kind; old-dated records are refused', async (t) => {
    const js = jetstream(attacker);
    // A revocation of agent x by c, then an attempt to overwrite the stored record with junk.
    const made = await revoke(sidecars.c, { kind: 'agent', value: 'spiffe://example.org/agent/x', reason: 'overwrite drill' });
    const id = made.json.revocation.id as string;
    await waitUntil(() => listed(sidecars.b, id), 2_000, 10);
    await t.rejects(js.publish(`${SUBJECT}.${id}.revoke`, 'junk'), /maximum messages per subject exceeded/, 'the stream refuses to replace a stored record');
    const jsm = await js.jetstreamManager();
    await t.rejects(jsm.streams.purge('SIGIL_REVOCATIONS'), /purge not permitted/, 'the stream refuses purges');
    // A signer Cedar lets lift task entries only claims kind "task" for the agent entry.
    const tSigner = createRecordSigner(svidOf(await td.leaf(ID_T)));
    const wrongKind = signRecord(tSigner, SUBJECT, { op: 'lift', id, kind: 'task', liftedBy: 'mallory', liftedAt: Date.now() });
    await js.publish(wrongKind.subject, wrongKind.jws);
    await sleep(400);
    t.ok(await listed(sidecars.b, id), 'a lift claiming another kind than the entry\'s is refused');
    const task = await revoke(sidecars.c, { kind: 'task', value: 'overwrite-task' });
    const taskId = task.json.revocation.id as string;
    await waitUntil(() => listed(sidecars.b, taskId), 2_000, 10);
    const rightKind = signRecord(tSigner, SUBJECT, { op: 'lift', id: taskId, kind: 'task', liftedBy: 'ops', liftedAt: Date.now() });
    await js.publish(rightKind.subject, rightKind.jws);
    t.ok(await waitUntil(async () => !(await listed(sidecars.b, taskId)), 2_000, 10), 'positive control: the same signer lifts a task entry');
    // A record signed with c's key but dated two minutes before the stream stores it.
    const cSigner = createRecordSigner(svidOf(await td.leaf(ID_C)));
    const old = signRecord(cSigner, SUBJECT, { op: 'revoke', entry: { id: 'backdated-0001', kind: 'agent', value: ID_D, reason: 'x', revokedBy: 'x', revokedAt: Date.now() - 120_000 } }, Date.now() - 120_000);
    await js.publish(old.subject, old.jws);
    const fresh = signRecord(cSigner, SUBJECT, { op: 'revoke', entry: { id: 'fresh-0001', kind: 'task', value: 'fresh-task', reason: 'x', revokedBy: 'x', revokedAt: Date.now() } });
    await js.publish(fresh.subject, fresh.jws);
    t.ok(await waitUntil(() => listed(sidecars.b, 'fresh-0001'), 2_000, 10), 'positive control: a record signed just before it was stored is applied');
    t.notOk(await listed(sidecars.b, 'backdated-0001'), 'a record dated long before it was stored is refused');
    const audit = await auditLines(auditB, (l) => l.action === 'revocation.issue' && l.bus?.detail === 'iat_not_at_store_time', 2_000);
    t.ok(audit.length >= 1, 'and audited');
    // The late joiner still gets x's revocation (the junk never replaced it).
    const late = await runSigil(t, await sidecarYaml('late', 'spiffe://example.org/agent/late', { inbound: { listen: '127.0.0.1:0', upstream: 'http://127.0.0.1:9' } }));
    const list = (await admin(late, '/v1/revocations')).json.revocations as { id: string }[];
    t.ok(list.some((e) => e.id === id), 'a sidecar started after the overwrite attempt has the revocation');
    t.notOk(list.some((e) => e.id === taskId), 'and the lift');
  });

  t.test('a revoked agent lifted again is served again, also by its own sidecar', async (t) => {
    const before = (await admin(sidecars.c, '/v1/revocations')).json.revocations as { id: string; value: string }[];
    const entryA = before.find((e) => e.value === ID_A);
    t.ok(entryA, 'A is still revoked');
    t.equal((await admin(sidecars.c, `/v1/revocations/${entryA!.id}`, { method: 'DELETE' })).status, 200, 'c lifts it');
    for (const [name, s] of Object.entries(sidecars)) {
      t.ok(await waitUntil(async () => !(await listed(s, entryA!.id)), 2_000, 10), `${name} applied the lift (a's own sidecar too)`);
    }
    const own = await plainRequest({ address: sidecars.a.outbound, path: '/work', headers: { host: 'agent-c' } });
    t.equal(own.gotHttpResponse && own.status, 200, 'A\'s calls go through its own sidecar again');
    const served = await callAs(sidecars.b, leafA);
    t.equal(served.gotHttpResponse && served.status, 200, 'b serves A again');
    const again = await revoke(sidecars.c, { kind: 'agent', value: ID_A, reason: 'revoked again for the rest of the suite' });
    t.ok(await waitUntil(() => listed(sidecars.b, again.json.revocation.id), 2_000, 10), 'A is revoked again for the tests that follow');
  });

  /** The stored revoke record for `id`, as it sits in the stream (a replay needs the exact bytes). */
  async function fetchStoredRevoke(id: string): Promise<string> {
    const js = jetstream(attacker);
    const jsm = await js.jetstreamManager();
    const m = await jsm.streams.getMessage('SIGIL_REVOCATIONS', { last_by_subj: `${SUBJECT}.${id}.revoke` });
    if (!m) throw new Error('the revoke record is not in the stream');
    return m.string();
  }

  t.test('a restarted sidecar comes up with the current list before it is ready', async (t) => {
    const made = await revoke(sidecars.c, { kind: 'agent', value: 'spiffe://example.org/agent/gone', reason: 'decommissioned' });
    await waitUntil(() => listed(sidecars.b, made.json.revocation.id), 2_000, 10);
    await sidecars.b.stop();
    sidecars.b = await runSigil(root, configs['b']); // lives on for the next test
    // The readiness line is only written once the list is loaded: check at once, no waiting.
    const list = (await admin(sidecars.b, '/v1/revocations')).json.revocations as { id: string; value: string }[];
    t.ok(list.some((e) => e.value === ID_A), 'A\'s revocation is there at readiness');
    t.ok(list.some((e) => e.id === made.json.revocation.id), 'and the latest one');
    const r = await callAs(sidecars.b, leafA);
    t.equal(r.gotHttpResponse && r.json?.reason, 'revoked', 'A is refused from the first request');
    const d = await callAs(sidecars.b, leafD);
    t.equal(d.gotHttpResponse && d.status, 200, 'positive control: d is served (its revocation was lifted)');
  });

  t.test('a stream deleted and created again is read again by running sidecars', async (t) => {
    const jsm = await jetstream(attacker).jetstreamManager();
    await jsm.streams.delete('SIGIL_REVOCATIONS');
    const made = await revoke(sidecars.c, { kind: 'task', value: 'after-recreate' });
    t.equal(made.status, 201, 'c applies it (the publish waits for a stream)');
    t.ok(await waitUntil(() => listed(sidecars.b, made.json.revocation.id), 10_000, 100), 'b receives records from the new stream (deleting the stream loses what it held: deny stream deletion in NATS permissions, docs/revocation.md)');
  });

  t.test('without NATS the list ages; failClosedAfter refuses new connections; it recovers', async (t) => {
    const cfg = await sidecarYaml('f', 'spiffe://example.org/agent/f', {
      inbound: { listen: '127.0.0.1:0', upstream: (await startAppUpstream(t)).url },
      revocation: { nats: {}, syncInterval: '200ms', failClosedAfter: '1500ms' },
    });
    const f = await runSigil(t, cfg);
    const age = async (): Promise<number> => metricSum(await metrics(f), 'sigil_revocation_list_age_seconds');
    t.ok((await age()) < 1, 'fresh while NATS is up');
    const ok = await callAs(f, leafD, '/');
    t.equal(ok.gotHttpResponse && ok.status, 200, 'positive control: served while the list is fresh');
    await nats.stop();
    await sleep(2_200);
    t.ok((await age()) > 1.5, `the list ages while NATS is down (${await age()} s)`);
    const stale = await callAs(f, leafD);
    t.equal(stale.gotHttpResponse && stale.status, 403, 'a new connection is refused');
    t.equal(stale.gotHttpResponse && stale.json?.reason, 'revocation_stale', 'reason revocation_stale');
    const stillEnforced = await callAs(sidecars.b, leafA);
    t.equal(stillEnforced.gotHttpResponse && stillEnforced.json?.reason, 'revoked', 'b (no failClosedAfter) keeps enforcing the last known list');
    await nats.restart();
    await waitUntil(async () => (await age()) < 1, 15_000, 200);
    const recovered = await callAs(f, leafD);
    t.equal(recovered.gotHttpResponse && recovered.status, 200, 'served again once NATS is back and the list is fresh');
  });
}
