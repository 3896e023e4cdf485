/**
 * A loaded config as something to show a person (`sigil config check`): addresses as
 * `host:port`, and every secret a value could carry replaced. Config values hold no secrets by
 * design (credentials are referenced by file, variable or URL, never inlined), but URLs can:
 * `nats://user:password@host`, `https://vault/v1/x?token=…`. The user name, password, query
 * values and fragment are redacted.
 */
import type { HostPort } from './address.js';

export const REDACTED = '[redacted]';

/** host:port, IPv6 in brackets. */
export function formatHostPort(a: HostPort): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** A URL's user info, query values and fragment replaced; text that is not an absolute URL is returned as is. */
export function redactUrl(text: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) return text;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return text;
  }
  let changed = false;
  // A user name can be the credential itself (`https://<token>@host`), so both parts go.
  if (url.username !== '') {
    url.username = REDACTED;
    changed = true;
  }
  if (url.password !== '') {
    url.password = REDACTED;
    changed = true;
  }
  if (url.hash !== '') {
    url.hash = REDACTED; // `#access_token=…`
    changed = true;
  }
  for (const key of [...new Set(url.searchParams.keys())]) {
    url.searchParams.set(key, REDACTED);
    changed = true;
  }
  // Unchanged URLs keep their exact spelling (no added trailing slash).
  return changed ? url.toString().replaceAll(encodeURIComponent(REDACTED), REDACTED) : text;
}

/** A JSON-safe, display-ready copy: HostPort objects as strings, URL secrets redacted. */
export function effectiveView(value: unknown): unknown {
  if (typeof value === 'string') return redactUrl(value);
  if (Array.isArray(value)) return value.map(effectiveView);
  if (typeof value === 'object' && value !== null) {
    if (isHostPort(value)) return formatHostPort(value);
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, effectiveView(v)]));
  }
  return value;
}

function isHostPort(v: object): v is HostPort {
  const keys = Object.keys(v);
  return keys.length === 2 && typeof (v as HostPort).host === 'string' && typeof (v as HostPort).port === 'number';
}
