// Broker-side subject-token verification, and the dev identity provider round trip.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, exportJWK } from 'jose';
import t from 'tap';
import {
  DEV_IDP_ISSUER,
  initDevIdp,
  jwksFromFile,
  mintDevUserToken,
  readDevIdp,
  signDelegationToken,
  staticJwks,
  verifySubjectToken,
  type DelegationTokenClaims,
  type SigningKey,
  type VerifySubjectOptions,
} from '../../src/delegation/index.js';
import { ISSUER, ORCH, TOOL, USER, WORKER, b64url, claimsFor, craft, keys, nowS, outcome, tokenFor } from './fixtures.js';

const BROKER_AUD = 'https://broker.example.org/token';
let dir: string;
let idpDir: string;
let idp: { jwksPath: string; issuer: string };
let broker: SigningKey;
let rogue: SigningKey;
let opts: VerifySubjectOptions;

t.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sigil-dlg-subject-'));
  idpDir = join(dir, 'idp');
  idp = await initDevIdp(idpDir);
  [broker, rogue] = (await keys(2)) as [SigningKey, SigningKey];
  opts = {
    users: [{ issuer: idp.issuer, audience: BROKER_AUD, keys: jwksFromFile(idp.jwksPath) }],
    broker: { issuer: ISSUER, keys: staticJwks({ keys: [broker.publicJwk] }) },
    audienceForChained: WORKER,
  };
});
t.teardown(() => rm(dir, { recursive: true, force: true }));

t.test('initDevIdp: files, labels, idempotence', async (t) => {
  t.equal(idp.issuer, DEV_IDP_ISSUER);
  t.equal(idp.issuer, 'https://dev-idp.sigil.invalid');
  const keyFile = join(idpDir, 'dev-idp.json');
  t.equal((await stat(keyFile)).mode & 0o777, 0o600);
  const doc = JSON.parse(await readFile(keyFile, 'utf8')) as Record<string, unknown>;
  t.match(doc.warning, /Not for production/);
  const jwks = JSON.parse(await readFile(idp.jwksPath, 'utf8')) as { keys: Record<string, unknown>[] };
  t.equal(jwks.keys.length, 1);
  t.notOk('d' in jwks.keys[0]!);
  const before = await readDevIdp(idpDir);
  t.same(await initDevIdp(idpDir), idp, 'idempotent');
  t.equal((await readDevIdp(idpDir)).kid, before.kid, 'same key');
  const other = join(dir, 'idp2');
  const renamed = await initDevIdp(other, 'https://idp.test.invalid');
  t.equal(renamed.issuer, 'https://idp.test.invalid');
  const kid = (await readDevIdp(other)).kid;
  t.equal((await initDevIdp(other, 'https://idp2.test.invalid')).issuer, 'https://idp2.test.invalid', 'explicit issuer replaces the recorded one');
  t.equal((await readDevIdp(other)).kid, kid, '…keeping the key');
  await t.rejects(mintDevUserToken(join(dir, 'nothing'), { sub: USER, scope: [], audience: BROKER_AUD }), /no dev identity provider/);
});

t.test('dev user token round trip through verifySubjectToken', async (t) => {
  const token = await mintDevUserToken(idpDir, { sub: USER, scope: ['tickets:read', 'tickets:write'], audience: BROKER_AUD, mayAct: [ORCH] });
  const header = JSON.parse(Buffer.from(token.split('.')[0]!, 'base64url').toString()) as Record<string, unknown>;
  t.match(header, { alg: 'ES256', typ: 'JWT' });
  const s = await verifySubjectToken(token, opts);
  t.equal(s.kind, 'user');
  t.equal(s.sub, USER);
  t.same(s.scope, ['tickets:read', 'tickets:write']);
  t.same(s.mayAct, [{ sub: ORCH }], 'may_act object normalised to a list');
  t.ok(s.exp > nowS() + 3500 && s.exp <= nowS() + 3600, 'default ttl 1 h');
  t.equal(s.act, undefined);
  t.equal(s.claims.iss, idp.issuer);
  t.match(s.claims.may_act, { sub: ORCH }, 'one actor is written as an object (RFC 8693 §4.4)');

  const two = await verifySubjectToken(await mintDevUserToken(idpDir, { sub: USER, scope: ['a'], audience: BROKER_AUD, mayAct: [ORCH, WORKER], ttlSeconds: 60 }), opts);
  t.same(two.mayAct, [{ sub: ORCH }, { sub: WORKER }], 'several may_act entries');
  t.ok(two.exp <= nowS() + 60);
  const none = await verifySubjectToken(await mintDevUserToken(idpDir, { sub: USER, scope: [], audience: BROKER_AUD }), opts);
  t.equal(none.mayAct, undefined, 'no may_act');
  t.same(none.scope, []);
  await t.rejects(mintDevUserToken(idpDir, { sub: USER, scope: ['bad scope'], audience: BROKER_AUD }), { code: 'delegation_invalid' });
});

t.test('user token rules', async (t) => {
  const mint = (o: Partial<Parameters<typeof mintDevUserToken>[1]> = {}): Promise<string> =>
    mintDevUserToken(idpDir, { sub: USER, scope: ['tickets:read'], audience: BROKER_AUD, ...o });
  t.equal(await outcome(verifySubjectToken(await mint(), opts)), 'ok', 'control');
  t.equal(await outcome(verifySubjectToken(await mint({ audience: 'https://other' }), opts)), 'audience_mismatch/aud', 'aud');
  t.equal(await outcome(verifySubjectToken(await mint({ nowMs: Date.now() - 7200_000 }), opts)), 'delegation_expired/expired', 'exp');
  t.equal(await outcome(verifySubjectToken(await mint(), { ...opts, nowMs: Date.now() + 7200_000 })), 'delegation_expired/expired', 'exp, caller clock');

  const { kid, privateKey } = await readDevIdp(idpDir);
  const base = { iss: idp.issuer, sub: USER, aud: BROKER_AUD, exp: nowS() + 300, iat: nowS(), scope: 'tickets:read' };
  const hdr = { alg: 'ES256', typ: 'JWT', kid };
  const signed = (payload: Record<string, unknown>, header: Record<string, unknown> = hdr): string => craft(header, payload, { kind: 'es256', key: privateKey });
  t.equal(await outcome(verifySubjectToken(signed(base), opts)), 'ok', 'crafted control');
  t.equal(await outcome(verifySubjectToken(signed(base, { alg: 'ES256', kid }), opts)), 'ok', 'typ absent is fine for user tokens');
  t.equal(await outcome(verifySubjectToken(signed(base, { ...hdr, typ: 'at+jwt' }), opts)), 'ok', 'typ at+jwt is fine');
  t.equal(await outcome(verifySubjectToken(signed(base, { ...hdr, typ: 'dpop+jwt' }), opts)), 'delegation_invalid/typ');
  const { kid: _k, ...noKid } = hdr;
  t.equal(await outcome(verifySubjectToken(signed(base, noKid), opts)), 'ok', 'no kid, one key in the set');
  t.equal(await outcome(verifySubjectToken(craft({ ...hdr, alg: 'none' }, base, { kind: 'none' }), opts)), 'delegation_invalid/alg', 'alg none');
  const pubJwk = JSON.parse(await readFile(idp.jwksPath, 'utf8')).keys[0];
  t.equal(await outcome(verifySubjectToken(craft({ ...hdr, alg: 'HS256' }, base, { kind: 'hmac', secret: Buffer.from(JSON.stringify(pubJwk)) }), opts)), 'delegation_invalid/alg', 'HS256 with the public key');
  t.equal(await outcome(verifySubjectToken(craft(hdr, base, { kind: 'es256', key: rogue.privateKey }), opts)), 'delegation_invalid/bad_signature', 'signed by another key');
  t.equal(await outcome(verifySubjectToken(craft({ ...hdr, kid: 'x' }, base, { kind: 'es256', key: privateKey }), opts)), 'delegation_invalid/unknown_kid');
  const [h, , s] = signed(base).split('.');
  t.equal(await outcome(verifySubjectToken(`${h}.${b64url(JSON.stringify({ ...base, sub: 'mallory' }))}.${s}`, opts)), 'delegation_invalid/bad_signature', 'tampered');
  for (const name of ['sub', 'aud', 'exp'] as const) {
    const { [name]: _omit, ...rest } = base;
    t.equal(await outcome(verifySubjectToken(signed(rest), opts)), `delegation_invalid/missing_claim:${name}`, `missing ${name}`);
  }
  t.equal(await outcome(verifySubjectToken(signed({ ...base, sub: 3 }), opts)), 'delegation_invalid/invalid_claim:sub');
  t.equal(await outcome(verifySubjectToken(signed({ ...base, nbf: nowS() + 600 }), opts)), 'delegation_invalid/not_yet_valid');
  t.equal(await outcome(verifySubjectToken(signed({ ...base, act: { sub: ORCH } }), opts)), 'delegation_invalid/act_in_user_token', 'a user token cannot bring its own actor chain');
  t.equal(await outcome(verifySubjectToken(signed({ ...base, may_act: 'x' }), opts)), 'delegation_invalid/invalid_claim:may_act');
  t.equal(await outcome(verifySubjectToken(signed({ ...base, may_act: [] }), opts)), 'delegation_invalid/invalid_claim:may_act');
  t.equal(await outcome(verifySubjectToken(signed({ ...base, scope: 'a\tb' }), opts)), 'delegation_invalid/scope');
  const { scope: _s, ...noScope } = base;
  t.same((await verifySubjectToken(signed({ ...noScope, scp: ['x', 'y'] }), opts)).scope, ['x', 'y'], 'scp array accepted');
  t.same((await verifySubjectToken(signed(noScope), opts)).scope, [], 'no scope → []');
  t.same((await verifySubjectToken(signed({ ...base, aud: ['x', BROKER_AUD] }), opts)).sub, USER, 'aud array');
});

t.test('issuer selection', async (t) => {
  const { kid, privateKey } = await readDevIdp(idpDir);
  const base = { iss: 'https://unknown.example', sub: USER, aud: BROKER_AUD, exp: nowS() + 300 };
  t.equal(await outcome(verifySubjectToken(craft({ alg: 'ES256', kid }, base, { kind: 'es256', key: privateKey }), opts)), 'delegation_invalid/unknown_issuer');
  const { iss: _i, ...noIss } = base;
  t.equal(await outcome(verifySubjectToken(craft({ alg: 'ES256', kid }, noIss, { kind: 'es256', key: privateKey }), opts)), 'delegation_invalid/missing_claim:iss');
  t.equal(await outcome(verifySubjectToken('garbage', opts)), 'delegation_invalid/malformed');
  // A token claiming the broker's issuer but signed by the user IdP's key.
  const fake = craft({ alg: 'ES256', typ: 'at+jwt', kid }, claimsFor({ aud: WORKER, client_id: ORCH, act: { sub: ORCH } }), { kind: 'es256', key: privateKey });
  t.equal(await outcome(verifySubjectToken(fake, opts)), 'delegation_invalid/unknown_kid', 'broker iss with a non-broker key');
});

t.test('RSA identity provider (RS256)', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'rsa1', alg: 'RS256' };
  const rsaOpts: VerifySubjectOptions = { ...opts, users: [...opts.users, { issuer: 'https://rsa.example', audience: BROKER_AUD, keys: staticJwks({ keys: [jwk] }) }] };
  const token = await new SignJWT({ scope: 'a b' })
    .setProtectedHeader({ alg: 'RS256', kid: 'rsa1' })
    .setIssuer('https://rsa.example')
    .setSubject('bob')
    .setAudience(BROKER_AUD)
    .setExpirationTime('5m')
    .sign(privateKey);
  const s = await verifySubjectToken(token, rsaOpts);
  t.match(s, { kind: 'user', sub: 'bob', scope: ['a', 'b'] });
  const restricted: VerifySubjectOptions = { ...opts, users: [{ issuer: 'https://rsa.example', audience: BROKER_AUD, keys: staticJwks({ keys: [jwk] }), algorithms: ['ES256'] }] };
  t.equal(await outcome(verifySubjectToken(token, restricted)), 'delegation_invalid/alg', 'per-issuer algorithm list');
  const withHs: VerifySubjectOptions = { ...opts, users: [{ issuer: 'https://rsa.example', audience: BROKER_AUD, keys: staticJwks({ keys: [jwk] }), algorithms: ['HS256', 'none'] }] };
  t.equal(await outcome(verifySubjectToken(token, withHs)), 'delegation_invalid/alg', 'symmetric/none can never be enabled');
});

t.test('chained exchange: a broker token addressed to the presenting actor', async (t) => {
  // alice → orchestrator: the orchestrator got a token addressed to the worker; the worker now
  // presents it as its subject token.
  const parent = claimsFor({ aud: WORKER, client_id: ORCH, act: { sub: ORCH }, scope: 'tickets:read tickets:write', task: 'task-7' });
  const token = await signDelegationToken(parent as unknown as DelegationTokenClaims, broker);
  const s = await verifySubjectToken(token, opts);
  t.equal(s.kind, 'delegation');
  t.equal(s.sub, USER);
  t.same(s.act, { sub: ORCH });
  t.equal(s.task, 'task-7');
  t.same(s.scope, ['tickets:read', 'tickets:write']);
  t.equal(s.exp, parent.exp);
  t.equal(s.mayAct, undefined);
  t.equal(await outcome(verifySubjectToken(token, { ...opts, audienceForChained: TOOL })), 'audience_mismatch/aud', 'addressed to someone else');
  t.equal(await outcome(verifySubjectToken(tokenFor(broker, { ...parent, exp: nowS() - 60, iat: nowS() - 400 }), opts)), 'delegation_expired/expired');
  t.equal(await outcome(verifySubjectToken(tokenFor(broker, parent, { typ: 'JWT' }), opts)), 'delegation_invalid/typ', 'typ at+jwt required');
  t.equal(await outcome(verifySubjectToken(tokenFor(broker, parent, { alg: 'RS256' }), opts)), 'delegation_invalid/alg');
  t.equal(await outcome(verifySubjectToken(tokenFor(rogue, parent), opts)), 'delegation_invalid/unknown_kid');
  const { task: _t, ...noTask } = parent;
  t.equal(await outcome(verifySubjectToken(tokenFor(broker, noTask), opts)), 'delegation_invalid/missing_claim:task');
  t.equal(await outcome(verifySubjectToken(tokenFor(broker, { ...parent, client_id: WORKER }), opts)), 'delegation_invalid/client_id');
});
