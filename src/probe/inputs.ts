// Reading the probe's inputs from files: the legitimate test identity, the trust bundle and the
// optional federated CA. Every problem names the flag and the file, never key or token bytes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { trustDomainOfCa } from '../identity/devca.js';
import { svidFromPem } from '../identity/svid.js';
import { BundleSet, parseCertificatesPem, SpiffeId, validateLeaf, X509Bundle } from '../spiffe/index.js';
import { issuerFromPem, type Issued } from './mint.js';
import { ProbeInputError } from './probe.js';
import type { ProbeIdentity } from './types.js';

function read(flag: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ProbeInputError(`${flag}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** The test SVID: a valid X.509-SVID chain (leaf first) and its matching private key. */
export async function loadIdentity(certPath: string, keyPath: string): Promise<ProbeIdentity> {
  const chainPem = read('--cert', certPath);
  const keyPem = read('--key', keyPath);
  let id: SpiffeId;
  try {
    const leaf = parseCertificatesPem(chainPem)[0];
    if (!leaf) throw new Error('no certificate');
    id = validateLeaf(leaf);
  } catch (err) {
    throw new ProbeInputError(`--cert: ${certPath} is not an X.509-SVID: ${(err as Error).message}`);
  }
  let svid;
  try {
    svid = svidFromPem(chainPem, keyPem, id.trustDomain);
  } catch (err) {
    throw new ProbeInputError(`--cert/--key: ${(err as Error).message}`);
  }
  return {
    id: svid.id,
    chain: svid.certificates,
    certChainPem: svid.certChainPem,
    keyPem: svid.privateKeyPem,
    asIssuer: await issuerFromPem(svid.certificates[0]!.toString(), svid.privateKeyPem),
  };
}

/** The bundle of the identity's trust domain (PEM, or a SPIFFE bundle as JSON). */
export function loadBundles(bundlePath: string, identity: ProbeIdentity): BundleSet {
  const text = read('--bundle', bundlePath);
  try {
    return new BundleSet([X509Bundle.parse(identity.id.trustDomain, text)]);
  } catch (err) {
    throw new ProbeInputError(`--bundle: ${bundlePath}: ${(err as Error).message}`);
  }
}

/** A `sigil ca init` directory (ca.pem, ca.key) of a probe-only trust domain the target federates with. */
export async function loadFederatedCa(dir: string, identity: ProbeIdentity): Promise<Issued> {
  const ca = await (async () => {
    try {
      return await issuerFromPem(read('--federated-ca', join(dir, 'ca.pem')), read('--federated-ca', join(dir, 'ca.key')));
    } catch (err) {
      if (err instanceof ProbeInputError) throw err;
      throw new ProbeInputError(`--federated-ca: ${dir}: ${(err as Error).message}`);
    }
  })();
  let td: string;
  try {
    td = trustDomainOfCa(ca.cert).name;
  } catch (err) {
    throw new ProbeInputError(`--federated-ca: ${dir}/ca.pem: ${(err as Error).message}`);
  }
  if (td === identity.id.trustDomain.name) {
    throw new ProbeInputError(`--federated-ca: ${dir} is a CA of ${td}, the target's own trust domain: give a CA of a separate, probe-only trust domain (never the real CA)`);
  }
  return ca;
}
