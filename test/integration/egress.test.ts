// Egress to an external API through a real `sigil run`: a local HTTPS server with its own CA
// stands in for a model provider. The agent calls http://api.provider.test through its sidecar
// with no key (and with a key of its own, which must not pass); the provider sees the injected
// credential and the attribution headers; server-sent events stream through; the credential
// file rotates; a missing credential, a policy denial, limits and an untrusted upstream are
// refused with clear reasons; no log, audit line, metric or /status carries the credential.
import { randomBytes } from 'node:crypto';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import { request as httpRequest } from 'node:http';
import { connect as netConnect } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { nestAct, signDelegationToken, SigningKeyRing, type DelegationTokenClaims, type SigningKey } from '../../src/delegation/index.js';
import { pseudonym } from '../../src/egress/index.js';
import { createCa, createCert, type Issued } from '../fixtures/certs.js';
import { plainRequest, type HttpResult } from '../helpers/clients.js';
import { runSigil, setupTrustDomain, sidecarConfig, sleep, splitAddress, tempDir, waitUntil, writeConfig, type RunningSigil } from '../helpers/env.js';

const TD = 'example.org';
const ID_A = 'spiffe://example.org/agent/a';
const ISSUER = 'https://broker.example.org';
const SECRET_1 = `sk-live-${randomBytes(12).toString('hex')}`;
const SECRET_2 = `sk-live-${randomBytes(12).toString('hex')}`;
const PSEUDONYM_SECRET = `pseudo-${randomBytes(12).toString('hex')}`;
const AGENT_KEY = `sk-agent-${randomBytes(8).toString('hex')}`;
const DOLLAR_SECRET = 'sk$&x$`y$$z';

const POLICY = `
@id("provider-v1") permit (principal == Agent::"${ID_A}", action == Action::"egress.http", resource == Host::"api.provider.test")
when { context.http.path like "/v1/*" };
@id("no-admin") forbid (principal, action == Action::"egress.http", resource)
when { context.http.path like "/v1/admin*" };
@id("limited") permit (principal == Agent::"${ID_A}", action == Action::"egress.http", resource == Host::"limited.provider.test");
@id("untrusted") permit (principal == Agent::"${ID_A}", action == Action::"egress.http", resource == Host::"untrusted.provider.test");
@id("dollar") permit (principal == Agent::"${ID_A}", action == Action::"egress.http", resource == Host::"dollar.provider.test");
@id("weird") permit (principal == Agent::"${ID_A}", action == Action::"egress.http", resource == Host::"weird.provider.test");
@id("missing") permit (principal == Agent::"${ID_A}", action == Action::"egress.http", resource == Host::"missing.provider.test");
`;

interface Seen {
  url: string;
  headers: IncomingHttpHeaders;
  body?: string;
}

let dir: string;
let a: RunningSigil;
let key: SigningKey;
let provider: { port: number; seen: Seen[]; release: () => void };
let auditPath: string;
let credentialFile: string;
let weird: { port: number };

/** A TLS server that answers every request with a status Node's parser accepts but cannot forward. */
async function startWeirdProvider(t: Test, ca: Issued): Promise<{ port: number }> {
  const cert = await createCert({ signer: ca, role: 'weird', ipAddresses: ['127.0.0.1'], keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['1.3.6.1.5.5.7.3.1'] });
  const server = createTlsServer({ cert: cert.pem, key: cert.keyPem }, (socket) => {
    socket.on('error', () => undefined);
    socket.once('data', () => socket.end('HTTP/1.1 099 Odd\r\ncontent-length: 0\r\n\r\n'));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as { port: number }).port };
}

async function startProvider(t: Test, ca: Issued): Promise<{ port: number; seen: Seen[]; release: () => void }> {
  const cert = await createCert({ signer: ca, role: 'provider', ipAddresses: ['127.0.0.1'], dnsNames: ['localhost'], keyUsage: ['digitalSignature', 'keyEncipherment'], extKeyUsage: ['1.3.6.1.5.5.7.3.1'] });
  const seen: Seen[] = [];
  let release: () => void = () => {};
  const server: HttpsServer = createHttpsServer({ cert: cert.pem, key: cert.keyPem }, (req, res: ServerResponse) => {
    seen.push({ url: req.url ?? '', headers: req.headers });
    if (req.url === '/v1/stream') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('data: first\n\n');
      release = () => res.end('data: second\n\n');
      return;
    }
    if (req.url?.startsWith('/v1/slow')) {
      setTimeout(() => res.end('{}'), 500);
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      seen[seen.length - 1]!.body = text;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ok: true, body: text.length }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  return { port: (server.address() as { port: number }).port, seen, release: () => release() };
}

t.before(async () => {
  dir = await tempDir(t, 'sigil-egress-');
  const td = await setupTrustDomain(dir, TD);
  const providerCa = await createCa({ trustDomain: 'provider.test' });
  provider = await startProvider(t, providerCa);
  await writeFile(join(dir, 'provider-ca.pem'), providerCa.pem);
  // The untrusted route's CA is some other CA: the provider's certificate does not chain to it.
  await writeFile(join(dir, 'other-ca.pem'), (await createCa({ trustDomain: 'other.test' })).pem);
  credentialFile = join(dir, 'provider.key');
  await writeFile(credentialFile, `${SECRET_1}\n`);
  await writeFile(join(dir, 'pseudonym.key'), PSEUDONYM_SECRET);
  await writeFile(join(dir, 'dollar.key'), DOLLAR_SECRET);
  weird = await startWeirdProvider(t, providerCa);
  await writeFile(join(dir, 'policy.cedar'), POLICY);
  const ring = await SigningKeyRing.load(join(dir, 'broker-keys'));
  key = ring.current();
  await ring.writeJwks(join(dir, 'broker.jwks.json'));
  auditPath = join(dir, 'audit.jsonl');
  const upstream = `https://127.0.0.1:${provider.port}`;
  a = await runSigil(
    t,
    await writeConfig(
      dir,
      'a.yaml',
      sidecarConfig({
        trustDomain: TD,
        identity: { dev: { caDir: td.caDir, spiffeId: ID_A, ttl: '15m' } },
        outbound: {
          listen: '127.0.0.1:0',
          egress: [
            {
              host: 'api.provider.test',
              upstream,
              ca: './provider-ca.pem',
              credential: { file: './provider.key' },
              attribution: {
                headers: { 'x-acting-agent': '{agent}', 'x-user-pseudonym': '{user}', 'x-task-id': '{task}' },
                bodyFields: { user: '{user}' },
                userSecret: { file: './pseudonym.key' },
              },
              limits: { maxBodyBytes: 1024 },
            },
            {
              host: 'limited.provider.test',
              upstream,
              ca: './provider-ca.pem',
              credential: { file: './provider.key', header: 'x-api-key' },
              limits: { agent: { rate: 1, burst: 2 }, concurrency: 1 },
            },
            { host: 'untrusted.provider.test', upstream, ca: './other-ca.pem', credential: { file: './provider.key' } },
            { host: 'missing.provider.test', upstream, ca: './provider-ca.pem', credential: { file: './does-not-exist.key' } },
            { host: 'dollar.provider.test', upstream, ca: './provider-ca.pem', credential: { file: './dollar.key', header: 'x-api-key', value: 'key={credential};' } },
            { host: 'weird.provider.test', upstream: `https://127.0.0.1:${weird.port}`, ca: './provider-ca.pem' },
          ],
        },
        policy: { cedar: './policy.cedar' },
        delegation: { issuer: ISSUER, jwks: './broker.jwks.json', leeway: '1s' },
        audit: { path: auditPath },
      }),
    ),
  );
});

function claims(over: Partial<DelegationTokenClaims> = {}): DelegationTokenClaims {
  const now = Math.floor(Date.now() / 1000);
  return {
    iss: ISSUER,
    sub: 'alice@example.org',
    aud: ID_A,
    client_id: 'spiffe://example.org/agent/orchestrator',
    act: nestAct('spiffe://example.org/agent/orchestrator', undefined),
    scope: 'chat',
    iat: now,
    exp: now + 120,
    jti: randomBytes(16).toString('base64url'),
    task: 'task-42',
    ...over,
  };
}

const call = (host: string, path: string, headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<HttpResult> =>
  plainRequest({ address: a.outbound, path, method, headers: { host, ...headers }, ...(body !== undefined ? { body } : {}) });
const last = (): Seen => provider.seen[provider.seen.length - 1]!;

t.test('the provider gets the injected credential and attribution; the agent sends no key', async (t) => {
  const r = await call('api.provider.test', '/v1/chat');
  t.equal(r.gotHttpResponse && r.status, 200, 'served');
  t.equal(last().headers.authorization, `Bearer ${SECRET_1}`, 'the credential was injected');
  t.equal(last().headers['x-acting-agent'], ID_A, 'the acting agent');
  t.equal(last().headers['x-user-pseudonym'], undefined, 'no delegation: no user header');
  t.equal(last().headers.host, `127.0.0.1:${provider.port}`, 'Host is the upstream');

  const viaProxy = await plainRequest({ address: a.outbound, path: 'http://api.provider.test/v1/chat?x=1', headers: { host: 'ignored.example' } });
  t.equal(viaProxy.gotHttpResponse && viaProxy.status, 200, 'as a forward proxy (absolute-form URI), the URI names the route');
  t.equal(last().url, '/v1/chat?x=1', 'origin-form path and query to the provider');
  t.equal(last().headers.authorization, `Bearer ${SECRET_1}`);

  const withOwnKey = await call('api.provider.test', '/v1/chat', { authorization: `Bearer ${AGENT_KEY}`, 'x-acting-agent': 'spiffe://example.org/agent/forged' });
  t.equal(withOwnKey.gotHttpResponse && withOwnKey.status, 401, "an agent's own bearer value is taken as a delegation token, and refused");
  const asKey = await call('limited.provider.test', '/v1/chat', { 'x-api-key': AGENT_KEY, 'x-acting-agent': 'forged' });
  t.equal(asKey.gotHttpResponse && asKey.status, 200);
  t.equal(last().headers['x-api-key'], SECRET_1, "the agent's own x-api-key was replaced by the sidecar's");
  t.notOk(JSON.stringify(provider.seen).includes(AGENT_KEY), "the agent's key never reached the provider");
});

t.test('header variants, request smuggling, credential bytes, odd upstream statuses', async (t) => {
  // (A route with bodyFields refuses a body it cannot rewrite; this one passes bodies through.)
  const variants = await call('api.provider.test', '/v1/chat', { x_user_pseudonym: 'u_victim', X_Acting_Agent: 'spiffe://example.org/agent/evil', 'x-task_id': 'stolen' });
  t.equal(variants.gotHttpResponse && variants.status, 200);
  const sent = JSON.stringify(last().headers);
  t.notOk(sent.includes('u_victim') || sent.includes('agent/evil') || sent.includes('stolen'), `underscore variants of our headers are not forwarded (${sent})`);
  t.equal(last().headers['x-acting-agent'], ID_A, 'ours is');

  // A chunked body on a GET must stay a body: unframed, it would become a second request that
  // our next call on the pooled connection completes with the credential.
  const { host, port } = splitAddress(a.outbound);
  const smuggled = 'GET /v1/admin/keys HTTP/1.1\r\nx-swallow: ';
  await new Promise<void>((resolve) => {
    const socket = netConnect({ host, port }, () => {
      socket.write(`GET /v1/chat HTTP/1.1\r\nhost: dollar.provider.test\r\ntransfer-encoding: chunked\r\n\r\n${smuggled.length.toString(16)}\r\n${smuggled}\r\n0\r\n\r\n`);
    });
    socket.on('data', () => socket.end());
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
  });
  // The same route (its pooled connections) right after.
  await call('dollar.provider.test', '/v1/chat');
  await call('dollar.provider.test', '/v1/chat');
  t.notOk(provider.seen.some((s) => s.url.includes('admin')), 'no smuggled request reached the provider');
  t.ok(provider.seen.some((s) => s.body === smuggled), 'positive control: it arrived as the body of the chunked GET', { seen: provider.seen.slice(-4).map((s) => ({ url: s.url, body: s.body, te: s.headers['transfer-encoding'] })) });

  const dollar = await call('dollar.provider.test', '/v1/chat');
  t.equal(dollar.gotHttpResponse && dollar.status, 200);
  t.equal(last().headers['x-api-key'], `key=${DOLLAR_SECRET};`, 'a credential with $-patterns is injected byte for byte');

  const odd = await call('weird.provider.test', '/v1/chat');
  t.equal(odd.gotHttpResponse && odd.status, 502, 'an upstream status that cannot be forwarded is a 502');
  t.equal(odd.gotHttpResponse && odd.json?.reason, 'upstream_unavailable');
  const health = await plainRequest({ address: a.admin, path: '/healthz' });
  t.equal(health.gotHttpResponse && health.status, 200, 'and the sidecar is still running');
});

t.test('a delegation: a stable user pseudonym and the task id; the token never reaches the provider', async (t) => {
  const token = await signDelegationToken(claims(), key);
  const r = await call('api.provider.test', '/v1/chat', { authorization: `Bearer ${token}` });
  t.equal(r.gotHttpResponse && r.status, 200, `served (${r.gotHttpResponse ? r.body : r.error})`);
  t.equal(last().headers['x-user-pseudonym'], pseudonym(PSEUDONYM_SECRET, 'alice@example.org'), 'the HMAC pseudonym of the user');
  t.notOk(JSON.stringify(last().headers).includes('alice'), 'never the user');
  t.equal(last().headers['x-task-id'], 'task-42');
  t.equal(last().headers.authorization, `Bearer ${SECRET_1}`, 'the credential replaces the delegation token');
  t.notOk(JSON.stringify(provider.seen).includes(token), 'the delegation token never reached the provider');
  const expired = await signDelegationToken(claims({ iat: Math.floor(Date.now() / 1000) - 600, exp: Math.floor(Date.now() / 1000) - 300 }), key);
  const refused = await call('api.provider.test', '/v1/chat', { authorization: `Bearer ${expired}` });
  t.equal(refused.gotHttpResponse && refused.status, 401, 'an expired delegation is refused');
  t.equal(refused.gotHttpResponse && refused.json?.reason, 'delegation_expired');
});

t.test("JSON body fields (a provider's `user` field) are set from verified values, never the agent's", async (t) => {
  const spoof = await call('api.provider.test', '/v1/chat', { 'content-type': 'application/json' }, 'POST', JSON.stringify({ model: 'm', user: 'spoofed-user' }));
  t.equal(spoof.gotHttpResponse && spoof.status, 200);
  t.same(JSON.parse(last().body ?? '{}'), { model: 'm' }, "no delegation: the agent's own `user` is removed");
  const token = await signDelegationToken(claims(), key);
  const r = await call('api.provider.test', '/v1/chat', { 'content-type': 'application/json', authorization: `Bearer ${token}` }, 'POST', JSON.stringify({ model: 'm', user: 'spoofed-user' }));
  t.equal(r.gotHttpResponse && r.status, 200);
  t.same(JSON.parse(last().body ?? '{}'), { model: 'm', user: pseudonym(PSEUDONYM_SECRET, 'alice@example.org') }, 'with a delegation: the pseudonym');
  const notJson = await call('api.provider.test', '/v1/chat', { 'content-type': 'text/plain' }, 'POST', '{"user":"spoofed-user"}');
  t.equal(notJson.gotHttpResponse && notJson.status, 400, 'a body that cannot be rewritten is refused, not passed through');
  const formish = await call('api.provider.test', '/v1/chat', { 'content-type': 'application/x-www-form-urlencoded; x=json' }, 'POST', '{"a":"&user=evil&"}');
  t.equal(formish.gotHttpResponse && formish.status, 400, 'a media type that merely mentions json is not JSON');
  const plusJson = await call('api.provider.test', '/v1/chat', { 'content-type': 'application/vnd.api+json; charset=utf-8' }, 'POST', '{"user":"spoofed-user"}');
  t.equal(plusJson.gotHttpResponse && plusJson.status, 200, 'a +json media type is JSON');
  t.equal(last().headers['content-type'], 'application/json', 'the rewritten body is sent as application/json');
  const array = await call('api.provider.test', '/v1/chat', { 'content-type': 'application/json' }, 'POST', '[1]');
  t.equal(array.gotHttpResponse && array.status, 400);
  t.notOk(provider.seen.some((s) => s.body?.includes('spoofed-user')), 'the spoofed value never reached the provider');
});

t.test('server-sent events stream through: the first event arrives before the stream ends', async (t) => {
  const { host, port } = splitAddress(a.outbound);
  const chunks: string[] = [];
  let firstAt = 0;
  const done = new Promise<void>((resolve, reject) => {
    const req = httpRequest({ host, port, path: '/v1/stream', headers: { host: 'api.provider.test', accept: 'text/event-stream' } }, (res) => {
      t.equal(res.statusCode, 200);
      t.match(String(res.headers['content-type']), 'text/event-stream');
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        if (chunks.length === 0) firstAt = Date.now();
        chunks.push(c);
      });
      res.on('end', () => resolve());
    });
    req.on('error', reject);
    req.end();
  });
  t.ok(await waitUntil(() => chunks.join('').includes('data: first'), 3_000), 'the first event arrived while the stream is still open');
  t.notOk(chunks.join('').includes('second'), 'nothing buffered ahead');
  await sleep(100);
  provider.release();
  await done;
  t.match(chunks.join(''), /data: first\n\n[\s\S]*data: second\n\n/);
  t.ok(firstAt > 0);
});

t.test('credential rotation takes effect on the next call; a missing credential is a 502 with a reason', async (t) => {
  await writeFile(credentialFile, `${SECRET_2}\n`);
  t.ok(
    await waitUntil(async () => {
      await call('api.provider.test', '/v1/chat');
      return last().headers.authorization === `Bearer ${SECRET_2}`;
    }, 3_000),
    'the rotated credential is used',
  );
  const missing = await call('missing.provider.test', '/v1/chat');
  t.equal(missing.gotHttpResponse && missing.status, 502);
  t.equal(missing.gotHttpResponse && missing.json?.reason, 'credential_unavailable');
  t.match(missing.gotHttpResponse ? missing.json?.detail : '', 'does-not-exist.key', 'the reason names the source');
});

t.test('policy, limits, body size and an untrusted upstream are refused with reasons', async (t) => {
  const denied = await call('api.provider.test', '/v1/admin/keys');
  t.equal(denied.gotHttpResponse && denied.status, 403);
  t.match(denied.gotHttpResponse ? denied.json : {}, { reason: 'policy_denied', policies: ['no-admin'] });
  const unlisted = await call('api.provider.test', '/v2/other');
  t.equal(unlisted.gotHttpResponse && unlisted.status, 403, 'outside the permitted paths: default deny');

  const big = await call('api.provider.test', '/v1/chat', { 'content-type': 'application/json' }, 'POST', 'x'.repeat(2048));
  t.equal(big.gotHttpResponse && big.status, 413);
  t.equal(big.gotHttpResponse && big.json?.reason, 'body_too_large');
  const small = await call('api.provider.test', '/v1/chat', { 'content-type': 'application/json' }, 'POST', JSON.stringify({ pad: 'x'.repeat(500) }));
  t.equal(small.gotHttpResponse && small.status, 200, 'positive control: a body under the cap passes');

  await sleep(2_100); // the limited route's bucket is full again
  const results = [];
  for (let i = 0; i < 4; i++) results.push(await call('limited.provider.test', '/v1/chat'));
  const statuses = results.map((r) => (r.gotHttpResponse ? r.status : 0));
  t.same(statuses.slice(0, 2), [200, 200], 'the burst passes');
  t.ok(statuses.slice(2).includes(429), `then rate limited (${statuses.join(',')})`);
  const limited = results.find((r) => r.gotHttpResponse && r.status === 429)!;
  t.equal(limited.gotHttpResponse && limited.json?.reason, 'rate_limited');
  t.ok(limited.gotHttpResponse && Number(limited.headers['retry-after']) >= 1, 'with Retry-After');

  await sleep(2_100);
  const [slow, second] = await Promise.all([call('limited.provider.test', '/v1/slow'), sleep(100).then(() => call('limited.provider.test', '/v1/chat'))]);
  t.equal(slow.gotHttpResponse && slow.status, 200);
  t.equal(second.gotHttpResponse && second.status, 429, 'a second call in flight is over the concurrency limit');
  t.equal(second.gotHttpResponse && second.json?.reason, 'concurrency_limited');

  const untrusted = await call('untrusted.provider.test', '/v1/chat');
  t.equal(untrusted.gotHttpResponse && untrusted.status, 502);
  t.equal(untrusted.gotHttpResponse && untrusted.json?.reason, 'upstream_untrusted', 'a certificate that does not chain to the route CA is refused');
});

t.test('metrics, audit and /status attribute egress calls and never carry the credential', async (t) => {
  const metrics = await plainRequest({ address: a.admin, path: '/metrics' });
  const text = metrics.gotHttpResponse ? metrics.body : '';
  t.match(text, /sigil_requests_total\{[^}]*reporter="egress"[^}]*destination_principal="api.provider.test"[^}]*decision="allow"/, 'allowed egress calls are counted');
  t.match(text, /reporter="egress"[^}]*reason="rate_limited"/, 'rate-limited calls too');
  const audit = await readFile(auditPath, 'utf8');
  t.match(audit, /"action":"egress.http"/);
  t.match(audit, /"resource":\{"type":"Host","name":"api.provider.test"\}/);
  t.match(audit, /"reason":"rate_limited"/);
  const status = await plainRequest({ address: a.admin, path: '/status' });
  const statusText = status.gotHttpResponse ? status.body : '';
  t.match(statusText, /"egress":\[/);
  const logs = JSON.stringify(a.proc.lines) + a.proc.stderr();
  for (const [what, content] of [['logs', logs], ['audit', audit], ['metrics', text], ['/status', statusText]] as const) {
    t.notOk(content.includes(SECRET_1) || content.includes(SECRET_2), `no credential bytes in ${what}`);
    t.notOk(content.includes(PSEUDONYM_SECRET), `no pseudonym secret in ${what}`);
  }
  t.ok(logs.length > 0 && audit.length > 0, 'positive control: there was something to search');
});

t.test('revoking the user cuts an egress stream made for them, and refuses the next call', async (t) => {
  const token = await signDelegationToken(claims({ sub: 'bob@example.org' }), key);
  const { host, port } = splitAddress(a.outbound);
  let received = '';
  const ended = new Promise<string>((resolve) => {
    const req = httpRequest({ host, port, path: '/v1/stream', headers: { host: 'api.provider.test', authorization: `Bearer ${token}` } }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (c: string) => (received += c));
      res.on('end', () => resolve('end'));
      res.on('error', () => resolve('error'));
      res.on('close', () => resolve('close'));
    });
    req.on('error', () => resolve('error'));
    req.end();
  });
  t.ok(await waitUntil(() => received.includes('data: first'), 3_000), 'positive control: the stream is open');
  const revoke = await plainRequest({ address: a.admin, path: '/v1/revocations', method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'user', value: 'bob@example.org', reason: 'test' }) });
  t.equal(revoke.gotHttpResponse && revoke.status, 201, 'revoked');
  const how = await Promise.race([ended, sleep(3_000).then(() => 'still open')]);
  t.not(how, 'still open', `the stream was cut (${how})`);
  t.notOk(received.includes('second'), 'before it finished');
  const next = await call('api.provider.test', '/v1/chat', { authorization: `Bearer ${await signDelegationToken(claims({ sub: 'bob@example.org' }), key)}` });
  t.equal(next.gotHttpResponse && next.status, 403);
  t.equal(next.gotHttpResponse && next.json?.reason, 'revoked');
  provider.release();
});

t.test('a revocation while the agent is still sending the body applies before anything is sent', async (t) => {
  const token = await signDelegationToken(claims({ sub: 'carol@example.org', task: 'задача-7' }), key);
  const ok = await call('api.provider.test', '/v1/chat', { authorization: `Bearer ${token}` });
  t.equal(ok.gotHttpResponse && ok.status, 200, 'positive control: carol is served');
  t.equal(last().headers['x-task-id'], encodeURIComponent('задача-7'), 'a task id a header cannot hold is sent percent-encoded');
  const before = provider.seen.length;
  const { host, port } = splitAddress(a.outbound);
  const body = JSON.stringify({ model: 'm' });
  let answer = '';
  const done = new Promise<void>((resolve) => {
    const socket = netConnect({ host, port }, () => {
      socket.write(`POST /v1/chat HTTP/1.1\r\nhost: api.provider.test\r\nauthorization: Bearer ${token}\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body.slice(0, 5)}`);
      setTimeout(async () => {
        await plainRequest({ address: a.admin, path: '/v1/revocations', method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'user', value: 'carol@example.org', reason: 'test' }) });
        socket.write(body.slice(5));
      }, 300);
    });
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => {
      answer += d;
      if (answer.includes('\r\n\r\n')) socket.end();
    });
    socket.on('close', () => resolve());
    socket.on('error', () => resolve());
  });
  await done;
  t.match(answer, /^HTTP\/1\.1 403/, 'refused once the body is in');
  t.match(answer, /"reason":"revoked"/);
  t.equal(provider.seen.length, before, 'nothing reached the provider');
});

t.test('teardown check: the credential file can go away without crashing the sidecar', async (t) => {
  await rm(credentialFile);
  t.ok(
    await waitUntil(async () => {
      const r = await call('api.provider.test', '/v1/chat');
      return r.gotHttpResponse && r.status === 502 && r.json?.reason === 'credential_unavailable';
    }, 3_000),
    'a deleted credential stops being used',
  );
  const health = await plainRequest({ address: a.admin, path: '/healthz' });
  t.equal(health.gotHttpResponse && health.status, 200, 'still running');
});
