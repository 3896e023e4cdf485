// examples/kubernetes is documentation people apply to real clusters, so it is checked like code:
// every manifest parses and names itself; mounts name volumes of the pod; only the sigil
// container mounts the SPIFFE CSI volume, read-only; the ConfigMap's sigil.yaml loads with the
// Deployment's SPIFFE_ENDPOINT_SOCKET, and that socket is inside the CSI mount; every file
// sigil.yaml names is on a mount (ConfigMap keys exist; the policy compiles); the probes hit
// /readyz and /healthz on the port admin.listen binds, which the kubelet can reach; the Service
// exposes only sigil's inbound port; the SPIRE registration entry selects the Deployment's sigil
// container. Every check is also shown to fail on a broken copy of the files.
import { execFileSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import YAML, { parseAllDocuments } from 'yaml';
import { compileCedarPolicy } from '../../src/authz/index.js';
import { parseConfig, type SigilConfig } from '../../src/config/index.js';

const DIR = fileURLToPath(new URL('../../../examples/kubernetes/', import.meta.url));
const SIGIL_CONTAINER = 'sigil';
const CSI_DRIVER = 'csi.spiffe.io';

type Obj = Record<string, unknown>;
/** File name → text, for every file of examples/kubernetes (or a mutated copy). */
type Files = Map<string, string>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const objs = (v: unknown): Obj[] => (Array.isArray(v) ? v.filter(isObj) : []);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const get = (v: unknown, ...keys: string[]): unknown => keys.reduce<unknown>((o, k) => (isObj(o) ? o[k] : undefined), v);

interface Manifest {
  where: string;
  doc: Obj;
  kind: string;
  name: string;
  namespace: string;
}

/** What the rest of the checks need to know about a Deployment's sidecar. */
interface Sidecar {
  deployment: Manifest;
  podLabels: Obj;
  serviceAccount: string | undefined;
  container: Obj;
  configPath: string;
  socketEnv: string | undefined;
  config: SigilConfig;
}

async function readExamples(): Promise<Files> {
  const files: Files = new Map();
  for (const entry of await readdir(DIR, { withFileTypes: true })) {
    if (entry.isFile()) files.set(entry.name, await readFile(path.join(DIR, entry.name), 'utf8'));
  }
  return files;
}

function checkExamples(files: Files): { problems: string[]; manifests: Manifest[]; sidecars: Sidecar[] } {
  const problems: string[] = [];
  const manifests = parseManifests(files, problems);
  const deployments = manifests.filter((m) => m.kind === 'Deployment');
  if (deployments.length === 0) problems.push('no Deployment in examples/kubernetes');
  const sidecars: Sidecar[] = [];
  for (const d of deployments) {
    const sidecar = checkDeployment(d, manifests, problems);
    if (sidecar) sidecars.push(sidecar);
  }
  const services = manifests.filter((m) => m.kind === 'Service');
  if (services.length === 0) problems.push('no Service in examples/kubernetes');
  for (const s of services) checkService(s, sidecars, problems);
  checkRegistration(files.get('spire-registration.sh'), sidecars, problems);
  checkReadme(files, sidecars, problems);
  return { problems, manifests, sidecars };
}

function parseManifests(files: Files, problems: string[]): Manifest[] {
  const out: Manifest[] = [];
  for (const [file, text] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
    if (!/\.ya?ml$/.test(file)) continue;
    const docs = parseAllDocuments(text);
    if (docs.length === 0) problems.push(`${file}: no YAML document`);
    docs.forEach((d, i) => {
      const where = `${file} document ${i + 1}`;
      for (const e of [...d.errors, ...d.warnings]) problems.push(`${where}: YAML: ${e.message.split('\n')[0]}`);
      if (d.errors.length > 0) return;
      const doc = d.toJS() as unknown;
      if (!isObj(doc)) {
        problems.push(`${where}: not a mapping (an empty document?)`);
        return;
      }
      const apiVersion = str(doc.apiVersion);
      const kind = str(doc.kind);
      const name = str(get(doc, 'metadata', 'name'));
      if (!apiVersion) problems.push(`${where}: no apiVersion`);
      if (!kind) problems.push(`${where}: no kind`);
      if (!name) problems.push(`${where}: no metadata.name`);
      if (apiVersion && kind && name) {
        out.push({ where: `${file} (${kind} ${name})`, doc, kind, name, namespace: str(get(doc, 'metadata', 'namespace')) ?? 'default' });
      }
    });
  }
  return out;
}

/** Where a file seen by a container comes from: the mount, its volume, and a ConfigMap key's text. */
interface MountedFile {
  volume?: Obj;
  text?: string;
  problem?: string;
}

function mountedFile(file: string, container: Obj, volumes: Map<string, Obj>, manifests: Manifest[], namespace: string): MountedFile {
  const mount = objs(container.volumeMounts)
    .filter((m) => {
      const at = str(m.mountPath);
      return at !== undefined && (file === at || file.startsWith(at.endsWith('/') ? at : `${at}/`));
    })
    .sort((a, b) => String(b.mountPath).length - String(a.mountPath).length)[0];
  if (!mount) return { problem: `${file} is on no volume mount of the container` };
  const volume = volumes.get(str(mount.name) ?? '');
  if (!volume) return { problem: `${file}: its mount names no volume` };
  const rel = path.posix.relative(String(mount.mountPath), file);
  const cm = get(volume, 'configMap');
  if (!isObj(cm)) return { volume };
  let key = str(mount.subPath) ?? rel;
  const items = objs(cm.items);
  if (items.length > 0) {
    const item = items.find((it) => it.path === key);
    if (!item) return { volume, problem: `${file}: ConfigMap volume ${String(volume.name)} projects no item at ${key}` };
    key = String(item.key);
  }
  const configMap = manifests.find((m) => m.kind === 'ConfigMap' && m.name === cm.name && m.namespace === namespace);
  if (!configMap) return { volume, problem: `${file}: ConfigMap ${String(cm.name)} is not in the examples` };
  const text = str(get(configMap.doc, 'data', key));
  if (text === undefined) return { volume, problem: `${file}: ConfigMap ${configMap.name} has no key ${JSON.stringify(key)}` };
  return { volume, text };
}

const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || /^127\./.test(host);

function checkDeployment(d: Manifest, manifests: Manifest[], problems: string[]): Sidecar | undefined {
  const p = (message: string): void => void problems.push(`${d.where}: ${message}`);
  const pod = get(d.doc, 'spec', 'template', 'spec');
  if (!isObj(pod)) {
    p('no spec.template.spec');
    return undefined;
  }
  const podLabels = get(d.doc, 'spec', 'template', 'metadata', 'labels');
  const matchLabels = get(d.doc, 'spec', 'selector', 'matchLabels');
  if (!isObj(matchLabels) || Object.keys(matchLabels).length === 0) p('spec.selector.matchLabels is empty');
  else for (const [k, v] of Object.entries(matchLabels)) if (!isObj(podLabels) || podLabels[k] !== v) p(`the pod template lacks the selector's label ${k}=${String(v)}`);

  const containers = [...objs(pod.initContainers), ...objs(pod.containers)];
  if (objs(pod.containers).length === 0) p('no containers');
  const volumes = new Map(objs(pod.volumes).map((v) => [str(v.name) ?? '', v] as const));
  for (const c of containers) {
    const name = str(c.name);
    if (!name) p('a container has no name');
    if (!str(c.image)) p(`container ${name ?? '?'} has no image`);
    for (const m of objs(c.volumeMounts)) {
      if (!volumes.has(str(m.name) ?? '')) p(`container ${name ?? '?'}: volumeMount ${JSON.stringify(m.name)} names no volume of the pod`);
      if (!str(m.mountPath)) p(`container ${name ?? '?'}: volumeMount ${JSON.stringify(m.name)} has no mountPath`);
    }
  }
  const serviceAccount = str(pod.serviceAccountName);
  if (serviceAccount !== undefined && !manifests.some((m) => m.kind === 'ServiceAccount' && m.name === serviceAccount && m.namespace === d.namespace)) {
    p(`serviceAccountName ${serviceAccount}: no such ServiceAccount in the examples`);
  }

  const sigil = containers.find((c) => c.name === SIGIL_CONTAINER);
  if (!sigil) {
    p(`no container named ${SIGIL_CONTAINER}`);
    return undefined;
  }
  const sp = (message: string): void => p(`container ${SIGIL_CONTAINER}: ${message}`);
  const volumeOf = (m: Obj): Obj | undefined => volumes.get(str(m.name) ?? '');
  const isCsi = (v: Obj | undefined): boolean => get(v, 'csi', 'driver') === CSI_DRIVER;

  // The Workload API socket: a read-only SPIFFE CSI volume, mounted read-only by sigil alone.
  for (const v of volumes.values()) if (isCsi(v) && get(v, 'csi', 'readOnly') !== true) p(`volume ${String(v.name)}: the ${CSI_DRIVER} volume must be readOnly`);
  const csiMount = objs(sigil.volumeMounts).find((m) => isCsi(volumeOf(m)));
  if (!csiMount) sp(`mounts no ${CSI_DRIVER} CSI volume (the Workload API socket)`);
  else if (csiMount.readOnly !== true) sp(`the ${CSI_DRIVER} volume must be mounted read-only`);
  for (const c of containers) {
    if (c !== sigil && objs(c.volumeMounts).some((m) => isCsi(volumeOf(m)))) p(`container ${String(c.name)} mounts the Workload API socket: only the ${SIGIL_CONTAINER} container may`);
  }

  // Hardening the docs promise.
  const podSc = isObj(pod.securityContext) ? pod.securityContext : {};
  const sc = isObj(sigil.securityContext) ? sigil.securityContext : {};
  if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) !== true) sp('runAsNonRoot is not true');
  if (sc.readOnlyRootFilesystem !== true) sp('readOnlyRootFilesystem is not true');
  if (sc.allowPrivilegeEscalation !== false) sp('allowPrivilegeEscalation is not false');

  // sigil.yaml, from the --config argument, through its mount, to the ConfigMap key.
  const args = [...(Array.isArray(sigil.command) ? sigil.command : []), ...(Array.isArray(sigil.args) ? sigil.args : [])].map(String);
  const at = args.indexOf('--config');
  const configPath = at >= 0 ? args[at + 1] : undefined;
  if (configPath === undefined) {
    sp('no --config argument');
    return undefined;
  }
  const configFile = mountedFile(configPath, sigil, volumes, manifests, d.namespace);
  if (configFile.problem || configFile.text === undefined) {
    sp(configFile.problem ?? `${configPath} is not from a ConfigMap of the examples`);
    return undefined;
  }
  const socketEnv = str(objs(sigil.env).find((e) => e.name === 'SPIFFE_ENDPOINT_SOCKET')?.value);
  let config: SigilConfig;
  try {
    // Only the Deployment's environment counts, not the test runner's.
    config = parseConfig(configFile.text, 'yaml', configPath, { env: socketEnv === undefined ? {} : { SPIFFE_ENDPOINT_SOCKET: socketEnv } });
  } catch (err) {
    sp(`${configPath} does not load: ${(err as Error).message}`);
    return undefined;
  }

  if (config.identity.kind !== 'workloadApi') sp(`${configPath}: identity is ${config.identity.kind}, not workloadApi`);
  else if (csiMount) {
    const socket = config.identity.socket;
    const mountPath = String(csiMount.mountPath).replace(/\/$/, '');
    if (!socket.startsWith(`unix://${mountPath}/`)) sp(`the Workload API socket ${socket} is not inside the ${CSI_DRIVER} mount ${mountPath}`);
  }

  // Every file sigil.yaml names is on a mount; ConfigMap keys exist; the Cedar policy compiles.
  const referenced = [
    config.policy.cedar,
    config.admin.tokenFile,
    ...Object.values(config.trust.bundles),
    config.delegation?.jwks,
    config.revocation?.file,
  ].filter((f): f is string => f !== undefined);
  for (const file of referenced) {
    const found = mountedFile(file, sigil, volumes, manifests, d.namespace);
    if (found.problem) sp(`${configPath} names ${file}, but ${found.problem}`);
    if (file === config.policy.cedar && found.text !== undefined) {
      try {
        compileCedarPolicy(found.text, file);
      } catch (err) {
        sp(`${file} does not compile: ${(err as Error).message}`);
      }
    }
  }

  // Ports: what sigil binds, what the container declares, what the probes ask for.
  const namedPorts = new Map(objs(sigil.ports).map((port) => [str(port.name) ?? '', Number(port.containerPort)] as const));
  const declared = new Set(namedPorts.values());
  const resolve = (ref: unknown): number | undefined => (typeof ref === 'number' ? ref : typeof ref === 'string' ? (namedPorts.get(ref) ?? (/^\d+$/.test(ref) ? Number(ref) : undefined)) : undefined);
  if (config.inbound && !declared.has(config.inbound.listen.port)) sp(`does not declare inbound.listen's port ${config.inbound.listen.port}`);
  const admin = config.admin.listen;
  if (!declared.has(admin.port)) sp(`does not declare admin.listen's port ${admin.port}`);
  if (isLoopback(admin.host)) sp(`admin.listen ${admin.host}:${admin.port} is loopback: the kubelet's probes cannot reach it`);
  else if (config.admin.tokenFile === undefined) sp(`admin.listen ${admin.host}:${admin.port} is reachable from outside the pod: set admin.tokenFile`);
  for (const [probe, wanted] of [['readinessProbe', '/readyz'], ['livenessProbe', '/healthz']] as const) {
    const httpGet = get(sigil, probe, 'httpGet');
    if (!isObj(httpGet)) {
      sp(`${probe} is not an httpGet probe`);
      continue;
    }
    if (httpGet.path !== wanted) sp(`${probe} asks for ${String(httpGet.path)}, not ${wanted}`);
    const port = resolve(httpGet.port);
    if (port !== admin.port) sp(`${probe} port ${String(httpGet.port)} (${String(port)}) is not admin.listen's port ${admin.port}`);
  }
  const scrapePort = str(get(d.doc, 'spec', 'template', 'metadata', 'annotations', 'prometheus.io/port'));
  if (scrapePort !== undefined && Number(scrapePort) !== admin.port) p(`annotation prometheus.io/port ${scrapePort} is not admin.listen's port ${admin.port}`);

  return { deployment: d, podLabels: isObj(podLabels) ? podLabels : {}, serviceAccount, container: sigil, configPath, socketEnv, config };
}

function checkService(s: Manifest, sidecars: Sidecar[], problems: string[]): void {
  const p = (message: string): void => void problems.push(`${s.where}: ${message}`);
  const selector = get(s.doc, 'spec', 'selector');
  if (!isObj(selector) || Object.keys(selector).length === 0) {
    p('no spec.selector');
    return;
  }
  const targets = sidecars.filter((sc) => sc.deployment.namespace === s.namespace && Object.entries(selector).every(([k, v]) => sc.podLabels[k] === v));
  if (targets.length === 0) {
    p('selects no Deployment with a sigil sidecar');
    return;
  }
  const ports = objs(get(s.doc, 'spec', 'ports'));
  if (ports.length === 0) p('no ports');
  for (const target of targets) {
    const named = new Map(objs(target.container.ports).map((port) => [str(port.name) ?? '', Number(port.containerPort)] as const));
    const declared = new Set(named.values());
    const inbound = target.config.inbound?.listen.port;
    for (const port of ports) {
      const ref = port.targetPort ?? port.port;
      const n = typeof ref === 'number' ? ref : named.get(String(ref));
      if (n === undefined || !declared.has(n)) {
        p(`port ${String(port.port)}: targetPort ${String(ref)} is not a port the ${SIGIL_CONTAINER} container of ${target.deployment.name} declares`);
      } else if (n !== inbound) {
        p(`port ${String(port.port)} exposes ${n}, which is not sigil's inbound.listen port (${String(inbound)}): only the mTLS port may be exposed`);
      }
    }
  }
}

interface Entry {
  node: boolean;
  spiffeId?: string;
  parentId?: string;
  selectors: string[];
}

function registrationEntries(script: string): Entry[] {
  const joined = script.replace(/\\\n/g, ' ');
  const entries: Entry[] = [];
  for (const line of joined.split('\n')) {
    if (/^\s*#/.test(line) || !/\bentry create\b/.test(line)) continue;
    const words = line.trim().split(/\s+/);
    const entry: Entry = { node: words.includes('-node'), selectors: [] };
    words.forEach((w, i) => {
      const next = words[i + 1];
      if (next === undefined) return;
      if (w === '-spiffeID') entry.spiffeId = next;
      if (w === '-parentID') entry.parentId = next;
      if (w === '-selector') entry.selectors.push(next);
    });
    entries.push(entry);
  }
  return entries;
}

function checkRegistration(script: string | undefined, sidecars: Sidecar[], problems: string[]): void {
  const p = (message: string): void => void problems.push(`spire-registration.sh: ${message}`);
  if (script === undefined) {
    p('missing');
    return;
  }
  try {
    execFileSync('sh', ['-n'], { input: script, stdio: ['pipe', 'ignore', 'pipe'] });
  } catch (err) {
    p(`sh -n: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`);
  }
  const entries = registrationEntries(script);
  const nodeIds = entries.filter((e) => e.node).map((e) => e.spiffeId);
  for (const sc of sidecars) {
    const id = sc.config.identity.kind === 'workloadApi' ? sc.config.identity.spiffeId : undefined;
    if (id === undefined) {
      p(`${sc.deployment.where} sets no identity.workloadApi.spiffeId to match an entry against`);
      continue;
    }
    const entry = entries.find((e) => !e.node && e.spiffeId === id);
    if (!entry) {
      p(`no workload entry with -spiffeID ${id}`);
      continue;
    }
    const wanted = [`k8s:ns:${sc.deployment.namespace}`, `k8s:container-name:${String(sc.container.name)}`];
    if (sc.serviceAccount !== undefined) wanted.push(`k8s:sa:${sc.serviceAccount}`);
    for (const w of wanted) if (!entry.selectors.includes(w)) p(`the entry for ${id} lacks -selector ${w}`);
    for (const s of entry.selectors) if (!wanted.includes(s)) p(`the entry for ${id} has -selector ${s}, which the Deployment does not match`);
    if (nodeIds.length > 0 && !nodeIds.includes(entry.parentId)) p(`the entry for ${id} has -parentID ${String(entry.parentId)}, which is no node entry of the script`);
  }
}

function checkReadme(files: Files, sidecars: Sidecar[], problems: string[]): void {
  const readme = files.get('README.md');
  if (readme === undefined) {
    problems.push('README.md: missing');
    return;
  }
  for (const file of files.keys()) if (file !== 'README.md' && !readme.includes(file)) problems.push(`README.md: does not describe ${file}`);
  // Secrets are not shipped (they hold the admin token): the README must say how to create them.
  for (const sc of sidecars) {
    for (const v of objs(get(sc.deployment.doc, 'spec', 'template', 'spec', 'volumes'))) {
      const secret = str(get(v, 'secret', 'secretName'));
      if (secret !== undefined && !readme.includes(`create secret generic ${secret}`)) problems.push(`README.md: does not create Secret ${secret}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Mutations for the negative controls.

function editText(files: Files, file: string, from: string | RegExp, to: string): Files {
  const text = files.get(file);
  if (text === undefined || (typeof from === 'string' ? !text.includes(from) : text.search(from) < 0)) throw new Error(`${file} does not contain ${String(from)}`);
  return new Map(files).set(file, text.replace(from, to));
}

/** Re-serializes `file` with `edit` applied to its document of `kind` (comments are lost; fine here). */
function editYaml(files: Files, file: string, kind: string, edit: (doc: Obj) => void): Files {
  let hit = false;
  const docs = parseAllDocuments(files.get(file) ?? '').map((d) => {
    const doc = d.toJS() as Obj;
    if (doc.kind === kind) {
      edit(doc);
      hit = true;
    }
    return YAML.stringify(doc);
  });
  if (!hit) throw new Error(`no ${kind} in ${file}`);
  return new Map(files).set(file, docs.join('---\n'));
}

const podSpec = (deployment: Obj): Obj => get(deployment, 'spec', 'template', 'spec') as Obj;
const container = (deployment: Obj, name: string): Obj => {
  const c = objs(podSpec(deployment).containers).find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
};
const mountOf = (c: Obj, name: string): Obj => {
  const m = objs(c.volumeMounts).find((x) => x.name === name);
  if (!m) throw new Error(`no mount ${name}`);
  return m;
};
const volumeNamed = (deployment: Obj, name: string): Obj => {
  const v = objs(podSpec(deployment).volumes).find((x) => x.name === name);
  if (!v) throw new Error(`no volume ${name}`);
  return v;
};

const DEPLOYMENT = 'agent-deployment.yaml';
const CONFIG = 'sigil-config.yaml';

t.test('examples/kubernetes are consistent', async (t) => {
  const files = await readExamples();
  for (const f of ['README.md', 'sigil-config.yaml', 'agent-deployment.yaml', 'service.yaml', 'spire-registration.sh']) t.ok(files.has(f), `${f} exists`);
  const { problems, manifests, sidecars } = checkExamples(files);
  t.strictSame(problems, [], 'no problems');
  t.strictSame(
    manifests.map((m) => `${m.kind}/${m.name}`).sort(),
    ['ConfigMap/planner-sigil', 'Deployment/planner', 'Service/planner', 'ServiceAccount/planner'],
    'every manifest parsed',
  );

  t.equal(sidecars.length, 1);
  const sc = sidecars[0]!;
  t.equal(sc.configPath, '/etc/sigil/sigil.yaml');
  t.equal(sc.socketEnv, 'unix:///run/spire/sockets/agent.sock');
  // The same call the brief documents, spelled out: sigil.yaml as the ConfigMap holds it.
  const cm = manifests.find((m) => m.kind === 'ConfigMap')!;
  const config = parseConfig(String(get(cm.doc, 'data', 'sigil.yaml')), 'yaml', '/etc/sigil/sigil.yaml', { env: { SPIFFE_ENDPOINT_SOCKET: sc.socketEnv! } });
  t.match(config.identity, { kind: 'workloadApi', socket: 'unix:///run/spire/sockets/agent.sock', spiffeId: 'spiffe://example.org/ns/agents/sa/planner', startupTimeoutMs: 30_000 });
  t.strictSame(config.inbound, { listen: { host: '0.0.0.0', port: 8443 }, upstream: 'http://127.0.0.1:3000', requireSignedFrames: false });
  t.match(config.admin, { listen: { host: '0.0.0.0', port: 15000 }, tokenFile: '/etc/sigil-admin/token' });
  t.equal(config.policy.cedar, '/etc/sigil/policy.cedar');
  t.equal(config.outbound?.routes.length, 1);
});

t.test('each check fails on a broken copy', async (t) => {
  const files = await readExamples();
  const cases: { name: string; files: () => Files; expect: RegExp }[] = [
    { name: 'YAML syntax error', files: () => editText(files, 'service.yaml', 'type: ClusterIP', 'type: [ClusterIP'), expect: /service\.yaml document 1: YAML:/ },
    { name: 'empty document', files: () => new Map(files).set('service.yaml', `${files.get('service.yaml')!}---\n`), expect: /service\.yaml document 2: not a mapping/ },
    { name: 'no apiVersion', files: () => editYaml(files, 'service.yaml', 'Service', (d) => delete d.apiVersion), expect: /service\.yaml document 1: no apiVersion/ },
    { name: 'no metadata.name', files: () => editYaml(files, CONFIG, 'ConfigMap', (d) => delete (d.metadata as Obj).name), expect: /sigil-config\.yaml document 1: no metadata\.name/ },
    { name: 'container without image', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => delete container(d, 'planner').image), expect: /container planner has no image/ },
    { name: 'container without name', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => delete container(d, 'planner').name), expect: /a container has no name/ },
    { name: 'mount of a missing volume', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (volumeNamed(d, 'sigil-admin-token').name = 'admin-token')), expect: /volumeMount "sigil-admin-token" names no volume/ },
    { name: 'selector not on the pod', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => ((get(d, 'spec', 'template', 'metadata') as Obj).labels = { app: 'other' })), expect: /lacks the selector's label/ },
    { name: 'missing ServiceAccount', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (podSpec(d).serviceAccountName = 'nobody')), expect: /serviceAccountName nobody: no such ServiceAccount/ },
    { name: 'no sigil container', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'sigil').name = 'proxy')), expect: /no container named sigil/ },
    { name: 'CSI mount writable', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (mountOf(container(d, 'sigil'), 'spiffe-workload-api').readOnly = false)), expect: /volume must be mounted read-only/ },
    { name: 'CSI volume writable', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => ((volumeNamed(d, 'spiffe-workload-api').csi as Obj).readOnly = false)), expect: /csi\.spiffe\.io volume must be readOnly/ },
    { name: 'socket from another driver', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => ((volumeNamed(d, 'spiffe-workload-api').csi as Obj).driver = 'csi.example.com')), expect: /mounts no csi\.spiffe\.io CSI volume/ },
    {
      name: 'agent mounts the socket',
      files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'planner').volumeMounts = [{ name: 'spiffe-workload-api', mountPath: '/run/spire/sockets', readOnly: true }])),
      expect: /container planner mounts the Workload API socket/,
    },
    { name: 'writable root filesystem', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => ((container(d, 'sigil').securityContext as Obj).readOnlyRootFilesystem = false)), expect: /readOnlyRootFilesystem is not true/ },
    {
      name: 'root allowed',
      files: () =>
        editYaml(files, DEPLOYMENT, 'Deployment', (d) => {
          delete (container(d, 'sigil').securityContext as Obj).runAsNonRoot;
          delete (podSpec(d).securityContext as Obj).runAsNonRoot;
        }),
      expect: /runAsNonRoot is not true/,
    },
    { name: 'no --config', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'sigil').args = ['run'])), expect: /no --config argument/ },
    { name: '--config not in the ConfigMap', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'sigil').args = ['run', '--config', '/etc/sigil/sidecar.yaml'])), expect: /ConfigMap planner-sigil has no key "sidecar\.yaml"/ },
    { name: 'ConfigMap renamed', files: () => editYaml(files, CONFIG, 'ConfigMap', (d) => ((d.metadata as Obj).name = 'sigil')), expect: /ConfigMap planner-sigil is not in the examples/ },
    { name: 'socket variable missing', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'sigil').env = [])), expect: /identity\.workloadApi\.socket: not set, and SPIFFE_ENDPOINT_SOCKET is not set/ },
    {
      name: 'socket variable malformed',
      files: () => editText(files, DEPLOYMENT, 'value: unix:///run/spire/sockets/agent.sock', 'value: /run/spire/sockets/agent.sock'),
      expect: /from SPIFFE_ENDPOINT_SOCKET: invalid Workload API endpoint/,
    },
    { name: 'socket outside the CSI mount', files: () => editText(files, DEPLOYMENT, 'unix:///run/spire/sockets/agent.sock', 'unix:///tmp/agent.sock'), expect: /socket unix:\/\/\/tmp\/agent\.sock is not inside the csi\.spiffe\.io mount \/run\/spire\/sockets/ },
    { name: 'sigil.yaml invalid', files: () => editText(files, CONFIG, 'startupTimeout: 30s', 'startupTimeout: 0s'), expect: /identity\.workloadApi\.startupTimeout: must be greater than 0/ },
    { name: 'sigil.yaml not workloadApi', files: () => editText(files, CONFIG, /^ {6}workloadApi:\n(?: {8}.*\n)+/m, '      files: { cert: /etc/sigil/svid.pem, key: /etc/sigil/svid.key, bundle: /etc/sigil/bundle.pem }\n'), expect: /identity is files, not workloadApi/ },
    { name: 'policy not in the ConfigMap', files: () => editText(files, CONFIG, 'cedar: ./policy.cedar', 'cedar: ./policies.cedar'), expect: /names \/etc\/sigil\/policies\.cedar, but .*has no key "policies\.cedar"/ },
    { name: 'policy does not compile', files: () => editText(files, CONFIG, 'action == Action::"connect"', 'action == Action::"conect"'), expect: /policy\.cedar does not compile/ },
    { name: 'token file on no mount', files: () => editText(files, CONFIG, 'tokenFile: /etc/sigil-admin/token', 'tokenFile: /var/run/sigil/token'), expect: /names \/var\/run\/sigil\/token, but .*is on no volume mount/ },
    { name: 'admin on loopback', files: () => editText(files, CONFIG, 'listen: 0.0.0.0:15000', 'listen: 127.0.0.1:15000'), expect: /admin\.listen 127\.0\.0\.1:15000 is loopback/ },
    { name: 'admin open without a token', files: () => editText(files, CONFIG, '      tokenFile: /etc/sigil-admin/token\n', ''), expect: /admin\.listen: 0\.0\.0\.0 is reachable beyond loopback: set admin\.tokenFile/ },
    { name: 'admin port moved', files: () => editText(files, CONFIG, 'listen: 0.0.0.0:15000', 'listen: 0.0.0.0:9901'), expect: /readinessProbe port admin \(15000\) is not admin\.listen's port 9901/ },
    { name: 'inbound port not declared', files: () => editText(files, CONFIG, 'listen: 0.0.0.0:8443', 'listen: 0.0.0.0:9443'), expect: /does not declare inbound\.listen's port 9443/ },
    { name: 'readiness on /healthz', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (((container(d, 'sigil').readinessProbe as Obj).httpGet as Obj).path = '/healthz')), expect: /readinessProbe asks for \/healthz, not \/readyz/ },
    { name: 'liveness on another port', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (((container(d, 'sigil').livenessProbe as Obj).httpGet as Obj).port = 8443)), expect: /livenessProbe port 8443 \(8443\) is not admin\.listen's port 15000/ },
    { name: 'liveness not httpGet', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'sigil').livenessProbe = { tcpSocket: { port: 'admin' } })), expect: /livenessProbe is not an httpGet probe/ },
    { name: 'scrape annotation on another port', files: () => editText(files, DEPLOYMENT, 'prometheus.io/port: "15000"', 'prometheus.io/port: "9090"'), expect: /prometheus\.io\/port 9090/ },
    { name: 'Service targets an undeclared port', files: () => editText(files, 'service.yaml', 'targetPort: mtls', 'targetPort: 9443'), expect: /targetPort 9443 is not a port the sigil container/ },
    { name: 'Service targets an unknown name', files: () => editText(files, 'service.yaml', 'targetPort: mtls', 'targetPort: https'), expect: /targetPort https is not a port the sigil container/ },
    { name: 'Service exposes admin', files: () => editYaml(files, 'service.yaml', 'Service', (d) => (get(d, 'spec', 'ports') as Obj[]).push({ name: 'admin', port: 15000, targetPort: 'admin' })), expect: /exposes 15000, which is not sigil's inbound\.listen port/ },
    { name: 'Service selects nothing', files: () => editYaml(files, 'service.yaml', 'Service', (d) => ((d.spec as Obj).selector = { app: 'nothing' })), expect: /selects no Deployment/ },
    { name: 'entry selects the agent container', files: () => editText(files, 'spire-registration.sh', '-selector k8s:container-name:sigil', '-selector k8s:container-name:planner'), expect: /lacks -selector k8s:container-name:sigil/ },
    { name: 'entry in another namespace', files: () => editText(files, 'spire-registration.sh', '-selector k8s:ns:agents', '-selector k8s:ns:default'), expect: /lacks -selector k8s:ns:agents/ },
    { name: 'entry for another ID', files: () => editText(files, 'spire-registration.sh', '-spiffeID spiffe://example.org/ns/agents/sa/planner', '-spiffeID spiffe://example.org/planner'), expect: /no workload entry with -spiffeID spiffe:\/\/example\.org\/ns\/agents\/sa\/planner/ },
    { name: 'entry under an unknown parent', files: () => editText(files, 'spire-registration.sh', '-parentID spiffe://example.org/ns/spire/sa/spire-agent', '-parentID spiffe://example.org/agent'), expect: /-parentID spiffe:\/\/example\.org\/agent, which is no node entry/ },
    { name: 'script syntax error', files: () => editText(files, 'spire-registration.sh', 'spire_server() {', 'spire_server() ('), expect: /spire-registration\.sh: sh -n/ },
    { name: 'README misses a file', files: () => new Map(files).set('extra.yaml', 'apiVersion: v1\nkind: Namespace\nmetadata: { name: agents }\n'), expect: /README\.md: does not describe extra\.yaml/ },
    { name: 'README misses the Secret', files: () => editText(files, 'README.md', 'create secret generic planner-sigil-admin-token', 'create secret generic admin-token'), expect: /README\.md: does not create Secret planner-sigil-admin-token/ },
  ];
  for (const c of cases) {
    const { problems } = checkExamples(c.files());
    t.match(problems.join('\n'), c.expect, c.name);
  }
});
