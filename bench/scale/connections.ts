// Memory per open connection: how a sidecar's resident memory grows with the verified mTLS
// connections it holds (pooled connections of peer sidecars, long-lived agent sessions).
//
// One real `sigil run` inbound listener and, side by side, the raw Node https server of the
// revocation bench (`closer-server.ts`: the same SVID, client-certificate check, ALPN and
// keep-alive defaults, no SPIFFE checks, no policy, no registry). The bench opens connections
// to each server in turn up to each level (cumulative, at a bounded concurrency), each a full handshake that
// the server verifies (Sigil: SPIFFE path + `connect` authorization, then registered for the
// kill switch), and leaves them idle: no request, so neither server's HTTP timeouts apply
// (headersTimeout only runs once a request has begun; keepAliveTimeout only after a response).
// After a settle time it reads each server's VmRSS and checks that the server counts exactly
// that many open connections (Sigil: /status connections.inbound; raw: its /count).
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TLSSocket } from 'node:tls';
import { TD, fmt, machineLine, makePki, printTable, processMemoryMb, serverScript, sleep, spawnServer, writeConfig } from '../lib.js';
import { httpJson, mtlsOpen, pool, spawnQuietSigil, svidMinter } from '../revocation/support.js';

export interface ConnectionsOptions {
  /** Cumulative numbers of open connections at which memory is read. */
  levels: number[];
  /** Wait after the last connection of a level before reading memory (lets allocations settle). */
  settleMs: number;
}

const HANDSHAKE_CONCURRENCY = 16;
const WARMUP_CONNECTIONS = 50;
const MIB = 1024 * 1024;

interface Server {
  name: string;
  address: string;
  pid: number;
  /** How many open connections the server itself counts. */
  count(): Promise<number>;
  sockets: TLSSocket[];
  rss0: number;
  rss: number[];
}

export async function runConnectionsCurve(o: ConnectionsOptions): Promise<void> {
  process.stdout.write(
    `\n### idle connections: server resident memory by open verified mTLS connections (levels ${o.levels.join(' / ')}, concurrency ${HANDSHAKE_CONCURRENCY}, ${o.settleMs} ms settle)\n${machineLine()}\n`,
  );
  const pki = await makePki();
  const stops: Array<() => Promise<void>> = [];
  const servers: Server[] = [];
  try {
    const upstream = await spawnServer(serverScript('upstream'));
    stops.push(upstream.stop);
    const raw = await spawnServer(fileURLToPath(new URL('../revocation/closer-server.js', import.meta.url)), ['--svid', pki.svidB]);
    stops.push(raw.stop);
    const sigil = await spawnQuietSigil(
      await writeConfig(pki.dir, 'sigil-idle.json', {
        trustDomain: TD.name,
        identity: { dev: { caDir: './ca', spiffeId: `spiffe://${TD.name}/agent/holder`, ttl: '1h' } },
        inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${upstream.info.port as number}` },
        policy: { allow: [`spiffe://${TD.name}/agent/*`] },
        admin: { listen: '127.0.0.1:0' },
      }),
      join(pki.dir, 'sigil-idle.log'),
    );
    stops.push(sigil.stop);
    const admin = sigil.ready.admin as string;
    const control = raw.info.control as string;
    servers.push(
      { name: 'raw node https server (baseline)', address: raw.info.address as string, pid: raw.pid, count: async () => Number((await httpJson(control, 'GET', '/count')).json?.open), sockets: [], rss0: 0, rss: [] },
      { name: 'sigil inbound', address: sigil.ready.inbound as string, pid: sigil.child.pid!, count: async () => Number((await httpJson(admin, 'GET', '/status')).json?.connections?.inbound), sockets: [], rss0: 0, rss: [] },
    );
    const client = await (await svidMinter(pki.caDir))(`spiffe://${TD.name}/agent/idle-client`);
    const open = async (s: Server, n: number): Promise<void> => {
      const start = s.sockets.length;
      s.sockets.length = start + n;
      await pool(n, HANDSHAKE_CONCURRENCY, async (i) => {
        s.sockets[start + i] = (await mtlsOpen(s.address, client.ctx)).socket;
      });
    };
    const expectCount = async (s: Server, n: number): Promise<void> => {
      const counted = await s.count();
      if (counted !== n) throw new Error(`${s.name} counts ${counted} open connections, expected ${n}`);
      const closed = s.sockets.filter((x) => x.destroyed).length;
      if (closed > 0) throw new Error(`${closed} connections to ${s.name} closed while idle`);
    };

    // Warm-up: code paths loaded and JIT-compiled, first allocations made; then back to zero.
    for (const s of servers) {
      await open(s, WARMUP_CONNECTIONS);
      for (const x of s.sockets.splice(0)) x.destroy();
    }
    await sleep(o.settleMs);
    for (const s of servers) {
      await expectCount(s, 0);
      s.rss0 = processMemoryMb(s.pid).rss * MIB;
    }

    // One server at a time: both at 10k would need more descriptors than this process may hold.
    for (const s of servers) {
      let held = 0;
      for (const level of o.levels) {
        await open(s, level - held);
        held = level;
        await sleep(o.settleMs);
        await expectCount(s, level);
        s.rss.push(processMemoryMb(s.pid).rss * MIB);
      }
      for (const x of s.sockets.splice(0)) x.destroy();
    }

    const [base, side] = servers as [Server, Server];
    const perConn = (s: Server, k: number): number => (s.rss[k]! - s.rss0) / o.levels[k]!;
    // A garbage collection between two readings can shrink the heap by more than a few hundred
    // connections add; such a reading says nothing per connection and is shown as a dash.
    const kib = (bytes: number): string => (bytes > 0 ? fmt(bytes / 1024, 1) : '— (GC)');
    const rows = o.levels.map((level, k) => {
      const marginal = (s: Server): string => (k === 0 ? '—' : kib((s.rss[k]! - s.rss[k - 1]!) / (level - o.levels[k - 1]!)));
      const ratio = perConn(side, k) > 0 && perConn(base, k) > 0 ? fmt(perConn(side, k) / perConn(base, k), 2) + 'x' : '—';
      return [
        String(level),
        fmt(base.rss[k]! / MIB, 1), kib(perConn(base, k)), marginal(base),
        fmt(side.rss[k]! / MIB, 1), kib(perConn(side, k)), marginal(side),
        ratio,
      ];
    });
    process.stdout.write(`resident memory before the first connection: raw ${fmt(base.rss0 / MIB, 1)} MiB, sigil ${fmt(side.rss0 / MIB, 1)} MiB\n`);
    printTable(
      ['open connections', 'raw RSS MiB', 'raw KiB/conn', 'raw marginal KiB/conn', 'sigil RSS MiB', 'sigil KiB/conn', 'sigil marginal KiB/conn', 'sigil vs raw per conn'],
      rows,
    );
    process.stdout.write(
      'KiB/conn = (RSS at the level − RSS before the first connection) ÷ connections; marginal = growth since the previous level ÷ the connections added.\n' +
        'Below ~1000 connections the growth is within the heap\'s own swings (tens of MiB, GC timing); read the largest level and the marginal column.\n',
    );
  } finally {
    for (const s of servers) for (const x of s.sockets) x?.destroy();
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
  }
}
