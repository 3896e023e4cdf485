// The `sigil` CLI as users run it: config errors name the key and the problem, `ca init` /
// `ca issue` write the files DESIGN.md promises, the admin endpoints report readiness and
// status, and SIGTERM drains in-flight requests before exiting 0.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { join } from 'node:path';
import t from 'tap';
import { mtlsRequest } from '../helpers/clients.js';
import { runCli, runSigil, sidecarConfig, sleep, tempDir, waitUntil, writeConfig, type CliExit } from '../helpers/env.js';
import { startEchoUpstream } from '../helpers/upstream.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';

const sigil = (args: string[], timeoutMs = 15_000): Promise<CliExit> => runCli(args, {}, timeoutMs);

function getJson(address: string, path: string): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    httpGet(`http://${address}${path}`, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => {
        let body: unknown;
        try {
          body = JSON.parse(text);
        } catch {
          body = text;
        }
        resolve({ status: res.statusCode ?? 0, body });
      });
    }).on('error', reject);
  });
}

let dir: string;
let caDir: string;

t.before(async () => {
  dir = await tempDir(t, 'sigil-cli-');
  caDir = join(dir, 'ca');
});

t.test('sigil ca init and ca issue write the documented files', async (t) => {
  const init = await sigil(['ca', 'init', '--trust-domain', 'example.org', '--dir', caDir]);
  t.equal(init.code, 0, `ca init exits 0 (${init.stderr})`);
  for (const f of ['ca.pem', 'ca.key', 'bundle.pem', 'bundle.jwks.json']) {
    t.ok((await stat(join(caDir, f))).isFile(), `${f} written`);
  }
  t.equal((await stat(join(caDir, 'ca.key'))).mode & 0o777, 0o600, 'ca.key is 0600');
  const caPem = await readFile(join(caDir, 'ca.pem'), 'utf8');
  const ca = new X509Certificate(caPem);
  t.ok(ca.ca, 'ca.pem is a CA certificate');
  t.match(ca.subjectAltName ?? '', 'URI:spiffe://example.org', 'CA carries the trust-domain ID');
  t.equal(await readFile(join(caDir, 'bundle.pem'), 'utf8'), caPem, 'bundle.pem is the CA');

  const jwks = JSON.parse(await readFile(join(caDir, 'bundle.jwks.json'), 'utf8')) as { keys?: Array<Record<string, unknown>> };
  t.ok(Array.isArray(jwks.keys) && jwks.keys.length >= 1, 'bundle.jwks.json has a keys array');
  for (const key of jwks.keys ?? []) {
    t.equal(key.use, 'x509-svid', 'key use is x509-svid');
    t.ok(Array.isArray(key.x5c) && (key.x5c as unknown[]).length === 1, 'key has one x5c certificate');
    t.ok(Buffer.from((key.x5c as string[])[0]!, 'base64').equals(ca.raw), 'x5c is the CA certificate');
  }

  const out = join(dir, 'issued');
  const issue = await sigil(['ca', 'issue', '--dir', caDir, '--spiffe-id', ID_A, '--ttl', '10m', '--out', out]);
  t.equal(issue.code, 0, `ca issue exits 0 (${issue.stderr})`);
  const svidPem = await readFile(join(out, 'svid.pem'), 'utf8');
  const keyPem = await readFile(join(out, 'svid.key'), 'utf8');
  const leaf = new X509Certificate(svidPem);
  t.equal(leaf.subjectAltName, `URI:${ID_A}`, 'svid.pem leaf has exactly the requested URI SAN');
  t.notOk(leaf.ca, 'leaf is not a CA');
  t.ok(leaf.verify(ca.publicKey), 'leaf is signed by the CA');
  const lifetime = Date.parse(leaf.validTo) - Date.now();
  t.ok(lifetime > 8 * 60_000 && lifetime <= 10 * 60_000 + 1_000, `--ttl 10m honoured (expires in ${Math.round(lifetime / 1000)} s)`);
  t.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/, 'svid.key is PKCS#8');
  t.ok(leaf.checkPrivateKey(createPrivateKey(keyPem)), 'svid.key matches the leaf');
  t.equal((await stat(join(out, 'svid.key'))).mode & 0o777, 0o600, 'svid.key is 0600');
  t.equal(await readFile(join(out, 'bundle.pem'), 'utf8'), caPem, 'OUT/bundle.pem is the CA bundle');

  const foreign = await sigil(['ca', 'issue', '--dir', caDir, '--spiffe-id', 'spiffe://other.org/x', '--out', join(dir, 'nope')]);
  t.not(foreign.code, 0, 'ca issue refuses an ID from another trust domain');
  t.match(foreign.stderr, /other\.org/, 'and says why');
  const again = await sigil(['ca', 'init', '--trust-domain', 'example.org', '--dir', caDir]);
  t.not(again.code, 0, 'ca init refuses to overwrite an existing CA');
  t.match(again.stderr, /already exists/);
  const badTtl = await sigil(['ca', 'issue', '--dir', caDir, '--spiffe-id', ID_A, '--ttl', '15x', '--out', join(dir, 'nope')]);
  t.not(badTtl.code, 0, 'ca issue refuses a bad --ttl');
  t.match(badTtl.stderr, /--ttl/);
});

t.test('sigil run with bad config files: non-zero exit, key path and problem on stderr', async (t) => {
  const good = {
    trustDomain: 'example.org',
    identity: { dev: { caDir: './ca', spiffeId: ID_B, ttl: '15m' } },
    inbound: { listen: '127.0.0.1:0', upstream: 'http://127.0.0.1:3000' },
    admin: { listen: '127.0.0.1:0' },
  };
  const cases: Array<{ name: string; file: string; content: unknown; expect: RegExp[] }> = [
    { name: 'unknown key', file: 'unknown.yaml', content: { ...good, inbound: { ...good.inbound, upstrem: 'x' } }, expect: [/inbound: unknown key "upstrem"/, /did you mean "upstream"/] },
    { name: 'missing trustDomain', file: 'no-td.yaml', content: { ...good, trustDomain: undefined }, expect: [/trustDomain: is required/] },
    { name: 'bad duration', file: 'ttl.json', content: { ...good, identity: { dev: { ...good.identity.dev, ttl: '15x' } } }, expect: [/identity\.dev\.ttl: invalid duration "15x"/] },
    {
      name: 'two identity sources',
      file: 'two.yaml',
      content: { ...good, identity: { ...good.identity, files: { cert: 'a', key: 'b', bundle: 'c' } } },
      expect: [/identity: exactly one of dev, files, workloadApi is allowed \(got dev, files\)/],
    },
    {
      name: 'bad route address',
      file: 'route.yaml',
      content: { ...good, outbound: { listen: '127.0.0.1:0', routes: [{ host: 'b', address: '127.0.0.1', spiffeId: ID_B }] } },
      expect: [/outbound\.routes\[0\]\.address: invalid address "127\.0\.0\.1"/],
    },
    {
      name: 'bad SPIFFE ID',
      file: 'id.yaml',
      content: { ...good, identity: { dev: { ...good.identity.dev, spiffeId: 'https://example.org/agent/b' } } },
      expect: [/identity\.dev\.spiffeId: .*must start with "spiffe:\/\/"/],
    },
    {
      name: 'SPIFFE ID in another trust domain',
      file: 'id-td.yaml',
      content: { ...good, identity: { dev: { ...good.identity.dev, spiffeId: 'spiffe://other.org/agent/b' } } },
      expect: [/identity\.dev\.spiffeId: .*not in this sidecar's trust domain/],
    },
    {
      name: 'invalid route pattern',
      file: 'pattern.yaml',
      content: { ...good, outbound: { listen: '127.0.0.1:0', routes: [{ host: 'b', address: '127.0.0.1:1', spiffeId: 'spiffe://example.org/a/**/b' }] } },
      expect: [/outbound\.routes\[0\]\.spiffeId: .*"\*\*"/],
    },
    {
      name: 'invalid policy.allow entry',
      file: 'allow.yaml',
      content: { ...good, policy: { allow: ['spiffe://Example.org/x'] } },
      expect: [/policy\.allow\[0\]: .*trust domain/],
    },
    {
      // docs/config.md: "every problem is reported at once, each with the path of the key".
      name: 'several problems at once (schema + pattern + allow entry)',
      file: 'several.yaml',
      content: {
        ...good,
        inbound: { ...good.inbound, upstrem: 'x' },
        outbound: { listen: '127.0.0.1:0', routes: [{ host: 'b', address: '127.0.0.1:1', spiffeId: 'spiffe://example.org/a/**/b' }] },
        policy: { allow: ['spiffe://Example.org/x'] },
      },
      expect: [/config_invalid/, /inbound: unknown key "upstrem"/, /outbound\.routes\[0\]\.spiffeId/, /policy\.allow\[0\]/],
    },
    { name: 'YAML syntax error', file: 'syntax.yaml', content: 'trustDomain: example.org\nidentity: {dev: [\n', expect: [/YAML syntax error at line \d+, column \d+/] },
    { name: 'wrong extension', file: 'config.toml', content: 'trustDomain = "example.org"\n', expect: [/unsupported config file extension "\.toml"/] },
    { name: 'nonexistent file', file: '', content: undefined, expect: [/file not found/, /does-not-exist\.yaml/] },
  ];
  // A few at a time: each `sigil run` start costs ~1 s of CPU, and CI machines have 2 cores.
  const results: { c: (typeof cases)[number]; path: string; exit: CliExit }[] = [];
  for (let i = 0; i < cases.length; i += 3) {
    results.push(
      ...(await Promise.all(
        cases.slice(i, i + 3).map(async (c) => {
          const path = c.file === '' ? join(dir, 'does-not-exist.yaml') : await writeConfig(dir, c.file, c.content);
          return { c, path, exit: await sigil(['run', '--config', path], 30_000) };
        }),
      )),
    );
  }
  for (const { c, path, exit } of results) {
    t.not(exit.code, 0, `${c.name}: non-zero exit`);
    t.notMatch(exit.stdout, /"msg":"ready"/, `${c.name}: never became ready`);
    for (const re of c.expect) t.match(exit.stderr, re, `${c.name}: stderr says ${re}`);
    t.match(exit.stderr, path.split('/').pop()!, `${c.name}: stderr names the file`);
  }
});

t.test('admin: /healthz, /readyz and /status', async (t) => {
  const upstream = await startEchoUpstream(t);
  const cfg = await writeConfig(
    dir,
    'admin.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: './ca', spiffeId: ID_B, ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      outbound: { listen: '127.0.0.1:0', routes: [] },
      policy: { allow: [ID_A] },
    }),
  );
  const s = await runSigil(t, cfg);
  for (const key of ['inbound', 'outbound', 'admin'] as const) t.match(s[key], /^127\.0\.0\.1:[1-9]\d*$/, `ready line reports the bound ${key} address`);
  t.same((await getJson(s.admin, '/healthz')).status, 200, '/healthz 200');
  const ready = await getJson(s.admin, '/readyz');
  t.equal(ready.status, 200, '/readyz 200 after the ready line');
  const status = await getJson(s.admin, '/status');
  t.equal(status.status, 200);
  t.equal(status.body.spiffeId, ID_B, '/status spiffeId');
  t.same(status.body.listeners, { inbound: s.inbound, outbound: s.outbound, admin: s.admin }, '/status listeners match the ready line');
  t.equal(status.body.svid?.source, 'dev', '/status svid source');
  t.equal((await getJson(s.admin, '/nope')).status, 404, 'unknown admin path 404');
  // /readyz 200 means the listeners really serve.
  const issued = join(dir, 'issued');
  const r = await mtlsRequest({
    address: s.inbound,
    certPem: await readFile(join(issued, 'svid.pem'), 'utf8'),
    keyPem: await readFile(join(issued, 'svid.key'), 'utf8'),
    path: '/readyz-check',
  });
  t.ok(r.gotHttpResponse && r.status === 200, 'inbound serves once ready');
});

t.test('SIGTERM drains an in-flight request, then exits 0', async (t) => {
  const upstream = await startEchoUpstream(t);
  const cfg = await writeConfig(
    dir,
    'drain.yaml',
    sidecarConfig({
      trustDomain: 'example.org',
      identity: { dev: { caDir: './ca', spiffeId: ID_B, ttl: '15m' } },
      inbound: { listen: '127.0.0.1:0', upstream: upstream.url },
      policy: { allow: [ID_A] },
      shutdown: { drainTimeout: '8s' },
    }),
  );
  const s = await runSigil(t, cfg);
  const issued = join(dir, 'issued');
  const certPem = await readFile(join(issued, 'svid.pem'), 'utf8');
  const keyPem = await readFile(join(issued, 'svid.key'), 'utf8');
  const inFlight = mtlsRequest({ address: s.inbound, certPem, keyPem, path: '/slow?ms=1500', timeoutMs: 10_000 });
  t.ok(await waitUntil(() => upstream.requests.some((q) => q.url === '/slow?ms=1500'), 5_000), 'slow request reached the upstream');
  const t0 = Date.now();
  const exited = s.proc.stop('SIGTERM');
  await sleep(200);
  const late = await mtlsRequest({ address: s.inbound, certPem, keyPem, path: '/after-sigterm', timeoutMs: 3_000 });
  t.notOk(late.gotHttpResponse && late.status === 200, 'no new requests are accepted while draining');
  const r = await inFlight;
  t.ok(r.gotHttpResponse && r.status === 200, `in-flight request completed (${r.gotHttpResponse ? r.status : r.error})`);
  const code = await exited;
  t.equal(code, 0, 'exit code 0');
  t.ok(Date.now() - t0 < 6_000, `exited promptly after the drain (${Date.now() - t0} ms)`);
  t.ok(s.proc.lines.some((l) => l.msg === 'stopped'), 'logged "stopped"');
});
