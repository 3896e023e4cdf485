// Delegation tokens checked by a real inbound sidecar on every request: the token must be
// signed by the broker (JWKS file), addressed to this sidecar, unexpired, and its current actor
// (outermost act.sub) must be the mTLS peer — so a token stolen by another agent is useless.
// A verified delegation reaches the Cedar context, the local agent (x-sigil-delegation), the
// audit line and the delegated/chain_depth metric labels. Each refusal has a positive control.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import t from 'tap';
import { nestAct, signDelegationToken, SigningKeyRing, type DelegationTokenClaims, type SigningKey } from '../../src/delegation/index.js';
import type { Issued } from '../fixtures/certs.js';
import { startAppUpstream, type AppUpstream } from '../helpers/app-upstream.js';
import { auditLines, metricSum, metrics, openWs } from '../helpers/observe.js';
import { rawTls } from '../helpers/raw.js';
import { runSigil, setupTrustDomain, sidecarConfig, sleep, tempDir, writeConfig, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_C = 'spiffe://example.org/agent/c';
const ISSUER = 'https://broker.example.org';

const POLICY = `
@id("connect") permit (principal in TrustDomain::"${TD}", action == Action::"connect", resource == Agent::"${ID_B}");
@id("http") permit (principal in TrustDomain::"${TD}", action == Action::"http", resource == Agent::"${ID_B}");
@id("human-only") forbid (principal, action == Action::"http", resource)
when { context.http.path like "/human/*" } unless { context has delegation };
@id("ws-for-people") permit (principal in TrustDomain::"${TD}", action == Action::"websocket.message", resource in TrustDomain::"${TD}")
when { context has delegation };
@id("reports-need-scope") forbid (principal, action == Action::"http", resource)
when { context.http.path like "/reports/*" } unless { context has delegation && context.delegation.scope.contains("reports:read") };
`;

let td: TrustDomainFixture;
let upstream: AppUpstream;
let b: RunningSigil;
let key: SigningKey;
let leafA: Issued;
let leafC: Issued;
let auditPath: string;

t.before(async () => {
  const dir = await tempDir(t);
  td = await setupTrustDomain(dir, TD);
  upstream = await startAppUpstream(t);
  const ring = await SigningKeyRing.load(join(dir, 'broker-keys'));
  key = ring.current();
  await ring.writeJwks(join(dir, 'broker.jwks.json'));
  await writeFile(join(dir, 'policy.cedar'), POLICY);
  auditPath = join(dir, 'audit.jsonl');
  b = await runSigil(
    t,
    await writeConfig(
      dir,
      'b.yaml',
      sidecarConfig({
        trustDomain: TD,
        identity: { dev: { caDir: td.caDir, spiffeId: ID_B, ttl: '15m' } },
        inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
        policy: { cedar: './policy.cedar' },
        delegation: { issuer: ISSUER, jwks: './broker.jwks.json', leeway: '1s' },
        audit: { path: auditPath },
      }),
    ),
  );
  leafA = await td.leaf(ID_A);
  leafC = await td.leaf(ID_C);
});

function claims(over: Partial<DelegationTokenClaims> = {}): DelegationTokenClaims {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: ISSUER,
    sub: 'alice@example.org',
    aud: ID_B,
    client_id: ID_A,
    act: nestAct(ID_A, undefined),
    scope: 'reports:read search',
    iat: now,
    exp: now + 120,
    jti: randomBytes(16).toString('base64url'),
    task: 'task-1',
    ...over,
  };
}

async function call(leaf: Issued, path: string, token?: string, extra = ''): Promise<{ status: number; headers: Record<string, string>; body: any }> {
  const conn = await rawTls(b.inbound, { certPem: leaf.pem, keyPem: leaf.keyPem });
  try {
    const auth = token === undefined ? '' : `Authorization: Bearer ${token}\r\n`;
    const r = await conn.request(`GET ${path} HTTP/1.1\r\nHost: b\r\n${auth}${extra}\r\n`);
    if (r.kind !== 'response') return { status: 0, headers: {}, body: undefined };
    let body: unknown;
    try {
      body = JSON.parse(r.body);
    } catch {
      body = r.body;
    }
    return { status: r.status, headers: r.headers, body };
  } finally {
    conn.destroy();
  }
}

const seen = (path: string) => upstream.requests.find((r) => r.url === path);

t.test('a valid token: the local agent gets the verified delegation; Cedar sees it', async (t) => {
  const token = await signDelegationToken(claims(), key);
  const r = await call(leafA, '/human/page', token, 'x-sigil-delegation: {"sub":"mallory"}\r\n');
  t.equal(r.status, 200, 'human-only path allowed with a delegation');
  const req = seen('/human/page');
  t.ok(req, 'reached the upstream');
  const d = JSON.parse(String(req!.headers['x-sigil-delegation']));
  t.match(d, { sub: 'alice@example.org', actors: [ID_A], depth: 1, scope: ['reports:read', 'search'], task: 'task-1' }, 'verified values, not the forged header');
  t.equal(req!.headers.authorization, `Bearer ${token}`, 'the token is passed on, so the agent can delegate further');
  const reports = await call(leafA, '/reports/q1', token);
  t.equal(reports.status, 200, 'scope reports:read allows /reports/*');
});

t.test('no token: non-delegated; a path that needs a human is refused by policy', async (t) => {
  const r = await call(leafA, '/plain');
  t.equal(r.status, 200, 'a plain request proceeds as non-delegated');
  t.notOk(seen('/plain')!.headers['x-sigil-delegation'], 'no delegation header');
  const h = await call(leafA, '/human/other');
  t.equal(h.status, 403);
  t.match(h.body, { reason: 'policy_denied', policies: ['human-only'] });
});

t.test('a token without the scope a rule needs', async (t) => {
  const token = await signDelegationToken(claims({ scope: 'search' }), key);
  const r = await call(leafA, '/reports/q2', token);
  t.equal(r.status, 403);
  t.match(r.body, { policies: ['reports-need-scope'] });
});

t.test('refusals: 401 with an RFC 6750 challenge and a reason', async (t) => {
  const cases: Array<[string, Issued, () => Promise<string> | string, string]> = [
    ["agent C presents agent A's token (stolen)", leafC, () => signDelegationToken(claims(), key), 'actor_mismatch'],
    ['a token for another audience', leafA, () => signDelegationToken(claims({ aud: ID_C }), key), 'audience_mismatch'],
    ['an expired token', leafA, () => signDelegationToken(claims({ iat: Math.floor(Date.now() / 1000) - 600, exp: Math.floor(Date.now() / 1000) - 300 }), key), 'delegation_expired'],
    ['alg: none', leafA, () => `${Buffer.from('{"alg":"none","typ":"at+jwt"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims())).toString('base64url')}.`, 'delegation_invalid'],
    ['a tampered payload', leafA, async () => {
      const [h, , s] = (await signDelegationToken(claims(), key)).split('.');
      return `${h}.${Buffer.from(JSON.stringify(claims({ sub: 'root' }))).toString('base64url')}.${s}`;
    }, 'delegation_invalid'],
    // Our signer refuses to make this one; jose signs it with the broker's key.
    ['client_id and actor disagree', leafA, () => new SignJWT({ ...claims({ client_id: ID_C }) }).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: key.kid }).sign(key.privateKey), 'delegation_invalid'],
  ];
  for (const [name, leaf, mint, reason] of cases) {
    const r = await call(leaf, '/secret', await mint());
    t.equal(r.status, 401, `${name}: 401`);
    t.match(r.body, { reason }, `${name}: ${reason}`);
    t.match(r.headers['www-authenticate'] ?? '', /^Bearer realm="sigil", error="invalid_token"/, `${name}: challenge`);
  }
  const bad = await call(leafA, '/secret', undefined, 'Authorization: Basic dXNlcjpwYXNz\r\n');
  t.equal(bad.status, 401, 'a non-Bearer Authorization is refused');
  t.notOk(seen('/secret'), 'nothing reached the upstream');
  const good = await call(leafA, '/after', await signDelegationToken(claims(), key));
  t.equal(good.status, 200, 'a valid token still passes (positive control)');
});

t.test('metrics and audit attribute delegated calls', async (t) => {
  const m = await metrics(b);
  t.ok(metricSum(m, 'sigil_requests_total', { reporter: 'inbound', delegated: 'true', chain_depth: '1', decision: 'allow' }) >= 2, 'delegated, depth 1');
  t.ok(metricSum(m, 'sigil_requests_total', { reporter: 'inbound', delegated: 'false', decision: 'allow' }) >= 1, 'the plain call is not delegated');
  t.ok(metricSum(m, 'sigil_requests_total', { reporter: 'inbound', response_code: '401', reason: 'actor_mismatch' }) >= 1, 'refusals counted with their reason');
  t.notOk(m.some((s) => Object.values(s.labels).some((v) => v.includes('alice'))), 'the human is never a label');
  const lines = await auditLines(auditPath, (l) => l.delegation?.sub === 'alice@example.org', 3_000);
  t.match(lines[0], { source: ID_A, delegation: { sub: 'alice@example.org', actors: [ID_A], depth: 1, task: 'task-1' } });
  const refused = await auditLines(auditPath, (l) => l.reason === 'actor_mismatch', 3_000);
  t.match(refused[0], { decision: 'deny', source: ID_C });
  t.notOk((await auditLines(auditPath, () => true, 1_000)).some((l) => JSON.stringify(l).includes('eyJ')), 'no token text in the audit trail');
});

t.test('a delegated WebSocket does not outlive its token', async (t) => {
  const now = Math.floor(Date.now() / 1000);
  const token = await signDelegationToken(claims({ iat: now, exp: now + 1 }), key);
  const ws = await openWs(`wss://${b.inbound}/stream`, { cert: leafA.pem, key: leafA.keyPem, rejectUnauthorized: false, headers: { authorization: `Bearer ${token}` } });
  t.teardown(() => ws.ws.close());
  ws.ws.send('while valid');
  t.equal((await ws.next()).data.toString(), 'while valid', 'messages flow while the token is valid (positive control)');
  await sleep((now + 1) * 1000 + 1_000 - Date.now() + 300);
  ws.ws.send('after expiry');
  const closed = await ws.closed;
  t.match(closed, { code: 1008, reason: 'delegation_expired' }, 'the next message closes the stream');
  t.notOk(upstream.messages.some((m) => m.data.toString() === 'after expiry'), 'it never reached the upstream');
});
