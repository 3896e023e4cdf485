// Outbound routing: which peer an agent's request is for, where that peer lives and which
// SPIFFE ID it must prove. Route hosts match case-insensitively; the port only matters if the
// route names one.
import type { RouteConfig } from '../config/index.js';
import { SpiffeIdPattern } from '../spiffe/index.js';

export interface Route {
  host: string;
  port?: number;
  address: { host: string; port: number };
  expected: SpiffeIdPattern;
  /** WebSocket streams on this route carry signed frames (src/bus/frames.ts). */
  signFrames: boolean;
  /** Exchange the agent's bearer token at the broker for this route's peer (see ExchangeClient). */
  exchange?: { scope?: string[] };
  /** Stable key for the connection pool. */
  key: string;
}

export class RouteTable {
  private readonly routes: Route[];

  constructor(configs: RouteConfig[]) {
    this.routes = configs.map((r, i) => {
      let expected: SpiffeIdPattern;
      try {
        expected = SpiffeIdPattern.parse(r.spiffeId);
      } catch (err) {
        throw new Error(`outbound.routes[${i}].spiffeId: ${(err as Error).message}`);
      }
      return { host: r.host.toLowerCase(), port: r.port, address: r.address, expected, signFrames: r.signFrames === true, ...(r.exchange ? { exchange: r.exchange } : {}), key: `route${i}` };
    });
  }

  /** `authority` is a Host header or URL authority: `name`, `name:port`, `[v6]:port`. */
  resolve(authority: string): Route | undefined {
    const { host, port } = splitAuthority(authority);
    // A route naming the port is more specific than one that does not, whatever the order.
    return (
      this.routes.find((r) => r.host === host && r.port !== undefined && r.port === port) ??
      this.routes.find((r) => r.host === host && r.port === undefined)
    );
  }

  all(): readonly Route[] {
    return this.routes;
  }
}

export function splitAuthority(authority: string): { host: string; port?: number } {
  const lower = authority.trim().toLowerCase();
  const m = /^(\[[^\]]+\]|[^:]*)(?::(\d+))?$/.exec(lower);
  if (!m) return { host: lower };
  return { host: m[1]!, port: m[2] === undefined ? undefined : Number(m[2]) };
}
