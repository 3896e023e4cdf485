// Revocation records: signed revoke/lift messages that must verify long after the signer's SVID
// expired (verified as of their own iat), and nothing a sidecar should not trust.
import t from 'tap';
import { EnvelopeVerifier, createEnvelopeSigner, type EnvelopeSigner, type SignerInfo } from '../../src/bus/envelope/index.js';
import { RECORD_TYP, createRecordSigner, createRecordVerifier } from '../../src/revocation/index.js';
import {
  RecordError,
  parseRecordData,
  parseRevocationEntry,
  signRecord,
  verifyRecord,
  type RevocationEntry,
  type RevocationRecord,
} from '../../src/revocation/index.js';
import { recordData, type VerifyRecordContext } from '../../src/revocation/record.js';
import type { BundleSet } from '../../src/spiffe/index.js';
import { createCa, createLeaf, type Issued } from '../fixtures/certs.js';
import { b64url, bundlesOf, claimsFor, craft, flipChar, headerFor, svidOf } from '../helpers/envelope.js';

const ORG = 'example.org';
const OPS = 'spiffe://example.org/ops/admin';
const PREFIX = 'sigil.revocations';
const NOW = Date.now();
const HOUR = 3_600_000;

let ca: Issued;
let leaf: Issued;
let bundles: BundleSet;
let signer: EnvelopeSigner;

t.before(async () => {
  ca = await createCa({ trustDomain: ORG });
  leaf = await createLeaf(ca, OPS);
  bundles = bundlesOf([ORG, ca]);
  signer = createRecordSigner(svidOf(leaf));
});

let seq = 0;
function entry(over: Record<string, unknown> = {}): RevocationEntry {
  return parseRevocationEntry(
    { kind: 'agent', value: 'spiffe://example.org/agent/rogue', reason: 'compromised', ...over },
    { id: `rec-entry-${String(++seq).padStart(5, '0')}`, revokedBy: 'admin:alice', now: NOW },
  );
}

function ctx(subject: string, over: Partial<VerifyRecordContext> = {}): VerifyRecordContext {
  return { verifier: createRecordVerifier({ maxBytes: 1 << 20, leewaySeconds: 5 }), bundles, prefix: PREFIX, subject, nowMs: NOW, leewayMs: 5_000, isRevoked: () => false, ...over };
}

/** 'ok', or "code/detail" of the RecordError (anything else is re-thrown: a test failure). */
function outcome(jws: string, c: VerifyRecordContext): string {
  try {
    verifyRecord(jws, c);
    return 'ok';
  } catch (err) {
    if (err instanceof RecordError) return `${err.code}/${err.detail}`;
    throw err;
  }
}

/** The subject signRecord chooses for a record (whatever its format). */
const subjectOf = (record: RevocationRecord): string => signRecord(signer, PREFIX, record, NOW).subject;

t.test('revoke: sign, then verify round trip', async (t) => {
  const e = entry({ expiresAt: NOW + HOUR });
  const record: RevocationRecord = { op: 'revoke', entry: e };
  const signed = signRecord(signer, PREFIX, record, NOW);
  t.equal(signed.subject, `${PREFIX}.${e.id}.revoke`, 'subject: <prefix>.<id>.<op>');
  const v = verifyRecord(signed.jws, ctx(signed.subject));
  t.same(v.record, record, 'the record comes back as signed');
  t.equal(v.signer.toString(), OPS);
  t.equal(v.iat, Math.floor(NOW / 1000));
  // The payload is the documented record data.
  const claims = JSON.parse(Buffer.from(signed.jws.split('.')[1]!, 'base64url').toString()) as { sub: string; data: unknown };
  t.equal(claims.sub, signed.subject);
  t.same(claims.data, {
    v: 1,
    op: 'revoke',
    entry: {
      id: e.id,
      kind: 'agent',
      value: 'spiffe://example.org/agent/rogue',
      reason: 'compromised',
      revokedBy: 'admin:alice',
      revokedAt: new Date(NOW).toISOString(),
      expiresAt: new Date(NOW + HOUR).toISOString(),
    },
  });
});

t.test('lift: sign, then verify round trip', async (t) => {
  const record: RevocationRecord = { op: 'lift', id: 'lift-target-01', kind: 'task', liftedBy: 'admin:bob', liftedAt: NOW };
  const signed = signRecord(signer, PREFIX, record, NOW);
  t.equal(signed.subject, `${PREFIX}.lift-target-01.lift`, 'subject: <prefix>.<id>.<op>');
  const v = verifyRecord(signed.jws, ctx(signed.subject));
  t.same(v.record, record);
  t.equal(v.signer.toString(), OPS);
});

t.test('records are published on <prefix>.<id>.<op>', async (t) => {
  const e = entry();
  const revoke = signRecord(signer, PREFIX, { op: 'revoke', entry: e }, NOW);
  const lift = signRecord(signer, PREFIX, { op: 'lift', id: e.id, kind: 'task', liftedBy: 'admin', liftedAt: NOW }, NOW);
  t.equal(revoke.subject, `${PREFIX}.${e.id}.revoke`);
  t.equal(lift.subject, `${PREFIX}.${e.id}.lift`);
  t.not(revoke.subject, lift.subject, 'a lift does not replace its revoke in a max-1-per-subject stream');
  t.equal(outcome(revoke.jws, ctx(revoke.subject)), 'ok', 'positive control');
  t.equal(outcome(lift.jws, ctx(lift.subject)), 'ok', 'positive control');
  // A record arriving on the subject of the other op is refused.
  t.equal(outcome(revoke.jws, ctx(lift.subject)), 'subject_mismatch/subject', 'a revoke replayed on the lift subject');
  t.equal(outcome(lift.jws, ctx(revoke.subject)), 'subject_mismatch/subject', 'a lift replayed on the revoke subject');
  // Signed for the other op's subject: the signature covers the subject, the op does not fit it.
  const revokeOnLift = signer.sign({ subject: lift.subject, data: recordData({ op: 'revoke', entry: e }) }, NOW).jws;
  t.equal(outcome(revokeOnLift, ctx(lift.subject)), 'subject_mismatch/id', 'a revoke signed for the lift subject');
  const liftOnRevoke = signer.sign({ subject: revoke.subject, data: recordData({ op: 'lift', id: e.id, kind: 'task', liftedBy: 'x', liftedAt: NOW }) }, NOW).jws;
  t.equal(outcome(liftOnRevoke, ctx(revoke.subject)), 'subject_mismatch/id', 'a lift signed for the revoke subject');
});

t.test('verification is as of iat: a record outlives its signer SVID', async (t) => {
  const e = entry();
  const signed = signRecord(signer, PREFIX, { op: 'revoke', entry: e }, NOW);
  const later = Date.parse(leaf.cert.validTo) + 24 * HOUR;
  t.ok(later > Date.parse(leaf.cert.validTo), 'verifying after the leaf expired');
  t.equal(outcome(signed.jws, ctx(signed.subject, { nowMs: later })), 'ok');
  // Controls: the leaf really is expired at `later` — a plain envelope verification then fails,
  // and the signer itself refuses to sign at that time.
  t.throws(() => createRecordVerifier({ maxBytes: 1 << 20, leewaySeconds: 5 }).verify(signed.jws, { bundles, nowMs: later }), { code: 'signer_untrusted' });
  t.throws(() => signRecord(signer, PREFIX, { op: 'revoke', entry: e }, later), { code: 'svid_unavailable', detail: 'svid_expired' });
});

t.test('a record backdated before its signer SVID was valid is refused', async (t) => {
  const e = entry();
  const subj = subjectOf({ op: 'revoke', entry: e });
  const data = recordData({ op: 'revoke', entry: e });
  const forge = (iatMs: number): string =>
    craft({ header: { ...headerFor('ES256', leaf), typ: RECORD_TYP }, claims: claimsFor(OPS, iatMs, { sub: subj, data }), alg: 'ES256', key: leaf.privateKey });
  t.equal(outcome(forge(NOW), ctx(subj)), 'ok', 'positive control: the hand-built record verifies at a valid iat');
  const before = Date.parse(leaf.cert.validFrom) - HOUR;
  t.match(outcome(forge(before), ctx(subj)), /^signer_untrusted\//, 'iat before notBefore: the chain was not valid then');
});

t.test('a record from the future is refused', async (t) => {
  const e = entry();
  const far = signRecord(signer, PREFIX, { op: 'revoke', entry: e }, NOW + 60_000);
  t.equal(outcome(far.jws, ctx(far.subject)), 'envelope_expired/iat_in_future');
  t.equal(outcome(far.jws, ctx(far.subject, { leewayMs: 120_000 })), 'ok', 'within a larger leeway');
  const near = signRecord(signer, PREFIX, { op: 'revoke', entry: e }, NOW + 3_000);
  t.equal(outcome(near.jws, ctx(near.subject)), 'ok', 'positive control: within the leeway');
  t.equal(outcome(far.jws, ctx(far.subject, { nowMs: NOW + 60_000 })), 'ok', 'the same record once its time has come');
});

t.test('a tampered record is refused', async (t) => {
  const e = entry({ kind: 'task', value: 'task-1' });
  const signed = signRecord(signer, PREFIX, { op: 'revoke', entry: e }, NOW);
  const [h, p, s] = signed.jws.split('.') as [string, string, string];
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString()) as { data: { entry: { value: string } } };
  const same = `${h}.${b64url(JSON.stringify(claims))}.${s}`;
  t.equal(outcome(same, ctx(signed.subject)), 'ok', 'positive control: re-encoding the unchanged payload still verifies');
  claims.data.entry.value = 'task-2';
  t.equal(outcome(`${h}.${b64url(JSON.stringify(claims))}.${s}`, ctx(signed.subject)), 'signature_invalid/bad_signature', 'payload changed');
  t.equal(outcome(flipChar(signed.jws, 2, 5), ctx(signed.subject)), 'signature_invalid/bad_signature', 'signature changed');
});

t.test('a signer from an untrusted CA is refused', async (t) => {
  const rogueCa = await createCa({ trustDomain: ORG });
  const rogueSigner = createRecordSigner(svidOf(await createLeaf(rogueCa, OPS)));
  const e = entry();
  const signed = signRecord(rogueSigner, PREFIX, { op: 'revoke', entry: e }, NOW);
  t.match(outcome(signed.jws, ctx(signed.subject)), /^signer_untrusted\//, 'same trust domain, other CA');
  t.equal(outcome(signed.jws, ctx(signed.subject, { bundles: bundlesOf([ORG, rogueCa]) })), 'ok', 'positive control: trusted once its CA is in the bundle');

  const partnerCa = await createCa({ trustDomain: 'partner.example' });
  const partner = createRecordSigner(svidOf(await createLeaf(partnerCa, 'spiffe://partner.example/ops/admin')));
  const p = signRecord(partner, PREFIX, { op: 'revoke', entry: e }, NOW);
  t.match(outcome(p.jws, ctx(p.subject)), /^signer_untrusted\//, 'a trust domain without a bundle');
  t.match(outcome(p.jws, ctx(p.subject, { bundles: bundlesOf([ORG, ca, partnerCa]) })), /^signer_untrusted\//, 'its CA in another trust domain’s bundle is not enough');
  t.equal(outcome(p.jws, ctx(p.subject, { bundles: bundlesOf([ORG, ca], ['partner.example', partnerCa]) })), 'ok', 'positive control: with its own bundle');
});

t.test('a record arriving on another subject than it was signed for is refused', async (t) => {
  const a = entry();
  const b = entry();
  const signedA = signRecord(signer, PREFIX, { op: 'revoke', entry: a }, NOW);
  const subjectB = subjectOf({ op: 'revoke', entry: b });
  t.equal(outcome(signedA.jws, ctx(subjectB)), 'subject_mismatch/subject');
  t.equal(outcome(signedA.jws, ctx(`other.prefix.${a.id}`)), 'subject_mismatch/subject');
  t.equal(outcome(signedA.jws, ctx(signedA.subject)), 'ok', 'positive control');
});

t.test('a record whose id does not match its subject is refused', async (t) => {
  const a = entry();
  const b = entry();
  const subjectA = subjectOf({ op: 'revoke', entry: a });
  const subjectB = subjectOf({ op: 'revoke', entry: b });
  // Signed directly with the envelope signer: a revoke for A, on (and signed for) B's subject.
  const mismatched = signer.sign({ subject: subjectB, data: recordData({ op: 'revoke', entry: a }) }, NOW).jws;
  t.equal(outcome(mismatched, ctx(subjectB)), 'subject_mismatch/id');
  const lift = signer.sign({ subject: subjectB, data: recordData({ op: 'lift', id: a.id, kind: 'task', liftedBy: 'x', liftedAt: NOW }) }, NOW).jws;
  t.equal(outcome(lift, ctx(subjectB)), 'subject_mismatch/id', 'a lift for A on B’s subject');
  // Right id, wrong prefix: signed for and arriving on `other.<id>`, verified under PREFIX.
  const otherPrefix = signRecord(signer, 'other', { op: 'revoke', entry: a }, NOW);
  t.equal(outcome(otherPrefix.jws, ctx(otherPrefix.subject)), 'subject_mismatch/id', 'a record under another prefix');
  t.equal(outcome(otherPrefix.jws, ctx(otherPrefix.subject, { prefix: 'other' })), 'ok', 'positive control: under its own prefix');
  // Positive control: the same direct signing path with a matching subject verifies.
  const matching = signer.sign({ subject: subjectA, data: recordData({ op: 'revoke', entry: a }) }, NOW).jws;
  t.equal(outcome(matching, ctx(subjectA)), 'ok');
});

t.test('a revoked signer is refused', async (t) => {
  const e = entry();
  const signed = signRecord(signer, PREFIX, { op: 'revoke', entry: e }, NOW);
  const seen: SignerInfo[] = [];
  t.equal(outcome(signed.jws, ctx(signed.subject, { isRevoked: (s) => (seen.push(s), false) })), 'ok', 'positive control: hook says no');
  t.equal(seen.length, 1, 'the hook was asked');
  t.equal(seen[0]?.id.toString(), OPS);
  t.equal(seen[0]?.serial, leaf.cert.serialNumber);
  t.equal(seen[0]?.fingerprint256, leaf.cert.fingerprint256);
  t.equal(outcome(signed.jws, ctx(signed.subject, { isRevoked: () => true })), 'svid_revoked/revoked');
  t.equal(
    outcome(signed.jws, ctx(signed.subject, { isRevoked: () => { throw new Error('set unavailable'); } })),
    'svid_revoked/revocation_check_failed',
    'a failing hook fails closed',
  );
  // The hook runs as of now, not as of iat: it is consulted for a record whose SVID expired.
  const later = Date.parse(leaf.cert.validTo) + HOUR;
  t.equal(outcome(signed.jws, ctx(signed.subject, { nowMs: later, isRevoked: () => true })), 'svid_revoked/revoked');
});

t.test('malformed record data is refused', async (t) => {
  const subjectFor = (data: unknown): string =>
    `${PREFIX}.malformed-0001.${(data as { op?: unknown } | null)?.op === 'lift' ? 'lift' : 'revoke'}`;
  const e = entry({ id: 'malformed-0001' });
  const revokeData = recordData({ op: 'revoke', entry: e }) as Record<string, unknown>;
  const liftData = recordData({ op: 'lift', id: 'malformed-0001', kind: 'task', liftedBy: 'admin', liftedAt: NOW }) as Record<string, unknown>;
  const entryJson = revokeData['entry'] as Record<string, unknown>;
  const cases: Array<[string, unknown, string]> = [
    ['unknown member on revoke', { ...revokeData, note: 'x' }, 'envelope_malformed/record_note'],
    ['unknown member on lift', { ...liftData, entry: entryJson }, 'envelope_malformed/record_entry'],
    ['unknown entry field', { ...revokeData, entry: { ...entryJson, comment: 'x' } }, 'envelope_malformed/record_entry.comment'],
    ['entry missing', { v: 1, op: 'revoke' }, 'envelope_malformed/record_entry.entry'],
    ['entry with a bad kind', { ...revokeData, entry: { ...entryJson, kind: 'everything' } }, 'envelope_malformed/record_entry.kind'],
    ['entry without id', { ...revokeData, entry: { ...entryJson, id: undefined } }, 'envelope_malformed/record_entry.id'],
    ['wrong version', { ...revokeData, v: 2 }, 'envelope_malformed/record_version'],
    ['version as a string', { ...revokeData, v: '1' }, 'envelope_malformed/record_version'],
    ['version missing', { op: 'revoke', entry: entryJson }, 'envelope_malformed/record_version'],
    ['bad op', { ...revokeData, op: 'delete' }, 'envelope_malformed/record_op'],
    ['op missing', { v: 1, entry: entryJson }, 'envelope_malformed/record_op'],
    ['op in the wrong case', { ...revokeData, op: 'REVOKE' }, 'envelope_malformed/record_op'],
    ['lift without id', { v: 1, op: 'lift', liftedBy: 'admin', liftedAt: new Date(NOW).toISOString() }, 'envelope_malformed/record_id'],
    ['lift with an invalid id', { ...liftData, id: 'bad.id.x' }, 'envelope_malformed/record_id'],
    ['lift without liftedBy', { ...liftData, liftedBy: undefined }, 'envelope_malformed/record_liftedBy'],
    ['lift with empty liftedBy', { ...liftData, liftedBy: '' }, 'envelope_malformed/record_liftedBy'],
    ['lift with liftedAt as a number', { ...liftData, liftedAt: NOW }, 'envelope_malformed/record_liftedAt'],
    ['lift with liftedAt not a time', { ...liftData, liftedAt: 'soon' }, 'envelope_malformed/record_liftedAt'],
    ['data is an array', [revokeData], 'envelope_malformed/record_data'],
    ['data is a string', 'revoke everything', 'envelope_malformed/record_data'],
    ['data is null', null, 'envelope_malformed/record_data'],
  ];
  for (const [what, data, expected] of cases) {
    const subject = subjectFor(data);
    const jws = signer.sign({ subject, data: JSON.parse(JSON.stringify(data)) as unknown }, NOW).jws;
    t.equal(outcome(jws, ctx(subject)), expected, what);
  }
  // Positive controls: the unmodified data, signed the same way, verifies.
  const rs = subjectFor(revokeData);
  const ls = subjectFor(liftData);
  t.equal(outcome(signer.sign({ subject: rs, data: revokeData }, NOW).jws, ctx(rs)), 'ok', 'revoke control');
  t.equal(outcome(signer.sign({ subject: ls, data: liftData }, NOW).jws, ctx(ls)), 'ok', 'lift control');
});

t.test('a non-JWS or an unreadable iat is malformed', async (t) => {
  const subject = `${PREFIX}.whatever-01.revoke`;
  const cases: Array<[string, string, string]> = [
    ['not a JWS', 'not-a-jws', 'envelope_malformed/record_segments'],
    ['four segments', 'a.b.c.d', 'envelope_malformed/record_segments'],
    ['payload not JSON', `${b64url('{}')}.${b64url('not json')}.sig`, 'envelope_malformed/record_payload'],
    ['payload null', `${b64url('{}')}.${b64url('null')}.sig`, 'envelope_malformed/record_iat'],
    ['iat missing', `${b64url('{}')}.${b64url('{"sub":"x"}')}.sig`, 'envelope_malformed/record_iat'],
    ['iat a string', `${b64url('{}')}.${b64url('{"iat":"1"}')}.sig`, 'envelope_malformed/record_iat'],
    ['iat fractional', `${b64url('{}')}.${b64url('{"iat":1.5}')}.sig`, 'envelope_malformed/record_iat'],
    ['iat negative', `${b64url('{}')}.${b64url('{"iat":-1}')}.sig`, 'envelope_malformed/record_iat'],
  ];
  for (const [what, jws, expected] of cases) t.equal(outcome(jws, ctx(subject)), expected, what);
  t.equal(outcome(`${b64url('{}')}.${b64url(`{"iat":${Math.floor(NOW / 1000)}}`)}.sig`, ctx(subject)).split('/')[0], 'envelope_malformed', 'a readable iat gets as far as the envelope verifier');
});

t.test('parseRecordData fills what a record may leave out, and nothing else', async (t) => {
  const r = parseRecordData({ v: 1, op: 'revoke', entry: { id: 'minimal-0001', kind: 'user', value: 'mallory' } }, OPS, NOW);
  t.same(r, { op: 'revoke', entry: { id: 'minimal-0001', kind: 'user', value: 'mallory', reason: '', revokedBy: OPS, revokedAt: NOW } }, 'revokedBy = signer, revokedAt = now');
  const lift = parseRecordData({ v: 1, op: 'lift', id: 'minimal-0001', kind: 'task', liftedBy: 'admin:bob', liftedAt: '2030-01-01T00:00:00Z' }, OPS, NOW);
  t.same(lift, { op: 'lift', id: 'minimal-0001', kind: 'task', liftedBy: 'admin:bob', liftedAt: Date.parse('2030-01-01T00:00:00Z') });
  t.throws(() => parseRecordData({ v: 1, op: 'lift', liftedBy: 'x', liftedAt: '2030-01-01T00:00:00Z' }, OPS, NOW), { code: 'envelope_malformed', detail: 'record_id' });
  t.throws(() => parseRecordData({ v: 1, op: 'revoke', entry: { kind: 'user', value: 'mallory' } }, OPS, NOW), { code: 'envelope_malformed', detail: 'record_entry.id' }, 'a record entry must carry its id');
});

t.test('a bus message can never pass as a revocation record, nor a record as a bus message (distinct typ)', async (t) => {
  const e = entry();
  const record = signRecord(signer, PREFIX, { op: 'revoke', entry: e }, NOW);
  t.equal(outcome(record.jws, ctx(record.subject)), 'ok', 'positive control: a record verifies as a record');
  // What an agent gets when it has its sidecar sign "a record" through the bus API.
  const busSigned = createEnvelopeSigner(svidOf(leaf)).sign({ subject: record.subject, data: recordData({ op: 'revoke', entry: e }) }, NOW).jws;
  t.equal(outcome(busSigned, ctx(record.subject)), 'envelope_malformed/typ_mismatch', 'a bus-signed message with record data is refused');
  t.throws(() => new EnvelopeVerifier().verify(record.jws, { bundles, nowMs: NOW }), { code: 'envelope_malformed', detail: 'typ_mismatch' }, 'the bus verifier refuses a record');
  t.throws(() => signRecord(createEnvelopeSigner(svidOf(leaf)), PREFIX, { op: 'revoke', entry: e }, NOW), TypeError, 'signRecord refuses a bus signer');
});

t.test('a stored record is bound to the stream clock, not the receiver\'s', async (t) => {
  const e = entry();
  const signed = signRecord(signer, PREFIX, { op: 'revoke', entry: e }, NOW);
  // The receiver's clock is 10 s behind: the record looks "from the future" to it.
  const behind = NOW - 10_000;
  t.equal(outcome(signed.jws, ctx(signed.subject, { nowMs: behind })), 'envelope_expired/iat_in_future', 'without a store time, the receiver clock decides');
  t.equal(outcome(signed.jws, ctx(signed.subject, { nowMs: behind, storedAtMs: NOW + 200 })), 'ok', 'stored 0.2 s after its iat: accepted whatever this clock says');
  t.equal(outcome(signed.jws, ctx(signed.subject, { storedAtMs: NOW + 120_000 })), 'envelope_expired/iat_not_at_store_time', 'stored 2 minutes after its iat: refused');
  t.equal(outcome(signed.jws, ctx(signed.subject, { storedAtMs: NOW - 60_000 })), 'envelope_expired/iat_not_at_store_time', 'stored before it was signed: refused');
});
