import t from 'tap';
import {
  SvidError,
  certificatesFromDer,
  parseCertificatesPem,
  validateLeaf,
  validateSigningCertificate,
} from '../../src/spiffe/index.js';
import { x509 } from '../../src/spiffe/peculiar.js';
import {
  EKU_CLIENT_AUTH,
  EKU_SERVER_AUTH,
  createCa,
  createCert,
  createIntermediate,
  createLeaf,
  type CertOptions,
  type Issued,
} from '../fixtures/certs.js';

const EKU_CODE_SIGNING = '1.3.6.1.5.5.7.3.3';
const EKU_ANY = '2.5.29.37.0';
const unknownExtension = (critical: boolean) => new x509.Extension('1.3.6.1.4.1.55555.1', critical, new Uint8Array([0x05, 0x00]));
const criticalPolicies = () => new x509.CertificatePolicyExtension(['2.5.29.32.0'], true);

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
    // X509-SVID §3.2: the SPIFFE ID of a signing certificate MUST NOT have a path.
    [
      'intermediate with a workload-style SPIFFE ID',
      await createIntermediate(ca, { uris: ['spiffe://example.org/spire/server'] }),
      'signing_id_has_path',
    ],
    ['root with a workload-style SPIFFE ID', await createCa({ uris: ['spiffe://example.org/ca'] }), 'signing_id_has_path'],
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

// X509-SVID §4.3: "The key usage extension MUST be set on all SVIDs, and MUST be marked critical."
t.test('keyUsage must be critical on leaves and signing certificates', async (t) => {
  t.equal(svidProblem(() => validateLeaf(ca.cert)), 'root_path', 'sanity: CA is not a leaf');
  const leaf = await createLeaf(ca, ID, { keyUsageCritical: false });
  t.equal(svidProblem(() => validateLeaf(leaf.cert)), 'key_usage_not_critical', 'leaf');
  const inter = await createIntermediate(ca, { keyUsageCritical: false });
  t.equal(svidProblem(() => validateSigningCertificate(inter.cert)), 'key_usage_not_critical', 'intermediate');
  const root = await createCa({ trustDomain: 'example.org', keyUsageCritical: false });
  t.equal(svidProblem(() => validateSigningCertificate(root.cert)), 'key_usage_not_critical', 'root');
  // Positive controls: the fixtures' default is critical.
  const okLeaf = await createLeaf(ca, ID, { keyUsageCritical: true });
  t.equal(svidProblem(() => validateLeaf(okLeaf.cert)), undefined, 'critical leaf');
  const okInter = await createIntermediate(ca);
  t.equal(svidProblem(() => validateSigningCertificate(okInter.cert)), undefined, 'critical intermediate');
  t.equal(svidProblem(() => validateSigningCertificate(ca.cert)), undefined, 'critical root');
});

// X509-SVID §4.4: leaf EKU SHOULD be present; "When included, fields id-kp-serverAuth and
// id-kp-clientAuth MUST be set."
t.test('leaf extKeyUsage, when present, has serverAuth and clientAuth', async (t) => {
  const bad: Array<[string, string[]]> = [
    ['serverAuth only', [EKU_SERVER_AUTH]],
    ['clientAuth only', [EKU_CLIENT_AUTH]],
    ['codeSigning only', [EKU_CODE_SIGNING]],
    ['anyExtendedKeyUsage only', [EKU_ANY]],
    ['clientAuth + codeSigning', [EKU_CLIENT_AUTH, EKU_CODE_SIGNING]],
  ];
  for (const [name, eku] of bad) {
    const leaf = await createLeaf(ca, ID, { extKeyUsage: eku });
    t.equal(svidProblem(() => validateLeaf(leaf.cert)), 'eku_missing_server_or_client_auth', name);
  }
  const good: Array<[string, CertOptions]> = [
    ['both', { extKeyUsage: [EKU_SERVER_AUTH, EKU_CLIENT_AUTH] }],
    ['both, reversed', { extKeyUsage: [EKU_CLIENT_AUTH, EKU_SERVER_AUTH] }],
    ['both plus another', { extKeyUsage: [EKU_CODE_SIGNING, EKU_CLIENT_AUTH, EKU_SERVER_AUTH] }],
    ['critical EKU with both', { extraExtensions: [new x509.ExtendedKeyUsageExtension([EKU_SERVER_AUTH, EKU_CLIENT_AUTH], true)], extKeyUsage: null }],
    ['EKU absent (SHOULD, not MUST)', { extKeyUsage: null }],
  ];
  for (const [name, opts] of good) {
    const leaf = await createLeaf(ca, ID, opts);
    t.equal(svidProblem(() => validateLeaf(leaf.cert)), undefined, name);
  }
  // Signing certificates MAY carry any EKU.
  const inter = await createIntermediate(ca, { extKeyUsage: [EKU_CODE_SIGNING] });
  t.equal(svidProblem(() => validateSigningCertificate(inter.cert)), undefined, 'signing certificate with any EKU');
});

// RFC 5280 §4.2: "A certificate-using system MUST reject the certificate if it encounters a
// critical extension it does not recognize".
t.test('unrecognized critical extensions', async (t) => {
  const leaf = await createLeaf(ca, ID, { extraExtensions: [unknownExtension(true)] });
  t.equal(svidProblem(() => validateLeaf(leaf.cert)), 'unknown_critical_extension', 'leaf');
  const inter = await createIntermediate(ca, { extraExtensions: [unknownExtension(true)] });
  t.equal(svidProblem(() => validateSigningCertificate(inter.cert)), 'unknown_critical_extension', 'intermediate');
  // Positive controls: the same extension non-critical, and critical certificatePolicies.
  const okLeaf = await createLeaf(ca, ID, { extraExtensions: [unknownExtension(false), criticalPolicies()] });
  t.equal(svidProblem(() => validateLeaf(okLeaf.cert)), undefined, 'non-critical unknown + critical policies (leaf)');
  const okInter = await createIntermediate(ca, { extraExtensions: [unknownExtension(false), criticalPolicies()] });
  t.equal(svidProblem(() => validateSigningCertificate(okInter.cert)), undefined, 'same on an intermediate');
  // Any repeated extension, not only the ones we read.
  const dupEku = await createLeaf(ca, ID, { extraExtensions: [new x509.ExtendedKeyUsageExtension([EKU_SERVER_AUTH, EKU_CLIENT_AUTH])] });
  t.equal(svidProblem(() => validateLeaf(dupEku.cert)), 'duplicate_extension', 'duplicate extKeyUsage');
});

t.test('signing certificates with nameConstraints we cannot fully enforce are unusable', async (t) => {
  const bad: Array<[string, CertOptions['nameConstraints']]> = [
    ['critical, rfc822Name form', { permitted: [{ type: 'email', value: 'example.org' }] }],
    ['critical, URI plus rfc822Name', { permitted: [{ type: 'uri', value: 'example.org' }], excluded: [{ type: 'email', value: 'x.org' }] }],
    ['critical, iPAddress form', { excluded: [{ type: 'ip', value: '10.0.0.1' }] }],
    ['URI subtree with maximum', { permitted: [{ type: 'uri', value: 'example.org', maximum: 2 }] }],
    ['URI subtree with minimum (non-critical too)', { permitted: [{ type: 'uri', value: 'example.org', minimum: 1 }], critical: false }],
    ['URI subtree that is a URI, not a host', { permitted: [{ type: 'uri', value: 'spiffe://example.org' }] }],
    ['empty URI subtree', { permitted: [{ type: 'uri', value: '' }] }],
    ['DNS subtree with a trailing dot', { excluded: [{ type: 'dns', value: 'example.org.' }] }],
    ['empty nameConstraints', {}],
  ];
  for (const [name, nameConstraints] of bad) {
    const inter = await createIntermediate(ca, { nameConstraints });
    t.equal(svidProblem(() => validateSigningCertificate(inter.cert)), 'unprocessable_name_constraints', name);
  }
  const good: Array<[string, CertOptions['nameConstraints']]> = [
    ['critical URI + DNS', { permitted: [{ type: 'uri', value: 'example.org' }, { type: 'dns', value: '.example.org' }] }],
    ['non-critical with an rfc822Name form (ignored)', { permitted: [{ type: 'email', value: 'example.org' }], critical: false }],
    ['critical, excluded only', { excluded: [{ type: 'uri', value: '.evil.example' }] }],
  ];
  for (const [name, nameConstraints] of good) {
    const inter = await createIntermediate(ca, { nameConstraints });
    t.equal(svidProblem(() => validateSigningCertificate(inter.cert)), undefined, name);
  }
});
