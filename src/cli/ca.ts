// `sigil ca init` and `sigil ca issue`: the development CA on disk.
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile, access } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseDuration } from '../config/index.js';
import { createDevCa, DevIssuer, trustDomainOfCa } from '../identity/index.js';
import { SpiffeId, TrustDomain, X509Bundle } from '../spiffe/index.js';
import { CliUsageError, parseFlags } from './args.js';

export async function runCa(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub === 'init') return caInit(rest);
  if (sub === 'issue') return caIssue(rest);
  throw new CliUsageError(`unknown ca subcommand "${sub ?? ''}" (expected init or issue)`);
}

/** Writes ca.pem, ca.key (0600), bundle.pem and bundle.jwks.json into `dir`. */
export async function initCaDir(trustDomain: TrustDomain, dir: string, force = false): Promise<void> {
  await mkdir(dir, { recursive: true });
  if (!force && (await exists(join(dir, 'ca.key')))) {
    throw new Error(`${join(dir, 'ca.key')} already exists (use --force to replace the CA)`);
  }
  const ca = await createDevCa(trustDomain);
  const bundle = X509Bundle.fromPem(trustDomain, ca.certPem);
  await writeFile(join(dir, 'ca.pem'), ca.certPem);
  await writeFile(join(dir, 'bundle.pem'), ca.certPem);
  await writeFile(join(dir, 'bundle.jwks.json'), JSON.stringify(bundle.toJwks(), null, 2) + '\n');
  // ca.key last, and whole (renamed into place): it marks a complete CA, so an init interrupted
  // part-way is redone by the next `--if-missing` instead of leaving a key without its cert.
  const tmp = join(dir, `.ca.key.${process.pid}.tmp`);
  await writeFile(tmp, ca.keyPem, { mode: 0o600 });
  await rename(tmp, join(dir, 'ca.key'));
}

/** Issues an SVID from the CA in `caDir` into `outDir`: svid.pem, svid.key (PKCS#8, 0600), bundle.pem. */
export async function issueSvidToDir(caDir: string, id: SpiffeId, ttlMs: number, outDir: string): Promise<X509Certificate> {
  const certPem = await readFile(join(caDir, 'ca.pem'), 'utf8');
  const keyPem = await readFile(join(caDir, 'ca.key'), 'utf8');
  const caTd = trustDomainOfCa(new X509Certificate(certPem));
  if (!caTd.equals(id.trustDomain)) throw new Error(`${id} is not in the CA's trust domain ${caTd.name}`);
  const issuer = await DevIssuer.fromPem(caTd, { certPem, keyPem });
  const svid = await issuer.issue(id, ttlMs);
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'svid.key'), svid.privateKeyPem, { mode: 0o600 });
  await writeFile(join(outDir, 'svid.pem'), svid.certChainPem);
  await writeFile(join(outDir, 'bundle.pem'), certPem);
  return svid.certificates[0]!;
}

async function caInit(args: string[]): Promise<number> {
  const flags = parseFlags(args, { 'trust-domain': { type: 'string' }, dir: { type: 'string' }, force: { type: 'boolean' }, 'if-missing': { type: 'boolean' } }, ['trust-domain', 'dir']);
  const td = TrustDomain.parse(flags['trust-domain'] as string);
  const dir = resolve(flags.dir as string);
  if (flags.force === true && flags['if-missing'] === true) throw new CliUsageError('--force and --if-missing contradict each other');
  // --if-missing: init containers run on every start; the CA made the first time must survive.
  if (flags['if-missing'] === true && (await exists(join(dir, 'ca.key')))) {
    const existing = trustDomainOfCa(new X509Certificate(await readFile(join(dir, 'ca.pem'), 'utf8')));
    if (!existing.equals(td)) throw new Error(`${dir} holds a CA for trust domain ${existing.name}, not ${td.name}`);
    process.stdout.write(`kept the existing dev CA for ${td.name} in ${dir}\n`);
    return 0;
  }
  await initCaDir(td, dir, flags.force === true);
  process.stdout.write(`created dev CA for ${td.name} in ${dir}: ca.pem ca.key bundle.pem bundle.jwks.json\n`);
  return 0;
}

async function caIssue(args: string[]): Promise<number> {
  const flags = parseFlags(
    args,
    { dir: { type: 'string' }, 'spiffe-id': { type: 'string' }, ttl: { type: 'string' }, out: { type: 'string' } },
    ['dir', 'spiffe-id', 'out'],
  );
  const id = SpiffeId.parse(flags['spiffe-id'] as string);
  let ttlMs: number;
  try {
    ttlMs = parseDuration((flags.ttl as string | undefined) ?? '15m');
  } catch (err) {
    throw new CliUsageError(`--ttl: ${(err as Error).message}`);
  }
  const out = resolve(flags.out as string);
  const leaf = await issueSvidToDir(resolve(flags.dir as string), id, ttlMs, out);
  process.stdout.write(`issued ${id} (serial ${leaf.serialNumber}, expires ${new Date(leaf.validTo).toISOString()}) into ${out}\n`);
  return 0;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}
