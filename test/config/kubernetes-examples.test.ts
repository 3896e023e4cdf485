// examples/kubernetes is documentation people apply to real clusters, so it is checked like code.
//
// Every YAML document of every file is checked as kubectl, the API server and its controllers
// would see it: YAML that Go's parser reads too, apiVersion per kind, names, one namespace for
// everything; workloads' selectors match their pod templates, containers have a name and an
// image, ports are 1..65535 and every named
// port a probe, Service, ServiceMonitor or NetworkPolicy uses exists; mounts name volumes,
// volumes have one source and are mounted, ConfigMap keys exist (and what the examples do not
// ship, the README creates); Services, NetworkPolicies and ServiceMonitors select what exists.
//
// Then what Sigil needs: the ConfigMap's sigil.yaml loads with the Deployment's
// SPIFFE_ENDPOINT_SOCKET, and that socket is inside a read-only SPIFFE CSI (or hostPath) volume
// that only the sigil container mounts — also with the hostPath patch applied; every file
// sigil.yaml names is on a mount; the policy compiles; the probes hit /readyz and /healthz on
// the port admin.listen binds; the mTLS Service exposes only sigil's inbound port and the
// metrics Service only the admin port, which the ServiceMonitor scrapes at /metrics; the
// NetworkPolicy lets only the agents reach the mTLS port and only Prometheus the admin port;
// terminationGracePeriodSeconds outlasts shutdown.delay + drainTimeout; the NATS URLs in
// sigil.yaml are the NATS client Service, whose nats.conf requires client certificates, maps
// the sidecar's SPIFFE ID to a user allowed to read the revocation stream, runs JetStream on a
// writable volume and lets no one but the policy's issuers publish records or delete the
// stream; the SPIRE registration entry selects the Deployment's sigil container; the README
// describes every file, creates what is not shipped and applies NATS before the agents.
// Every check is also shown to fail on a broken copy of the files.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import YAML, { parseAllDocuments } from 'yaml';
import { editText, get, isObj, objs, readTree, str, type Files, type Obj } from '../helpers/example-files.js';
import { compileCedarPolicy } from '../../src/authz/index.js';
import { parseConfig, type SigilConfig } from '../../src/config/index.js';
import { mayUse, natsBlock, natsScalar, natsSize, natsTopLevel, natsUncomment, natsUsers } from '../helpers/nats-conf.js';

const DIR = fileURLToPath(new URL('../../../examples/kubernetes/', import.meta.url));
const SIGIL_CONTAINER = 'sigil';
const CSI_DRIVER = 'csi.spiffe.io';
const PATCH_SUFFIX = '.patch.yaml';

/** The apiVersion of every kind the examples use; anything else is a typo, or must be added here. */
const API_VERSIONS: Record<string, string> = {
  ServiceAccount: 'v1',
  ConfigMap: 'v1',
  Service: 'v1',
  Deployment: 'apps/v1',
  StatefulSet: 'apps/v1',
  NetworkPolicy: 'networking.k8s.io/v1',
  ServiceMonitor: 'monitoring.coreos.com/v1',
};
const WORKLOAD_KINDS = new Set(['Deployment', 'StatefulSet']);
const PROTOCOLS = new Set(['TCP', 'UDP', 'SCTP']);
const VOLUME_SOURCES = ['configMap', 'secret', 'csi', 'hostPath', 'emptyDir', 'persistentVolumeClaim', 'projected', 'downwardAPI', 'ephemeral'];
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** IANA_SVC_NAME: what a named port must look like. */
const PORT_NAME = /^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

const isPort = (n: unknown): n is number => Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 65535;
const labelsMatch = (selector: Obj, labels: Obj): boolean => Object.entries(selector).every(([k, v]) => labels[k] === v);

interface Manifest {
  file: string;
  where: string;
  doc: Obj;
  kind: string;
  name: string;
  namespace: string;
}

/** A Deployment or StatefulSet: its pod template, as the checks need it. */
interface Workload {
  m: Manifest;
  where: string;
  pod: Obj;
  labels: Obj;
  containers: Obj[];
  volumes: Map<string, Obj>;
  /** StatefulSet volumeClaimTemplates: mountable by name like volumes. */
  claims: Set<string>;
}

/** What the rest of the checks need to know about a Deployment's sidecar. */
interface Sidecar {
  deployment: Manifest;
  workload: Workload;
  podLabels: Obj;
  serviceAccount: string | undefined;
  container: Obj;
  configPath: string;
  socketEnv: string | undefined;
  config: SigilConfig;
  policyText: string | undefined;
}

/** A ConfigMap or Secret the pods use but the examples do not ship: the README must create it. */
interface External {
  kind: 'ConfigMap' | 'Secret';
  name: string;
  keys: Set<string>;
}

interface Context {
  files: Files;
  manifests: Manifest[];
  problems: string[];
  externals: Map<string, External>;
}

function checkExamples(files: Files): { problems: string[]; manifests: Manifest[]; sidecars: Sidecar[]; patched: Sidecar[] } {
  const problems: string[] = [];
  const { manifests, patches } = parseManifests(files, problems);
  const cx: Context = { files, manifests, problems, externals: new Map() };
  checkMetadata(cx);

  const workloads = manifests.filter((m) => WORKLOAD_KINDS.has(m.kind)).map(workloadOf);
  if (!manifests.some((m) => m.kind === 'Deployment')) problems.push('no Deployment in examples/kubernetes');
  const sidecars: Sidecar[] = [];
  for (const w of workloads) {
    checkWorkload(w, cx);
    // Every Deployment here is an agent with its sidecar; a StatefulSet (NATS) only if it has one.
    const sidecar = w.m.kind === 'Deployment' || w.containers.some((c) => c.name === SIGIL_CONTAINER) ? checkSidecar(w, cx) : undefined;
    if (sidecar) sidecars.push(sidecar);
  }
  // A patch file is an alternative form of a Deployment: the patched Deployment passes the same
  // checks, but is not a second workload next to the original.
  const patched: Sidecar[] = [];
  for (const p of patches) {
    const w = applyPatch(p, manifests, problems);
    if (!w) continue;
    checkWorkload(w, cx);
    const sidecar = checkSidecar(w, cx);
    if (sidecar) patched.push(sidecar);
  }

  for (const s of manifests.filter((m) => m.kind === 'Service')) checkService(s, workloads, sidecars, cx);
  for (const sc of sidecars) {
    const inbound = sc.config.inbound?.listen.port;
    if (inbound !== undefined && !servicePorts(manifests, workloads, sc.workload).includes(inbound)) problems.push(`${sc.deployment.where}: no Service exposes sigil's inbound port ${inbound}`);
  }
  const monitors = manifests.filter((m) => m.kind === 'ServiceMonitor');
  for (const sm of monitors) checkServiceMonitor(sm, workloads, sidecars, cx);
  for (const s of manifests.filter((m) => m.kind === 'Service' && metricsTargets(m, workloads, sidecars).length > 0)) {
    if (!monitors.some((sm) => monitorSelects(sm, s))) problems.push(`${s.where}: no ServiceMonitor selects it`);
  }
  checkNetworkPolicies(manifests, workloads, sidecars, cx);
  for (const sc of sidecars) checkNats(sc, workloads, cx);
  checkRegistration(files.get('spire-registration.sh'), sidecars, problems);
  checkReadme(files, manifests, sidecars, cx);
  return { problems, manifests, sidecars, patched };
}

// ---------------------------------------------------------------------------------------------
// Parsing and metadata.

function parseManifests(files: Files, problems: string[]): { manifests: Manifest[]; patches: Manifest[] } {
  const manifests: Manifest[] = [];
  const patches: Manifest[] = [];
  for (const [file, text] of [...files].sort(([a], [b]) => a.localeCompare(b))) {
    if (!/\.ya?ml$/.test(file)) continue;
    const docs = parseAllDocuments(text);
    if (docs.length === 0) problems.push(`${file}: no YAML document`);
    // The YAML 1.2 spec (and the yaml package) allow `?` inside a plain scalar in a flow mapping;
    // the Go YAML parser kubectl and kustomize use does not ("did not find expected ',' or '}'").
    text.split('\n').forEach((line, i) => {
      const flowValue = /\{[^}#]*:\s*([^"'\s{}[\],][^,}]*\?[^,}]*)[,}]/.exec(line);
      if (flowValue) problems.push(`${file} line ${i + 1}: quote ${flowValue[1]!.trim()}: kubectl's YAML parser refuses a plain value with ? in a flow mapping`);
    });
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
        const m = { file, where: `${file} (${kind} ${name})`, doc, kind, name, namespace: str(get(doc, 'metadata', 'namespace')) ?? '' };
        (file.endsWith(PATCH_SUFFIX) ? patches : manifests).push(m);
      }
    });
  }
  return { manifests, patches };
}

/** apiVersion per kind, valid names, every manifest in one explicitly named namespace, no duplicates. */
function checkMetadata(cx: Context): void {
  const counts = new Map<string, number>();
  for (const m of cx.manifests) if (m.namespace) counts.set(m.namespace, (counts.get(m.namespace) ?? 0) + 1);
  const namespace = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0];
  const seen = new Set<string>();
  for (const m of cx.manifests) {
    const p = (message: string): void => void cx.problems.push(`${m.where}: ${message}`);
    const wanted = API_VERSIONS[m.kind];
    if (wanted === undefined) p(`kind ${m.kind} is not one the examples know (${Object.keys(API_VERSIONS).join(', ')})`);
    else if (m.doc.apiVersion !== wanted) p(`apiVersion ${String(m.doc.apiVersion)}, but a ${m.kind} is ${wanted}`);
    const nameRule = m.kind === 'Service' ? DNS_LABEL : DNS_SUBDOMAIN;
    if (!nameRule.test(m.name) || m.name.length > (m.kind === 'Service' ? 63 : 253)) p(`metadata.name ${m.name} is not a DNS-1123 ${m.kind === 'Service' ? 'label' : 'subdomain'}`);
    if (!m.namespace) p('no metadata.namespace (kubectl apply would use the current namespace)');
    else if (m.namespace !== namespace) p(`namespace ${m.namespace}, but the other manifests are in ${String(namespace)}`);
    const key = `${m.kind}/${m.namespace}/${m.name}`;
    if (seen.has(key)) p('defined twice');
    seen.add(key);
  }
}

function workloadOf(m: Manifest): Workload {
  const pod = get(m.doc, 'spec', 'template', 'spec');
  const podObj = isObj(pod) ? pod : {};
  const labels = get(m.doc, 'spec', 'template', 'metadata', 'labels');
  return {
    m,
    where: m.where,
    pod: podObj,
    labels: isObj(labels) ? labels : {},
    containers: [...objs(podObj.initContainers), ...objs(podObj.containers)],
    volumes: new Map(objs(podObj.volumes).map((v) => [str(v.name) ?? '', v] as const)),
    claims: new Set(objs(get(m.doc, 'spec', 'volumeClaimTemplates')).map((c) => String(get(c, 'metadata', 'name')))),
  };
}

/** The pods a selector picks among the workloads of `namespace`. */
const selected = (workloads: Workload[], namespace: string, selector: Obj): Workload[] =>
  workloads.filter((w) => w.m.namespace === namespace && Object.keys(selector).length > 0 && labelsMatch(selector, w.labels));

/** A container port of the pod by name or number, as a Service's targetPort or a probe resolves it. */
function podPort(containers: Obj[], ref: unknown): number | undefined {
  for (const c of containers) {
    for (const port of objs(c.ports)) {
      if (typeof ref === 'string' && port.name === ref) return Number(port.containerPort);
      if (typeof ref === 'number' && port.containerPort === ref) return ref;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Workloads.

/** Where a file seen by a container comes from: the mount, its volume, and a ConfigMap key's text. */
interface MountedFile {
  volume?: Obj;
  mount?: Obj;
  /** The ConfigMap or Secret behind the file, and its key. */
  source?: { kind: 'ConfigMap' | 'Secret'; name: string; key: string };
  /** The text, when the file is a key of a ConfigMap of the examples. */
  text?: string;
  problem?: string;
}

function mountedFile(file: string, container: Obj, w: Workload, manifests: Manifest[]): MountedFile {
  const mount = objs(container.volumeMounts)
    .filter((m) => {
      const at = str(m.mountPath);
      return at !== undefined && (file === at || file.startsWith(at.endsWith('/') ? at : `${at}/`));
    })
    .sort((a, b) => String(b.mountPath).length - String(a.mountPath).length)[0];
  if (!mount) return { problem: `${file} is on no volume mount of the container` };
  const volume = w.volumes.get(str(mount.name) ?? '');
  if (!volume) return w.claims.has(str(mount.name) ?? '') ? { mount } : { mount, problem: `${file}: its mount names no volume` };
  const rel = path.posix.relative(String(mount.mountPath), file);
  const cm = get(volume, 'configMap');
  const secret = get(volume, 'secret');
  const from = isObj(cm) ? { kind: 'ConfigMap' as const, name: String(cm.name), items: objs(cm.items) } : isObj(secret) ? { kind: 'Secret' as const, name: String(secret.secretName), items: objs(secret.items) } : undefined;
  if (!from) return { volume, mount };
  let key = str(mount.subPath) ?? rel;
  if (from.items.length > 0) {
    const item = from.items.find((it) => it.path === key);
    if (!item) return { volume, mount, problem: `${file}: ${from.kind} volume ${String(volume.name)} projects no item at ${key}` };
    key = String(item.key);
  }
  const source = { kind: from.kind, name: from.name, key };
  if (from.kind === 'Secret') return { volume, mount, source };
  const configMap = manifests.find((m) => m.kind === 'ConfigMap' && m.name === from.name && m.namespace === w.m.namespace);
  if (!configMap) return { volume, mount, source }; // not shipped: the README creates it
  const text = str(get(configMap.doc, 'data', key));
  if (text === undefined) return { volume, mount, source, problem: `${file}: ConfigMap ${configMap.name} has no key ${JSON.stringify(key)}` };
  return { volume, mount, source, text };
}

/** A file the workload's container needs: on a mount, and created by the README when not shipped. */
function needFile(file: string, container: Obj, w: Workload, cx: Context, problem: (message: string) => void): MountedFile {
  const found = mountedFile(file, container, w, cx.manifests);
  if (found.problem) problem(found.problem);
  else if (found.source && found.text === undefined) external(cx, found.source.kind, found.source.name).keys.add(found.source.key);
  return found;
}

function external(cx: Context, kind: External['kind'], name: string): External {
  const key = `${kind}/${name}`;
  let e = cx.externals.get(key);
  if (!e) cx.externals.set(key, (e = { kind, name, keys: new Set() }));
  return e;
}

/** What a pod template needs to be accepted and to start: the generic checks for every workload. */
function checkWorkload(w: Workload, cx: Context): void {
  const p = (message: string): void => void cx.problems.push(`${w.where}: ${message}`);
  if (!isObj(get(w.m.doc, 'spec', 'template', 'spec'))) {
    p('no spec.template.spec');
    return;
  }
  const matchLabels = get(w.m.doc, 'spec', 'selector', 'matchLabels');
  if (!isObj(matchLabels) || Object.keys(matchLabels).length === 0) p('spec.selector.matchLabels is empty');
  else for (const [k, v] of Object.entries(matchLabels)) if (w.labels[k] !== v) p(`the pod template lacks the selector's label ${k}=${String(v)}`);

  if (objs(w.pod.containers).length === 0) p('no containers');
  const containerNames = new Set<string>();
  const portNames = new Set<string>();
  const mounted = new Set<string>();
  for (const c of w.containers) {
    const name = str(c.name);
    if (!name) p('a container has no name');
    else if (containerNames.has(name)) p(`two containers are named ${name}`);
    else containerNames.add(name);
    const cp = (message: string): void => p(`container ${name ?? '?'}: ${message}`);
    if (!str(c.image)) p(`container ${name ?? '?'} has no image`);
    for (const port of objs(c.ports)) {
      if (!isPort(port.containerPort)) cp(`containerPort ${String(port.containerPort)} is not 1..65535`);
      if (port.protocol !== undefined && !PROTOCOLS.has(String(port.protocol))) cp(`port protocol ${String(port.protocol)} is not TCP, UDP or SCTP`);
      const portName = str(port.name);
      if (portName === undefined) continue;
      if (!PORT_NAME.test(portName) || portName.length > 15) cp(`port name ${portName} is not an IANA service name (lower case, at most 15 characters)`);
      if (portNames.has(portName)) cp(`port name ${portName} is used twice in the pod`);
      portNames.add(portName);
    }
    for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
      const handler = get(c, probe, 'httpGet') ?? get(c, probe, 'tcpSocket') ?? get(c, probe, 'grpc');
      if (!isObj(handler)) continue;
      const ref = handler.port;
      if (typeof ref === 'string' && !objs(c.ports).some((port) => port.name === ref)) cp(`${probe} port ${JSON.stringify(ref)} is no port of container ${name ?? '?'}`);
      else if (typeof ref !== 'string' && !isPort(ref)) cp(`${probe} port ${String(ref)} is not 1..65535`);
    }
    for (const e of objs(c.env)) {
      const ref = get(e, 'valueFrom', 'configMapKeyRef');
      if (!isObj(ref)) continue;
      const cm = cx.manifests.find((m) => m.kind === 'ConfigMap' && m.name === ref.name && m.namespace === w.m.namespace);
      if (!cm) external(cx, 'ConfigMap', String(ref.name)).keys.add(String(ref.key));
      else if (str(get(cm.doc, 'data', String(ref.key))) === undefined) cp(`env ${String(e.name)}: ConfigMap ${cm.name} has no key ${JSON.stringify(ref.key)}`);
    }
    for (const m of objs(c.volumeMounts)) {
      const mountName = str(m.name) ?? '';
      mounted.add(mountName);
      if (!w.volumes.has(mountName) && !w.claims.has(mountName)) p(`container ${name ?? '?'}: volumeMount ${JSON.stringify(m.name)} names no volume of the pod`);
      if (!str(m.mountPath)) p(`container ${name ?? '?'}: volumeMount ${JSON.stringify(m.name)} has no mountPath`);
      else if (!String(m.mountPath).startsWith('/')) p(`container ${name ?? '?'}: volumeMount ${JSON.stringify(m.name)} mountPath ${String(m.mountPath)} is not absolute`);
    }
  }
  for (const [name, v] of w.volumes) {
    const sources = VOLUME_SOURCES.filter((s) => v[s] !== undefined && v[s] !== null);
    if (sources.length !== 1) p(`volume ${name} has ${sources.length} sources (${sources.join(', ')}), not one`);
    if (!mounted.has(name)) p(`volume ${name} is mounted by no container`);
    const cm = get(v, 'configMap');
    if (isObj(cm)) {
      const configMap = cx.manifests.find((m) => m.kind === 'ConfigMap' && m.name === cm.name && m.namespace === w.m.namespace);
      const items = objs(cm.items);
      if (!configMap) {
        const e = external(cx, 'ConfigMap', String(cm.name));
        for (const it of items) e.keys.add(String(it.key));
      } else {
        for (const it of items) if (str(get(configMap.doc, 'data', String(it.key))) === undefined) p(`volume ${name}: ConfigMap ${configMap.name} has no key ${JSON.stringify(it.key)}`);
      }
    }
    const secret = get(v, 'secret');
    if (isObj(secret)) external(cx, 'Secret', String(secret.secretName)); // Secrets are never shipped
  }
  const serviceAccount = str(w.pod.serviceAccountName);
  if (serviceAccount !== undefined && !cx.manifests.some((m) => m.kind === 'ServiceAccount' && m.name === serviceAccount && m.namespace === w.m.namespace)) {
    p(`serviceAccountName ${serviceAccount}: no such ServiceAccount in the examples`);
  }
  if (w.m.kind === 'StatefulSet') {
    const serviceName = str(get(w.m.doc, 'spec', 'serviceName'));
    const headless = cx.manifests.find((m) => m.kind === 'Service' && m.name === serviceName && m.namespace === w.m.namespace);
    const selector = get(headless?.doc, 'spec', 'selector');
    if (!headless || get(headless.doc, 'spec', 'clusterIP') !== 'None' || !isObj(selector) || !labelsMatch(selector, w.labels)) {
      p(`spec.serviceName ${String(serviceName)} is not a headless Service (clusterIP: None) of the examples selecting its pods`);
    }
    for (const c of objs(get(w.m.doc, 'spec', 'volumeClaimTemplates'))) {
      if (!str(get(c, 'spec', 'resources', 'requests', 'storage'))) p(`volumeClaimTemplate ${String(get(c, 'metadata', 'name'))} requests no storage`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The sigil sidecar.

const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || /^127\./.test(host);

function checkSidecar(w: Workload, cx: Context): Sidecar | undefined {
  const d = w.m;
  const p = (message: string): void => void cx.problems.push(`${w.where}: ${message}`);
  const pod = w.pod;
  const containers = w.containers;
  const sigil = containers.find((c) => c.name === SIGIL_CONTAINER);
  if (!sigil) {
    p(`no container named ${SIGIL_CONTAINER}`);
    return undefined;
  }
  const sp = (message: string): void => p(`container ${SIGIL_CONTAINER}: ${message}`);

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
  const configFile = mountedFile(configPath, sigil, w, cx.manifests);
  if (configFile.problem || configFile.text === undefined) {
    sp(configFile.problem ?? `${configPath}: ${configFile.source ? `${configFile.source.kind} ${configFile.source.name}` : 'its volume'} is not in the examples`);
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

  // The Workload API socket: on a read-only SPIFFE CSI (or hostPath) volume that only sigil mounts.
  const socketSource = (v: Obj | undefined): string | undefined => (get(v, 'csi', 'driver') === CSI_DRIVER ? CSI_DRIVER : isObj(get(v, 'hostPath')) ? 'hostPath' : undefined);
  for (const v of w.volumes.values()) {
    if (socketSource(v) === CSI_DRIVER && get(v, 'csi', 'readOnly') !== true) p(`volume ${String(v.name)}: the ${CSI_DRIVER} volume must be readOnly`);
  }
  let socketVolume: Obj | undefined;
  if (config.identity.kind !== 'workloadApi') sp(`${configPath}: identity is ${config.identity.kind}, not workloadApi`);
  else if (config.identity.socket.startsWith('unix://')) {
    const socket = config.identity.socket;
    const found = mountedFile(socket.slice('unix://'.length), sigil, w, cx.manifests);
    if (!found.mount || !found.volume) sp(`the Workload API socket ${socket} is on no volume mount of the container`);
    else if (!socketSource(found.volume)) sp(`the Workload API socket ${socket} is on volume ${String(found.volume.name)}, which is neither a ${CSI_DRIVER} CSI volume nor a hostPath`);
    else {
      socketVolume = found.volume;
      if (found.mount.readOnly !== true) sp('the Workload API socket volume must be mounted read-only');
      const hostPath = get(found.volume, 'hostPath');
      if (isObj(hostPath)) {
        if (!String(hostPath.path ?? '').startsWith('/')) p(`hostPath volume ${String(found.volume.name)}: path ${String(hostPath.path)} is not absolute`);
        if (hostPath.type !== 'Directory') p(`hostPath volume ${String(found.volume.name)}: type must be Directory (the SPIRE agent's socket directory must exist), not ${String(hostPath.type)}`);
      }
    }
  }
  for (const c of containers) {
    if (c === sigil) continue;
    const mountsSocket = objs(c.volumeMounts).some((m) => {
      const v = w.volumes.get(str(m.name) ?? '');
      return v !== undefined && (v === socketVolume || socketSource(v) === CSI_DRIVER);
    });
    if (mountsSocket) p(`container ${String(c.name)} mounts the Workload API socket: only the ${SIGIL_CONTAINER} container may`);
  }

  // Every file sigil.yaml names is on a mount; ConfigMap keys exist; the Cedar policy compiles.
  const referenced = [
    config.policy.cedar,
    config.admin.tokenFile,
    ...Object.values(config.trust.bundles),
    config.delegation?.jwks,
    config.revocation?.file,
    config.bus?.nats?.ca,
    config.revocation?.nats?.ca,
  ].filter((f): f is string => f !== undefined);
  let policyText: string | undefined;
  for (const file of [...new Set(referenced)]) {
    const found = needFile(file, sigil, w, cx, (problem) => sp(`${configPath} names ${file}, but ${problem}`));
    if (file === config.policy.cedar && found.text !== undefined) {
      policyText = found.text;
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

  // Graceful shutdown: the kubelet must not kill sigil before the delay and the drain are over.
  // (`delayMs` is read loosely: shutdown.delay arrives with the deploy work.)
  const delayMs = (config.shutdown as { delayMs?: number }).delayMs ?? 0;
  const graceSeconds = typeof pod.terminationGracePeriodSeconds === 'number' ? pod.terminationGracePeriodSeconds : 30;
  if (delayMs <= 0) sp(`${configPath}: shutdown.delay is not set: a pod being deleted would refuse connections that nodes still route to it`);
  if (graceSeconds * 1000 <= delayMs + config.shutdown.drainTimeoutMs) {
    p(`terminationGracePeriodSeconds ${graceSeconds} is not more than shutdown.delay + shutdown.drainTimeout (${(delayMs + config.shutdown.drainTimeoutMs) / 1000}s)`);
  }

  return { deployment: d, workload: w, podLabels: w.labels, serviceAccount: str(pod.serviceAccountName), container: sigil, configPath, socketEnv, config, policyText };
}

// ---------------------------------------------------------------------------------------------
// The hostPath patch: a strategic merge patch of a Deployment of the examples.

/** List fields merged by key in a strategic merge patch (the rest are replaced). */
const MERGE_KEYS: Record<string, string> = { containers: 'name', initContainers: 'name', volumes: 'name', env: 'name', volumeMounts: 'mountPath', ports: 'containerPort' };

function strategicMerge(base: unknown, patch: unknown, field = ''): unknown {
  if (patch === null) return undefined;
  if (isObj(patch)) {
    const out: Obj = isObj(base) ? { ...base } : {};
    for (const [k, v] of Object.entries(patch)) {
      const merged = strategicMerge(out[k], v, k);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    }
    return out;
  }
  const key = MERGE_KEYS[field];
  if (Array.isArray(patch) && Array.isArray(base) && key) {
    const out = [...base];
    for (const item of patch) {
      const at = isObj(item) ? out.findIndex((b) => isObj(b) && b[key] === item[key]) : -1;
      if (at >= 0) out[at] = strategicMerge(out[at], item);
      else out.push(strategicMerge(undefined, item));
    }
    return out;
  }
  return patch;
}

function applyPatch(patch: Manifest, manifests: Manifest[], problems: string[]): Workload | undefined {
  const p = (message: string): void => void problems.push(`${patch.file}: ${message}`);
  const target = manifests.find((m) => m.kind === patch.kind && m.name === patch.name && m.namespace === patch.namespace);
  if (!target || !WORKLOAD_KINDS.has(target.kind)) {
    p(`patches ${patch.kind} ${patch.name} in namespace ${patch.namespace}, which is not in the examples`);
    return undefined;
  }
  // A list entry whose key matches nothing is added, not merged: in a patch meant to replace
  // a volume's source that is a silent no-op plus a stray volume.
  const volumes = new Set(objs(get(target.doc, 'spec', 'template', 'spec', 'volumes')).map((v) => v.name));
  for (const v of objs(get(patch.doc, 'spec', 'template', 'spec', 'volumes'))) {
    if (!volumes.has(v.name)) p(`the patch adds volume ${String(v.name)} instead of replacing one of ${target.where}`);
  }
  const doc = strategicMerge(target.doc, patch.doc) as Obj;
  return workloadOf({ ...target, doc, where: `${target.where} patched by ${patch.file}` });
}

// ---------------------------------------------------------------------------------------------
// Services, ServiceMonitors, NetworkPolicies.

/** The ports of the sidecar's pods that some Service of the examples sends traffic to. */
function servicePorts(manifests: Manifest[], workloads: Workload[], w: Workload): number[] {
  const out: number[] = [];
  for (const s of manifests.filter((m) => m.kind === 'Service' && m.namespace === w.m.namespace)) {
    const selector = get(s.doc, 'spec', 'selector');
    if (!isObj(selector) || !selected(workloads, s.namespace, selector).includes(w)) continue;
    for (const port of objs(get(s.doc, 'spec', 'ports'))) {
      const n = podPort(w.containers, port.targetPort ?? port.port);
      if (n !== undefined) out.push(n);
    }
  }
  return out;
}

/** The sidecars whose admin port a Service exposes (a metrics Service). */
function metricsTargets(s: Manifest, workloads: Workload[], sidecars: Sidecar[]): Sidecar[] {
  const selector = get(s.doc, 'spec', 'selector');
  if (!isObj(selector)) return [];
  const targets = selected(workloads, s.namespace, selector);
  return sidecars.filter((sc) => targets.includes(sc.workload) && objs(get(s.doc, 'spec', 'ports')).some((port) => podPort(sc.workload.containers, port.targetPort ?? port.port) === sc.config.admin.listen.port));
}

function checkService(s: Manifest, workloads: Workload[], sidecars: Sidecar[], cx: Context): void {
  const p = (message: string): void => void cx.problems.push(`${s.where}: ${message}`);
  const type = str(get(s.doc, 'spec', 'type')) ?? 'ClusterIP';
  if (!['ClusterIP', 'NodePort', 'LoadBalancer'].includes(type)) p(`type ${type} is not ClusterIP, NodePort or LoadBalancer`);
  const ports = objs(get(s.doc, 'spec', 'ports'));
  if (ports.length === 0) p('no ports');
  const names = new Set<string>();
  for (const port of ports) {
    if (!isPort(port.port)) p(`port ${String(port.port)} is not 1..65535`);
    if (port.protocol !== undefined && !PROTOCOLS.has(String(port.protocol))) p(`port ${String(port.port)}: protocol ${String(port.protocol)} is not TCP, UDP or SCTP`);
    const name = str(port.name);
    if (name === undefined && ports.length > 1) p(`port ${String(port.port)} has no name: the ports of a multi-port Service need names`);
    if (name !== undefined && (!PORT_NAME.test(name) || name.length > 63)) p(`port name ${name} is not a DNS-1123 label`);
    if (name !== undefined && names.has(name)) p(`port name ${name} is used twice`);
    if (name !== undefined) names.add(name);
  }
  const selector = get(s.doc, 'spec', 'selector');
  if (!isObj(selector) || Object.keys(selector).length === 0) {
    p('no spec.selector');
    return;
  }
  const targets = selected(workloads, s.namespace, selector);
  if (targets.length === 0) {
    p('selects no Deployment or StatefulSet of the examples');
    return;
  }
  for (const target of targets) {
    const sidecar = sidecars.find((sc) => sc.workload === target);
    const resolved = ports.map((port) => {
      const ref = port.targetPort ?? port.port;
      const n = podPort(target.containers, ref);
      if (n === undefined) p(`port ${String(port.port)}: targetPort ${String(ref)} is not a port the containers of ${target.m.name} declare`);
      return { port, n };
    });
    if (!sidecar) continue;
    // A sidecar's pods: the mTLS Service exposes sigil's inbound port only; a metrics Service
    // the admin port only, inside the cluster. Anything else would bypass the sidecar or
    // expose the admin listener to every caller of the mTLS Service.
    const inbound = sidecar.config.inbound?.listen.port;
    const admin = sidecar.config.admin.listen.port;
    const isMtls = resolved.some((r) => r.n === inbound);
    for (const { port, n } of resolved) {
      if (n === undefined) continue;
      if (isMtls && n !== inbound) p(`port ${String(port.port)} exposes ${n}, which is not sigil's inbound.listen port (${String(inbound)}): the mTLS Service exposes nothing else (the admin port belongs in a metrics Service of its own)`);
      if (!isMtls && n !== admin) p(`port ${String(port.port)} exposes ${n}, which is neither sigil's inbound.listen port (${String(inbound)}) nor its admin port (${admin})`);
    }
    if (!isMtls && resolved.some((r) => r.n === admin) && (type !== 'ClusterIP' || get(s.doc, 'spec', 'clusterIP') === 'None')) {
      p(`a metrics Service must be ClusterIP (the admin port stays inside the cluster), not ${type}`);
    }
  }
}

function monitorSelects(sm: Manifest, s: Manifest): boolean {
  const matchLabels = get(sm.doc, 'spec', 'selector', 'matchLabels');
  const namespaces = get(sm.doc, 'spec', 'namespaceSelector', 'matchNames');
  const inNamespace = Array.isArray(namespaces) ? namespaces.includes(s.namespace) : s.namespace === sm.namespace;
  const labels = get(s.doc, 'metadata', 'labels');
  return inNamespace && isObj(matchLabels) && Object.keys(matchLabels).length > 0 && labelsMatch(matchLabels, isObj(labels) ? labels : {});
}

function checkServiceMonitor(sm: Manifest, workloads: Workload[], sidecars: Sidecar[], cx: Context): void {
  const p = (message: string): void => void cx.problems.push(`${sm.where}: ${message}`);
  const matchLabels = get(sm.doc, 'spec', 'selector', 'matchLabels');
  if (!isObj(matchLabels) || Object.keys(matchLabels).length === 0) p('spec.selector.matchLabels is empty');
  if (get(sm.doc, 'spec', 'namespaceSelector', 'any') === true) p('namespaceSelector.any selects Services of every namespace');
  const services = cx.manifests.filter((m) => m.kind === 'Service' && monitorSelects(sm, m));
  if (services.length === 0) p('selects no Service of the examples (spec.selector.matchLabels against the Services\' labels, in namespaceSelector.matchNames)');
  const endpoints = objs(get(sm.doc, 'spec', 'endpoints'));
  if (endpoints.length === 0) p('no endpoints');
  endpoints.forEach((e, i) => {
    const port = str(e.port);
    if (port === undefined) {
      p(`endpoint ${i + 1} names no port`);
      return;
    }
    for (const s of services) {
      if (!objs(get(s.doc, 'spec', 'ports')).some((sp) => sp.name === port)) p(`endpoint port ${JSON.stringify(port)} is no port of Service ${s.name}`);
      if (metricsTargets(s, workloads, sidecars).length > 0) {
        const scrapePath = str(e.path) ?? '/metrics';
        if (scrapePath !== '/metrics') p(`endpoint ${i + 1} scrapes ${scrapePath}, not /metrics`);
        if ((str(e.scheme) ?? 'http') !== 'http') p(`endpoint ${i + 1} scheme ${String(e.scheme)}: sigil's admin listener is plain HTTP`);
      }
    }
  });
}

function checkNetworkPolicies(manifests: Manifest[], workloads: Workload[], sidecars: Sidecar[], cx: Context): void {
  const policies = manifests.filter((m) => m.kind === 'NetworkPolicy');
  const covered = new Set<Workload>();
  const mtlsAllowed = new Set<Workload>();
  for (const np of policies) {
    const p = (message: string): void => void cx.problems.push(`${np.where}: ${message}`);
    const matchLabels = get(np.doc, 'spec', 'podSelector', 'matchLabels');
    const targets = isObj(matchLabels) ? selected(workloads, np.namespace, matchLabels) : [];
    if (targets.length === 0) {
      p('spec.podSelector selects no pods of the examples');
      continue;
    }
    const types = get(np.doc, 'spec', 'policyTypes');
    const ingress = objs(get(np.doc, 'spec', 'ingress'));
    if (!Array.isArray(types) || !types.includes('Ingress')) p('policyTypes lacks Ingress: the ingress rules would not isolate the pods');
    else for (const w of targets) covered.add(w);
    ingress.forEach((rule, i) => {
      const rp = (message: string): void => p(`ingress rule ${i + 1}: ${message}`);
      const from = objs(rule.from);
      for (const peer of from) {
        const podSelector = get(peer, 'podSelector', 'matchLabels');
        // A podSelector alone means pods of this namespace: they must exist in the examples.
        if (isObj(podSelector) && peer.namespaceSelector === undefined && selected(workloads, np.namespace, podSelector).length === 0) {
          rp(`from podSelector ${JSON.stringify(podSelector)} matches no pods of the examples`);
        }
      }
      const ports = objs(rule.ports);
      if (ports.length === 0) rp('allows every port: name them');
      for (const w of targets) {
        const sidecar = sidecars.find((sc) => sc.workload === w);
        for (const port of ports) {
          if (port.protocol !== undefined && !PROTOCOLS.has(String(port.protocol))) rp(`protocol ${String(port.protocol)} is not TCP, UDP or SCTP`);
          const n = podPort(w.containers, port.port);
          if (n === undefined) {
            rp(`port ${JSON.stringify(port.port)} is no port of the pods of ${w.m.name}`);
            continue;
          }
          if (!sidecar) continue;
          const inbound = sidecar.config.inbound?.listen.port;
          const admin = sidecar.config.admin.listen.port;
          if (n !== inbound && n !== admin) rp(`allows port ${n}, which is neither sigil's inbound port (${String(inbound)}) nor its admin port (${admin}): nothing else of the pod is meant to be reached`);
          if (n === admin && from.length === 0) rp(`opens the admin port ${admin} to every source: allow your Prometheus only`);
          if (n === inbound && from.length === 0) rp(`opens the mTLS port ${inbound} to every source: allow the agents' pods`);
          if (n === inbound) mtlsAllowed.add(w);
        }
      }
    });
  }
  for (const w of workloads) if (!covered.has(w)) cx.problems.push(`${w.where}: no NetworkPolicy restricts ingress to the pods of ${w.m.kind} ${w.m.name}`);
  for (const sc of sidecars) if (covered.has(sc.workload) && !mtlsAllowed.has(sc.workload)) cx.problems.push(`${sc.deployment.where}: no NetworkPolicy rule lets the agents reach sigil's mTLS port`);
}

// ---------------------------------------------------------------------------------------------
// NATS: the servers sigil.yaml names, and the nats.conf of the server behind them.

/** The agents a Cedar policy permits `revocation.issue` (undefined: any principal). */
function issuersOf(policy: string): Set<string> | undefined {
  const issuers = new Set<string>();
  for (const statement of policy.split(';')) {
    if (!/\bpermit\s*\(/.test(statement) || !statement.includes('Action::"revocation.issue"')) continue;
    const exact = /principal\s*==\s*Agent::"([^"]+)"/.exec(statement);
    if (!exact) return undefined;
    issuers.add(exact[1]!);
  }
  return issuers;
}

function checkNats(sc: Sidecar, workloads: Workload[], cx: Context): void {
  const p = (message: string): void => void cx.problems.push(`${sc.deployment.where}: ${sc.configPath}: ${message}`);
  const revocation = sc.config.revocation?.nats;
  const servers = [...new Set([...(sc.config.bus?.nats?.servers ?? []), ...(revocation?.servers ?? [])])];
  const id = sc.config.identity.kind === 'workloadApi' ? sc.config.identity.spiffeId : undefined;
  for (const url of servers) {
    const m = /^(?:(\w+):\/\/)?([^:/]+):(\d+)$/.exec(url);
    if (!m) {
      p(`NATS server ${url} is not scheme://host:port`);
      continue;
    }
    const [, scheme, host, portText] = m;
    if (scheme !== 'tls') p(`NATS server ${url}: use tls:// (the sidecar always connects to NATS over TLS)`);
    // <service>[.<namespace>[.svc[.cluster.local]]]
    const parts = host!.split('.');
    const dns = parts.length === 1 || parts.length === 2 || (parts.length === 3 && parts[2] === 'svc') || (parts.length === 5 && parts.slice(2).join('.') === 'svc.cluster.local');
    if (!dns) {
      p(`NATS server ${url}: ${host} is not a Service DNS name (<service>.<namespace>.svc.cluster.local)`);
      continue;
    }
    const [svcName, namespace = sc.deployment.namespace] = parts;
    const service = cx.manifests.find((x) => x.kind === 'Service' && x.name === svcName && x.namespace === namespace);
    if (!service) {
      p(`NATS server ${url}: no Service ${svcName} in namespace ${namespace} in the examples`);
      continue;
    }
    const servicePort = objs(get(service.doc, 'spec', 'ports')).find((x) => x.port === Number(portText));
    if (!servicePort) {
      p(`NATS server ${url}: Service ${svcName} has no port ${portText}`);
      continue;
    }
    const selector = get(service.doc, 'spec', 'selector');
    for (const target of isObj(selector) ? selected(workloads, namespace, selector) : []) {
      const ref = servicePort.targetPort ?? servicePort.port;
      const containerPort = podPort(target.containers, ref);
      const container = target.containers.find((c) => objs(c.ports).some((x) => x.containerPort === containerPort));
      if (!container || containerPort === undefined) continue; // reported by checkService
      const args = [...(Array.isArray(container.command) ? container.command : []), ...(Array.isArray(container.args) ? container.args : [])].map(String);
      const at = args.findIndex((a) => a === '--config' || a === '-c');
      const confPath = at >= 0 ? args[at + 1] : undefined;
      const np = (message: string): void => void cx.problems.push(`${target.where}: nats.conf: ${message}`);
      if (confPath === undefined) {
        np(`container ${String(container.name)} has no --config argument`);
        continue;
      }
      const confFile = needFile(confPath, container, target, cx, (problem) => np(problem));
      if (confFile.text === undefined) continue;
      const conf = natsUncomment(confFile.text);
      const listen = natsScalar(natsTopLevel(conf), 'listen');
      const listenPort = Number(listen?.split(':').pop() ?? 4222);
      if (listenPort !== containerPort) np(`listens on ${listenPort}, but Service ${svcName} sends ${portText} to container port ${containerPort}`);

      const tls = natsBlock(conf, 'tls');
      if (!tls) np('no tls block: the sidecar only speaks TLS to NATS');
      else {
        if (natsScalar(tls.inner, 'verify_and_map') !== 'true') np('tls does not require client certificates and map them to users (verify_and_map: true)');
        for (const key of ['cert_file', 'key_file', 'ca_file']) {
          const file = natsScalar(tls.inner, key);
          if (file === undefined) np(`tls has no ${key}`);
          else needFile(file, container, target, cx, (problem) => np(`tls ${key} ${file}: ${problem}`));
        }
      }
      if (sc.config.bus?.nats) {
        const maxPayload = natsSize(natsScalar(natsTopLevel(conf), 'max_payload') ?? '1MB');
        if (!(maxPayload > sc.config.bus.envelope.maxBytes)) np(`max_payload ${String(natsScalar(conf, 'max_payload') ?? '1MB')} leaves no room for a ${sc.config.bus.envelope.maxBytes}-byte envelope and its headers (bus.envelope.maxBytes)`);
      }
      if (revocation) {
        const js = natsBlock(conf, 'jetstream');
        if (!js) np('no jetstream block, but revocation.nats needs JetStream');
        else {
          const storeDir = natsScalar(js.inner, 'store_dir');
          const found = storeDir === undefined ? undefined : mountedFile(storeDir, container, target, cx.manifests);
          if (storeDir === undefined || !found?.mount || found.mount.readOnly === true || found.source) np(`jetstream store_dir ${String(storeDir)} is on no writable mount`);
        }
      }

      // Users: one per sidecar SPIFFE ID, with what Sigil needs and no more.
      const users = natsUsers(conf);
      const user = users.find((u) => u.user === id);
      if (id === undefined) np(`${sc.deployment.where} sets no identity.workloadApi.spiffeId to map to a NATS user`);
      else if (!user) np(`no user ${id} (verify_and_map refuses the sidecar's SVID)`);
      else if (revocation) {
        const s = revocation.stream;
        const wanted = [`$JS.API.INFO`, `$JS.API.STREAM.INFO.${s}`, `$JS.API.CONSUMER.CREATE.${s}.>`, `$JS.API.CONSUMER.INFO.${s}.>`, `$JS.API.CONSUMER.DELETE.${s}.>`, `$JS.API.CONSUMER.MSG.NEXT.${s}.>`];
        if (revocation.createStream) wanted.push(`$JS.API.STREAM.CREATE.${s}`);
        for (const subject of wanted) if (!mayUse(user.publish, subject)) np(`user ${id} may not publish ${subject} (the revocation feed needs it)`);
        if (!mayUse(user.subscribe, '_INBOX.>')) np(`user ${id} may not subscribe _INBOX.> (replies and the delivered records)`);
      }
      if (revocation) {
        const issuers = sc.policyText === undefined ? new Set<string>() : issuersOf(sc.policyText);
        for (const u of users) {
          for (const op of ['DELETE', 'PURGE', 'UPDATE', 'MSG.DELETE']) {
            const subject = `$JS.API.STREAM.${op}.${revocation.stream}`;
            if (mayUse(u.publish, subject)) np(`user ${u.user} may publish ${subject}: only operators may delete, purge or reconfigure the revocation stream`);
          }
          if (mayUse(u.publish, `${revocation.subject}.x.revoke`) && issuers !== undefined && !issuers.has(u.user)) {
            np(`user ${u.user} may publish revocation records (${revocation.subject}.>), but ${sc.deployment.name}'s policy does not permit it revocation.issue`);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The SPIRE registration script.

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

// ---------------------------------------------------------------------------------------------
// The README.

/** The shell command (with its `\` continuation lines) that starts at `index` of `text`. */
function commandAt(text: string, index: number): string {
  const rest = text.slice(index);
  const end = rest.search(/(?<!\\)\n/);
  return end < 0 ? rest : rest.slice(0, end);
}

function checkReadme(files: Files, manifests: Manifest[], sidecars: Sidecar[], cx: Context): void {
  const readme = files.get('README.md');
  if (readme === undefined) {
    cx.problems.push('README.md: missing');
    return;
  }
  const p = (message: string): void => void cx.problems.push(`README.md: ${message}`);
  for (const file of files.keys()) if (file !== 'README.md' && !readme.includes(file)) p(`does not describe ${file}`);

  // What the pods use but the examples do not ship (Secrets hold keys and tokens): the README
  // creates it, with the keys the pods read.
  for (const e of cx.externals.values()) {
    const m = new RegExp(e.kind === 'Secret' ? `create secret (generic|tls) ${e.name}(?![-\\w])` : `create configmap ${e.name}(?![-\\w])`).exec(readme);
    if (!m) {
      p(`does not create ${e.kind} ${e.name}`);
      continue;
    }
    const command = commandAt(readme, m.index);
    const implicit = m[1] === 'tls' ? ['tls.crt', 'tls.key'] : [];
    for (const key of e.keys) {
      if (!implicit.includes(key) && !new RegExp(`(^|[\\s=/])${key.replace(/\./g, '\\.')}(=|\\s|$)`).test(command)) p(`does not create ${e.kind} ${e.name} with key ${key}`);
    }
  }

  // Every manifest file is applied, and the NATS the sidecars need before the sidecars: a sidecar
  // with revocation.nats does not serve until it has read the revocation stream.
  const applied = (file: string): number => {
    const m = new RegExp(`kubectl[^\\n]*\\bapply\\b(?:[^\\n]|\\\\\\n)*?-f ${file.replace(/\./g, '\\.')}(?![-\\w.])`).exec(readme);
    return m ? m.index + m[0].length : -1;
  };
  const manifestFiles = [...new Set(manifests.map((m) => m.file))];
  for (const file of manifestFiles) if (applied(file) < 0) p(`no kubectl apply of ${file}`);
  for (const sc of sidecars) {
    for (const url of new Set([...(sc.config.bus?.nats?.servers ?? []), ...(sc.config.revocation?.nats?.servers ?? [])])) {
      const svcName = /^(?:\w+:\/\/)?([^.:]+)/.exec(url)?.[1];
      const service = manifests.find((m) => m.kind === 'Service' && m.name === svcName);
      if (!service) continue;
      const natsFile = service.file;
      if (applied(natsFile) >= 0 && applied(sc.deployment.file) >= 0 && applied(natsFile) > applied(sc.deployment.file)) {
        p(`applies ${sc.deployment.file} before ${natsFile}, whose NATS the sidecar needs before it serves`);
      }
      const host = /^(?:\w+:\/\/)?([^:/]+)/.exec(url)?.[1] ?? '';
      if (!readme.includes(`DNS:${host}`)) p(`the NATS server certificate it makes does not name ${host} (subjectAltName DNS:${host})`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Mutations for the negative controls.

/** Re-serializes `file` with `edit` applied to its document of `kind` (and `name`, if given); comments are lost (fine here). */
function editYaml(files: Files, file: string, kind: string, edit: (doc: Obj) => void, name?: string): Files {
  let hit = false;
  const docs = parseAllDocuments(files.get(file) ?? '').map((d) => {
    const doc = d.toJS() as Obj;
    if (doc.kind === kind && (name === undefined || get(doc, 'metadata', 'name') === name)) {
      edit(doc);
      hit = true;
    }
    return YAML.stringify(doc);
  });
  if (!hit) throw new Error(`no ${kind} ${name ?? ''} in ${file}`);
  return new Map(files).set(file, docs.join('---\n'));
}

/** `file` without its document of `kind` (and `name`). */
function dropDoc(files: Files, file: string, kind: string, name?: string): Files {
  const docs = parseAllDocuments(files.get(file) ?? '').map((d) => d.toJS() as Obj);
  const kept = docs.filter((doc) => !(doc.kind === kind && (name === undefined || get(doc, 'metadata', 'name') === name)));
  if (kept.length === docs.length) throw new Error(`no ${kind} ${name ?? ''} in ${file}`);
  return new Map(files).set(file, kept.map((doc) => YAML.stringify(doc)).join('---\n'));
}

/** Edits nats.conf inside nats.yaml's ConfigMap. */
function editNatsConf(files: Files, from: string | RegExp, to: string): Files {
  return editYaml(files, NATS, 'ConfigMap', (d) => {
    const data = d.data as Obj;
    const conf = String(data['nats.conf']);
    if (typeof from === 'string' ? !conf.includes(from) : conf.search(from) < 0) throw new Error(`nats.conf does not contain ${String(from)}`);
    data['nats.conf'] = conf.replace(from, to);
  });
}

const podSpec = (workload: Obj): Obj => get(workload, 'spec', 'template', 'spec') as Obj;
const container = (workload: Obj, name: string): Obj => {
  const c = objs(podSpec(workload).containers).find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name}`);
  return c;
};
const mountOf = (c: Obj, name: string): Obj => {
  const m = objs(c.volumeMounts).find((x) => x.name === name);
  if (!m) throw new Error(`no mount ${name}`);
  return m;
};
const volumeNamed = (workload: Obj, name: string): Obj => {
  const v = objs(podSpec(workload).volumes).find((x) => x.name === name);
  if (!v) throw new Error(`no volume ${name}`);
  return v;
};
const rule = (np: Obj, i: number): Obj => objs(get(np, 'spec', 'ingress'))[i]!;

const DEPLOYMENT = 'agent-deployment.yaml';
const CONFIG = 'sigil-config.yaml';
const NATS = 'nats.yaml';
const MONITOR = 'servicemonitor.yaml';
const NETPOL = 'networkpolicy.yaml';
const PATCH = 'agent-deployment-hostpath.patch.yaml';
const PLANNER = 'spiffe://example.org/ns/agents/sa/planner';

t.test('examples/kubernetes are consistent', async (t) => {
  const files = await readTree(DIR);
  for (const f of ['README.md', CONFIG, DEPLOYMENT, 'service.yaml', MONITOR, NETPOL, NATS, PATCH, 'spire-registration.sh']) t.ok(files.has(f), `${f} exists`);
  const { problems, manifests, sidecars, patched } = checkExamples(files);
  t.strictSame(problems, [], 'no problems');
  t.strictSame(
    manifests.map((m) => `${m.kind}/${m.name}`).sort(),
    [
      'ConfigMap/nats-config',
      'ConfigMap/planner-sigil',
      'Deployment/planner',
      'NetworkPolicy/nats',
      'NetworkPolicy/planner',
      'Service/nats',
      'Service/nats-headless',
      'Service/planner',
      'Service/planner-metrics',
      'ServiceAccount/planner',
      'ServiceMonitor/planner-sigil',
      'StatefulSet/nats',
    ],
    'every manifest parsed',
  );

  t.equal(sidecars.length, 1);
  const sc = sidecars[0]!;
  t.equal(sc.configPath, '/etc/sigil/sigil.yaml');
  t.equal(sc.socketEnv, 'unix:///run/spire/sockets/agent.sock');
  // The same call the brief documents, spelled out: sigil.yaml as the ConfigMap holds it.
  const cm = manifests.find((m) => m.kind === 'ConfigMap' && m.name === 'planner-sigil')!;
  const config = parseConfig(String(get(cm.doc, 'data', 'sigil.yaml')), 'yaml', '/etc/sigil/sigil.yaml', { env: { SPIFFE_ENDPOINT_SOCKET: sc.socketEnv! } });
  t.match(config.identity, { kind: 'workloadApi', socket: 'unix:///run/spire/sockets/agent.sock', spiffeId: PLANNER, startupTimeoutMs: 30_000 });
  t.strictSame(config.inbound, { listen: { host: '0.0.0.0', port: 8443 }, upstream: 'http://127.0.0.1:3000', requireSignedFrames: false });
  t.match(config.admin, { listen: { host: '0.0.0.0', port: 15000 }, tokenFile: '/etc/sigil-admin/token' });
  t.equal(config.policy.cedar, '/etc/sigil/policy.cedar');
  t.equal(config.outbound?.routes.length, 1);
  t.match(config.bus, { local: { host: '127.0.0.1', port: 15002 }, nats: { servers: ['tls://nats.agents.svc.cluster.local:4222'], ca: '/etc/sigil-nats/ca.crt' } });
  t.match(config.revocation?.nats, { servers: ['tls://nats.agents.svc.cluster.local:4222'], ca: '/etc/sigil-nats/ca.crt', stream: 'SIGIL_REVOCATIONS', subject: 'sigil.revocations' });
  t.match(config.shutdown, { delayMs: 5_000, drainTimeoutMs: 10_000 });

  // The hostPath alternative: the same Deployment, the socket from the node.
  t.equal(patched.length, 1, 'the hostPath patch yields a checked Deployment');
  const hostPathVolume = patched[0]!.workload.volumes.get('spiffe-workload-api');
  t.strictSame(hostPathVolume, { name: 'spiffe-workload-api', hostPath: { path: '/run/spire/sockets', type: 'Directory' } }, 'the patch replaces the CSI source with a hostPath');
});

t.test('each check fails on a broken copy', async (t) => {
  const files = await readTree(DIR);
  const cases: { name: string; files: () => Files; expect: RegExp }[] = [
    // Parsing and metadata.
    { name: 'YAML syntax error', files: () => editText(files, 'service.yaml', 'type: ClusterIP', 'type: [ClusterIP'), expect: /service\.yaml document 1: YAML:/ },
    { name: 'empty document', files: () => new Map(files).set('service.yaml', `${files.get('service.yaml')!}---\n`), expect: /service\.yaml document 2: not a mapping/ },
    { name: 'plain ? in a flow mapping', files: () => editText(files, NATS, '{ path: "/healthz?js-server-only=true", port: monitor }', '{ path: /healthz?js-server-only=true, port: monitor }'), expect: /nats\.yaml line \d+: quote \/healthz\?js-server-only=true: kubectl's YAML parser refuses/ },
    { name: 'no apiVersion', files: () => editYaml(files, 'service.yaml', 'Service', (d) => delete d.apiVersion), expect: /service\.yaml document 1: no apiVersion/ },
    { name: 'no metadata.name', files: () => editYaml(files, CONFIG, 'ConfigMap', (d) => delete (d.metadata as Obj).name), expect: /sigil-config\.yaml document 1: no metadata\.name/ },
    { name: 'wrong apiVersion for the kind', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => (d.apiVersion = 'extensions/v1beta1')), expect: /NetworkPolicy planner\): apiVersion extensions\/v1beta1, but a NetworkPolicy is networking\.k8s\.io\/v1/ },
    { name: 'unknown kind', files: () => editYaml(files, NATS, 'StatefulSet', (d) => (d.kind = 'Statefulset')), expect: /kind Statefulset is not one the examples know/ },
    { name: 'name not DNS-1123', files: () => editYaml(files, MONITOR, 'Service', (d) => ((d.metadata as Obj).name = 'Planner_Metrics')), expect: /metadata\.name Planner_Metrics is not a DNS-1123 label/ },
    { name: 'no namespace', files: () => editYaml(files, MONITOR, 'ServiceMonitor', (d) => delete (d.metadata as Obj).namespace), expect: /ServiceMonitor planner-sigil\): no metadata\.namespace/ },
    { name: 'another namespace', files: () => editYaml(files, NATS, 'ConfigMap', (d) => ((d.metadata as Obj).namespace = 'nats')), expect: /ConfigMap nats-config\): namespace nats, but the other manifests are in agents/ },
    { name: 'defined twice', files: () => new Map(files).set('copy.yaml', files.get('service.yaml')!), expect: /\(Service planner\): defined twice/ },

    // Workloads.
    { name: 'container without image', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => delete container(d, 'planner').image), expect: /container planner has no image/ },
    { name: 'container without name', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => delete container(d, 'planner').name), expect: /a container has no name/ },
    { name: 'StatefulSet container without image', files: () => editYaml(files, NATS, 'StatefulSet', (d) => delete container(d, 'nats').image), expect: /StatefulSet nats\): container nats has no image/ },
    { name: 'mount of a missing volume', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (volumeNamed(d, 'sigil-admin-token').name = 'admin-token')), expect: /volumeMount "sigil-admin-token" names no volume/ },
    { name: 'mount of a missing claim template', files: () => editYaml(files, NATS, 'StatefulSet', (d) => (objs(get(d, 'spec', 'volumeClaimTemplates'))[0]!.metadata = { name: 'jetstream' })), expect: /volumeMount "data" names no volume/ },
    { name: 'selector not on the pod', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => ((get(d, 'spec', 'template', 'metadata') as Obj).labels = { app: 'other' })), expect: /Deployment planner\): the pod template lacks the selector's label/ },
    { name: 'StatefulSet selector not on the pod', files: () => editYaml(files, NATS, 'StatefulSet', (d) => ((get(d, 'spec', 'selector') as Obj).matchLabels = { app: 'nats' })), expect: /StatefulSet nats\): the pod template lacks the selector's label app=nats/ },
    { name: 'missing ServiceAccount', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (podSpec(d).serviceAccountName = 'nobody')), expect: /serviceAccountName nobody: no such ServiceAccount/ },
    { name: 'containerPort out of range', files: () => editYaml(files, NATS, 'StatefulSet', (d) => (objs(container(d, 'nats').ports)[1]!.containerPort = 70000)), expect: /container nats: containerPort 70000 is not 1\.\.65535/ },
    { name: 'port name too long', files: () => editText(files, DEPLOYMENT, '- name: admin\n', '- name: administration-port\n'), expect: /port name administration-port is not an IANA service name/ },
    { name: 'port name used twice', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'planner').ports = [{ name: 'mtls', containerPort: 3000 }])), expect: /port name mtls is used twice in the pod/ },
    { name: 'probe on an unknown port', files: () => editYaml(files, NATS, 'StatefulSet', (d) => (((container(d, 'nats').readinessProbe as Obj).httpGet as Obj).port = 'http')), expect: /container nats: readinessProbe port "http" is no port of container nats/ },
    { name: 'volume with two sources', files: () => editYaml(files, NATS, 'StatefulSet', (d) => (volumeNamed(d, 'config').emptyDir = {})), expect: /volume config has 2 sources \(configMap, emptyDir\), not one/ },
    { name: 'volume mounted by no one', files: () => editYaml(files, NATS, 'StatefulSet', (d) => (podSpec(d).volumes as Obj[]).push({ name: 'scratch', emptyDir: {} })), expect: /volume scratch is mounted by no container/ },
    { name: 'ConfigMap item key missing', files: () => editYaml(files, NATS, 'StatefulSet', (d) => ((volumeNamed(d, 'config').configMap as Obj).items = [{ key: 'nats-server.conf', path: 'nats.conf' }])), expect: /volume config: ConfigMap nats-config has no key "nats-server\.conf"/ },
    { name: 'StatefulSet without a headless Service', files: () => editYaml(files, NATS, 'StatefulSet', (d) => ((d.spec as Obj).serviceName = 'nats')), expect: /spec\.serviceName nats is not a headless Service/ },
    { name: 'claim template without storage', files: () => editYaml(files, NATS, 'StatefulSet', (d) => delete (get(objs(get(d, 'spec', 'volumeClaimTemplates'))[0], 'spec') as Obj).resources), expect: /volumeClaimTemplate data requests no storage/ },

    // The sidecar.
    { name: 'no sigil container', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'sigil').name = 'proxy')), expect: /no container named sigil/ },
    { name: 'CSI mount writable', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (mountOf(container(d, 'sigil'), 'spiffe-workload-api').readOnly = false)), expect: /Workload API socket volume must be mounted read-only/ },
    { name: 'CSI volume writable', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => ((volumeNamed(d, 'spiffe-workload-api').csi as Obj).readOnly = false)), expect: /csi\.spiffe\.io volume must be readOnly/ },
    { name: 'socket from another driver', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => ((volumeNamed(d, 'spiffe-workload-api').csi as Obj).driver = 'csi.example.com')), expect: /neither a csi\.spiffe\.io CSI volume nor a hostPath/ },
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
    { name: 'socket outside the mount', files: () => editText(files, DEPLOYMENT, 'unix:///run/spire/sockets/agent.sock', 'unix:///tmp/agent.sock'), expect: /the Workload API socket unix:\/\/\/tmp\/agent\.sock is on no volume mount/ },
    { name: 'sigil.yaml invalid', files: () => editText(files, CONFIG, 'startupTimeout: 30s', 'startupTimeout: 0s'), expect: /identity\.workloadApi\.startupTimeout: must be greater than 0/ },
    { name: 'sigil.yaml not workloadApi', files: () => editText(files, CONFIG, /^ {6}workloadApi:\n(?: {8}.*\n)+/m, '      files: { cert: /etc/sigil/svid.pem, key: /etc/sigil/svid.key, bundle: /etc/sigil/bundle.pem }\n'), expect: /identity is files, not workloadApi/ },
    { name: 'policy not in the ConfigMap', files: () => editText(files, CONFIG, 'cedar: ./policy.cedar', 'cedar: ./policies.cedar'), expect: /names \/etc\/sigil\/policies\.cedar, but .*has no key "policies\.cedar"/ },
    { name: 'policy does not compile', files: () => editText(files, CONFIG, 'action == Action::"connect"', 'action == Action::"conect"'), expect: /policy\.cedar does not compile/ },
    { name: 'token file on no mount', files: () => editText(files, CONFIG, 'tokenFile: /etc/sigil-admin/token', 'tokenFile: /var/run/sigil/token'), expect: /names \/var\/run\/sigil\/token, but .*is on no volume mount/ },
    { name: 'NATS CA on no mount', files: () => editText(files, CONFIG, 'ca: /etc/sigil-nats/ca.crt', 'ca: /etc/nats-ca/ca.crt'), expect: /names \/etc\/nats-ca\/ca\.crt, but .*is on no volume mount/ },
    { name: 'admin on loopback', files: () => editText(files, CONFIG, 'listen: 0.0.0.0:15000', 'listen: 127.0.0.1:15000'), expect: /admin\.listen 127\.0\.0\.1:15000 is loopback/ },
    { name: 'admin open without a token', files: () => editText(files, CONFIG, '      tokenFile: /etc/sigil-admin/token\n', ''), expect: /reachable from outside the pod: set admin\.tokenFile|admin\.listen: 0\.0\.0\.0 is reachable beyond loopback: set admin\.tokenFile/ }, // this test's check, or the loader's own
    { name: 'admin port moved', files: () => editText(files, CONFIG, 'listen: 0.0.0.0:15000', 'listen: 0.0.0.0:9901'), expect: /readinessProbe port admin \(15000\) is not admin\.listen's port 9901/ },
    { name: 'inbound port not declared', files: () => editText(files, CONFIG, 'listen: 0.0.0.0:8443', 'listen: 0.0.0.0:9443'), expect: /does not declare inbound\.listen's port 9443/ },
    { name: 'readiness on /healthz', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (((container(d, 'sigil').readinessProbe as Obj).httpGet as Obj).path = '/healthz')), expect: /readinessProbe asks for \/healthz, not \/readyz/ },
    { name: 'liveness on another port', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (((container(d, 'sigil').livenessProbe as Obj).httpGet as Obj).port = 8443)), expect: /livenessProbe port 8443 \(8443\) is not admin\.listen's port 15000/ },
    { name: 'liveness not httpGet', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'sigil').livenessProbe = { tcpSocket: { port: 'admin' } })), expect: /livenessProbe is not an httpGet probe/ },
    { name: 'scrape annotation on another port', files: () => editText(files, DEPLOYMENT, 'prometheus.io/port: "15000"', 'prometheus.io/port: "9090"'), expect: /prometheus\.io\/port 9090/ },
    { name: 'no shutdown.delay', files: () => editText(files, CONFIG, '      delay: 5s\n', ''), expect: /shutdown\.delay is not set/ },
    { name: 'grace period shorter than delay + drain', files: () => editText(files, DEPLOYMENT, 'terminationGracePeriodSeconds: 30', 'terminationGracePeriodSeconds: 15'), expect: /terminationGracePeriodSeconds 15 is not more than shutdown\.delay \+ shutdown\.drainTimeout \(15s\)/ },

    // The hostPath patch.
    { name: 'patch keeps the CSI source', files: () => editText(files, PATCH, /^ *csi: null.*\n/m, ''), expect: /patched by agent-deployment-hostpath\.patch\.yaml: volume spiffe-workload-api has 2 sources \(csi, hostPath\)/ },
    { name: 'hostPath not a Directory', files: () => editText(files, PATCH, 'type: Directory', 'type: DirectoryOrCreate'), expect: /patched by .*hostPath volume spiffe-workload-api: type must be Directory/ },
    { name: 'patch adds a volume', files: () => editText(files, PATCH, '- name: spiffe-workload-api', '- name: spire-socket'), expect: /the patch adds volume spire-socket instead of replacing one/ },
    { name: 'patch of a missing Deployment', files: () => editText(files, PATCH, 'name: planner', 'name: planer'), expect: /patches Deployment planer in namespace agents, which is not in the examples/ },

    // Services.
    { name: 'Service targets an undeclared port', files: () => editText(files, 'service.yaml', 'targetPort: mtls', 'targetPort: 9443'), expect: /targetPort 9443 is not a port the containers of planner declare/ },
    { name: 'Service targets an unknown name', files: () => editText(files, 'service.yaml', 'targetPort: mtls', 'targetPort: https'), expect: /targetPort https is not a port the containers of planner declare/ },
    { name: 'NATS Service targets an unknown name', files: () => editYaml(files, NATS, 'Service', (d) => (objs(get(d, 'spec', 'ports'))[0]!.targetPort = 'clients'), 'nats'), expect: /Service nats\): port 4222: targetPort clients is not a port/ },
    { name: 'Service exposes admin', files: () => editYaml(files, 'service.yaml', 'Service', (d) => (get(d, 'spec', 'ports') as Obj[]).push({ name: 'admin', port: 15000, targetPort: 'admin' })), expect: /exposes 15000, which is not sigil's inbound\.listen port/ },
    {
      name: 'metrics Service exposes another port',
      files: () =>
        editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'planner').ports = [{ name: 'app', containerPort: 3000 }])).set(
          MONITOR,
          editYaml(files, MONITOR, 'Service', (d) => (objs(get(d, 'spec', 'ports'))[0]!.targetPort = 'app')).get(MONITOR)!,
        ),
      expect: /planner-metrics\): port 15000 exposes 3000, which is neither sigil's inbound\.listen port/,
    },
    { name: 'metrics Service outside the cluster', files: () => editYaml(files, MONITOR, 'Service', (d) => ((d.spec as Obj).type = 'NodePort')), expect: /a metrics Service must be ClusterIP/ },
    { name: 'Service port out of range', files: () => editYaml(files, 'service.yaml', 'Service', (d) => (objs(get(d, 'spec', 'ports'))[0]!.port = 0)), expect: /port 0 is not 1\.\.65535/ },
    { name: 'multi-port Service without names', files: () => editYaml(files, NATS, 'Service', (d) => (get(d, 'spec', 'ports') as Obj[]).push({ port: 8222, targetPort: 'monitor' }), 'nats-headless'), expect: /port 8222 has no name/ },
    { name: 'Service selects nothing', files: () => editYaml(files, 'service.yaml', 'Service', (d) => ((d.spec as Obj).selector = { app: 'nothing' })), expect: /selects no Deployment/ },
    { name: 'no Service for the mTLS port', files: () => new Map(files).set('service.yaml', 'apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: other, namespace: agents }\n'), expect: /no Service exposes sigil's inbound port 8443/ },

    // The ServiceMonitor.
    { name: 'ServiceMonitor selects nothing', files: () => editYaml(files, MONITOR, 'ServiceMonitor', (d) => (get(d, 'spec', 'selector', 'matchLabels') as Obj)['app.kubernetes.io/component'] = 'metric'), expect: /ServiceMonitor planner-sigil\): selects no Service/ },
    { name: 'ServiceMonitor in another namespace', files: () => editYaml(files, MONITOR, 'ServiceMonitor', (d) => ((get(d, 'spec', 'namespaceSelector') as Obj).matchNames = ['monitoring'])), expect: /ServiceMonitor planner-sigil\): selects no Service/ },
    { name: 'ServiceMonitor also selects the mTLS Service', files: () => editYaml(files, MONITOR, 'ServiceMonitor', (d) => delete (get(d, 'spec', 'selector', 'matchLabels') as Obj)['app.kubernetes.io/component']), expect: /endpoint port "admin" is no port of Service planner$/m },
    { name: 'ServiceMonitor port unknown', files: () => editYaml(files, MONITOR, 'ServiceMonitor', (d) => (objs(get(d, 'spec', 'endpoints'))[0]!.port = 'metrics')), expect: /endpoint port "metrics" is no port of Service planner-metrics/ },
    { name: 'ServiceMonitor path', files: () => editYaml(files, MONITOR, 'ServiceMonitor', (d) => (objs(get(d, 'spec', 'endpoints'))[0]!.path = '/stats')), expect: /endpoint 1 scrapes \/stats, not \/metrics/ },
    { name: 'metrics Service not scraped', files: () => dropDoc(files, MONITOR, 'ServiceMonitor'), expect: /Service planner-metrics\): no ServiceMonitor selects it/ },

    // NetworkPolicies.
    { name: 'NetworkPolicy selects nothing', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => ((get(d, 'spec', 'podSelector') as Obj).matchLabels = { app: 'planner' })), expect: /NetworkPolicy planner\): spec\.podSelector selects no pods/ },
    { name: 'NetworkPolicy without Ingress type', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => ((d.spec as Obj).policyTypes = ['Egress'])), expect: /policyTypes lacks Ingress/ },
    { name: 'NetworkPolicy port unknown', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => (objs(rule(d, 1).ports)[0]!.port = 'metrics')), expect: /ingress rule 2: port "metrics" is no port of the pods of planner/ },
    { name: 'NetworkPolicy allows the agent port', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => (rule(d, 0).ports as Obj[]).push({ port: 3000 })), expect: /ingress rule 1: port 3000 is no port of the pods/ },
    { name: 'NetworkPolicy allows a declared non-sigil port', files: () => editYaml(files, DEPLOYMENT, 'Deployment', (d) => (container(d, 'planner').ports = [{ name: 'app', containerPort: 3000 }])).set(NETPOL, editYaml(files, NETPOL, 'NetworkPolicy', (d) => (rule(d, 0).ports as Obj[]).push({ port: 'app' })).get(NETPOL)!), expect: /allows port 3000, which is neither sigil's inbound port/ },
    { name: 'admin port open to all', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => delete rule(d, 1).from), expect: /ingress rule 2: opens the admin port 15000 to every source/ },
    { name: 'mTLS port open to all', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => delete rule(d, 0).from), expect: /ingress rule 1: opens the mTLS port 8443 to every source/ },
    { name: 'rule without ports', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => delete rule(d, 0).ports), expect: /ingress rule 1: allows every port/ },
    { name: 'from pods that do not exist', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => (objs(rule(d, 0).from)[0]!.podSelector = { matchLabels: { 'app.kubernetes.io/part-of': 'agent' } })), expect: /from podSelector .* matches no pods of the examples/ },
    { name: 'mTLS port not allowed', files: () => editYaml(files, NETPOL, 'NetworkPolicy', (d) => ((d.spec as Obj).ingress = [rule(d, 1)])), expect: /no NetworkPolicy rule lets the agents reach sigil's mTLS port/ },
    { name: 'no NetworkPolicy for the agent', files: () => new Map(files).set(NETPOL, 'apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: other, namespace: agents }\n'), expect: /no NetworkPolicy restricts ingress to the pods of Deployment planner/ },
    { name: 'no NetworkPolicy for NATS', files: () => dropDoc(files, NATS, 'NetworkPolicy'), expect: /no NetworkPolicy restricts ingress to the pods of StatefulSet nats/ },

    // NATS.
    { name: 'NATS URL not a Service', files: () => editText(files, CONFIG, 'tls://nats.agents.svc.cluster.local:4222', 'tls://nats.example.com:4222'), expect: /nats\.example\.com is not a Service DNS name/ },
    { name: 'NATS URL names a missing Service', files: () => editText(files, CONFIG, 'tls://nats.agents.svc.cluster.local:4222', 'tls://nats-client.agents.svc.cluster.local:4222'), expect: /no Service nats-client in namespace agents/ },
    { name: 'NATS URL on another port', files: () => editText(files, CONFIG, 'tls://nats.agents.svc.cluster.local:4222', 'tls://nats.agents.svc.cluster.local:4223'), expect: /Service nats has no port 4223/ },
    { name: 'NATS URL plaintext', files: () => editText(files, CONFIG, 'tls://nats.agents.svc.cluster.local:4222', 'nats://nats.agents.svc.cluster.local:4222'), expect: /use tls:\/\// },
    { name: 'nats.conf listens elsewhere', files: () => editNatsConf(files, 'listen: 0.0.0.0:4222', 'listen: 0.0.0.0:4333'), expect: /nats\.conf: listens on 4333, but Service nats sends 4222 to container port 4222/ },
    { name: 'nats.conf without client certificates', files: () => editNatsConf(files, /^ *verify_and_map: true.*\n/m, ''), expect: /tls does not require client certificates/ },
    { name: 'nats.conf without TLS', files: () => editNatsConf(files, /^ *tls \{[^}]*\}\n/m, ''), expect: /no tls block/ },
    { name: 'nats.conf cert on no mount', files: () => editNatsConf(files, 'cert_file: /etc/nats-tls/tls.crt', 'cert_file: /etc/nats/tls.crt'), expect: /tls cert_file \/etc\/nats\/tls\.crt: \/etc\/nats\/tls\.crt is on no volume mount/ },
    { name: 'nats.conf without JetStream', files: () => editNatsConf(files, /^ *jetstream \{[^}]*\}\n/m, ''), expect: /no jetstream block, but revocation\.nats needs JetStream/ },
    { name: 'JetStream on no writable mount', files: () => editNatsConf(files, 'store_dir: /data', 'store_dir: /var/lib/nats'), expect: /jetstream store_dir \/var\/lib\/nats is on no writable mount/ },
    { name: 'max_payload too small', files: () => editNatsConf(files, 'max_payload: 2MB', 'max_payload: 1MB'), expect: /max_payload 1MB leaves no room for a 1048576-byte envelope/ },
    { name: 'no NATS user for the planner', files: () => editNatsConf(files, `user: "${PLANNER}"`, 'user: "spiffe://example.org/planner"'), expect: /no user spiffe:\/\/example\.org\/ns\/agents\/sa\/planner/ },
    { name: 'planner may not read the stream', files: () => editNatsConf(files, /^ *"\$JS\.API\.CONSUMER\.MSG\.NEXT\.SIGIL_REVOCATIONS\.>",\n/m, ''), expect: /user spiffe:\/\/example\.org\/ns\/agents\/sa\/planner may not publish \$JS\.API\.CONSUMER\.MSG\.NEXT\.SIGIL_REVOCATIONS\.>/ },
    { name: 'stream renamed in sigil.yaml only', files: () => editText(files, CONFIG, 'stream: SIGIL_REVOCATIONS', 'stream: REVOCATIONS'), expect: /may not publish \$JS\.API\.STREAM\.INFO\.REVOCATIONS/ },
    { name: 'createStream without the permission', files: () => editNatsConf(files, /^ *"\$JS\.API\.STREAM\.CREATE\.SIGIL_REVOCATIONS".*\n/m, ''), expect: /planner may not publish \$JS\.API\.STREAM\.CREATE\.SIGIL_REVOCATIONS/ },
    { name: 'no _INBOX for the planner', files: () => editNatsConf(files, /^ *"_INBOX\.>" .*\n/m, ''), expect: /planner may not subscribe _INBOX\.>/ },
    { name: 'planner may publish records', files: () => editNatsConf(files, '"plans.>",', '"plans.>", "sigil.revocations.>",'), expect: /user spiffe:\/\/example\.org\/ns\/agents\/sa\/planner may publish revocation records/ },
    { name: 'planner may publish anything', files: () => editNatsConf(files, '"plans.>",', '">",'), expect: /planner may publish \$JS\.API\.STREAM\.DELETE\.SIGIL_REVOCATIONS/ },
    { name: 'a user may delete the stream', files: () => editNatsConf(files, '"sigil.revocations.>",', '"sigil.revocations.>", "$JS.API.STREAM.>",'), expect: /revoker may publish \$JS\.API\.STREAM\.DELETE\.SIGIL_REVOCATIONS: only operators/ },
    { name: 'a user without permissions', files: () => editNatsConf(files, /(user: "spiffe:\/\/example\.org\/ns\/ops\/sa\/revoker")\n *permissions: \{/, '$1\n          other: {'), expect: /revoker may publish \$JS\.API\.STREAM\.PURGE\.SIGIL_REVOCATIONS/ },
    { name: 'issuer not in the policy', files: () => editText(files, CONFIG, 'principal == Agent::"spiffe://example.org/ns/ops/sa/revoker"', 'principal == Agent::"spiffe://example.org/ns/ops/sa/oncall"'), expect: /user spiffe:\/\/example\.org\/ns\/ops\/sa\/revoker may publish revocation records .* does not permit it revocation\.issue/ },

    // The registration script.
    { name: 'entry selects the agent container', files: () => editText(files, 'spire-registration.sh', '-selector k8s:container-name:sigil', '-selector k8s:container-name:planner'), expect: /lacks -selector k8s:container-name:sigil/ },
    { name: 'entry in another namespace', files: () => editText(files, 'spire-registration.sh', '-selector k8s:ns:agents', '-selector k8s:ns:default'), expect: /lacks -selector k8s:ns:agents/ },
    { name: 'entry for another ID', files: () => editText(files, 'spire-registration.sh', '-spiffeID spiffe://example.org/ns/agents/sa/planner', '-spiffeID spiffe://example.org/planner'), expect: /no workload entry with -spiffeID spiffe:\/\/example\.org\/ns\/agents\/sa\/planner/ },
    { name: 'entry under an unknown parent', files: () => editText(files, 'spire-registration.sh', '-parentID spiffe://example.org/ns/spire/sa/spire-agent', '-parentID spiffe://example.org/agent'), expect: /-parentID spiffe:\/\/example\.org\/agent, which is no node entry/ },
    { name: 'script syntax error', files: () => editText(files, 'spire-registration.sh', 'spire_server() {', 'spire_server() ('), expect: /spire-registration\.sh: sh -n/ },

    // The README.
    { name: 'README misses a file', files: () => new Map(files).set('extra.yaml', 'apiVersion: v1\nkind: ServiceAccount\nmetadata: { name: extra, namespace: agents }\n'), expect: /README\.md: does not describe extra\.yaml/ },
    { name: 'README misses the Secret', files: () => editText(files, 'README.md', 'create secret generic planner-sigil-admin-token', 'create secret generic admin-token'), expect: /README\.md: does not create Secret planner-sigil-admin-token/ },
    { name: 'README misses the NATS Secret', files: () => editText(files, 'README.md', 'create secret tls nats-server-tls', 'create secret tls nats-tls'), expect: /README\.md: does not create Secret nats-server-tls/ },
    { name: 'README misses a ConfigMap key', files: () => editText(files, 'README.md', '--from-file=bundle.crt=', '--from-file=ca.pem='), expect: /README\.md: does not create ConfigMap nats-client-ca with key bundle\.crt/ },
    { name: 'README never applies a manifest', files: () => editText(files, 'README.md', ' -f networkpolicy.yaml', ''), expect: /README\.md: no kubectl apply of networkpolicy\.yaml/ },
    {
      name: 'README applies the agents before NATS',
      files: () => {
        const moved = editText(files, 'README.md', 'kubectl apply -f nats.yaml\n', '');
        return moved.set('README.md', `${moved.get('README.md')!}\n    kubectl apply -f nats.yaml\n`);
      },
      expect: /README\.md: applies agent-deployment\.yaml before nats\.yaml/,
    },
    { name: 'README certificate misses the host', files: () => editText(files, 'README.md', 'DNS:nats.agents.svc.cluster.local', 'DNS:nats'), expect: /does not name nats\.agents\.svc\.cluster\.local/ },
  ];
  for (const c of cases) {
    const { problems } = checkExamples(c.files());
    t.match(problems.join('\n'), c.expect, c.name);
  }
});
