import { createPrivateKey, type KeyObject, type X509Certificate } from 'node:crypto';
import { parseCertificatesPem, validateLeaf, type TrustDomain } from '../spiffe/index.js';
import type { X509Svid } from './types.js';

export class SvidLoadError extends Error {
  readonly code = 'svid_load_failed';
}

/**
 * Builds the workload's own SVID from PEM material and checks it is presentable: a valid
 * X.509-SVID leaf in our trust domain whose private key matches. Throws SvidLoadError.
 */
export function svidFromPem(chainPem: string, keyPem: string, trustDomain: TrustDomain): X509Svid {
  let certificates: X509Certificate[];
  try {
    certificates = parseCertificatesPem(chainPem);
  } catch (err) {
    throw new SvidLoadError(`SVID certificate is not valid PEM: ${(err as Error).message}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new SvidLoadError('SVID private key is not a valid PEM private key');
  }
  return svidFromParts(certificates, key, trustDomain);
}

/**
 * The checks every source applies to its own SVID, whatever the encoding it arrived in: leaf
 * first and a valid X.509-SVID, in the expected trust domain, with the private key that matches.
 */
export function svidFromParts(certificates: X509Certificate[], key: KeyObject, trustDomain: TrustDomain): X509Svid {
  const leaf = certificates[0];
  if (!leaf) throw new SvidLoadError('SVID certificate file holds no certificate');
  let id;
  try {
    id = validateLeaf(leaf);
  } catch (err) {
    throw new SvidLoadError(`SVID leaf is not a valid X.509-SVID: ${(err as Error).message}`);
  }
  if (!id.trustDomain.equals(trustDomain)) {
    throw new SvidLoadError(`SVID ${id} is not in the configured trust domain ${trustDomain.name}`);
  }
  if (key.type !== 'private' || !leaf.checkPrivateKey(key)) throw new SvidLoadError('SVID private key does not match the leaf certificate');
  return {
    id,
    certificates,
    certChainPem: certificates.map((c) => c.toString()).join(''),
    privateKeyPem: key.export({ format: 'pem', type: 'pkcs8' }).toString(),
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    serial: leaf.serialNumber,
  };
}
