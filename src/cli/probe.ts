// `sigil probe`: the impersonation test suite, run against a deployed sidecar. Progress goes to
// stderr, the table to stdout, `--report` writes JSON and `--junit` JUnit XML.
// Exit codes: 0 every attack rejected and every control accepted; 1 any FAIL or ERROR, or the
// target could not be established; 2 usage error.
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { parseDuration } from '../config/duration.js';
import { isLoopbackHost, parseHostPort } from '../config/address.js';
import { SpiffeId } from '../spiffe/index.js';
import { startEchoUpstream, type EchoUpstream } from '../probe/echo.js';
import { loadBundles, loadFederatedCa, loadIdentity } from '../probe/inputs.js';
import { allAttacks, prepareProbe, ProbeInputError, ProbeTargetError, runProbe, selectAttacks } from '../probe/probe.js';
import { formatSummary, formatTable, toJunit } from '../probe/report.js';
import type { ProbeOptions } from '../probe/types.js';
import { CliUsageError, parseFlags } from './args.js';
import { parseAdminUrl, readTokenFile } from './revoke.js';

export const PROBE_USAGE = `usage: sigil probe --target HOST:PORT --cert FILE --key FILE --bundle FILE [options]

Runs the impersonation battery against a sidecar's inbound listener. Each attack is preceded by a
positive control with the legitimate test identity; a target that refuses the control fails.
The probe mints every attack credential itself; it never needs the real CA key.

target and identity:
  --target HOST:PORT        the sidecar's inbound (mTLS) address
  --cert FILE --key FILE    the legitimate test identity (X.509-SVID chain, PKCS#8 key)
  --bundle FILE             the trust bundle of its trust domain (PEM or SPIFFE JWKS)
  --target-id ID            the SPIFFE ID the target must present (default: any of the domain)
  --victim ID               the identity the attacks impersonate (default: the target's own)
  --federated-ca DIR        ca.pem + ca.key of a probe-only trust domain the target federates
                            with: leaf-rule and cross-domain attacks then carry a trusted signature
  --path PATH               request path for controls and attacks (default /)
headers (the probe acts as the target's agent):
  --echo-listen HOST:PORT   serve the echo upstream here; the target's inbound.upstream must point at it
delegation:
  --broker URL              the token-exchange broker (https://HOST:PORT/token)
  --broker-id ID            the broker's SPIFFE ID (required with --broker: the token goes to it only)
  --subject-token-file F    a test user's access token the broker accepts (never printed)
  --scope "A B"             scope to request (default: the subject token's)
  --other-audience ID       another agent, for the wrong-audience attack (default spiffe://<td>/sigil-probe/elsewhere)
  --token-header NAME       the header the target reads delegation tokens from (its delegation.header; default authorization)
  --expiry-wait DURATION    how long the probe may wait for an exchanged token to expire (default 30s)
bus:
  --nats URL                a NATS server (tls://HOST:PORT), repeatable
  --nats-ca FILE            the NATS server's CA (default: the bundle)
  --bus-local URL           the target's local bus API (http://127.0.0.1:15002)
  --bus-subject SUBJECT     a subject the test identity may publish and the target delivers
  --delivery-window DURATION how long a message has to arrive (default 1s)
revocation:
  --admin URL               the target's admin API: revokes the test SVID, checks the cut, lifts it
  --admin-token-file F      its bearer token (admin.tokenFile)
run:
  --only FAMILY|ID          run only these (repeatable): tls, headers, delegation, bus, revocation
  --timeout DURATION        bound on each control and each attack (default 10s)
  --target-leeway DURATION  the clock leeway the target tolerates (its delegation.leeway and
                            bus.envelope.leeway; default 5s): expiry and replay checks wait past it
  --report FILE             write the JSON report
  --junit FILE              write JUnit XML
  --quiet                   no progress lines
  -h, --help                this text

exit codes: 0 target passed; 1 an attack was accepted, a control failed, or the target could not
be reached or verified; 2 usage error.
`;

const OPTIONS = {
  target: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  bundle: { type: 'string' },
  'target-id': { type: 'string' },
  victim: { type: 'string' },
  'federated-ca': { type: 'string' },
  path: { type: 'string' },
  'echo-listen': { type: 'string' },
  broker: { type: 'string' },
  'broker-id': { type: 'string' },
  'subject-token-file': { type: 'string' },
  scope: { type: 'string' },
  'other-audience': { type: 'string' },
  'expiry-wait': { type: 'string' },
  'token-header': { type: 'string' },
  nats: { type: 'string', multiple: true },
  'nats-ca': { type: 'string' },
  'bus-local': { type: 'string' },
  'bus-subject': { type: 'string' },
  'delivery-window': { type: 'string' },
  admin: { type: 'string' },
  'admin-token-file': { type: 'string' },
  only: { type: 'string', multiple: true },
  timeout: { type: 'string' },
  'target-leeway': { type: 'string' },
  report: { type: 'string' },
  junit: { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Flags = Record<keyof typeof OPTIONS, string | string[] | boolean | undefined>;

export async function runProbeCommand(args: string[]): Promise<number> {
  let flags: Flags;
  try {
    flags = parseFlags(args, OPTIONS) as unknown as Flags;
    if (flags.help === true) {
      process.stdout.write(PROBE_USAGE);
      return 0;
    }
    for (const name of ['target', 'cert', 'key', 'bundle'] as const) if (flags[name] === undefined) throw new CliUsageError(`--${name} is required`);
  } catch (err) {
    if (!(err instanceof CliUsageError)) throw err;
    process.stderr.write(`sigil probe: ${err.message}\n\n${PROBE_USAGE}`);
    return 2;
  }
  const progress = flags.quiet === true ? () => undefined : (line: string) => process.stderr.write(`${line}\n`);
  let echo: EchoUpstream | undefined;
  try {
    const options = await buildOptions(flags);
    const attacks = selectAttacks(allAttacks(), flags.only as string[] | undefined);
    if (flags['echo-listen'] !== undefined) {
      const at = echoAddress(flags['echo-listen']);
      try {
        echo = await startEchoUpstream(at.host, at.port, randomBytes(12).toString('hex'));
      } catch (err) {
        throw new ProbeInputError(`--echo-listen: cannot listen on ${at.host}:${at.port} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
      options.echo = echo;
      progress(`echo upstream listening on ${echo.address.host}:${echo.address.port}`);
    }
    progress(`probing ${options.target.host}:${options.target.port} as ${options.identity.id}`);
    const ctx = await prepareProbe(options, progress);
    progress(`target is ${ctx.targetId}; impersonating ${ctx.victim}; ${attacks.length} attacks`);
    const warnings = await targetWarnings(options);
    for (const w of warnings) progress(`WARNING: ${w}`);
    const report = await runProbe(
      ctx,
      attacks,
      {
        onStart: (attack, i, total) => progress(`[${i + 1}/${total}] ${attack.id} …`),
        onResult: (r, i, total) => progress(`[${i + 1}/${total}] ${r.id}: ${r.verdict.toUpperCase()} (${r.observed}) ${r.durationMs} ms`),
      },
      warnings,
    );
    process.stdout.write(formatTable(report.results, process.stdout.columns ?? 160));
    process.stdout.write(formatSummary(report));
    if (typeof flags.report === 'string') writeFileSync(flags.report, JSON.stringify(report, null, 2) + '\n');
    if (typeof flags.junit === 'string') writeFileSync(flags.junit, toJunit(report));
    return report.summary.ok ? 0 : 1;
  } catch (err) {
    if (err instanceof CliUsageError || err instanceof ProbeInputError) {
      process.stderr.write(`sigil probe: ${err.message}\n`);
      return 2;
    }
    if (err instanceof ProbeTargetError) {
      process.stderr.write(`sigil probe: ${err.message}\n`);
      return 1;
    }
    throw err;
  } finally {
    await echo?.close();
  }
}

function str(v: string | string[] | boolean | undefined): string {
  return typeof v === 'string' ? v : '';
}

function duration(flag: string, value: string | string[] | boolean | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  try {
    return parseDuration(str(value));
  } catch (err) {
    throw new CliUsageError(`--${flag}: ${(err as Error).message}`);
  }
}

function positiveDuration(flag: string, value: string | string[] | boolean | undefined, fallback: number, max: number): number {
  const ms = duration(flag, value, fallback);
  if (ms <= 0 || ms > max) throw new CliUsageError(`--${flag}: must be greater than 0 and at most ${max / 1000}s`);
  return ms;
}

function spiffeId(flag: string, value: string): SpiffeId {
  try {
    return SpiffeId.parse(value);
  } catch (err) {
    throw new CliUsageError(`--${flag}: ${(err as Error).message}`);
  }
}

function httpUrl(flag: string, value: string, schemes: string[]): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CliUsageError(`--${flag}: not a URL: ${JSON.stringify(value)}`);
  }
  if (!schemes.includes(url.protocol)) throw new CliUsageError(`--${flag}: must be ${schemes.map((s) => s.slice(0, -1)).join(' or ')}`);
  return url;
}

/** Every flag → ProbeOptions; throws CliUsageError or ProbeInputError naming the flag. */
async function buildOptions(flags: Flags): Promise<ProbeOptions> {
  let target;
  try {
    target = parseHostPort(str(flags.target));
  } catch (err) {
    throw new CliUsageError(`--target: ${(err as Error).message}`);
  }
  if (target.port === 0) throw new CliUsageError('--target: needs a port');
  const identity = await loadIdentity(str(flags.cert), str(flags.key));
  const bundles = loadBundles(str(flags.bundle), identity);
  const td = identity.id.trustDomain.name;
  const options: ProbeOptions = {
    target: { host: target.host, port: target.port, ...(flags['target-id'] === undefined ? {} : { expectedId: spiffeId('target-id', str(flags['target-id'])) }) },
    bundles,
    identity,
    path: typeof flags.path === 'string' ? flags.path : '/',
    stepTimeoutMs: duration('timeout', flags.timeout, 10_000),
    targetLeewayMs: duration('target-leeway', flags['target-leeway'], 5_000),
  };
  if (options.targetLeewayMs > 60_000) throw new CliUsageError('--target-leeway: at most 60s (Sigil refuses larger leeways)');
  if (!options.path.startsWith('/')) throw new CliUsageError('--path: must start with /');
  if (options.stepTimeoutMs <= 0 || options.stepTimeoutMs > 600_000) throw new CliUsageError('--timeout: must be greater than 0 and at most 10m');
  if (flags.victim !== undefined) options.victimId = spiffeId('victim', str(flags.victim));
  if (flags['federated-ca'] !== undefined) options.federatedCa = await loadFederatedCa(str(flags['federated-ca']), identity);

  const delegationFlags = ['broker', 'broker-id', 'subject-token-file', 'scope', 'other-audience', 'expiry-wait', 'token-header'] as const;
  if (delegationFlags.some((f) => flags[f] !== undefined)) {
    if (flags.broker === undefined || flags['subject-token-file'] === undefined) throw new CliUsageError('delegation attacks need both --broker and --subject-token-file');
    // The subject token is a real user's credential: it goes only to the broker named here.
    if (flags['broker-id'] === undefined) throw new CliUsageError('--broker needs --broker-id (the broker SVID the subject token may be sent to)');
    options.delegation = {
      brokerUrl: httpUrl('broker', str(flags.broker), ['https:']),
      subjectToken: readTokenFile(str(flags['subject-token-file']), '--subject-token-file'),
      otherAudience: spiffeId('other-audience', typeof flags['other-audience'] === 'string' ? flags['other-audience'] : `spiffe://${td}/sigil-probe/elsewhere`),
      expiryWaitMs: duration('expiry-wait', flags['expiry-wait'], 30_000),
      header: tokenHeader(flags['token-header']),
      brokerId: spiffeId('broker-id', str(flags['broker-id'])),
      ...(typeof flags.scope === 'string' ? { scope: flags.scope.split(' ').filter((s) => s !== '') } : {}),
    };
  }

  const busFlags = ['nats', 'nats-ca', 'bus-local', 'bus-subject', 'delivery-window'] as const;
  if (busFlags.some((f) => flags[f] !== undefined)) {
    if (flags.nats === undefined || flags['bus-local'] === undefined || flags['bus-subject'] === undefined) throw new CliUsageError('bus attacks need --nats, --bus-local and --bus-subject');
    const servers = flags.nats as string[];
    for (const s of servers) httpUrl('nats', s, ['tls:', 'nats:']);
    options.bus = {
      servers,
      local: httpUrl('bus-local', str(flags['bus-local']), ['http:']),
      subject: str(flags['bus-subject']),
      deliveryWindowMs: positiveDuration('delivery-window', flags['delivery-window'], 1_000, 60_000),
      ...(flags['nats-ca'] === undefined ? {} : { natsCa: readPem('--nats-ca', str(flags['nats-ca'])) }),
    };
  }

  if (flags['admin-token-file'] !== undefined && flags.admin === undefined) throw new CliUsageError('--admin-token-file needs --admin');
  if (flags.admin !== undefined) {
    options.admin = {
      url: parseAdminUrl(str(flags.admin)),
      ...(flags['admin-token-file'] === undefined ? {} : { token: readTokenFile(str(flags['admin-token-file']), '--admin-token-file') }),
    };
  }
  return options;
}

/** The echo answers whoever reaches it with what they sent: it listens on loopback only. */
function echoAddress(value: string | string[] | boolean | undefined): { host: string; port: number } {
  let at;
  try {
    at = parseHostPort(str(value));
  } catch (err) {
    throw new CliUsageError(`--echo-listen: ${(err as Error).message}`);
  }
  if (!isLoopbackHost(at.host)) throw new CliUsageError(`--echo-listen: must be a loopback address (got ${at.host}); the target sidecar reaches its upstream on loopback`);
  return at;
}

function tokenHeader(value: string | string[] | boolean | undefined): string {
  if (value === undefined) return 'authorization';
  const name = str(value);
  if (!/^[A-Za-z0-9-]+$/.test(name)) throw new CliUsageError('--token-header: must be a header name');
  return name.toLowerCase();
}

function readPem(flag: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ProbeInputError(`${flag}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** What the target's admin API says about itself that a security team must know. */
async function targetWarnings(options: ProbeOptions): Promise<string[]> {
  if (!options.admin) return [];
  try {
    const url = new URL(options.admin.url.href);
    url.pathname = `${url.pathname.replace(/\/+$/, '')}/status`;
    const headers: Record<string, string> = options.admin.token ? { authorization: `Bearer ${options.admin.token}` } : {};
    const res = await fetch(url, { headers, redirect: 'error', signal: AbortSignal.timeout(options.stepTimeoutMs) });
    const status = (await res.json()) as { unsafeTestWeakening?: unknown };
    const weakened = Array.isArray(status.unsafeTestWeakening) ? status.unsafeTestWeakening.filter((w): w is string => typeof w === 'string') : [];
    return weakened.length > 0 ? [`the target runs with SIGIL_UNSAFE_TEST_WEAKEN=${weakened.join(',')}: security checks are disabled on purpose`] : [];
  } catch (err) {
    return [`could not read the target's /status: ${(err as Error).message}`];
  }
}
