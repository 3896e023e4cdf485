// The token-exchange broker as users run it: a real `sigil broker` process on loopback, agents
// as mTLS clients with SVIDs from a test CA, user tokens from the dev identity provider. Every
// RFC 8693 refusal is checked with its exact error code next to a positive control, and every
// issued token is verified against the JWKS the broker publishes.
//
//   alice (dev IdP) ──▶ A ──▶ B ──▶ C ──▶ E ──▶ (depth cap)      tool/t: scope ceiling "read"
//   D: refused by policy (@error unauthorized_client) · vault: refused audience (invalid_target)
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, SignJWT, generateKeyPair, type JWTPayload } from 'jose';
import { mintDevUserToken, initDevIdp, GRANT_TYPE_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS_TOKEN, TOKEN_TYPE_JWT } from '../../src/delegation/index.js';
import { createCa, createLeaf, type Issued } from '../fixtures/certs.js';
import { assertRefused, assertStatus } from '../helpers/assert.js';
import { mtlsRequest, type HttpResult } from '../helpers/clients.js';
import { runBroker, runCli, setupTrustDomain, tempDir, waitUntil, writeConfig, type CliExit, type RunningBroker, type Teardown } from '../helpers/env.js';

const TD = 'example.org';
const BROKER_ID = 'spiffe://example.org/broker';
const ISSUER = 'https://broker.example.org';
const USER_AUD = 'sigil-broker';
const ID = {
  a: 'spiffe://example.org/agent/a',
  b: 'spiffe://example.org/agent/b',
  c: 'spiffe://example.org/agent/c',
  d: 'spiffe://example.org/agent/d',
  e: 'spiffe://example.org/agent/e',
  tool: 'spiffe://example.org/tool/t',
  vault: 'spiffe://example.org/vault',
} as const;
type Agent = keyof typeof ID;

const POLICY = `
// Agents of example.org may exchange tokens for each other...
@id("exchange-within-example")
permit (principal in TrustDomain::"example.org", action == Action::"delegation.exchange", resource in TrustDomain::"example.org");

// ...but nobody gets a token for the vault (→ invalid_target),
@id("no-vault")
forbid (principal, action == Action::"delegation.exchange", resource == Agent::"spiffe://example.org/vault");

// and agent/d may not act for anyone at all (→ unauthorized_client).
@id("d-never-acts")
@error("unauthorized_client")
forbid (principal == Agent::"spiffe://example.org/agent/d", action == Action::"delegation.exchange", resource);
`;

type Broker = RunningBroker;

let dir: string;
let idpDir: string;
let broker: Broker;
const leaf = {} as Record<Agent, Issued>;

const startBroker = runBroker;

/** Runs `sigil ...args` to completion. */
const sigil = (args: string[]): Promise<CliExit> => runCli(args);

type Params = Record<string, string | string[] | undefined>;

/** POST /token as `agent` (its SVID as the mTLS client certificate). */
function post(agent: Issued | undefined, params: Params, extra: { contentType?: string; method?: string; path?: string } = {}): Promise<HttpResult> {
  const form = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) form.append(k, one);
  }
  const body = form.toString();
  return mtlsRequest({
    address: broker.address,
    ...(agent ? { certPem: agent.pem, keyPem: agent.keyPem } : {}),
    method: extra.method ?? 'POST',
    path: extra.path ?? '/token',
    headers: { 'content-type': extra.contentType ?? 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) },
    body,
  });
}

/** The usual request: exchange `subject` for a token addressed to `audience`. */
function exchange(agent: Agent, subject: string, audience: string, more: Params = {}): Promise<HttpResult> {
  return post(leaf[agent], {
    grant_type: GRANT_TYPE_TOKEN_EXCHANGE,
    subject_token: subject,
    subject_token_type: TOKEN_TYPE_ACCESS_TOKEN,
    audience,
    ...more,
  });
}

function userToken(opts: { scope?: string[]; mayAct?: string[]; ttlSeconds?: number; nowMs?: number; sub?: string } = {}): Promise<string> {
  return mintDevUserToken(idpDir, {
    sub: opts.sub ?? 'alice',
    scope: opts.scope ?? ['read', 'write', 'admin'],
    audience: USER_AUD,
    ttlSeconds: opts.ttlSeconds ?? 3600,
    ...(opts.mayAct ? { mayAct: opts.mayAct } : {}),
    ...(opts.nowMs !== undefined ? { nowMs: opts.nowMs } : {}),
  });
}

interface Asserts {
  equal(a: unknown, b: unknown, m: string): unknown;
  match(a: unknown, b: unknown, m: string): unknown;
  ok(a: unknown, m: string): unknown;
  fail(m: string): unknown;
  not(a: unknown, b: unknown, m: string): unknown;
  same(a: unknown, b: unknown, m: string): unknown;
  notMatch(a: unknown, b: unknown, m: string): unknown;
}

/** A 200 with an RFC 8693 §2.2.1 body; returns the issued token. */
function issued(t: Asserts, r: HttpResult, what: string): string {
  assertStatus(t, r, what, 200);
  t.equal(r.headers['cache-control'], 'no-store', `${what}: Cache-Control: no-store`);
  t.match(r.json, { issued_token_type: TOKEN_TYPE_ACCESS_TOKEN, token_type: 'Bearer', access_token: String, expires_in: Number, scope: String }, `${what}: RFC 8693 response`);
  return String(r.json?.access_token ?? '');
}

/** An RFC 6749 §5.2 error body with this code (HTTP 400 unless told). */
function refused(t: Asserts, r: HttpResult, what: string, error: string, status = 400): void {
  assertStatus(t, r, what, status);
  t.equal(r.headers['cache-control'], 'no-store', `${what}: Cache-Control: no-store`);
  t.match(r.headers['content-type'], /application\/json/, `${what}: JSON`);
  t.equal(r.json?.error, error, `${what}: error=${error}`);
  t.match(r.json?.error_description, /\S/, `${what}: has error_description`);
  t.notMatch(r.body, /eyJ/, `${what}: no token material in the answer`);
}

async function brokerJwks(): Promise<{ keys: Record<string, unknown>[] }> {
  const r = await mtlsRequest({ address: broker.address, certPem: leaf.a.pem, keyPem: leaf.a.keyPem, path: '/jwks' });
  if (!r.gotHttpResponse || r.status !== 200) throw new Error(`GET /jwks failed: ${JSON.stringify(r)}`);
  return r.json;
}

/** Verifies an issued token against the broker's published JWKS; returns its claims. */
async function verified(token: string, audience: string): Promise<JWTPayload & Record<string, any>> {
  const { payload } = await jwtVerify(token, createLocalJWKSet((await brokerJwks()) as never), { issuer: ISSUER, audience, typ: 'at+jwt', algorithms: ['ES256'] });
  return payload as JWTPayload & Record<string, any>;
}

t.before(async () => {
  dir = await tempDir(t, 'sigil-broker-');
  const example = await setupTrustDomain(dir, TD);
  for (const k of Object.keys(ID) as Agent[]) leaf[k] = await example.leaf(ID[k]);
  idpDir = join(dir, 'idp');
  const init = await sigil(['dev-idp', 'init', '--dir', idpDir]);
  if (init.code !== 0) throw new Error(`sigil dev-idp init failed: ${init.stderr}`);
  await writeConfig(dir, 'broker.cedar', POLICY);
  const config = await writeConfig(dir, 'broker.yaml', {
    trustDomain: TD,
    identity: { dev: { caDir: example.caDir, spiffeId: BROKER_ID } },
    listen: '127.0.0.1:0',
    admin: { listen: '127.0.0.1:0' },
    issuer: ISSUER,
    signingKeys: './keys',
    jwksOut: './out/broker-jwks.json',
    maxDepth: 3,
    subjectIssuers: [{ issuer: 'https://dev-idp.sigil.invalid', audience: USER_AUD, jwks: './idp/jwks.json' }],
    scopes: [{ audience: 'spiffe://example.org/tool/*', allow: ['read'] }],
    policy: { cedar: './broker.cedar' },
    shutdown: { drainTimeout: '1s' },
  });
  broker = await startBroker(t, config);
});

t.test('ready line, JWKS on the mTLS listener and in jwksOut, admin endpoints', async (t) => {
  t.match(broker.ready, { listen: /^127\.0\.0\.1:\d+$/, admin: /^127\.0\.0\.1:\d+$/, spiffeId: BROKER_ID, issuer: ISSUER }, 'ready line names every bound address');
  const jwks = await brokerJwks();
  t.equal(jwks.keys.length, 1, 'one signing key, generated at first start');
  t.match(jwks.keys[0], { kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig', kid: String }, 'an ES256 public key');
  t.notOk('d' in jwks.keys[0]!, 'no private material');
  const wellKnown = await mtlsRequest({ address: broker.address, certPem: leaf.b.pem, keyPem: leaf.b.keyPem, path: '/.well-known/jwks.json' });
  assertStatus(t, wellKnown, '/.well-known/jwks.json');
  t.same(wellKnown.json, jwks, 'the same set at /.well-known/jwks.json');
  t.same(JSON.parse(await readFile(join(dir, 'out', 'broker-jwks.json'), 'utf8')), jwks, 'and in the jwksOut file');
  const health = await fetch(`http://${broker.admin}/healthz`);
  t.equal(health.status, 200, 'admin /healthz');
  const ready = await fetch(`http://${broker.admin}/readyz`);
  t.equal(ready.status, 200, 'admin /readyz');
  const status = (await (await fetch(`http://${broker.admin}/status`)).json()) as Record<string, any>;
  t.match(status, { spiffeId: BROKER_ID, issuer: ISSUER, limits: { maxTtlSeconds: 300, maxDepth: 3 } }, '/status');
});

t.test('happy path: alice → A, a token for B', async (t) => {
  const user = await userToken();
  const userExp = decodeJwt(user).exp!;
  const before = Math.floor(Date.now() / 1000);
  const token = issued(t, await exchange('a', user, ID.b, { scope: 'read write' }), 'A exchanges alice\'s token');
  const header = decodeProtectedHeader(token);
  t.match(header, { alg: 'ES256', typ: 'at+jwt', kid: String }, 'RFC 9068 header');
  const claims = await verified(token, ID.b);
  t.equal(claims.iss, ISSUER, 'iss');
  t.equal(claims.sub, 'alice', 'sub: the user');
  t.equal(claims.aud, ID.b, 'aud: the target agent');
  t.same(claims.act, { sub: ID.a }, 'act: the requesting actor');
  t.equal(claims.client_id, ID.a, 'client_id: the requesting actor');
  t.equal(claims.scope, 'read write', 'scope: as requested (within the parent)');
  t.match(claims.task, /^[A-Za-z0-9_-]{16,}$/, 'task id minted');
  t.ok(Buffer.from(String(claims.jti), 'base64url').length >= 16, 'jti has at least 128 random bits');
  t.ok(claims.iat! >= before - 1 && claims.iat! <= before + 5, 'iat: now');
  t.ok(claims.exp! - claims.iat! <= 300, 'exp ≤ iat + 5 min (maxTtl)');
  t.ok(claims.exp! <= userExp, 'exp ≤ the user token\'s exp');

  const all = issued(t, await exchange('a', user, ID.b), 'no scope asked');
  t.equal((await verified(all, ID.b)).scope, 'read write admin', 'no scope parameter: the parent\'s whole scope');
  const other = issued(t, await exchange('a', user, ID.b), 'second exchange');
  t.not(decodeJwt(other).jti, decodeJwt(all).jti, 'a fresh jti per token');
  t.not(decodeJwt(other).task, decodeJwt(all).task, 'a fresh task per user-token exchange');

  const viaResource = issued(t, await exchange('a', user, undefined as never, { audience: undefined, resource: ID.b }), 'resource instead of audience');
  t.equal(decodeJwt(viaResource).aud, ID.b, 'resource names the target as well');
});

t.test('chain A → B → C: act nests, sub and task stay, scope and exp never widen', async (t) => {
  const user = await userToken({ ttlSeconds: 120 });
  const tAB = issued(t, await exchange('a', user, ID.b, { scope: 'read write' }), 'alice → A (for B)');
  const tBC = issued(t, await exchange('b', tAB, ID.c), 'B exchanges the token A obtained for it');
  const ab = await verified(tAB, ID.b);
  const bc = await verified(tBC, ID.c);
  t.same(bc.act, { sub: ID.b, act: { sub: ID.a } }, 'act: B outermost, then A');
  t.equal(bc.client_id, ID.b, 'client_id: the current actor');
  t.equal(bc.sub, 'alice', 'sub unchanged');
  t.equal(bc.task, ab.task, 'task unchanged along the chain');
  t.equal(bc.scope, 'read write', 'scope inherited (no scope asked)');
  t.ok(bc.exp! <= ab.exp!, 'exp ≤ the parent\'s');
  t.ok(ab.exp! <= decodeJwt(user).exp!, 'the first hop is bounded by the 2-minute user token');

  // C asks for more than it was given: it gets the intersection, never more.
  const wider = issued(t, await exchange('c', tBC, ID.e, { scope: 'read write admin delete' }), 'C asks for a wider scope');
  t.equal((await verified(wider, ID.e)).scope, 'read write', 'granted = requested ∩ parent (admin, delete dropped)');
  t.same((await verified(wider, ID.e)).act, { sub: ID.c, act: { sub: ID.b, act: { sub: ID.a } } }, 'three actors');
  refused(t, await exchange('c', tBC, ID.e, { scope: 'admin delete' }), 'only scopes the parent lacks', 'invalid_scope');
  const narrower = issued(t, await exchange('c', tBC, ID.e, { scope: 'read' }), 'positive control: a narrower scope');
  t.equal(decodeJwt(narrower).scope, 'read', 'narrowed to read');

  // Per-audience ceiling: tool/* may only ever get "read".
  const tool = issued(t, await exchange('c', tBC, ID.tool, { scope: 'read write' }), 'C asks the tool for read write');
  t.equal((await verified(tool, ID.tool)).scope, 'read', 'the audience ceiling drops write');
  refused(t, await exchange('c', tBC, ID.tool, { scope: 'write' }), 'only a scope above the audience ceiling', 'invalid_scope');
});

t.test('stolen intermediate token: a chained token is only exchanged by the agent it was issued to', async (t) => {
  const tAB = issued(t, await exchange('a', await userToken(), ID.b), 'alice → A (for B)');
  refused(t, await exchange('c', tAB, ID.e), 'C presents the token issued to B', 'unauthorized_client');
  refused(t, await exchange('a', tAB, ID.e), 'even A (who obtained it) cannot exchange a token addressed to B', 'unauthorized_client');
  issued(t, await exchange('b', tAB, ID.e), 'positive control: B exchanges it');
});

t.test('depth cap (maxDepth 3)', async (t) => {
  const t1 = issued(t, await exchange('a', await userToken(), ID.b), 'depth 1');
  const t2 = issued(t, await exchange('b', t1, ID.c), 'depth 2');
  const t3 = issued(t, await exchange('c', t2, ID.e), 'positive control: depth 3 = the cap');
  t.equal(decodeJwt(t3).act && JSON.stringify(decodeJwt(t3).act).split('"sub"').length - 1, 3, 'three actors');
  refused(t, await exchange('e', t3, ID.a), 'depth 4 is over the cap', 'invalid_request');
});

t.test('may_act in the user token is honoured', async (t) => {
  const user = await userToken({ mayAct: [ID.a] });
  refused(t, await exchange('b', user, ID.c), 'B is not in may_act', 'unauthorized_client');
  issued(t, await exchange('a', user, ID.c), 'positive control: A is');
  const two = await userToken({ mayAct: [ID.b, ID.c] });
  issued(t, await exchange('c', two, ID.a), 'one of several may_act entries');
  refused(t, await exchange('a', two, ID.c), 'A is not among them', 'unauthorized_client');
});

t.test('audience: required, a SPIFFE ID, a known trust domain, allowed by policy', async (t) => {
  const user = await userToken();
  refused(t, await exchange('a', user, undefined as never, { audience: undefined }), 'no audience or resource', 'invalid_request');
  refused(t, await exchange('a', user, 'https://agent-b.example.org'), 'audience not a SPIFFE ID', 'invalid_target');
  refused(t, await exchange('a', user, 'spiffe://unknown.example/agent/x'), 'audience in a trust domain the broker does not know', 'invalid_target');
  refused(t, await exchange('a', user, ID.vault), 'audience refused by policy', 'invalid_target');
  refused(t, await exchange('a', user, ID.b, { resource: ID.c }), 'audience and resource name two targets', 'invalid_target');
  refused(t, await exchange('a', user, ID.a), 'a token for oneself', 'invalid_target');
  issued(t, await exchange('a', user, ID.b, { resource: ID.b }), 'positive control: same target twice is one target');
  issued(t, await exchange('a', user, ID.c), 'positive control: an allowed audience');
});

t.test('an actor the policy refuses gets unauthorized_client', async (t) => {
  const user = await userToken();
  refused(t, await exchange('d', user, ID.b), 'D may not act (forbid with @error)', 'unauthorized_client');
  issued(t, await exchange('a', user, ID.b), 'positive control: A may');
});

t.test('subject token checks: type required, issuer known, not expired', async (t) => {
  const user = await userToken();
  refused(t, await exchange('a', user, ID.b, { subject_token_type: undefined }), 'missing subject_token_type', 'invalid_request');
  refused(t, await exchange('a', user, ID.b, { subject_token_type: 'urn:ietf:params:oauth:token-type:id_token' }), 'unsupported subject_token_type', 'invalid_request');
  issued(t, await exchange('a', user, ID.b, { subject_token_type: TOKEN_TYPE_JWT }), 'positive control: the jwt token type is accepted too');
  refused(t, await exchange('a', '', ID.b, { subject_token: undefined }), 'missing subject_token', 'invalid_request');
  refused(t, await exchange('a', 'not-a-jwt', ID.b), 'malformed subject token', 'invalid_request');

  const expired = await userToken({ nowMs: Date.now() - 2 * 3600_000, ttlSeconds: 600 });
  refused(t, await exchange('a', expired, ID.b), 'expired user token', 'invalid_request');

  const rogueDir = join(dir, 'rogue-idp');
  await initDevIdp(rogueDir, 'https://rogue-idp.sigil.invalid');
  const rogue = await mintDevUserToken(rogueDir, { sub: 'alice', scope: ['read'], audience: USER_AUD });
  refused(t, await exchange('a', rogue, ID.b), 'user token from an unknown issuer', 'invalid_request');
  const wrongAud = await mintDevUserToken(idpDir, { sub: 'alice', scope: ['read'], audience: 'some-other-api' });
  refused(t, await exchange('a', wrongAud, ID.b), 'user token for another audience', 'invalid_request');

  // A token that claims to be the broker's, signed by some other key.
  const { privateKey } = await generateKeyPair('ES256');
  const now = Math.floor(Date.now() / 1000);
  const forged = await new SignJWT({ client_id: ID.c, act: { sub: ID.c }, scope: 'read', task: 'x', jti: 'forged-1' })
    .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'not-a-broker-key' })
    .setIssuer(ISSUER).setSubject('alice').setAudience(ID.a).setIssuedAt(now).setExpirationTime(now + 60)
    .sign(privateKey);
  refused(t, await exchange('a', forged, ID.b), 'a "broker" token signed by a non-broker key', 'invalid_request');
  issued(t, await exchange('a', user, ID.b), 'positive control: a fresh token from the configured IdP');
});

t.test('actor_token: needs a type, must name the mTLS peer (consistency check only)', async (t) => {
  const user = await userToken();
  const { privateKey } = await generateKeyPair('ES256');
  const actorToken = (sub: string) => new SignJWT({}).setProtectedHeader({ alg: 'ES256', typ: 'JWT' }).setSubject(sub).setAudience(BROKER_ID).setIssuedAt().setExpirationTime('5m').sign(privateKey);
  const mine = await actorToken(ID.a);
  refused(t, await exchange('a', user, ID.b, { actor_token: mine }), 'actor_token without actor_token_type', 'invalid_request');
  refused(t, await exchange('a', user, ID.b, { actor_token: mine, actor_token_type: TOKEN_TYPE_ACCESS_TOKEN }), 'actor_token_type other than jwt', 'invalid_request');
  refused(t, await exchange('a', user, ID.b, { actor_token_type: TOKEN_TYPE_JWT }), 'actor_token_type without actor_token', 'invalid_request');
  refused(t, await exchange('a', user, ID.b, { actor_token: await actorToken(ID.c), actor_token_type: TOKEN_TYPE_JWT }), 'actor_token sub ≠ the mTLS peer', 'invalid_request');
  const ok = issued(t, await exchange('a', user, ID.b, { actor_token: mine, actor_token_type: TOKEN_TYPE_JWT }), 'positive control: actor_token for A, presented by A');
  t.same(decodeJwt(ok).act, { sub: ID.a }, 'the actor is still the mTLS peer');
});

t.test('request shape: grant type, method, content type, client_id, repeated parameters', async (t) => {
  const user = await userToken();
  refused(t, await exchange('a', user, ID.b, { grant_type: 'client_credentials' }), 'another grant type', 'unsupported_grant_type');
  refused(t, await exchange('a', user, ID.b, { grant_type: undefined }), 'no grant_type', 'invalid_request');
  refused(t, await exchange('a', user, ID.b, { scope: ['read', 'write'] }), 'scope sent twice', 'invalid_request');
  refused(t, await exchange('a', user, ID.b, { scope: 'read "x"' }), 'scope outside the RFC 6749 charset', 'invalid_scope');
  refused(t, await exchange('a', user, ID.b, { client_id: ID.c }), 'client_id naming another agent', 'invalid_client', 401);
  issued(t, await exchange('a', user, ID.b, { client_id: ID.a }), 'positive control: client_id naming the peer');
  const json = await post(leaf.a, {}, { contentType: 'application/json' });
  refused(t, json, 'JSON body', 'invalid_request');
  const get = await post(leaf.a, {}, { method: 'GET' });
  assertStatus(t, get, 'GET /token', 405);
  t.equal(get.headers['cache-control'], 'no-store', 'GET /token: no-store');
  const nowhere = await post(leaf.a, {}, { path: '/nope' });
  assertStatus(t, nowhere, 'unknown path', 404);
});

t.test('mTLS is required: no certificate or an untrusted one never gets an HTTP answer', async (t) => {
  const user = await userToken();
  const params = { grant_type: GRANT_TYPE_TOKEN_EXCHANGE, subject_token: user, subject_token_type: TOKEN_TYPE_ACCESS_TOKEN, audience: ID.b };
  assertRefused(t, await post(undefined, params), 'no client certificate');
  const foreignCa = await createCa({ trustDomain: TD });
  const impostor = await createLeaf(foreignCa, ID.a);
  assertRefused(t, await post(impostor, params), 'an SVID for agent/a from another CA');
  const noJwks = await mtlsRequest({ address: broker.address, path: '/jwks' });
  assertRefused(t, noJwks, 'GET /jwks without a client certificate');
  issued(t, await post(leaf.a, params), 'positive control: the real agent/a');
});

t.test('sigil dev-token (CLI) mints a usable user token; DEV ONLY on stderr', async (t) => {
  const out = await sigil(['dev-token', '--dir', idpDir, '--sub', 'bob', '--scope', 'read write', '--aud', USER_AUD, '--ttl', '10m', '--may-act', ID.a, '--may-act', ID.b]);
  t.equal(out.code, 0, 'exit 0');
  t.match(out.stderr, /DEV ONLY/, 'labelled DEV ONLY on stderr');
  const token = out.stdout.trim();
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'stdout is exactly one JWT');
  const claims = decodeJwt(token);
  t.match(claims, { sub: 'bob', scope: 'read write', aud: USER_AUD, may_act: [{ sub: ID.a }, { sub: ID.b }] }, 'claims as asked');
  t.ok(claims.exp! - claims.iat! === 600, '--ttl 10m');
  const got = issued(t, await exchange('b', token, ID.c, { scope: 'read' }), 'B (in may_act) exchanges bob\'s token');
  t.equal(decodeJwt(got).sub, 'bob', 'sub bob');
  refused(t, await exchange('c', token, ID.a), 'C (not in may_act)', 'unauthorized_client');
  const help = await sigil(['help']);
  t.match(help.stdout, /dev-token .*\n.*DEV ONLY/, 'help labels dev-token DEV ONLY');
});

t.test('a bad broker config is refused naming the key and the problem', async (t) => {
  const bad = await writeConfig(dir, 'bad-broker.yaml', {
    trustDomain: TD,
    identity: { dev: { caDir: './ca', spiffeId: BROKER_ID } },
    issuer: 'not a uri',
    signingKeys: './keys',
    maxTtl: '5 minutes',
    subjectIssuers: [],
  });
  const out = await sigil(['broker', '--config', bad]);
  t.equal(out.code, 1, 'exit 1');
  t.match(out.stderr, /issuer: invalid issuer/, 'issuer named');
  t.match(out.stderr, /maxTtl: invalid duration/, 'maxTtl named');
  t.match(out.stderr, /subjectIssuers: must have at least 1 entry/, 'subjectIssuers named');
  t.match(out.stderr, /policy: is required/, 'a policy is required (fail closed)');
});

t.test('key rotation: a key added while running signs new tokens; tokens signed before keep verifying', async (t) => {
  const user = await userToken();
  const oldToken = issued(t, await exchange('a', user, ID.b), 'a token signed before the rotation');
  const oldKid = decodeProtectedHeader(oldToken).kid;
  const gen = await sigil(['broker', 'keygen', '--dir', join(dir, 'keys')]);
  t.equal(gen.code, 0, 'sigil broker keygen');
  const newKid = /generated signing key (\S+)/.exec(gen.stdout)?.[1];
  t.ok(newKid && newKid !== oldKid, 'a new kid');
  const jwks = await waitUntil(async () => {
    const set = await brokerJwks();
    return set.keys.length === 2 ? set : undefined;
  }, 5_000);
  t.ok(jwks, 'the JWKS publishes both keys');
  t.same(jwks?.keys.map((k) => k.kid).sort(), [oldKid, newKid].sort(), 'old and new kid');
  const file = await waitUntil(async () => {
    const doc = JSON.parse(await readFile(join(dir, 'out', 'broker-jwks.json'), 'utf8')) as { keys: unknown[] };
    return doc.keys.length === 2 ? doc : undefined;
  }, 5_000);
  t.ok(file, 'jwksOut rewritten with both keys');

  const newToken = issued(t, await exchange('a', user, ID.b), 'a token after the rotation');
  t.equal(decodeProtectedHeader(newToken).kid, newKid, 'signed by the new key');
  t.equal((await verified(oldToken, ID.b)).sub, 'alice', 'the old token still verifies against the published JWKS');
  const chained = issued(t, await exchange('b', oldToken, ID.c), 'a token in flight (old key) is still exchangeable');
  t.equal(decodeProtectedHeader(chained).kid, newKid, 'and its successor is signed by the new key');
});

t.test('the policy file is watched: a new rule applies to the next exchange; a broken file keeps the last good one', async (t) => {
  const user = await userToken();
  issued(t, await exchange('a', user, ID.e), 'before: E is an allowed audience');
  const policyPath = join(dir, 'broker.cedar');
  await writeFile(policyPath, POLICY + '\nforbid (principal, action == Action::"delegation.exchange", resource == Agent::"spiffe://example.org/agent/e");\n');
  const denied = await waitUntil(async () => {
    const r = await exchange('a', user, ID.e);
    return r.gotHttpResponse && r.status === 400 ? r : undefined;
  }, 5_000);
  t.ok(denied, 'the new forbid is in force');
  if (denied) refused(t, denied, 'after: E refused', 'invalid_target');
  await writeFile(policyPath, 'permit (principal, action == Action::"nope", resource);');
  await broker.proc.waitFor((l) => l.msg === 'policy reload refused; keeping the last good policy');
  refused(t, await exchange('a', user, ID.e), 'a broken file: the last good policy (with the forbid) stays', 'invalid_target');
  issued(t, await exchange('a', user, ID.b), 'and the rest of it too');
  await writeFile(policyPath, POLICY);
  const back = await waitUntil(async () => {
    const r = await exchange('a', user, ID.e);
    return r.gotHttpResponse && r.status === 200 ? r : undefined;
  }, 5_000);
  t.ok(back, 'restored: E allowed again');
});

t.test('metrics count exchanges by OAuth error; no token ever reaches the log', async (t) => {
  const metrics = await (await fetch(`http://${broker.admin}/metrics`)).text();
  t.match(metrics, /sigil_broker_exchanges_total\{result="issued",error="",reason="ok"\} \d+/, 'issued exchanges counted');
  t.match(metrics, /sigil_broker_exchanges_total\{result="refused",error="unauthorized_client",reason="actor_mismatch"\} [1-9]/, 'stolen-token refusals counted');
  t.match(metrics, /sigil_broker_exchanges_total\{result="refused",error="invalid_request",reason="delegation_too_deep"\} [1-9]/, 'depth refusals counted');
  t.match(metrics, /sigil_broker_signing_keys 2/, 'two published keys');
  t.notMatch(metrics, /alice/, 'no user in metrics');
  const issuedLines = broker.proc.lines.filter((l) => l.msg === 'token issued');
  const refusedLines = broker.proc.lines.filter((l) => l.msg === 'token exchange refused');
  t.ok(issuedLines.length > 10 && refusedLines.length > 10, `issued (${issuedLines.length}) and refused (${refusedLines.length}) exchanges are logged`);
  t.match(issuedLines[0], { peer: String, audience: String, sub: String, jti: String, task: String, kid: String, depth: Number, scope: Array }, 'an issue line says who, for whom, which token id');
  t.match(refusedLines.find((l) => l.reason === 'actor_mismatch'), { error: 'unauthorized_client', peer: String, audience: String }, 'a refusal line says why');
  const everything = JSON.stringify(broker.proc.lines) + broker.proc.stderr();
  t.notMatch(everything, /eyJ[\w-]{10,}\.[\w-]{10,}/, 'no JWT anywhere in the broker output');
  t.notMatch(everything, /PRIVATE KEY/, 'no key material either');
});
