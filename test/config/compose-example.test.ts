// examples/compose is what people run with `docker compose up`, and there is no Docker engine
// here or in CI, so the project is checked like code — for what Compose would refuse, and for
// what would keep the system from working once it starts:
//   - Compose: every service has an image or a build (whose context and Dockerfile exist);
//     depends_on names services, with valid conditions (service_healthy only on a service with a
//     healthcheck — a sigil-image service inherits the Dockerfile's HEALTHCHECK —,
//     service_completed_successfully only on a one-shot); named volumes are declared; bind
//     sources exist; network_mode service:X names a service and publishes no ports; host ports
//     are unique.
//   - The shared state: ca-init's init.sh runs (with the real CLI, into temporary "volumes"),
//     twice (it must keep what is there), and writes only into named volumes; every file a
//     service's config names is on one of its mounts and is there when it starts (written by
//     ca-init, the broker's jwksOut or user-login, which it starts after) or is a bind source;
//     what a service writes is on a writable mount; no agent mounts key material.
//   - Sigil: each sidecar's config loads with Sigil's own loader, with the service's
//     environment applied (SIGIL_* overrides), and the broker's with the broker's; the Cedar
//     policies compile; routes name a sidecar service, its inbound port and its SPIFFE ID; the
//     delegation settings name the broker's service, port, SPIFFE ID, issuer and JWKS file; the
//     exchange scope fits the broker's ceiling and the user's token; the bus and revocation NATS
//     URLs name the nats service and its port, and its certificate covers that name and chains
//     to the trust bundle; published ports and scrape targets are listeners bound beyond
//     loopback; an admin listener beyond loopback has a token file.
//   - The agents: their scripts parse (`node --check`); their environment names their sidecar's
//     outbound and bus listeners, a route host, the upstream port, user-login's token file.
//   - nats.conf passes `nats-server -t`, prometheus.yml `promtool check config` (missing tools
//     fail in CI, SIGIL_CI, and skip loudly elsewhere); the scrape targets are exactly the
//     sidecars' and the broker's admin listeners; healthchecks probe the ports that serve them.
//   - README.md names every file, and its `sigil revoke` command the right admin port and token.
// Every check is also shown to fail on a broken copy of the files.
import { execFile } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';
import YAML from 'yaml';
import { compileCedarPolicy } from '../../src/authz/index.js';
import { BROKER_ENV_OVERRIDES, parseConfig, SIDECAR_ENV_OVERRIDES, type EnvOverride, type SigilConfig } from '../../src/config/index.js';
import { OTHER_SIGIL_VARIABLES } from '../../src/config/env-overrides.js';
import { lastOf, parseAssignments, parseDockerfile } from '../helpers/dockerfile.js';
import { parseBrokerConfig, type BrokerConfig } from '../../src/delegation/broker-config.js';
import { SpiffeIdPattern } from '../../src/spiffe/index.js';
import { DEPENDS_ON_CONDITIONS, mountOf, parseCompose, startsAfter, type ComposeProject, type ComposeService } from '../helpers/compose.js';
import { tempDir } from '../helpers/env.js';
import { editText, findTool, get, isObj, objs, readTree, str, type Files } from '../helpers/example-files.js';

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const COMPOSE_DIR = path.join(REPO, 'examples/compose');
const COMPOSE_FILE = 'docker-compose.yml';
const SIGIL_CLI = path.join(REPO, 'dist/src/cli/main.js');
/** SIGIL_* variables that are not config overrides. */
const NOT_OVERRIDES = new Set(OTHER_SIGIL_VARIABLES);
/** prom/prometheus reads this unless its command says otherwise. */
const PROMETHEUS_DEFAULT_CONFIG = '/etc/prometheus/prometheus.yml';

interface Tools {
  promtool?: string;
  natsServer?: string;
}

/** One run of the checks: a scratch folder, the validators, and results kept across runs (by their inputs). */
interface Context {
  work: string;
  tools: Tools;
  cache: Map<string, Promise<unknown>>;
  runs: number;
}

function memo<T>(ctx: Context, key: string, fn: () => Promise<T>): Promise<T> {
  const hash = createHash('sha256').update(key).digest('hex');
  let p = ctx.cache.get(hash) as Promise<T> | undefined;
  if (!p) {
    p = fn();
    ctx.cache.set(hash, p);
  }
  return p;
}

const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || /^127\./.test(host);
const hostPort = (hp: { host: string; port: number }): string => `${hp.host}:${hp.port}`;

/** Where a path inside a container comes from. */
type Location =
  | { kind: 'bind'; host: string; rel: string | undefined; readOnly: boolean }
  | { kind: 'volume'; volume: string; rel: string; readOnly: boolean }
  | { kind: 'tmpfs' }
  | { kind: 'none' };

interface Produced {
  service: string;
  volume: string;
  rel: string;
  /** What the consumer must wait for. */
  condition: 'service_healthy' | 'service_completed_successfully';
}

interface Example {
  files: Files;
  dir: string;
  project: ComposeProject;
  problems: string[];
  sigilImages: Set<string>;
  dockerfile: { configPath?: string; healthcheck: boolean };
  /** Host folder holding one folder per named volume, as ca-init left them. */
  volumes: string;
  initService?: string;
  produced: Produced[];
  sidecars: Map<string, SigilConfig>;
  broker?: { service: string; config: BrokerConfig };
  loginScript?: { service: string; text: string };
  nats?: { service: string; port: number; tls: boolean; conf: string };
}

// ---------------------------------------------------------------------------------------------

/** `dockerfile`: the text to use instead of the build context's Dockerfile (negative controls). */
async function checkExample(files: Files, ctx: Context, dockerfile?: string): Promise<{ problems: string[]; example?: Example }> {
  const problems: string[] = [];
  const text = files.get(COMPOSE_FILE);
  if (text === undefined) return { problems: [`${COMPOSE_FILE}: missing`] };
  const project = parseCompose(text, problems);
  if (!project) return { problems };
  // The files as they would be on the Docker host, so bind sources and scripts can be used.
  const dir = path.join(ctx.work, `run-${++ctx.runs}`, 'compose');
  for (const [rel, content] of files) {
    await mkdir(path.dirname(path.join(dir, rel)), { recursive: true });
    await writeFile(path.join(dir, rel), content, { mode: rel.endsWith('.sh') ? 0o755 : 0o644 });
  }
  const ex: Example = { files, dir, project, problems, sigilImages: new Set(), dockerfile: { healthcheck: false }, volumes: path.join(ctx.work, 'no-volumes'), produced: [], sidecars: new Map() };

  await checkCompose(ex, dockerfile);
  await runInit(ex, ctx);
  loadLoginScript(ex);
  loadSigilConfigs(ex);
  await checkNats(ex, ctx);
  for (const [name, config] of ex.sidecars) await checkSidecar(ex, name, config);
  await checkBroker(ex);
  await checkAgents(ex, ctx);
  await checkPrometheus(ex, ctx);
  checkReadme(ex);
  return { problems, example: ex };
}

/** Host path of a bind source as Compose resolves it (against the compose file's folder). */
function bindHost(ex: Example, source: string): { host: string; rel: string | undefined } {
  const real = path.resolve(COMPOSE_DIR, source);
  const rel = path.relative(COMPOSE_DIR, real);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return { host: real, rel: undefined };
  return { host: path.join(ex.dir, rel), rel: rel.split(path.sep).join('/') };
}

function locate(ex: Example, s: ComposeService, containerPath: string): Location {
  const hit = mountOf(s, containerPath);
  if (!hit) return { kind: 'none' };
  const { mount, rel } = hit;
  if (mount.kind === 'tmpfs') return { kind: 'tmpfs' };
  if (mount.kind === 'volume') return { kind: 'volume', volume: mount.source, rel, readOnly: mount.readOnly };
  const b = bindHost(ex, mount.source);
  return { kind: 'bind', host: path.join(b.host, rel), rel: b.rel === undefined ? undefined : path.posix.join(b.rel, rel), readOnly: mount.readOnly };
}

/** The text of a file a service sees, when it is one of the example's own files (a bind mount). */
function boundText(ex: Example, s: ComposeService, containerPath: string, what: string): string | undefined {
  const loc = locate(ex, s, containerPath);
  const text = loc.kind === 'bind' && loc.rel !== undefined ? ex.files.get(loc.rel) : undefined;
  if (text === undefined) ex.problems.push(`service ${s.name}: ${what} ${containerPath} is not a file of examples/compose bind-mounted into it (${loc.kind})`);
  return text;
}

const exists = (p: string): Promise<boolean> => access(p).then(() => true, () => false);

/**
 * A file `s` needs when it starts: from a bind source that exists, or from a volume that ca-init
 * filled (then `s` starts after ca-init completed), or that another service fills at start (then
 * `s` starts after that service is healthy).
 */
async function requireFile(ex: Example, s: ComposeService, containerPath: string, what: string): Promise<void> {
  const p = (m: string): void => void ex.problems.push(`service ${s.name}: ${what} ${containerPath} ${m}`);
  const loc = locate(ex, s, containerPath);
  if (loc.kind === 'none') return p('is on no mount of the service');
  if (loc.kind === 'tmpfs') return p('is on a tmpfs, which starts empty');
  if (loc.kind === 'bind') {
    if (!(await exists(loc.host))) p(`is bind-mounted from ${loc.host}, which does not exist`);
    return;
  }
  const producer = ex.produced.find((x) => x.volume === loc.volume && x.rel === loc.rel);
  if (producer) {
    if (producer.service !== s.name && !startsAfter(ex.project, s.name, producer.service, producer.condition)) p(`is written by ${producer.service}, but the service does not wait for it (depends_on ${producer.service}: ${producer.condition})`);
    return;
  }
  if (!(await exists(path.join(ex.volumes, loc.volume, loc.rel)))) return p(`is not in volume ${loc.volume} after ca-init, and no service writes ${loc.volume}/${loc.rel}`);
  if (ex.initService && !startsAfter(ex.project, s.name, ex.initService, 'service_completed_successfully')) p(`is written by ${ex.initService}, but the service does not wait for it (depends_on ${ex.initService}: service_completed_successfully)`);
}

function requireWritable(ex: Example, s: ComposeService, folder: string, what: string): void {
  const loc = locate(ex, s, folder);
  const ok = loc.kind === 'tmpfs' || ((loc.kind === 'volume' || loc.kind === 'bind') && !loc.readOnly) || (loc.kind === 'none' && !s.readOnly);
  if (!ok) ex.problems.push(`service ${s.name}: ${what} ${folder} is not writable (${loc.kind === 'none' ? 'read-only root filesystem' : `read-only ${loc.kind}`})`);
}

// ---------------------------------------------------------------------------------------------
// What Compose itself checks, and the Dockerfile the sigil services are built from.

async function checkCompose(ex: Example, dockerfile: string | undefined): Promise<void> {
  const { project, problems } = ex;
  const p = (s: ComposeService, m: string): void => void problems.push(`service ${s.name}: ${m}`);
  for (const s of project.services.values()) {
    if (!s.image && !s.build) p(s, 'has neither image nor build');
    if (s.build) {
      const context = bindHost(ex, s.build.context).host;
      if (!(await exists(context))) p(s, `build context ${s.build.context} does not exist`);
      else if (!(await exists(path.join(context, s.build.dockerfile)))) p(s, `build context ${s.build.context} has no ${s.build.dockerfile}`);
      else if (path.resolve(context) === path.resolve(REPO)) {
        // The sigil image: what the services built from this repository inherit from its Dockerfile.
        if (s.image) ex.sigilImages.add(s.image);
        ex.dockerfile = dockerfileFacts(dockerfile ?? (await readFile(path.join(context, s.build.dockerfile), 'utf8')));
      }
    }
    for (const m of s.mounts) {
      if (m.kind === 'volume' && !project.volumes.has(m.source)) p(s, `mounts volume ${m.source}, which is not declared under volumes:`);
      if (m.kind === 'bind' && !(await exists(bindHost(ex, m.source).host))) p(s, `bind source ${m.source} does not exist`);
    }
    const shared = s.networkMode?.match(/^service:(.+)$/)?.[1];
    if (shared !== undefined) {
      const target = project.services.get(shared);
      if (!target) p(s, `network_mode service:${shared}: no such service`);
      else if (target.networkMode !== undefined) p(s, `network_mode service:${shared}: that service does not have a network namespace of its own`);
      if (s.ports.length > 0) p(s, `publishes ports but shares the network namespace of ${shared}: publish them there`);
      if (s.raw.networks !== undefined || s.raw.hostname !== undefined) p(s, 'sets networks or hostname together with network_mode');
    }
  }
  const published = new Map<string, string>();
  for (const s of project.services.values()) {
    for (const port of s.ports) {
      if (port.published === undefined) continue;
      const key = `${port.hostIp ?? '0.0.0.0'}:${port.published}`;
      const other = published.get(key);
      if (other) p(s, `publishes ${key}, as ${other} does`);
      published.set(key, s.name);
    }
  }
  for (const s of project.services.values()) {
    for (const [target, condition] of s.dependsOn) {
      const dep = project.services.get(target);
      if (!dep) {
        p(s, `depends_on ${target}: no such service`);
        continue;
      }
      if (!(DEPENDS_ON_CONDITIONS as readonly string[]).includes(condition)) p(s, `depends_on ${target}: unknown condition ${condition}`);
      if (condition === 'service_healthy' && !hasHealthcheck(ex, dep)) p(s, `depends_on ${target}: service_healthy, but ${target} has no healthcheck`);
      if (condition === 'service_completed_successfully' && dep.restart !== undefined && !['no', 'on-failure'].includes(dep.restart)) p(s, `depends_on ${target}: service_completed_successfully, but ${target} restarts (${dep.restart}) and never completes`);
    }
  }
}

/** What a service built from the Dockerfile inherits: its runtime stage's SIGIL_CONFIG and HEALTHCHECK. */
function dockerfileFacts(text: string): { configPath?: string; healthcheck: boolean } {
  const runtime = parseDockerfile(text).stages.at(-1);
  if (!runtime) return { healthcheck: false };
  const env = Object.assign({}, ...runtime.instructions.filter((i) => i.keyword === 'ENV').map((i) => parseAssignments(i.args))) as Record<string, string>;
  const healthcheck = lastOf(runtime, 'HEALTHCHECK');
  return { ...(env.SIGIL_CONFIG ? { configPath: env.SIGIL_CONFIG } : {}), healthcheck: healthcheck !== undefined && !/^NONE\b/.test(healthcheck.args) };
}

const isSigilImage = (ex: Example, s: ComposeService): boolean => s.image !== undefined && ex.sigilImages.has(s.image);

function hasHealthcheck(ex: Example, s: ComposeService): boolean {
  if (s.healthcheck === 'explicit') return true;
  return s.healthcheck === 'inherit' && isSigilImage(ex, s) && ex.dockerfile.healthcheck;
}

type Role = 'sidecar' | 'broker' | 'script' | 'nats' | 'prometheus' | 'agent' | 'other';

function roleOf(ex: Example, s: ComposeService): Role {
  if (isSigilImage(ex, s)) {
    if (s.entrypoint !== undefined) return 'script';
    if (s.command?.[0] === 'broker') return 'broker';
    return s.command === undefined || s.command[0] === 'run' ? 'sidecar' : 'script';
  }
  if (s.image?.startsWith('nats:')) return 'nats';
  if (s.image?.startsWith('prom/prometheus')) return 'prometheus';
  if (s.networkMode?.startsWith('service:')) return 'agent';
  return 'other';
}

const servicesWithRole = (ex: Example, role: Role): ComposeService[] => [...ex.project.services.values()].filter((s) => roleOf(ex, s) === role);

/** `sh SCRIPT` entrypoints: the script's text, and its VAR=${VAR:-/default/path} variables. */
function scriptOf(ex: Example, s: ComposeService): { rel: string; text: string; paths: Map<string, string> } | undefined {
  const [shell, script] = s.entrypoint ?? [];
  if (shell !== 'sh' || script === undefined) return undefined;
  const loc = locate(ex, s, script);
  const text = loc.kind === 'bind' && loc.rel !== undefined ? ex.files.get(loc.rel) : undefined;
  if (loc.kind !== 'bind' || loc.rel === undefined || text === undefined) {
    ex.problems.push(`service ${s.name}: entrypoint script ${script} is not a file of examples/compose bind-mounted into it`);
    return undefined;
  }
  const paths = new Map<string, string>();
  for (const m of text.matchAll(/^([A-Z_]+)=\$\{\1:-(\/[^}]*)\}$/gm)) paths.set(m[1]!, m[2]!);
  return { rel: loc.rel, text, paths };
}

// ---------------------------------------------------------------------------------------------
// ca-init: run init.sh for real, into one host folder per named volume.

async function runInit(ex: Example, ctx: Context): Promise<void> {
  const init = servicesWithRole(ex, 'script').map((s) => ({ s, script: scriptOf(ex, s) })).find((x) => x.script && /^[^#\n]*\bca init\b/m.test(x.script.text));
  if (!init?.script) {
    ex.problems.push('no service runs a script with `ca init` (ca-init)');
    return;
  }
  const { s, script } = init;
  ex.initService = s.name;
  if (s.restart !== undefined && s.restart !== 'no') ex.problems.push(`service ${s.name}: restart ${s.restart}: a one-shot must not restart`);
  const p = (m: string): void => void ex.problems.push(`service ${s.name}: ${script.rel}: ${m}`);
  const targets: Record<string, { volume: string; rel: string }> = {};
  for (const [name, containerPath] of script.paths) {
    const loc = locate(ex, s, containerPath);
    if (loc.kind !== 'volume' || loc.readOnly) p(`${name}=${containerPath} is on no writable named volume of the service: what it writes is lost`);
    else targets[name] = { volume: loc.volume, rel: loc.rel };
  }
  if (Object.keys(targets).length < script.paths.size) return;
  // What the run depends on: the script, the files next to it that it names, where it writes.
  const folder = path.posix.dirname(script.rel);
  const used = [...ex.files].filter(([rel]) => rel === script.rel || (path.posix.dirname(rel) === folder && script.text.includes(path.posix.basename(rel))));
  const inputs = JSON.stringify({ targets, used: used.sort() });
  const result = await memo(ctx, `init ${inputs}`, async () => {
    const volumes = path.join(ctx.work, `volumes-${createHash('sha256').update(inputs).digest('hex').slice(0, 12)}`);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      SIGIL: `node ${SIGIL_CLI}`,
      SIGIL_APP_DIR: REPO,
      OWNER: `${process.getuid?.() ?? 0}:${process.getgid?.() ?? 0}`,
    };
    for (const [name, target] of Object.entries(targets)) env[name] = path.join(volumes, target.volume, target.rel);
    const failures: string[] = [];
    let caBefore: string | undefined;
    for (const attempt of ['first run', 'second run (on a restart, with the volumes as they are)']) {
      try {
        await run('sh', [path.join(ex.dir, script.rel)], { env, timeout: 60_000 });
      } catch (err) {
        const e = err as { stderr?: string; message: string };
        failures.push(`${attempt} failed: ${(e.stderr || e.message).trim().split('\n').slice(-3).join(' | ')}`);
        break;
      }
      const caDir = env.CA_DIR;
      const ca = caDir ? await readFile(path.join(caDir, 'ca.pem'), 'utf8').catch(() => undefined) : undefined;
      if (caBefore !== undefined && ca !== caBefore) failures.push(`${attempt} replaced the CA: every SVID issued before stops verifying`);
      caBefore = ca;
    }
    return { volumes, failures };
  });
  ex.volumes = result.volumes;
  for (const f of result.failures) p(f);
}

function loadLoginScript(ex: Example): void {
  for (const s of servicesWithRole(ex, 'script')) {
    const script = scriptOf(ex, s);
    if (!script || !/^[^#\n]*\bdev-token\b/m.test(script.text)) continue;
    const tokenFile = script.paths.get('TOKEN_FILE');
    ex.loginScript = { service: s.name, text: script.text };
    if (!tokenFile) {
      ex.problems.push(`service ${s.name}: ${script.rel} has no TOKEN_FILE=\${TOKEN_FILE:-/path}`);
      continue;
    }
    const loc = locate(ex, s, tokenFile);
    if (loc.kind !== 'volume' || loc.readOnly) ex.problems.push(`service ${s.name}: TOKEN_FILE ${tokenFile} is on no writable named volume`);
    else ex.produced.push({ service: s.name, volume: loc.volume, rel: loc.rel, condition: 'service_healthy' });
    if (!s.healthTest?.join(' ').includes(tokenFile)) ex.problems.push(`service ${s.name}: its healthcheck does not test ${tokenFile}: "healthy" would not mean the token is there`);
  }
}

// ---------------------------------------------------------------------------------------------
// The sidecars' and the broker's configs, through Sigil's own loaders.

function configPathOf(ex: Example, s: ComposeService): string | undefined {
  const args = s.command ?? [];
  const at = args.indexOf('--config');
  if (at >= 0) return args[at + 1];
  return s.environment.SIGIL_CONFIG || ex.dockerfile.configPath;
}

/** SIGIL_* variables in a service's environment that its command does not read: set, but silently without effect. */
function ignoredVariables(ex: Example, s: ComposeService, table: readonly EnvOverride[]): void {
  for (const name of Object.keys(s.environment)) {
    if (name.startsWith('SIGIL_') && !NOT_OVERRIDES.has(name) && !table.some((o) => o.env === name)) ex.problems.push(`service ${s.name}: environment ${name}: not an override this command reads`);
  }
}

function loadSigilConfigs(ex: Example): void {
  for (const s of [...servicesWithRole(ex, 'sidecar'), ...servicesWithRole(ex, 'broker')]) {
    const broker = roleOf(ex, s) === 'broker';
    const file = configPathOf(ex, s);
    if (file === undefined) {
      ex.problems.push(`service ${s.name}: no --config and no SIGIL_CONFIG (neither in the service nor in the Dockerfile)`);
      continue;
    }
    const text = boundText(ex, s, file, 'config');
    if (text === undefined) continue;
    const format = file.endsWith('.json') ? 'json' : 'yaml';
    try {
      if (broker) {
        ignoredVariables(ex, s, BROKER_ENV_OVERRIDES);
        if (ex.broker) ex.problems.push(`services ${ex.broker.service} and ${s.name}: two brokers`);
        ex.broker = { service: s.name, config: parseBrokerConfig(text, format, file, s.environment) };
      } else {
        ignoredVariables(ex, s, SIDECAR_ENV_OVERRIDES);
        // Only the service's environment counts (its SIGIL_* overrides applied), not the test runner's.
        ex.sidecars.set(s.name, parseConfig(text, format, file, { env: s.environment }));
      }
    } catch (err) {
      ex.problems.push(`service ${s.name}: ${file} does not load: ${(err as Error).message.replace(/\n\s*/g, ' ')}`);
    }
  }
  if (ex.sidecars.size === 0) ex.problems.push('no sidecar service loaded');
  if (ex.broker) {
    const s = ex.project.services.get(ex.broker.service)!;
    const jwksOut = ex.broker.config.jwksOut;
    const loc = jwksOut === undefined ? undefined : locate(ex, s, jwksOut);
    if (loc?.kind === 'volume' && !loc.readOnly) ex.produced.push({ service: s.name, volume: loc.volume, rel: loc.rel, condition: 'service_healthy' });
  }
}

/** Compile errors by policy text: the same file is compiled for several services and many broken copies. */
const compiled = new Map<string, string | undefined>();

function compilePolicy(ex: Example, s: ComposeService, file: string): void {
  const text = boundText(ex, s, file, 'policy');
  if (text === undefined) return;
  if (!compiled.has(text)) {
    try {
      compileCedarPolicy(text, file);
      compiled.set(text, undefined);
    } catch (err) {
      compiled.set(text, (err as Error).message.split('\n')[0]);
    }
  }
  const error = compiled.get(text);
  if (error !== undefined) ex.problems.push(`service ${s.name}: ${file} does not compile: ${error}`);
}

/** The admin listener: reachable beyond loopback only with a token guarding the changing endpoints. */
function checkAdmin(ex: Example, s: ComposeService, admin: { listen: { host: string; port: number }; tokenFile?: string }): void {
  if (!isLoopback(admin.listen.host) && admin.tokenFile === undefined) ex.problems.push(`service ${s.name}: admin.listen ${hostPort(admin.listen)} is reachable by other services: set admin.tokenFile`);
  // A healthcheck that asks an admin URL must ask this one.
  const probed = s.healthTest?.join(' ').match(/\/\/(?:127\.0\.0\.1|localhost):(\d+)\//)?.[1];
  if (probed !== undefined && Number(probed) !== admin.listen.port) ex.problems.push(`service ${s.name}: its healthcheck probes port ${probed}, not admin.listen's ${admin.listen.port}`);
}

/** Published ports must be listeners the service binds beyond its loopback. */
function checkPublished(ex: Example, s: ComposeService, listeners: ({ host: string; port: number } | undefined)[]): void {
  for (const port of s.ports) {
    const l = listeners.find((x) => x?.port === port.target);
    if (!l) ex.problems.push(`service ${s.name}: publishes container port ${port.target}, on which it does not listen`);
    else if (isLoopback(l.host)) ex.problems.push(`service ${s.name}: publishes container port ${port.target}, which it binds on ${l.host} only: unreachable from outside the container`);
  }
}

async function checkNatsUrls(ex: Example, s: ComposeService, key: string, servers: string[], caPem: string | undefined): Promise<void> {
  const p = (m: string): void => void ex.problems.push(`service ${s.name}: ${key}: ${m}`);
  for (const server of servers) {
    const m = /^(?:(tls|nats):\/\/)?([^:/]+):(\d+)$/.exec(server);
    if (!m) {
      p(`${server}: not [tls|nats://]host:port`);
      continue;
    }
    const [, , host, port] = m;
    const target = ex.project.services.get(host!);
    if (!target || roleOf(ex, target) !== 'nats') {
      p(`${server}: ${host} is not the nats service`);
      continue;
    }
    if (!startsAfter(ex.project, s.name, target.name, 'service_healthy')) p(`does not wait for ${target.name} to be healthy (depends_on)`);
    if (!ex.nats) continue;
    if (ex.nats.port !== Number(port)) p(`${server}: nats.conf listens on port ${String(ex.nats.port)}`);
    if (!ex.nats.tls) p('nats.conf has no tls block, and Sigil always connects with TLS');
    // Sigil verifies the server like any TLS client: against the trust bundle, for the host name in the URL.
    const cert = await natsServerCertificate(ex);
    if (cert && caPem) {
      if (cert.checkHost(host!) === undefined) p(`the NATS server certificate does not name ${host} (${cert.subjectAltName ?? cert.subject})`);
      if (!cert.verify(new X509Certificate(caPem).publicKey)) p('the NATS server certificate is not signed by the CA in the trust bundle');
    }
  }
}

async function natsServerCertificate(ex: Example): Promise<X509Certificate | undefined> {
  const certFile = ex.nats && /^\s*cert_file\s*[:=]?\s*"?([^"\s]+)"?/m.exec(ex.nats.conf)?.[1];
  const s = ex.nats && ex.project.services.get(ex.nats.service);
  if (!certFile || !s) return undefined;
  const loc = locate(ex, s, certFile);
  const host = loc.kind === 'volume' ? path.join(ex.volumes, loc.volume, loc.rel) : loc.kind === 'bind' ? loc.host : undefined;
  const pem = host && (await readFile(host, 'utf8').catch(() => undefined));
  return pem ? new X509Certificate(pem) : undefined;
}

/** The trust bundle a dev-identity service ends up with: its CA folder's ca.pem as ca-init wrote it. */
async function caPemOf(ex: Example, s: ComposeService, identity: SigilConfig['identity']): Promise<string | undefined> {
  if (identity.kind !== 'dev') return undefined;
  const loc = locate(ex, s, path.posix.join(identity.caDir, 'ca.pem'));
  return loc.kind === 'volume' ? readFile(path.join(ex.volumes, loc.volume, loc.rel), 'utf8').catch(() => undefined) : undefined;
}

async function checkSidecar(ex: Example, name: string, c: SigilConfig): Promise<void> {
  const s = ex.project.services.get(name)!;
  const p = (m: string): void => void ex.problems.push(`service ${name}: ${m}`);
  if (c.identity.kind === 'dev') for (const f of ['ca.pem', 'ca.key']) await requireFile(ex, s, path.posix.join(c.identity.caDir, f), 'identity.dev.caDir file');
  for (const [key, file] of [
    ['admin.tokenFile', c.admin.tokenFile],
    ['delegation.jwks', c.delegation?.jwks],
    ['revocation.file', c.revocation?.file],
    ['bus.nats.tls.ca', c.bus?.nats?.ca],
    ['revocation.nats.tls.ca', c.revocation?.nats?.ca],
    ...Object.entries(c.trust.bundles).map(([td, f]) => [`trust.bundles.${td}`, f]),
  ] as const) {
    if (file !== undefined) await requireFile(ex, s, file, key);
  }
  if (c.policy.cedar) compilePolicy(ex, s, c.policy.cedar);
  if (c.audit) requireWritable(ex, s, path.posix.dirname(c.audit.path), 'audit.path folder');
  checkAdmin(ex, s, c.admin);
  checkPublished(ex, s, [c.inbound?.listen, c.outbound?.listen, c.bus?.local, c.admin.listen]);

  for (const route of c.outbound?.routes ?? []) {
    const where = `outbound.routes ${route.host}`;
    const target = ex.project.services.get(route.address.host);
    const tc = ex.sidecars.get(route.address.host);
    if (!target) p(`${where}: address ${hostPort(route.address)}: no service ${route.address.host}`);
    else if (!tc?.inbound) p(`${where}: address ${hostPort(route.address)}: ${route.address.host} is not a sidecar with an inbound listener`);
    else {
      if (tc.inbound.listen.port !== route.address.port) p(`${where}: address ${hostPort(route.address)}, but ${target.name}'s inbound.listen is ${hostPort(tc.inbound.listen)}`);
      if (isLoopback(tc.inbound.listen.host)) p(`${where}: ${target.name}'s inbound.listen ${hostPort(tc.inbound.listen)} is loopback: unreachable from ${name}`);
      const id = tc.identity.kind === 'dev' ? tc.identity.spiffeId : undefined;
      if (id !== undefined && !SpiffeIdPattern.parse(route.spiffeId).matches(id)) p(`${where}: spiffeId ${route.spiffeId}, but ${target.name} is ${id}`);
    }
    if (route.exchange) checkExchangeScope(ex, s, where, route.spiffeId, route.exchange.scope);
  }

  const d = c.delegation;
  const b = ex.broker;
  if (d && b) {
    if (d.issuer !== b.config.issuer) p(`delegation.issuer ${d.issuer}, but the broker issues as ${b.config.issuer}`);
    const jwks = locate(ex, s, d.jwks);
    const brokerService = ex.project.services.get(b.service)!;
    const out = b.config.jwksOut === undefined ? undefined : locate(ex, brokerService, b.config.jwksOut);
    if (!(jwks.kind === 'volume' && out?.kind === 'volume' && jwks.volume === out.volume && jwks.rel === out.rel)) p(`delegation.jwks ${d.jwks} is not the file the broker writes (jwksOut ${String(b.config.jwksOut)})`);
    if (d.broker) {
      const url = new URL(d.broker.url);
      if (url.protocol !== 'https:') p(`delegation.broker.url ${d.broker.url} is not https`);
      if (url.hostname !== b.service) p(`delegation.broker.url ${d.broker.url}: ${url.hostname} is not the broker service (${b.service})`);
      else if (Number(url.port || 443) !== b.config.listen.port) p(`delegation.broker.url ${d.broker.url}, but the broker listens on port ${b.config.listen.port}`);
      const brokerId = b.config.identity.kind === 'dev' ? b.config.identity.spiffeId : undefined;
      if (brokerId !== undefined && d.broker.spiffeId !== brokerId) p(`delegation.broker.spiffeId ${d.broker.spiffeId}, but the broker is ${brokerId}`);
    }
  } else if (d && !b) p('has a delegation section, but there is no broker service');

  const caPem = await caPemOf(ex, s, c.identity);
  if (c.bus?.nats) await checkNatsUrls(ex, s, 'bus.nats.servers', c.bus.nats.servers, c.bus.nats.ca ? undefined : caPem);
  if (c.revocation?.nats) await checkNatsUrls(ex, s, 'revocation.nats.servers', c.revocation.nats.servers, c.revocation.nats.ca ? undefined : caPem);
}

/** The scope a route asks for must fit the broker's ceiling for the audience and the user's token (else invalid_scope). */
function checkExchangeScope(ex: Example, s: ComposeService, where: string, audience: string, scope: string[] | undefined): void {
  if (!ex.broker || !scope) return;
  const ceiling = ex.broker.config.scopes.find((x) => SpiffeIdPattern.parse(x.audience).matches(audience));
  for (const token of scope) {
    if (ceiling && !ceiling.allow.includes(token)) ex.problems.push(`service ${s.name}: ${where}: exchange scope ${token} is above the broker's ceiling for ${audience} (${ceiling.allow.join(' ')})`);
  }
  const userScope = ex.loginScript && /--scope\s+"([^"]*)"/.exec(ex.loginScript.text)?.[1]?.split(/\s+/);
  if (userScope && !scope.some((token) => userScope.includes(token))) ex.problems.push(`service ${s.name}: ${where}: the user's token (${ex.loginScript!.service} --scope "${userScope.join(' ')}") holds none of ${scope.join(' ')}: the broker answers invalid_scope`);
}

async function checkBroker(ex: Example): Promise<void> {
  if (!ex.broker) {
    ex.problems.push('no broker service loaded');
    return;
  }
  const { config: b } = ex.broker;
  const s = ex.project.services.get(ex.broker.service)!;
  if (b.identity.kind === 'dev') for (const f of ['ca.pem', 'ca.key']) await requireFile(ex, s, path.posix.join(b.identity.caDir, f), 'identity.dev.caDir file');
  for (const issuer of b.subjectIssuers) if (issuer.jwks) await requireFile(ex, s, issuer.jwks, 'subjectIssuers jwks');
  if (b.admin.tokenFile) await requireFile(ex, s, b.admin.tokenFile, 'admin.tokenFile');
  if (b.revocation?.file) await requireFile(ex, s, b.revocation.file, 'revocation.file');
  compilePolicy(ex, s, b.policy.cedar);
  requireWritable(ex, s, b.signingKeys, 'signingKeys');
  if (locate(ex, s, b.signingKeys).kind !== 'volume') ex.problems.push(`service ${s.name}: signingKeys ${b.signingKeys} is not on a named volume: a restart would mint new keys and orphan every token`);
  if (b.jwksOut) requireWritable(ex, s, path.posix.dirname(b.jwksOut), 'jwksOut folder');
  checkAdmin(ex, s, b.admin);
  checkPublished(ex, s, [b.listen, b.admin.listen]);
  const aud = ex.loginScript && /--aud\s+(\S+)/.exec(ex.loginScript.text)?.[1];
  if (aud !== undefined && !b.subjectIssuers.some((i) => i.audience === aud)) ex.problems.push(`service ${ex.loginScript!.service}: mints tokens for --aud ${aud}, which no subjectIssuers entry of the broker accepts`);
  const caPem = await caPemOf(ex, s, b.identity);
  if (b.revocation?.nats) await checkNatsUrls(ex, s, 'revocation.nats.servers', b.revocation.nats.servers, b.revocation.nats.ca ? undefined : caPem);
}

// ---------------------------------------------------------------------------------------------
// nats-server, the agents, Prometheus, README.

async function checkNats(ex: Example, ctx: Context): Promise<void> {
  const [s, ...more] = servicesWithRole(ex, 'nats');
  if (!s) {
    ex.problems.push('no nats service');
    return;
  }
  if (more.length > 0) ex.problems.push(`more than one nats service: ${[s, ...more].map((x) => x.name).join(', ')}`);
  const args = s.command ?? [];
  const at = Math.max(args.indexOf('--config'), args.indexOf('-c'));
  const file = at >= 0 ? args[at + 1] : undefined;
  if (file === undefined) {
    ex.problems.push(`service ${s.name}: no --config in its command`);
    return;
  }
  const conf = boundText(ex, s, file, 'config');
  if (conf === undefined) return;
  const value = (key: string): string | undefined => new RegExp(`^\\s*${key}\\s*[:=]?\\s*"?([^"\\s#]+)"?`, 'm').exec(conf)?.[1];
  const listen = value('listen') ?? value('port');
  const tls = /^\s*tls\s*[:=]?\s*\{/m.test(conf);
  ex.nats = { service: s.name, port: listen === undefined ? 4222 : Number(listen.split(':').pop()), tls, conf };
  const p = (m: string): void => void ex.problems.push(`service ${s.name}: ${m}`);
  if (tls && value('verify') !== 'true') p('nats.conf: tls without verify: true lets in clients without a certificate of the trust domain');
  if ([...ex.sidecars.values()].some((c) => c.revocation?.nats) && !/^\s*jetstream\s*[:=]?\s*\{/m.test(conf)) p('nats.conf: no jetstream block, and revocation.nats needs JetStream');
  const monitor = value('http')?.split(':').pop();
  const probed = s.healthTest?.join(' ').match(/\/\/(?:127\.0\.0\.1|localhost):(\d+)\//)?.[1];
  if (probed !== undefined && probed !== monitor) p(`its healthcheck probes port ${probed}, not the monitoring port http: ${String(monitor)}`);

  // Files nats.conf names, as the container sees them; then nats-server -t on a copy that names the host paths.
  let mapped = conf;
  for (const key of ['cert_file', 'key_file', 'ca_file', 'store_dir']) {
    const v = value(key);
    if (v === undefined) continue;
    if (key === 'store_dir') requireWritable(ex, s, v, 'jetstream store_dir');
    else await requireFile(ex, s, v, `nats.conf ${key}`);
    const loc = locate(ex, s, v);
    const host = loc.kind === 'volume' ? path.join(ex.volumes, loc.volume, loc.rel) : loc.kind === 'bind' ? loc.host : path.join(ctx.work, 'nats-scratch', v);
    mapped = mapped.replace(new RegExp(`^(\\s*${key}\\s*[:=]?\\s*)"?${v.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}"?`, 'm'), `$1"${host}"`);
  }
  const caFile = value('ca_file');
  // The clients are the sidecars: their CA must be in ca_file, or their certificates are refused.
  const client = [...ex.sidecars].find(([, c]) => c.identity.kind === 'dev');
  if (caFile && client) {
    const clients = locate(ex, s, caFile);
    const bundle = clients.kind === 'volume' ? await readFile(path.join(ex.volumes, clients.volume, clients.rel), 'utf8').catch(() => '') : '';
    const ca = await caPemOf(ex, ex.project.services.get(client[0])!, client[1].identity);
    if (ca && !bundle.includes(ca.trim())) p(`nats.conf ca_file ${caFile} does not hold the trust domain's CA: the sidecars' client certificates would be refused`);
  }
  if (!ctx.tools.natsServer) return;
  const natsServer = ctx.tools.natsServer;
  const problem = await memo(ctx, `nats-server ${mapped}`, async () => {
    const confFile = path.join(ctx.work, `nats-${createHash('sha256').update(mapped).digest('hex').slice(0, 12)}.conf`);
    await writeFile(confFile, mapped);
    try {
      await run(natsServer, ['-t', '-c', confFile], { timeout: 30_000 });
      return undefined;
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; message: string };
      return (e.stderr || e.stdout || e.message).trim().split('\n')[0];
    }
  });
  if (problem) p(`nats-server -t: ${problem}`);
}

async function nodeCheck(ctx: Context, text: string): Promise<string | undefined> {
  return memo(ctx, `node --check ${text}`, async () => {
    const file = path.join(ctx.work, `agent-${createHash('sha256').update(text).digest('hex').slice(0, 12)}.mjs`);
    await writeFile(file, text);
    try {
      await run(process.execPath, ['--check', file], { timeout: 30_000 });
      return undefined;
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      return (e.stderr || e.message).trim().split('\n').find((l) => /Error/.test(l)) ?? 'syntax error';
    }
  });
}

/** Volumes holding private keys or tokens that only Sigil may read. */
function keyVolumes(ex: Example): Set<string> {
  const out = new Set<string>();
  const add = (s: ComposeService, file: string | undefined): void => {
    const loc = file === undefined ? undefined : locate(ex, s, file);
    if (loc?.kind === 'volume') out.add(loc.volume);
  };
  for (const [name, c] of ex.sidecars) {
    const s = ex.project.services.get(name)!;
    if (c.identity.kind === 'dev') add(s, c.identity.caDir);
    add(s, c.admin.tokenFile);
  }
  if (ex.broker) {
    const s = ex.project.services.get(ex.broker.service)!;
    const b = ex.broker.config;
    if (b.identity.kind === 'dev') add(s, b.identity.caDir);
    add(s, b.signingKeys);
    add(s, b.admin.tokenFile);
    for (const i of b.subjectIssuers) if (i.jwks) add(s, path.posix.dirname(i.jwks)); // the dev IdP's private key sits next to it
  }
  return out;
}

async function checkAgents(ex: Example, ctx: Context): Promise<void> {
  const agents = servicesWithRole(ex, 'agent');
  if (agents.length === 0) ex.problems.push('no agent service (network_mode: service:<sidecar>)');
  const keys = keyVolumes(ex);
  for (const s of agents) {
    const p = (m: string): void => void ex.problems.push(`service ${s.name}: ${m}`);
    const sidecar = s.networkMode!.slice('service:'.length);
    const c = ex.sidecars.get(sidecar);
    if (!c) {
      p(`shares the network namespace of ${sidecar}, which is not a sidecar`);
      continue;
    }
    for (const m of s.mounts) if (m.kind === 'volume' && keys.has(m.source)) p(`mounts volume ${m.source}, which holds keys or tokens only Sigil may read`);
    const script = (s.command ?? []).find((a) => /\.m?js$/.test(a));
    const text = script === undefined ? undefined : boundText(ex, s, script, 'script');
    if (script === undefined) p('runs no .mjs/.js script');
    else if (text !== undefined) {
      const problem = await nodeCheck(ctx, text);
      if (problem) p(`${script}: node --check: ${problem}`);
    }
    const env = s.environment;
    const expect = (name: string, actual: string | undefined, wanted: string | undefined, what: string): void => {
      if (actual !== undefined && actual !== wanted) p(`${name}=${actual}, but ${sidecar}'s ${what} is ${String(wanted)}`);
    };
    expect('SIDECAR_OUTBOUND', env.SIDECAR_OUTBOUND, c.outbound && hostPort(c.outbound.listen), 'outbound.listen');
    expect('SIDECAR_BUS', env.SIDECAR_BUS, c.bus && hostPort(c.bus.local), 'bus.local');
    if (c.inbound) {
      const upstream = new URL(c.inbound.upstream);
      if (env.LISTEN === undefined) p(`sets no LISTEN, and ${sidecar} forwards to ${c.inbound.upstream}`);
      expect('LISTEN', env.LISTEN, upstream.host, 'inbound.upstream');
    }
    for (const [name, value] of Object.entries(env)) {
      if (name.endsWith('_HOST') && !(c.outbound?.routes ?? []).some((r) => r.host === value.toLowerCase())) p(`${name}=${value} is no route of ${sidecar}'s outbound`);
    }
    if (env.USER_TOKEN_FILE !== undefined) {
      const loc = locate(ex, s, env.USER_TOKEN_FILE);
      const login = ex.produced.find((x) => ex.loginScript && x.service === ex.loginScript.service);
      if (!login || loc.kind !== 'volume' || loc.volume !== login.volume || loc.rel !== login.rel) p(`USER_TOKEN_FILE ${env.USER_TOKEN_FILE} is not the file user-login writes`);
      else await requireFile(ex, s, env.USER_TOKEN_FILE, 'USER_TOKEN_FILE');
    }
  }
}

async function checkPrometheus(ex: Example, ctx: Context): Promise<void> {
  const [s] = servicesWithRole(ex, 'prometheus');
  if (!s) {
    ex.problems.push('no prometheus service');
    return;
  }
  const file = (s.command ?? []).find((a) => a.startsWith('--config.file='))?.slice('--config.file='.length) ?? PROMETHEUS_DEFAULT_CONFIG;
  const text = boundText(ex, s, file, 'config');
  if (text === undefined) return;
  const p = (m: string): void => void ex.problems.push(`service ${s.name}: ${file}: ${m}`);
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    p(`YAML: ${(err as Error).message.split('\n')[0]}`);
    return;
  }
  // What must be scraped: every sidecar's and the broker's admin listener.
  const wanted = new Map<string, string>();
  for (const [name, c] of ex.sidecars) wanted.set(`${name}:${c.admin.listen.port}`, name);
  if (ex.broker) wanted.set(`${ex.broker.service}:${ex.broker.config.admin.listen.port}`, ex.broker.service);
  const scraped = new Set<string>();
  for (const job of objs(get(doc, 'scrape_configs'))) {
    const metricsPath = str(job.metrics_path) ?? '/metrics';
    for (const sc of objs(job.static_configs)) {
      for (const target of Array.isArray(sc.targets) ? sc.targets.map(String) : []) {
        scraped.add(target);
        const [host] = target.split(':');
        if (!wanted.has(target)) {
          p(`target ${target} is no Sigil admin listener (${[...wanted.keys()].join(', ')})`);
          continue;
        }
        if (metricsPath !== '/metrics') p(`job ${String(job.job_name)} scrapes ${metricsPath}, not /metrics`);
        const listen = ex.broker && host === ex.broker.service ? ex.broker.config.admin.listen : ex.sidecars.get(host!)?.admin.listen;
        if (listen && isLoopback(listen.host)) p(`target ${target}: ${host}'s admin.listen is ${hostPort(listen)}, loopback: Prometheus cannot reach it`);
      }
    }
  }
  for (const [target, name] of wanted) if (!scraped.has(target)) p(`does not scrape ${name}'s admin listener ${target}`);
  if (!ctx.tools.promtool) return;
  const promtool = ctx.tools.promtool;
  const problem = await memo(ctx, `promtool ${text}`, async () => {
    const copy = path.join(ctx.work, `prometheus-${createHash('sha256').update(text).digest('hex').slice(0, 12)}.yml`);
    await writeFile(copy, text);
    try {
      await run(promtool, ['check', 'config', copy], { timeout: 30_000 });
      return undefined;
    } catch (err) {
      const e = err as { stderr?: string; stdout?: string; message: string };
      return `${e.stdout ?? ''}${e.stderr ?? ''}`.trim().split('\n').filter((l) => /FAILED|error/i.test(l)).join(' | ') || e.message;
    }
  });
  if (problem) p(`promtool check config: ${problem}`);
}

function checkReadme(ex: Example): void {
  const readme = ex.files.get('README.md');
  if (readme === undefined) {
    ex.problems.push('README.md: missing');
    return;
  }
  const p = (m: string): void => void ex.problems.push(`README.md: ${m}`);
  for (const file of ex.files.keys()) if (file !== 'README.md' && !readme.includes(path.posix.basename(file))) p(`does not describe ${file}`);
  if (!readme.includes('docker compose up --build')) p('does not say `docker compose up --build`');
  // Every `docker compose exec SERVICE … revoke --admin URL --token-file FILE` must name that service's admin port and token file.
  const commands = readme.replace(/\\\n\s*/g, ' ').split('\n').filter((l) => /docker compose exec \S+ .*\brevoke\b/.test(l));
  if (commands.length === 0) p('shows no `docker compose exec … revoke` command');
  for (const line of commands) {
    const service = /docker compose exec (\S+)/.exec(line)![1]!;
    const admin = ex.broker && service === ex.broker.service ? ex.broker.config.admin : ex.sidecars.get(service)?.admin;
    if (!admin) {
      p(`\`docker compose exec ${service}\`: no Sigil service ${service}`);
      continue;
    }
    const port = /--admin\s+http:\/\/(?:127\.0\.0\.1|localhost):(\d+)/.exec(line)?.[1];
    if (Number(port) !== admin.listen.port) p(`\`docker compose exec ${service} … revoke --admin\` uses port ${String(port)}, not ${service}'s admin port ${admin.listen.port}`);
    const token = /--token-file\s+(\S+)/.exec(line)?.[1];
    if (admin.tokenFile !== undefined && token !== admin.tokenFile) p(`\`docker compose exec ${service} … revoke\` uses --token-file ${String(token)}, not ${service}'s admin.tokenFile ${admin.tokenFile}`);
  }
}

// ---------------------------------------------------------------------------------------------

/** One context for the whole file: ca-init's runs and the validators' verdicts are shared by both tests. */
async function setup(t: Test): Promise<{ files: Files; ctx: Context }> {
  const fail = (m: string): void => void t.fail(m);
  const tools: Tools = {};
  const promtool = await findTool('promtool', 'checking examples/compose/prometheus/prometheus.yml', 'apt-get install --no-install-recommends prometheus', fail);
  const natsServer = await findTool('nats-server', 'checking examples/compose/nats/nats.conf', 'apt-get install --no-install-recommends nats-server', fail);
  if (promtool) tools.promtool = promtool;
  if (natsServer) tools.natsServer = natsServer;
  return { files: await readTree(COMPOSE_DIR), ctx: { work: await tempDir(t, 'sigil-compose-'), tools, cache: new Map(), runs: 0 } };
}

const { files, ctx } = await setup(t);

t.test('examples/compose is consistent', async (t) => {
  for (const f of ['docker-compose.yml', 'README.md', 'sigil/planner.yaml', 'sigil/researcher.yaml', 'sigil/broker.yaml', 'nats/nats.conf', 'prometheus/prometheus.yml', 'init/init.sh']) t.ok(files.has(f), `${f} exists`);
  const { problems, example } = await checkExample(files, ctx);
  t.strictSame(problems, [], 'no problems');
  if (!example) return;
  t.strictSame([...example.project.services.keys()].sort(), ['broker', 'ca-init', 'nats', 'planner', 'prometheus', 'researcher', 'sidecar-planner', 'sidecar-researcher', 'user-login'], 'every service parsed');
  t.strictSame([...example.sidecars.keys()].sort(), ['sidecar-planner', 'sidecar-researcher'], 'both sidecar configs loaded');
  const planner = example.sidecars.get('sidecar-planner')!;
  t.match(planner, { configPath: '/etc/sigil/sigil.yaml', admin: { listen: { host: '0.0.0.0', port: 15000 }, tokenFile: '/var/lib/sigil/admin/token' }, policy: { cedar: '/etc/sigil/policies/agents.cedar' } }, 'SIGIL_ADMIN_LISTEN applied; paths resolved in the container');
  t.match(planner.outbound?.routes, [{ host: 'researcher', address: { host: 'sidecar-researcher', port: 8443 }, spiffeId: 'spiffe://example.org/agent/researcher', exchange: { scope: ['research.read'] } }]);
  t.equal(example.broker?.config.listen.port, 8444);
  t.ok(example.initService === 'ca-init' && (await exists(path.join(example.volumes, 'sigil-ca', 'ca.key'))), 'ca-init ran and wrote the CA into its volume');
});

t.test('each check fails on a broken copy', async (t) => {
  const C = COMPOSE_FILE;
  const realDockerfile = await readFile(path.join(REPO, 'Dockerfile'), 'utf8').catch(() => '');
  const cases: { name: string; files: () => Files; dockerfile?: () => string; expect: RegExp }[] = [
    // Compose
    { name: 'YAML syntax error', files: () => editText(files, C, 'name: sigil-example', 'name: [sigil-example'), expect: /docker-compose\.yml: YAML:/ },
    { name: 'no image, no build', files: () => editText(files, C, '    image: prom/prometheus:v2.55.1\n', ''), expect: /service prometheus: has neither image nor build/ },
    { name: 'port syntax', files: () => editText(files, C, '"127.0.0.1:9090:9090"', '"127.0.0.1:9090:prometheus"'), expect: /service prometheus: ports: "127\.0\.0\.1:9090:prometheus" is not/ },
    { name: 'no prometheus service', files: () => editText(files, C, 'image: prom/prometheus:v2.55.1', 'image: grafana/agent:v0.40.0'), expect: /no prometheus service/ },
    { name: 'build context missing', files: () => editText(files, C, 'context: ../..', 'context: ../../nowhere'), expect: /build context \.\.\/\.\.\/nowhere does not exist/ },
    { name: 'Dockerfile missing', files: () => editText(files, C, 'dockerfile: Dockerfile', 'dockerfile: Dockerfile.missing'), expect: /has no Dockerfile\.missing/ },
    { name: 'depends_on a missing service', files: () => editText(files, C, 'broker: { condition: service_started }', 'brokers: { condition: service_started }'), expect: /service prometheus: depends_on brokers: no such service/ },
    { name: 'unknown condition', files: () => editText(files, C, 'broker: { condition: service_started }', 'broker: { condition: service_ready }'), expect: /depends_on broker: unknown condition service_ready/ },
    { name: 'service_healthy without a healthcheck', files: () => editText(files, C, 'broker: { condition: service_started }', 'researcher: { condition: service_healthy }'), expect: /depends_on researcher: service_healthy, but researcher has no healthcheck/ },
    { name: 'nats without its healthcheck', files: () => editText(files, C, /    healthcheck:\n      test: \[ "CMD", "wget"[^\n]*\n(?: {6}\w+: \S+\n)+/, ''), expect: /depends_on nats: service_healthy, but nats has no healthcheck/ },
    { name: 'sidecar healthcheck disabled', files: () => editText(files, C, '    healthcheck: { interval: 2s, timeout: 3s, retries: 30 }   # the image', '    healthcheck: { disable: true }   # the image'), expect: /service planner: depends_on sidecar-planner: service_healthy, but sidecar-planner has no healthcheck/ },
    { name: 'image without HEALTHCHECK', files: () => files, dockerfile: () => realDockerfile.replace(/^HEALTHCHECK\b.*$/m, ''), expect: /service planner: depends_on sidecar-planner: service_healthy, but sidecar-planner has no healthcheck/ },
    { name: 'image without SIGIL_CONFIG', files: () => files, dockerfile: () => realDockerfile.replace(/\bSIGIL_CONFIG\b/g, 'CONFIG'), expect: /service sidecar-planner: no --config and no SIGIL_CONFIG/ },
    { name: 'completion of a service that restarts', files: () => editText(files, C, 'nats: { condition: service_healthy }', 'nats: { condition: service_completed_successfully }'), expect: /service_completed_successfully, but nats restarts/ },
    { name: 'undeclared volume', files: () => editText(files, C, '  nats-data:\n', ''), expect: /mounts volume nats-data, which is not declared/ },
    { name: 'bind source missing', files: () => editText(files, C, './nats/nats.conf:', './nats/server.conf:'), expect: /bind source \.\/nats\/server\.conf does not exist/ },
    { name: 'network_mode to a missing service', files: () => editText(files, C, 'service:sidecar-planner', 'service:planner-sidecar'), expect: /network_mode service:planner-sidecar: no such service/ },
    { name: 'network_mode to a shared namespace', files: () => editText(files, C, 'service:sidecar-researcher', 'service:planner'), expect: /service researcher: network_mode service:planner: that service does not have a network namespace of its own/ },
    { name: 'network_mode with a hostname', files: () => editText(files, C, '    network_mode: "service:sidecar-planner"\n', '    network_mode: "service:sidecar-planner"\n    hostname: planner\n'), expect: /service planner: sets networks or hostname together with network_mode/ },
    { name: 'agent publishes a port', files: () => editText(files, C, '    network_mode: "service:sidecar-researcher"\n', '    network_mode: "service:sidecar-researcher"\n    ports: [ "3000:3000" ]\n'), expect: /service researcher: publishes ports but shares the network namespace/ },
    { name: 'host port twice', files: () => editText(files, C, '127.0.0.1:15100:15000', '127.0.0.1:15000:15000'), expect: /publishes 127\.0\.0\.1:15000, as sidecar-planner does/ },
    // ca-init
    { name: 'ca-init not idempotent', files: () => editText(files, 'init/init.sh', ' --if-missing', ''), expect: /init\.sh: second run .* failed/ },
    { name: 'ca-init replaces the CA', files: () => editText(files, 'init/init.sh', ' --if-missing', ' --force'), expect: /init\.sh: second run .* replaced the CA/ },
    { name: 'ca-init restarts', files: () => editText(files, C, '    user: "0:0"\n', '    user: "0:0"\n    restart: unless-stopped\n'), expect: /service ca-init: restart unless-stopped: a one-shot must not restart/ },
    { name: 'no CA init at all', files: () => editText(files, 'init/init.sh', '$SIGIL ca init ', '$SIGIL ca setup '), expect: /no service runs a script with `ca init`/ },
    { name: 'NATS certificate from another CA', files: () => editText(files, 'init/init.sh', 'node "$(dirname "$0")/nats-cert.mjs" "$CA_DIR"', '$SIGIL ca init --trust-domain other.example --dir "$NATS_TLS_DIR/other-ca" --if-missing\nnode "$(dirname "$0")/nats-cert.mjs" "$NATS_TLS_DIR/other-ca"'), expect: /the NATS server certificate is not signed by the CA in the trust bundle[\s\S]*ca_file \/etc\/nats\/tls\/clients-ca\.pem does not hold the trust domain's CA|ca_file \/etc\/nats\/tls\/clients-ca\.pem does not hold the trust domain's CA[\s\S]*the NATS server certificate is not signed by the CA in the trust bundle/ },
    { name: 'init writes outside its volumes', files: () => editText(files, 'init/init.sh', 'ADMIN_DIR:-/var/lib/sigil/admin}', 'ADMIN_DIR:-/var/lib/sigil-admin}'), expect: /ADMIN_DIR=\/var\/lib\/sigil-admin is on no writable named volume/ },
    { name: 'init script fails', files: () => editText(files, 'init/init.sh', '--trust-domain example.org', '--trust-domain "not a domain"'), expect: /init\.sh: first run failed/ },
    { name: 'NATS certificate for another name', files: () => editText(files, 'init/init.sh', '"$NATS_TLS_DIR" nats', '"$NATS_TLS_DIR" nats-server'), expect: /bus\.nats\.servers: the NATS server certificate does not name nats/ },
    // Sidecar configs
    { name: 'sidecar config invalid', files: () => editText(files, 'sigil/planner.yaml', 'ttl: 15m', 'ttl: 15x'), expect: /sidecar-planner: \/etc\/sigil\/sigil\.yaml does not load: .*identity\.dev\.ttl: invalid duration/ },
    { name: 'config not mounted', files: () => editText(files, C, './sigil/researcher.yaml:/etc/sigil/sigil.yaml', './sigil/researcher.yaml:/etc/sigil/researcher.yaml'), expect: /sidecar-researcher: config \/etc\/sigil\/sigil\.yaml is not a file of examples\/compose/ },
    { name: 'admin override on loopback', files: () => editText(files, C, 'SIGIL_ADMIN_LISTEN: 0.0.0.0:15000   #', 'SIGIL_ADMIN_LISTEN: 127.0.0.1:15000   #'), expect: /target sidecar-planner:15000: sidecar-planner's admin\.listen is 127\.0\.0\.1:15000, loopback/ },
    { name: 'a SIGIL_* variable sigil run does not read', files: () => editText(files, C, '      SIGIL_ADMIN_LISTEN: 0.0.0.0:15000\n    healthcheck: { interval: 2s, timeout: 3s, retries: 30 }\n    ports:\n      - "127.0.0.1:15100', '      SIGIL_ADMIN_LISTEN: 0.0.0.0:15000\n      SIGIL_SOMETHING: x\n    healthcheck: { interval: 2s, timeout: 3s, retries: 30 }\n    ports:\n      - "127.0.0.1:15100'), expect: /environment SIGIL_SOMETHING: not an override this command reads/ },
    { name: 'admin open without a token', files: () => editText(files, 'sigil/researcher.yaml', 'admin: { tokenFile: /var/lib/sigil/admin/token }', 'admin: {}'), expect: /sidecar-researcher: .*admin\.listen: 0\.0\.0\.0 is reachable beyond loopback: set admin\.tokenFile too .*\(from SIGIL_ADMIN_LISTEN\)/ },
    { name: 'token file on a tmpfs', files: () => editText(files, 'sigil/planner.yaml', 'tokenFile: /var/lib/sigil/admin/token', 'tokenFile: /tmp/admin-token'), expect: /sidecar-planner: admin\.tokenFile \/tmp\/admin-token is on a tmpfs, which starts empty/ },
    { name: 'policy does not compile', files: () => editText(files, 'policies/agents.cedar', 'Action::"connect"', 'Action::"conect"'), expect: /agents\.cedar does not compile/ },
    { name: 'policy file missing', files: () => editText(files, 'sigil/planner.yaml', './policies/agents.cedar', './policies/planner.cedar'), expect: /policy \/etc\/sigil\/policies\/planner\.cedar is not a file of examples\/compose/ },
    { name: 'CA volume not mounted', files: () => editText(files, C, '      - sigil-ca:/var/lib/sigil/ca:ro\n      - admin-token:/var/lib/sigil/admin:ro\n      - broker-jwks:/var/lib/sigil/broker-jwks:ro\n    depends_on:\n      ca-init: { condition: service_completed_successfully }\n      nats: { condition: service_healthy }\n      broker: { condition: service_healthy }\n\n  planner:', '      - admin-token:/var/lib/sigil/admin:ro\n      - broker-jwks:/var/lib/sigil/broker-jwks:ro\n    depends_on:\n      ca-init: { condition: service_completed_successfully }\n      nats: { condition: service_healthy }\n      broker: { condition: service_healthy }\n\n  planner:'), expect: /sidecar-planner: identity\.dev\.caDir file \/var\/lib\/sigil\/ca\/ca\.pem is on no mount/ },
    { name: 'token file nobody writes', files: () => editText(files, 'sigil/planner.yaml', 'tokenFile: /var/lib/sigil/admin/token', 'tokenFile: /var/lib/sigil/admin/admin-token'), expect: /admin\.tokenFile \/var\/lib\/sigil\/admin\/admin-token is not in volume admin-token after ca-init/ },
    { name: 'does not wait for ca-init', files: () => editText(files, C, /(  sidecar-planner:\n(?:.*\n)*?)    depends_on:\n(?: {6}.*\n)+/, '$1'), expect: /sidecar-planner: identity\.dev\.caDir file .* is written by ca-init, but the service does not wait for it/ },
    { name: 'audit on the read-only root', files: () => editText(files, 'sigil/researcher.yaml', 'path: /tmp/audit.jsonl', 'path: /var/log/sigil/audit.jsonl'), expect: /sidecar-researcher: audit\.path folder \/var\/log\/sigil is not writable/ },
    { name: 'route to a wrong port', files: () => editText(files, 'sigil/planner.yaml', 'address: sidecar-researcher:8443', 'address: sidecar-researcher:9443'), expect: /outbound\.routes researcher: address sidecar-researcher:9443, but sidecar-researcher's inbound\.listen is 0\.0\.0\.0:8443/ },
    { name: 'route to a missing service', files: () => editText(files, 'sigil/planner.yaml', 'address: sidecar-researcher:8443', 'address: researcher-sidecar:8443'), expect: /address researcher-sidecar:8443: no service researcher-sidecar/ },
    { name: 'route to an agent, not its sidecar', files: () => editText(files, 'sigil/planner.yaml', 'address: sidecar-researcher:8443', 'address: researcher:3000'), expect: /researcher is not a sidecar with an inbound listener/ },
    { name: 'route expects another SPIFFE ID', files: () => editText(files, 'sigil/researcher.yaml', 'spiffe://example.org/agent/researcher', 'spiffe://example.org/agent/analyst'), expect: /spiffeId spiffe:\/\/example\.org\/agent\/researcher, but sidecar-researcher is spiffe:\/\/example\.org\/agent\/analyst/ },
    { name: 'inbound on loopback', files: () => editText(files, 'sigil/researcher.yaml', 'listen: 0.0.0.0:8443', 'listen: 127.0.0.1:8443'), expect: /inbound\.listen 127\.0\.0\.1:8443 is loopback: unreachable from sidecar-planner/ },
    { name: 'exchange scope above the ceiling', files: () => editText(files, 'sigil/planner.yaml', 'exchange: { scope: research.read }', 'exchange: { scope: research.write }'), expect: /exchange scope research\.write is above the broker's ceiling/ },
    { name: 'exchange scope the user lacks', files: () => editText(files, 'init/user-login.sh', '--scope "research.read research.write"', '--scope "mail.read"'), expect: /holds none of research\.read: the broker answers invalid_scope/ },
    { name: 'broker URL on a wrong port', files: () => editText(files, 'sigil/planner.yaml', 'https://broker:8444/token', 'https://broker:8443/token'), expect: /delegation\.broker\.url https:\/\/broker:8443\/token, but the broker listens on port 8444/ },
    { name: 'broker SPIFFE ID mismatch', files: () => editText(files, 'sigil/planner.yaml', 'spiffeId: spiffe://example.org/broker }', 'spiffeId: spiffe://example.org/sts }'), expect: /delegation\.broker\.spiffeId spiffe:\/\/example\.org\/sts, but the broker is spiffe:\/\/example\.org\/broker/ },
    { name: 'broker URL not https', files: () => editText(files, 'sigil/planner.yaml', 'url: "https://broker:8444/token"', 'url: "http://broker:8444/token"'), expect: /delegation\.broker\.url|is not https/ },
    { name: 'broker URL to another service', files: () => editText(files, 'sigil/planner.yaml', 'url: "https://broker:8444/token"', 'url: "https://nats:8444/token"'), expect: /delegation\.broker\.url https:\/\/nats:8444\/token: nats is not the broker service \(broker\)/ },
    { name: 'issuer mismatch', files: () => editText(files, 'sigil/researcher.yaml', 'issuer: https://broker.example.org', 'issuer: https://sts.example.org'), expect: /sidecar-researcher: delegation\.issuer https:\/\/sts\.example\.org, but the broker issues as/ },
    { name: 'JWKS not the broker\'s', files: () => editText(files, 'sigil/researcher.yaml', 'jwks: /var/lib/sigil/broker-jwks/jwks.json', 'jwks: /var/lib/sigil/broker-jwks/keys.json'), expect: /delegation\.jwks \/var\/lib\/sigil\/broker-jwks\/keys\.json is not the file the broker writes/ },
    { name: 'JWKS before the broker is up', files: () => editText(files, C, '      broker: { condition: service_healthy }\n\n  planner:', '      broker: { condition: service_started }\n\n  planner:'), expect: /sidecar-planner: delegation\.jwks .* is written by broker, but the service does not wait for it/ },
    { name: 'bus to a wrong NATS port', files: () => editText(files, 'sigil/planner.yaml', 'servers: [ "tls://nats:4222" ]', 'servers: [ "tls://nats:4223" ]'), expect: /sidecar-planner: bus\.nats\.servers: tls:\/\/nats:4223: nats\.conf listens on port 4222/ },
    { name: 'bus to a missing host', files: () => editText(files, 'sigil/researcher.yaml', 'servers: [ "tls://nats:4222" ]', 'servers: [ "tls://nats-server:4222" ]'), expect: /bus\.nats\.servers: tls:\/\/nats-server:4222: nats-server is not the nats service/ },
    { name: 'broker revocations to a wrong port', files: () => editText(files, 'sigil/broker.yaml', 'servers: [ "tls://nats:4222" ]', 'servers: [ "tls://nats:422" ]'), expect: /service broker: revocation\.nats\.servers: tls:\/\/nats:422: nats\.conf listens on port 4222/ },
    // Broker
    { name: 'broker config invalid', files: () => editText(files, 'sigil/broker.yaml', 'maxTtl: 5m', 'maxTtl: 5 min'), expect: /service broker: \/etc\/sigil\/broker\.yaml does not load: .*maxTtl: invalid duration/ },
    { name: 'broker keys not persistent', files: () => editText(files, C, '      - broker-keys:/var/lib/sigil/broker-keys\n      - broker-jwks:/var/lib/sigil/broker-jwks\n    depends_on:\n      ca-init: { condition: service_completed_successfully }\n      nats', '      - broker-jwks:/var/lib/sigil/broker-jwks\n    depends_on:\n      ca-init: { condition: service_completed_successfully }\n      nats'), expect: /signingKeys \/var\/lib\/sigil\/broker-keys is not writable/ },
    { name: 'broker healthcheck on another port', files: () => editText(files, C, 'http://127.0.0.1:15010/readyz', 'http://127.0.0.1:15000/readyz'), expect: /service broker: its healthcheck probes port 15000, not admin\.listen's 15010/ },
    { name: 'a sidecar variable on the broker', files: () => editText(files, C, '    command: [ "broker", "--config", "/etc/sigil/broker.yaml" ]\n', '    command: [ "broker", "--config", "/etc/sigil/broker.yaml" ]\n    environment: { SIGIL_ADMIN_LISTEN: "0.0.0.0:15010" }\n'), expect: /service broker: environment SIGIL_ADMIN_LISTEN: not an override this command reads/ },
    { name: 'broker does not wait for NATS', files: () => editText(files, C, '      ca-init: { condition: service_completed_successfully }\n      nats: { condition: service_healthy }\n\n  # The planner', '      ca-init: { condition: service_completed_successfully }\n\n  # The planner'), expect: /service broker: revocation\.nats\.servers: does not wait for nats to be healthy/ },
    { name: 'user token for another audience', files: () => editText(files, 'init/user-login.sh', '--aud sigil-broker', '--aud broker'), expect: /mints tokens for --aud broker, which no subjectIssuers entry/ },
    { name: 'login health not about the token', files: () => editText(files, C, '"test", "-s", "/var/lib/sigil/user/token"', '"test", "-d", "/var/lib/sigil/user"'), expect: /user-login: its healthcheck does not test \/var\/lib\/sigil\/user\/token/ },
    { name: 'token written to a read-only volume', files: () => editText(files, C, '      - dev-idp:/var/lib/sigil/dev-idp:ro\n      - user-token:/var/lib/sigil/user\n', '      - dev-idp:/var/lib/sigil/dev-idp:ro\n      - user-token:/var/lib/sigil/user:ro\n'), expect: /service user-login: TOKEN_FILE \/var\/lib\/sigil\/user\/token is on no writable named volume/ },
    // NATS
    { name: 'nats.conf invalid', files: () => editText(files, 'nats/nats.conf', 'max_payload: 2MB', 'max_payload: {'), expect: /service nats: nats-server -t:/ },
    { name: 'nats.conf without client verification', files: () => editText(files, 'nats/nats.conf', '  verify: true\n', ''), expect: /tls without verify: true/ },
    { name: 'nats.conf without TLS', files: () => editText(files, 'nats/nats.conf', /tls \{[^}]*\}\n/, ''), expect: /nats\.conf has no tls block, and Sigil always connects with TLS/ },
    { name: 'nats.conf without JetStream', files: () => editText(files, 'nats/nats.conf', /jetstream \{[^}]*\}\n/, ''), expect: /no jetstream block, and revocation\.nats needs JetStream/ },
    { name: 'nats certificate file missing', files: () => editText(files, 'nats/nats.conf', '/etc/nats/tls/server.pem', '/etc/nats/tls/nats.pem'), expect: /nats\.conf cert_file \/etc\/nats\/tls\/nats\.pem is not in volume nats-tls/ },
    { name: 'nats healthcheck on another port', files: () => editText(files, C, 'http://127.0.0.1:8222/healthz', 'http://127.0.0.1:8080/healthz'), expect: /service nats: its healthcheck probes port 8080, not the monitoring port/ },
    // Agents
    { name: 'agent script syntax error', files: () => editText(files, 'agents/planner.mjs', 'let round = 0;', 'let round = ;'), expect: /service planner: \/agents\/planner\.mjs: node --check: SyntaxError/ },
    { name: 'agent calls the wrong outbound port', files: () => editText(files, C, 'SIDECAR_OUTBOUND: 127.0.0.1:15001', 'SIDECAR_OUTBOUND: 127.0.0.1:15003'), expect: /SIDECAR_OUTBOUND=127\.0\.0\.1:15003, but sidecar-planner's outbound\.listen is 127\.0\.0\.1:15001/ },
    { name: 'agent on the wrong bus address', files: () => editText(files, C, '      LISTEN: 127.0.0.1:3000\n      SIDECAR_BUS: 127.0.0.1:15002', '      LISTEN: 127.0.0.1:3000\n      SIDECAR_BUS: 127.0.0.1:4222'), expect: /service researcher: SIDECAR_BUS=127\.0\.0\.1:4222, but sidecar-researcher's bus\.local is 127\.0\.0\.1:15002/ },
    { name: 'agent listens where the sidecar does not forward', files: () => editText(files, C, 'LISTEN: 127.0.0.1:3000', 'LISTEN: 127.0.0.1:8080'), expect: /LISTEN=127\.0\.0\.1:8080, but sidecar-researcher's inbound\.upstream is 127\.0\.0\.1:3000/ },
    { name: 'agent calls a host with no route', files: () => editText(files, C, 'RESEARCHER_HOST: researcher', 'RESEARCHER_HOST: analyst'), expect: /RESEARCHER_HOST=analyst is no route of sidecar-planner's outbound/ },
    { name: 'agent reads another token file', files: () => editText(files, C, 'USER_TOKEN_FILE: /var/lib/sigil/user/token', 'USER_TOKEN_FILE: /var/lib/sigil/user/alice'), expect: /USER_TOKEN_FILE \/var\/lib\/sigil\/user\/alice is not the file user-login writes/ },
    { name: 'agent mounts key material', files: () => editText(files, C, '      - ./agents:/agents:ro\n      - user-token:/var/lib/sigil/user:ro', '      - ./agents:/agents:ro\n      - user-token:/var/lib/sigil/user:ro\n      - sigil-ca:/var/lib/sigil/ca:ro'), expect: /service planner: mounts volume sigil-ca, which holds keys or tokens only Sigil may read/ },
    { name: 'agent shares a non-sidecar namespace', files: () => editText(files, C, 'service:sidecar-researcher', 'service:nats'), expect: /service researcher: shares the network namespace of nats, which is not a sidecar/ },
    { name: 'agent does not say where to listen', files: () => editText(files, C, '      LISTEN: 127.0.0.1:3000\n', ''), expect: /service researcher: sets no LISTEN, and sidecar-researcher forwards to http:\/\/127\.0\.0\.1:3000/ },
    // Ports, Prometheus
    { name: 'published port on loopback only', files: () => editText(files, C, '127.0.0.1:15100:15000', '127.0.0.1:15100:15002'), expect: /sidecar-researcher: publishes container port 15002, which it binds on 127\.0\.0\.1 only/ },
    { name: 'published port nobody listens on', files: () => editText(files, C, '127.0.0.1:15100:15000', '127.0.0.1:15100:15009'), expect: /sidecar-researcher: publishes container port 15009, on which it does not listen/ },
    { name: 'scrape target on a wrong port', files: () => editText(files, 'prometheus/prometheus.yml', '"sidecar-planner:15000"', '"sidecar-planner:15001"'), expect: /target sidecar-planner:15001 is no Sigil admin listener/ },
    { name: 'a sidecar not scraped', files: () => editText(files, 'prometheus/prometheus.yml', /      - targets: \[ "sidecar-researcher:15000" \]\n.*\n/, ''), expect: /does not scrape sidecar-researcher's admin listener sidecar-researcher:15000/ },
    { name: 'scraping another path', files: () => editText(files, 'prometheus/prometheus.yml', '  - job_name: sigil-broker\n', '  - job_name: sigil-broker\n    metrics_path: /stats\n'), expect: /job sigil-broker scrapes \/stats, not \/metrics/ },
    { name: 'prometheus.yml invalid', files: () => editText(files, 'prometheus/prometheus.yml', 'scrape_interval: 5s', 'scrape_interval: 5x'), expect: /promtool check config:/ },
    // README
    { name: 'README misses a file', files: () => new Map(files).set('policies/extra.cedar', '// nothing\n'), expect: /README\.md: does not describe policies\/extra\.cedar/ },
    { name: 'README revokes on a wrong port', files: () => editText(files, 'README.md', 'revoke --admin http://127.0.0.1:15010', 'revoke --admin http://127.0.0.1:15000'), expect: /README\.md: `docker compose exec broker … revoke --admin` uses port 15000/ },
    { name: 'README revokes with another token file', files: () => editText(files, 'README.md', '--token-file /var/lib/sigil/admin/token --agent', '--token-file /run/secrets/admin --agent'), expect: /README\.md: `docker compose exec broker … revoke` uses --token-file \/run\/secrets\/admin/ },
    { name: 'README without the up command', files: () => editText(files, 'README.md', /docker compose up --build/g, 'docker compose up'), expect: /README\.md: does not say `docker compose up --build`/ },
  ];
  const needsTool: Record<string, keyof Tools> = { 'nats.conf invalid': 'natsServer', 'prometheus.yml invalid': 'promtool' };
  for (const c of cases) {
    const tool = needsTool[c.name];
    if (tool && !ctx.tools[tool]) {
      t.comment(`SKIPPED ${c.name}: ${tool} is missing`);
      continue;
    }
    let broken: Files;
    try {
      broken = c.files();
    } catch (err) {
      t.fail(`${c.name}: the mutation no longer applies: ${(err as Error).message}`);
      continue;
    }
    const { problems } = await checkExample(broken, ctx, c.dockerfile?.());
    t.match(problems.join('\n'), c.expect, c.name);
  }
});
