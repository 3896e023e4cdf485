import { randomBytes, sign as rawSign } from 'node:crypto';
import t from 'tap';
import {
  ENVELOPE_TYP,
  EnvelopeError,
  EnvelopeVerifier,
  ReplayWindow,
  createEnvelopeSigner,
  type EnvelopeSigner,
  type VerifyContext,
} from '../../src/bus/envelope/index.js';
import { SpiffeId, type BundleSet } from '../../src/spiffe/index.js';
import { createCa, createIntermediate, createLeaf, type Issued } from '../fixtures/certs.js';
import { b64url, bundlesOf, claimsFor, craft, flipChar, headerFor, outcome, svidOf, x5cOf } from '../helpers/envelope.js';

const ORG = 'example.org';
const PARTNER = 'partner.example';
const A = 'spiffe://example.org/agent/a';
const B = 'spiffe://example.org/agent/b';
const P = 'spiffe://partner.example/agent/p';
const NOW = Date.now();

let ca: Issued;
let leafA: Issued; // P-256
let leaf384: Issued;
let leafRsa: Issued;
let leafB: Issued;
let inter: Issued;
let leafViaInter: Issued;
let bundles: BundleSet;
let signerA: EnvelopeSigner;
let ctx: VerifyContext;

t.before(async () => {
  ca = await createCa({ trustDomain: ORG });
  leafA = await createLeaf(ca, A);
  leaf384 = await createLeaf(ca, A, { keyAlgorithm: 'P-384' });
  leafRsa = await createLeaf(ca, A, { keyAlgorithm: 'RSA-2048' });
  leafB = await createLeaf(ca, B);
  inter = await createIntermediate(ca);
  leafViaInter = await createLeaf(inter, A);
  bundles = bundlesOf([ORG, ca]);
  signerA = createEnvelopeSigner(svidOf(leafA));
  ctx = { bundles, nowMs: NOW };
});

const verifier = (): EnvelopeVerifier => new EnvelopeVerifier();

t.test('public constants', async (t) => {
  t.equal(ENVELOPE_TYP, 'sigil-msg+jws');
});

t.test('round trip for every algorithm', async (t) => {
  const cases: Array<[string, () => Issued, 'PS256' | 'RS256' | undefined]> = [
    ['ES256', () => leafA, undefined],
    ['ES384', () => leaf384, undefined],
    ['PS256', () => leafRsa, undefined],
    ['RS256', () => leafRsa, 'RS256'],
  ];
  for (const [alg, leaf, rsaAlgorithm] of cases) {
    const signer = createEnvelopeSigner(svidOf(leaf()), rsaAlgorithm ? { rsaAlgorithm } : {});
    t.equal(signer.alg, alg);
    t.equal(signer.id.toString(), A);
    const data = { order: 42, items: ['a', 'b'], note: 'ünïcödé ✓', nested: { ok: true, n: null } };
    const s = signer.sign({ subject: 'orders.created', data }, NOW);
    const [h] = s.jws.split('.');
    const header = JSON.parse(Buffer.from(h!, 'base64url').toString()) as Record<string, unknown>;
    t.same(header, { alg, typ: ENVELOPE_TYP, x5c: [leaf().der.toString('base64')] }, `${alg} header`);
    const v = verifier().verify(s.jws, ctx);
    t.equal(v.signer.id.toString(), A, `${alg} signer`);
    t.equal(v.signer.serial, leaf().cert.serialNumber);
    t.equal(v.signer.fingerprint256, leaf().cert.fingerprint256);
    t.equal(v.subject, 'orders.created');
    t.same(v.data, data, `${alg} data`);
    t.equal(v.bytes, undefined);
    t.equal(v.jti, s.jti);
    t.equal(v.iat, Math.floor(NOW / 1000));
    t.equal(v.exp, v.iat + 60, 'default ttl 60 s');
  }
});

t.test('claims as the signer writes them', async (t) => {
  const s = signerA.sign({ subject: 'x.y', data: 'hi', audience: [B, 'spiffe://example.org/ops/*'], delegation: 'dlg.token.here', ttlSeconds: 30 }, NOW);
  const claims = JSON.parse(Buffer.from(s.jws.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;
  t.same(Object.keys(claims), ['iss', 'sub', 'aud', 'iat', 'exp', 'jti', 'dlg', 'data']);
  t.same(claims, { iss: A, sub: 'x.y', aud: [B, 'spiffe://example.org/ops/*'], iat: s.iat, exp: s.iat + 30, jti: s.jti, dlg: 'dlg.token.here', data: 'hi' });
  t.equal(Buffer.from(s.jti, 'base64url').length, 18, 'jti has 144 random bits (≥ 128)');
  t.match(s.jti, /^[A-Za-z0-9_-]{24}$/);
  const jtis = new Set(Array.from({ length: 600 }, () => signerA.sign({ subject: 's' }, NOW).jti));
  t.equal(jtis.size, 600, 'jti values are distinct (across pool refills)');
  const v = verifier().verify(s.jws, { ...ctx, self: SpiffeId.parse(B) });
  t.same(v.audience, [B, 'spiffe://example.org/ops/*']);
  t.equal(v.delegation, 'dlg.token.here');
  t.equal(v.data, 'hi');
});

t.test('data choices: JSON value, bytes, nothing', async (t) => {
  const bytes = randomBytes(300);
  const vb = verifier().verify(signerA.sign({ subject: 's', bytes }, NOW).jws, ctx);
  t.ok(Buffer.isBuffer(vb.bytes));
  t.same(vb.bytes, bytes);
  t.notOk('data' in vb);
  const empty = verifier().verify(signerA.sign({ subject: 's', bytes: new Uint8Array(0) }, NOW).jws, ctx);
  t.equal(empty.bytes?.length, 0);
  const sub = new Uint8Array(bytes.buffer, bytes.byteOffset + 10, 20);
  t.same(verifier().verify(signerA.sign({ subject: 's', bytes: sub }, NOW).jws, ctx).bytes, bytes.subarray(10, 30), 'a view of a larger buffer');
  const vn = verifier().verify(signerA.sign({ subject: 's' }, NOW).jws, ctx);
  t.equal(vn.data, null, 'neither data nor bytes → data: null');
  for (const data of [0, false, 'x'.repeat(5000), 'quote " back \\ nl \n tab \t ctl \u0001 ' + 'y'.repeat(200), [1, [2]], { '': 1 }, '\u2028 ok ' + 'z'.repeat(200)]) {
    t.same(verifier().verify(signerA.sign({ subject: 's', data }, NOW).jws, ctx).data, data);
  }
  const lone = '\ud800' + 'a'.repeat(300);
  t.equal(verifier().verify(signerA.sign({ subject: 's', data: lone }, NOW).jws, ctx).data, lone, 'lone surrogate escaped like JSON.stringify');
  t.throws(() => signerA.sign({ subject: 's', data: 1, bytes }, NOW), { code: 'envelope_malformed', detail: 'data_ambiguous' });
  t.throws(() => signerA.sign({ subject: 's', data: () => 1 }, NOW), { code: 'envelope_malformed', detail: 'data_not_json' });
  t.throws(() => signerA.sign({ subject: 's', data: 1n }, NOW), { code: 'envelope_malformed', detail: 'data_not_json' });
  t.throws(() => signerA.sign({ subject: '' }, NOW), { code: 'envelope_malformed', detail: 'bad_sub' });
  t.throws(() => signerA.sign({ subject: 's', audience: [] }, NOW), { code: 'envelope_malformed', detail: 'bad_aud' });
  t.throws(() => signerA.sign({ subject: 's', audience: ['not an id'] }, NOW), { code: 'envelope_malformed', detail: 'bad_aud' });
  t.throws(() => signerA.sign({ subject: 's', ttlSeconds: 0 }, NOW), { code: 'envelope_malformed', detail: 'bad_ttl' });
  t.throws(() => signerA.sign({ subject: 's', ttlSeconds: 0.5 }, NOW), { code: 'envelope_malformed', detail: 'bad_ttl' });
  t.throws(() => signerA.sign({ subject: 's', ttlSeconds: NaN }, NOW), { code: 'envelope_malformed', detail: 'bad_ttl' });
  const frac = signerA.sign({ subject: 's', ttlSeconds: 1.5 }, NOW);
  t.equal(frac.exp - frac.iat, 1, 'fractional ttl truncated to whole seconds');
  t.throws(() => createEnvelopeSigner(svidOf(leafA), { defaultTtlSeconds: 0 }), RangeError);
  t.equal(createEnvelopeSigner(svidOf(leafA), { defaultTtlSeconds: 90.9 }).sign({ subject: 's' }, NOW).exp - Math.floor(NOW / 1000), 90);
});

t.test('signer refuses unusable SVIDs and keys', async (t) => {
  const other = await createLeaf(ca, A);
  t.throws(() => createEnvelopeSigner({ ...svidOf(leafA), privateKeyPem: other.keyPem }), { code: 'svid_unavailable', detail: 'key_mismatch' });
  t.throws(() => createEnvelopeSigner({ ...svidOf(leafA), id: SpiffeId.parse(B) }), { code: 'svid_unavailable', detail: 'id_mismatch' });
  t.throws(() => createEnvelopeSigner({ ...svidOf(leafA), certificates: [] }), { code: 'svid_unavailable', detail: 'no_certificate' });
  const caLeaf = await createLeaf(ca, A, { ca: true, keyUsage: ['keyCertSign', 'digitalSignature'] });
  t.throws(() => createEnvelopeSigner(svidOf(caLeaf)), { code: 'svid_unavailable', detail: 'svid_invalid' });
  t.throws(() => createEnvelopeSigner(svidOf(leafRsa), { rsaAlgorithm: 'ES256' as 'PS256' }), { code: 'alg_not_allowed' });
  t.throws(() => signerA.sign({ subject: 's' }, Date.parse(leafA.cert.validTo) + 1000), { code: 'svid_unavailable', detail: 'svid_expired' });
  t.throws(() => signerA.sign({ subject: 's' }, Date.parse(leafA.cert.validFrom) - 1000), { code: 'svid_unavailable', detail: 'svid_not_yet_valid' });
  try {
    createEnvelopeSigner({ ...svidOf(leafA), privateKeyPem: other.keyPem });
  } catch (e) {
    t.ok(e instanceof EnvelopeError, 'EnvelopeError');
  }
});

// ---- strict parsing -------------------------------------------------------------------------

t.test('algorithm rules', async (t) => {
  const c = () => claimsFor(A, NOW);
  const ok = craft({ header: headerFor('ES256', leafA), claims: c(), alg: 'ES256', key: leafA.privateKey });
  t.equal(outcome(verifier(), ok, ctx), 'ok', 'control: hand-built ES256 verifies');

  t.equal(outcome(verifier(), craft({ header: headerFor('none', leafA), claims: c(), alg: 'none' }), ctx), 'alg_not_allowed/alg_unsupported', 'alg none');
  const spki = leafA.cert.publicKey.export({ type: 'spki', format: 'pem' });
  const hs = craft({ header: headerFor('HS256', leafA), claims: c(), alg: 'HS256', key: Buffer.from(spki) });
  t.equal(outcome(verifier(), hs, ctx), 'alg_not_allowed/alg_unsupported', 'HS256 keyed with the leaf public key');
  const hsDer = craft({ header: headerFor('HS256', leafA), claims: c(), alg: 'HS256', key: leafA.cert.publicKey.export({ type: 'spki', format: 'der' }) });
  t.equal(outcome(verifier(), hsDer, ctx), 'alg_not_allowed/alg_unsupported', 'HS256 keyed with the leaf public key DER');
  t.equal(outcome(verifier(), craft({ header: headerFor('ES512', leafA), claims: c(), alg: 'ES512', key: leafA.privateKey }), ctx), 'alg_not_allowed/alg_unsupported', 'ES512');
  t.equal(outcome(verifier(), craft({ header: headerFor('es256', leafA), claims: c(), alg: 'ES256', key: leafA.privateKey }), ctx), 'alg_not_allowed/alg_unsupported', 'alg is case-sensitive');
  t.equal(outcome(verifier(), craft({ header: { typ: ENVELOPE_TYP, x5c: x5cOf(leafA) }, claims: c(), alg: 'ES256', key: leafA.privateKey }), ctx), 'envelope_malformed/alg_missing');
  t.equal(outcome(verifier(), craft({ header: headerFor(256 as unknown as string, leafA), claims: c(), alg: 'ES256', key: leafA.privateKey }), ctx), 'alg_not_allowed/alg_unsupported');

  // alg / key mismatches, each with the matching alg as control.
  const pairs: Array<[string, Issued, 'ES256' | 'ES384' | 'RS256' | 'PS256', 'ES256' | 'ES384' | 'RS256' | 'PS256']> = [
    ['ES256 on a P-384 key', leaf384, 'ES256', 'ES384'],
    ['ES384 on a P-256 key', leafA, 'ES384', 'ES256'],
    ['ES256 on an RSA key', leafRsa, 'ES256', 'PS256'],
    ['RS256 on an EC key', leafA, 'RS256', 'ES256'],
    ['PS256 on an EC key', leaf384, 'PS256', 'ES384'],
  ];
  for (const [name, leaf, bad, good] of pairs) {
    const control = craft({ header: headerFor(good, leaf), claims: c(), alg: good, key: leaf.privateKey });
    t.equal(outcome(verifier(), control, ctx), 'ok', `control for ${name}: ${good}`);
    // Sign "bad" with the key's own primitive where possible (ECDSA with the other hash).
    const signWith = bad.startsWith('ES') && leaf.keyAlgorithm !== 'RSA-2048' ? bad : good;
    const jws = craft({ header: headerFor(bad, leaf), claims: c(), alg: signWith, key: leaf.privateKey });
    t.equal(outcome(verifier(), jws, ctx), 'alg_not_allowed/alg_key_mismatch', name);
  }

  // ECDSA signatures have an exact length.
  const [h, p, s] = ok.split('.');
  const sig = Buffer.from(s!, 'base64url');
  t.equal(outcome(verifier(), `${h}.${p}.${Buffer.concat([sig, Buffer.from([0])]).toString('base64url')}`, ctx), 'signature_invalid/signature_length', '65-byte ES256 signature');
  t.equal(outcome(verifier(), `${h}.${p}.${sig.subarray(0, 63).toString('base64url')}`, ctx), 'signature_invalid/signature_length', '63-byte ES256 signature');
  // An ASN.1 DER ECDSA signature (crypto.sign's default encoding): 70-72 bytes, not 64.
  const der = rawSign('sha256', Buffer.from(`${h}.${p}`), leafA.privateKey).toString('base64url');
  t.equal(outcome(verifier(), `${h}.${p}.${der}`, ctx), 'signature_invalid/signature_length', 'DER-encoded ECDSA signature');
});

t.test('header rules', async (t) => {
  const c = () => claimsFor(A, NOW);
  const base = headerFor('ES256', leafA);
  const sign = (header: Record<string, unknown> | string) => craft({ header, claims: c(), alg: 'ES256', key: leafA.privateKey });
  t.equal(outcome(verifier(), sign(base), ctx), 'ok', 'control');
  for (const member of ['crit', 'jwk', 'jku', 'x5u', 'kid', 'x5t', 'x5t#S256', 'b64', 'cty', 'zip', 'foo']) {
    const value = member === 'crit' ? ['exp'] : member === 'b64' ? false : member === 'jwk' ? leafA.cert.publicKey.export({ format: 'jwk' }) : 'x';
    t.equal(outcome(verifier(), sign({ ...base, [member]: value }), ctx), 'envelope_malformed/header_member_not_allowed', `header member ${member}`);
  }
  const text = JSON.stringify(base);
  t.equal(outcome(verifier(), sign(text), ctx), 'ok', 'control: same header as text');
  t.equal(outcome(verifier(), sign(text.replace('{', '{"alg":"ES256",')), ctx), 'envelope_malformed/header_duplicate_member', 'duplicate alg');
  t.equal(outcome(verifier(), sign(text.replace('{', '{"alg":"none",')), ctx), 'envelope_malformed/header_duplicate_member', 'duplicate alg, first one none');
  t.equal(outcome(verifier(), sign(text.replace('{', '{"\\u0074yp":"x",')), ctx), 'envelope_malformed/header_duplicate_member', 'duplicate typ spelled with an escape');
  t.equal(outcome(verifier(), sign(text.replace('{', '{ "alg" : "ES256" ,\n')), ctx), 'envelope_malformed/header_duplicate_member', 'duplicate with whitespace');
  t.equal(outcome(verifier(), sign(text.replace('{', '{ "typ" : "' + ENVELOPE_TYP + '" ,\n')), ctx), 'envelope_malformed/header_duplicate_member');
  t.equal(outcome(verifier(), sign(' ' + text.replace(/,/g, ' ,\n ') + ' '), ctx), 'ok', 'control: whitespace alone is fine');

  t.equal(outcome(verifier(), sign({ ...base, typ: 'JWT' }), ctx), 'envelope_malformed/typ_mismatch', 'wrong typ');
  t.equal(outcome(verifier(), sign({ ...base, typ: 'application/sigil-msg+jws' }), ctx), 'envelope_malformed/typ_mismatch', 'typ compared exactly');
  t.equal(outcome(verifier(), sign({ alg: 'ES256', x5c: x5cOf(leafA) }), ctx), 'envelope_malformed/typ_missing', 'missing typ');
  t.equal(outcome(verifier(), sign({ alg: 'ES256', typ: ENVELOPE_TYP }), ctx), 'envelope_malformed/x5c_missing');
  t.equal(outcome(verifier(), sign({ ...base, x5c: [] }), ctx), 'envelope_malformed/x5c_invalid');
  t.equal(outcome(verifier(), sign({ ...base, x5c: x5cOf(leafA)[0] }), ctx), 'envelope_malformed/x5c_invalid', 'x5c not an array');
  t.equal(outcome(verifier(), sign({ ...base, x5c: Array(10).fill(x5cOf(leafA)[0]) }), ctx), 'envelope_malformed/x5c_invalid', 'x5c too long');
  t.equal(outcome(verifier(), sign({ ...base, x5c: [leafA.der.toString('base64url')] }), ctx), 'envelope_malformed/x5c_base64', 'x5c in base64url');
  t.equal(outcome(verifier(), sign({ ...base, x5c: [1] }), ctx), 'envelope_malformed/x5c_base64');
  t.equal(outcome(verifier(), sign({ ...base, x5c: [Buffer.from('not a cert').toString('base64')] }), ctx), 'envelope_malformed/x5c_der');
  t.equal(outcome(verifier(), sign('["ES256"]'), ctx), 'envelope_malformed/header_not_object');
  t.equal(outcome(verifier(), sign('{"alg":"ES256",'), ctx), 'envelope_malformed/header_json');
});

t.test('structure, base64 and size', async (t) => {
  const good = signerA.sign({ subject: 's', data: 1 }, NOW).jws;
  t.equal(outcome(verifier(), good, ctx), 'ok', 'control');
  const [h, p, s] = good.split('.') as [string, string, string];
  t.equal(outcome(verifier(), `${h}.${p}`, ctx), 'envelope_malformed/segment_count');
  t.equal(outcome(verifier(), `${h}.${p}.${s}.${s}`, ctx), 'envelope_malformed/segment_count');
  t.equal(outcome(verifier(), `${h}${p}${s}`, ctx), 'envelope_malformed/segment_count');
  t.equal(outcome(verifier(), '', ctx), 'envelope_malformed/segment_count');
  t.equal(outcome(verifier(), 42 as unknown as string, ctx), 'envelope_malformed/not_a_string');
  t.equal(outcome(verifier(), `${h}=.${p}.${s}`, ctx), 'envelope_malformed/header_base64', 'padding in header');
  t.equal(outcome(verifier(), `${h.replace(/.$/, '+')}.${p}.${s}`, ctx), 'envelope_malformed/header_base64', 'base64 alphabet in header');
  t.equal(outcome(verifier(), `.${p}.${s}`, ctx), 'envelope_malformed/header_base64', 'empty header');
  t.equal(outcome(verifier(), `${h}.${p}!.${s}`, ctx), 'envelope_malformed/payload_base64');
  t.equal(outcome(verifier(), `${h}.${p}=.${s}`, ctx), 'envelope_malformed/payload_base64');
  t.equal(outcome(verifier(), `${h}.${p}.${s}=`, ctx), 'envelope_malformed/signature_base64');
  t.equal(outcome(verifier(), `${h}.${p}.`, ctx), 'envelope_malformed/signature_base64', 'empty signature');
  t.equal(outcome(verifier(), `${h}.${p}.${s.slice(0, 10)}\u0141${s.slice(11)}`, ctx), 'envelope_malformed/signature_base64', 'non-ASCII in signature');
  t.equal(outcome(verifier(), `${h}.${p.slice(0, 10)}\u0141${p.slice(11)}.${s}`, ctx), 'envelope_malformed/payload_base64', 'non-ASCII character whose latin1 byte is a base64 character');
  // Non-canonical trailing bits: same bytes, different text.
  const last = p[p.length - 1]!;
  if (p.length % 4 !== 0) {
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const alt = alphabet[alphabet.indexOf(last) ^ 1]!;
    t.equal(outcome(verifier(), `${h}.${p.slice(0, -1)}${alt}.${s}`, ctx), 'envelope_malformed/payload_base64', 'non-zero trailing bits');
  }

  // Size limit, checked before anything else.
  const small = new EnvelopeVerifier({ maxBytes: good.length });
  t.equal(outcome(small, good, ctx), 'ok', 'control: exactly maxBytes');
  t.equal(outcome(new EnvelopeVerifier({ maxBytes: good.length - 1 }), good, ctx), 'envelope_too_large/too_large');
  t.equal(outcome(new EnvelopeVerifier({ maxBytes: 100 }), 'x'.repeat(101), ctx), 'envelope_too_large/too_large', 'size before structure');
  const big = signerA.sign({ subject: 's', data: 'x'.repeat(1024 * 1024) }, NOW).jws;
  t.equal(outcome(verifier(), big, ctx), 'envelope_too_large/too_large', 'default limit 1 MiB');
  // Beyond the signer's and verifier's kept scratch buffers (4 MiB): one-off buffers, same result.
  const huge = new EnvelopeVerifier({ maxBytes: 16 * 1024 * 1024 });
  for (const n of [2 * 1024 * 1024, 5 * 1024 * 1024, 100]) {
    const data = 'h'.repeat(n);
    t.equal(huge.verify(signerA.sign({ subject: 's', data }, NOW).jws, ctx).data, data, `${n} characters`);
  }
});

t.test('payload rules (signed by the real key, so only the claims are wrong)', async (t) => {
  const sign = (claims: Record<string, unknown> | string) => craft({ header: headerFor('ES256', leafA), claims, alg: 'ES256', key: leafA.privateKey });
  const c = (over: Record<string, unknown> = {}) => claimsFor(A, NOW, over);
  t.equal(outcome(verifier(), sign(c()), ctx), 'ok', 'control');
  t.equal(outcome(verifier(), sign('{"iss":'), ctx), 'envelope_malformed/payload_json');
  t.equal(outcome(verifier(), sign(''), ctx), 'envelope_malformed/payload_json');
  t.equal(outcome(verifier(), sign('[1]'), ctx), 'envelope_malformed/claims_not_object');
  t.equal(outcome(verifier(), sign('null'), ctx), 'envelope_malformed/claims_not_object');
  const bad = craft({ header: headerFor('ES256', leafA), claims: 'x', alg: 'ES256', key: leafA.privateKey });
  const [bh, , bs] = bad.split('.');
  const invalidUtf8 = Buffer.concat([Buffer.from('{"iss":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
  const input = `${bh}.${invalidUtf8.toString('base64url')}`;
  const sig = rawSign('sha256', Buffer.from(input), { key: leafA.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  t.equal(outcome(verifier(), `${input}.${sig}`, ctx), 'envelope_malformed/payload_utf8');
  t.not(bs, sig);

  t.equal(outcome(verifier(), sign(c({ extra: 1 })), ctx), 'envelope_malformed/unknown_claim', 'unknown claim');
  t.equal(outcome(verifier(), sign(c({ nbf: 1 })), ctx), 'envelope_malformed/unknown_claim', 'nbf is not a Sigil claim');
  t.equal(outcome(verifier(), sign(c({ __proto__: 1 } as Record<string, unknown>)), ctx), 'ok', 'control: a __proto__ key in a JS literal is not a claim');
  t.equal(outcome(verifier(), sign(JSON.stringify(c()).replace('{', '{"__proto__":{"x":1},')), ctx), 'envelope_malformed/unknown_claim', '__proto__ in the JSON text');

  const text = JSON.stringify(c());
  t.equal(outcome(verifier(), sign(text.replace('{', '{"sub":"other.topic",')), ctx), 'envelope_malformed/claims_duplicate_member', 'duplicate sub');
  t.equal(outcome(verifier(), sign(text.replace(/}$/, ',"s\\u0075b":"other.topic"}')), ctx), 'envelope_malformed/claims_duplicate_member', 'duplicate sub after data, escaped');
  t.equal(outcome(verifier(), sign(text.replace(/"data":\{"n":1\}/, '"data":{"sub":"a","sub":"b","x":["sub","}"]}')), ctx), 'ok', 'control: nested duplicates are data, not claims');
  t.equal(outcome(verifier(), sign(text.replace(/"data":\{"n":1\}/, '"data":{"q":"\\"sub\\":1,"}')), ctx), 'ok', 'control: escaped quotes inside data');
  t.equal(
    outcome(verifier(), sign(text.replace(/"data":\{"n":1\}/, '"data":[{"a":"\\\\"},1e3,true,null] , "data" : 2')), ctx),
    'envelope_malformed/claims_duplicate_member',
    'duplicate after a nested value with escapes',
  );

  const types: Array<[string, Record<string, unknown>]> = [
    ['bad_iss', { iss: 7 }],
    ['bad_iss', { iss: undefined }],
    ['bad_sub', { sub: '' }],
    ['bad_sub', { sub: ['a'] }],
    ['bad_sub', { sub: undefined }],
    ['bad_iat', { iat: '1' }],
    ['bad_iat', { iat: Math.floor(NOW / 1000) + 0.5 }],
    ['bad_iat', { iat: -1 }],
    ['bad_iat', { iat: undefined }],
    ['bad_exp', { exp: undefined }],
    ['bad_exp', { exp: 1e300 }],
    ['bad_jti', { jti: undefined }],
    ['bad_jti', { jti: randomBytes(15).toString('base64url') }],
    ['bad_jti', { jti: randomBytes(65).toString('base64url') }],
    ['bad_jti', { jti: randomBytes(16).toString('base64') + '=' }],
    ['bad_jti', { jti: 12345 }],
    ['bad_aud', { aud: [] }],
    ['bad_aud', { aud: B }],
    ['bad_aud', { aud: ['spiffe://example.org/a*'] }],
    ['bad_aud', { aud: [1] }],
    ['bad_dlg', { dlg: '' }],
    ['bad_dlg', { dlg: {} }],
    ['data_missing', { data: undefined }],
    ['data_ambiguous', { data_b64: 'AA' }],
    ['bad_data_b64', { data: undefined, data_b64: 'AA==' }],
    ['bad_data_b64', { data: undefined, data_b64: 5 }],
    ['exp_not_after_iat', { exp: Math.floor(NOW / 1000) }],
  ];
  for (const [detail, over] of types) {
    t.equal(outcome(verifier(), sign(c(over)), ctx), `envelope_malformed/${detail}`, `${detail} ${JSON.stringify(over)}`);
  }
  t.equal(outcome(verifier(), sign(c({ jti: randomBytes(64).toString('base64url') })), ctx), 'ok', 'control: 64-byte jti');
  t.equal(outcome(verifier(), sign(c({ data: undefined, data_b64: 'AQID' })), ctx), 'ok', 'control: data_b64');
  t.equal(outcome(verifier(), sign(c({ data: null })), ctx), 'ok', 'control: data null');
});

t.test('tampering', async (t) => {
  const a = signerA.sign({ subject: 'orders.created', data: { amount: 10 } }, NOW).jws;
  const b = createEnvelopeSigner(svidOf(leafB)).sign({ subject: 'orders.created', data: { amount: 10 } }, NOW).jws;
  t.equal(outcome(verifier(), a, ctx), 'ok', 'control A');
  t.equal(outcome(verifier(), b, ctx), 'ok', 'control B');
  const [ha, pa, sa] = a.split('.') as [string, string, string];
  const [hb, pb, sb] = b.split('.') as [string, string, string];
  t.equal(outcome(verifier(), flipChar(a, 1, 20), ctx), 'signature_invalid/bad_signature', 'payload tampered');
  t.equal(outcome(verifier(), flipChar(a, 2, 20), ctx), 'signature_invalid/bad_signature', 'signature tampered');
  t.equal(outcome(verifier(), `${hb}.${pa}.${sa}`, ctx), 'signature_invalid/bad_signature', 'header swapped from another envelope');
  t.equal(outcome(verifier(), `${ha}.${pb}.${sb}`, ctx), 'signature_invalid/bad_signature', "B's payload and signature under A's header");
  // The same claims re-signed by B but claiming to be A: B's chain is trusted, iss is wrong.
  const claimsA = JSON.parse(Buffer.from(pa, 'base64url').toString()) as Record<string, unknown>;
  const forged = craft({ header: headerFor('ES256', leafB), claims: claimsA, alg: 'ES256', key: leafB.privateKey });
  t.equal(outcome(verifier(), forged, ctx), 'issuer_mismatch/iss_not_leaf_id', 'iss is not the leaf ID');
  const own = craft({ header: headerFor('ES256', leafB), claims: { ...claimsA, iss: B }, alg: 'ES256', key: leafB.privateKey });
  t.equal(outcome(verifier(), own, ctx), 'ok', 'control: B as itself');
  t.equal(outcome(verifier(), craft({ header: headerFor('ES256', leafB), claims: { ...claimsA, iss: B + '/' }, alg: 'ES256', key: leafB.privateKey }), ctx), 'issuer_mismatch/iss_not_leaf_id', 'iss compared exactly');
  // Header with x5c of A but signed by B's key.
  t.equal(outcome(verifier(), craft({ header: headerFor('ES256', leafA), claims: claimsA, alg: 'ES256', key: leafB.privateKey }), ctx), 'signature_invalid/bad_signature', 'x5c does not belong to the signing key');
});

t.test('signer trust (same SPIFFE rules as TLS peers)', async (t) => {
  const c = (iss: string) => claimsFor(iss, NOW);
  const sign = (leaf: Issued, iss: string, ...chain: Issued[]) => craft({ header: headerFor('ES256', leaf, ...chain), claims: c(iss), alg: 'ES256', key: leaf.privateKey });

  t.equal(outcome(verifier(), sign(leafA, A), ctx), 'ok', 'control');
  const impostorCa = await createCa({ trustDomain: ORG });
  const impostor = await createLeaf(impostorCa, A);
  t.equal(outcome(verifier(), sign(impostor, A), ctx), 'signer_untrusted/chain_invalid', 'untrusted CA with the same trust-domain name');
  t.equal(outcome(verifier(), sign(impostor, A, impostorCa), ctx), 'signer_untrusted/chain_invalid', '… even with its root in x5c');

  const partnerCa = await createCa({ trustDomain: PARTNER });
  const partner = await createLeaf(partnerCa, P);
  t.equal(outcome(verifier(), sign(partner, P), ctx), 'signer_untrusted/trust_domain_unknown', 'other trust domain not in the bundle set');
  t.equal(outcome(verifier(), sign(partner, P), { ...ctx, bundles: bundlesOf([ORG, ca], [PARTNER, partnerCa]) }), 'ok', 'control: federated');
  t.equal(outcome(verifier(), sign(partner, P), { ...ctx, bundles: bundlesOf([ORG, ca], [PARTNER, ca]) }), 'signer_untrusted/chain_invalid', 'bundles are per trust domain, no pooling');

  const caLeaf = await createLeaf(ca, A, { ca: true, keyUsage: ['keyCertSign', 'digitalSignature'] });
  t.equal(outcome(verifier(), sign(caLeaf, A), ctx), 'signer_untrusted/svid_invalid', 'CA certificate as leaf');
  const noUri = await createLeaf(ca, A, { uris: [], dnsNames: ['a.example.org'] });
  t.equal(outcome(verifier(), sign(noUri, A), ctx), 'signer_untrusted/svid_invalid', 'no URI SAN');

  t.equal(outcome(verifier(), sign(leafViaInter, A), ctx), 'signer_untrusted/chain_invalid', 'intermediate missing from x5c');
  t.equal(outcome(verifier(), sign(leafViaInter, A, inter), ctx), 'ok', 'intermediate in x5c');
  const signerViaInter = createEnvelopeSigner(svidOf(leafViaInter, inter));
  const viaInter = signerViaInter.sign({ subject: 's' }, NOW).jws;
  const header = JSON.parse(Buffer.from(viaInter.split('.')[0]!, 'base64url').toString()) as { x5c: string[] };
  t.same(header.x5c, x5cOf(leafViaInter, inter), 'signer sends leaf then intermediates');
  t.equal(verifier().verify(viaInter, ctx).signer.validTo, Math.min(Date.parse(leafViaInter.cert.validTo), Date.parse(inter.cert.validTo), Date.parse(ca.cert.validTo)));
  const twoLevels = await createIntermediate(inter);
  const deep = await createLeaf(twoLevels, A);
  t.equal(outcome(verifier(), sign(deep, A, inter, twoLevels), ctx), 'ok', 'two intermediates, any order');

  const expiredLeaf = await createLeaf(ca, A, { notBefore: new Date(NOW - 7200_000), notAfter: new Date(NOW - 3600_000) });
  const jwsExpired = craft({ header: headerFor('ES256', expiredLeaf), claims: c(A), alg: 'ES256', key: expiredLeaf.privateKey });
  t.equal(outcome(verifier(), jwsExpired, ctx), 'signer_untrusted/certificate_expired', 'expired signer certificate');
  const futureLeaf = await createLeaf(ca, A, { notBefore: new Date(NOW + 3600_000) });
  t.equal(outcome(verifier(), craft({ header: headerFor('ES256', futureLeaf), claims: c(A), alg: 'ES256', key: futureLeaf.privateKey }), ctx), 'signer_untrusted/certificate_not_yet_valid');

  const p384ca = await createCa({ trustDomain: ORG, keyAlgorithm: 'P-384' });
  const underP384 = await createLeaf(p384ca, A);
  t.equal(outcome(verifier(), sign(underP384, A), { ...ctx, bundles: bundlesOf([ORG, p384ca]) }), 'ok', 'P-256 leaf under a P-384 root');
});

t.test('time window', async (t) => {
  const s = signerA.sign({ subject: 's', ttlSeconds: 60 }, NOW);
  const at = (ms: number) => outcome(verifier(), s.jws, { ...ctx, nowMs: ms });
  t.equal(at(s.iat * 1000), 'ok', 'at iat');
  t.equal(at(s.exp * 1000 + 5000), 'ok', 'at exp + leeway');
  t.equal(at(s.exp * 1000 + 5001), 'envelope_expired/expired', 'after exp + leeway');
  t.equal(at(s.exp * 1000 + 3600_000), 'envelope_expired/expired', 'long expired');
  t.equal(at(s.iat * 1000 - 5000), 'ok', 'iat within leeway in the future');
  t.equal(at(s.iat * 1000 - 5001), 'envelope_expired/not_yet_valid', 'not yet valid');
  t.equal(outcome(new EnvelopeVerifier({ leewaySeconds: 0 }), s.jws, { ...ctx, nowMs: s.exp * 1000 + 1 }), 'envelope_expired/expired', 'leeway 0');
  t.equal(outcome(new EnvelopeVerifier({ leewaySeconds: 30 }), s.jws, { ...ctx, nowMs: s.exp * 1000 + 29_000 }), 'ok', 'leeway 30');
  t.equal(outcome(new EnvelopeVerifier({ leewaySeconds: 0.5 }), s.jws, { ...ctx, nowMs: s.exp * 1000 + 500 }), 'ok', 'fractional leeway');
  t.equal(outcome(new EnvelopeVerifier({ leewaySeconds: 0.5 }), s.jws, { ...ctx, nowMs: s.exp * 1000 + 501 }), 'envelope_expired/expired');
  t.equal(outcome(new EnvelopeVerifier({ maxTtlSeconds: 59.5 }), s.jws, ctx), 'envelope_expired/ttl_too_long', 'fractional max ttl');
  for (const bad of [{ leewaySeconds: -1 }, { maxTtlSeconds: 0 }, { maxTtlSeconds: NaN }, { maxBytes: 1.5 }, { cacheLimit: 0 }]) {
    t.throws(() => new EnvelopeVerifier(bad), RangeError, JSON.stringify(bad));
  }

  const long = signerA.sign({ subject: 's', ttlSeconds: 301 }, NOW);
  t.equal(outcome(verifier(), long.jws, ctx), 'envelope_expired/ttl_too_long', 'exp - iat over the default max 300');
  t.equal(outcome(verifier(), signerA.sign({ subject: 's', ttlSeconds: 300 }, NOW).jws, ctx), 'ok', 'control: exactly 300');
  t.equal(outcome(new EnvelopeVerifier({ maxTtlSeconds: 600 }), long.jws, ctx), 'ok', 'configurable max ttl');
  t.equal(outcome(new EnvelopeVerifier({ maxTtlSeconds: 30 }), s.jws, ctx), 'envelope_expired/ttl_too_long');
  t.equal(outcome(verifier(), signerA.sign({ subject: 's' }, NOW - 120_000).jws, ctx), 'envelope_expired/expired', 'signed 2 min ago with ttl 60');
  t.equal(outcome(verifier(), signerA.sign({ subject: 's' }, NOW + 60_000).jws, ctx), 'envelope_expired/not_yet_valid', 'signed by a clock 1 min ahead');
});

t.test('audience', async (t) => {
  const self = SpiffeId.parse(B);
  const to = (audience: string[]) => signerA.sign({ subject: 's', audience }, NOW).jws;
  t.equal(outcome(verifier(), to([B]), { ...ctx, self }), 'ok', 'exact ID');
  t.equal(outcome(verifier(), to(['spiffe://example.org/agent/*']), { ...ctx, self }), 'ok', 'pattern');
  t.equal(outcome(verifier(), to(['spiffe://example.org/**']), { ...ctx, self }), 'ok', 'suffix pattern');
  t.equal(outcome(verifier(), to(['spiffe://example.org/x', B]), { ...ctx, self }), 'ok', 'any entry');
  t.equal(outcome(verifier(), to([A]), { ...ctx, self }), 'audience_mismatch/not_addressed', 'other agent');
  t.equal(outcome(verifier(), to(['spiffe://example.org/agent/b/*']), { ...ctx, self }), 'audience_mismatch/not_addressed', 'pattern needing one more segment');
  t.equal(outcome(verifier(), to(['spiffe://partner.example/agent/b']), { ...ctx, self }), 'audience_mismatch/not_addressed', 'trust domain is literal');
  t.equal(outcome(verifier(), to([B]), ctx), 'audience_mismatch/no_self', 'aud present, verifier gives no own ID');
  t.equal(outcome(verifier(), signerA.sign({ subject: 's' }, NOW).jws, { ...ctx, self }), 'ok', 'no aud: any verifier');
});

t.test('revocation hook', async (t) => {
  const seen: string[] = [];
  const jws = signerA.sign({ subject: 's' }, NOW).jws;
  const v = verifier();
  t.equal(outcome(v, jws, { ...ctx, isRevoked: (s) => (seen.push(s.serial), false) }), 'ok');
  t.same(seen, [leafA.cert.serialNumber]);
  t.equal(outcome(v, jws, { ...ctx, isRevoked: (s) => s.fingerprint256 === leafA.cert.fingerprint256 }), 'svid_revoked/revoked');
  t.equal(outcome(v, jws, { ...ctx, isRevoked: (s) => s.id.toString() === A }), 'svid_revoked/revoked');
  t.equal(
    outcome(v, jws, {
      ...ctx,
      isRevoked: () => {
        throw new Error('revocation store down');
      },
    }),
    'svid_revoked/revocation_check_failed',
    'a failing hook fails closed',
  );
  t.equal(outcome(v, flipChar(jws, 2, 10), { ...ctx, isRevoked: () => true }), 'signature_invalid/bad_signature', 'signature is checked before revocation');

  // A hook that verifies another envelope with the same verifier (re-entrancy) must not disturb
  // the outer verification, which reads reused buffers.
  const outer = signerA.sign({ subject: 'outer', data: 'o'.repeat(3000) }, NOW).jws;
  const inner = signerA.sign({ subject: 'inner', data: 'i'.repeat(5000) }, NOW).jws;
  let innerData: unknown;
  const r = v.verify(outer, { ...ctx, isRevoked: () => ((innerData = v.verify(inner, ctx).data), false) });
  t.equal(r.subject, 'outer');
  t.equal(r.data, 'o'.repeat(3000));
  t.equal(innerData, 'i'.repeat(5000));
});

t.test('replay window', async (t) => {
  const replay = new ReplayWindow();
  const v = verifier();
  const one = signerA.sign({ subject: 's' }, NOW);
  const two = signerA.sign({ subject: 's' }, NOW);
  t.equal(outcome(v, one.jws, { ...ctx, replay }), 'ok', 'first delivery');
  t.equal(outcome(v, one.jws, { ...ctx, replay }), 'replay/seen', 'second delivery');
  t.equal(outcome(new EnvelopeVerifier(), one.jws, { ...ctx, replay }), 'replay/seen', 'the window, not the verifier, remembers');
  t.equal(outcome(v, two.jws, { ...ctx, replay }), 'ok', 'another jti');
  t.equal(replay.size, 2);

  // A forged message with a fresh jti must not be recorded.
  const forgedJti = randomBytes(16).toString('base64url');
  const claims = claimsFor(A, NOW, { jti: forgedJti });
  const forged = craft({ header: headerFor('ES256', leafA), claims, alg: 'ES256', key: leafB.privateKey });
  t.equal(outcome(v, forged, { ...ctx, replay }), 'signature_invalid/bad_signature');
  t.notOk(replay.has(A, forgedJti, NOW), 'forged jti not recorded');
  const real = craft({ header: headerFor('ES256', leafA), claims, alg: 'ES256', key: leafA.privateKey });
  t.equal(outcome(v, real, { ...ctx, replay }), 'ok', 'the genuine message with that jti is still accepted');
  t.ok(replay.has(A, forgedJti, NOW));
  // Nor one that fails a later check (audience, expiry).
  const late = signerA.sign({ subject: 's', audience: [A] }, NOW);
  t.equal(outcome(v, late.jws, { ...ctx, replay, self: SpiffeId.parse(B) }), 'audience_mismatch/not_addressed');
  t.notOk(replay.has(A, late.jti, NOW), 'refused for audience: not recorded');
  const old = signerA.sign({ subject: 's' }, NOW - 240_000);
  t.equal(outcome(v, old.jws, { ...ctx, replay }), 'envelope_expired/expired');
  t.notOk(replay.has(A, old.jti, NOW));

  // The same jti from another issuer is a different message.
  const jti = randomBytes(16).toString('base64url');
  t.equal(outcome(v, craft({ header: headerFor('ES256', leafA), claims: claimsFor(A, NOW, { jti }), alg: 'ES256', key: leafA.privateKey }), { ...ctx, replay }), 'ok');
  t.equal(outcome(v, craft({ header: headerFor('ES256', leafB), claims: claimsFor(B, NOW, { jti }), alg: 'ES256', key: leafB.privateKey }), { ...ctx, replay }), 'ok');

  // Entries are forgotten after exp + leeway, when the envelope is refused as expired anyway.
  t.equal(outcome(v, one.jws, { ...ctx, replay, nowMs: one.exp * 1000 + 5000 }), 'replay/seen', 'still remembered at exp + leeway');
  t.equal(outcome(v, one.jws, { ...ctx, replay, nowMs: one.exp * 1000 + 6001 }), 'envelope_expired/expired');
  replay.purge(one.exp * 1000 + 7000);
  t.notOk(replay.has(A, one.jti, one.exp * 1000 + 7000), 'purged');
});

t.test('replay window full: fail closed, never evict live entries', async (t) => {
  const replay = new ReplayWindow({ maxEntries: 3 });
  const v = verifier();
  const envs = Array.from({ length: 4 }, () => signerA.sign({ subject: 's', ttlSeconds: 10 }, NOW));
  for (const e of envs.slice(0, 3)) t.equal(outcome(v, e.jws, { ...ctx, replay }), 'ok');
  t.equal(outcome(v, envs[3]!.jws, { ...ctx, replay }), 'replay/window_full', 'full → reject');
  t.equal(outcome(v, envs[0]!.jws, { ...ctx, replay }), 'replay/seen', 'a replay is still a replay when full');
  t.equal(replay.size, 3, 'nothing evicted');
  const later = NOW + 16_000; // after exp (10 s) + leeway (5 s) + the 1 s bucket
  const fresh = signerA.sign({ subject: 's', ttlSeconds: 10 }, later);
  t.equal(outcome(v, fresh.jws, { ...ctx, replay, nowMs: later }), 'ok', 'room again once entries expired');
  t.equal(replay.size, 1);
});
