// Turns Workload API responses into Sigil's identity types. Pure: every check the spec asks of
// a client happens here, and a response that fails any of them is refused as a whole, with the
// field that was wrong, so the caller can keep its last good state.
import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { JSONWebKeySet } from 'jose';
import {
  BundleSet,
  certificatesFromDerConcat,
  SpiffeId,
  TrustDomain,
  verifyX509Svid,
  X509Bundle,
} from '../../spiffe/index.js';
import { svidFromParts } from '../svid.js';
import type { X509Svid } from '../types.js';
import type { JwtBundlesResponse, JwtSvidResponse, X509BundlesResponse, X509SvidMessage, X509SvidResponse } from './proto.js';

/** A response the client must not act on (Workload API §5: discard, keep the last good state). */
export class WorkloadApiResponseError extends Error {
  readonly code = 'workload_api_response_invalid';
  constructor(readonly field: string, problem: string) {
    super(`${field}: ${problem}`);
  }
}

export interface WorkloadX509Svid extends X509Svid {
  hint: string;
  /** The bundle of the SVID's own trust domain, as sent with it. */
  bundle: X509Bundle;
}

/**
 * A well-formed response that does not offer the SVID this workload presents (the selected one
 * was redacted, or the default is outside the configured trust domain): the spec says to stop
 * using it, so this withdraws the identity rather than keeping the last one.
 */
export class WorkloadApiSelectionError extends Error {
  readonly code = 'workload_api_svid_not_offered';
}

export interface SvidSelector {
  spiffeId?: string;
  hint?: string;
}

/** What one FetchX509SVID response means for this workload. */
export interface X509Identity {
  svid: WorkloadX509Svid;
  /** The selected SVID's own trust domain bundle plus every federated bundle for another domain. */
  bundles: BundleSet;
}

const isEmpty = (b: Buffer | undefined): boolean => b === undefined || b.length === 0;

/**
 * Checks every SVID for its mandatory fields (any missing: the whole response is discarded),
 * picks the one this workload presents, and validates that one fully (chain, key, ID, bundle);
 * SVIDs it does not use are not parsed further, so one of them expiring cannot hold up a
 * rotation or a bundle change. Bundles absent from the response are absent from the result:
 * dropping one from the stream withdraws that trust.
 */
export function parseX509SvidResponse(response: X509SvidResponse, selector: SvidSelector, trustDomain: TrustDomain): X509Identity {
  if (!response.svids || response.svids.length === 0) throw new WorkloadApiResponseError('svids', 'is empty');
  response.svids.forEach((m, i) => requireFields(m, `svids[${i}]`));
  const index = selectIndex(response.svids, selector);
  const svid = parseSvid(response.svids[index]!, `svids[${index}]`);
  if (!svid.id.trustDomain.equals(trustDomain)) {
    throw new WorkloadApiSelectionError(`the selected SVID ${svid.id} is not in the configured trust domain ${trustDomain.name}`);
  }
  // Our own domain's bundle comes with the SVID, never from the federation map.
  const federated = parseBundleMap(response.federated_bundles ?? {}, 'federated_bundles', false).filter((b) => !b.trustDomain.equals(trustDomain));
  return { svid, bundles: new BundleSet([...federated, svid.bundle]) };
}

function requireFields(message: X509SvidMessage, field: string): void {
  if (!message.spiffe_id) throw new WorkloadApiResponseError(`${field}.spiffe_id`, 'is missing');
  if (isEmpty(message.x509_svid)) throw new WorkloadApiResponseError(`${field}.x509_svid`, 'is missing');
  if (isEmpty(message.x509_svid_key)) throw new WorkloadApiResponseError(`${field}.x509_svid_key`, 'is missing');
  if (isEmpty(message.bundle)) throw new WorkloadApiResponseError(`${field}.bundle`, 'is missing');
}

/** The default SVID is the first; a configured SPIFFE ID and/or hint picks another. */
function selectIndex(svids: X509SvidMessage[], selector: SvidSelector): number {
  if (selector.spiffeId === undefined && selector.hint === undefined) return 0;
  const index = svids.findIndex(
    (m) => (selector.spiffeId === undefined || m.spiffe_id === selector.spiffeId) && (selector.hint === undefined || (m.hint ?? '') === selector.hint),
  );
  if (index < 0) {
    const wanted = [selector.spiffeId && `SPIFFE ID ${selector.spiffeId}`, selector.hint !== undefined && `hint ${JSON.stringify(selector.hint)}`].filter(Boolean).join(' and ');
    const offered = svids.map((m) => (m.hint ? `${m.spiffe_id} (hint ${JSON.stringify(m.hint)})` : m.spiffe_id)).join(', ');
    throw new WorkloadApiSelectionError(`no SVID with ${wanted} is offered (offered: ${offered})`);
  }
  return index;
}

function parseSvid(message: X509SvidMessage, field: string): WorkloadX509Svid {
  if (!message.spiffe_id) throw new WorkloadApiResponseError(`${field}.spiffe_id`, 'is missing');
  if (isEmpty(message.x509_svid)) throw new WorkloadApiResponseError(`${field}.x509_svid`, 'is missing');
  if (isEmpty(message.x509_svid_key)) throw new WorkloadApiResponseError(`${field}.x509_svid_key`, 'is missing');
  if (isEmpty(message.bundle)) throw new WorkloadApiResponseError(`${field}.bundle`, 'is missing');
  let claimed: SpiffeId;
  try {
    claimed = SpiffeId.parse(message.spiffe_id);
  } catch (err) {
    throw new WorkloadApiResponseError(`${field}.spiffe_id`, (err as Error).message);
  }
  let certificates;
  try {
    certificates = certificatesFromDerConcat(message.x509_svid);
  } catch (err) {
    throw new WorkloadApiResponseError(`${field}.x509_svid`, (err as Error).message);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: message.x509_svid_key, format: 'der', type: 'pkcs8' });
  } catch {
    throw new WorkloadApiResponseError(`${field}.x509_svid_key`, 'is not an unencrypted PKCS#8 DER private key');
  }
  let svid: X509Svid;
  try {
    svid = svidFromParts(certificates, key, claimed.trustDomain);
  } catch (err) {
    throw new WorkloadApiResponseError(`${field}.x509_svid`, (err as Error).message);
  }
  if (!svid.id.equals(claimed)) {
    throw new WorkloadApiResponseError(`${field}.spiffe_id`, `${claimed} is not the SVID's own ID ${svid.id}`);
  }
  let bundle: X509Bundle;
  try {
    bundle = new X509Bundle(claimed.trustDomain, certificatesFromDerConcat(message.bundle));
  } catch (err) {
    throw new WorkloadApiResponseError(`${field}.bundle`, (err as Error).message);
  }
  try {
    verifyX509Svid(svid.certificates, new BundleSet([bundle]));
  } catch (err) {
    throw new WorkloadApiResponseError(`${field}.x509_svid`, `does not verify against its bundle: ${(err as Error).message}`);
  }
  return { ...svid, hint: message.hint ?? '', bundle };
}

/** Map keys are trust domain SPIFFE IDs (`spiffe://td`); bare names are accepted as well. */
function parseTrustDomainKey(key: string, field: string): TrustDomain {
  try {
    return TrustDomain.parse(key.startsWith('spiffe://') ? key.slice('spiffe://'.length) : key);
  } catch (err) {
    throw new WorkloadApiResponseError(`${field}[${JSON.stringify(key)}]`, `is not a trust domain: ${(err as Error).message}`);
  }
}

function parseBundleMap(map: Record<string, Buffer>, field: string, required: boolean): X509Bundle[] {
  const entries = Object.entries(map);
  if (required && entries.length === 0) throw new WorkloadApiResponseError(field, 'is empty');
  return entries.map(([key, der]) => {
    const td = parseTrustDomainKey(key, field);
    if (isEmpty(der)) throw new WorkloadApiResponseError(`${field}[${JSON.stringify(key)}]`, 'is empty');
    try {
      return new X509Bundle(td, certificatesFromDerConcat(der));
    } catch (err) {
      throw new WorkloadApiResponseError(`${field}[${JSON.stringify(key)}]`, (err as Error).message);
    }
  });
}

export function parseX509BundlesResponse(response: X509BundlesResponse): BundleSet {
  return new BundleSet(parseBundleMap(response.bundles ?? {}, 'bundles', true));
}

/** JWT bundles: one JWK Set per trust domain (keys with `use: jwt-svid`). */
export function parseJwtBundlesResponse(response: JwtBundlesResponse): Map<string, JSONWebKeySet> {
  const entries = Object.entries(response.bundles ?? {});
  if (entries.length === 0) throw new WorkloadApiResponseError('bundles', 'is empty');
  const out = new Map<string, JSONWebKeySet>();
  for (const [key, json] of entries) {
    const field = `bundles[${JSON.stringify(key)}]`;
    const td = parseTrustDomainKey(key, 'bundles');
    if (isEmpty(json)) throw new WorkloadApiResponseError(field, 'is empty');
    let doc: unknown;
    try {
      doc = JSON.parse(json.toString('utf8'));
    } catch {
      throw new WorkloadApiResponseError(field, 'is not JSON');
    }
    if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) {
      throw new WorkloadApiResponseError(field, 'is not a JWK Set (no "keys" array)');
    }
    // Only JWT-SVID signing keys; an x509-svid authority in the same document is not a JWT key.
    const keys = ((doc as JSONWebKeySet).keys ?? []).filter((k) => typeof k === 'object' && k !== null && (k.use === undefined || k.use === 'jwt-svid'));
    out.set(td.name, { keys });
  }
  return out;
}

export interface JwtSvid {
  spiffeId: SpiffeId;
  token: string;
  hint: string;
}

export function parseJwtSvidResponse(response: JwtSvidResponse): JwtSvid[] {
  if (!response.svids || response.svids.length === 0) throw new WorkloadApiResponseError('svids', 'is empty');
  return response.svids.map((m, i) => {
    if (!m.spiffe_id) throw new WorkloadApiResponseError(`svids[${i}].spiffe_id`, 'is missing');
    if (!m.svid) throw new WorkloadApiResponseError(`svids[${i}].svid`, 'is missing');
    let spiffeId: SpiffeId;
    try {
      spiffeId = SpiffeId.parse(m.spiffe_id);
    } catch (err) {
      throw new WorkloadApiResponseError(`svids[${i}].spiffe_id`, (err as Error).message);
    }
    return { spiffeId, token: m.svid, hint: m.hint ?? '' };
  });
}
