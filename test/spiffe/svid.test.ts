import t from 'tap';
import {
  SvidError,
  certificatesFromDer,
  parseCertificatesPem,
  validateLeaf,
  validateSigningCertificate,
} from '../../src/spiffe/index.js';
import { x509 } from '../../src/spiffe/peculiar.js';
import { createCa, createCert, createIntermediate, createLeaf, type Issued } from '../fixtures/certs.js';

const ID = 'spiffe://example.org/agent/a';

function svidProblem(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof SvidError) return e.problem;
    throw e;
  }
  return undefined;
}

let ca: Issued;
t.before(async () => {
  ca = await createCa({ trustDomain: 'example.org' });
});

t.test('valid leaf (positive control)', async (t) => {
  const leaf = await createLeaf(ca, ID);
  const id = validateLeaf(leaf.cert);
  t.equal(id.toString(), ID);
  t.equal(svidProblem(() => validateLeaf(leaf.cert)), undefined);
});

t.test('valid leaf variants', async (t) => {
  const variants: Array<[string, Issued]> = [
    ['with DNS SANs', await createLeaf(ca, ID, { dnsNames: ['a.example.org', 'localhost'] })],
    ['keyEncipherment + keyAgreement too', await createLeaf(ca, ID, { keyUsage: ['digitalSignature', 'keyEncipherment', 'keyAgreement'] })],
    ['basicConstraints absent (tolerated as cA=false)', await createLeaf(ca, ID, { ca: null })],
    ['no EKU', await createLeaf(ca, ID, { extKeyUsage: null })],
    ['RSA key', await createLeaf(ca, ID, { keyAlgorithm: 'RSA-2048' })],
    ['P-384 key', await createLeaf(ca, ID, { keyAlgorithm: 'P-384' })],
    ['long path', await createLeaf(ca, 'spiffe://example.org/ns/default/sa/very-long_name.v2')],
  ];
  for (const [name, leaf] of variants) {
    t.equal(svidProblem(() => validateLeaf(leaf.cert)), undefined, name);
  }
});

t.test('each leaf rule violation has its own problem', async (t) => {
  const cases: Array<[string, Promise<Issued>, string]> = [
    ['no SAN at all', createLeaf(ca, ID, { uris: [] }), 'no_uri_san'],
    ['DNS SAN only', createLeaf(ca, ID, { uris: [], dnsNames: ['a.example.org'] }), 'no_uri_san'],
    ['two SPIFFE URI SANs', createLeaf(ca, ID, { uris: [ID, 'spiffe://example.org/agent/b'] }), 'multiple_uri_sans'],
    [
      'SPIFFE + https URI SAN with DNS present',
      createLeaf(ca, ID, { uris: [ID, 'https://example.org/a'], dnsNames: ['a.example.org'] }),
      'multiple_uri_sans',
    ],
    ['https URI SAN', createLeaf(ca, 'https://example.org/agent/a'), 'not_spiffe_id'],
    ['uppercase trust domain', createLeaf(ca, 'spiffe://Example.org/agent/a'), 'not_spiffe_id'],
    ['dot segment', createLeaf(ca, 'spiffe://example.org/agent/../admin'), 'not_spiffe_id'],
    ['trust-domain ID as leaf', createLeaf(ca, 'spiffe://example.org'), 'root_path'],
    ['cA=true', createLeaf(ca, ID, { ca: true }), 'ca_leaf'],
    ['keyUsage absent', createLeaf(ca, ID, { keyUsage: null }), 'missing_key_usage'],
    ['no digitalSignature', createLeaf(ca, ID, { keyUsage: ['keyEncipherment'] }), 'no_digital_signature'],
    ['keyCertSign', createLeaf(ca, ID, { keyUsage: ['digitalSignature', 'keyCertSign'] }), 'key_cert_sign'],
    ['cRLSign', createLeaf(ca, ID, { keyUsage: ['digitalSignature', 'cRLSign'] }), 'crl_sign'],
    [
      'duplicate SAN extension',
      createLeaf(ca, ID, { extraExtensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: ID }])] }),
      'duplicate_extension',
    ],
    ['a CA certificate used as a leaf', createCa({ trustDomain: 'example.org' }), 'root_path'],
    [
      'a CA certificate with a workload ID used as a leaf',
      createCa({ uris: [ID] }),
      'ca_leaf',
    ],
  ];
  for (const [name, pending, problem] of cases) {
    const leaf = await pending;
    t.equal(svidProblem(() => validateLeaf(leaf.cert)), problem, `${name} → ${problem}`);
  }
});

t.test('SvidError shape', async (t) => {
  const leaf = await createLeaf(ca, ID, { ca: true });
  try {
    validateLeaf(leaf.cert);
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof SvidError);
    t.equal((e as SvidError).code, 'svid_invalid');
    t.equal((e as SvidError).problem, 'ca_leaf');
  }
});

t.test('signing certificates', async (t) => {
  const good: Array<[string, Issued]> = [
    ['root with trust-domain ID', ca],
    ['root without URI SAN', await createCa()],
    ['intermediate with trust-domain ID', await createIntermediate(ca, { trustDomain: 'example.org' })],
    ['intermediate without URI SAN', await createIntermediate(ca)],
    ['intermediate with a workload-style SPIFFE ID', await createIntermediate(ca, { uris: ['spiffe://example.org/spire/server'] })],
    ['keyCertSign only', await createIntermediate(ca, { keyUsage: ['keyCertSign'] })],
  ];
  for (const [name, cert] of good) {
    t.equal(svidProblem(() => validateSigningCertificate(cert.cert)), undefined, name);
  }
  const bad: Array<[string, Issued, string]> = [
    ['cA=false', await createIntermediate(ca, { ca: false }), 'not_ca'],
    ['basicConstraints absent', await createIntermediate(ca, { ca: null }), 'not_ca'],
    ['a leaf', await createLeaf(ca, ID), 'not_ca'],
    ['keyUsage absent', await createIntermediate(ca, { keyUsage: null }), 'missing_key_usage'],
    ['no keyCertSign', await createIntermediate(ca, { keyUsage: ['cRLSign', 'digitalSignature'] }), 'no_key_cert_sign'],
    ['non-SPIFFE URI SAN', await createIntermediate(ca, { uris: ['https://example.org/ca'] }), 'not_spiffe_id'],
    ['invalid SPIFFE URI SAN', await createIntermediate(ca, { uris: ['spiffe://example.org/'] }), 'not_spiffe_id'],
    [
      'two URI SANs',
      await createIntermediate(ca, { uris: ['spiffe://example.org', 'spiffe://example.org/x'] }),
      'multiple_uri_sans',
    ],
  ];
  for (const [name, cert, problem] of bad) {
    t.equal(svidProblem(() => validateSigningCertificate(cert.cert)), problem, `${name} → ${problem}`);
  }
});

t.test('parseCertificatesPem', async (t) => {
  const leaf = await createLeaf(ca, ID);
  const inter = await createIntermediate(ca);
  const certs = parseCertificatesPem(`junk before\n${leaf.pem}${leaf.keyPem}\n${inter.pem}\ntrailing`);
  t.equal(certs.length, 2, 'skips non-certificate blocks and surrounding text');
  t.equal(certs[0]!.fingerprint256, leaf.cert.fingerprint256);
  t.equal(certs[1]!.fingerprint256, inter.cert.fingerprint256);
  t.equal(parseCertificatesPem(leaf.pem.replace(/\n/g, '\r\n')).length, 1, 'CRLF line endings');

  t.equal(svidProblem(() => parseCertificatesPem('')), 'pem');
  t.equal(svidProblem(() => parseCertificatesPem('not a pem at all')), 'pem');
  t.equal(svidProblem(() => parseCertificatesPem(leaf.keyPem)), 'pem', 'only a key');
  t.equal(
    svidProblem(() => parseCertificatesPem('-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n')),
    'pem',
    'garbage inside a block',
  );
  t.equal(svidProblem(() => parseCertificatesPem(leaf.pem + '-----BEGIN CERTIFICATE-----\nZm9v\n-----END CERTIFICATE-----\n')), 'pem');
});

t.test('certificatesFromDer', async (t) => {
  const leaf = await createLeaf(ca, ID);
  const certs = certificatesFromDer([leaf.der, ca.der]);
  t.equal(certs.length, 2);
  t.equal(certs[0]!.fingerprint256, leaf.cert.fingerprint256);
  t.same(certificatesFromDer([]), []);
  t.equal(svidProblem(() => certificatesFromDer([leaf.der, Buffer.from('nope')])), 'der');
});

t.test('self-signed leaf still passes leaf rules (trust is verify’s job)', async (t) => {
  const leaf = await createCert({ uris: [ID], ca: false, keyUsage: ['digitalSignature'] });
  t.equal(validateLeaf(leaf.cert).toString(), ID);
});
