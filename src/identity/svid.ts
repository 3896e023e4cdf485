import { createPrivateKey, type X509Certificate } from 'node:crypto';
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
  let key;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    throw new SvidLoadError('SVID private key is not a valid PEM private key');
  }
  if (!leaf.checkPrivateKey(key)) throw new SvidLoadError('SVID private key does not match the leaf certificate');
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
