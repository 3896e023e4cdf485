// WebSocket message round trips and MCP JSON-RPC calls through the hops, closed loop:
//   direct     client → upstream                                        (no proxy at all)
//   raw pair   client → raw-proxy-out ══mTLS══▶ raw-proxy-in → upstream (after the 101 it only
//              pipes bytes; a JSON-RPC POST is forwarded like any request: nothing is inspected)
//   sigil pair client → sidecar A ══mTLS══▶ sidecar B → upstream        (Cedar policy: both
//              sidecars authorize every WebSocket message and every JSON-RPC call)
// At the end, the sidecars' /metrics must show an allow decision for every message and every
// call sent, or the bench fails: the Sigil row is only meaningful if Sigil did that work.
// Every server is a child process; this process is only the load generator. Paths take turns
// in alternating rounds after a warm-up.
import { writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import WebSocket from 'ws';
import {
  closedLoop,
  type ClosedLoopTarget,
  type OneResult,
  ID_A,
  ID_B,
  TD,
  fmt,
  machineLine,
  metricTotal,
  makePki,
  printTable,
  serverScript,
  sleep,
  spawnServer,
  spawnSigil,
  splitHostPort,
  summarize,
  writeConfig,
} from './lib.js';

export interface ProtocolsOptions {
  /** WebSocket connections, each with one message in flight. */
  wsConnections: number;
  /** Concurrent JSON-RPC callers (keep-alive) in the main JSON-RPC phase. */
  concurrency: number;
  /** Measured seconds per path in the WebSocket and the concurrent JSON-RPC phase, split over `rounds`. */
  seconds: number;
  /** Measured seconds per path of the one-caller JSON-RPC phase. */
  serialSeconds: number;
  warmupSeconds: number;
  rounds: number;
}

const DEFAULTS: ProtocolsOptions = {
  wsConnections: Number(process.env.BENCH_PROTO_WS_CONNECTIONS ?? 16),
  concurrency: Number(process.env.BENCH_PROTO_CONCURRENCY ?? 32),
  seconds: Number(process.env.BENCH_PROTO_SECONDS ?? 5),
  serialSeconds: Number(process.env.BENCH_PROTO_SERIAL_SECONDS ?? 4),
  warmupSeconds: Number(process.env.BENCH_PROTO_WARMUP ?? 1),
  rounds: Number(process.env.BENCH_PROTO_ROUNDS ?? 4),
};

const TOOL = 'echo';

// One file for both sidecars: each asks with its own side's principal and resource.
const POLICY = `
@id("pair") permit (principal in TrustDomain::"${TD.name}", action in [Action::"connect", Action::"http", Action::"websocket.message"], resource in TrustDomain::"${TD.name}");
@id("echo-tool") permit (principal == Agent::"${ID_A}", action == Action::"mcp.tools/call", resource == Tool::"${TOOL}");
`;

/** Plain text, not JSON: Sigil decides `websocket.message` for it and nothing else. */
const MESSAGE = 'bench message 0123456789abcdefgh';

interface Path {
  name: string;
  address: string;
  hostHeader: string;
  /** The proxy processes (not the shared upstream). */
  pids: number[];
}

/** One WebSocket with at most one message in flight: send, then wait for the echo. */
class EchoSocket {
  private waiting: { resolve: (reply: string) => void; reject: (err: Error) => void } | undefined;
  private closed: Error | undefined;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const w = this.waiting;
      this.waiting = undefined;
      w?.resolve(data.toString());
    });
    ws.on('close', (code, reason) => {
      this.closed = new Error(`websocket closed: ${code} ${reason.toString()}`);
      this.waiting?.reject(this.closed);
      this.waiting = undefined;
    });
  }

  static open(path: Path): Promise<EchoSocket> {
    const ws = new WebSocket(`ws://${path.address}/ws`, { headers: { host: path.hostHeader }, perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new EchoSocket(ws)));
      ws.once('error', reject);
    });
  }

  /** Rejects once the stream is closed: a refused or broken stream ends the bench. */
  roundTrip(text: string): Promise<string> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.ws.send(text);
    });
  }

  close(): void {
    this.ws.terminate();
  }
}

interface WsTarget extends ClosedLoopTarget {
  name: string;
  idle: EchoSocket[];
  /** Messages sent, warm-up included (for the check against the sidecars' decisions). */
  sent: number;
}

interface RpcTarget extends ClosedLoopTarget {
  name: string;
  host: string;
  port: number;
  hostHeader: string;
  agent: Agent;
  /** Calls sent, warm-up included; also the next call's id. */
  sent: number;
}

function counters(pids: number[]): ClosedLoopTarget {
  return { requests: 0, errors: 0, elapsedMs: 0, latencies: [], roundRps: [], roundCpu: [], pids, cpuMicros: 0 };
}

async function oneMessage(t: WsTarget): Promise<OneResult> {
  // closedLoop runs one worker per socket, so a worker always finds one idle.
  const socket = t.idle.pop()!;
  t.sent++;
  const t0 = performance.now();
  try {
    const reply = await socket.roundTrip(MESSAGE);
    const ms = performance.now() - t0;
    return reply === MESSAGE ? { ok: true, ms } : { ok: false, ms, error: `unexpected echo: ${reply.slice(0, 100)}` };
  } finally {
    t.idle.push(socket);
  }
}

function oneCall(t: RpcTarget): Promise<OneResult> {
  const id = ++t.sent;
  const body = JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: TOOL, arguments: { text: 'hello' } } });
  return new Promise((resolve) => {
    const t0 = performance.now();
    const req = request(
      {
        host: t.host,
        port: t.port,
        path: '/mcp',
        method: 'POST',
        agent: t.agent,
        // MCP streamable HTTP: the client accepts a JSON answer or an event stream.
        headers: { host: t.hostHeader, 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          const ms = performance.now() - t0;
          const text = Buffer.concat(chunks).toString('utf8');
          const ok = res.statusCode === 200 && isResultFor(text, id);
          resolve(ok ? { ok, ms } : { ok, ms, error: `status ${res.statusCode}: ${text.slice(0, 200)}` });
        });
        res.on('error', (err) => resolve({ ok: false, ms: 0, error: err.message }));
      },
    );
    req.on('error', (err) => resolve({ ok: false, ms: 0, error: err.message }));
    req.end(body);
  });
}

/** A JSON-RPC success answer to call `id` (a refusal would be an `error` member instead). */
function isResultFor(text: string, id: number): boolean {
  try {
    const reply = JSON.parse(text) as { id?: unknown; result?: unknown };
    return reply.id === id && reply.result !== undefined;
  } catch {
    return false;
  }
}

/**
 * Runs `run` on every target, `rounds` times, in alternating order, with a short pause between
 * so that one path's last answers and their garbage do not land in the next one's round.
 */
async function alternate<T>(targets: T[], rounds: number, run: (t: T) => Promise<void>): Promise<void> {
  for (let r = 0; r < rounds; r++) {
    for (const t of r % 2 === 0 ? targets : [...targets].reverse()) {
      await run(t);
      await sleep(100);
    }
  }
}

/** One table per phase; `unit` names what one sample is (a message round trip, a call). */
function report(unit: string, latency: string, targets: Array<ClosedLoopTarget & { name: string }>): void {
  const raw = targets[1]!;
  const rate = (t: ClosedLoopTarget): number => t.requests / (t.elapsedMs / 1000);
  const cpu = (t: ClosedLoopTarget): number => t.cpuMicros / t.requests;
  const rows = targets.map((t) => {
    const s = summarize(t.latencies);
    const proxied = t.pids.length > 0;
    return [
      t.name,
      fmt(rate(t)),
      `${fmt(Math.min(...t.roundRps))}–${fmt(Math.max(...t.roundRps))}`,
      fmt(rate(t) / rate(raw), 2) + 'x',
      fmt(s.median, 2),
      fmt(s.p99, 2),
      proxied ? fmt(cpu(t)) : '—',
      proxied ? fmt(cpu(t) / cpu(raw), 2) + 'x' : '—',
      String(t.errors),
    ];
  });
  printTable(['path', `${unit}s/s`, 'per-round', 'vs raw', `${latency} p50 ms`, `${latency} p99 ms`, `proxy CPU µs/${unit}`, 'CPU vs raw', 'errors'], rows);
}

/** Allow decisions for `action` in a sidecar's sigil_authz_decisions_total. */
async function allowed(admin: string, action: string): Promise<number> {
  return metricTotal(await (await fetch(`http://${admin}/metrics`)).text(), 'sigil_authz_decisions_total', { action, decision: 'allow' });
}

/** Sidecar B (inbound, to the upstream) and A (outbound, routing agent-b to B), both on POLICY. */
async function sigilPair(dir: string, upstreamAddr: string, stops: Array<() => Promise<void>>): Promise<{ address: string; pids: number[]; admins: string[] }> {
  await writeFile(join(dir, 'policy.cedar'), POLICY);
  const b = await spawnSigil(
    await writeConfig(dir, 'sigil-b.json', {
      trustDomain: TD.name,
      identity: { dev: { caDir: './ca', spiffeId: ID_B.toString(), ttl: '1h' } },
      inbound: { listen: '127.0.0.1:0', upstream: `http://${upstreamAddr}` },
      policy: { cedar: './policy.cedar' },
      admin: { listen: '127.0.0.1:0' },
    }),
  );
  stops.push(b.stop);
  const a = await spawnSigil(
    await writeConfig(dir, 'sigil-a.json', {
      trustDomain: TD.name,
      identity: { dev: { caDir: './ca', spiffeId: ID_A.toString(), ttl: '1h' } },
      outbound: { listen: '127.0.0.1:0', routes: [{ host: 'agent-b', address: b.ready.inbound as string, spiffeId: ID_B.toString() }] },
      policy: { cedar: './policy.cedar' },
      admin: { listen: '127.0.0.1:0' },
    }),
  );
  stops.push(a.stop);
  return { address: a.ready.outbound as string, pids: [a.pid, b.pid], admins: [a.ready.admin as string, b.ready.admin as string] };
}

export async function runProtocolsBench(opts: Partial<ProtocolsOptions> = {}): Promise<void> {
  const o = { ...DEFAULTS, ...opts };
  process.stdout.write(
    `\n## protocols: WebSocket round trips (${o.wsConnections} connections) and MCP tools/call over HTTP (concurrency ${o.concurrency}, then 1), closed loop, ${o.rounds} alternating rounds after ${o.warmupSeconds}s warm-up per phase\n`,
  );
  process.stdout.write(machineLine() + '\n');
  const pki = await makePki();
  const stops: Array<() => Promise<void>> = [];
  const sockets: EchoSocket[] = [];
  const agents: Agent[] = [];
  try {
    const upstream = await spawnServer(serverScript('protocol-upstream'));
    stops.push(upstream.stop);
    const upstreamAddr = `127.0.0.1:${upstream.info.port as number}`;

    // The raw pair and the Sigil pair start at once (start-up is not measured).
    const rawPair = async (): Promise<{ address: string; pids: number[] }> => {
      const rawIn = await spawnServer(serverScript('raw-proxy-in'), ['--svid', pki.svidB, '--upstream', upstreamAddr]);
      stops.push(rawIn.stop);
      const rawOut = await spawnServer(serverScript('raw-proxy-out'), ['--svid', pki.svidA, '--target', rawIn.info.address as string, '--expect', ID_B.toString()]);
      stops.push(rawOut.stop);
      return { address: rawOut.info.address as string, pids: [rawOut.pid, rawIn.pid] };
    };
    const [raw, sigil] = await Promise.all([rawPair(), sigilPair(pki.dir, upstreamAddr, stops)]);
    const paths: Path[] = [
      { name: 'direct (no proxy)', address: upstreamAddr, hostHeader: 'upstream', pids: [] },
      { name: 'raw node pair (pipes bytes)', address: raw.address, hostHeader: 'agent-b', pids: raw.pids },
      { name: 'sigil pair (authorizes each)', address: sigil.address, hostHeader: 'agent-b', pids: sigil.pids },
    ];

    // (a) WebSocket round trips. The connections are opened before the warm-up: the handshakes
    // are not part of what is measured.
    const wsTargets: WsTarget[] = [];
    for (const p of paths) {
      const mine = await Promise.all(Array.from({ length: o.wsConnections }, () => EchoSocket.open(p)));
      sockets.push(...mine);
      wsTargets.push({ ...counters(p.pids), name: p.name, idle: mine, sent: 0 });
    }
    for (const t of wsTargets) await closedLoop(t, o.warmupSeconds, o.wsConnections, false, oneMessage);
    await alternate(wsTargets, o.rounds, (t) => closedLoop(t, o.seconds / o.rounds, o.wsConnections, true, oneMessage));

    // (b) JSON-RPC calls over keep-alive HTTP, at concurrency `o.concurrency` and then 1 (the
    // latency of a lone call, without queueing behind others).
    const rpcTarget = (p: Path, agent: Agent): RpcTarget => {
      const { host, port } = splitHostPort(p.address);
      return { ...counters(p.pids), name: p.name, host, port, hostHeader: p.hostHeader, agent, sent: 0 };
    };
    agents.push(...paths.map(() => new Agent({ keepAlive: true, maxSockets: o.concurrency })));
    const rpcTargets = paths.map((p, i) => rpcTarget(p, agents[i]!));
    const serialTargets = paths.map((p, i) => rpcTarget(p, agents[i]!));
    for (const t of rpcTargets) await closedLoop(t, o.warmupSeconds, o.concurrency, false, oneCall);
    await alternate(rpcTargets, o.rounds, (t) => closedLoop(t, o.seconds / o.rounds, o.concurrency, true, oneCall));
    await alternate(serialTargets, o.rounds, (t) => closedLoop(t, o.serialSeconds / o.rounds, 1, true, oneCall));

    process.stdout.write(`\n### WebSocket: ${o.wsConnections} connections, one ${MESSAGE.length}-byte text message in flight on each, echoed by the upstream; ${o.seconds}s per path\n`);
    report('msg', 'RTT', wsTargets);
    process.stdout.write(`\n### JSON-RPC: MCP tools/call POST /mcp, keep-alive, concurrency ${o.concurrency}; ${o.seconds}s per path\n`);
    report('call', 'call', rpcTargets);
    process.stdout.write(`\n### JSON-RPC: the same at concurrency 1; ${o.serialSeconds}s per path\n`);
    report('call', 'call', serialTargets);

    // Sigil's rows count only if it authorized every message (each direction, in each sidecar)
    // and every call (in each sidecar). Both counts include the warm-up.
    const sigilWs = wsTargets[2]!;
    const sigilCalls = rpcTargets[2]!.sent + serialTargets[2]!.sent;
    const wsAllowed = await Promise.all(sigil.admins.map((admin) => allowed(admin, 'websocket.message')));
    const callsAllowed = await Promise.all(sigil.admins.map((admin) => allowed(admin, 'mcp.tools/call')));
    process.stdout.write(
      `sigil_authz_decisions_total{decision="allow"} (incl. warm-up): websocket.message A ${wsAllowed[0]} / B ${wsAllowed[1]} for ${sigilWs.sent} round trips (${2 * sigilWs.sent} messages), ` +
        `mcp.tools/call A ${callsAllowed[0]} / B ${callsAllowed[1]} for ${sigilCalls} calls\n`,
    );
    if (wsAllowed.some((n) => n < 2 * sigilWs.sent)) throw new Error(`a sidecar authorized fewer websocket messages than were sent (${wsAllowed.join(', ')} < ${2 * sigilWs.sent})`);
    if (callsAllowed.some((n) => n < sigilCalls)) throw new Error(`a sidecar authorized fewer tools/call calls than were sent (${callsAllowed.join(', ')} < ${sigilCalls})`);

    const failed = [...wsTargets, ...rpcTargets, ...serialTargets].filter((t) => t.errors > 0);
    for (const t of failed) process.stderr.write(`${t.name}: ${t.errors} errors, first: ${t.firstError}\n`);
    if (failed.length > 0) throw new Error('some messages or calls failed');
  } finally {
    for (const s of sockets) s.close();
    for (const agent of agents) agent.destroy();
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await pki.cleanup();
  }
}
