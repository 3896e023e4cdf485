import { isIP, isIPv6 } from 'node:net';

export interface HostPort {
  host: string;
  port: number;
}

// Host names: letters, digits, '.', '-', '_' (no scheme, path, user info or whitespace).
const HOSTNAME = /^[A-Za-z0-9._-]+$/;
const PORT = /^\d{1,5}$/;

export function addressErrorMessage(s: unknown, detail = 'expected host:port'): string {
  return `invalid address ${JSON.stringify(s)} (${detail})`;
}

/**
 * Splits `host[:port]` / `[v6][:port]`. Returns undefined when the shape is wrong.
 * `port` is the raw text after the colon, or undefined when there is none.
 */
export function splitHostPort(s: string): { host: string; port: string | undefined } | undefined {
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) return undefined;
    const host = s.slice(1, close);
    const rest = s.slice(close + 1);
    if (!isIPv6(host)) return undefined;
    if (rest === '') return { host, port: undefined };
    if (!rest.startsWith(':')) return undefined;
    return { host, port: rest.slice(1) };
  }
  const colon = s.indexOf(':');
  if (colon < 0) return HOSTNAME.test(s) ? { host: s, port: undefined } : undefined;
  // More than one colon without brackets: an unbracketed IPv6 literal, ambiguous.
  if (s.indexOf(':', colon + 1) >= 0) return undefined;
  const host = s.slice(0, colon);
  if (!HOSTNAME.test(host)) return undefined;
  return { host, port: s.slice(colon + 1) };
}

/** Parses a port number text; undefined if not a decimal integer within [min, 65535]. */
export function parsePort(text: string, min: number): number | undefined {
  if (!PORT.test(text)) return undefined;
  const n = Number(text);
  return n >= min && n <= 65535 ? n : undefined;
}

/**
 * Parses `host:port` where the port is required and within [minPort, 65535].
 * IPv6 literals must be bracketed (`[::1]:8443`); the returned host has no brackets.
 */
export function parseHostPortWithMin(s: string, minPort: number): HostPort {
  if (typeof s !== 'string') throw new Error(addressErrorMessage(s));
  const parts = splitHostPort(s);
  if (!parts || parts.port === undefined || parts.host === '') throw new Error(addressErrorMessage(s));
  const port = parsePort(parts.port, minPort);
  if (port === undefined) {
    throw new Error(
      PORT.test(parts.port)
        ? addressErrorMessage(s, `port must be ${minPort}-65535`)
        : addressErrorMessage(s),
    );
  }
  return { host: parts.host, port };
}

/** `127.0.0.1:0`, `[::1]:8443`, `localhost:80`; port 0-65535 (0 = ephemeral). */
export function parseHostPort(s: string): HostPort {
  return parseHostPortWithMin(s, 0);
}

/** Hosts that bind every interface (of one family, or both for `::`). */
export function listenersConflict(a: HostPort, b: HostPort): boolean {
  if (a.port === 0 || b.port === 0 || a.port !== b.port) return false;
  const ha = a.host.toLowerCase();
  const hb = b.host.toLowerCase();
  if (ha === hb) return true;
  if (ha === '::' || hb === '::') return true;
  if (ha === '0.0.0.0') return isIP(hb) !== 6;
  if (hb === '0.0.0.0') return isIP(ha) !== 6;
  return false;
}

/** A listener host that only this machine can reach (127.0.0.1, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  return ['127.0.0.1', '::1', '[::1]', 'localhost'].includes(host.toLowerCase());
}
