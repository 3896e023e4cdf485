// Where the Workload API listens (SPIFFE Workload Endpoint §4): an RFC 3986 URI, either
// `unix:///absolute/path` (no authority, nothing but scheme and path) or `tcp://IP:port`
// (IP literal, port, nothing else). Anything else is refused here, before a connection is tried,
// so that a typo is a configuration error rather than an endless reconnect loop.
import { isIP } from 'node:net';
import { isAbsolute } from 'node:path';

export type WorkloadEndpoint =
  | { transport: 'unix'; path: string; uri: string }
  | { transport: 'tcp'; host: string; port: number; uri: string };

export class WorkloadEndpointError extends Error {
  readonly code = 'workload_endpoint_invalid';
  constructor(readonly endpoint: string, readonly problem: string) {
    super(`invalid Workload API endpoint ${JSON.stringify(endpoint)}: ${problem}`);
  }
}

export function parseWorkloadEndpoint(text: string): WorkloadEndpoint {
  const fail = (problem: string): never => {
    throw new WorkloadEndpointError(text, problem);
  };
  if (text === '') fail('empty (expected unix:///path/to/agent.sock or tcp://IP:port)');
  if (/\s/.test(text)) fail('contains whitespace');
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):/.exec(text)?.[1];
  if (scheme === undefined) fail('no scheme (expected unix:///path/to/agent.sock or tcp://IP:port)');
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return fail('not a valid URI');
  }
  if (url.search !== '' || text.includes('?')) fail('a query is not allowed');
  if (url.hash !== '' || text.includes('#')) fail('a fragment is not allowed');
  if (url.username !== '' || url.password !== '') fail('user info is not allowed');
  switch (scheme!.toLowerCase()) {
    case 'unix': {
      // `unix:///p` and `unix:/p` have no authority; `unix://host/p` does.
      if (text.slice(5).startsWith('//') && !text.slice(5).startsWith('///')) fail('unix endpoints must not have an authority (write unix:///absolute/path)');
      let path: string;
      try {
        path = decodeURIComponent(url.pathname);
      } catch {
        return fail('the socket path has an invalid percent-encoding');
      }
      if (path.includes('\0')) fail('the socket path contains a NUL byte');
      if (path === '' || path === '/') fail('unix endpoints need the socket path');
      if (!isAbsolute(path)) fail('the socket path must be absolute');
      return { transport: 'unix', path, uri: text };
    }
    case 'tcp': {
      if (!text.slice(4).startsWith('//')) fail('tcp endpoints need an authority (tcp://IP:port)');
      if (url.pathname !== '' && url.pathname !== '/') fail('a path is not allowed on tcp endpoints');
      if (text.slice(6).includes('/')) fail('a path is not allowed on tcp endpoints');
      const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
      if (isIP(host) === 0) fail(`the host must be an IP address, not ${JSON.stringify(url.hostname)}`);
      // URL drops default ports and accepts none; the spec requires an explicit one.
      const portText = /:(\d+)$/.exec(text)?.[1];
      if (portText === undefined) fail('a port is required (tcp://IP:port)');
      const port = Number(portText);
      if (!(port >= 1 && port <= 65535)) fail('the port must be 1-65535');
      return { transport: 'tcp', host, port, uri: text };
    }
    default:
      return fail(`unsupported scheme ${JSON.stringify(scheme)} (expected unix or tcp)`);
  }
}

/** The grpc-js target for an endpoint (`unix:///abs`, `ipv4:1.2.3.4:p`, `ipv6:[::1]:p`). */
export function grpcTarget(endpoint: WorkloadEndpoint): string {
  if (endpoint.transport === 'unix') return `unix://${endpoint.path}`;
  return isIP(endpoint.host) === 6 ? `ipv6:[${endpoint.host}]:${endpoint.port}` : `ipv4:${endpoint.host}:${endpoint.port}`;
}
