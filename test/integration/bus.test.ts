// The signed bus through a real nats-server (TLS, client certificates verified against the
// trust bundle) and real `sigil run` sidecars:
//   agent A ──local API──▶ sidecar A: bus.publish, sign ──▶ NATS ──▶ sidecar B: verify, bus.deliver ──▶ agent B
// An attacker holding a legitimate SVID of the trust domain (so NATS lets it in, as it would any
// workload) publishes forged, altered, replayed, mis-signed and malformed envelopes straight to
// NATS. None may reach agent B; each is counted in sigil_bus_messages_total with its reason and
// audited. Every attack has a positive control: a valid envelope on the same channel arrives.
import { createHash, createHmac, sign as cryptoSign, X509Certificate } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import t from 'tap';
import { createEnvelopeSigner, type EnvelopeSigner } from '../../src/bus/envelope/index.js';
import { createCa, createLeaf, type Issued } from '../fixtures/certs.js';
import { runSigil, setupTrustDomain, sidecarConfig, tempDir, waitUntil, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';
import { startNats, withNatsServer, type RunningNats } from '../helpers/nats.js';
import { svidOf } from '../helpers/envelope.js';
import { auditLines, metricSum, metrics, openWs, type WsClient } from '../helpers/observe.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_EVIL = 'spiffe://example.org/agent/evil';
const ID_MUTED = 'spiffe://example.org/agent/muted';

const POLICY = `
@id("a-publishes-orders") permit (principal == Agent::"${ID_A}", action == Action::"bus.publish", resource)
when { resource.subject like "orders.*" };
@id("deliver-orders") permit (principal in TrustDomain::"${TD}", action == Action::"bus.deliver", resource)
when { resource.subject like "orders.*" };
@id("muted") forbid (principal == Agent::"${ID_MUTED}", action == Action::"bus.deliver", resource);
`;

await withNatsServer(t, suite);


const b64url = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A JWS built by hand (for envelopes our signer refuses to make), ES256 over the signing input. */
function craft(header: Record<string, unknown>, claims: Record<string, unknown>, leaf: Issued | undefined): string {
  const input = `${b64url(header)}.${b64url(claims)}`;
  const sig = leaf ? cryptoSign('sha256', Buffer.from(input), { key: leaf.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url') : '';
  return `${input}.${sig}`;
}

function claimsFor(id: string, subject: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const now = Math.floor(Date.now() / 1000);
  return { iss: id, sub: subject, iat: now, exp: now + 60, jti: createHash('sha256').update(Math.random().toString()).digest('base64url').slice(0, 24), data: { forged: true }, ...extra };
}

async function suite(natsBinary: string): Promise<void> {
  let td: TrustDomainFixture;
  let nats: RunningNats;
  let a: RunningSigil;
  let b: RunningSigil;
  let auditB: string;
  let evilLeaf: Issued;
  let evil: EnvelopeSigner;
  let attacker: NatsConnection;
  let agentB: WsClient;

  t.before(async () => {
    const dir = await tempDir(t);
    td = await setupTrustDomain(dir, TD);
    nats = await startNats(t, natsBinary, td.ca.pem);
    await writeFile(join(dir, 'policy.cedar'), POLICY);
    auditB = join(dir, 'audit-b.jsonl');
    const sidecar = async (name: string, id: string, extra: Record<string, unknown> = {}): Promise<RunningSigil> =>
      runSigil(
        t,
        await writeConfig(
          dir,
          `${name}.yaml`,
          sidecarConfig({
            trustDomain: TD,
            identity: { dev: { caDir: td.caDir, spiffeId: id, ttl: '15m' } },
            bus: { local: '127.0.0.1:0', nats: { servers: [nats.url], tls: { ca: nats.caFile } }, envelope: { maxBytes: 65536 } },
            policy: { cedar: './policy.cedar' },
            ...extra,
          }),
        ),
      );
    b = await sidecar('b', ID_B, { audit: { path: auditB } });
    a = await sidecar('a', ID_A);
    evilLeaf = await td.leaf(ID_EVIL);
    evil = createEnvelopeSigner(svidOf(evilLeaf));
    attacker = await connect({ servers: [nats.url], tls: { cert: evilLeaf.pem, key: evilLeaf.keyPem, ca: nats.caPem }, name: 'attacker' });
    t.teardown(() => attacker.close());
    agentB = await openWs(`ws://${String(b.ready.bus)}/bus`);
    t.teardown(() => agentB.ws.close());
    agentB.ws.send(JSON.stringify({ op: 'subscribe', id: 'orders', subject: 'orders.>' }));
    const ack = JSON.parse((await agentB.next()).data.toString());
    if (ack.op !== 'subscribed') throw new Error(`subscribe failed: ${JSON.stringify(ack)}`);
    // The subscription reaches the server before the first publish: wait until a probe arrives.
    await waitUntil(async () => {
      attacker.publish('orders.probe', evil.sign({ subject: 'orders.probe', data: 'probe' }).jws);
      try {
        const m = JSON.parse((await agentB.next(300)).data.toString());
        return m.op === 'message';
      } catch {
        return false;
      }
    }, 10_000);
  });

  /** The next message frame agent B gets within `ms`, or undefined. */
  async function nextAtB(ms = 1_500): Promise<any> {
    try {
      return JSON.parse((await agentB.next(ms)).data.toString());
    } catch {
      return undefined;
    }
  }

  async function rejectedAtB(reason: string): Promise<number> {
    return metricSum(await metrics(b), 'sigil_bus_messages_total', { direction: 'inbound', result: 'rejected', reason });
  }

  const publishViaA = async (body: unknown): Promise<{ status: number; json: any }> => {
    const res = await fetch(`http://${String(a.ready.bus)}/bus/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, json: await res.json() };
  };

  t.test('agent A publishes through its sidecar; agent B receives it with the verified sender', async (t) => {
    const r = await publishViaA({ subject: 'orders.created', data: { order: 42 } });
    t.equal(r.status, 202, 'accepted by sidecar A');
    t.match(r.json, { subject: 'orders.created', jti: String });
    const m = await nextAtB();
    t.match(m, { op: 'message', id: 'orders', subject: 'orders.created', from: ID_A, data: { order: 42 }, jti: r.json.jti });
    const bytes = await publishViaA({ subject: 'orders.blob', bytes: Buffer.from([0, 1, 2, 255]).toString('base64') });
    t.equal(bytes.status, 202);
    const mb = await nextAtB();
    t.equal(mb?.bytes, Buffer.from([0, 1, 2, 255]).toString('base64'), 'bytes arrive intact');
    t.notOk('data' in (mb ?? {}), 'no data field for a bytes message');
  });

  t.test('the WebSocket API publishes too', async (t) => {
    const agentA = await openWs(`ws://${String(a.ready.bus)}/bus`);
    t.teardown(() => agentA.ws.close());
    agentA.ws.send(JSON.stringify({ op: 'publish', ref: 7, subject: 'orders.ws', data: 'hi' }));
    t.match(JSON.parse((await agentA.next()).data.toString()), { op: 'published', ref: 7, subject: 'orders.ws' });
    t.match(await nextAtB(), { subject: 'orders.ws', from: ID_A, data: 'hi' });
    agentA.ws.send(JSON.stringify({ op: 'publish', ref: 8, subject: 'secrets.ws', data: 'no' }));
    t.match(JSON.parse((await agentA.next()).data.toString()), { op: 'error', ref: 8, reason: 'policy_denied' });
    agentA.ws.send('not json');
    t.match(JSON.parse((await agentA.next()).data.toString()), { op: 'error', reason: 'bad_request' });
  });

  // Each attack: publish straight to NATS, expect nothing at B and the reason counted; then a
  // valid envelope from the same attacker connection arrives (the channel works).
  const attack = (name: string, reason: string, envelope: () => Promise<string> | string, subject = 'orders.attack'): void => {
    t.test(`attack: ${name} → not delivered, ${reason}`, async (t) => {
      const before = await rejectedAtB(reason);
      attacker.publish(subject, await envelope());
      t.equal(await nextAtB(700), undefined, 'agent B received nothing');
      await waitUntil(async () => (await rejectedAtB(reason)) > before, 5_000).catch(() => undefined);
      t.equal((await rejectedAtB(reason)) - before, 1, `counted: sigil_bus_messages_total{direction="inbound",result="rejected",reason="${reason}"}`);
      const valid = evil.sign({ subject: 'orders.control', data: name });
      attacker.publish('orders.control', valid.jws);
      t.match(await nextAtB(), { subject: 'orders.control', from: ID_EVIL, data: name }, 'positive control: a valid envelope on the same connection arrives');
    });
  };

  attack('a forged envelope: garbage', 'envelope_malformed', () => 'this is not a JWS');
  attack('a valid envelope with the payload altered', 'signature_invalid', () => {
    const [h, p, s] = evil.sign({ subject: 'orders.attack', data: { amount: 1 } }).jws.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    claims.data = { amount: 1_000_000 };
    return `${h}.${b64url(claims)}.${s}`;
  });
  let replayed = '';
  t.test('replay: the first delivery arrives (positive control)', async (t) => {
    replayed = evil.sign({ subject: 'orders.attack', data: 'once' }).jws;
    attacker.publish('orders.attack', replayed);
    t.match(await nextAtB(), { data: 'once' });
  });
  attack('the same envelope published again', 'replay', () => replayed);
  attack('iss names agent A, the certificate is evil’s', 'issuer_mismatch', () =>
    craft({ alg: 'ES256', typ: 'sigil-msg+jws', x5c: [evilLeaf.der.toString('base64')] }, claimsFor(ID_A, 'orders.attack'), evilLeaf),
  );
  attack('signed by a rogue CA with the same trust-domain name, claiming agent A', 'signer_untrusted', async () => {
    const rogueCa = await createCa({ trustDomain: TD });
    const rogue = await createLeaf(rogueCa, ID_A);
    return createEnvelopeSigner(svidOf(rogue)).sign({ subject: 'orders.attack', data: 'rogue' }).jws;
  });
  attack('signed with another trust domain’s key', 'signer_untrusted', async () => {
    const otherCa = await createCa({ trustDomain: 'other.example' });
    const other = await createLeaf(otherCa, 'spiffe://other.example/agent/x');
    return createEnvelopeSigner(svidOf(other)).sign({ subject: 'orders.attack', data: 'other' }).jws;
  });
  attack('expired', 'envelope_expired', () => {
    const now = Math.floor(Date.now() / 1000);
    return craft({ alg: 'ES256', typ: 'sigil-msg+jws', x5c: [evilLeaf.der.toString('base64')] }, claimsFor(ID_EVIL, 'orders.attack', { iat: now - 600, exp: now - 540 }), evilLeaf);
  });
  attack('alg: none', 'alg_not_allowed', () => craft({ alg: 'none', typ: 'sigil-msg+jws', x5c: [evilLeaf.der.toString('base64')] }, claimsFor(ID_EVIL, 'orders.attack'), undefined));
  attack('HS256 keyed with the signer’s public key', 'alg_not_allowed', () => {
    const header = { alg: 'HS256', typ: 'sigil-msg+jws', x5c: [evilLeaf.der.toString('base64')] };
    const input = `${b64url(header)}.${b64url(claimsFor(ID_EVIL, 'orders.attack'))}`;
    const key = new X509Certificate(evilLeaf.der).publicKey.export({ format: 'pem', type: 'spki' });
    return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
  });
  attack('oversized (over bus.envelope.maxBytes)', 'envelope_too_large', () => evil.sign({ subject: 'orders.attack', data: 'x'.repeat(70_000) }).jws);
  attack('malformed JSON claims', 'envelope_malformed', () => {
    const input = `${b64url({ alg: 'ES256', typ: 'sigil-msg+jws', x5c: [evilLeaf.der.toString('base64')] })}.${Buffer.from('{"iss": nope').toString('base64url')}`;
    return `${input}.${cryptoSign('sha256', Buffer.from(input), { key: evilLeaf.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
  });
  attack('a valid envelope for another subject, re-published on orders.attack', 'subject_mismatch', () => evil.sign({ subject: 'orders.elsewhere', data: 'moved' }).jws);

  t.test('refused messages are audited with their reason; the source is "unverified" unless the signer was proven', async (t) => {
    const lines = await auditLines(auditB, (l) => l.action === 'bus.deliver' && l.decision === 'deny', 5_000);
    const reasons = new Set(lines.map((l) => l.reason));
    for (const r of ['envelope_malformed', 'signature_invalid', 'replay', 'issuer_mismatch', 'signer_untrusted', 'envelope_expired', 'alg_not_allowed', 'envelope_too_large', 'subject_mismatch']) {
      t.ok(reasons.has(r), `audit has a ${r} line`);
    }
    t.ok(lines.every((l) => l.resource?.type === 'Topic' && l.destination === ID_B));
    t.ok(lines.filter((l) => l.reason === 'signer_untrusted').every((l) => l.source === 'unverified'), 'an unproven signer is not named');
    t.ok(lines.filter((l) => l.reason === 'subject_mismatch').every((l) => l.source === ID_EVIL), 'a proven signer is named');
    t.ok(lines.every((l) => !JSON.stringify(l).includes('eyJ')), 'no envelope or token text in the audit trail');
  });

  t.test('policy: A may not publish to secrets.*; the refusal happens at sidecar A', async (t) => {
    const r = await publishViaA({ subject: 'secrets.keys', data: 'x' });
    t.equal(r.status, 403);
    t.match(r.json, { error: 'forbidden', reason: 'policy_denied' });
    const allowed = await publishViaA({ subject: 'orders.fine', data: 'y' });
    t.equal(allowed.status, 202, 'orders.* is allowed (positive control)');
    t.match(await nextAtB(), { subject: 'orders.fine' });
    t.ok(metricSum(await metrics(a), 'sigil_bus_messages_total', { direction: 'outbound', result: 'rejected', reason: 'policy_denied' }) >= 1, 'counted at A');
  });

  t.test('policy: B never sees a valid message from a sender it may not receive from', async (t) => {
    const mutedLeaf = await td.leaf(ID_MUTED);
    const muted = createEnvelopeSigner(svidOf(mutedLeaf));
    const before = await rejectedAtB('policy_denied');
    attacker.publish('orders.muted', muted.sign({ subject: 'orders.muted', data: 'shh' }).jws);
    t.equal(await nextAtB(700), undefined, 'not delivered');
    await waitUntil(async () => (await rejectedAtB('policy_denied')) > before, 5_000).catch(() => undefined);
    t.equal((await rejectedAtB('policy_denied')) - before, 1, 'counted as policy_denied');
    attacker.publish('orders.evil', evil.sign({ subject: 'orders.evil', data: 'ok' }).jws);
    t.match(await nextAtB(), { from: ID_EVIL }, 'another sender on the same subject is delivered (positive control)');
  });

  t.test('bad requests to the local API get a reason, not a crash', async (t) => {
    t.match(await publishViaA({ subject: 'orders.*', data: 1 }), { status: 400, json: { reason: 'bad_request' } });
    t.match(await publishViaA({ subject: 'orders.x', data: 1, bytes: 'AA==' }), { status: 400, json: { reason: 'bad_request' } });
    t.match(await publishViaA({ subject: 'orders.x', data: 'x'.repeat(70_000) }), { status: 413 });
    const res = await fetch(`http://${String(a.ready.bus)}/bus/publish`, { method: 'POST', body: '{nope' });
    t.equal(res.status, 400);
    t.equal((await publishViaA({ subject: 'orders.after', data: 1 })).status, 202, 'still serving (positive control)');
    t.match(await nextAtB(), { subject: 'orders.after' });
  });
}

