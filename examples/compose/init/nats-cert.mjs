// DEV ONLY. Issues nats-server's TLS server certificate from the dev CA, so the sidecars and the
// broker can verify the server against the trust bundle they already hold (no separate CA to
// distribute): a leaf with DNS name NAME (the host name in tls://NAME:4222), serverAuth only,
// valid for a year or until the CA expires, whichever comes first. With SPIRE, the server would
// hold an X.509-SVID with a DNS SAN instead (registration entry with -dns NAME).
//
//   node nats-cert.mjs CA_DIR OUT_DIR NAME
//
// Writes OUT_DIR/server.pem, OUT_DIR/server.key (PKCS#8, 0600) and OUT_DIR/clients-ca.pem (the
// trust bundle: nats-server requires client certificates issued by it). A certificate that is
// already there is kept while it was signed by this CA, names NAME and has 30 days left, so the
// init container can run on every `docker compose up`.
//
// It runs in the sigil image and borrows the image's own @peculiar/x509 (SIGIL_APP_DIR, default
// /app): the image has no openssl.
import { X509Certificate, webcrypto } from 'node:crypto';
import { copyFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const [caDir, outDir, name] = process.argv.slice(2);
if (!caDir || !outDir || !name) {
  console.error('usage: node nats-cert.mjs CA_DIR OUT_DIR NAME');
  process.exit(2);
}
const DAY_MS = 24 * 3600_000;

const requireFromApp = createRequire(join(process.env.SIGIL_APP_DIR ?? '/app', 'package.json'));
requireFromApp('reflect-metadata'); // @peculiar/x509 needs it loaded first
const x509 = requireFromApp('@peculiar/x509');
x509.cryptoProvider.set(webcrypto);

const caPem = await readFile(join(caDir, 'ca.pem'), 'utf8');
const caKeyPem = await readFile(join(caDir, 'ca.key'), 'utf8');
const ca = new X509Certificate(caPem);
const certFile = join(outDir, 'server.pem');
const keyFile = join(outDir, 'server.key');

await mkdir(outDir, { recursive: true });
await copyFile(join(caDir, 'bundle.pem'), join(outDir, 'clients-ca.pem'));

if (await stillGood()) {
  console.log(`kept the NATS server certificate in ${certFile}`);
} else {
  await issue();
  console.log(`issued a NATS server certificate for ${name} into ${certFile}`);
}

async function stillGood() {
  let current;
  try {
    current = new X509Certificate(await readFile(certFile, 'utf8'));
    await readFile(keyFile);
  } catch {
    return false;
  }
  return current.verify(ca.publicKey) && current.checkHost(name) !== undefined && Date.parse(current.validTo) - Date.now() > 30 * DAY_MS;
}

async function issue() {
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
  const caKey = await webcrypto.subtle.importKey('pkcs8', pemBody(caKeyPem), alg, false, ['sign']);
  const caCert = new x509.X509Certificate(caPem);
  const now = Date.now();
  const serial = webcrypto.getRandomValues(new Uint8Array(16));
  serial[0] = (serial[0] & 0x7f) || 1; // positive, 16 bytes
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: Buffer.from(serial).toString('hex'),
    subject: `CN=${name}`,
    issuer: caCert.subject,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(Math.min(now + 365 * DAY_MS, Date.parse(ca.validTo))),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    publicKey: keys.publicKey,
    signingKey: caKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  // Each by atomic rename: a container stopped half-way leaves no half-written file to keep.
  await writeFile(`${keyFile}.tmp`, `-----BEGIN PRIVATE KEY-----\n${pkcs8.replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`, { mode: 0o600 });
  await rename(`${keyFile}.tmp`, keyFile);
  await writeFile(`${certFile}.tmp`, `${cert.toString('pem')}\n`);
  await rename(`${certFile}.tmp`, certFile);
}

function pemBody(pem) {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}
