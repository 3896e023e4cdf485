import { isAscii, isUtf8 } from 'node:buffer';
import { verify as cryptoVerify, X509Certificate, type VerifyKeyObjectInput } from 'node:crypto';
import {
  SpiffeIdPattern,
  VerificationError,
  verifyX509Svid,
  type BundleSet,
  type SpiffeId,
  type VerifiedSvid,
} from '../../spiffe/index.js';
import {
  algorithmsFor,
  isEnvelopeAlgorithm,
  keyKind,
  verifyParams,
  type CryptoParams,
  type EnvelopeAlgorithm,
} from './algorithms.js';
import { Scratch, base64urlLength, decodeBase64, decodeBase64url, duplicateMember, memberCount } from './encoding.js';
import { EnvelopeError, malformed, quote } from './errors.js';
import {
  CLAIM_NAMES,
  DEFAULT_CACHE_LIMIT,
  DEFAULT_LEEWAY_SECONDS,
  DEFAULT_MAX_BYTES,
  DEFAULT_MAX_TTL_SECONDS,
  ENVELOPE_TYP,
  HEADER_MEMBERS,
  JTI_MAX_BYTES,
  JTI_MIN_BYTES,
  MAX_X5C,
} from './format.js';
import type { ReplayWindow } from './replay.js';

export interface EnvelopeVerifierOptions {
  /** Longest accepted compact serialization, in characters (= bytes; it is ASCII). Default 1 MiB. */
  maxBytes?: number;
  /** Clock skew tolerated on exp and iat, seconds (may be fractional). Default 5. */
  leewaySeconds?: number;
  /** Longest accepted exp - iat, seconds (may be fractional). Default 300. */
  maxTtlSeconds?: number;
  /** Entries in each cache (verified chains; parsed headers). Default 4096. */
  cacheLimit?: number;
  /** The JWS `typ` required (default `sigil-msg+jws`); anything else is envelope_malformed. */
  typ?: string;
}

/** The verified signer, as handed to the revocation hook and returned with the envelope. */
export interface SignerInfo {
  id: SpiffeId;
  /** Leaf serial number, upper-case hex as Node reports it. */
  serial: string;
  /** SHA-256 fingerprint of the leaf DER, colon-separated upper-case hex as Node reports it. */
  fingerprint256: string;
  leaf: X509Certificate;
  /** Epoch ms after which some certificate on the verified path has expired. */
  validTo: number;
}

export interface VerifyContext {
  /** Trust bundles; the signer is verified against the bundle of its own trust domain only. */
  bundles: BundleSet;
  /** Default Date.now(). */
  nowMs?: number;
  /** The verifier's own ID: required when the envelope has `aud`, which must match it. */
  self?: SpiffeId;
  /** Replay protection; without it a replayed envelope is accepted again. */
  replay?: ReplayWindow;
  /** Any change drops every cached chain (e.g. bump it when revocation data changes). */
  trustEpoch?: number;
  /** Checked on every message, cached chain or not; true → `svid_revoked`; a throwing hook → `svid_revoked` (fail closed). */
  isRevoked?: (signer: SignerInfo) => boolean;
}

export interface VerifiedEnvelope {
  signer: SignerInfo;
  subject: string;
  audience?: string[];
  delegation?: string;
  jti: string;
  iat: number;
  exp: number;
  /** The `data` claim (any JSON value), when the envelope has one. */
  data?: unknown;
  /** The decoded `data_b64` claim, when the envelope has one. */
  bytes?: Buffer;
}

/** A parsed protected header. A pure function of the header segment, so cached by it. */
interface HeaderEntry {
  alg: EnvelopeAlgorithm;
  /** x5c, parsed once: leaf first. */
  certs: X509Certificate[];
  /** SHA-256 of the leaf DER (Node's fingerprint256): the chain cache key. */
  leafHash: string;
}

/** A chain verified under one (BundleSet, trustEpoch) scope. */
interface ChainEntry {
  signer: SignerInfo;
  /** String form of signer.id, compared with `iss`. */
  idString: string;
  /** Latest notBefore / earliest notAfter on the verified path (epoch ms). */
  validFrom: number;
  validTo: number;
  /** Per algorithm the key allows: how to verify with it (KeyObject created once). */
  verifiers: Partial<Record<EnvelopeAlgorithm, CryptoParams<VerifyKeyObjectInput>>>;
  keySupported: boolean;
}

interface Claims {
  iss?: unknown;
  sub?: unknown;
  aud?: unknown;
  iat?: unknown;
  exp?: unknown;
  jti?: unknown;
  dlg?: unknown;
  data?: unknown;
  data_b64?: unknown;
}

function positiveInt(v: number | undefined, dflt: number, name: string): number {
  const x = v ?? dflt;
  if (!Number.isSafeInteger(x) || x < 1) throw new RangeError(`${name} must be a positive integer`);
  return x;
}

/** Seconds may be fractional (configuration durations such as 500ms). */
function seconds(v: number | undefined, dflt: number, name: string, min: number, minInclusive: boolean): number {
  const x = v ?? dflt;
  if (!Number.isFinite(x) || x < min || (!minInclusive && x === min)) throw new RangeError(`${name} must be a number ${minInclusive ? '>=' : '>'} ${min}`);
  return x;
}

function untrusted(err: unknown): EnvelopeError {
  if (err instanceof VerificationError) {
    return new EnvelopeError('signer_untrusted', err.code, `signer_untrusted: ${err.message}`, { cause: err });
  }
  return new EnvelopeError('signer_untrusted', 'svid_invalid', `signer_untrusted: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/**
 * Verifies Sigil message envelopes (docs/envelope.md). Synchronous and pure apart from its
 * caches: parsed headers (by the exact header segment) and verified chains (by leaf SHA-256,
 * scoped to one BundleSet object and trustEpoch; any change of either drops them all). Every
 * failure is an EnvelopeError; nothing else is thrown.
 */
export class EnvelopeVerifier {
  readonly maxBytes: number;
  readonly leewaySeconds: number;
  readonly maxTtlSeconds: number;
  readonly cacheLimit: number;
  readonly typ: string;

  private readonly headers = new Map<string, HeaderEntry>();
  private chains = new Map<string, ChainEntry>();
  private scopeBundles: BundleSet | undefined;
  private scopeEpoch: number | undefined;
  private readonly patterns = new Map<string, SpiffeIdPattern>();
  private lastHeader = '\u0000';
  private lastHeaderEntry: HeaderEntry | undefined;
  private active = false;
  private readonly payloadScratch = new Scratch();
  private readonly inputScratch = new Scratch();

  constructor(opts: EnvelopeVerifierOptions = {}) {
    this.maxBytes = positiveInt(opts.maxBytes, DEFAULT_MAX_BYTES, 'maxBytes');
    this.leewaySeconds = seconds(opts.leewaySeconds, DEFAULT_LEEWAY_SECONDS, 'leewaySeconds', 0, true);
    this.maxTtlSeconds = seconds(opts.maxTtlSeconds, DEFAULT_MAX_TTL_SECONDS, 'maxTtlSeconds', 0, false);
    this.cacheLimit = positiveInt(opts.cacheLimit, DEFAULT_CACHE_LIMIT, 'cacheLimit');
    this.typ = opts.typ ?? ENVELOPE_TYP;
  }

  /** Number of verified chains currently cached (for tests and status). */
  get cachedChains(): number {
    return this.chains.size;
  }

  verify(jws: string, ctx: VerifyContext): VerifiedEnvelope {
    // The revocation hook is caller code; should it verify another envelope with this verifier,
    // that inner call must not reuse the buffers the outer call is still reading.
    const reentrant = this.active;
    this.active = true;
    try {
      return this.verifyOrThrow(jws, ctx, reentrant ? new Scratch() : this.payloadScratch, reentrant ? new Scratch() : this.inputScratch);
    } catch (err) {
      if (err instanceof EnvelopeError) throw err;
      throw new EnvelopeError('envelope_malformed', 'internal_error', `envelope_malformed: unexpected ${(err as Error)?.message ?? String(err)}`, {
        cause: err,
      });
    } finally {
      this.active = reentrant;
    }
  }

  private verifyOrThrow(jws: string, ctx: VerifyContext, payloadScratch: Scratch, inputScratch: Scratch): VerifiedEnvelope {
    // 1. Size, then structure: three segments, each canonical base64url.
    if (typeof jws !== 'string') throw malformed('not_a_string', 'envelope must be a string');
    if (jws.length > this.maxBytes) {
      throw new EnvelopeError('envelope_too_large', 'too_large', `envelope_too_large: ${jws.length} > ${this.maxBytes} bytes`);
    }
    // The header segment is the same for every message of a signer: compare it with the last
    // one seen before hashing it for the cache lookup. (slice + === is a memcmp in V8; startsWith
    // compares character by character and is ~30x slower on a 1 KiB header.)
    const last = this.lastHeader;
    let d1: number;
    let header: HeaderEntry | undefined;
    if (jws.charCodeAt(last.length) === 0x2e && jws.slice(0, last.length) === last) {
      d1 = last.length;
      header = this.lastHeaderEntry;
    } else {
      d1 = jws.indexOf('.');
    }
    const d2 = d1 < 0 ? -1 : jws.indexOf('.', d1 + 1);
    if (d1 < 0 || d2 < 0 || jws.indexOf('.', d2 + 1) !== -1) throw malformed('segment_count', 'envelope must have exactly three segments');

    // 2. Protected header.
    header ??= this.header(jws.slice(0, d1));

    const signature = decodeBase64url(jws.slice(d2 + 1));
    if (!signature || signature.length === 0) throw malformed('signature_base64', 'signature is not canonical base64url');
    // The payload is decoded into a reused buffer (valid until the next verify); per-message
    // buffers of this size would mostly feed the garbage collector.
    const payloadSegment = jws.slice(d1 + 1, d2);
    const payloadBuffer = payloadScratch.reserve(payloadSegment.length);
    const payloadLength = payloadBuffer.write(payloadSegment, 0, 'base64url');
    const payload = payloadBuffer.subarray(0, payloadLength);
    if (payload.toString('base64url') !== payloadSegment) throw malformed('payload_base64', 'payload is not canonical base64url');

    // 3. Signer chain (cached) and the algorithm against its key.
    const nowMs = ctx.nowMs ?? Date.now();
    const chain = this.chain(header, ctx, nowMs);
    const v = chain.verifiers[header.alg];
    if (!v) {
      throw chain.keySupported
        ? new EnvelopeError('alg_not_allowed', 'alg_key_mismatch', `alg_not_allowed: ${header.alg} does not fit the signer's key`)
        : new EnvelopeError('alg_not_allowed', 'key_unsupported', `alg_not_allowed: the signer's key type cannot sign envelopes`);
    }

    // 4. Signature over the ASCII signing input (every segment was checked to be base64url, so
    //    latin1 is exactly the ASCII bytes).
    if (v.signatureLength !== undefined && signature.length !== v.signatureLength) {
      throw new EnvelopeError('signature_invalid', 'signature_length', `signature_invalid: ${header.alg} signatures are ${v.signatureLength} bytes`);
    }
    let ok: boolean;
    try {
      const input = inputScratch.reserve(d2);
      input.write(jws, 0, d2, 'latin1');
      ok = cryptoVerify(v.hash, input.subarray(0, d2), v.key, signature);
    } catch {
      ok = false;
    }
    if (!ok) throw new EnvelopeError('signature_invalid', 'bad_signature', 'signature_invalid: the signature does not verify');

    // 5. Revocation, on every message.
    const signer = chain.signer;
    if (ctx.isRevoked) {
      let revoked: boolean;
      try {
        revoked = Boolean(ctx.isRevoked(signer));
      } catch (cause) {
        throw new EnvelopeError('svid_revoked', 'revocation_check_failed', 'svid_revoked: the revocation check failed (fail closed)', { cause });
      }
      if (revoked) throw new EnvelopeError('svid_revoked', 'revoked', `svid_revoked: ${signer.id.toString()} serial ${signer.serial}`);
    }

    // 6. Claims (only now is the payload read).
    const claims = parseClaims(payload);
    const iss = claims.iss;
    const sub = claims.sub;
    const aud = claims.aud;
    const iat = claims.iat;
    const exp = claims.exp;
    const jti = claims.jti;
    const dlg = claims.dlg;
    if (typeof iss !== 'string') throw malformed('bad_iss', 'iss must be a string');
    if (typeof sub !== 'string' || sub.length === 0) throw malformed('bad_sub', 'sub must be a non-empty string');
    if (!isNumericDate(iat)) throw malformed('bad_iat', 'iat must be an integer NumericDate');
    if (!isNumericDate(exp)) throw malformed('bad_exp', 'exp must be an integer NumericDate');
    if (typeof jti !== 'string') throw malformed('bad_jti', 'jti must be a string');
    const jtiLength = base64urlLength(jti);
    if (jtiLength < JTI_MIN_BYTES || jtiLength > JTI_MAX_BYTES) {
      throw malformed('bad_jti', `jti must be canonical base64url of ${JTI_MIN_BYTES}..${JTI_MAX_BYTES} bytes`);
    }
    let audience: string[] | undefined;
    let patterns: SpiffeIdPattern[] | undefined;
    if (aud !== undefined) {
      if (!Array.isArray(aud) || aud.length === 0) throw malformed('bad_aud', 'aud must be a non-empty array');
      patterns = aud.map((a) => this.pattern(a));
      audience = aud as string[];
    }
    if (dlg !== undefined && (typeof dlg !== 'string' || dlg.length === 0)) throw malformed('bad_dlg', 'dlg must be a non-empty string');
    const hasData = Object.hasOwn(claims, 'data');
    const dataB64 = claims.data_b64;
    let bytes: Buffer | undefined;
    if (dataB64 !== undefined) {
      if (hasData) throw malformed('data_ambiguous', 'data and data_b64 are exclusive');
      if (typeof dataB64 !== 'string') throw malformed('bad_data_b64', 'data_b64 must be a string');
      bytes = decodeBase64url(dataB64);
      if (!bytes) throw malformed('bad_data_b64', 'data_b64 is not canonical base64url');
    } else if (!hasData) {
      throw malformed('data_missing', 'one of data and data_b64 is required');
    }

    // 7. Issuer = the leaf's SPIFFE ID, exactly.
    if (iss !== chain.idString) {
      throw new EnvelopeError('issuer_mismatch', 'iss_not_leaf_id', `issuer_mismatch: iss ${quote(iss)} but the leaf is ${chain.idString}`);
    }

    // 8. Lifetime and time window.
    if (!(exp > iat)) throw malformed('exp_not_after_iat', 'exp must be later than iat');
    if (exp - iat > this.maxTtlSeconds) {
      throw new EnvelopeError('envelope_expired', 'ttl_too_long', `envelope_expired: lifetime ${exp - iat}s exceeds ${this.maxTtlSeconds}s`);
    }
    const leewayMs = this.leewaySeconds * 1000;
    if (!(nowMs <= exp * 1000 + leewayMs)) throw new EnvelopeError('envelope_expired', 'expired', `envelope_expired: exp ${exp}`);
    if (!(iat * 1000 <= nowMs + leewayMs)) throw new EnvelopeError('envelope_expired', 'not_yet_valid', `envelope_expired: iat ${iat} is in the future`);

    // 9. Audience.
    if (patterns) {
      const self = ctx.self;
      if (!self) throw new EnvelopeError('audience_mismatch', 'no_self', 'audience_mismatch: the envelope has aud but the verifier has no own ID');
      if (!patterns.some((p) => p.matches(self))) {
        throw new EnvelopeError('audience_mismatch', 'not_addressed', `audience_mismatch: ${self.toString()} is not in aud`);
      }
    }

    // 10. Replay: recorded only now, after everything else passed.
    if (ctx.replay) {
      const r = ctx.replay.checkAndRecord(iss, jti, exp * 1000 + leewayMs, nowMs);
      if (r === 'seen') throw new EnvelopeError('replay', 'seen', 'replay: this envelope was already accepted');
      if (r === 'full') throw new EnvelopeError('replay', 'window_full', 'replay: the replay window is full (fail closed)');
    }

    const out: VerifiedEnvelope = { signer, subject: sub, jti, iat, exp };
    if (audience) out.audience = audience;
    if (dlg !== undefined) out.delegation = dlg as string;
    if (bytes) out.bytes = bytes;
    else out.data = claims.data;
    return out;
  }

  // ---- header ---------------------------------------------------------------------------------

  private header(segment: string): HeaderEntry {
    const hit = this.headers.get(segment);
    if (hit) {
      this.lastHeader = segment;
      this.lastHeaderEntry = hit;
      return hit;
    }
    const entry = parseHeader(segment, this.typ);
    remember(this.headers, segment, entry, this.cacheLimit);
    this.lastHeader = segment;
    this.lastHeaderEntry = entry;
    return entry;
  }

  // ---- chain ----------------------------------------------------------------------------------

  private chain(header: HeaderEntry, ctx: VerifyContext, nowMs: number): ChainEntry {
    if (ctx.bundles !== this.scopeBundles || ctx.trustEpoch !== this.scopeEpoch) {
      this.chains = new Map();
      this.scopeBundles = ctx.bundles;
      this.scopeEpoch = ctx.trustEpoch;
    }
    const hit = this.chains.get(header.leafHash);
    if (hit) {
      if (nowMs >= hit.validFrom && nowMs <= hit.validTo) return hit;
      this.chains.delete(header.leafHash);
    }
    let verified: VerifiedSvid;
    try {
      verified = verifyX509Svid(header.certs, ctx.bundles, new Date(nowMs));
    } catch (err) {
      throw untrusted(err);
    }
    const leaf = verified.leaf;
    const publicKey = leaf.publicKey;
    const kind = keyKind(publicKey);
    const verifiers: ChainEntry['verifiers'] = {};
    if (kind) for (const alg of algorithmsFor(kind)) verifiers[alg] = verifyParams(alg, publicKey);
    const validTo = Math.min(...verified.path.map((c) => Date.parse(c.validTo)));
    const signer: SignerInfo = Object.freeze({
      id: verified.id,
      serial: leaf.serialNumber,
      fingerprint256: leaf.fingerprint256,
      leaf,
      validTo,
    });
    const entry: ChainEntry = {
      signer,
      idString: verified.id.toString(),
      validFrom: Math.max(...verified.path.map((c) => Date.parse(c.validFrom))),
      validTo,
      verifiers,
      keySupported: kind !== undefined,
    };
    remember(this.chains, header.leafHash, entry, this.cacheLimit);
    return entry;
  }

  private pattern(a: unknown): SpiffeIdPattern {
    if (typeof a !== 'string') throw malformed('bad_aud', 'aud entries must be strings');
    let p = this.patterns.get(a);
    if (!p) {
      try {
        p = SpiffeIdPattern.parse(a);
      } catch {
        throw malformed('bad_aud', `aud entry ${quote(a)} is not a SPIFFE ID or pattern`);
      }
      remember(this.patterns, a, p, this.cacheLimit);
    }
    return p;
  }
}

/** Inserts into a bounded map, evicting the oldest entry when full. */
function remember<K, V>(map: Map<K, V>, key: K, value: V, limit: number): void {
  if (map.size >= limit) {
    const oldest = map.keys().next();
    if (!oldest.done) map.delete(oldest.value);
  }
  map.set(key, value);
}

function isNumericDate(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseHeader(segment: string, typ: string): HeaderEntry {
  const raw = decodeBase64url(segment);
  if (!raw || raw.length === 0) throw malformed('header_base64', 'protected header is not canonical base64url');
  if (!isUtf8(raw)) throw malformed('header_json', 'protected header is not UTF-8');
  const text = raw.toString('utf8');
  let h: unknown;
  try {
    h = JSON.parse(text);
  } catch {
    throw malformed('header_json', 'protected header is not JSON');
  }
  if (typeof h !== 'object' || h === null || Array.isArray(h)) throw malformed('header_not_object', 'protected header is not a JSON object');
  const header = h as Record<string, unknown>;
  const names = Object.keys(header);
  if (memberCount(raw) !== names.length) {
    throw malformed('header_duplicate_member', `protected header repeats ${quote(duplicateMember(text))}`);
  }
  for (const name of names) {
    if (!HEADER_MEMBERS.has(name)) throw malformed('header_member_not_allowed', `protected header member ${quote(name)} is not allowed`);
  }
  if (!('typ' in header)) throw malformed('typ_missing', `typ must be ${typ}`);
  if (header.typ !== typ) throw malformed('typ_mismatch', `typ ${quote(header.typ)} is not ${typ}`);
  const alg = header.alg;
  if (alg === undefined) throw malformed('alg_missing', 'protected header has no alg');
  if (!isEnvelopeAlgorithm(alg)) throw new EnvelopeError('alg_not_allowed', 'alg_unsupported', `alg_not_allowed: ${quote(alg)}`);
  const x5c = header.x5c;
  if (x5c === undefined) throw malformed('x5c_missing', 'protected header has no x5c');
  if (!Array.isArray(x5c) || x5c.length === 0 || x5c.length > MAX_X5C) {
    throw malformed('x5c_invalid', `x5c must be an array of 1..${MAX_X5C} certificates`);
  }
  const certs: X509Certificate[] = [];
  for (const entry of x5c) {
    const der = typeof entry === 'string' ? decodeBase64(entry) : undefined;
    if (!der || der.length === 0) throw malformed('x5c_base64', `x5c[${certs.length}] is not canonical base64`);
    try {
      certs.push(new X509Certificate(der));
    } catch {
      throw malformed('x5c_der', `x5c[${certs.length}] is not a DER certificate`);
    }
  }
  return { alg, certs, leafHash: certs[0]!.fingerprint256 };
}

function parseClaims(payload: Buffer): Claims {
  let text: string;
  if (isAscii(payload)) text = payload.toString('latin1');
  else if (isUtf8(payload)) text = payload.toString('utf8');
  else throw malformed('payload_utf8', 'payload is not UTF-8');
  let claims: unknown;
  try {
    claims = JSON.parse(text);
  } catch {
    throw malformed('payload_json', 'payload is not JSON');
  }
  if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) throw malformed('claims_not_object', 'payload is not a JSON object');
  const names = Object.keys(claims);
  for (let i = 0; i < names.length; i++) {
    if (!CLAIM_NAMES.has(names[i]!)) throw malformed('unknown_claim', `unknown claim ${quote(names[i])}`);
  }
  if (memberCount(payload) !== names.length) {
    throw malformed('claims_duplicate_member', `payload repeats claim ${quote(duplicateMember(text))}`);
  }
  return claims as Claims;
}
