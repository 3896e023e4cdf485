import t from 'tap';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createDevCa, DevIssuer, FilesSvidSource, svidFromPem, type SvidUpdate } from '../../src/identity/index.js';
import { BundleSet, SpiffeId, TrustDomain, validateLeaf, verifyX509Svid, X509Bundle } from '../../src/spiffe/index.js';
import { initCaDir } from '../../src/cli/ca.js';

const TD = TrustDomain.parse('example.org');
const ID = SpiffeId.parse('spiffe://example.org/agent/a');

t.test('dev issuer mints SVIDs that pass the X.509-SVID rules and verify against its bundle', async (t) => {
  const ca = await createDevCa(TD);
  const issuer = await DevIssuer.fromPem(TD, ca);
  const svid = await issuer.issue(ID, 60_000);
  const leaf = svid.certificates[0]!;
  t.equal(validateLeaf(leaf).toString(), ID.toString());
  const bundles = new BundleSet([X509Bundle.fromPem(TD, ca.certPem)]);
  t.equal(verifyX509Svid(svid.certificates, bundles).id.toString(), ID.toString());
  const lifetime = new Date(leaf.validTo).getTime() - Date.now();
  t.ok(lifetime > 50_000 && lifetime <= 61_000, `TTL honoured (${lifetime} ms)`);
  t.match(svid.privateKeyPem, /BEGIN PRIVATE KEY/, 'PKCS#8 key');
  const other = await issuer.issue(ID, 60_000);
  t.not(other.certificates[0]!.serialNumber, leaf.serialNumber, 'serials are random');
  t.equal(Buffer.from(leaf.serialNumber, 'hex')[0]! & 0x80, 0, 'serial is positive');

  // Negative: another CA of the same trust domain is not trusted.
  const foreign = await DevIssuer.fromPem(TD, await createDevCa(TD));
  const rogue = await foreign.issue(ID, 60_000);
  t.throws(() => verifyX509Svid(rogue.certificates, bundles), { code: 'chain_invalid' });
  await t.rejects(issuer.issue(SpiffeId.parse('spiffe://other.org/x'), 60_000), 'refuses a foreign trust domain');
});

t.test('svidFromPem refuses unusable material with a reason', async (t) => {
  const ca = await createDevCa(TD);
  const issuer = await DevIssuer.fromPem(TD, ca);
  const a = await issuer.issue(ID, 60_000);
  const b = await issuer.issue(ID, 60_000);
  t.equal(svidFromPem(a.certChainPem, a.privateKeyPem, TD).id.toString(), ID.toString(), 'positive control');
  t.throws(() => svidFromPem(a.certChainPem, b.privateKeyPem, TD), { code: 'svid_load_failed' }, 'key mismatch');
  t.throws(() => svidFromPem('garbage', a.privateKeyPem, TD), { code: 'svid_load_failed' }, 'garbage cert');
  t.throws(() => svidFromPem(a.certChainPem, 'garbage', TD), { code: 'svid_load_failed' }, 'garbage key');
  t.throws(() => svidFromPem(ca.certPem, ca.keyPem, TD), { code: 'svid_load_failed' }, 'a CA certificate is not an SVID');
  t.throws(() => svidFromPem(a.certChainPem, a.privateKeyPem, TrustDomain.parse('other.org')), /not in the configured trust domain/);
});

t.test('ca init writes the files DESIGN.md names, key private to the owner', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sigil-ca-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await initCaDir(TD, dir);
  t.equal((await stat(join(dir, 'ca.key'))).mode & 0o777, 0o600);
  const jwks = JSON.parse(await readFile(join(dir, 'bundle.jwks.json'), 'utf8')) as { keys: { use: string; x5c: string[] }[] };
  t.equal(jwks.keys[0]!.use, 'x509-svid');
  const fromJwks = X509Bundle.parse(TD, JSON.stringify(jwks));
  const fromPem = X509Bundle.parse(TD, await readFile(join(dir, 'bundle.pem'), 'utf8'));
  t.equal(fromJwks.authorities[0]!.fingerprint256, fromPem.authorities[0]!.fingerprint256, 'both bundle forms hold the CA');
  await t.rejects(initCaDir(TD, dir), /already exists/, 'never overwrites a CA silently');
});

t.test('files source: reloads a new SVID, keeps the last good one on a bad write', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'sigil-files-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const ca = await createDevCa(TD);
  const issuer = await DevIssuer.fromPem(TD, ca);
  const first = await issuer.issue(ID, 60_000);
  const paths = { cert: join(dir, 'svid.pem'), key: join(dir, 'svid.key'), bundle: join(dir, 'bundle.pem') };
  await writeFile(paths.cert, first.certChainPem);
  await writeFile(paths.key, first.privateKeyPem);
  await writeFile(paths.bundle, ca.certPem);
  const updates: SvidUpdate[] = [];
  const errors: Error[] = [];
  const source = new FilesSvidSource({ ...paths, trustDomain: TD }, { onUpdate: (u) => updates.push(u), onError: (e) => errors.push(e) });
  const initial = await source.start();
  t.teardown(() => source.stop());
  t.equal(initial.svid.serial, first.certificates[0]!.serialNumber);

  await writeFile(paths.cert, '-----BEGIN CERTIFICATE-----\nAAAA');
  await waitUntil(() => errors.length > 0);
  t.equal(updates.length, 0, 'a half-written file produces no update');

  // An SVID that has already expired is never taken over the last good one.
  const expired = await issuer.issue(ID, 1);
  await new Promise((r) => setTimeout(r, 20));
  errors.length = 0;
  await writeFile(paths.key, expired.privateKeyPem);
  await writeFile(paths.cert, expired.certChainPem);
  await waitUntil(() => errors.some((e) => /validity period/.test(e.message)));
  t.pass('expired SVID refused with a reason');
  // Nor one from another CA than the bundle file's.
  const foreign = await (await DevIssuer.fromPem(TD, await createDevCa(TD))).issue(ID, 60_000);
  errors.length = 0;
  await writeFile(paths.key, foreign.privateKeyPem);
  await writeFile(paths.cert, foreign.certChainPem);
  await waitUntil(() => errors.some((e) => /does not verify against the bundle/.test(e.message)));
  t.pass('SVID from a foreign CA refused with a reason');
  t.equal(updates.length, 0, 'no update from expired or foreign material');

  const second = await issuer.issue(ID, 60_000);
  await writeFile(paths.key, second.privateKeyPem);
  await writeFile(paths.cert, second.certChainPem);
  await waitUntil(() => updates.length > 0);
  t.equal(updates.at(-1)!.svid.serial, second.certificates[0]!.serialNumber, 'new SVID picked up (positive control)');
});

async function waitUntil(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
