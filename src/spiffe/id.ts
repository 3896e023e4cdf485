import { SpiffeIdError } from './errors.js';

// Limits from SPIFFE-ID.md §2.1/§2.3: a trust domain name fits a DNS name (255 bytes) and an ID
// must fit the smallest URI limit common implementations support (2048 bytes).
export const MAX_SPIFFE_ID_BYTES = 2048;
export const MAX_TRUST_DOMAIN_BYTES = 255;

const SCHEME = 'spiffe://';
const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/;

function byteLength(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

function fail(problem: string, message: string): never {
  throw new SpiffeIdError(problem, message);
}

function validateTrustDomainName(name: string): void {
  if (name.length === 0) fail('missing_trust_domain', 'SPIFFE ID has no trust domain');
  // Authority components other than the host are forbidden, so name them precisely rather than
  // reporting them as a bad character.
  if (name.includes('@')) fail('userinfo', 'trust domain must not contain userinfo');
  if (name.includes(':')) fail('port', 'trust domain must not contain a port');
  if (name.includes('%')) fail('percent_encoding', 'percent-encoding is not allowed in a SPIFFE ID');
  if (!TRUST_DOMAIN_CHARS.test(name)) {
    fail('bad_trust_domain_char', 'trust domain may only contain lowercase letters, digits, ".", "-" and "_"');
  }
  if (byteLength(name) > MAX_TRUST_DOMAIN_BYTES) {
    fail('trust_domain_too_long', `trust domain exceeds ${MAX_TRUST_DOMAIN_BYTES} bytes`);
  }
}

/** Validates a path ('' or '/seg/seg') and returns it unchanged. */
export function validatePath(path: string): string {
  if (path === '') return path;
  if (path.includes('%')) fail('percent_encoding', 'percent-encoding is not allowed in a SPIFFE ID');
  if (path.endsWith('/')) fail('trailing_slash', 'SPIFFE ID path must not end with "/"');
  const segments = path.slice(1).split('/');
  for (const seg of segments) {
    if (seg === '') fail('empty_segment', 'SPIFFE ID path has an empty segment');
    if (seg === '.' || seg === '..') fail('dot_segment', 'SPIFFE ID path must not contain "." or ".." segments');
    if (!SEGMENT_CHARS.test(seg)) {
      fail('bad_path_char', 'SPIFFE ID path segments may only contain letters, digits, ".", "-" and "_"');
    }
  }
  return path;
}

/** Splits a candidate ID into trust-domain name and path after scheme/length/query checks. */
export function splitId(s: unknown): { name: string; path: string } {
  if (typeof s !== 'string') fail('not_a_string', 'SPIFFE ID must be a string');
  if (s.length === 0) fail('empty', 'SPIFFE ID is empty');
  if (byteLength(s) > MAX_SPIFFE_ID_BYTES) fail('too_long', `SPIFFE ID exceeds ${MAX_SPIFFE_ID_BYTES} bytes`);
  if (!s.startsWith(SCHEME)) fail('wrong_scheme', 'SPIFFE ID must start with "spiffe://"');
  const rest = s.slice(SCHEME.length);
  // Query and fragment are checked before splitting so that "spiffe://td?x" names the real problem.
  if (rest.includes('?')) fail('query', 'SPIFFE ID must not contain a query');
  if (rest.includes('#')) fail('fragment', 'SPIFFE ID must not contain a fragment');
  const slash = rest.indexOf('/');
  const name = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '' : rest.slice(slash);
  validateTrustDomainName(name);
  return { name, path };
}

export class TrustDomain {
  private constructor(readonly name: string) {}

  /**
   * Accepts a bare name ("example.org") or any valid SPIFFE ID, whose trust domain is taken, so
   * configuration can name a trust domain either way.
   */
  static parse(nameOrId: string): TrustDomain {
    if (typeof nameOrId === 'string' && nameOrId.startsWith(SCHEME)) {
      return SpiffeId.parse(nameOrId).trustDomain;
    }
    if (typeof nameOrId !== 'string') fail('not_a_string', 'trust domain must be a string');
    if (nameOrId.includes('/')) fail('bad_trust_domain_char', 'trust domain name must not contain "/"');
    validateTrustDomainName(nameOrId);
    return new TrustDomain(nameOrId);
  }

  idString(): string {
    return SCHEME + this.name;
  }

  equals(o: unknown): boolean {
    return o instanceof TrustDomain && o.name === this.name;
  }

  toString(): string {
    return this.name;
  }
}

export class SpiffeId {
  /**
   * The URI, formatted once: an ID is immutable, and the proxies format the peer's and their
   * own on every request (policy lookups, metric labels, identity headers). A private field,
   * so it is not part of the object's JSON or enumerable shape.
   */
  readonly #uri: string;

  private constructor(
    readonly trustDomain: TrustDomain,
    readonly path: string,
  ) {
    this.#uri = trustDomain.idString() + path;
  }

  static parse(s: string): SpiffeId {
    const { name, path } = splitId(s);
    validatePath(path);
    return new SpiffeId(TrustDomain.parse(name), path);
  }

  toString(): string {
    return this.#uri;
  }

  /** Exact comparison: paths are case-sensitive and never normalised. */
  equals(o: unknown): boolean {
    return o instanceof SpiffeId && o.trustDomain.equals(this.trustDomain) && o.path === this.path;
  }

  /** True for the trust-domain ID itself (no path); such an ID cannot name a workload. */
  isRoot(): boolean {
    return this.path === '';
  }

  segments(): string[] {
    return this.path === '' ? [] : this.path.slice(1).split('/');
  }
}
