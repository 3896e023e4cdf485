// Egress credential sources (createCredentialSource): a watched file, the environment, and an
// HTTPS secrets manager behind mTLS and a token header. Every test also feeds a shared record of
// log lines, status() JSON and error messages, and the last test checks that no secret value
// ever appeared in any of them.
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import {
  createCredentialSource,
  CredentialUnavailableError,
  parsePointer,
  resolvePointer,
  type CredentialSource,
  type CredentialSourceConfig,
} from '../../src/egress/credentials.js';
import { createLogger, type Logger } from '../../src/telemetry/index.js';
import { createCa, createCert, EKU_CLIENT_AUTH, EKU_SERVER_AUTH } from '../fixtures/certs.js';
import { listenOnLoopback, tempDir, waitUntil, type Teardown } from '../helpers/env.js';

// --- shared leak record -------------------------------------------------------------------------

/** Every secret value any test uses (credentials, tokens, bodies that must not be echoed). */
const SECRETS = new Set<string>();
const secret = (s: string): string => (SECRETS.add(s), s);
/** Everything a source said: log lines, status() JSON, error messages. */
const SEEN: string[] = [];
const logger: Logger = createLogger({ level: 'debug', write: (line) => SEEN.push(line) });

/** status(), recorded. */
function statusOf(source: CredentialSource): ReturnType<CredentialSource['status']> {
  const s = source.status();
  SEEN.push(JSON.stringify(s));
  return s;
}

/** value() or the unavailable reason (recorded); any other throw fails the test. */
function read(source: CredentialSource): { value?: string; error?: string } {
  try {
    return { value: source.value() };
  } catch (err) {
    if (!(err instanceof CredentialUnavailableError)) throw err;
    if (err.code !== 'credential_unavailable') throw new Error(`wrong code ${err.code}`);
    SEEN.push(err.message);
    return { error: err.message };
  }
}

/** The message `fn` throws ('(no throw)' when it does not). */
function thrownMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  return '(no throw)';
}

async function started(t: Teardown, config: CredentialSourceConfig, env?: Record<string, string | undefined>): Promise<CredentialSource> {
  const source = createCredentialSource(config, logger, env ? { env } : {});
  t.teardown(() => source.stop());
  await source.start();
  return source;
}

// --- file ---------------------------------------------------------------------------------------

t.test('file: loads, follows rewrites, fails closed on delete, comes back on recreate', async (t) => {
  const dir = await tempDir(t, 'sigil-cred-');
  const path = join(dir, 'openai.key');
  const v1 = secret('file-secret-one-1111');
  const v2 = secret('file-secret-two-22222222');
  const v3 = secret('file-secret-three-333');
  await writeFile(path, v1 + '\n');
  const source = await started(t, { kind: 'file', path });
  t.equal(source.description, `file ${path}`);
  t.equal(read(source).value, v1, 'one trailing newline removed');
  const first = statusOf(source);
  t.match(first, { source: `file ${path}`, available: true });
  t.type(first.loadedAt, 'string');
  t.notOk('lastError' in first);

  await writeFile(path, v2 + '\r\n');
  t.equal(await waitUntil(() => read(source).value === v2, 2_000), true, 'rewrite picked up within 2 s (and \\r\\n trimmed)');

  await rm(path);
  t.ok(await waitUntil(() => statusOf(source).available === false, 2_000), 'delete makes it unavailable');
  const gone = read(source);
  t.equal(gone.value, undefined, 'the old value is no longer handed out');
  t.match(gone.error, path, 'the reason names the path');
  t.match(gone.error, 'ENOENT', 'and the errno code');
  t.notMatch(gone.error, v2);
  t.match(statusOf(source), { available: false, lastError: gone.error });
  t.notOk('loadedAt' in statusOf(source), 'no loadedAt without a value');

  await writeFile(path, v3);
  t.equal(await waitUntil(() => read(source).value === v3, 2_000), true, 'recreated: available again (no newline to trim is fine)');
  t.notOk('lastError' in statusOf(source), 'the error clears');
});

t.test('file: only ONE trailing newline is removed, nothing else is trimmed', async (t) => {
  const dir = await tempDir(t, 'sigil-cred-');
  const spaced = join(dir, 'spaced');
  await writeFile(spaced, ' key-with-spaces-4444 \n');
  secret('key-with-spaces-4444');
  t.equal(read(await started(t, { kind: 'file', path: spaced })).value, ' key-with-spaces-4444 ', 'spaces kept');

  const twice = join(dir, 'twice');
  await writeFile(twice, secret('two-newlines-5555') + '\n\n');
  const source = await started(t, { kind: 'file', path: twice });
  const r = read(source);
  t.equal(r.value, undefined, 'the second newline is inside the value: refused');
  t.match(r.error, `file ${twice}: contains a line break or NUL`);
});

t.test('file: inner line breaks, NUL and empty files are refused; changes out of them recover', async (t) => {
  const dir = await tempDir(t, 'sigil-cred-');
  const cases: Array<[string, string, string]> = [
    ['inner LF', `${secret('inner-lf-aaaa')}\nX-Injected: 1\n`, 'contains a line break or NUL'],
    ['inner CR', `${secret('inner-cr-bbbb')}\rmore`, 'contains a line break or NUL'],
    ['NUL', `${secret('with-nul-cccc')}\0`, 'contains a line break or NUL'],
    ['empty', '', 'empty'],
    ['only a newline', '\n', 'empty'],
  ];
  for (const [name, content, reason] of cases) {
    const path = join(dir, name.replaceAll(' ', '-'));
    await writeFile(path, content);
    const source = await started(t, { kind: 'file', path });
    const r = read(source);
    t.equal(r.value, undefined, `${name}: unavailable`);
    t.equal(r.error, `file ${path}: ${reason}`, `${name}: reason`);
    t.match(statusOf(source), { available: false, lastError: r.error });
  }
  // Positive control for the watcher on a refused file: fixing it makes the source available.
  const path = join(dir, 'inner-LF');
  const fixed = secret('fixed-now-dddd');
  await writeFile(path, fixed + '\n');
  const source = await started(t, { kind: 'file', path });
  t.equal(read(source).value, fixed);
  await writeFile(path, 'x\ny');
  t.equal(await waitUntil(() => read(source).value === undefined, 2_000), true, 'a change into an inner newline drops the value');
});

t.test('file: missing at start, created later', async (t) => {
  const dir = await tempDir(t, 'sigil-cred-');
  const path = join(dir, 'later');
  const source = await started(t, { kind: 'file', path });
  t.match(read(source).error, `file ${path}: cannot read (ENOENT)`);
  const lines = SEEN.filter((l) => l.includes('credential unavailable') && l.includes(path));
  t.ok(lines.length >= 1, 'a warning was logged');
  t.match(JSON.parse(lines[0]!), { level: 'warn', msg: 'credential unavailable', source: `file ${path}`, code: 'ENOENT' });
  const v = secret('created-later-eeee');
  await writeFile(path, v);
  t.equal(await waitUntil(() => read(source).value === v, 2_000), true);
  source.stop();
  await writeFile(path, 'after-stop-ffff');
  secret('after-stop-ffff');
  await new Promise((r) => setTimeout(r, 600));
  t.equal(read(source).value, v, 'stopped: no more reloads');
});

// --- env ----------------------------------------------------------------------------------------

t.test('env: present, missing, empty, inner newline; read at start', async (t) => {
  const env: Record<string, string | undefined> = {
    GOOD: secret('env-secret-gggg'),
    EMPTY: '',
    NEWLINE: `${secret('env-newline-hhhh')}\n`,
    INNER: `${secret('env-inner-iiii')}\r\nX: y`,
  };
  const good = createCredentialSource({ kind: 'env', name: 'GOOD' }, logger, { env });
  t.equal(good.description, 'env GOOD');
  t.match(read(good).error, 'env GOOD: not loaded yet', 'nothing before start()');
  env.GOOD = secret('env-secret-changed-jjjj');
  await good.start();
  t.equal(read(good).value, 'env-secret-changed-jjjj', 'read at start, not at creation');
  t.match(statusOf(good), { source: 'env GOOD', available: true });

  const expect: Array<[string, string]> = [
    ['MISSING', 'env MISSING: not set'],
    ['EMPTY', 'env EMPTY: empty'],
    ['NEWLINE', 'env NEWLINE: contains a line break or NUL'],
    ['INNER', 'env INNER: contains a line break or NUL'],
  ];
  for (const [name, reason] of expect) {
    const source = await started(t, { kind: 'env', name }, env);
    t.same(read(source), { error: reason }, name);
    t.same(statusOf(source), { source: `env ${name}`, available: false, lastError: reason });
  }

  // The default is the sidecar's own environment.
  process.env.SIGIL_TEST_CRED_KKKK = secret('process-env-kkkk');
  t.teardown(() => void delete process.env.SIGIL_TEST_CRED_KKKK);
  t.equal(read(await started(t, { kind: 'env', name: 'SIGIL_TEST_CRED_KKKK' })).value, 'process-env-kkkk');
  t.throws(() => createCredentialSource({ kind: 'env', name: '' }, logger), /name/);
});

// --- http ---------------------------------------------------------------------------------------

type Mode = 'ok' | '500' | 'text' | 'badjson' | 'number' | 'big' | 'hang';

interface Vault {
  url: string;
  /** What the server answers with next. */
  state: { mode: Mode; apiKey: string };
  /** Requests that reached the handler (after TLS), with whether the token matched. */
  hits: Array<{ token: boolean; clientCert: boolean }>;
  dir: string;
  files: { ca: string; cert: string; key: string; token: string; otherCa: string };
}

const TOKEN = secret('hvs.vault-token-llll');

/** A Vault-like HTTPS server: its own CA, client certificates required, x-vault-token checked. */
async function startVault(t: Teardown): Promise<Vault> {
  const dir = await tempDir(t, 'sigil-cred-vault-');
  const serverCa = await createCa({ role: 'Vault CA' });
  const serverCert = await createCert({
    signer: serverCa,
    role: 'vault',
    ipAddresses: ['127.0.0.1'],
    dnsNames: ['localhost'],
    keyUsage: ['digitalSignature', 'keyEncipherment'],
    extKeyUsage: [EKU_SERVER_AUTH],
  });
  const clientCa = await createCa({ role: 'Client CA' });
  const clientCert = await createCert({ signer: clientCa, role: 'sidecar', keyUsage: ['digitalSignature'], extKeyUsage: [EKU_CLIENT_AUTH] });
  const otherCa = await createCa({ role: 'Unrelated CA' });
  const files = {
    ca: join(dir, 'vault-ca.pem'),
    cert: join(dir, 'client.pem'),
    key: join(dir, 'client.key'),
    token: join(dir, 'token'),
    otherCa: join(dir, 'other-ca.pem'),
  };
  await writeFile(files.ca, serverCa.pem);
  await writeFile(files.cert, clientCert.pem);
  await writeFile(files.key, clientCert.keyPem, { mode: 0o600 });
  await writeFile(files.token, TOKEN + '\n');
  await writeFile(files.otherCa, otherCa.pem);

  const state: Vault['state'] = { mode: 'ok', apiKey: 'sk-test-123' };
  const hits: Vault['hits'] = [];
  const sockets = new Set<Socket>();
  const server: HttpsServer = createHttpsServer(
    { key: serverCert.keyPem, cert: serverCert.pem, ca: clientCa.pem, requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      const token = req.headers['x-vault-token'] === TOKEN;
      hits.push({ token, clientCert: (req.socket as unknown as { authorized?: boolean }).authorized === true });
      if (!token) return void res.writeHead(403, { 'content-type': 'application/json' }).end('{"errors":["permission denied"]}');
      serve(state, req, res);
    },
  );
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('tlsClientError', () => {}); // the no-client-cert test triggers these on purpose
  const { port } = await listenOnLoopback(t, server, sockets);
  return { url: `https://127.0.0.1:${port}/v1/kv/data/openai`, state, hits, dir, files };
}

function serve(state: Vault['state'], _req: IncomingMessage, res: ServerResponse): void {
  switch (state.mode) {
    case 'ok':
      return void res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify({ data: { data: { api_key: state.apiKey } } }));
    case '500':
      return void res.writeHead(500, { 'content-type': 'application/json' }).end(`{"errors":["${state.apiKey}"]}`);
    case 'text':
      return void res.writeHead(200, { 'content-type': 'text/plain' }).end(state.apiKey);
    case 'badjson':
      // JSON.parse's message would quote this; the reason must not.
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(`${state.apiKey} is not json`);
    case 'number':
      return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"data":{"data":{"api_key":12345}}}');
    case 'big':
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: { data: { api_key: state.apiKey } }, pad: 'x'.repeat(70_000) }));
    case 'hang':
      return; // never answers
  }
}

function httpConfig(vault: Vault, extra: Partial<Extract<CredentialSourceConfig, { kind: 'http' }>> = {}): CredentialSourceConfig {
  return {
    kind: 'http',
    url: vault.url,
    pointer: '/data/data/api_key',
    refreshMs: 100,
    timeoutMs: 2_000,
    headers: { 'x-vault-token': { file: vault.files.token } },
    tls: { ca: vault.files.ca, cert: vault.files.cert, key: vault.files.key },
    ...extra,
  };
}

t.test('http: mTLS + token header, refresh, last good value kept through an outage', async (t) => {
  const vault = await startVault(t);
  vault.state.apiKey = secret('sk-test-123');
  const source = await started(t, httpConfig(vault));
  t.equal(source.description, `http ${vault.url}#/data/data/api_key`);
  t.equal(read(source).value, 'sk-test-123');
  t.match(vault.hits[0], { token: true, clientCert: true }, 'the server saw the token and a verified client certificate');

  vault.state.apiKey = secret('sk-test-456-rotated');
  t.equal(await waitUntil(() => read(source).value === 'sk-test-456-rotated', 2_000), true, 'refresh picks up the new value');
  const loadedBefore = statusOf(source).loadedAt;

  vault.state.mode = '500';
  t.ok(await waitUntil(() => /HTTP 500/.test(statusOf(source).lastError ?? ''), 2_000), 'the failed refresh is reported');
  const during = statusOf(source);
  t.equal(during.available, true, 'still available');
  t.equal(read(source).value, 'sk-test-456-rotated', 'the last good value is kept');
  t.equal(during.lastError, `http ${vault.url}#/data/data/api_key: HTTP 500`);
  t.ok(during.loadedAt !== undefined && loadedBefore !== undefined && during.loadedAt >= loadedBefore, 'loadedAt is that of the kept value');
  t.ok(
    SEEN.some((l) => l.includes('credential refresh failed, keeping the last good value') && l.includes('HTTP 500')),
    'logged as a warning with the reason',
  );

  vault.state.mode = 'ok';
  t.ok(await waitUntil(() => statusOf(source).lastError === undefined, 2_000), 'a good refresh clears the error');

  const hitsAtStop = vault.hits.length;
  source.stop();
  await new Promise((r) => setTimeout(r, 350));
  t.equal(vault.hits.length, hitsAtStop, 'no fetches after stop()');
});

t.test('http: headers are re-read at every fetch', async (t) => {
  const vault = await startVault(t);
  const tokenFile = join(vault.dir, 'token-later');
  await writeFile(tokenFile, secret('hvs.wrong-token-mmmm'));
  vault.state.apiKey = secret('sk-after-token-fix-nnnn');
  const source = await started(t, httpConfig(vault, { headers: { 'x-vault-token': { file: tokenFile } } }));
  const r = read(source);
  t.equal(r.error, `http ${vault.url}#/data/data/api_key: HTTP 403`, 'wrong token: refused by the server');
  t.match(vault.hits[0], { token: false });
  t.notOk('loadedAt' in statusOf(source), 'never loaded');
  await writeFile(tokenFile, TOKEN + '\n');
  t.equal(await waitUntil(() => read(source).value === 'sk-after-token-fix-nnnn', 2_000), true, 'the new token is used');
  await rm(tokenFile);
  t.ok(await waitUntil(() => /cannot read .*\(ENOENT\)/.test(statusOf(source).lastError ?? ''), 2_000), 'a missing token file is a failed refresh');
  t.match(statusOf(source).lastError, `header x-vault-token: cannot read ${tokenFile} (ENOENT)`);
  t.equal(read(source).value, 'sk-after-token-fix-nnnn', 'last good value kept');
});

t.test('http: TLS is enforced both ways', async (t) => {
  const vault = await startVault(t);
  vault.state.apiKey = secret('sk-tls-oooo');

  const noClientCert = await started(t, httpConfig(vault, { tls: { ca: vault.files.ca } }));
  const r = read(noClientCert);
  t.equal(r.value, undefined, 'without a client certificate: unavailable');
  t.match(r.error, `http ${vault.url}#/data/data/api_key: `);
  t.match(r.error, /certificate required|ECONNRESET/i, 'refused in the TLS handshake (TLS 1.3: the alert arrives on first read)');
  const s = statusOf(noClientCert);
  t.equal(s.available, false);
  t.notOk('loadedAt' in s, 'never loaded');
  t.equal(vault.hits.length, 0, 'the server never handled a request without a client certificate');

  const wrongCa = await started(t, httpConfig(vault, { tls: { ca: vault.files.otherCa, cert: vault.files.cert, key: vault.files.key } }));
  t.match(read(wrongCa).error, /certificate|self.signed|verify/i, 'a server certificate from another CA is refused');
  t.equal(vault.hits.length, 0);

  const noCa = await started(t, httpConfig(vault, { tls: { cert: vault.files.cert, key: vault.files.key } }));
  t.equal(read(noCa).value, undefined, 'the system store does not trust the test CA');

  // Positive control: the same server with the full TLS config works.
  t.equal(read(await started(t, httpConfig(vault))).value, 'sk-tls-oooo');
  t.equal(vault.hits.length, 1);

  const missingKey = await started(t, httpConfig(vault, { tls: { ca: vault.files.ca, cert: vault.files.cert, key: join(vault.dir, 'nope.key') } }));
  t.match(read(missingKey).error, `tls.key: cannot read ${join(vault.dir, 'nope.key')} (ENOENT)`);
});

t.test('http: responses that are not a string at the pointer', async (t) => {
  const vault = await startVault(t);
  vault.state.apiKey = secret('sk-body-pppp');
  const prefix = `http ${vault.url}`;

  const wrongPointer = await started(t, httpConfig(vault, { pointer: '/data/api_key' }));
  t.equal(read(wrongPointer).error, `${prefix}#/data/api_key: no string at /data/api_key (found nothing)`);

  const object = await started(t, httpConfig(vault, { pointer: '/data' }));
  t.equal(read(object).error, `${prefix}#/data: no string at /data (found an object)`);

  const cases: Array<[Mode, string]> = [
    ['number', 'no string at /data/data/api_key (found a number)'],
    ['text', 'content type "text/plain" is not JSON'],
    ['badjson', 'response is not valid JSON'],
    ['big', 'response larger than 65536 bytes'],
    ['500', 'HTTP 500'],
  ];
  for (const [mode, reason] of cases) {
    vault.state.mode = mode;
    const source = await started(t, httpConfig(vault));
    t.equal(read(source).error, `${prefix}#/data/data/api_key: ${reason}`, mode);
    t.match(statusOf(source), { available: false });
  }

  vault.state.mode = 'hang';
  const slow = await started(t, httpConfig(vault, { timeoutMs: 200 }));
  t.equal(read(slow).error, `${prefix}#/data/data/api_key: no complete response within 200 ms`);

  vault.state.mode = 'ok';
  t.equal(read(await started(t, httpConfig(vault))).value, 'sk-body-pppp', 'positive control: same server, ok mode');
});

t.test('http: plain http only on loopback; descriptions hide query strings and userinfo', async (t) => {
  for (const url of ['http://example.com/v1/secret', 'http://127.0.0.1.nip.io/x', 'http://10.0.0.1/x']) {
    t.throws(() => createCredentialSource({ kind: 'http', url, pointer: '/k', refreshMs: 1000, timeoutMs: 1000 }, logger), /plain http is only allowed on loopback/, url);
  }
  t.throws(() => createCredentialSource({ kind: 'http', url: 'ftp://127.0.0.1/x', pointer: '/k', refreshMs: 1000, timeoutMs: 1000 }, logger), /must be https/);
  for (const url of ['http://localhost/x', 'http://127.0.0.1:8200/x', 'http://[::1]:8200/x']) {
    t.doesNotThrow(() => createCredentialSource({ kind: 'http', url, pointer: '/k', refreshMs: 1000, timeoutMs: 1000 }, logger), url);
  }

  const hidden = createCredentialSource(
    { kind: 'http', url: 'https://user:pa55word@h/p?token=x', pointer: '/a', refreshMs: 1000, timeoutMs: 1000 },
    logger,
  );
  t.equal(hidden.description, 'http https://h/p#/a');
  t.notMatch(hidden.description, 'token=x');
  t.notMatch(hidden.description, 'pa55word');
  t.match(read(hidden).error, 'http https://h/p#/a: not loaded yet');
  const refusal = thrownMessage(() =>
    createCredentialSource({ kind: 'http', url: 'http://u:pa55word@example.com/p?token=x', pointer: '/a', refreshMs: 1000, timeoutMs: 1000 }, logger),
  );
  t.match(refusal, 'http://example.com/p: plain http is only allowed on loopback', 'positive control: the refusal names the url');
  t.notMatch(refusal, 'token=x', 'but not its query');
  t.notMatch(refusal, 'pa55word', 'nor its userinfo');
  const invalid = thrownMessage(() => createCredentialSource({ kind: 'http', url: 'not a url?token=x', pointer: '/a', refreshMs: 1, timeoutMs: 1 }, logger));
  t.match(invalid, 'not a valid absolute URL');
  t.notMatch(invalid, 'token=x');

  const bad = (extra: object): unknown => () =>
    createCredentialSource({ kind: 'http', url: 'https://h/p', pointer: '/a', refreshMs: 1000, timeoutMs: 1000, ...extra } as CredentialSourceConfig, logger);
  t.throws(bad({ pointer: 'a' }) as () => void, /must be empty or start with/);
  t.throws(bad({ pointer: '/a~2' }) as () => void, /~/);
  t.throws(bad({ refreshMs: 0 }) as () => void, /refreshMs/);
  t.throws(bad({ timeoutMs: 2 ** 31 }) as () => void, /timeoutMs/);
  t.throws(bad({ tls: { cert: '/c.pem' } }) as () => void, /tls.cert and tls.key/);
  t.throws(bad({ headers: { 'bad header': { file: '/t' } } }) as () => void, /header name/);
});

t.test('http: plain http on loopback works (no TLS options)', async (t) => {
  const sockets = new Set<Socket>();
  const value = secret('sk-loopback-qqqq');
  const server = createHttpServer((_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ 'a/b': { '~k': value } })));
  server.on('connection', (s: Socket) => void sockets.add(s));
  const { port } = await listenOnLoopback(t, server, sockets);
  const source = await started(t, { kind: 'http', url: `http://127.0.0.1:${port}/secret?version=2`, pointer: '/a~1b/~0k', refreshMs: 60_000, timeoutMs: 1_000 });
  t.equal(source.description, `http http://127.0.0.1:${port}/secret#/a~1b/~0k`);
  t.equal(read(source).value, value, 'escaped pointer tokens resolve');
});

t.test('JSON pointer (RFC 6901)', async (t) => {
  const doc = { foo: ['bar', 'baz'], '': 0, 'a/b': 1, 'm~n': 8, '~1': 9, arr: [[1, 'deep']] };
  t.same(parsePointer(''), []);
  t.same(parsePointer('/'), ['']);
  t.same(parsePointer('/a~1b/m~0n/~01'), ['a/b', 'm~n', '~1']);
  t.equal(resolvePointer(doc, parsePointer('/foo/1')), 'baz');
  t.equal(resolvePointer(doc, parsePointer('/a~1b')), 1);
  t.equal(resolvePointer(doc, parsePointer('/m~0n')), 8);
  t.equal(resolvePointer(doc, parsePointer('/~01')), 9, '~01 is "~1", not "/"');
  t.equal(resolvePointer(doc, parsePointer('/arr/0/1')), 'deep');
  t.equal(resolvePointer(doc, parsePointer('/foo/01')), undefined, 'non-canonical index');
  t.equal(resolvePointer(doc, parsePointer('/foo/-')), undefined);
  t.equal(resolvePointer(doc, parsePointer('/constructor')), undefined, 'own properties only');
  t.equal(resolvePointer(JSON.parse('{"__proto__":"own"}'), parsePointer('/__proto__')), 'own');
  t.throws(() => parsePointer('/a~'));
});

// --- the leak check -----------------------------------------------------------------------------

t.test('no secret value in any log line, status() or error message', async (t) => {
  t.ok(SEEN.length > 50, `a real sample was recorded (${SEEN.length} items)`);
  t.ok(SECRETS.size > 20, `with many secrets to look for (${SECRETS.size})`);
  t.ok(SEEN.some((l) => l.includes('credential loaded')), 'positive control: load lines are there');
  t.ok(SEEN.some((l) => l.includes('credential unavailable')), 'positive control: warnings are there');
  // Positive control for the matcher itself: the secrets do occur in a string built from them.
  t.ok([...SECRETS].every((s) => `x${s}y`.includes(s)));
  // The first 10 characters too: Node's JSON.parse error quotes just that much of its input.
  for (const s of SECRETS) {
    const leaks = SEEN.filter((line) => line.includes(s) || line.includes(s.slice(0, 10)));
    t.same(leaks, [], `never shown, not even its start: ${s.slice(0, 6)}…`);
  }
});
