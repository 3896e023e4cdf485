// `sigil probe` as a security team runs it, against real processes on loopback: a sidecar pair
// (agent A, the victim; agent B, the target), a real nats-server, the token-exchange broker and
// the dev IdP. The probe runs as B's agent: B's inbound.upstream is the probe's echo upstream.
//   1. Against a correct target every control is accepted and every attack rejected: exit 0, the
//      table, the JSON report and JUnit XML say so.
//   2. Against the same target started with SIGIL_UNSAFE_TEST_WEAKEN (checks switched off on
//      purpose), the probe reports exactly the matching attacks as FAIL and exits 1: it detects
//      what it claims to detect.
//   3. A target that refuses the test identity cannot pass; bad flags are usage errors.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { SIGIL_BIN, spawnJsonLines } from '../../src/cli/processes.js';
import { initDevIdp, mintDevUserToken } from '../../src/delegation/index.js';
import type { ProbeReport } from '../../src/probe/report.js';
import { closedPort, runBroker, runSigil, setupTrustDomain, sidecarConfig, sleep, tempDir, writeConfig, type RunningBroker, type RunningSigil, type TrustDomainFixture } from '../helpers/env.js';
import { startNats, withNatsServer, type RunningNats } from '../helpers/nats.js';

const TD = 'example.org';
const FED = 'probe.test';
const ID_A = 'spiffe://example.org/agent/a';
const ID_B = 'spiffe://example.org/agent/b';
const ID_PROBE = 'spiffe://example.org/sigil-probe';
const BROKER_ID = 'spiffe://example.org/broker';
const ISSUER = 'https://broker.example.org';
const USER_AUD = 'sigil-broker';
const SUBJECT = 'probe.checks';

const POLICY = `
@id("domain-connects") permit (principal in TrustDomain::"${TD}", action == Action::"connect", resource);
@id("domain-http") permit (principal in TrustDomain::"${TD}", action == Action::"http", resource);
@id("probe-domain-connects") permit (principal in TrustDomain::"${FED}", action == Action::"connect", resource);
@id("probe-domain-http") permit (principal in TrustDomain::"${FED}", action == Action::"http", resource);
@id("probe-publishes") permit (principal == Agent::"${ID_PROBE}", action == Action::"bus.publish", resource) when { resource.subject like "probe.*" };
@id("deliver-probe") permit (principal in TrustDomain::"${TD}", action == Action::"bus.deliver", resource) when { resource.subject like "probe.*" };
`;

const BROKER_POLICY = `
@id("exchange-within-example")
permit (principal in TrustDomain::"${TD}", action == Action::"delegation.exchange", resource in TrustDomain::"${TD}");
`;

await withNatsServer(t, suite);

interface ProbeRun {
  code: number | null;
  stdout: string;
  stderr: string;
  report?: ProbeReport;
  junit?: string;
}

async function suite(natsBinary: string): Promise<void> {
  let dir: string;
  let td: TrustDomainFixture;
  let fed: TrustDomainFixture;
  let nats: RunningNats;
  let broker: RunningBroker;
  let a: RunningSigil;
  let probeFiles: { cert: string; key: string; subjectToken: string };

  t.before(async () => {
    dir = await tempDir(t, 'sigil-probe-');
    td = await setupTrustDomain(dir, TD);
    fed = await setupTrustDomain(dir, FED);
    nats = await startNats(t, natsBinary, td.ca.pem);
    const idpDir = join(dir, 'idp');
    await initDevIdp(idpDir);
    await writeConfig(dir, 'broker.cedar', BROKER_POLICY);
    await writeFile(join(dir, 'policy.cedar'), POLICY);
    broker = await runBroker(
      t,
      await writeConfig(dir, 'broker.yaml', {
        trustDomain: TD,
        identity: { dev: { caDir: td.caDir, spiffeId: BROKER_ID } },
        listen: '127.0.0.1:0',
        admin: { listen: '127.0.0.1:0' },
        issuer: ISSUER,
        signingKeys: './keys',
        jwksOut: './broker-jwks.json',
        // Short tokens so the probe can watch one expire within --expiry-wait.
        maxTtl: '3s',
        subjectIssuers: [{ issuer: 'https://dev-idp.sigil.invalid', audience: USER_AUD, jwks: './idp/jwks.json' }],
        policy: { cedar: './broker.cedar' },
        shutdown: { drainTimeout: '1s' },
      }),
    );
    const probeLeaf = await td.leaf(ID_PROBE);
    probeFiles = { cert: join(dir, 'probe-svid.pem'), key: join(dir, 'probe-svid.key'), subjectToken: join(dir, 'alice.token') };
    await writeFile(probeFiles.cert, probeLeaf.pem);
    await writeFile(probeFiles.key, probeLeaf.keyPem, { mode: 0o600 });
    await writeFile(probeFiles.subjectToken, await mintDevUserToken(idpDir, { sub: 'alice', scope: ['read', 'write'], audience: USER_AUD, ttlSeconds: 3600 }), { mode: 0o600 });
  });

  /** Agent B's sidecar, the target: its upstream is the echo the probe will serve on `echoPort`. */
  async function target(name: string, echoPort: number, env: NodeJS.ProcessEnv = {}): Promise<RunningSigil> {
    return runSigil(
      t,
      await writeConfig(
        dir,
        `${name}.yaml`,
        sidecarConfig({
          trustDomain: TD,
          identity: { dev: { caDir: td.caDir, spiffeId: ID_B, ttl: '15m' } },
          trust: { bundles: { [FED]: fed.bundlePem } },
          inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${echoPort}` },
          policy: { cedar: './policy.cedar' },
          delegation: { issuer: ISSUER, jwks: './broker-jwks.json', leeway: '1s' },
          bus: { local: '127.0.0.1:0', nats: { servers: [nats.url], tls: { ca: nats.caFile } } },
        }),
      ),
      env,
    );
  }

  async function probe(b: RunningSigil, echoPort: number, extra: string[] = []): Promise<ProbeRun> {
    const report = join(dir, `report-${echoPort}.json`);
    const junit = join(dir, `junit-${echoPort}.xml`);
    const args = [
      'probe',
      '--target', b.inbound,
      '--cert', probeFiles.cert,
      '--key', probeFiles.key,
      '--bundle', td.bundlePem,
      '--target-id', ID_B,
      '--victim', ID_A,
      '--federated-ca', fed.caDir,
      '--echo-listen', `127.0.0.1:${echoPort}`,
      '--broker', `https://${broker.address}/token`,
      '--broker-id', BROKER_ID,
      '--subject-token-file', probeFiles.subjectToken,
      '--expiry-wait', '10s',
      '--nats', nats.url,
      '--nats-ca', nats.caFile,
      '--bus-local', `http://${String(b.ready.bus)}`,
      '--bus-subject', SUBJECT,
      '--admin', `http://${b.admin}`,
      '--report', report,
      '--junit', junit,
      ...extra,
    ];
    const proc = spawnJsonLines([SIGIL_BIN, ...args]);
    let stdout = '';
    proc.child.stdout!.on('data', (d: Buffer | string) => (stdout += d.toString()));
    const code = await new Promise<number | null>((resolve) => proc.child.once('exit', (c) => resolve(c)));
    await sleep(20);
    const run: ProbeRun = { code, stdout, stderr: proc.stderr() };
    try {
      run.report = JSON.parse(await readFile(report, 'utf8')) as ProbeReport;
      run.junit = await readFile(junit, 'utf8');
    } catch {
      // no report: the caller asserts on the exit code and stderr
    }
    return run;
  }

  t.test('a correct target: every control accepted, every attack rejected', async (t) => {
    const echoPort = await closedPort();
    const b = await target('b', echoPort);
    a = await runSigil(
      t,
      await writeConfig(
        dir,
        'a.yaml',
        sidecarConfig({
          trustDomain: TD,
          identity: { dev: { caDir: td.caDir, spiffeId: ID_A, ttl: '15m' } },
          outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: b.inbound, spiffeId: ID_B }] },
          policy: { cedar: './policy.cedar' },
        }),
      ),
    );
    t.ok(a.admin, 'the victim agent A runs beside B (the pair)');
    const run = await probe(b, echoPort);
    t.equal(run.code, 0, `exit 0\n${run.stdout}\n${run.stderr}`);
    const report = run.report!;
    t.ok(report, 'JSON report written');
    t.equal(report.target.spiffeId, ID_B, 'the target is identified by its verified SVID');
    t.equal(report.victim, ID_A, 'the victim is the one asked for');
    const byVerdict = (v: string): string[] => report.results.filter((r) => r.verdict === v).map((r) => `${r.id}: ${r.observed}`);
    t.same(byVerdict('fail'), [], 'no attack accepted');
    t.same(byVerdict('error'), [], 'no control failed, no step errored');
    // Only what this machine's OpenSSL cannot even offer (3DES, RC4 are compiled out) may be skipped.
    const skipped = report.results.filter((r) => r.verdict === 'skip');
    // And static-RSA suites, which an EC SVID (the dev issuer's) cannot negotiate at all.
    t.ok(skipped.every((r) => /^tls\.cipher-/.test(r.id) && /cannot be attempted from here|the target's SVID key is ec/.test(r.observed)), `with every input given, nothing else is skipped: ${byVerdict('skip').join('; ')}`);
    for (const family of ['tls', 'headers', 'delegation', 'bus', 'revocation']) {
      t.ok(report.results.some((r) => r.family === family && r.verdict === 'pass'), `${family} attacks ran and passed`);
    }
    t.ok(report.results.every((r) => r.verdict !== 'pass' || (r.control !== undefined && r.control.length > 0)), 'every pass records what its positive control saw');
    t.same(report.warnings, [], 'no warning about the target');
    t.equal(report.summary.ok, true, 'summary ok');
    t.match(run.stdout, /^RESULT\s+ATTACK\s+EXPECTED\s+OBSERVED/m, 'table header');
    t.match(run.stdout, /^PASS\s+tls\.no-client-cert/m, 'a table row per attack');
    t.match(run.stdout, new RegExp(`target PASSED: \\d+ passed, 0 failed, 0 errors, ${skipped.length} skipped`), 'summary line');
    t.match(run.stderr, /\[1\/\d+\] tls\./, 'progress on stderr');
    t.match(run.junit, new RegExp(`<testsuites name="sigil probe" tests="${report.results.length}" failures="0" errors="0" skipped="${skipped.length}">`), 'JUnit totals');
    t.match(run.junit, /<testsuite name="sigil.probe.bus"/, 'a JUnit suite per family');
    const tokenText = await readFile(probeFiles.subjectToken, 'utf8');
    t.notOk(run.stdout.includes(tokenText.trim()) || run.stderr.includes(tokenText.trim()) || JSON.stringify(report).includes(tokenText.trim()), 'the subject token appears in no output');
    const after = await probe(b, echoPort, ['--only', 'tls.no-client-cert', '--quiet']);
    t.equal(after.code, 0, 'the test identity works again after the revocation check lifted its revocation');
    t.equal(after.report?.results.length, 1, '--only selects one attack');
    t.equal(after.stderr, '', '--quiet: no progress');
  });

  t.test('a deliberately weakened target: the probe reports the matching attacks as FAIL', async (t) => {
    const echoPort = await closedPort();
    const weakened = ['identity-headers', 'trust-domain-pooling', 'bus-replay', 'delegation-actor'];
    const b = await target('b-weak', echoPort, { SIGIL_UNSAFE_TEST_WEAKEN: weakened.join(',') });
    const run = await probe(b, echoPort);
    t.equal(run.code, 1, `exit 1\n${run.stdout}`);
    const report = run.report!;
    const failed = report.results.filter((r) => r.verdict === 'fail').map((r) => r.id).sort();
    const expected = {
      'identity-headers': ['headers.forged-delegation', 'headers.underscore-variants'],
      'trust-domain-pooling': ['tls.cross-trust-domain'],
      'bus-replay': ['bus.replay', 'bus.replay-new-subscription'],
      'delegation-actor': ['delegation.actor-mismatch'],
    };
    for (const [weakening, ids] of Object.entries(expected)) {
      for (const id of ids) t.ok(failed.includes(id), `${weakening}: ${id} reported as FAIL`);
    }
    t.same(failed, Object.values(expected).flat().sort(), 'nothing else fails: each FAIL is the weakened check');
    t.same(report.results.filter((r) => r.verdict === 'error').map((r) => `${r.id}: ${r.observed}`), [], 'no errors');
    t.match(report.warnings.join('\n'), /SIGIL_UNSAFE_TEST_WEAKEN=identity-headers,trust-domain-pooling,bus-replay,delegation-actor/, 'the report warns that the target is weakened');
    t.match(run.stdout, /^FAIL\s+bus\.replay/m, 'FAIL rows in the table');
    t.match(run.stdout, /target FAILED/, 'summary line');
    t.match(run.junit, /<failure message=/, 'JUnit failures');
    t.match(b.proc.lines.map((l) => JSON.stringify(l)).join('\n'), /UNSAFE: a security check is switched off/, 'the weakened sidecar warns in its log');
  });

  t.test('a target that refuses the test identity cannot pass; usage errors', async (t) => {
    const echoPort = await closedPort();
    const b = await target('b-refusing', echoPort);
    const revoked = await fetch(`http://${b.admin}/v1/revocations`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'agent', value: ID_PROBE }) });
    t.equal(revoked.status, 201, 'the probe identity revoked on this target');
    const run = await probe(b, echoPort, ['--only', 'tls']);
    t.equal(run.code, 1, 'exit 1');
    t.match(run.stderr, /refused the legitimate test identity/, 'says why');
    const usage = spawnJsonLines([SIGIL_BIN, 'probe', '--target', b.inbound]);
    t.equal(await new Promise((r) => usage.child.once('exit', r)), 2, 'missing flags: exit 2');
    t.match(usage.stderr(), /--cert is required/, 'names the flag');
    const typo = await probe(b, echoPort, ['--only', 'tsl']);
    t.equal(typo.code, 2, 'an --only that selects nothing is a usage error');
    t.match(typo.stderr, /--only tsl: no such family or attack/, 'names it');
  });

  t.test('SIGIL_UNSAFE_TEST_WEAKEN with an unknown name: the sidecar refuses to start', async (t) => {
    const config = join(dir, 'b.yaml');
    const proc = spawnJsonLines([SIGIL_BIN, 'run', '--config', config], { SIGIL_UNSAFE_TEST_WEAKEN: 'identity-headerz' });
    const code = await new Promise((r) => proc.child.once('exit', r));
    t.equal(code, 1, 'exit 1');
    t.match(proc.stderr(), /unknown weakening "identity-headerz"/, 'names it');
  });
}
