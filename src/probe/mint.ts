// Certificate minting: the probe's attack credentials (rogue CAs, malformed and mis-dated SVIDs)
// and the test suites' fixtures. Each call generates fresh keys, so nothing shares key material
// by accident; pass `keys` to reuse a key pair on purpose (e.g. a re-issued CA).
import { createPrivateKey, randomBytes, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import { randomSerialHex } from '../identity/devca.js';
import { AsnConvert, asn1X509, x509 } from '../spiffe/peculiar.js';

type CryptoKeyPair = webcrypto.CryptoKeyPair;

export type KeyAlgorithm = 'P-256' | 'P-384' | 'RSA-2048';

export type KeyUsageName =
  | 'digitalSignature'
  | 'nonRepudiation'
  | 'keyEncipherment'
  | 'dataEncipherment'
  | 'keyAgreement'
  | 'keyCertSign'
  | 'cRLSign';

export interface Issued {
  cert: X509Certificate;
  /** PEM of this certificate only. */
  pem: string;
  /** PKCS#8 PEM private key. */
  keyPem: string;
  der: Buffer;
  privateKey: KeyObject;
  /** WebCrypto pair, used to sign children and to re-issue with the same key. */
  keys: CryptoKeyPair;
  keyAlgorithm: KeyAlgorithm;
  /** Distinguished name string as given to the generator, e.g. "CN=Test CA 1a2b". */
  subject: string;
}

export interface CertOptions {
  /** Used in the default subject CN. */
  role?: string;
  /** Defaults to a unique "CN=<role> <hex>". */
  subject?: string;
  /** URI SANs, in order. */
  uris?: string[];
  dnsNames?: string[];
  /** IP address SANs (e.g. "127.0.0.1" for a server tests reach by address). */
  ipAddresses?: string[];
  /** basicConstraints cA; null omits the extension. */
  ca?: boolean | null;
  pathLength?: number;
  /** keyUsage bits; null omits the extension. */
  keyUsage?: KeyUsageName[] | null;
  /** keyUsage criticality (default true, as X509-SVID §4.3 requires); false for negative tests. */
  keyUsageCritical?: boolean;
  /** Extended key usage OIDs; null omits the extension. */
  extKeyUsage?: string[] | null;
  notBefore?: Date;
  notAfter?: Date;
  /** Issuer; omitted means self-signed. */
  signer?: Issued;
  keyAlgorithm?: KeyAlgorithm;
  /** Reuse an existing key pair (its algorithm must match keyAlgorithm). */
  keys?: CryptoKeyPair;
  /** A nameConstraints extension (critical unless `critical: false`). */
  nameConstraints?: NameConstraintsSpec;
  /** Adds subject/authority key identifiers (default true); false makes issuer matching name-only. */
  keyIdentifiers?: boolean;
  /** Appended after the generated extensions (e.g. to create duplicates). */
  extraExtensions?: InstanceType<typeof x509.Extension>[];
}

/** One GeneralSubtree. 'email' (rfc822Name) and 'ip' are forms Sigil does not process. */
export interface NameSubtreeSpec {
  type: 'uri' | 'dns' | 'email' | 'ip';
  value: string;
  /** RFC 5280 says conforming CAs never set these; for negative tests. */
  minimum?: number;
  maximum?: number;
}

export interface NameConstraintsSpec {
  permitted?: NameSubtreeSpec[];
  excluded?: NameSubtreeSpec[];
  /** Default true (RFC 5280 §4.2.1.10: conforming CAs MUST mark it critical). */
  critical?: boolean;
}

export const OID_NAME_CONSTRAINTS = '2.5.29.30';

function subtrees(specs: NameSubtreeSpec[] | undefined): InstanceType<typeof asn1X509.GeneralSubtrees> | undefined {
  if (!specs) return undefined;
  return new asn1X509.GeneralSubtrees(
    specs.map((s) => {
      const base = new asn1X509.GeneralName(
        s.type === 'uri'
          ? { uniformResourceIdentifier: s.value }
          : s.type === 'dns'
            ? { dNSName: s.value }
            : s.type === 'email'
              ? { rfc822Name: s.value }
              : { iPAddress: s.value },
      );
      return new asn1X509.GeneralSubtree({
        base,
        ...(s.minimum !== undefined ? { minimum: s.minimum } : {}),
        ...(s.maximum !== undefined ? { maximum: s.maximum } : {}),
      });
    }),
  );
}

/** A DER nameConstraints extension built with the ASN.1 schema classes. */
export function nameConstraintsExtension(spec: NameConstraintsSpec): InstanceType<typeof x509.Extension> {
  const nc = new asn1X509.NameConstraints({
    permittedSubtrees: subtrees(spec.permitted),
    excludedSubtrees: subtrees(spec.excluded),
  });
  return new x509.Extension(OID_NAME_CONSTRAINTS, spec.critical ?? true, AsnConvert.serialize(nc));
}

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

export const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
export const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

function keyParams(alg: KeyAlgorithm): { gen: webcrypto.EcKeyGenParams | webcrypto.RsaHashedKeyGenParams; sign: webcrypto.EcdsaParams | webcrypto.Algorithm } {
  switch (alg) {
    case 'P-256':
      return { gen: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } as webcrypto.EcdsaParams };
    case 'P-384':
      return { gen: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } as webcrypto.EcdsaParams };
    case 'RSA-2048':
      return {
        gen: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
        sign: { name: 'RSASSA-PKCS1-v1_5' },
      };
  }
}

export async function generateKeys(alg: KeyAlgorithm = 'P-256'): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(keyParams(alg).gen, true, ['sign', 'verify'])) as CryptoKeyPair;
}


function usageFlags(names: KeyUsageName[]): number {
  return names.reduce((acc, n) => acc | x509.KeyUsageFlags[n], 0);
}

/** The general builder; createCa/createIntermediate/createLeaf only choose defaults. */
export async function createCert(opts: CertOptions = {}): Promise<Issued> {
  const keyAlgorithm = opts.keyAlgorithm ?? 'P-256';
  const keys = opts.keys ?? (await generateKeys(keyAlgorithm));
  const subject = opts.subject ?? `CN=${opts.role ?? 'Test'} ${randomBytes(4).toString('hex')}`;
  const signer = opts.signer;
  const now = Date.now();

  const extensions: InstanceType<typeof x509.Extension>[] = [];
  if (opts.ca !== null) extensions.push(new x509.BasicConstraintsExtension(opts.ca ?? false, opts.pathLength, true));
  if (opts.keyUsage !== null) {
    extensions.push(new x509.KeyUsagesExtension(usageFlags(opts.keyUsage ?? ['digitalSignature']), opts.keyUsageCritical ?? true));
  }
  if (opts.extKeyUsage != null) extensions.push(new x509.ExtendedKeyUsageExtension(opts.extKeyUsage, false));
  const names = [
    ...(opts.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(opts.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(opts.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  // SPIFFE leaves often have an empty subject, which makes the SAN critical per RFC 5280; we keep
  // a CN, so non-critical is correct.
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  if (opts.nameConstraints) extensions.push(nameConstraintsExtension(opts.nameConstraints));
  if (opts.keyIdentifiers !== false) {
    extensions.push(await x509.SubjectKeyIdentifierExtension.create(keys.publicKey));
    extensions.push(await x509.AuthorityKeyIdentifierExtension.create((signer?.keys ?? keys).publicKey));
  }
  extensions.push(...(opts.extraExtensions ?? []));

  const common = {
    serialNumber: randomSerialHex(),
    notBefore: opts.notBefore ?? new Date(now - 5 * MINUTE),
    notAfter: opts.notAfter ?? new Date(now + DAY),
    extensions,
  };
  const generated = signer
    ? await x509.X509CertificateGenerator.create({
        ...common,
        subject,
        issuer: signer.subject,
        publicKey: keys.publicKey,
        signingKey: signer.keys.privateKey,
        signingAlgorithm: keyParams(signer.keyAlgorithm).sign,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({
        ...common,
        name: subject,
        keys,
        signingAlgorithm: keyParams(keyAlgorithm).sign,
      });

  const der = Buffer.from(generated.rawData);
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  const privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
  const cert = new X509Certificate(der);
  return {
    cert,
    pem: cert.toString(),
    keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    der,
    privateKey,
    keys,
    keyAlgorithm,
    subject,
  };
}

export interface CaOptions extends Omit<CertOptions, 'uris'> {
  /** Adds the trust-domain ID (spiffe://<td>) as the URI SAN. */
  trustDomain?: string;
  uris?: string[];
}

/** Self-signed root unless `signer` is given: cA=true, keyCertSign+cRLSign, 1-year validity. */
export async function createCa(opts: CaOptions = {}): Promise<Issued> {
  const { trustDomain, ...rest } = opts;
  return createCert({
    role: 'Test CA',
    ca: true,
    keyUsage: ['keyCertSign', 'cRLSign'],
    notAfter: new Date(Date.now() + 365 * DAY),
    ...rest,
    uris: rest.uris ?? (trustDomain ? [`spiffe://${trustDomain}`] : []),
  });
}

/** A signing certificate issued by `signer` (a root or another intermediate). */
export async function createIntermediate(signer: Issued, opts: CaOptions = {}): Promise<Issued> {
  return createCa({ role: 'Test Intermediate', notAfter: new Date(Date.now() + 30 * DAY), ...opts, signer });
}

/**
 * An X509-SVID leaf for `spiffeId` (a single URI SAN) signed by `signer`: cA=false,
 * digitalSignature only, serverAuth+clientAuth. Override anything through `opts`, including
 * `uris` for multi/zero-URI tests and `signer: undefined` via createCert for self-signed leaves.
 */
export async function createLeaf(signer: Issued | undefined, spiffeId: string, opts: CertOptions = {}): Promise<Issued> {
  return createCert({
    role: 'Test Leaf',
    uris: [spiffeId],
    ca: false,
    keyUsage: ['digitalSignature'],
    extKeyUsage: [EKU_SERVER_AUTH, EKU_CLIENT_AUTH],
    ...opts,
    ...(signer ? { signer } : {}),
  });
}

/** A copy of `der` with the last signature byte flipped: parses fine, never verifies. */
export function tamperSignature(der: Buffer): X509Certificate {
  const copy = Buffer.from(der);
  copy[copy.length - 1] = copy[copy.length - 1]! ^ 0x01;
  return new X509Certificate(copy);
}

/** An SVID chain as a PEM file would hold it: leaf first, then intermediates. */
export function chainPem(...certs: Issued[]): string {
  return certs.map((c) => c.pem).join('');
}

/** A complete trust domain: root CA (with the trust-domain URI SAN) and one leaf per ID. */
export async function createTrustDomain(
  trustDomain: string,
  ids: string[] = [],
): Promise<{ ca: Issued; leaves: Record<string, Issued> }> {
  const ca = await createCa({ trustDomain });
  const leaves: Record<string, Issued> = {};
  for (const id of ids) leaves[id] = await createLeaf(ca, id);
  return { ca, leaves };
}

/**
 * An existing certificate and its private key as a signer for createCert/createLeaf: a CA the
 * operator holds (e.g. `sigil ca init` output of a probe-only federated trust domain), or an
 * SVID whose key is used to sign a "child" that a correct verifier must refuse.
 */
export async function issuerFromPem(certPem: string, keyPem: string): Promise<Issued> {
  const cert = new X509Certificate(certPem);
  const privateKey = createPrivateKey(keyPem);
  const keyAlgorithm = keyAlgorithmOf(privateKey);
  const gen = keyParams(keyAlgorithm).gen;
  const importParams = gen.name === 'ECDSA' ? { name: 'ECDSA', namedCurve: (gen as webcrypto.EcKeyGenParams).namedCurve } : { name: gen.name, hash: 'SHA-256' };
  const pkcs8 = privateKey.export({ format: 'der', type: 'pkcs8' });
  const sign = await webcrypto.subtle.importKey('pkcs8', pkcs8, importParams, true, ['sign']);
  const spki = cert.publicKey.export({ format: 'der', type: 'spki' });
  const verify = await webcrypto.subtle.importKey('spki', spki, importParams, true, ['verify']);
  return {
    cert,
    pem: cert.toString(),
    keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    der: Buffer.from(cert.raw),
    privateKey,
    keys: { privateKey: sign, publicKey: verify },
    keyAlgorithm,
    subject: new x509.X509Certificate(cert.raw).subject,
  };
}

function keyAlgorithmOf(key: KeyObject): KeyAlgorithm {
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec' && details?.namedCurve === 'prime256v1') return 'P-256';
  if (key.asymmetricKeyType === 'ec' && details?.namedCurve === 'secp384r1') return 'P-384';
  if (key.asymmetricKeyType === 'rsa' && details?.modulusLength === 2048) return 'RSA-2048';
  throw new Error(`unsupported signing key (${key.asymmetricKeyType} ${details?.namedCurve ?? details?.modulusLength ?? ''}): P-256, P-384 or RSA-2048 only`);
}
