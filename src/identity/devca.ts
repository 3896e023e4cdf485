// The embedded development issuer: a self-contained CA for one trust domain that mints
// ECDSA P-256 X.509-SVIDs. It is what `sigil ca init|issue`, `identity.dev` and the demo use,
// so that a newcomer needs no SPIRE server. Production deployments use the Workload API.
import { randomBytes, X509Certificate, webcrypto, createPrivateKey } from 'node:crypto';
import { x509 } from '../spiffe/peculiar.js';
import { SpiffeId, TrustDomain } from '../spiffe/index.js';

const EC_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
/** Leaves are backdated a little so a peer whose clock runs slightly behind still accepts them. */
const CLOCK_SKEW_MS = 30_000;

export interface IssuedSvid {
  id: SpiffeId;
  /** Leaf first, then intermediates (none for the dev CA). */
  certificates: X509Certificate[];
  certChainPem: string;
  privateKeyPem: string;
}

export interface DevCaMaterial {
  certPem: string;
  keyPem: string;
}

/**
 * RFC 5280 serials: positive, at most 20 octets. 16 random bytes, the first in 0x01..0x7f: positive
 * and minimally encoded in DER, so the serial always reads as 16 bytes (a first byte of 0 would
 * be dropped, and the next one could then look negative).
 */
export function randomSerialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = bytes[0]! & 0x7f || 0x01;
  return bytes.toString('hex');
}

async function generateKeyPair(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(EC_ALGORITHM, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

async function privateKeyToPem(key: webcrypto.CryptoKey): Promise<string> {
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{1,64}/g, '$&\n')}-----END PRIVATE KEY-----\n`;
}

async function importSigningKey(pem: string): Promise<webcrypto.CryptoKey> {
  const der = createPrivateKey(pem).export({ format: 'der', type: 'pkcs8' });
  return webcrypto.subtle.importKey('pkcs8', der, EC_ALGORITHM, false, ['sign']);
}

/** Creates a new self-signed CA for `trustDomain`, valid for `ttlMs` (default one year). */
export async function createDevCa(trustDomain: TrustDomain, ttlMs = 365 * 24 * 3600_000): Promise<DevCaMaterial> {
  const keys = await generateKeyPair();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: `O=Sigil dev CA, CN=${trustDomain.name}`,
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(now + ttlMs),
    signingAlgorithm: SIGNING_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: trustDomain.idString() }]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: await privateKeyToPem(keys.privateKey) };
}

/** Mints X.509-SVIDs signed by one CA. */
export class DevIssuer {
  private constructor(
    readonly trustDomain: TrustDomain,
    readonly caCertificate: X509Certificate,
    private readonly caPeculiar: InstanceType<typeof x509.X509Certificate>,
    private readonly signingKey: webcrypto.CryptoKey,
  ) {}

  static async fromPem(trustDomain: TrustDomain, material: DevCaMaterial): Promise<DevIssuer> {
    const caCertificate = new X509Certificate(material.certPem);
    const signingKey = await importSigningKey(material.keyPem);
    if (!caCertificate.checkPrivateKey(createPrivateKey(material.keyPem))) {
      throw new Error('CA private key does not match the CA certificate');
    }
    return new DevIssuer(trustDomain, caCertificate, new x509.X509Certificate(caCertificate.raw), signingKey);
  }

  /** Issues a leaf SVID for `id` valid for `ttlMs` from now (never beyond the CA's own expiry). */
  async issue(id: SpiffeId, ttlMs: number): Promise<IssuedSvid> {
    if (!id.trustDomain.equals(this.trustDomain)) {
      throw new Error(`${id} is not in trust domain ${this.trustDomain.name}`);
    }
    if (id.isRoot()) throw new Error(`${id} has no path; an SVID needs a workload path`);
    const keys = await generateKeyPair();
    const now = Date.now();
    const notAfter = Math.min(now + ttlMs, new Date(this.caCertificate.validTo).getTime());
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerialHex(),
      subject: 'O=SPIFFE',
      issuer: this.caPeculiar.subject,
      notBefore: new Date(Math.max(now - CLOCK_SKEW_MS, new Date(this.caCertificate.validFrom).getTime())),
      notAfter: new Date(notAfter),
      signingAlgorithm: SIGNING_ALGORITHM,
      publicKey: keys.publicKey,
      signingKey: this.signingKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: id.toString() }], true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.caPeculiar),
      ],
    });
    const leafCert = new X509Certificate(Buffer.from(leaf.rawData));
    return {
      id,
      certificates: [leafCert],
      certChainPem: leafCert.toString(),
      privateKeyPem: await privateKeyToPem(keys.privateKey),
    };
  }
}

/** The trust domain a dev CA was created for, read from its SPIFFE URI SAN. */
export function trustDomainOfCa(caCertificate: X509Certificate): TrustDomain {
  const uri = /URI:(spiffe:\/\/[^,\s/]+)/.exec(caCertificate.subjectAltName ?? '')?.[1];
  if (!uri) throw new Error('CA certificate carries no SPIFFE trust-domain URI SAN');
  return TrustDomain.parse(uri);
}
