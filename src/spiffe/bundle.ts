import { X509Certificate } from 'node:crypto';
import { BundleError, SvidError } from './errors.js';
import { TrustDomain } from './id.js';
import { parseCertificatesPem } from './svid.js';

// Key types we can hold an X.509 authority for. Per the bundle spec (§4.2.1) an entry with any
// other kty is ignored, not an error.
const KNOWN_KTY = new Set(['EC', 'RSA', 'OKP']);
const X509_USE = 'x509-svid';

function toTrustDomain(td: TrustDomain | string): TrustDomain {
  return td instanceof TrustDomain ? td : TrustDomain.parse(td);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optionalInteger(v: unknown, problem: string, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new BundleError(problem, `${what} must be a non-negative integer`);
  }
  return v;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

function authorityFromJwk(key: unknown, index: number): X509Certificate | undefined {
  if (!isObject(key)) throw new BundleError('bad_key_entry', `keys[${index}] is not an object`);
  if (key.use !== X509_USE) return undefined;
  if (typeof key.kty !== 'string') throw new BundleError('bad_key_entry', `keys[${index}] has no kty`);
  if (!KNOWN_KTY.has(key.kty)) return undefined;
  // X509-SVID §6.2: an x509-svid entry whose x5c is not set, or is empty, MUST be ignored; if
  // it holds several values, all but the first MUST be ignored (they are not even decoded).
  const x5c = key.x5c;
  if (x5c === undefined || x5c === null || (Array.isArray(x5c) && x5c.length === 0)) return undefined;
  // x5c is set but is not an array (RFC 7517 §4.7): malformed rather than absent.
  if (!Array.isArray(x5c)) throw new BundleError('bad_x5c', `keys[${index}].x5c is not an array`);
  const b64: unknown = x5c[0];
  // The first value is the authority itself (§6.2), so one that is not base64 DER of a
  // certificate is an error, not an entry to skip: the spec only lets missing/empty x5c be
  // ignored, and silently dropping a corrupt authority would hide a broken bundle.
  // x5c is standard (not URL-safe) base64 per RFC 7517 §4.7; reject anything else outright
  // because Buffer.from silently skips invalid characters.
  if (typeof b64 !== 'string' || !BASE64.test(b64)) {
    throw new BundleError('bad_x5c', `keys[${index}].x5c[0] is not base64`);
  }
  try {
    return new X509Certificate(Buffer.from(b64, 'base64'));
  } catch (cause) {
    throw new BundleError('bad_x5c', `keys[${index}].x5c[0] is not a DER certificate`, { cause });
  }
}

export interface X509BundleOptions {
  sequence?: number;
  refreshHint?: number;
}

/** The X.509 authorities of one trust domain. May be empty: such a bundle trusts nothing. */
export class X509Bundle {
  readonly trustDomain: TrustDomain;
  readonly authorities: readonly X509Certificate[];
  /** spiffe_sequence, when the bundle came from (or is meant for) the SPIFFE JWKS format. */
  readonly sequence: number | undefined;
  /** spiffe_refresh_hint in seconds. */
  readonly refreshHint: number | undefined;

  constructor(td: TrustDomain | string, authorities: Iterable<X509Certificate>, opts: X509BundleOptions = {}) {
    this.trustDomain = toTrustDomain(td);
    const seen = new Set<string>();
    const unique: X509Certificate[] = [];
    for (const cert of authorities) {
      if (seen.has(cert.fingerprint256)) continue;
      seen.add(cert.fingerprint256);
      unique.push(cert);
    }
    this.authorities = Object.freeze(unique);
    this.sequence = opts.sequence;
    this.refreshHint = opts.refreshHint;
  }

  static fromPem(td: TrustDomain | string, pem: string): X509Bundle {
    try {
      return new X509Bundle(td, parseCertificatesPem(pem));
    } catch (cause) {
      if (cause instanceof SvidError) throw new BundleError('pem', cause.message, { cause });
      throw cause;
    }
  }

  static fromJwks(td: TrustDomain | string, json: string | object): X509Bundle {
    let doc: unknown = json;
    if (typeof json === 'string') {
      try {
        doc = JSON.parse(json);
      } catch (cause) {
        throw new BundleError('json', 'bundle is not valid JSON', { cause });
      }
    }
    if (!isObject(doc)) throw new BundleError('not_object', 'SPIFFE bundle must be a JSON object');
    if (!Array.isArray(doc.keys)) throw new BundleError('missing_keys', 'SPIFFE bundle has no "keys" array');
    const authorities: X509Certificate[] = [];
    doc.keys.forEach((key: unknown, i: number) => {
      const cert = authorityFromJwk(key, i);
      if (cert) authorities.push(cert);
    });
    return new X509Bundle(td, authorities, {
      sequence: optionalInteger(doc.spiffe_sequence, 'bad_sequence', 'spiffe_sequence'),
      refreshHint: optionalInteger(doc.spiffe_refresh_hint, 'bad_refresh_hint', 'spiffe_refresh_hint'),
    });
  }

  /** A JSON object is a SPIFFE bundle (JWKS); anything else is treated as PEM. */
  static parse(td: TrustDomain | string, content: string): X509Bundle {
    const trimmed = content.trim();
    if (trimmed.startsWith('{')) {
      let doc: unknown;
      try {
        doc = JSON.parse(trimmed);
      } catch (cause) {
        throw new BundleError('json', 'bundle looks like JSON but does not parse', { cause });
      }
      return X509Bundle.fromJwks(td, doc as object);
    }
    return X509Bundle.fromPem(td, content);
  }

  toPem(): string {
    return this.authorities.map((c) => c.toString()).join('');
  }

  toJwks(): object {
    const keys = this.authorities.map((cert) => ({
      ...cert.publicKey.export({ format: 'jwk' }),
      use: X509_USE,
      x5c: [cert.raw.toString('base64')],
    }));
    const out: Record<string, unknown> = { keys };
    if (this.sequence !== undefined) out.spiffe_sequence = this.sequence;
    if (this.refreshHint !== undefined) out.spiffe_refresh_hint = this.refreshHint;
    return out;
  }
}

/** Bundles keyed by trust domain; immutable so a snapshot can be shared by in-flight handshakes. */
export class BundleSet {
  private readonly byName: ReadonlyMap<string, X509Bundle>;

  /** A later bundle for the same trust domain replaces an earlier one. */
  constructor(bundles: Iterable<X509Bundle> = []) {
    const m = new Map<string, X509Bundle>();
    for (const b of bundles) m.set(b.trustDomain.name, b);
    this.byName = m;
  }

  get(td: TrustDomain | string): X509Bundle | undefined {
    if (td instanceof TrustDomain) return this.byName.get(td.name);
    try {
      return this.byName.get(TrustDomain.parse(td).name);
    } catch {
      return undefined;
    }
  }

  trustDomains(): TrustDomain[] {
    return [...this.byName.values()].map((b) => b.trustDomain);
  }

  with(b: X509Bundle): BundleSet {
    return new BundleSet([...this.byName.values(), b]);
  }

  /**
   * Every authority of every trust domain, e.g. for a TLS CA list sent as a client-certificate
   * hint. Never use this pool to verify an SVID: trust must stay per trust domain.
   */
  allAuthorities(): X509Certificate[] {
    return [...this.byName.values()].flatMap((b) => [...b.authorities]);
  }
}
