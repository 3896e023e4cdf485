import { createPrivateKey, randomFillSync, sign as cryptoSign, type KeyObject, type SignKeyObjectInput } from 'node:crypto';
import type { X509Svid } from '../../identity/index.js';
import { SpiffeIdPattern, validateLeaf, type SpiffeId } from '../../spiffe/index.js';
import { algorithmsFor, keyKind, signParams, type CryptoParams, type EnvelopeAlgorithm } from './algorithms.js';
import { Scratch, jsonString } from './encoding.js';
import { EnvelopeError, malformed } from './errors.js';
import { DEFAULT_TTL_SECONDS, ENVELOPE_TYP, JTI_BYTES } from './format.js';

export interface SignInput {
  /** `sub`: the topic/subject the message is published on. Non-empty. */
  subject: string;
  /** Any JSON value, sent as the `data` claim. Exclusive with `bytes`. */
  data?: unknown;
  /** Raw bytes, sent base64url-encoded as the `data_b64` claim. Exclusive with `data`. */
  bytes?: Uint8Array;
  /** `aud`: recipient SPIFFE IDs or SPIFFE ID patterns (non-empty when given). */
  audience?: string[];
  /** `dlg`: the delegation token the message is sent under. */
  delegation?: string;
  /** exp - iat in whole seconds (a fraction is truncated; at least 1); default the signer's defaultTtlSeconds. Verifiers refuse more than their maxTtlSeconds (default 300). */
  ttlSeconds?: number;
}

export interface SignedEnvelope {
  /** The JWS compact serialization. */
  jws: string;
  jti: string;
  /** NumericDate seconds. */
  iat: number;
  exp: number;
}

export interface EnvelopeSigner {
  readonly id: SpiffeId;
  readonly alg: string;
  /** The JWS `typ` it signs with. */
  readonly typ: string;
  sign(input: SignInput, nowMs?: number): SignedEnvelope;
}

export interface EnvelopeSignerOptions {
  /** Default 60; whole seconds (a fraction is truncated), at least 1. */
  defaultTtlSeconds?: number;
  /** For RSA keys: PS256 (default) or RS256. EC keys have exactly one algorithm. */
  rsaAlgorithm?: 'PS256' | 'RS256';
  /**
   * The JWS `typ` (default `sigil-msg+jws`). Another application of the format (revocation
   * records) uses its own, so a message signed for one can never verify as the other.
   */
  typ?: string;
}

// ---- jti: random bits from a pooled CSPRNG buffer -------------------------------------------
// JTI_BYTES is a multiple of 3, so the base64url of the whole pool splits into one jti per
// 4 * JTI_BYTES / 3 characters: one randomFillSync and one encoding per 256 jtis.
const JTI_CHARS = (JTI_BYTES / 3) * 4;
const JTIS_PER_POOL = 256;
const pool = Buffer.alloc(JTI_BYTES * JTIS_PER_POOL);
let poolText = '';
let poolIndex = JTIS_PER_POOL;

function nextJti(): string {
  if (poolIndex === JTIS_PER_POOL) {
    randomFillSync(pool);
    poolText = pool.toString('base64url');
    poolIndex = 0;
  }
  const start = poolIndex++ * JTI_CHARS;
  return poolText.slice(start, start + JTI_CHARS);
}

const MAX_KNOWN_AUDIENCE = 1024;

class Signer implements EnvelopeSigner {
  readonly alg: EnvelopeAlgorithm;
  private readonly params: CryptoParams<SignKeyObjectInput>;
  /** "<header>." as a string and as bytes: the fixed start of every signing input. */
  private readonly headerDot: string;
  private readonly headerDotBytes: Buffer;
  /** '{"iss":"<id>","sub":' */
  private readonly claimsPrefix: string;
  private readonly notBefore: number;
  private readonly notAfter: number;
  private readonly defaultTtl: number;
  /** Audience entries already checked to be valid IDs/patterns. */
  private readonly knownAudience = new Set<string>();
  private readonly claimScratch = new Scratch();
  /** Always starts with headerDotBytes. */
  private readonly inputScratch = new Scratch();
  private inputView: Buffer = Buffer.alloc(0);
  private lastSubject = '';
  private lastSubjectJson = '""';
  readonly typ: string;

  constructor(
    readonly id: SpiffeId,
    svid: X509Svid,
    opts: EnvelopeSignerOptions,
  ) {
    const leaf = svid.certificates[0];
    if (!leaf) throw new EnvelopeError('svid_unavailable', 'no_certificate', 'the SVID has no certificate');
    let leafId: SpiffeId;
    try {
      leafId = validateLeaf(leaf);
    } catch (cause) {
      throw new EnvelopeError('svid_unavailable', 'svid_invalid', `the SVID leaf is not a valid X509-SVID: ${(cause as Error).message}`, { cause });
    }
    if (!leafId.equals(id)) {
      throw new EnvelopeError('svid_unavailable', 'id_mismatch', `the SVID is for ${id.toString()} but its leaf names ${leafId.toString()}`);
    }
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey(svid.privateKeyPem);
    } catch (cause) {
      throw new EnvelopeError('svid_unavailable', 'bad_private_key', 'the SVID private key is not a valid PEM private key', { cause });
    }
    if (!leaf.checkPrivateKey(privateKey)) {
      throw new EnvelopeError('svid_unavailable', 'key_mismatch', 'the SVID private key does not match its leaf certificate');
    }
    const kind = keyKind(leaf.publicKey);
    if (!kind) {
      throw new EnvelopeError(
        'alg_not_allowed',
        'key_unsupported',
        `envelopes need a P-256, P-384 or RSA (>= 2048 bits) key; the SVID key is ${leaf.publicKey.asymmetricKeyType ?? 'unknown'}`,
      );
    }
    this.alg = kind === 'RSA' ? (opts.rsaAlgorithm ?? 'PS256') : algorithmsFor(kind)[0]!;
    if (!algorithmsFor(kind).includes(this.alg)) {
      throw new EnvelopeError('alg_not_allowed', 'alg_key_mismatch', `rsaAlgorithm must be PS256 or RS256`);
    }
    this.params = signParams(this.alg, privateKey);
    this.typ = opts.typ ?? ENVELOPE_TYP;
    const header = { alg: this.alg, typ: this.typ, x5c: svid.certificates.map((c) => c.raw.toString('base64')) };
    this.headerDot = Buffer.from(JSON.stringify(header), 'utf8').toString('base64url') + '.';
    this.headerDotBytes = Buffer.from(this.headerDot, 'latin1');
    this.claimsPrefix = '{"iss":' + JSON.stringify(id.toString()) + ',"sub":';
    this.notBefore = Date.parse(leaf.validFrom);
    this.notAfter = Date.parse(leaf.validTo);
    const ttl = Math.floor(opts.defaultTtlSeconds ?? DEFAULT_TTL_SECONDS);
    if (!Number.isSafeInteger(ttl) || ttl < 1) throw new RangeError('defaultTtlSeconds must be at least 1');
    this.defaultTtl = ttl;
  }

  sign(input: SignInput, nowMs: number = Date.now()): SignedEnvelope {
    if (!(nowMs <= this.notAfter)) {
      throw new EnvelopeError('svid_unavailable', 'svid_expired', 'the SVID has expired; it must be rotated before signing');
    }
    if (!(nowMs >= this.notBefore)) {
      throw new EnvelopeError('svid_unavailable', 'svid_not_yet_valid', 'the SVID is not valid yet');
    }
    const { subject } = input;
    if (typeof subject !== 'string' || subject.length === 0) throw malformed('bad_sub', 'subject must be a non-empty string');
    const ttl = Math.floor(input.ttlSeconds ?? this.defaultTtl);
    if (!Number.isSafeInteger(ttl) || ttl < 1) throw malformed('bad_ttl', 'ttlSeconds must be at least 1');
    const iat = Math.floor(nowMs / 1000);
    const exp = iat + ttl;
    const jti = nextJti();

    if (subject !== this.lastSubject) {
      this.lastSubject = subject;
      this.lastSubjectJson = JSON.stringify(subject);
    }
    let claims = this.claimsPrefix + this.lastSubjectJson;
    if (input.audience !== undefined) claims += ',"aud":' + this.audienceJson(input.audience);
    claims += ',"iat":' + iat + ',"exp":' + exp + ',"jti":"' + jti + '"';
    if (input.delegation !== undefined) {
      if (typeof input.delegation !== 'string' || input.delegation.length === 0) {
        throw malformed('bad_dlg', 'delegation must be a non-empty string');
      }
      claims += ',"dlg":' + jsonString(input.delegation);
    }
    claims += dataMember(input) + '}';

    // Claims → UTF-8 → base64url → signing input, through two reused buffers: per-message
    // allocations of this size are what the garbage collector would otherwise spend its time on.
    const claimBytes = this.claimScratch.reserve(claims.length * 3); // UTF-8 needs at most 3 bytes per UTF-16 unit
    const n = claimBytes.write(claims, 0, 'utf8');
    const payload = claimBytes.toString('base64url', 0, n);
    const hlen = this.headerDotBytes.length;
    const inputLength = hlen + payload.length;
    const signingInput = this.inputScratch.reserve(inputLength, this.headerDotBytes);
    signingInput.write(payload, hlen, 'latin1');
    const p = this.params;
    // Messages of one size repeat; so does the view of the signing input.
    let view = this.inputView;
    if (view.length !== inputLength || view.buffer !== signingInput.buffer) view = this.inputView = signingInput.subarray(0, inputLength);
    const signature = cryptoSign(p.hash, view, p.key).toString('base64url');
    return { jws: this.headerDot + payload + '.' + signature, jti, iat, exp };
  }

  private audienceJson(audience: unknown): string {
    if (!Array.isArray(audience) || audience.length === 0) throw malformed('bad_aud', 'audience must be a non-empty array');
    for (const a of audience) {
      if (typeof a !== 'string') throw malformed('bad_aud', 'audience entries must be strings');
      if (this.knownAudience.has(a)) continue;
      try {
        SpiffeIdPattern.parse(a);
      } catch {
        throw malformed('bad_aud', `audience entry ${JSON.stringify(a)} is not a SPIFFE ID or pattern`);
      }
      if (this.knownAudience.size >= MAX_KNOWN_AUDIENCE) this.knownAudience.clear();
      this.knownAudience.add(a);
    }
    return JSON.stringify(audience);
  }
}

function dataMember(input: SignInput): string {
  const { bytes, data } = input;
  if (bytes !== undefined) {
    if (data !== undefined) throw malformed('data_ambiguous', 'give data or bytes, not both');
    if (!(bytes instanceof Uint8Array)) throw malformed('bad_data_b64', 'bytes must be a Uint8Array');
    // base64url never needs JSON escaping.
    return ',"data_b64":"' + Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url') + '"';
  }
  if (data === undefined) return ',"data":null';
  if (typeof data === 'string') return ',"data":' + jsonString(data);
  let json: string | undefined;
  try {
    json = JSON.stringify(data);
  } catch (cause) {
    throw new EnvelopeError('envelope_malformed', 'data_not_json', `data cannot be serialized as JSON: ${(cause as Error).message}`, { cause });
  }
  if (typeof json !== 'string') throw malformed('data_not_json', 'data is not a JSON value');
  return ',"data":' + json;
}

/**
 * A signer for the SVID's identity. Key material is imported once here; sign() is synchronous.
 * Throws EnvelopeError: `alg_not_allowed`/`key_unsupported` for keys envelopes cannot use,
 * `svid_unavailable` when the SVID is unusable (no leaf, invalid leaf, ID or key mismatch).
 * Make a new signer when the SVID rotates.
 */
export function createEnvelopeSigner(svid: X509Svid, opts: EnvelopeSignerOptions = {}): EnvelopeSigner {
  return new Signer(svid.id, svid, opts);
}
