// DelegationVerifier: every rule, each refusal beside a positive control.
import { createPublicKey } from 'node:crypto';
import t from 'tap';
import {
  DelegationError,
  DelegationVerifier,
  REQUIRED_CLAIMS,
  signDelegationToken,
  staticJwks,
  type DelegationTokenClaims,
  type SigningKey,
} from '../../src/delegation/index.js';
import { ISSUER, ORCH, OTHER, TOOL, USER, WORKER, b64url, claimsFor, craft, headerFor, keys, nowS, outcome, tokenFor } from './fixtures.js';

let k1: SigningKey;
let k2: SigningKey;
let rogue: SigningKey;
const expect = { audience: TOOL, actor: WORKER };

t.before(async () => {
  const ks = await keys(3);
  k1 = ks[0]!;
  k2 = ks[1]!;
  rogue = ks[2]!;
});

const fresh = (opts: Partial<ConstructorParameters<typeof DelegationVerifier>[0]> = {}): DelegationVerifier =>
  new DelegationVerifier({ issuer: ISSUER, keys: staticJwks({ keys: [k1.publicJwk, k2.publicJwk] }), ...opts });

t.test('a broker-signed token verifies; the context is the chain', async (t) => {
  // One claims object: two calls to claimsFor() may straddle a second boundary.
  const claims = claimsFor();
  const token = await signDelegationToken(claims as unknown as DelegationTokenClaims, k1);
  const [h] = token.split('.');
  t.same(JSON.parse(Buffer.from(h!, 'base64url').toString()), { alg: 'ES256', typ: 'at+jwt', kid: k1.kid }, 'header');
  const v = await fresh().verify(token, expect);
  t.same(v.context, { sub: USER, actors: [WORKER, ORCH], depth: 2, scope: ['tickets:read', 'tickets:write'], task: 'task-1', jti: 'jti-1' });
  t.equal(v.claims.sub, USER);
  t.equal(v.expiresAt, (claims.exp as number) * 1000);
  t.ok(Object.isFrozen(v) && Object.isFrozen(v.context) && Object.isFrozen(v.context.actors), 'result is frozen');
  t.equal(await outcome(fresh().verify(tokenFor(k2), expect)), 'ok', 'a second published key verifies too (crafted token, no library)');
});

t.test('signDelegationToken refuses malformed claims', async (t) => {
  await t.rejects(signDelegationToken(claimsFor({ client_id: ORCH }) as unknown as DelegationTokenClaims, k1), /client_id must equal act.sub/);
  await t.rejects(signDelegationToken(claimsFor({ scope: 'a\tb' }) as unknown as DelegationTokenClaims, k1), /scope/);
  await t.rejects(signDelegationToken(claimsFor({ exp: nowS() - 10 }) as unknown as DelegationTokenClaims, k1), /exp must be after iat/);
});

t.test('alg allow-list: ES256 only', async (t) => {
  const v = fresh();
  t.equal(await outcome(v.verify(tokenFor(k1), expect)), 'ok', 'control');
  t.equal(await outcome(v.verify(craft(headerFor(k1, { alg: 'none' }), claimsFor(), { kind: 'none' }), expect)), 'delegation_invalid/alg', 'alg none');
  t.equal(await outcome(v.verify(craft(headerFor(k1, { alg: 'NONE' }), claimsFor(), { kind: 'none' }), expect)), 'delegation_invalid/alg', 'alg NONE');
  const { alg: _a, ...noAlg } = headerFor(k1);
  t.equal(await outcome(v.verify(craft(noAlg, claimsFor(), { kind: 'none' }), expect)), 'delegation_invalid/alg', 'alg missing');
  // The classic confusion attack: HS256 keyed with the broker's public key, in every encoding
  // an attacker could guess.
  const pub = createPublicKey(k1.privateKey);
  const secrets = [
    Buffer.from(JSON.stringify(k1.publicJwk)),
    Buffer.from(pub.export({ format: 'pem', type: 'spki' }) as string),
    pub.export({ format: 'der', type: 'spki' }),
  ];
  for (const secret of secrets) {
    t.equal(await outcome(v.verify(craft(headerFor(k1, { alg: 'HS256' }), claimsFor(), { kind: 'hmac', secret }), expect)), 'delegation_invalid/alg', 'HS256 with the public key');
  }
  for (const alg of ['HS384', 'RS256', 'PS256', 'ES384', 'ES512', 'EdDSA', 'es256']) {
    t.equal(await outcome(v.verify(tokenFor(k1, claimsFor(), { alg }), expect)), 'delegation_invalid/alg', alg);
  }
});

t.test('typ must be at+jwt (case-insensitive, application/ form accepted)', async (t) => {
  const v = fresh();
  for (const typ of ['at+jwt', 'AT+JWT', 'At+Jwt', 'application/at+jwt', 'Application/AT+JWT']) {
    t.equal(await outcome(v.verify(tokenFor(k1, claimsFor(), { typ }), expect)), 'ok', typ);
  }
  for (const typ of ['JWT', 'jwt', 'application/jwt', 'at+jwt ', 'dpop+jwt', '', 1, null]) {
    t.equal(await outcome(v.verify(tokenFor(k1, claimsFor(), { typ }), expect)), 'delegation_invalid/typ', JSON.stringify(typ));
  }
  const { typ: _t, ...noTyp } = headerFor(k1);
  t.equal(await outcome(v.verify(craft(noTyp, claimsFor(), { kind: 'es256', key: k1.privateKey }), expect)), 'delegation_invalid/typ', 'typ missing');
});

t.test('critical header parameters are refused', async (t) => {
  t.equal(await outcome(fresh().verify(tokenFor(k1, claimsFor(), { crit: ['exp'], exp: 1 }), expect)), 'delegation_invalid/crit');
  t.equal(await outcome(fresh().verify(tokenFor(k1, claimsFor(), { b64: false, crit: ['b64'] }), expect)), 'delegation_invalid/crit');
});

t.test('each required claim missing → missing_claim:<name>', async (t) => {
  const v = fresh();
  t.equal(await outcome(v.verify(tokenFor(k1), expect)), 'ok', 'control');
  for (const name of REQUIRED_CLAIMS) {
    const c = claimsFor();
    delete c[name];
    t.equal(await outcome(v.verify(tokenFor(k1, c), expect)), `delegation_invalid/missing_claim:${name}`, name);
  }
  t.same([...REQUIRED_CLAIMS], ['iss', 'sub', 'aud', 'exp', 'iat', 'jti', 'act', 'client_id', 'scope', 'task']);
});

t.test('claims of the wrong type → invalid_claim:<name>', async (t) => {
  const v = fresh();
  const cases: [Record<string, unknown>, string][] = [
    [{ iss: 5 }, 'invalid_claim:iss'],
    [{ sub: '' }, 'invalid_claim:sub'],
    [{ sub: null }, 'invalid_claim:sub'],
    [{ aud: 7 }, 'invalid_claim:aud'],
    [{ aud: [] }, 'invalid_claim:aud'],
    [{ aud: [TOOL, 3] }, 'invalid_claim:aud'],
    [{ exp: String(nowS() + 300) }, 'invalid_claim:exp'],
    [{ iat: 'now' }, 'invalid_claim:iat'],
    [{ nbf: 'later' }, 'invalid_claim:nbf'],
    [{ jti: 1 }, 'invalid_claim:jti'],
    [{ client_id: {} }, 'invalid_claim:client_id'],
    [{ task: '' }, 'invalid_claim:task'],
    [{ scope: ['tickets:read'] }, 'invalid_claim:scope'],
    [{ scope: 'tickets:read\ttickets:write' }, 'scope'],
    [{ act: 'spiffe://example.org/agent/worker' }, 'invalid_claim:act'],
    [{ act: { sub: WORKER, act: { iss: 'x' } } }, 'invalid_claim:act'],
  ];
  for (const [over, detail] of cases) t.equal(await outcome(v.verify(tokenFor(k1, claimsFor(over)), expect)), `delegation_invalid/${detail}`, JSON.stringify(over));
});

t.test('iss must be the broker', async (t) => {
  t.equal(await outcome(fresh().verify(tokenFor(k1, claimsFor({ iss: 'https://evil.example' })), expect)), 'delegation_invalid/iss');
  t.equal(await outcome(fresh().verify(tokenFor(k1, claimsFor({ iss: ISSUER + '/' })), expect)), 'delegation_invalid/iss', 'exact match');
});

t.test('kid: unknown, missing, or a non-broker key', async (t) => {
  const v = fresh();
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor(), { kid: 'nope' }), expect)), 'delegation_invalid/unknown_kid');
  t.equal(await outcome(v.verify(tokenFor(rogue), expect)), 'delegation_invalid/unknown_kid', 'rogue key with its own kid');
  const { kid: _k, ...noKid } = headerFor(k1);
  t.equal(await outcome(v.verify(craft(noKid, claimsFor(), { kind: 'es256', key: k1.privateKey }), expect)), 'delegation_invalid/missing_kid', 'kid is required even with one key');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor(), { kid: 7 }), expect)), 'delegation_invalid/malformed');
  // A non-broker key claiming a broker kid, even with its own public key embedded in the header.
  const forged = craft(headerFor(k1, { jwk: rogue.publicJwk }), claimsFor(), { kind: 'es256', key: rogue.privateKey });
  t.equal(await outcome(v.verify(forged, expect)), 'delegation_invalid/bad_signature', 'signature by a non-broker key');
  t.equal(await outcome(v.verify(craft(headerFor(k1), claimsFor(), { kind: 'es256', key: k2.privateKey }), expect)), 'delegation_invalid/bad_signature', 'the other broker key under the wrong kid');
});

t.test('tampered token', async (t) => {
  const v = fresh();
  const token = tokenFor(k1);
  t.equal(await outcome(v.verify(token, expect)), 'ok', 'control');
  const [h, p, s] = token.split('.') as [string, string, string];
  const wider = b64url(JSON.stringify(claimsFor({ scope: 'tickets:read tickets:write admin' })));
  t.equal(await outcome(v.verify(`${h}.${wider}.${s}`, expect)), 'delegation_invalid/bad_signature', 'payload replaced');
  const otherActor = b64url(JSON.stringify(claimsFor({ client_id: OTHER, act: { sub: OTHER } })));
  t.equal(await outcome(v.verify(`${h}.${otherActor}.${s}`, expect)), 'delegation_invalid/bad_signature', 'actor replaced');
  const h2 = b64url(JSON.stringify(headerFor(k2)));
  t.equal(await outcome(v.verify(`${h2}.${p}.${s}`, expect)), 'delegation_invalid/bad_signature', 'header replaced');
  const sig = Buffer.from(s, 'base64url');
  sig[10] = sig[10]! ^ 1;
  t.equal(await outcome(v.verify(`${h}.${p}.${sig.toString('base64url')}`, expect)), 'delegation_invalid/bad_signature', 'signature bit flipped');
  t.equal(await outcome(v.verify(`${h}.${p}.`, expect)), 'delegation_invalid/bad_signature', 'signature stripped');
  t.equal(await outcome(v.verify(`${h}.${p}.${s}A`, expect)), 'delegation_invalid/bad_signature', 'signature extended');
});

t.test('malformed input', async (t) => {
  const v = fresh();
  for (const bad of ['', 'abc', 'a.b', 'a.b.c.d', '..', '!!.e30.x', `${b64url('[1]')}.${b64url('{}')}.x`, `${b64url('{"alg":"ES256"')}.e30.x`]) {
    t.equal(await outcome(v.verify(bad, expect)), 'delegation_invalid/malformed', JSON.stringify(bad));
  }
  t.equal(await outcome(v.verify('e30.e30.', expect)), 'delegation_invalid/alg', 'empty header');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ pad: 'x'.repeat(20_000) })), expect)), 'delegation_invalid/too_large');
  const payloadNotObject = craft(headerFor(k1), '"hello"', { kind: 'es256', key: k1.privateKey });
  t.equal(await outcome(v.verify(payloadNotObject, expect)), 'delegation_invalid/malformed');
  const notJson = craft(headerFor(k1), 'not json', { kind: 'es256', key: k1.privateKey });
  t.equal(await outcome(v.verify(notJson, expect)), 'delegation_invalid/malformed');
});

t.test('exp / nbf / iat with leeway', async (t) => {
  const v = fresh({ leewaySeconds: 5 });
  const now = nowS();
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ iat: now - 400, exp: now - 10 })), expect)), 'delegation_expired/expired');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ iat: now - 400, exp: now - 2 })), expect)), 'ok', 'within leeway');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ nbf: now + 60 })), expect)), 'delegation_invalid/not_yet_valid');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ nbf: now + 2 })), expect)), 'ok', 'nbf within leeway');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ iat: now + 60, exp: now + 300 })), expect)), 'delegation_invalid/iat_future');
  const token = tokenFor(k1, claimsFor({ exp: now + 60 }));
  t.equal(await outcome(v.verify(token, { ...expect, nowMs: (now + 64) * 1000 })), 'ok', 'caller clock, inside leeway');
  t.equal(await outcome(v.verify(token, { ...expect, nowMs: (now + 66) * 1000 })), 'delegation_expired/expired', 'caller clock, past exp + leeway');
  const strict = fresh({ leewaySeconds: 0 });
  t.equal(await outcome(strict.verify(tokenFor(k1, claimsFor({ iat: now - 400, exp: now - 2 })), expect)), 'delegation_expired/expired', 'no leeway');
});

t.test('aud must be this sidecar', async (t) => {
  const v = fresh();
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ aud: OTHER })), expect)), 'audience_mismatch/aud');
  t.equal(await outcome(v.verify(tokenFor(k1), { audience: OTHER, actor: WORKER })), 'audience_mismatch/aud', 'presented at another sidecar');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ aud: [OTHER, TOOL] })), expect)), 'ok', 'array containing it');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ aud: [OTHER] })), expect)), 'audience_mismatch/aud', 'array without it');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ aud: TOOL + '/x' })), expect)), 'audience_mismatch/aud', 'exact match');
  const ok = await v.verify(tokenFor(k1, claimsFor({ jti: 'arr', aud: [OTHER, TOOL] })), expect);
  t.equal(ok.claims.aud, TOOL, 'aud normalised to the matched audience');
});

t.test('client_id must be the outermost actor', async (t) => {
  t.equal(await outcome(fresh().verify(tokenFor(k1, claimsFor({ client_id: ORCH })), expect)), 'delegation_invalid/client_id');
  t.equal(await outcome(fresh().verify(tokenFor(k1, claimsFor({ client_id: ORCH })), { audience: TOOL, actor: ORCH })), 'delegation_invalid/client_id', 'even when it names the presenter');
});

t.test('stolen token: the outermost actor must be the presenter', async (t) => {
  const v = fresh();
  const token = tokenFor(k1);
  t.equal(await outcome(v.verify(token, expect)), 'ok', 'control: presented by the worker');
  t.equal(await outcome(v.verify(token, { audience: TOOL, actor: OTHER })), 'actor_mismatch/actor', 'C presents B\'s token');
  t.equal(await outcome(v.verify(token, { audience: TOOL, actor: ORCH })), 'actor_mismatch/actor', 'an earlier actor in the chain is not the current one');
});

t.test('depth cap', async (t) => {
  const chain = (n: number): Record<string, unknown> => {
    let act: Record<string, unknown> | undefined;
    for (let i = n - 1; i >= 1; i--) act = act ? { sub: `spiffe://example.org/agent/a${i}`, act } : { sub: `spiffe://example.org/agent/a${i}` };
    return act ? { sub: WORKER, act } : { sub: WORKER };
  };
  const v = fresh();
  const four = await v.verify(tokenFor(k1, claimsFor({ act: chain(4) })), expect);
  t.equal(four.context.depth, 4, 'default cap 4 allows 4');
  t.equal(four.context.actors.length, 4);
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ act: chain(5) })), expect)), 'delegation_too_deep/depth', '5 > 4');
  t.equal(await outcome(v.verify(tokenFor(k1, claimsFor({ act: chain(60) })), expect)), 'delegation_too_deep/depth', 'very deep');
  const one = fresh({ maxDepth: 1 });
  t.equal(await outcome(one.verify(tokenFor(k1, claimsFor({ act: chain(1) })), expect)), 'ok');
  t.equal(await outcome(one.verify(tokenFor(k1, claimsFor({ act: chain(2) })), expect)), 'delegation_too_deep/depth');
});

t.test('errors never carry token text', async (t) => {
  const token = tokenFor(k1, claimsFor({ aud: OTHER }));
  const err = await fresh().verify(token, expect).catch((e: unknown) => e);
  t.ok(err instanceof DelegationError);
  const e = err as DelegationError;
  for (const part of token.split('.')) t.notOk(e.message.includes(part.slice(0, 16)), 'no token fragment');
  t.notOk(e.message.includes(OTHER) || e.message.includes(USER), 'no claim values');
  t.equal(e.message, 'audience_mismatch: aud');
});

t.test('cache', async (t) => {
  t.test('a token used on many requests is verified once', async (t) => {
    const v = fresh();
    const token = tokenFor(k1);
    const first = await v.verify(token, expect);
    const second = await v.verify(token, expect);
    t.equal(second, first, 'the same frozen result');
    t.same(v.stats, { hits: 1, misses: 1, failures: 0 });
  });
  t.test('a cached token presented by another actor is still refused', async (t) => {
    const v = fresh();
    const token = tokenFor(k1);
    await v.verify(token, expect);
    t.equal(await outcome(v.verify(token, { audience: TOOL, actor: OTHER })), 'actor_mismatch/actor');
    t.equal(await outcome(v.verify(token, { audience: OTHER, actor: WORKER })), 'audience_mismatch/aud', 'or at another audience');
    t.equal(await outcome(v.verify(token, expect)), 'ok', 'the rightful presenter still hits');
    t.equal(v.stats.hits, 1);
    t.equal(v.stats.failures, 2);
  });
  t.test('failures are never cached', async (t) => {
    const v = fresh();
    const token = tokenFor(k1, claimsFor({ aud: OTHER }));
    await outcome(v.verify(token, expect));
    await outcome(v.verify(token, expect));
    t.same(v.stats, { hits: 0, misses: 2, failures: 2 });
    t.equal(v.cacheSize, 0);
  });
  t.test('a cache hit re-checks exp', async (t) => {
    const v = fresh({ leewaySeconds: 0 });
    const now = nowS();
    const token = tokenFor(k1, claimsFor({ exp: now + 30 }));
    t.equal(await outcome(v.verify(token, expect)), 'ok');
    t.equal(await outcome(v.verify(token, { ...expect, nowMs: (now + 29) * 1000 })), 'ok', 'hit before exp');
    t.equal(v.stats.hits, 1);
    t.equal(await outcome(v.verify(token, { ...expect, nowMs: (now + 31) * 1000 })), 'delegation_expired/expired', 'refused after exp');
    t.equal(v.cacheSize, 0, 'the expired entry is gone');
  });
  t.test('bounded', async (t) => {
    const v = fresh({ cacheLimit: 3 });
    for (let i = 0; i < 10; i++) await v.verify(tokenFor(k1, claimsFor({ jti: `b${i}` })), expect);
    t.ok(v.cacheSize <= 3, `size ${v.cacheSize}`);
    const off = fresh({ cacheLimit: 0 });
    const token = tokenFor(k1);
    await off.verify(token, expect);
    await off.verify(token, expect);
    t.same(off.stats, { hits: 0, misses: 2, failures: 0 }, 'cacheLimit 0 disables it');
  });
});
