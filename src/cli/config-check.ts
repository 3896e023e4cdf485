// `sigil config check [FILE | --config FILE] [--json] [--schema-only]`: validate a sidecar config
// the way `sigil run` would (SIGIL_* overrides from this environment applied), then check what
// the files it names contain, and print the effective configuration with secrets redacted.
// Exit 0: valid. Exit 1: invalid (stderr names each key and problem). Nothing is started.
import { X509Certificate } from 'node:crypto';
import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import YAML from 'yaml';
import { compileCedarPolicy, PolicyLoadError } from '../authz/index.js';
import { effectiveView } from '../config/effective.js';
import { BROKER_ENV_OVERRIDES, ConfigError, foreignOverrides, loadConfig, misspelledOverrides, SIDECAR_ENV_OVERRIDES, type AppliedOverride, type SecretSourceConfig, type SigilConfig } from '../config/index.js';
import { parseUnsafeTestWeakening, UNSAFE_TEST_WEAKEN_ENV, UnsafeWeakeningError } from '../config/unsafe-test-weakening.js';
import { AdminTokenError, readToken } from '../admin/index.js';
import { parseWorkloadEndpoint } from '../identity/workload-api/endpoint.js';
import { TrustBundleFiles } from '../identity/trust-files.js';
import { trustDomainOfCa } from '../identity/index.js';
import { CliUsageError, configPathFrom } from './args.js';

export interface FileProblem {
  key: string;
  message: string;
}

export async function runConfig(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'check') throw new CliUsageError(`unknown config subcommand "${sub ?? ''}" (expected check)`);
  let parsed: ReturnType<typeof parseCheckArgs>;
  try {
    parsed = parseCheckArgs(rest);
  } catch (err) {
    throw new CliUsageError((err as Error).message);
  }
  const file = configPathFrom(parsed.config ?? parsed.positional);
  let applied: AppliedOverride[] = [];
  let config: SigilConfig;
  try {
    config = await loadConfig(file, { onOverrides: (a) => (applied = a) });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 1;
  }
  const problems = parsed.schemaOnly ? [] : await fileProblems(config);
  const weakening = weakeningCheck(process.env);
  if (weakening.problem) problems.push(weakening.problem);
  const warnings = [
    ...misspelledOverrides(process.env).map((m) => `${m.env} is not a config override and is ignored (did you mean ${m.suggestion}?)`),
    ...foreignOverrides(process.env, SIDECAR_ENV_OVERRIDES, BROKER_ENV_OVERRIDES).map((f) => `${f.env} configures the broker, not the sidecar, and is ignored here`),
    ...(config.policy.mode === 'dry-run' ? ['policy.mode is dry-run: denials are logged but not enforced'] : []),
    ...(config.identity.kind === 'dev' ? ['identity.dev is for development only (the sidecar holds the CA key)'] : []),
    ...(weakening.warning ? [weakening.warning] : []),
  ];
  const view = effectiveView(config) as Record<string, unknown>;
  if (parsed.json) {
    process.stdout.write(JSON.stringify({ valid: problems.length === 0, file: config.configPath, overrides: applied, warnings, problems, config: view }, null, 2) + '\n');
  } else {
    const header = [`# ${config.configPath}: ${problems.length === 0 ? 'valid' : 'INVALID (see stderr)'}${parsed.schemaOnly ? ' (schema only: referenced files not checked)' : ''}`];
    header.push(applied.length === 0 ? '# no SIGIL_* overrides in this environment' : '# overrides from the environment:');
    for (const a of applied) header.push(`#   ${a.env} -> ${a.key}`);
    for (const w of warnings) header.push(`# warning: ${w}`);
    header.push('# effective configuration (defaults filled in, paths absolute, durations in ms, secrets redacted):');
    process.stdout.write(`${header.join('\n')}\n${YAML.stringify(view)}`);
  }
  if (problems.length === 0) return 0;
  process.stderr.write(`invalid config ${config.configPath}:\n${problems.map((p) => `  - ${p.key}: ${p.message}`).join('\n')}\n`);
  return 1;
}

function parseCheckArgs(args: string[]): { config?: string; positional?: string; json: boolean; schemaOnly: boolean } {
  const { values, positionals } = parseArgs({
    args,
    options: { config: { type: 'string' }, json: { type: 'boolean' }, 'schema-only': { type: 'boolean' } },
    strict: true,
    allowPositionals: true,
  });
  if (positionals.length > 1) throw new Error(`expected one config file, got ${positionals.length}`);
  if (positionals.length === 1 && values.config !== undefined) throw new Error('give the config file either as an argument or with --config, not both');
  return {
    ...(values.config !== undefined ? { config: values.config } : {}),
    ...(positionals[0] !== undefined ? { positional: positionals[0] } : {}),
    json: values.json === true,
    schemaOnly: values['schema-only'] === true,
  };
}

/**
 * What `sigil run` would find wrong with the files the config names, before it is started:
 * unreadable files, a policy that does not compile, bundles that do not parse, a dev CA of
 * another trust domain. Secrets are read only to see that they are there, never shown.
 */
export async function fileProblems(config: SigilConfig): Promise<FileProblem[]> {
  const problems: FileProblem[] = [];
  const readable = async (key: string, file: string | undefined): Promise<string | undefined> => {
    if (file === undefined) return undefined;
    try {
      return await readFile(file, 'utf8');
    } catch (err) {
      problems.push({ key, message: `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` });
      return undefined;
    }
  };

  const id = config.identity;
  if (id.kind === 'dev') {
    const caPem = await readable('identity.dev.caDir', join(id.caDir, 'ca.pem'));
    await readable('identity.dev.caDir', join(id.caDir, 'ca.key'));
    if (caPem !== undefined) {
      try {
        const td = trustDomainOfCa(new X509Certificate(caPem)).name;
        if (td !== config.trustDomain) problems.push({ key: 'identity.dev.caDir', message: `the CA in ${id.caDir} is for trust domain ${td}, not ${config.trustDomain}` });
      } catch (err) {
        problems.push({ key: 'identity.dev.caDir', message: `${join(id.caDir, 'ca.pem')}: ${(err as Error).message}` });
      }
    }
  } else if (id.kind === 'files') {
    await readable('identity.files.cert', id.cert);
    await readable('identity.files.key', id.key);
    await bundleProblems(problems, 'identity.files.bundle', { [config.trustDomain]: id.bundle });
  } else {
    // The socket may appear after the sidecar starts (it waits up to startupTimeout); only a
    // unix socket path that cannot exist is worth reporting here.
    const endpoint = parseWorkloadEndpoint(id.socket);
    if (endpoint.transport === 'unix') {
      try {
        await access(dirname(endpoint.path), constants.X_OK);
      } catch {
        problems.push({ key: 'identity.workloadApi.socket', message: `the folder of ${endpoint.path} does not exist or cannot be searched (is the Workload API socket mounted?)` });
      }
    }
  }
  await bundleProblems(problems, 'trust.bundles', config.trust.bundles);

  if (config.policy.cedar !== undefined) {
    const text = await readable('policy.cedar', config.policy.cedar);
    if (text !== undefined) {
      try {
        compileCedarPolicy(text, config.policy.cedar);
      } catch (err) {
        if (!(err instanceof PolicyLoadError)) throw err;
        problems.push({ key: 'policy.cedar', message: err.message });
      }
    }
  }
  if (config.delegation) {
    const jwks = await readable('delegation.jwks', config.delegation.jwks);
    if (jwks !== undefined && !isJwks(jwks)) problems.push({ key: 'delegation.jwks', message: `${config.delegation.jwks} is not a JWKS (JSON with a "keys" array)` });
  }
  if (config.admin.tokenFile !== undefined) {
    // The admin listener's own reader: the same rules (one token, ≥ 16 characters) as at start.
    try {
      readToken(config.admin.tokenFile);
    } catch (err) {
      if (!(err instanceof AdminTokenError)) throw err;
      problems.push({ key: 'admin.tokenFile', message: err.message.replace(/^admin\.tokenFile: /, '') });
    }
  }
  if (config.audit) {
    const problem = await auditPathProblem(config.audit.path);
    if (problem) problems.push({ key: 'audit.path', message: problem });
  }
  await readable('bus.nats.tls.ca', config.bus?.nats?.ca);
  await readable('revocation.file', config.revocation?.file);
  await readable('revocation.nats.tls.ca', config.revocation?.nats?.ca);
  for (const [i, e] of (config.outbound?.egress ?? []).entries()) {
    await readable(`outbound.egress[${i}].ca`, e.ca);
    await secretSourceProblems(problems, `outbound.egress[${i}].credential`, e.credential?.source, readable);
    await secretSourceProblems(problems, `outbound.egress[${i}].attribution.userSecret`, e.attribution.userSecret, readable);
  }
  return problems;
}

/** SIGIL_UNSAFE_TEST_WEAKEN as `sigil run` reads it: a bad value is a problem (run refuses it), a good one a warning. */
function weakeningCheck(env: Record<string, string | undefined>): { problem?: FileProblem; warning?: string } {
  try {
    const weakened = parseUnsafeTestWeakening(env[UNSAFE_TEST_WEAKEN_ENV]);
    if (weakened.size === 0) return {};
    return { warning: `${UNSAFE_TEST_WEAKEN_ENV} is set (${[...weakened].join(', ')}): security checks are switched off; for probe self-tests only, never in production` };
  } catch (err) {
    if (!(err instanceof UnsafeWeakeningError)) throw err;
    return { problem: { key: UNSAFE_TEST_WEAKEN_ENV, message: err.message } };
  }
}

/** A file source must be readable, an env source set (HTTP sources are fetched at run time). */
async function secretSourceProblems(problems: FileProblem[], key: string, source: SecretSourceConfig | undefined, readable: (key: string, file: string | undefined) => Promise<string | undefined>): Promise<void> {
  if (source?.kind === 'file') await readable(`${key}.file`, source.path);
  if (source?.kind === 'env' && !process.env[source.name]) problems.push({ key: `${key}.env`, message: `${source.name} is not set in this environment` });
}

/** Where the audit log will be appended: an existing file must be a writable file; a new one needs a writable folder. */
async function auditPathProblem(file: string): Promise<string | undefined> {
  const info = await stat(file).catch(() => undefined);
  if (info) {
    if (!info.isFile()) return `${file} exists and is not a file`;
    return (await access(file, constants.W_OK).then(() => true, () => false)) ? undefined : `${file} is not writable`;
  }
  const folder = dirname(file);
  const folderInfo = await stat(folder).catch(() => undefined);
  if (!folderInfo?.isDirectory()) return `${folder} is not a folder`;
  return (await access(folder, constants.W_OK).then(() => true, () => false)) ? undefined : `${folder} is not writable (the log file does not exist yet)`;
}

async function bundleProblems(problems: FileProblem[], key: string, files: Record<string, string>): Promise<void> {
  for (const [td, file] of Object.entries(files)) {
    // The sidecar's own loader, so the check and the start agree on what a valid bundle is.
    const loader = new TrustBundleFiles({ [td]: file }, () => {}, () => {});
    try {
      await loader.start();
    } catch (err) {
      problems.push({ key, message: (err as Error).message.replace(/^trust\.bundles\.[^:]*: /, '') });
    } finally {
      loader.stop();
    }
  }
}

function isJwks(text: string): boolean {
  try {
    const doc = JSON.parse(text) as { keys?: unknown };
    return Array.isArray(doc.keys);
  } catch {
    return false;
  }
}
