// DEV ONLY. `sigil dev-idp init` creates a stand-in identity provider (an ES256 key pair in a
// folder) and `sigil dev-token` mints user access tokens with it, so the delegation flow runs
// without an external IdP. Anyone who can read the folder can mint a token for any user: never
// point a production broker at it. The warning goes to stderr; stdout carries only the result.
import { resolve } from 'node:path';
import { parseDuration } from '../config/index.js';
import { DEV_IDP_WARNING, initDevIdp, mintDevUserToken } from '../delegation/index.js';
import { SpiffeId } from '../spiffe/index.js';
import { CliUsageError, parseFlags } from './args.js';

const WARNING = `WARNING (DEV ONLY): ${DEV_IDP_WARNING}\n`;

export async function runDevIdp(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'init') throw new CliUsageError(`unknown dev-idp subcommand "${sub ?? ''}" (expected init)`);
  const flags = parseFlags(rest, { dir: { type: 'string' }, issuer: { type: 'string' } }, ['dir']);
  const dir = resolve(flags.dir as string);
  const issuer = flags.issuer as string | undefined;
  if (issuer !== undefined) {
    try {
      new URL(issuer);
    } catch {
      throw new CliUsageError(`--issuer: invalid URL ${JSON.stringify(issuer)}`);
    }
  }
  const idp = await initDevIdp(dir, issuer);
  process.stderr.write(WARNING);
  process.stdout.write(
    `dev identity provider in ${dir}\n` +
      `  issuer: ${idp.issuer}\n` +
      `  jwks:   ${idp.jwksPath}\n` +
      `broker config: subjectIssuers: [ { issuer: ${idp.issuer}, audience: <the broker's audience>, jwks: ${idp.jwksPath} } ]\n`,
  );
  return 0;
}

export async function runDevToken(args: string[]): Promise<number> {
  const flags = parseFlags(
    args,
    {
      dir: { type: 'string' },
      sub: { type: 'string' },
      scope: { type: 'string' },
      aud: { type: 'string' },
      ttl: { type: 'string' },
      'may-act': { type: 'string', multiple: true },
    },
    ['dir', 'sub', 'scope', 'aud'],
  );
  let ttlSeconds = 3600;
  if (flags.ttl !== undefined) {
    let ms: number;
    try {
      ms = parseDuration(flags.ttl as string);
    } catch (err) {
      throw new CliUsageError(`--ttl: ${(err as Error).message}`);
    }
    if (ms < 1000 || ms % 1000 !== 0) throw new CliUsageError('--ttl: must be a whole number of seconds, at least 1s');
    ttlSeconds = ms / 1000;
  }
  const mayAct = (flags['may-act'] as unknown as string[] | undefined) ?? [];
  for (const id of mayAct) {
    try {
      SpiffeId.parse(id);
    } catch (err) {
      throw new CliUsageError(`--may-act: ${(err as Error).message}`);
    }
  }
  const scope = (flags.scope as string).split(' ').filter((s) => s !== '');
  const token = await mintDevUserToken(resolve(flags.dir as string), {
    sub: flags.sub as string,
    scope,
    audience: flags.aud as string,
    ttlSeconds,
    ...(mayAct.length > 0 ? { mayAct } : {}),
  });
  process.stderr.write(WARNING);
  process.stdout.write(token + '\n');
  return 0;
}
