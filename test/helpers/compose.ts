// A Docker Compose file read the way Compose reads it, for tests that check a compose file
// without a Docker engine: services with their image/build, command, environment, depends_on,
// mounts (bind, named volume, tmpfs), published ports, network_mode and healthcheck, in short and
// long syntax. Shapes Compose itself would reject are reported as problems, not thrown.
import path from 'node:path';
import YAML from 'yaml';
import { isObj, str, type Obj } from './example-files.js';

export const DEPENDS_ON_CONDITIONS = ['service_started', 'service_healthy', 'service_completed_successfully'] as const;
export type DependsOnCondition = (typeof DEPENDS_ON_CONDITIONS)[number];

export interface Mount {
  /** Absolute path inside the container. */
  target: string;
  kind: 'bind' | 'volume' | 'tmpfs';
  /** bind: the host path as written (relative to the compose file's folder); volume: its name; tmpfs: ''. */
  source: string;
  readOnly: boolean;
}

export interface PublishedPort {
  hostIp: string | undefined;
  published: number | undefined;
  target: number;
}

export interface ComposeService {
  name: string;
  raw: Obj;
  image: string | undefined;
  build: { context: string; dockerfile: string } | undefined;
  entrypoint: string[] | undefined;
  command: string[] | undefined;
  environment: Record<string, string>;
  dependsOn: Map<string, string>;
  mounts: Mount[];
  ports: PublishedPort[];
  networkMode: string | undefined;
  /** `disabled`: healthcheck.disable or test NONE; `explicit`: a test of its own; `inherit`: whatever the image has. */
  healthcheck: 'disabled' | 'explicit' | 'inherit';
  healthTest: string[] | undefined;
  readOnly: boolean;
  restart: string | undefined;
}

export interface ComposeProject {
  services: Map<string, ComposeService>;
  volumes: Set<string>;
}

/** Parses a compose file (YAML merge keys on, as Compose's YAML 1.1 parser has them). */
export function parseCompose(text: string, problems: string[], where = 'docker-compose.yml'): ComposeProject | undefined {
  const doc = YAML.parseDocument(text, { merge: true });
  for (const e of [...doc.errors, ...doc.warnings]) problems.push(`${where}: YAML: ${e.message.split('\n')[0]}`);
  if (doc.errors.length > 0) return undefined;
  const root = doc.toJS() as unknown;
  if (!isObj(root) || !isObj(root.services)) {
    problems.push(`${where}: no services`);
    return undefined;
  }
  const volumes = new Set(Object.keys(isObj(root.volumes) ? root.volumes : {}));
  const services = new Map<string, ComposeService>();
  for (const [name, raw] of Object.entries(root.services)) {
    if (!isObj(raw)) {
      problems.push(`service ${name}: not a mapping`);
      continue;
    }
    services.set(name, parseService(name, raw, (m) => problems.push(`service ${name}: ${m}`)));
  }
  return { services, volumes };
}

function parseService(name: string, raw: Obj, problem: (m: string) => void): ComposeService {
  const build = raw.build === undefined ? undefined : typeof raw.build === 'string' ? { context: raw.build, dockerfile: 'Dockerfile' } : isObj(raw.build) ? { context: str(raw.build.context) ?? '.', dockerfile: str(raw.build.dockerfile) ?? 'Dockerfile' } : undefined;
  const health = isObj(raw.healthcheck) ? raw.healthcheck : undefined;
  const healthTest = health === undefined ? undefined : argv(health.test);
  return {
    name,
    raw,
    image: str(raw.image),
    build,
    entrypoint: argv(raw.entrypoint),
    command: argv(raw.command),
    environment: environment(raw.environment, problem),
    dependsOn: dependsOn(raw.depends_on, problem),
    mounts: mounts(raw, problem),
    ports: ports(raw.ports, problem),
    networkMode: str(raw.network_mode),
    healthcheck: health?.disable === true || healthTest?.[0] === 'NONE' ? 'disabled' : healthTest && healthTest.length > 0 ? 'explicit' : 'inherit',
    healthTest,
    readOnly: raw.read_only === true,
    restart: str(raw.restart),
  };
}

/** Compose's command forms: a list, or a string split like a shell would (no quoting used here). */
function argv(v: unknown): string[] | undefined {
  if (Array.isArray(v)) return v.map(String);
  if (typeof v === 'string') return v.split(/\s+/).filter((s) => s !== '');
  return undefined;
}

function environment(v: unknown, problem: (m: string) => void): Record<string, string> {
  const out: Record<string, string> = {};
  if (v === undefined || v === null) return out;
  if (Array.isArray(v)) {
    for (const entry of v.map(String)) {
      const eq = entry.indexOf('=');
      if (eq > 0) out[entry.slice(0, eq)] = entry.slice(eq + 1);
    }
  } else if (isObj(v)) {
    for (const [k, value] of Object.entries(v)) out[k] = value === null ? '' : String(value);
  } else problem('environment is neither a list nor a mapping');
  return out;
}

function dependsOn(v: unknown, problem: (m: string) => void): Map<string, string> {
  const out = new Map<string, string>();
  if (v === undefined) return out;
  if (Array.isArray(v)) for (const name of v.map(String)) out.set(name, 'service_started');
  else if (isObj(v)) for (const [name, spec] of Object.entries(v)) out.set(name, str(isObj(spec) ? spec.condition : undefined) ?? 'service_started');
  else problem('depends_on is neither a list nor a mapping');
  return out;
}

const isBindSource = (s: string): boolean => s.startsWith('.') || s.startsWith('/') || s.startsWith('~');

function mounts(raw: Obj, problem: (m: string) => void): Mount[] {
  const out: Mount[] = [];
  for (const v of Array.isArray(raw.volumes) ? raw.volumes : []) {
    if (typeof v === 'string') {
      const [source, target, mode] = v.split(':');
      if (source === undefined || target === undefined || !target.startsWith('/')) {
        problem(`volume ${JSON.stringify(v)}: not SOURCE:TARGET[:MODE] with an absolute TARGET`);
        continue;
      }
      const modes = (mode ?? '').split(',');
      out.push({ target, kind: isBindSource(source) ? 'bind' : 'volume', source, readOnly: modes.includes('ro') });
    } else if (isObj(v)) {
      const type = str(v.type);
      const target = str(v.target);
      if ((type !== 'bind' && type !== 'volume' && type !== 'tmpfs') || target === undefined) {
        problem(`volume ${JSON.stringify(v)}: needs type bind|volume|tmpfs and a target`);
        continue;
      }
      out.push({ target, kind: type, source: str(v.source) ?? '', readOnly: v.read_only === true });
    } else problem(`volume ${JSON.stringify(v)}: not a string or a mapping`);
  }
  const tmpfs = typeof raw.tmpfs === 'string' ? [raw.tmpfs] : Array.isArray(raw.tmpfs) ? raw.tmpfs.map(String) : [];
  for (const t of tmpfs) out.push({ target: t.split(':')[0]!, kind: 'tmpfs', source: '', readOnly: false });
  return out;
}

function ports(v: unknown, problem: (m: string) => void): PublishedPort[] {
  const out: PublishedPort[] = [];
  for (const p of Array.isArray(v) ? v : []) {
    if (isObj(p)) {
      out.push({ hostIp: str(p.host_ip), published: p.published === undefined ? undefined : Number(p.published), target: Number(p.target) });
      continue;
    }
    // [HOST_IP:][PUBLISHED:]TARGET[/PROTOCOL]
    const parts = String(p).replace(/\/(tcp|udp)$/, '').split(':');
    const target = Number(parts.pop());
    const published = parts.length > 0 ? Number(parts.pop()) : undefined;
    const hostIp = parts.length > 0 ? parts.join(':') : undefined;
    if (!Number.isInteger(target) || (published !== undefined && !Number.isInteger(published))) problem(`ports: ${JSON.stringify(p)} is not [HOST_IP:][PUBLISHED:]TARGET`);
    else out.push({ hostIp, published, target });
  }
  return out;
}

/** The mount that holds `containerPath` in `service` (the longest matching target), and the path below it. */
export function mountOf(service: ComposeService, containerPath: string): { mount: Mount; rel: string } | undefined {
  const hit = service.mounts
    .filter((m) => containerPath === m.target || containerPath.startsWith(m.target.endsWith('/') ? m.target : `${m.target}/`))
    .sort((a, b) => b.target.length - a.target.length)[0];
  return hit && { mount: hit, rel: path.posix.relative(hit.target, containerPath) };
}

/**
 * Whether `from` starts only after `to` reached `condition`: a chain of depends_on edges (or the
 * implicit one of network_mode service:X) from `from` to `to` whose last edge has that condition.
 */
export function startsAfter(project: ComposeProject, from: string, to: string, condition: DependsOnCondition): boolean {
  const seen = new Set<string>();
  const queue = [from];
  while (queue.length > 0) {
    const name = queue.shift()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const s = project.services.get(name);
    if (!s) continue;
    if (s.dependsOn.get(to) === condition) return true;
    queue.push(...s.dependsOn.keys());
    const shared = s.networkMode?.match(/^service:(.+)$/)?.[1];
    if (shared) queue.push(shared);
  }
  return false;
}

