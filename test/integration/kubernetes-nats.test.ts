// examples/kubernetes/nats.yaml's nats.conf, run for real. A nats-server gets that very file —
// only the listen addresses, the file paths and the server name are rewritten for loopback —
// with a server certificate of its own and the trust domain's CA as the client CA (SPIRE's
// bundle in the cluster). Three `sigil run` sidecars connect to it as the users nats.conf names:
// the planner with the example's own sigil.yaml and policy.cedar (identity from the dev issuer
// under the planner's SPIFFE ID instead of SPIRE), the researcher and the revoker.
//
// What it shows: the permissions in nats.conf are enough for everything Sigil does over NATS —
// the planner creates and reads the revocation stream, the signed bus works both ways, the
// revoker's revocation is stored and reaches the others, and so does its lift — and they refuse
// what they should: an SVID that names no user, a client without a certificate, the planner
// publishing a record or on a subject that is not its own, and anyone deleting or purging the
// stream. The connection and publish refusals each have a positive control that differs only in
// who asks; the stream refusals must be NATS permission violations (the stream's own
// deny_purge would refuse a purge anyway).
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import t from 'tap';
import YAML, { parseAllDocuments } from 'yaml';
import { createCa, createCert } from '../fixtures/certs.js';
import { startAppUpstream } from '../helpers/app-upstream.js';
import { closedPort, runSigil, setupTrustDomain, sleep, tempDir, waitUntil, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';
import { withNatsServer } from '../helpers/nats.js';
import { adminStatus, openWs, type WsClient } from '../helpers/observe.js';

const DIR = fileURLToPath(new URL('../../../examples/kubernetes/', import.meta.url));
const TD = 'example.org';
const PLANNER = 'spiffe://example.org/ns/agents/sa/planner';
const RESEARCHER = 'spiffe://example.org/ns/agents/sa/researcher';
const REVOKER = 'spiffe://example.org/ns/ops/sa/revoker';
const STREAM = 'SIGIL_REVOCATIONS';

type Obj = Record<string, any>;

/** The ConfigMap `name`'s data, from an example file. */
async function configMapData(file: string, name: string): Promise<Record<string, string>> {
  const docs = parseAllDocuments(await readFile(join(DIR, file), 'utf8')).map((d) => d.toJS() as Obj);
  const cm = docs.find((d) => d.kind === 'ConfigMap' && d.metadata?.name === name);
  if (!cm) throw new Error(`no ConfigMap ${name} in ${file}`);
  return cm.data as Record<string, string>;
}

/** `text` with `from` replaced; throws when the example no longer has `from` (update this test then). */
function rewrite(text: string, from: string, to: string): string {
  if (!text.includes(from)) throw new Error(`nats.conf no longer contains ${JSON.stringify(from)}`);
  return text.split(from).join(to);
}

await withNatsServer(t, suite);

async function suite(natsBinary: string): Promise<void> {
  let dir: string;
  let td: TrustDomainFixture;
  let url: string;
  let serverCaPem: string;
  let serverCaFile: string;
  let planner: RunningSigil;
  let researcher: RunningSigil;
  let revoker: RunningSigil;
  let adminToken: string;

  /** A raw NATS client holding an SVID of the trust domain for `id`. */
  const natsAs = async (id: string): Promise<NatsConnection> => {
    const leaf = await td.leaf(id);
    const nc = await connect({ servers: [url], tls: { cert: leaf.pem, key: leaf.keyPem, ca: serverCaPem }, name: id, reconnect: false, timeout: 3_000 });
    t.teardown(() => nc.close());
    return nc;
  };
  const streamMessages = async (nc: NatsConnection): Promise<number> => (await (await jetstreamManager(nc)).streams.info(STREAM)).state.messages;

  t.before(async () => {
    dir = await tempDir(t, 'sigil-k8s-nats-');
    td = await setupTrustDomain(dir, TD);

    // The server side of nats.conf: its certificate (loopback names instead of the
    // cluster DNS name), the client CA, the JetStream directory.
    const ca = await createCa({ trustDomain: 'nats.test' });
    const server = await createCert({ signer: ca, role: 'nats-server', ipAddresses: ['127.0.0.1'], dnsNames: ['localhost'], keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['1.3.6.1.5.5.7.3.1'] });
    serverCaPem = ca.pem;
    serverCaFile = join(dir, 'nats-ca.crt');
    await writeFile(serverCaFile, ca.pem);
    await writeFile(join(dir, 'tls.crt'), server.pem);
    await writeFile(join(dir, 'tls.key'), server.keyPem, { mode: 0o600 });
    await writeFile(join(dir, 'bundle.crt'), td.ca.pem);
    const port = await closedPort();
    url = `tls://127.0.0.1:${port}`;
    let conf = (await configMapData('nats.yaml', 'nats-config'))['nats.conf']!;
    conf = rewrite(conf, 'listen: 0.0.0.0:4222', `listen: 127.0.0.1:${port}`);
    conf = rewrite(conf, 'http: 0.0.0.0:8222', 'http: 127.0.0.1:-1');
    conf = rewrite(conf, 'store_dir: /data', `store_dir: "${join(dir, 'jetstream')}"`);
    conf = rewrite(conf, '/etc/nats-tls/', `${dir}/`);
    conf = rewrite(conf, '/etc/nats-client-ca/', `${dir}/`);
    const confFile = join(dir, 'nats.conf');
    await writeFile(confFile, conf);
    const proc = spawn(natsBinary, ['-c', confFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POD_NAME: 'nats-0' } });
    let log = '';
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer): void => {
        log += d.toString();
        if (log.includes('Server is ready')) resolve();
      };
      proc.stdout.on('data', onData);
      proc.stderr.on('data', onData);
      proc.once('exit', (code) => reject(new Error(`nats-server exited (${code}) with the example's nats.conf: ${log}`)));
      setTimeout(() => reject(new Error(`nats-server not ready in 10 s: ${log}`)), 10_000).unref();
    });
    t.teardown(() => void proc.kill('SIGKILL'));

    // The planner: the example's sigil.yaml and policy.cedar. Only what cannot exist outside
    // the cluster changes: the identity source, addresses, file paths.
    const data = await configMapData('sigil-config.yaml', 'planner-sigil');
    await writeFile(join(dir, 'policy.cedar'), data['policy.cedar']!);
    adminToken = 'k8s-example-admin-token-0123456789';
    await writeFile(join(dir, 'admin.token'), adminToken);
    const sidecar = YAML.parse(data['sigil.yaml']!) as Obj;
    const app = await startAppUpstream(t);
    sidecar.identity = { dev: { caDir: td.caDir, spiffeId: PLANNER, ttl: '15m' } };
    sidecar.inbound = { listen: '127.0.0.1:0', upstream: app.url };
    sidecar.outbound.listen = '127.0.0.1:0';
    sidecar.bus.local = '127.0.0.1:0';
    t.strictSame(sidecar.bus.nats.servers, ['tls://nats.agents.svc.cluster.local:4222'], 'the example dials the nats Service');
    sidecar.bus.nats = { servers: [url], tls: { ca: serverCaFile } };
    sidecar.admin = { listen: '127.0.0.1:0', tokenFile: join(dir, 'admin.token') };
    sidecar.shutdown = { drainTimeout: '2s' }; // a quick teardown (shutdown.delay is checked by test/config)
    planner = await runSigil(t, await writeConfig(dir, 'planner.yaml', sidecar));

    // The researcher and the revoker: the users nats.conf has for them, the same NATS settings.
    const busAndFeed = { bus: { local: '127.0.0.1:0', nats: { servers: [url], tls: { ca: serverCaFile } } }, revocation: sidecar.revocation };
    await writeFile(
      join(dir, 'researcher.cedar'),
      `@id("publishes-research") permit (principal == Agent::"${RESEARCHER}", action == Action::"bus.publish", resource) when { resource.subject like "research.*" };
@id("plans-delivered") permit (principal == Agent::"${PLANNER}", action == Action::"bus.deliver", resource) when { resource.subject like "plans.*" };
@id("ops-revokes") permit (principal == Agent::"${REVOKER}", action == Action::"revocation.issue", resource == Topic::"sigil.revocations");
`,
    );
    researcher = await runSigil(
      t,
      await writeConfig(dir, 'researcher.yaml', {
        trustDomain: TD,
        identity: { dev: { caDir: td.caDir, spiffeId: RESEARCHER, ttl: '15m' } },
        inbound: { listen: '127.0.0.1:0', upstream: app.url },
        ...busAndFeed,
        policy: { cedar: './researcher.cedar' },
        admin: { listen: '127.0.0.1:0' },
        shutdown: { drainTimeout: '2s' },
      }),
    );
    revoker = await runSigil(
      t,
      await writeConfig(dir, 'revoker.yaml', {
        trustDomain: TD,
        identity: { dev: { caDir: td.caDir, spiffeId: REVOKER, ttl: '15m' } },
        inbound: { listen: '127.0.0.1:0', upstream: app.url },
        revocation: { nats: { ...sidecar.revocation.nats, servers: [url], tls: { ca: serverCaFile } } },
        policy: { cedar: './policy.cedar' }, // the planner's: its ops-revokes rule is the issuer's too
        admin: { listen: '127.0.0.1:0' },
        shutdown: { drainTimeout: '2s' },
      }),
    );
  });

  const admin = async (s: RunningSigil, path: string, init: RequestInit = {}, token?: string): Promise<{ status: number; json: any }> => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    const res = await fetch(`http://${s.admin}${path}`, { ...init, headers });
    return { status: res.status, json: await res.json() };
  };
  const next = async (ws: WsClient, ms = 3_000): Promise<any> => {
    try {
      return JSON.parse((await ws.next(ms)).data.toString());
    } catch {
      return undefined;
    }
  };
  const publish = async (s: RunningSigil, subject: string, data: unknown): Promise<number> =>
    (await fetch(`http://${String(s.ready.bus)}/bus/publish`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ subject, data }) })).status;
  const subscribe = async (s: RunningSigil, subject: string): Promise<WsClient> => {
    const ws = await openWs(`ws://${String(s.ready.bus)}/bus`);
    t.teardown(() => ws.ws.close());
    ws.ws.send(JSON.stringify({ op: 'subscribe', id: 's', subject }));
    const answer = await next(ws);
    if (answer?.op !== 'subscribed') throw new Error(`subscribe ${subject}: ${JSON.stringify(answer)}`);
    return ws;
  };

  t.test('the sidecars read the revocation stream with the permissions nats.conf gives them', async (t) => {
    for (const [name, s] of [['planner', planner], ['researcher', researcher], ['revoker', revoker]] as const) {
      const status = await adminStatus(s);
      t.equal(status.ready, true, `${name} is ready (it has read the stream)`);
      t.match(status.revocation?.sources?.nats, { connected: true, streamProtected: true }, `${name}: connected, and the stream is write-once`);
    }
    const nc = await natsAs(PLANNER);
    const info = await (await jetstreamManager(nc)).streams.info(STREAM);
    t.match(info.config, { subjects: ['sigil.revocations.*.*'], max_msgs_per_subject: 1, deny_delete: true, deny_purge: true }, 'the planner (first to start) created the stream as docs/revocation.md says');
  });

  t.test('the signed bus works both ways through nats.conf\'s users', async (t) => {
    const results = await subscribe(planner, 'research.>');
    t.equal(await publish(researcher, 'research.done', { plan: 7 }), 202);
    t.match(await next(results), { op: 'message', subject: 'research.done', from: RESEARCHER, data: { plan: 7 } }, 'the researcher\'s result reaches the planner');
    const plans = await subscribe(researcher, 'plans.>');
    t.equal(await publish(planner, 'plans.created', { id: 8 }), 202);
    t.match(await next(plans), { op: 'message', subject: 'plans.created', from: PLANNER, data: { id: 8 } }, 'the planner\'s plan reaches the researcher');
  });

  t.test('the revoker\'s revocation and its lift reach the other sidecars', async (t) => {
    const victim = 'spiffe://example.org/ns/agents/sa/compromised';
    const made = await admin(revoker, '/v1/revocations', { method: 'POST', body: JSON.stringify({ kind: 'agent', value: victim, reason: 'k8s example', by: 'test' }) });
    t.equal(made.status, 201);
    t.equal(made.json.propagated, true, 'stored in the stream: the revoker may publish records');
    const id = made.json.revocation.id as string;
    const listed = async (s: RunningSigil, token?: string): Promise<boolean> => ((await admin(s, '/v1/revocations', {}, token)).json.revocations as { id: string }[]).some((e) => e.id === id);
    t.ok(await waitUntil(() => listed(planner, adminToken), 5_000), 'the planner applied it');
    t.ok(await waitUntil(() => listed(researcher), 5_000), 'the researcher applied it');
    const lifted = await admin(revoker, `/v1/revocations/${id}?by=test`, { method: 'DELETE' });
    t.equal(lifted.status, 200);
    t.equal(lifted.json.propagated, true, 'the lift is stored too');
    t.ok(await waitUntil(async () => !(await listed(planner, adminToken)), 5_000), 'the planner lifted it');
  });

  t.test('nats.conf refuses what Sigil must not be able to do', async (t) => {
    // Who may connect at all.
    const intruder = await td.leaf('spiffe://example.org/ns/agents/sa/intruder');
    await t.rejects(connect({ servers: [url], tls: { cert: intruder.pem, key: intruder.keyPem, ca: serverCaPem }, reconnect: false, timeout: 3_000 }), 'an SVID of the trust domain that names no user is refused');
    await t.rejects(connect({ servers: [url], tls: { ca: serverCaPem }, reconnect: false, timeout: 3_000 }), 'a client without a certificate is refused');
    const asPlanner = await natsAs(PLANNER);
    t.ok(asPlanner.info?.server_id, 'positive control: the planner\'s SVID connects');

    // Revocation records: the planner may not publish one, the revoker may.
    const asRevoker = await natsAs(REVOKER);
    const before = await streamMessages(asPlanner);
    asPlanner.publish('sigil.revocations.plannerjunk1.revoke', 'junk');
    await asPlanner.flush().catch(() => {});
    await sleep(300);
    t.equal(await streamMessages(asPlanner), before, 'the planner\'s record is not stored');
    asRevoker.publish('sigil.revocations.revokerjunk1.revoke', 'junk');
    await asRevoker.flush();
    t.ok(await waitUntil(async () => (await streamMessages(asPlanner)) === before + 1, 3_000), 'positive control: the revoker\'s is (and every sidecar refuses it as junk)');

    // Bus subjects: the planner may not publish on the researcher's.
    const asResearcher = await natsAs(RESEARCHER);
    const sub = asPlanner.subscribe('research.>');
    const got: string[] = [];
    void (async () => {
      for await (const m of sub) got.push(m.string());
    })();
    await asPlanner.flush();
    const otherPlanner = await natsAs(PLANNER);
    otherPlanner.publish('research.fake', 'from the planner');
    await otherPlanner.flush().catch(() => {});
    asResearcher.publish('research.real', 'from the researcher');
    await asResearcher.flush();
    t.ok(await waitUntil(() => got.includes('from the researcher'), 3_000), 'positive control: the researcher publishes on research.>');
    t.notOk(got.includes('from the planner'), 'the planner cannot');

    // The stream: nobody here may delete or purge it.
    for (const [name, nc] of [['planner', asPlanner], ['revoker', asRevoker]] as const) {
      const jsm = await jetstreamManager(nc, { timeout: 2_000 });
      // Refused by nats.conf, not only by the stream's own deny_purge: a permissions violation.
      await t.rejects(jsm.streams.delete(STREAM), /permission/i, `the ${name} may not delete the stream`);
      await t.rejects(jsm.streams.purge(STREAM), /permission/i, `the ${name} may not purge it`);
    }
    t.ok((await streamMessages(asRevoker)) >= before + 1, 'the stream and its records are still there');
  });
}
