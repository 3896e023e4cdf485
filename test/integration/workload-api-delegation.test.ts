// Workload API identities on the delegation path, on real processes: a broker whose own SVID
// comes from the Workload API, and an orchestrator sidecar whose RFC 8693 actor_token is a
// JWT-SVID from FetchJWTSVID (audience: the broker's SPIFFE ID). The broker checks that the
// actor token names its mTLS peer, so a JWT-SVID for someone else is refused, and no JWT-SVID
// means no exchange (fail closed).
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { SignJWT } from 'jose';
import t, { type Test } from 'tap';
import { initDevIdp, mintDevUserToken } from '../../src/delegation/index.js';
import { startAppUpstream, type AppUpstream } from '../helpers/app-upstream.js';
import { plainRequest } from '../helpers/clients.js';
import { runBroker, runSigil, setupTrustDomain, sidecarConfig, tempDir, waitUntil, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';
import { FakeWorkloadApi, x509SvidMessage } from '../helpers/fake-workload-api.js';

const TD = 'example.org';
const ID_O = 'spiffe://example.org/agent/orchestrator';
const ID_W = 'spiffe://example.org/agent/worker';
const ID_BROKER = 'spiffe://example.org/broker';
const ISSUER = 'https://broker.example.org';

const SIDECAR_POLICY = `
@id("connect") permit (principal in TrustDomain::"${TD}", action == Action::"connect", resource in TrustDomain::"${TD}");
@id("http") permit (principal in TrustDomain::"${TD}", action == Action::"http", resource in TrustDomain::"${TD}");
`;
const BROKER_POLICY = `
@id("orchestrator-for-users") permit (principal == Agent::"${ID_O}", action == Action::"delegation.exchange", resource == Agent::"${ID_W}");
`;

const jwtKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
/** A JWT-SVID as SPIRE mints them (ES256, sub = SPIFFE ID, aud, short exp). */
const jwtSvid = (sub: string, aud: string[]): Promise<string> =>
  new SignJWT({}).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ: 'JWT' }).setSubject(sub).setAudience(aud).setIssuedAt().setExpirationTime('5m').sign(jwtKey);

let dir: string;
let td: TrustDomainFixture;
let upstream: AppUpstream;
let brokerAddress: string;
let brokerLines: () => Record<string, unknown>[];
let worker: RunningSigil;
let alice: string;

/** A fake Workload API serving `id` (an SVID from the test CA). */
async function workloadApiFor(t: Test, id: string): Promise<FakeWorkloadApi> {
  const fake = await FakeWorkloadApi.start(t);
  const leaf = await td.leaf(id);
  fake.setX509Svids({ svids: [x509SvidMessage(id, [leaf], [td.ca])] });
  return fake;
}

t.before(async () => {
  dir = await tempDir(t, 'sigil-wl-deleg-');
  td = await setupTrustDomain(dir, TD);
  const idp = await initDevIdp(join(dir, 'dev-idp'));
  await writeFile(join(dir, 'broker.cedar'), BROKER_POLICY);
  await writeFile(join(dir, 'sidecar.cedar'), SIDECAR_POLICY);
  const brokerApi = await workloadApiFor(t, ID_BROKER);
  const broker = await runBroker(
    t,
    await writeConfig(dir, 'broker.yaml', {
      trustDomain: TD,
      identity: { workloadApi: { socket: brokerApi.endpoint } },
      listen: '127.0.0.1:0',
      issuer: ISSUER,
      signingKeys: './broker-keys',
      jwksOut: './broker-jwks.json',
      subjectIssuers: [{ issuer: idp.issuer, audience: 'sigil-broker', jwks: idp.jwksPath }],
      policy: { cedar: './broker.cedar' },
      admin: { listen: '127.0.0.1:0' },
    }),
  );
  t.equal(broker.ready.spiffeId, ID_BROKER, 'the broker serves with the SVID from its Workload API');
  brokerAddress = broker.address;
  brokerLines = () => broker.proc.lines;
  await waitUntil(() => existsSync(join(dir, 'broker-jwks.json')), 5_000);
  upstream = await startAppUpstream(t);
  worker = await runSigil(
    t,
    await writeConfig(dir, 'w.yaml', sidecarConfig({ trustDomain: TD, identity: { dev: { caDir: td.caDir, spiffeId: ID_W } }, policy: { cedar: './sidecar.cedar' }, delegation: delegation(), inbound: { listen: '127.0.0.1:0', upstream: upstream.url } })),
  );
  alice = await mintDevUserToken(join(dir, 'dev-idp'), { sub: 'alice', scope: ['tasks.read'], audience: 'sigil-broker' });
});

function delegation(): Record<string, unknown> {
  return { issuer: ISSUER, jwks: './broker-jwks.json', broker: { url: `https://${brokerAddress}/token`, spiffeId: ID_BROKER } };
}

/** An orchestrator sidecar on its own fake Workload API; `jwt` answers FetchJWTSVID. */
async function orchestrator(t: Test, name: string, jwt: (audience: string[]) => Promise<string> | undefined): Promise<{ o: RunningSigil; api: FakeWorkloadApi; tokens: string[] }> {
  const api = await workloadApiFor(t, ID_O);
  const tokens: string[] = [];
  // The fake's handler is synchronous: mint the answers up front per audience asked.
  const pending = new Map<string, string>();
  api.onJwtSvid((request) => {
    const key = request.audience.join(' ');
    const token = pending.get(key);
    if (token === undefined) throw { code: status.PERMISSION_DENIED, details: 'no JWT-SVID for this workload' };
    tokens.push(token);
    return { svids: [{ spiffe_id: ID_O, svid: token, hint: '' }] };
  });
  const minted = await jwt([ID_BROKER]);
  if (minted !== undefined) pending.set(ID_BROKER, minted);
  const cfg = await writeConfig(
    dir,
    `${name}.yaml`,
    sidecarConfig({
      trustDomain: TD,
      identity: { workloadApi: { socket: api.endpoint } },
      policy: { cedar: './sidecar.cedar' },
      delegation: delegation(),
      outbound: { listen: '127.0.0.1:0', routes: [{ host: 'worker', address: worker.inbound, spiffeId: ID_W, exchange: { scope: 'tasks.read' } }] },
    }),
  );
  return { o: await runSigil(t, cfg), api, tokens };
}

const callWorker = (o: RunningSigil) => plainRequest({ address: o.outbound, path: '/work', headers: { host: 'worker', authorization: `Bearer ${alice}` } });

t.test('the actor token is a JWT-SVID for the broker, fetched with the security header', async (t) => {
  const { o, api, tokens } = await orchestrator(t, 'o-good', (aud) => jwtSvid(ID_O, aud));
  const r = await callWorker(o);
  t.equal(r.gotHttpResponse && r.status, 200, `delegated call through the broker succeeds (${r.gotHttpResponse ? r.body : r.error})`);
  const calls = api.callsTo('FetchJWTSVID');
  t.equal(calls.length, 1, 'one FetchJWTSVID call');
  t.match(calls[0]!.request, { audience: [ID_BROKER] }, 'for the broker as audience');
  t.same(api.calls.filter((c) => JSON.stringify(c.metadata['workload.spiffe.io']) !== '["true"]'), [], 'every call carried the header');
  t.equal(tokens.length, 1, 'the JWT-SVID was handed out');
  const atWorker = JSON.parse(String(upstream.requests.at(-1)?.headers['x-sigil-delegation'] ?? '{}'));
  t.match(atWorker, { sub: 'alice', actors: [ID_O] }, 'the worker sees alice acted for by the orchestrator');
});

t.test('a JWT-SVID naming another workload is refused by the broker (actor mismatch)', async (t) => {
  const { o, api } = await orchestrator(t, 'o-other', (aud) => jwtSvid(ID_W, aud));
  const r = await callWorker(o);
  t.equal(r.gotHttpResponse && r.status, 502, 'the exchange fails closed');
  t.match(r.gotHttpResponse ? r.body : '', 'exchange_failed');
  t.equal(api.callsTo('FetchJWTSVID').length, 1, 'the JWT-SVID was fetched and sent');
  t.ok(await waitUntil(() => brokerLines().some((l) => JSON.stringify(l).includes('actor_mismatch')), 2_000), 'the broker refused it as an actor mismatch');
});

t.test('no JWT-SVID from the Workload API: no exchange', async (t) => {
  const { o, api } = await orchestrator(t, 'o-none', () => undefined);
  const r = await callWorker(o);
  t.equal(r.gotHttpResponse && r.status, 502, 'refused, never sent without an actor token');
  t.match(r.gotHttpResponse ? r.body : '', 'exchange_failed');
  t.equal(api.callsTo('FetchJWTSVID').length, 1, 'FetchJWTSVID was asked once');
});
