// Interop with jose (the reference JOSE implementation in the dependency set), both ways and
// for every algorithm: what Sigil signs, jose verifies and decodes; what jose signs with the
// right header and claims, Sigil verifies.
import * as jose from 'jose';
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { ENVELOPE_TYP, EnvelopeVerifier, createEnvelopeSigner, type VerifyContext } from '../../src/bus/envelope/index.js';
import { SpiffeId } from '../../src/spiffe/index.js';
import { createCa, createIntermediate, createLeaf, type Issued } from '../fixtures/certs.js';
import { bundlesOf, outcome, svidOf, x5cOf } from '../helpers/envelope.js';

const ORG = 'example.org';
const A = 'spiffe://example.org/agent/a';
const B = 'spiffe://example.org/agent/b';
const NOW = Date.now();

type Alg = 'ES256' | 'ES384' | 'PS256' | 'RS256';
const CASES: Array<{ alg: Alg; key: 'P-256' | 'P-384' | 'RSA-2048' }> = [
  { alg: 'ES256', key: 'P-256' },
  { alg: 'ES384', key: 'P-384' },
  { alg: 'PS256', key: 'RSA-2048' },
  { alg: 'RS256', key: 'RSA-2048' },
];

let ca: Issued;
let inter: Issued;
let ctx: VerifyContext;
const leaves = new Map<string, Issued>();

t.before(async () => {
  ca = await createCa({ trustDomain: ORG });
  inter = await createIntermediate(ca);
  for (const k of ['P-256', 'P-384', 'RSA-2048'] as const) leaves.set(k, await createLeaf(inter, A, { keyAlgorithm: k }));
  ctx = { bundles: bundlesOf([ORG, ca]), nowMs: NOW, self: SpiffeId.parse(B) };
});

for (const { alg, key } of CASES) {
  t.test(`${alg}: Sigil signs, jose verifies`, async (t) => {
    const leaf = leaves.get(key)!;
    const signer = createEnvelopeSigner(svidOf(leaf, inter), alg === 'RS256' ? { rsaAlgorithm: 'RS256' } : {});
    t.equal(signer.alg, alg);
    const data = { hello: 'wörld', list: [1, 2, 3], big: 'z'.repeat(3000) };
    const s = signer.sign({ subject: 'orders.created', data, audience: [B], delegation: 'tok' }, NOW);
    const publicKey = await jose.importX509(leaf.cert.toString(), alg);
    const r = await jose.compactVerify(s.jws, publicKey, { algorithms: [alg] });
    t.same(r.protectedHeader, { alg, typ: ENVELOPE_TYP, x5c: x5cOf(leaf, inter) });
    const claims = JSON.parse(new TextDecoder().decode(r.payload)) as Record<string, unknown>;
    t.same(claims, { iss: A, sub: 'orders.created', aud: [B], iat: s.iat, exp: s.exp, jti: s.jti, dlg: 'tok', data });
    // jose's JWT layer agrees on the registered claims.
    const jwt = await jose.jwtVerify(s.jws, publicKey, {
      algorithms: [alg],
      typ: ENVELOPE_TYP,
      issuer: A,
      subject: 'orders.created',
      audience: B,
      currentDate: new Date(NOW),
    });
    t.equal(jwt.payload.jti, s.jti);
    // Also with the KeyObject from the leaf (what jose does with Node keys).
    const viaKeyObject = await jose.compactVerify(s.jws, leaf.cert.publicKey, { algorithms: [alg] });
    t.same(viaKeyObject.payload, r.payload);
    // And bytes.
    const bytes = randomBytes(100);
    const sb = signer.sign({ subject: 'blob', bytes }, NOW);
    const rb = await jose.compactVerify(sb.jws, publicKey);
    const cb = JSON.parse(new TextDecoder().decode(rb.payload)) as Record<string, unknown>;
    t.same(jose.base64url.decode(cb.data_b64 as string), new Uint8Array(bytes));
    // A tampered envelope is refused by jose too (control for the comparison).
    const parts = s.jws.split('.');
    const tampered = [parts[0], parts[1]!.slice(0, 5) + (parts[1]![5] === 'A' ? 'B' : 'A') + parts[1]!.slice(6), parts[2]].join('.');
    await t.rejects(jose.compactVerify(tampered, publicKey), { code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
  });

  t.test(`${alg}: jose signs, Sigil verifies`, async (t) => {
    const leaf = leaves.get(key)!;
    const privateKey = await jose.importPKCS8(leaf.keyPem, alg);
    const iat = Math.floor(NOW / 1000);
    const claims = { iss: A, sub: 'orders.created', aud: [B], iat, exp: iat + 60, jti: jose.base64url.encode(randomBytes(16)), data: { from: 'jose', n: 7 } };
    const jws = await new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg, typ: ENVELOPE_TYP, x5c: x5cOf(leaf, inter) })
      .sign(privateKey);
    const v = new EnvelopeVerifier().verify(jws, ctx);
    t.equal(v.signer.id.toString(), A);
    t.equal(v.subject, 'orders.created');
    t.same(v.audience, [B]);
    t.same(v.data, claims.data);
    t.equal(v.jti, claims.jti);

    // jose's JWT builder, with data_b64 instead of data, claims in its own order.
    const bytes = randomBytes(64);
    const jwt = await new jose.SignJWT({ data_b64: jose.base64url.encode(bytes) })
      .setProtectedHeader({ alg, typ: ENVELOPE_TYP, x5c: x5cOf(leaf, inter) })
      .setIssuer(A)
      .setSubject('blobs')
      .setIssuedAt(iat)
      .setExpirationTime(iat + 30)
      .setJti(jose.base64url.encode(randomBytes(16)))
      .sign(privateKey);
    const vj = new EnvelopeVerifier().verify(jwt, ctx);
    t.same(vj.bytes, bytes);
    t.equal(vj.exp - vj.iat, 30);

    // Controls: jose output with a header member Sigil does not allow, or without typ, is refused.
    const withKid = await new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg, typ: ENVELOPE_TYP, x5c: x5cOf(leaf, inter), kid: 'k1' })
      .sign(privateKey);
    t.equal(outcome(new EnvelopeVerifier(), withKid, ctx), 'envelope_malformed/header_member_not_allowed');
    const noTyp = await new jose.CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg, x5c: x5cOf(leaf, inter) })
      .sign(privateKey);
    t.equal(outcome(new EnvelopeVerifier(), noTyp, ctx), 'envelope_malformed/typ_missing');
  });
}

t.test('PS256 uses a 32-byte salt (RFC 7518 §3.5): other salt lengths are refused', async (t) => {
  const { sign, constants } = await import('node:crypto');
  const leaf = leaves.get('RSA-2048')!;
  const iat = Math.floor(NOW / 1000);
  const claims = { iss: A, sub: 's', iat, exp: iat + 60, jti: jose.base64url.encode(randomBytes(16)), data: null };
  const input = jose.base64url.encode(JSON.stringify({ alg: 'PS256', typ: ENVELOPE_TYP, x5c: x5cOf(leaf, inter) })) + '.' + jose.base64url.encode(JSON.stringify(claims));
  const withSalt = (saltLength: number) =>
    input + '.' + sign('sha256', Buffer.from(input), { key: leaf.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength }).toString('base64url');
  t.equal(outcome(new EnvelopeVerifier(), withSalt(32), ctx), 'ok', 'control: salt 32');
  t.equal(outcome(new EnvelopeVerifier(), withSalt(20), ctx), 'signature_invalid/bad_signature', 'salt 20');
  t.equal(outcome(new EnvelopeVerifier(), withSalt(222), ctx), 'signature_invalid/bad_signature', 'maximum salt');
});
