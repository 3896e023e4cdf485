// Part 3: how long a revocation takes to cut many live connections of the revoked agent.
//
// One real `sigil run` with an inbound listener (policy.allow for the bench trust domain's
// agents; no NATS: the admin API applies the entry locally — with NATS, Revocations.apply runs
// the same cut before publishing). Per round a new agent opens `conns` mTLS connections to it
// (handshakes first, at concurrency 16, then one GET per connection answered 200, so every
// connection is verified, admitted and kept alive), then the bench POSTs the agent's
// revocation to the admin API and times until all `conns` client sockets have emitted 'close'.
//
// Side by side, in alternating rounds, the same number of connections closed without Sigil's
// revocation machinery:
//   - raw node https server (baseline): a plain https server with mTLS in its own process (the
//     same SVID, CA check and keep-alive as Sigil's inbound) whose control port destroys every
//     open connection on `POST /close-all`;
//   - sigil shutdown: a fresh sidecar with the same config holding the connections gets
//     SIGTERM; its drain closes the idle keep-alive connections (the sidecar closing them "on
//     its own");
//   - client destroys: the bench process destroys its own sockets (connections to the raw
//     server): the floor, the client's cost of 1000 'close' events and nothing else.
// The sidecars' stdout (one JSON log line per cut connection) goes to a file, not to a pipe
// this process would have to read while it is counting closes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TD, fmt, machineLine, makePki, metricTotal, percentile, printTable, serverScript, sleep, spawnServer, writeConfig, type Child } from '../lib.js';
import { getOn, hr, httpJson, msSince, mtlsOpen, pool, svidMinter, spawnQuietSigil, withTimeout, type BenchSvid } from './support.js';

export interface CutOptions {
  conns: number;
  rounds: number;
}

const HANDSHAKE_CONCURRENCY = 16;
const REQUEST_CONCURRENCY = 64;

interface Held {
  closed: Promise<bigint>[];
  destroy(): void;
}

/** `n` mTLS connections as `who`: handshakes, then one GET each (must be 200); kept open. */
async function hold(address: string, who: BenchSvid, n: number): Promise<Held> {
  const sockets: Awaited<ReturnType<typeof mtlsOpen>>[] = new Array(n);
  await pool(n, HANDSHAKE_CONCURRENCY, async (i) => {
    sockets[i] = await mtlsOpen(address, who.ctx);
  });
  let refused = 0;
  await pool(n, REQUEST_CONCURRENCY, async (i) => {
    const r = await getOn(sockets[i]!.socket, '/hold');
    if (r.status !== 200) refused++;
  });
  if (refused > 0) throw new Error(`${refused} of ${n} connections to ${address} were not served before the cut`);
  const early = sockets.filter((s) => s.socket.destroyed).length;
  if (early > 0) throw new Error(`${early} of ${n} connections to ${address} closed before the cut`);
  return { closed: sockets.map((s) => s.closed), destroy: () => sockets.forEach((s) => s.socket.destroy()) };
}

interface Variant {
  name: string;
  baseline?: boolean;
  /** Opens the connections, then returns the trigger and what to do after the measurement. */
  prepare(round: number): Promise<{ held: Held; trigger: () => Promise<unknown>; after?: () => Promise<void> }>;
  all: number[];
  first: number[];
  answered: number[];
}

export async function runCutBench(o: CutOptions): Promise<void> {
  process.stdout.write(
    `\n## revocation (3/3): cutting ${o.conns} live mTLS connections of the revoked agent (${o.rounds} alternating rounds)\n${machineLine()}\n`,
  );
  const pki = await makePki();
  const stops: Array<() => Promise<void>> = [];
  try {
    const upstream = await spawnServer(serverScript('upstream'));
    stops.push(upstream.stop);
    const closer: Child = await spawnServer(fileURLToPath(new URL('./closer-server.js', import.meta.url)), ['--svid', pki.svidB]);
    stops.push(closer.stop);
    const config = await writeConfig(pki.dir, 'sigil-cut.json', {
      trustDomain: TD.name,
      identity: { dev: { caDir: './ca', spiffeId: `spiffe://${TD.name}/agent/holder`, ttl: '1h' } },
      inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${upstream.info.port as number}` },
      policy: { allow: [`spiffe://${TD.name}/agent/*`] },
      admin: { listen: '127.0.0.1:0' },
    });
    const sigil = await spawnQuietSigil(config, join(pki.dir, 'sigil-cut.log'));
    stops.push(sigil.stop);
    const sigilInbound = sigil.ready.inbound as string;
    const sigilAdmin = sigil.ready.admin as string;
    const mint = await svidMinter(pki.caDir);
    const plain = await mint(`spiffe://${TD.name}/agent/conn-client`);
    const closerAddress = closer.info.address as string;
    const closerControl = closer.info.control as string;

    const variant = (name: string, prepare: Variant['prepare'], baseline = false): Variant => ({ name, prepare, baseline, all: [], first: [], answered: [] });
    const variants: Variant[] = [
      variant(
        'raw node https server: POST /close-all → destroy loop (baseline)',
        async () => {
          const held = await hold(closerAddress, plain, o.conns);
          const open = (await httpJson(closerControl, 'GET', '/count')).json?.open;
          if (open !== o.conns) throw new Error(`raw server holds ${open} connections, expected ${o.conns}`);
          return {
            held,
            trigger: async () => {
              const r = await httpJson(closerControl, 'POST', '/close-all');
              if (r.json?.closed !== o.conns) throw new Error(`raw server closed ${r.json?.closed}, expected ${o.conns}`);
            },
          };
        },
        true,
      ),
      variant('sigil: POST /v1/revocations {kind: agent} → cut', async (round) => {
        const who = await mint(`spiffe://${TD.name}/agent/holder-client-${round}`);
        const cuts0 = metricTotal((await httpJson(sigilAdmin, 'GET', '/metrics')).text, 'sigil_revocation_cuts_total', { kind: 'connection' });
        const held = await hold(sigilInbound, who, o.conns);
        const open = (await httpJson(sigilAdmin, 'GET', '/status')).json?.connections?.inbound;
        if (open !== o.conns) throw new Error(`sidecar holds ${open} inbound connections, expected ${o.conns}`);
        return {
          held,
          trigger: async () => {
            const r = await httpJson(sigilAdmin, 'POST', '/v1/revocations', { kind: 'agent', value: who.id.toString(), reason: 'bench: cut', by: 'bench' });
            if (r.status !== 201) throw new Error(`POST /v1/revocations → ${r.status} ${r.text}`);
          },
          after: async () => {
            const cuts = metricTotal((await httpJson(sigilAdmin, 'GET', '/metrics')).text, 'sigil_revocation_cuts_total', { kind: 'connection' }) - cuts0;
            if (cuts !== o.conns) throw new Error(`the sidecar counted ${cuts} cut connections, expected ${o.conns}`);
          },
        };
      }),
      variant('sigil shutdown: SIGTERM → drain closes idle connections', async (round) => {
        const s = await spawnQuietSigil(config, join(pki.dir, `sigil-shutdown-${round}.log`));
        stops.push(s.stop);
        const held = await hold(s.ready.inbound as string, plain, o.conns);
        return { held, trigger: async () => void s.child.kill('SIGTERM'), after: () => s.stop() };
      }),
      variant('client destroys its own sockets (floor)', async () => {
        const held = await hold(closerAddress, plain, o.conns);
        return { held, trigger: async () => held.destroy() };
      }),
    ];

    // Warm-up: one small round on the sidecar and the raw server (JIT, TLS session setup paths).
    const warm = await mint(`spiffe://${TD.name}/agent/warm-up`);
    for (const address of [sigilInbound, closerAddress]) (await hold(address, warm, 50)).destroy();
    await sleep(200);

    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 === 0 ? variants : [...variants].reverse();
      for (const v of order) {
        const { held, trigger, after } = await v.prepare(r);
        await sleep(100);
        const t0 = hr();
        const answered = trigger().then(() => hr());
        const closed = await withTimeout(Promise.all(held.closed), 30_000, `${v.name}: all ${o.conns} connections closed`);
        const t1 = await answered;
        v.all.push(msSince(t0, closed.reduce((a, b) => (b > a ? b : a))));
        v.first.push(msSince(t0, closed.reduce((a, b) => (b < a ? b : a))));
        v.answered.push(msSince(t0, t1));
        await after?.();
        await sleep(300);
      }
    }

    const base = variants.find((v) => v.baseline)!;
    const med = (xs: number[]): number => percentile([...xs].sort((a, b) => a - b), 50);
    const rows = variants.map((v) => [
      v.name,
      String(v.all.length),
      fmt(med(v.all), 1),
      `${fmt(Math.min(...v.all), 1)}–${fmt(Math.max(...v.all), 1)}`,
      fmt(med(v.first), 2),
      fmt(med(v.answered), 2),
      fmt((med(v.all) * 1000) / o.conns, 1),
      `${fmt(med(v.all) / med(base.all), 2)}x`,
    ]);
    process.stdout.write(
      `${o.conns} connections per round, each verified and served one GET (200) first; times from just before the trigger is sent until the client sockets emit 'close'\n`,
    );
    printTable(['variant', 'rounds', `all ${o.conns} closed p50 ms`, 'min–max ms', 'first close p50 ms', 'trigger answered p50 ms', 'µs per connection', 'vs raw (p50)'], rows);
    const sig = variants[1]!;
    const cutLines = readFileSync(sigil.log, 'utf8').split('\n').filter((l) => l.includes('"inbound connection cut: revoked"')).length;
    process.stdout.write(
      `ratio sigil revocation / raw destroy loop, all closed: ${fmt(med(sig.all) / med(base.all), 2)}x (+${fmt(med(sig.all) - med(base.all), 1)} ms for ${o.conns} connections); ` +
        `the sidecar logged ${cutLines} "inbound connection cut: revoked" lines (expected ${o.conns * o.rounds})\n`,
    );
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await pki.cleanup();
  }
}
