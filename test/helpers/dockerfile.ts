// Reads the repository's Dockerfile and replays its build on this machine (CI has no Docker
// engine): every container path /p becomes <root>/p, context COPYs copy from the repository,
// `COPY --from=stage` from that stage's files, RUN runs under `sh -c` in the mapped WORKDIR.
// Only the instructions the Dockerfile's header comment allows are understood; anything else
// fails the replay rather than being skipped.
import { spawn } from 'node:child_process';
import { cp, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';

export interface Instruction {
  keyword: string;
  /** The text after the keyword, continuation lines joined. */
  args: string;
  line: number;
}

export interface Stage {
  name: string;
  from: string;
  instructions: Instruction[];
}

export interface Dockerfile {
  /** ARGs declared before the first FROM, with their defaults. */
  args: Record<string, string>;
  stages: Stage[];
}

const KNOWN = new Set(['FROM', 'ARG', 'ENV', 'WORKDIR', 'COPY', 'RUN', 'USER', 'EXPOSE', 'STOPSIGNAL', 'HEALTHCHECK', 'ENTRYPOINT', 'CMD', 'LABEL']);

export function parseDockerfile(text: string): Dockerfile {
  const result: Dockerfile = { args: {}, stages: [] };
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let logical = lines[i]!;
    if (/^\s*(#|$)/.test(logical)) continue;
    while (logical.endsWith('\\') && i + 1 < lines.length) {
      logical = logical.slice(0, -1);
      i++;
      // Comment lines inside a continuation are dropped, as Docker does.
      if (!/^\s*#/.test(lines[i]!)) logical += ' ' + lines[i]!.trim();
    }
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(logical);
    if (!m) throw new Error(`Dockerfile line ${start + 1}: cannot read ${JSON.stringify(logical)}`);
    const keyword = m[1]!.toUpperCase();
    const args = m[2]!.trim();
    if (!KNOWN.has(keyword)) throw new Error(`Dockerfile line ${start + 1}: ${keyword} is not understood by the replay`);
    if (keyword === 'FROM') {
      const fm = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!fm) throw new Error(`Dockerfile line ${start + 1}: cannot read FROM ${args}`);
      const from = fm[1]!.replace(/\$\{(\w+)\}/g, (_, name: string) => result.args[name] ?? '');
      result.stages.push({ name: fm[2] ?? String(result.stages.length), from, instructions: [] });
      continue;
    }
    const stage = result.stages.at(-1);
    if (!stage) {
      if (keyword !== 'ARG') throw new Error(`Dockerfile line ${start + 1}: ${keyword} before FROM`);
      const [name, value = ''] = args.split('=');
      result.args[name!] = value;
      continue;
    }
    stage.instructions.push({ keyword, args, line: start + 1 });
  }
  return result;
}

/** `KEY=value KEY2="v 2"` (ENV and LABEL key=value form). */
export function parseAssignments(args: string): Record<string, string> {
  const out: Record<string, string> = {};
  let rest = args.trim();
  while (rest !== '') {
    const m = /^(\S+?)=("(?:[^"\\]|\\.)*"|[^\s"]*)(?:\s+|$)/.exec(rest);
    // The legacy `ENV KEY value` form (or anything else) is refused, not half-read.
    if (!m) throw new Error(`expected KEY=value assignments, got ${JSON.stringify(rest)}`);
    out[m[1]!] = m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!;
    rest = rest.slice(m[0].length);
  }
  return out;
}

/** The exec (JSON array) form of ENTRYPOINT / CMD / HEALTHCHECK CMD. */
export function execForm(args: string): string[] {
  const parsed = JSON.parse(args) as unknown;
  if (!Array.isArray(parsed) || !parsed.every((s) => typeof s === 'string')) throw new Error(`expected the exec form ["a", "b"], got ${args}`);
  return parsed as string[];
}

export interface CopyInstruction {
  from?: string;
  sources: string[];
  dest: string;
}

export function parseCopy(args: string): CopyInstruction {
  const words = args.split(/\s+/);
  let from: string | undefined;
  while (words[0]?.startsWith('--')) {
    const flag = words.shift()!;
    if (flag.startsWith('--from=')) from = flag.slice('--from='.length);
    else throw new Error(`COPY flag ${flag} is not understood by the replay`);
  }
  if (words.length < 2) throw new Error(`COPY needs a source and a destination: ${args}`);
  const dest = words.pop()!;
  return { ...(from === undefined ? {} : { from }), sources: words, dest };
}

export function lastOf(stage: Stage, keyword: string): Instruction | undefined {
  return stage.instructions.filter((i) => i.keyword === keyword).at(-1);
}

/** Container path → its place under `root`. */
export function mapPath(root: string, containerPath: string): string {
  return path.join(root, containerPath);
}

export interface ReplayOptions {
  /** The build context (the repository). */
  context: string;
  /** Where container paths live. */
  root: string;
  /** Extra environment for RUN steps (e.g. npm's prefer-offline). */
  env?: Record<string, string>;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** Runs every stage's COPY and RUN (and tracks WORKDIR and ENV) in order. */
export async function replayBuild(df: Dockerfile, options: ReplayOptions): Promise<void> {
  for (const stage of df.stages) {
    // Each stage is a separate filesystem in Docker; here a stage's paths live under root/<stage>.
    const stageRoot = path.join(options.root, stage.name);
    await mkdir(stageRoot, { recursive: true });
    let workdir = '/';
    const env: Record<string, string> = {};
    for (const ins of stage.instructions) {
      switch (ins.keyword) {
        case 'WORKDIR':
          workdir = path.posix.resolve(workdir, ins.args);
          await mkdir(mapPath(stageRoot, workdir), { recursive: true });
          break;
        case 'ENV':
          Object.assign(env, parseAssignments(ins.args));
          break;
        case 'COPY': {
          const copy = parseCopy(ins.args);
          const destIsDir = copy.dest.endsWith('/') || copy.sources.length > 1;
          const dest = mapPath(stageRoot, path.posix.resolve(workdir, copy.dest));
          for (const source of copy.sources) {
            const from = copy.from === undefined ? path.join(options.context, source) : mapPath(path.join(options.root, copy.from), source);
            if (copy.from !== undefined && !path.posix.isAbsolute(source)) throw new Error(`line ${ins.line}: COPY --from sources must be absolute`);
            // As Docker: a folder's contents go into dest; a file goes into dest/ or becomes dest.
            const target = !(await stat(from)).isDirectory() && destIsDir ? path.join(dest, path.basename(source)) : dest;
            await mkdir(path.dirname(target), { recursive: true });
            await cp(from, target, { recursive: true, verbatimSymlinks: true });
          }
          break;
        }
        case 'RUN': {
          if (/(^|\s)\/(?!dev\/null)/.test(ins.args)) throw new Error(`line ${ins.line}: RUN must not name absolute container paths (the replay cannot map them): ${ins.args}`);
          options.log?.(`RUN ${ins.args}`);
          await run(ins.args, mapPath(stageRoot, workdir), { ...process.env, ...env, ...options.env });
          break;
        }
        default:
          break; // USER, EXPOSE, HEALTHCHECK, ... describe the image; nothing to build
      }
    }
  }
}

function run(command: string, cwd: string, env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', ['-c', command], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`RUN ${command} exited ${code}:\n${output.slice(-4000)}`))));
  });
}

/**
 * Whether `.dockerignore` lets `source` into the build context. Understands the forms this
 * repository uses: `*`, `name`, `name/` and their `!` exceptions; the last matching line wins.
 */
export function inBuildContext(dockerignore: string, source: string): boolean {
  const s = source.replace(/^\.\//, '').replace(/\/$/, '');
  let included = true;
  for (const raw of dockerignore.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const negated = line.startsWith('!');
    const pattern = (negated ? line.slice(1) : line).replace(/\/$/, '');
    const matches = pattern === '*' || s === pattern || s.startsWith(`${pattern}/`);
    if (matches) included = negated;
  }
  return included;
}
