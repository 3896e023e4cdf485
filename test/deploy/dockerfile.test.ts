// The Dockerfile, kept honest without a Docker engine: its rules are checked (multi-stage, Node 20
// slim, non-root numeric user, no RUN in the runtime stage, exec-form entrypoint and
// HEALTHCHECK, SIGIL_CONFIG), then its build is replayed in a temporary folder (npm ci, build,
// prune; the runtime stage's COPYs) and the result is started the way the image starts it: the
// ENTRYPOINT + CMD with the image's ENV, as the image's user when the test runs as root. The
// started sidecar must pass the image's own HEALTHCHECK, take SIGIL_* overrides, report
// not-ready during shutdown.delay and exit 0 after a SIGTERM drain.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmod, chown, cp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { closedPort, tempDir, waitUntil } from '../helpers/env.js';
import { execForm, inBuildContext, lastOf, parseAssignments, parseCopy, parseDockerfile, replayBuild, type Dockerfile, type Stage } from '../helpers/dockerfile.js';

// npm ci + a TypeScript build: minutes on a busy 2-vCPU machine, not the suite's usual 120 s.
t.setTimeout(600_000);

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const dockerfileText = await readFile(path.join(REPO, 'Dockerfile'), 'utf8');
const dockerignore = await readFile(path.join(REPO, '.dockerignore'), 'utf8');
const IMAGE_UID = 65532;

/** The `!path` exceptions of a `*`-first .dockerignore: everything the build context holds. */
function admittedEntries(ignore: string): string[] {
  return ignore
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.startsWith('!'))
    .map((l) => l.slice(1).replace(/\/$/, ''));
}

/** chmod go-rwx on every file and folder under `dir`. */
async function ownerOnly(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await ownerOnly(p);
    await chmod(p, entry.isDirectory() ? 0o700 : 0o600);
  }
}

/** What the image must be; each returned string is one broken rule. */
function imageRuleProblems(df: Dockerfile, ignore: string): string[] {
  const problems: string[] = [];
  if (df.stages.length < 2) problems.push('not multi-stage (build and runtime stages expected)');
  const runtime = df.stages.at(-1);
  if (!runtime) return ['no FROM'];
  if (!/^node:20[.\w-]*-slim$/.test(runtime.from)) problems.push(`runtime base ${runtime.from} is not a Node 20 slim image`);
  if (runtime.instructions.some((i) => i.keyword === 'RUN')) problems.push('the runtime stage has a RUN step');
  const user = lastOf(runtime, 'USER')?.args;
  if (user === undefined || !/^[1-9]\d*(:[1-9]\d*)?$/.test(user)) problems.push(`runtime USER ${user ?? '(none)'} is not a numeric non-root user`);
  const entrypoint = lastOf(runtime, 'ENTRYPOINT');
  try {
    const argv = execForm(entrypoint?.args ?? 'null');
    if (argv[0] !== 'node' || !argv[1]?.endsWith('/dist/src/cli/main.js')) problems.push(`ENTRYPOINT ${entrypoint?.args} is not node running the sigil CLI`);
  } catch (err) {
    problems.push(`ENTRYPOINT: ${(err as Error).message}`);
  }
  const health = lastOf(runtime, 'HEALTHCHECK')?.args ?? '';
  const healthCmd = /\bCMD\s+(\[.*\])$/.exec(health)?.[1];
  if (!healthCmd || !execForm(healthCmd).includes('health')) problems.push('HEALTHCHECK does not run `sigil health` in exec form');
  const env = Object.assign({}, ...runtime.instructions.filter((i) => i.keyword === 'ENV').map((i) => parseAssignments(i.args))) as Record<string, string>;
  if (!env.SIGIL_CONFIG?.startsWith('/')) problems.push('ENV SIGIL_CONFIG (the config path) is not set');
  for (const stage of df.stages) {
    for (const ins of stage.instructions.filter((i) => i.keyword === 'COPY')) {
      const copy = parseCopy(ins.args);
      if (copy.from !== undefined) continue;
      for (const source of copy.sources) {
        if (!inBuildContext(ignore, source)) problems.push(`line ${ins.line}: COPY ${source} is excluded by .dockerignore`);
      }
    }
  }
  return problems;
}

t.test('the Dockerfile follows the image rules', async (t) => {
  const df = parseDockerfile(dockerfileText);
  t.same(imageRuleProblems(df, dockerignore), [], 'no broken rule');
  t.same(df.stages.map((s) => s.name), ['build', 'runtime']);

  // Negative controls: each rule catches its breakage.
  const broken = (text: string, ignore = dockerignore): string[] => imageRuleProblems(parseDockerfile(text), ignore);
  t.match(broken(dockerfileText.replace('USER 65532:65532', 'USER root')), [/not a numeric non-root user/]);
  t.match(broken(dockerfileText.replace(/^USER .*$/m, '')), [/USER \(none\)/]);
  t.match(broken(dockerfileText.replace('ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]', 'ENTRYPOINT ["/bin/sh", "-c", "node /app/dist/src/cli/main.js"]')), [/ENTRYPOINT/]);
  t.match(broken(dockerfileText.replace('ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]', 'ENTRYPOINT node /app/dist/src/cli/main.js')), [/ENTRYPOINT: /]);
  t.match(broken(dockerfileText.replace('COPY --from=build /src/schema ./schema', 'COPY --from=build /src/schema ./schema\nRUN chmod -R a+w ./schema')), [/runtime stage has a RUN/]);
  t.match(broken(dockerfileText.replace(/FROM \$\{NODE_IMAGE\} AS runtime/, 'FROM node:20 AS runtime')), [/not a Node 20 slim image/]);
  t.match(broken(dockerfileText.replace(/CMD \["node", "\/app\/dist\/src\/cli\/main.js", "health"\]/, 'CMD curl -f http://127.0.0.1:15000/healthz')), [/HEALTHCHECK/]);
  t.match(broken(dockerfileText.replace('SIGIL_CONFIG=/etc/sigil/sigil.yaml', 'SIGIL_X=1')), [/SIGIL_CONFIG/]);
  t.match(broken(dockerfileText, dockerignore.replace('!schema/\n', '')), [/COPY schema is excluded by .dockerignore/]);
  t.throws(() => parseDockerfile(dockerfileText.replace('STOPSIGNAL SIGTERM', 'ONBUILD RUN true')), /ONBUILD is not understood/);
  t.throws(() => parseAssignments('SIGIL_CONFIG /etc/sigil/sigil.yaml'), /expected KEY=value/, 'the legacy ENV form is refused, not half-read');
  t.same(parseAssignments('A=1 \\\n B="two words"'.replace('\\\n', '')), { A: '1', B: 'two words' });
});

t.test('the replay copies like Docker: a folder\'s contents, a file into a folder', async (t) => {
  const context = await tempDir(t, 'sigil-replay-ctx-');
  await mkdir(path.join(context, 'd/sub'), { recursive: true });
  await writeFile(path.join(context, 'd/sub/inner.txt'), 'x');
  await writeFile(path.join(context, 'f.txt'), 'y');
  const root = await tempDir(t, 'sigil-replay-root-');
  await replayBuild(parseDockerfile('FROM scratch AS one\nWORKDIR /w\nCOPY d ./\nCOPY f.txt ./out/\nCOPY f.txt ./renamed.txt\n'), { context, root });
  t.ok(existsSync(path.join(root, 'one/w/sub/inner.txt')), 'COPY d ./ puts the contents of d into ./');
  t.notOk(existsSync(path.join(root, 'one/w/d')), 'not d itself');
  t.ok(existsSync(path.join(root, 'one/w/out/f.txt')), 'a file into a folder destination');
  t.ok(existsSync(path.join(root, 'one/w/renamed.txt')), 'a file to a file destination');
});

t.test('.dockerignore keeps local state out of the build context', async (t) => {
  for (const path of ['node_modules', 'dist', 'test', 'bench/results', '.git', 'ca/ca.key', 'examples/kubernetes']) {
    t.notOk(inBuildContext(dockerignore, path), `${path} is not sent`);
  }
  for (const path of ['src', 'package-lock.json', 'schema', 'proto']) t.ok(inBuildContext(dockerignore, path), `${path} is sent`);
});

t.test('the image built from the Dockerfile runs the sidecar', async (t) => {
  const df = parseDockerfile(dockerfileText);
  const runtime = df.stages.at(-1) as Stage;
  const root = await tempDir(t, 'sigil-image-');
  // As root the sidecar runs as the image's user, who must be able to reach its files.
  await chmod(root, 0o755);
  // The build context as Docker sends it: only what .dockerignore admits, and with the modes a
  // checkout under umask 077 has (owner-only), which the image must not pass on to its user.
  const context = path.join(root, 'context');
  for (const entry of admittedEntries(dockerignore)) {
    await cp(path.join(REPO, entry), path.join(context, entry), { recursive: true });
  }
  await ownerOnly(context);
  const started = Date.now();
  await replayBuild(df, {
    context,
    root,
    // The same commands; npm reuses its cache (CI ran npm ci moments ago) instead of downloading.
    env: { npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' },
    log: (line) => t.comment(`${((Date.now() - started) / 1000).toFixed(0)} s: ${line}`),
  });
  const image = path.join(root, runtime.name);
  const inImage = (p: string): string => path.join(image, p);

  t.test('only production dependencies and compiled code', async (t) => {
    // The lockfile says which packages are dev-only (a devDependency that a production
    // dependency also needs, like @types/node for protobufjs, is not).
    const lock = JSON.parse(await readFile(path.join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; optional?: boolean }> };
    const installed = Object.entries(lock.packages).filter(([p]) => p.startsWith('node_modules/'));
    const missing = installed.filter(([p, info]) => !info.dev && !info.optional && !existsSync(inImage(`app/${p}/package.json`))).map(([p]) => p);
    const leftovers = installed.filter(([p, info]) => info.dev && existsSync(inImage(`app/${p}`))).map(([p]) => p);
    t.same(missing, [], 'every production package is installed');
    t.same(leftovers, [], 'no dev-only package is');
    t.ok(installed.some(([, info]) => info.dev) && installed.some(([, info]) => !info.dev), 'the lockfile has both kinds (the checks above are not vacuous)');
    t.notOk(existsSync(inImage('app/src')), 'no TypeScript sources');
    t.notOk(existsSync(inImage('app/dist/test')), 'no compiled tests');
    t.ok(existsSync(inImage('app/dist/src/cli/main.js')), 'the CLI');
    t.ok(existsSync(inImage('app/schema/sigil.cedarschema')) && existsSync(inImage('app/proto/workload.proto')), 'run-time data files');
    const topLevel = (await readdir(inImage('app'))).sort();
    t.same(topLevel, ['dist', 'examples', 'node_modules', 'package.json', 'proto', 'schema']);
  });

  // Run the image: ENTRYPOINT + arguments, the image's ENV with container paths mapped.
  const entrypoint = execForm(lastOf(runtime, 'ENTRYPOINT')!.args);
  const cmd = execForm(lastOf(runtime, 'CMD')!.args);
  const healthcheck = execForm(/\bCMD\s+(\[.*\])$/.exec(lastOf(runtime, 'HEALTHCHECK')!.args)![1]!);
  const imageEnv = Object.assign({}, ...runtime.instructions.filter((i) => i.keyword === 'ENV').map((i) => parseAssignments(i.args))) as Record<string, string>;
  const mapArg = (a: string): string => (a.startsWith('/') ? inImage(a) : a === 'node' ? process.execPath : a);
  const workdir = inImage(lastOf(runtime, 'WORKDIR')!.args);
  const asImageUser = process.getuid?.() === 0;
  const baseEnv = { PATH: process.env.PATH ?? '', ...Object.fromEntries(Object.entries(imageEnv).map(([k, v]) => [k, v.startsWith('/') ? inImage(v) : v])) };

  // The test runner preloads a tracking module into node children through NODE_OPTIONS; it
  // writes into the repository at exit, which the image's user may not do. `env -u` keeps the
  // child a plain `node`, as in the image.
  const spawnArgs = (argv: string[]): string[] => ['-u', 'NODE_OPTIONS', process.execPath, ...argv];
  const asUser = asImageUser ? { uid: IMAGE_UID, gid: IMAGE_UID } : {};
  /** The Dockerfile's exec-form argv (container paths) → host argv; `extra` is passed as is. */
  const imageArgv = (argv: string[], extra: string[] = []): string[] => [...argv.slice(1).map(mapArg), ...extra];
  const runImage = (args: string[], env: Record<string, string> = {}): ChildProcess =>
    spawn('env', spawnArgs(imageArgv(entrypoint, args)), { cwd: workdir, env: { ...baseEnv, ...env }, stdio: ['ignore', 'pipe', 'pipe'], ...asUser });
  const runToEnd = (argv: string[], extra: string[], env: Record<string, string> = {}): { status: number | null; out: string } => {
    const r = spawnSync('env', spawnArgs(imageArgv(argv, extra)), { cwd: workdir, env: { ...baseEnv, ...env }, encoding: 'utf8', ...asUser });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };

  // What a deployment mounts: a config at $SIGIL_CONFIG and a dev CA (made with the image itself).
  const configFile = inImage(imageEnv.SIGIL_CONFIG!);
  await mkdir(path.dirname(configFile), { recursive: true });
  const caDir = inImage('/var/lib/sigil/ca');
  await mkdir(caDir, { recursive: true });
  if (asImageUser) await chown(caDir, IMAGE_UID, IMAGE_UID);
  const init = runToEnd(entrypoint, ['ca', 'init', '--trust-domain', 'example.org', '--dir', caDir, '--if-missing']);
  t.equal(init.status, 0, `sigil ca init in the image: ${init.out}`);
  await writeFile(
    configFile,
    YAML.stringify({
      trustDomain: 'example.org',
      identity: { dev: { caDir, spiffeId: 'spiffe://example.org/agent/placeholder' } },
      inbound: { listen: '127.0.0.1:0', upstream: 'http://127.0.0.1:3000' },
      // A Cedar policy: compiling it reads the image's Cedar schema file.
      policy: { cedar: './policy.cedar' },
    }),
  );
  await writeFile(path.join(path.dirname(configFile), 'policy.cedar'), 'permit(principal, action, resource) when { principal in TrustDomain::"example.org" };\n');
  const adminPort = await closedPort();
  const overrides = {
    SIGIL_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    SIGIL_IDENTITY_DEV_SPIFFE_ID: 'spiffe://example.org/agent/in-container',
    SIGIL_SHUTDOWN_DELAY: '1500ms',
    SIGIL_LOG_LEVEL: 'info',
  };

  t.test('sigil config check in the image validates the mounted config with the overrides', async (t) => {
    const check = runToEnd(entrypoint, ['config', 'check'], overrides);
    t.equal(check.status, 0, check.out);
    t.match(check.out, /SIGIL_IDENTITY_DEV_SPIFFE_ID -> identity\.dev\.spiffeId/);
    t.match(check.out, /spiffeId: spiffe:\/\/example\.org\/agent\/in-container/);
    const bad = runToEnd(entrypoint, ['config', 'check'], { ...overrides, SIGIL_INBOUND_LISTEN: 'nowhere' });
    t.equal(bad.status, 1, 'a bad override is refused');
    t.match(bad.out, /inbound\.listen: .*\(from SIGIL_INBOUND_LISTEN\)/);
  });

  t.test('the container starts, is healthy, and drains on SIGTERM', async (t) => {
    const unhealthy = runToEnd(healthcheck, [], overrides);
    t.equal(unhealthy.status, 1, `HEALTHCHECK fails while nothing listens: ${unhealthy.out}`);

    const sidecar = runImage(cmd.map(mapArg), overrides);
    let stdout = '';
    sidecar.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    sidecar.stderr!.on('data', (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((resolve) => sidecar.once('exit', (code) => resolve(code)));
    t.teardown(() => void sidecar.kill('SIGKILL'));
    t.ok(await waitUntil(() => stdout.includes('"msg":"ready"'), 30_000), `ready: ${stdout}`);
    t.match(stdout, /SIGIL_IDENTITY_DEV_SPIFFE_ID → identity\.dev\.spiffeId/, 'the override is logged by name');
    t.notMatch(stdout, /agent\/in-container.*overrides|overrides.*agent\/in-container/, 'override values stay out of the log');

    const status = (await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json()) as { spiffeId?: string; build?: { version?: string } };
    t.equal(status.spiffeId, 'spiffe://example.org/agent/in-container', 'the SVID is for the overridden SPIFFE ID');
    const pkg = JSON.parse(await readFile(path.join(REPO, 'package.json'), 'utf8')) as { version: string };
    t.equal(status.build?.version, pkg.version, "the image's package.json is readable by its user (the version is not 'unknown')");
    const healthy = runToEnd(healthcheck, [], overrides);
    t.equal(healthy.status, 0, `the image's HEALTHCHECK passes: ${healthy.out}`);

    sidecar.kill('SIGTERM');
    // shutdown.delay: not ready, still alive and answering.
    t.ok(await waitUntil(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 503, 1_000, 20), '/readyz is 503 right after SIGTERM');
    t.equal((await fetch(`http://127.0.0.1:${adminPort}/healthz`)).status, 200, 'still serving during shutdown.delay');
    t.equal(await exited, 0, 'exits 0 after the drain');
    t.match(stdout, /"msg":"shutting down".*"signal":"SIGTERM"/);
    t.match(stdout, /"msg":"stopped"/);
  });
});
