import { SpiffeIdError } from './errors.js';
import { SpiffeId, splitId, validatePath } from './id.js';

const ONE = Symbol('one segment');
const REST = Symbol('one or more trailing segments');
type Part = string | typeof ONE | typeof REST;

/**
 * An exact SPIFFE ID, or one whose path uses whole-segment wildcards: `*` matches exactly one
 * segment, a final `**` matches one or more trailing segments. The trust domain is always
 * literal, so a pattern can never widen trust across trust domains.
 */
export class SpiffeIdPattern {
  private constructor(
    private readonly source: string,
    private readonly trustDomain: string,
    private readonly parts: readonly Part[],
  ) {}

  static parse(s: string): SpiffeIdPattern {
    if (typeof s === 'string' && s.startsWith('spiffe://')) {
      const authority = s.slice('spiffe://'.length).split('/', 1)[0] ?? '';
      if (authority.includes('*')) {
        throw new SpiffeIdError('wildcard_trust_domain', 'pattern trust domain must be literal');
      }
    }
    const { name, path } = splitId(s);
    const segments = path === '' ? [] : path.slice(1).split('/');
    const parts: Part[] = segments.map((seg, i) => {
      if (seg === '*') return ONE;
      if (seg === '**') {
        if (i !== segments.length - 1) {
          throw new SpiffeIdError('bad_wildcard', '"**" is only allowed as the last path segment');
        }
        return REST;
      }
      if (seg.includes('*')) {
        throw new SpiffeIdError('bad_wildcard', '"*" and "**" must be whole path segments');
      }
      return seg;
    });
    // Literal segments obey the ordinary ID rules; wildcards are stand-ins for valid segments.
    validatePath(parts.map((p) => '/' + (typeof p === 'string' ? p : 'x')).join(''));
    return new SpiffeIdPattern(s, name, parts);
  }

  /** An unparsable ID string simply does not match. */
  matches(id: SpiffeId | string): boolean {
    let parsed: SpiffeId;
    if (typeof id === 'string') {
      try {
        parsed = SpiffeId.parse(id);
      } catch {
        return false;
      }
    } else {
      parsed = id;
    }
    if (parsed.trustDomain.name !== this.trustDomain) return false;
    const segs = parsed.segments();
    const parts = this.parts;
    const last = parts[parts.length - 1];
    if (last === REST ? segs.length < parts.length : segs.length !== parts.length) return false;
    for (let i = 0; i < parts.length; i++) {
      const p = parts[i];
      if (p === REST) return true;
      if (p !== ONE && p !== segs[i]) return false;
    }
    return true;
  }

  toString(): string {
    return this.source;
  }
}
