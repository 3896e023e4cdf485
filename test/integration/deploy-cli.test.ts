// The CLI pieces containers rely on, run as users run them: `sigil config check` (valid,
// invalid, the files a config names, redaction, SIGIL_CONFIG), `sigil health`, `sigil ca init
// --if-missing`, and the signal handling of `sigil run` (shutdown.delay keeps serving while
// not ready; a signal before ready or a second signal exits at once).
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { mtlsRequest } from '../helpers/clients.js';
import { closedPort, runCli, runSigil, setupTrustDomain, sidecarConfig, tempDir, waitUntil, writeConfig, type TrustDomainFixture } from '../helpers/env.js';
import { startEchoUpstream } from '../helpers/upstream.js';
import { SIGIL_BIN, spawnJsonLines } from '../../src/cli/processes.js';

const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';

let dir: string;
let example: TrustDomainFixture;

t.before(async () => {
  dir = await tempDir(t, 'sigil-deploy-cli-');
  example = await setupTrustDomain(dir, 'example.org');
});

const baseConfig = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  trustDomain: 'example.org',
  identity: { dev: { caDir: './ca-example.org', spiffeId: ID_B } },
  inbound: { listen: '127.0.0.1:0', upstream: 'http://127.0.0.1:3000' },
  policy: { allow: [ID_A] },
  ...extra,
});

t.test('sigil config check: a valid config prints the effective configuration', async (t) => {
  const file = await writeConfig(dir, 'valid.yaml', baseConfig());
  const r = await runCli(['config', 'check', file]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, `# ${file}: valid`);
  t.match(r.stdout, /# no SIGIL_\* overrides in this environment/);
  t.match(r.stdout, /admin:\n {2}listen: 127\.0\.0\.1:15000\n/, 'defaults filled in, addresses as host:port');
  t.match(r.stdout, new RegExp(`caDir: ${join(dir, 'ca-example.org')}\\n`), 'paths absolute');

  const token = join(dir, 'admin-token');
  await writeFile(token, 'an-admin-token-of-some-length\n');
  const json = await runCli(['config', 'check', '--json', '--config', file], { SIGIL_ADMIN_LISTEN: '0.0.0.0:15901', SIGIL_ADMIN_TOKEN_FILE: token, SIGIL_ADMIN_LISTN: 'typo' });
  t.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout) as { valid: boolean; overrides: { env: string; key: string }[]; warnings: string[]; config: { admin: { listen: string } } };
  t.equal(report.valid, true);
  t.same(report.overrides, [
    { env: 'SIGIL_ADMIN_LISTEN', key: 'admin.listen' },
    { env: 'SIGIL_ADMIN_TOKEN_FILE', key: 'admin.tokenFile' },
  ]);
  t.equal(report.config.admin.listen, '0.0.0.0:15901', 'the override is in the effective config');
  t.match(report.warnings, [/SIGIL_ADMIN_LISTN is not a config override.*did you mean SIGIL_ADMIN_LISTEN/]);

  // The config path from SIGIL_CONFIG (the image sets it); neither given is a usage error.
  const fromEnv = await runCli(['config', 'check'], { SIGIL_CONFIG: file });
  t.equal(fromEnv.code, 0, fromEnv.stderr);
  const none = await runCli(['config', 'check'], { SIGIL_CONFIG: '' });
  t.equal(none.code, 2);
  t.match(none.stderr, /--config is required \(or set SIGIL_CONFIG\)/);
});

t.test('sigil config check: invalid configs and broken files are refused with the key named', async (t) => {
  const schema = await writeConfig(dir, 'schema.yaml', baseConfig({ inbound: { listen: 'nowhere', upstrem: 'x' } }));
  const s = await runCli(['config', 'check', schema]);
  t.equal(s.code, 1);
  t.equal(s.stdout, '', 'nothing printed as effective config');
  t.match(s.stderr, /inbound\.listen: invalid address "nowhere"/);
  t.match(s.stderr, /inbound: unknown key "upstrem"/);

  await writeFile(join(dir, 'broken.cedar'), 'permit(principal, action, resource) when { principal.nope };');
  await writeFile(join(dir, 'empty-token'), '\n');
  await writeFile(join(dir, 'not-a-bundle.pem'), 'hello');
  const other = await setupTrustDomain(dir, 'other.org');
  const files = await writeConfig(
    dir,
    'files.yaml',
    baseConfig({
      identity: { dev: { caDir: other.caDir, spiffeId: ID_B } },
      trust: { bundles: { 'partner.example': './not-a-bundle.pem' } },
      policy: { cedar: './broken.cedar' },
      admin: { listen: '127.0.0.1:0', tokenFile: './empty-token' },
      audit: { path: './no/such/folder/audit.log' },
      delegation: { issuer: 'https://broker.example.org', jwks: './missing-jwks.json' },
    }),
  );
  const f = await runCli(['config', 'check', files]);
  t.equal(f.code, 1, 'invalid');
  t.match(f.stdout, /INVALID \(see stderr\)/, 'the effective config is still printed');
  for (const key of ['identity.dev.caDir: the CA in .* is for trust domain other.org, not example.org', 'trust.bundles: .*not-a-bundle.pem', 'policy.cedar: invalid policy', 'admin.tokenFile: .*empty-token must hold one token', 'audit.path: .*no/such/folder is not a folder', 'delegation.jwks: cannot read .*missing-jwks.json \\(ENOENT\\)']) {
    t.match(f.stderr, new RegExp(key), key.split(':')[0]!);
  }
  // What `sigil run` itself would refuse: a token shorter than the admin listener accepts, an
  // audit path that is a folder, an unset userSecret variable, a weakening it does not know.
  await writeFile(join(dir, 'short-token'), 'short\n');
  const runRefuses = await writeConfig(
    dir,
    'run-refuses.yaml',
    baseConfig({
      admin: { listen: '127.0.0.1:0', tokenFile: './short-token' },
      audit: { path: dir },
      outbound: { egress: [{ host: 'api.example.com', upstream: 'https://api.example.com', attribution: { headers: { 'x-user': '{user}' }, userSecret: { env: 'SIGIL_TEST_UNSET_SECRET' } } }] },
    }),
  );
  const refused = await runCli(['config', 'check', runRefuses], { SIGIL_UNSAFE_TEST_WEAKEN: 'delegation-actr' });
  t.equal(refused.code, 1);
  for (const key of ['admin.tokenFile: .*must hold one token of at least 16 characters', 'audit.path: .* exists and is not a file', 'outbound.egress\\[0\\].attribution.userSecret.env: SIGIL_TEST_UNSET_SECRET is not set', 'SIGIL_UNSAFE_TEST_WEAKEN: .*unknown weakening "delegation-actr"']) {
    t.match(refused.stderr, new RegExp(key), key.split(':')[0]!);
  }

  const schemaOnly = await runCli(['config', 'check', '--schema-only', files]);
  t.equal(schemaOnly.code, 0, `--schema-only does not open the files (${schemaOnly.stderr})`);
  t.match(schemaOnly.stdout, /schema only: referenced files not checked/);

  // Control: the same kinds of files, good ones, pass.
  await writeFile(join(dir, 'good.cedar'), 'permit(principal, action, resource);');
  await writeFile(join(dir, 'token'), 'a-long-enough-admin-token-value\n');
  const good = await writeConfig(dir, 'good.yaml', baseConfig({ trust: { bundles: { 'other.org': other.bundleJwks } }, policy: { cedar: './good.cedar' }, admin: { listen: '127.0.0.1:0', tokenFile: './token' }, audit: { path: './audit.log' } }));
  const g = await runCli(['config', 'check', good]);
  t.equal(g.code, 0, g.stderr);
  t.notMatch(g.stdout, /a-long-enough-admin-token-value/, 'the token is never printed');
  t.match(g.stdout, /# warning: identity\.dev is for development only/);
  t.notMatch(g.stdout, /dry-run|SIGIL_UNSAFE_TEST_WEAKEN|configures the broker/, 'no warning without a reason');
  // Settings that weaken the sidecar are warned about, even when valid.
  const weak = await runCli(['config', 'check', good], { SIGIL_POLICY_MODE: 'dry-run', SIGIL_UNSAFE_TEST_WEAKEN: 'delegation-actor', SIGIL_BROKER_LISTEN: '0.0.0.0:8444' });
  t.equal(weak.code, 0, weak.stderr);
  t.match(weak.stdout, /# warning: policy\.mode is dry-run: denials are logged but not enforced/);
  t.match(weak.stdout, /# warning: SIGIL_UNSAFE_TEST_WEAKEN is set \(delegation-actor\)/);
  t.match(weak.stdout, /# warning: SIGIL_BROKER_LISTEN configures the broker, not the sidecar/);
});

t.test('sigil config check redacts secrets carried in URLs', async (t) => {
  const file = await writeConfig(dir, 'secrets.yaml', baseConfig({ bus: { local: '127.0.0.1:0', nats: { servers: ['nats://sigil:hunter2@127.0.0.1:4222'] } } }));
  const r = await runCli(['config', 'check', '--schema-only', file], { SIGIL_REVOCATION_NATS_SERVERS: 'tls://ops:s3cret@nats:4222' });
  t.equal(r.code, 0, r.stderr);
  t.notMatch(r.stdout, /hunter2|s3cret/, 'no password in the output');
  t.match(r.stdout, 'nats://[redacted]:[redacted]@127.0.0.1:4222');
  t.match(r.stdout, 'tls://[redacted]:[redacted]@nats:4222');
});

t.test('sigil health follows the admin listener the config names', async (t) => {
  const port = await closedPort();
  await writeFile(join(dir, 'health-token'), 'an-admin-token-of-some-length\n');
  const file = await writeConfig(dir, 'health.yaml', sidecarConfig(baseConfig({ admin: { listen: `0.0.0.0:${port}`, tokenFile: './health-token' } })));
  const down = await runCli(['health', '--config', file]);
  t.equal(down.code, 1, 'nothing listening: unhealthy');
  t.match(down.stderr, new RegExp(`unhealthy: http://127\\.0\\.0\\.1:${port}/healthz: .*ECONNREFUSED`));
  const s = await runSigil(t, file);
  const up = await runCli(['health', '--config', file]);
  t.equal(up.code, 0, up.stderr);
  t.match(up.stdout, `healthy: http://127.0.0.1:${port}/healthz`, 'a wildcard listen address is checked over loopback');
  const byUrl = await runCli(['health', '--url', `http://${s.admin}/healthz`]);
  t.equal(byUrl.code, 0);
  const notFound = await runCli(['health', '--url', `http://${s.admin}/nope`]);
  t.equal(notFound.code, 1, 'a non-200 answer is unhealthy');
  t.match(notFound.stderr, /HTTP 404/);
});

t.test('sigil health --broker reads the broker config', async (t) => {
  const port = await closedPort();
  const broker = await writeConfig(dir, 'broker.yaml', {
    trustDomain: 'example.org',
    identity: { dev: { caDir: './ca-example.org', spiffeId: 'spiffe://example.org/broker' } },
    issuer: 'https://broker.example.org',
    signingKeys: './broker-keys',
    subjectIssuers: [{ issuer: 'https://idp.example.org', audience: 'sigil', jwks: './idp.json' }],
    policy: { cedar: './good.cedar' },
    admin: { listen: `127.0.0.1:${port}` },
  });
  const down = await runCli(['health', '--broker', '--config', broker]);
  t.equal(down.code, 1);
  t.match(down.stderr, `unhealthy: http://127.0.0.1:${port}/healthz`, "the broker's admin port, from its config");
  const asSidecar = await runCli(['health', '--config', broker]);
  t.equal(asSidecar.code, 1, 'read as a sidecar config, a broker config is refused');
  t.match(asSidecar.stderr, /unknown key "issuer"/);
  const noConfig = await runCli(['health', '--broker'], { SIGIL_CONFIG: broker });
  t.equal(noConfig.code, 2, "--broker does not fall back to SIGIL_CONFIG (the image's sidecar path)");
});

t.test('sigil ca init --if-missing keeps an existing CA', async (t) => {
  const caDir = join(dir, 'ca-keep');
  const first = await runCli(['ca', 'init', '--trust-domain', 'example.org', '--dir', caDir, '--if-missing']);
  t.equal(first.code, 0, first.stderr);
  t.match(first.stdout, /created dev CA/);
  const pem = await readFile(join(caDir, 'ca.pem'), 'utf8');
  const again = await runCli(['ca', 'init', '--trust-domain', 'example.org', '--dir', caDir, '--if-missing']);
  t.equal(again.code, 0, again.stderr);
  t.match(again.stdout, /kept the existing dev CA/);
  t.equal(await readFile(join(caDir, 'ca.pem'), 'utf8'), pem, 'the CA is unchanged');
  const plain = await runCli(['ca', 'init', '--trust-domain', 'example.org', '--dir', caDir]);
  t.equal(plain.code, 1, 'without the flag an existing CA is still an error');
  const otherTd = await runCli(['ca', 'init', '--trust-domain', 'other.org', '--dir', caDir, '--if-missing']);
  t.equal(otherTd.code, 1, 'a CA of another trust domain is not silently kept');
  t.match(otherTd.stderr, /holds a CA for trust domain example\.org, not other\.org/);
  const both = await runCli(['ca', 'init', '--trust-domain', 'example.org', '--dir', caDir, '--if-missing', '--force']);
  t.equal(both.code, 2);
  // An init interrupted before ca.key (written last) is redone, not kept half-made.
  const partial = join(dir, 'ca-partial');
  await mkdir(partial);
  await writeFile(join(partial, 'ca.pem'), 'left over\n');
  const redo = await runCli(['ca', 'init', '--trust-domain', 'example.org', '--dir', partial, '--if-missing']);
  t.equal(redo.code, 0, redo.stderr);
  t.match(redo.stdout, /created dev CA/);
  t.match(await readFile(join(partial, 'ca.pem'), 'utf8'), /BEGIN CERTIFICATE/);
  t.same((await readdir(partial)).sort(), ['bundle.jwks.json', 'bundle.pem', 'ca.key', 'ca.pem'], 'no temporary file left');
});

t.test('shutdown.delay: not ready at once, still serving, then drained', async (t) => {
  const upstream = await startEchoUpstream(t);
  const file = await writeConfig(dir, 'delay.yaml', sidecarConfig(baseConfig({ inbound: { listen: '127.0.0.1:0', upstream: upstream.url }, shutdown: { delay: '1500ms', drainTimeout: '2s' } })));
  const s = await runSigil(t, file);
  const leaf = await example.leaf(ID_A);
  const call = (path: string) => mtlsRequest({ address: s.inbound, certPem: leaf.pem, keyPem: leaf.keyPem, path, timeoutMs: 3_000 });
  t.ok(s.proc.lines.some((l) => l.level === 'warn' && String(l.msg).startsWith('identity.dev is for development only')), 'a dev identity is flagged at start');
  t.notOk(s.proc.lines.some((l) => l.level === 'warn' && String(l.msg).includes('dry-run')), 'enforce: no dry-run warning');
  const before = await call('/before');
  t.ok(before.gotHttpResponse && before.status === 200, 'serving');
  const t0 = Date.now();
  const exited = s.proc.stop('SIGTERM');
  t.ok(await waitUntil(async () => (await fetch(`http://${s.admin}/readyz`)).status === 503, 1_000, 20), '/readyz is 503 right after SIGTERM');
  const during = await call('/during-delay');
  t.ok(during.gotHttpResponse && during.status === 200, `a new connection during the delay is still served (${during.gotHttpResponse ? during.status : during.error})`);
  t.equal(await exited, 0, 'exits 0');
  t.ok(Date.now() - t0 >= 1_400, 'not before the delay has passed');
  t.ok(s.proc.lines.some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM' && l.delayMs === 1500), 'the shutdown is logged with its delay');
});

t.test('startup logs: safe override values, the other command\'s variables, dry-run', async (t) => {
  const file = await writeConfig(dir, 'logged.yaml', sidecarConfig(baseConfig()));
  const s = await runSigil(t, file, { SIGIL_METRICS_ENABLED: 'false', SIGIL_POLICY_MODE: 'dry-run', SIGIL_INBOUND_UPSTREAM: 'http://user:hunter2@127.0.0.1:3000', SIGIL_BROKER_ADMIN_LISTEN: '127.0.0.1:1' });
  const applied = s.proc.lines.find((l) => l.msg === 'config overrides from the environment');
  t.match(applied?.overrides, ['SIGIL_INBOUND_UPSTREAM → inbound.upstream', 'SIGIL_POLICY_MODE → policy.mode = dry-run', 'SIGIL_METRICS_ENABLED → metrics.enabled = false']);
  t.notMatch(JSON.stringify(s.proc.lines), /hunter2/, 'a URL override value is not logged');
  t.ok(s.proc.lines.some((l) => l.level === 'warn' && String(l.msg).startsWith('policy.mode is dry-run')), 'dry-run is a warning');
  t.ok(s.proc.lines.some((l) => l.level === 'warn' && l.variable === 'SIGIL_BROKER_ADMIN_LISTEN' && l.didYouMean === 'SIGIL_ADMIN_LISTEN'), "the broker's variable is flagged");
});

t.test('a signal before ready, or a second signal, exits at once', async (t) => {
  // Waiting for a Workload API that is not there: the admin listener answers, nothing is ready.
  const adminPort = await closedPort();
  const waiting = await writeConfig(dir, 'waiting.yaml', {
    trustDomain: 'example.org',
    identity: { workloadApi: { socket: `unix://${join(dir, 'no-agent.sock')}`, startupTimeout: '60s' } },
    inbound: { listen: '127.0.0.1:0', upstream: 'http://127.0.0.1:3000' },
    admin: { listen: `127.0.0.1:${adminPort}` },
  });
  const early = spawnJsonLines([SIGIL_BIN, 'run', '--config', waiting], { SIGIL_LOG_LEVEL: 'info' });
  t.teardown(() => void early.child.kill('SIGKILL'));
  t.ok(await waitUntil(async () => (await fetch(`http://127.0.0.1:${adminPort}/healthz`).catch(() => undefined))?.status === 200, 15_000), 'admin up, still waiting for an SVID');
  const t0 = Date.now();
  const code = await early.stop('SIGTERM');
  t.equal(code, 0);
  t.ok(Date.now() - t0 < 5_000, `exits at once, not after startupTimeout (${Date.now() - t0} ms)`);
  t.ok(early.lines.some((l) => l.msg === 'signal before ready: exiting' && l.signal === 'SIGTERM'), 'logged');

  const file = await writeConfig(dir, 'second.yaml', sidecarConfig(baseConfig({ shutdown: { delay: '30s' } })));
  const s = await runSigil(t, file);
  s.proc.child.kill('SIGTERM');
  await s.proc.waitFor((l) => l.msg === 'shutting down');
  const t1 = Date.now();
  s.proc.child.kill('SIGINT');
  const exitCode = await new Promise<number | null>((resolve) => (s.proc.child.exitCode !== null ? resolve(s.proc.child.exitCode) : s.proc.child.once('exit', (c) => resolve(c))));
  t.equal(exitCode, 1, 'the second signal exits with status 1');
  t.ok(Date.now() - t1 < 5_000, 'without waiting for the 30 s delay');
  t.ok(s.proc.lines.some((l) => l.msg === 'second signal during shutdown: exiting now' && l.signal === 'SIGINT'), 'logged');
});
