// Part 2: how long a revocation made at one admin API takes to be enforced by every sidecar,
// beside the raw NATS round trip on the same server, in the same run.
//
// nats-server (JetStream, TLS, client certificates verified against the bench trust domain) and
// N real `sigil run` sidecars (agent/sidecar-0 … sidecar-N-1), each with an inbound listener in
// front of the bench upstream, a Cedar policy (the trust domain may connect and call; only
// sidecar-0 may issue revocation records) and `revocation.nats` on that server. Per round a
// new victim agent holds one kept-alive mTLS connection to every sidecar (one request answered
// 200 on it); then the bench POSTs `{kind: agent, value: victim}` to sidecar-0's admin API and
// waits until every sidecar has cut the victim's connection. The cut happens in the same
// synchronous step that adds the entry to the sidecar's list (Revocations.apply: set.add, then
// registry.cut), so from that instant the sidecar refuses the victim; the 'close' on the
// client socket is the moment of enforcement, observed without polling. Afterwards a fresh
// mTLS request as the victim must be answered 403 `revoked` by every sidecar (checked every
// round; the time to that answer is reported too, it includes a new handshake).
//
// Why not poll with requests: the revocation cuts every connection of the victim, so each
// request after it needs a new mTLS handshake (10–25 ms of CPU-bound work on a 2-vCPU VM,
// competing with the sidecars that are applying the record): polling would time handshakes.
//
// Baselines, interleaved with the revocation rounds, each sample after the same idle gap as a
// revocation: a NATS core publish → subscriber on a second connection; for reference, the
// transport Sigil actually uses (a JetStream publish → ordered consumer on a second
// connection), with a payload the size of a revocation record; and two `Revocations`
// instances in this process over the same server (revoke() on one → applied by the other):
// Sigil's revocation code without HTTP, Cedar or a hop between sidecar processes.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { DeliverPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import type { AuthzRequest, Decision } from '../../src/authz/index.js';
import { createEnvelopeSigner } from '../../src/bus/envelope/index.js';
import type { IdentitySnapshot } from '../../src/identity/index.js';
import { Revocations } from '../../src/revocation/index.js';
import { BundleSet, X509Bundle } from '../../src/spiffe/index.js';
import { silentLogger } from '../../src/telemetry/index.js';
import { TD, fmt, machineLine, makePki, metricTotal, percentile, printTable, serverScript, sleep, spawnServer, spawnSigil, writeConfig, type SigilChild } from '../lib.js';
import {
  findNatsServer, hr, httpJson, msSince, mtlsGet, natsMissingBanner, reasonOf, startNatsServer, svidMinter, withTimeout, type BenchSvid, type KeptConnection,
} from './support.js';

export interface PropagationOptions {
  sidecars: number;
  /** Revocations (one new victim agent each). */
  rounds: number;
  /** NATS core and JetStream round trips per revocation round. */
  natsSamples: number;
}

const SUBJECT = 'sigil.revocations';
const GAP_MS = 50;

function stats(samples: number[]): { p50: number; p99: number; n: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), n: sorted.length };
}

export async function runPropagationBench(o: PropagationOptions): Promise<void> {
  process.stdout.write(
    `\n## revocation (2/3): propagation, admin API of sidecar-0 → ${o.sidecars} sidecars over NATS JetStream, vs the raw NATS round trip\n${machineLine()}\n`,
  );
  const nats = findNatsServer();
  if (!nats) {
    process.stdout.write(natsMissingBanner('revocation (2/3), propagation:'));
    return;
  }
  const pki = await makePki();
  const stops: Array<() => Promise<void>> = [];
  const conns: NatsConnection[] = [];
  try {
    const server = await startNatsServer(nats, join(pki.dir, 'nats'), join(pki.caDir, 'bundle.pem'));
    stops.push(server.stop);
    const upstream = await spawnServer(serverScript('upstream'));
    stops.push(upstream.stop);
    const sidecarId = (i: number): string => `spiffe://${TD.name}/agent/sidecar-${i}`;
    await writeFile(
      join(pki.dir, 'policy.cedar'),
      `@id("calls") permit (principal in TrustDomain::"${TD.name}", action in [Action::"connect", Action::"http"], resource);\n` +
        `@id("revokers") permit (principal == Agent::"${sidecarId(0)}", action == Action::"revocation.issue", resource == Topic::"${SUBJECT}");\n`,
    );
    const sidecars: SigilChild[] = [];
    for (let i = 0; i < o.sidecars; i++) {
      const config = await writeConfig(pki.dir, `sidecar-${i}.json`, {
        trustDomain: TD.name,
        identity: { dev: { caDir: './ca', spiffeId: sidecarId(i), ttl: '1h' } },
        inbound: { listen: '127.0.0.1:0', upstream: `http://127.0.0.1:${upstream.info.port as number}` },
        policy: { cedar: './policy.cedar' },
        admin: { listen: '127.0.0.1:0' },
        revocation: { nats: { servers: [server.url], tls: { ca: server.caFile } } },
      });
      const s = await spawnSigil(config);
      stops.push(s.stop);
      sidecars.push(s);
    }
    const inbound = (s: SigilChild): string => s.ready.inbound as string;
    const admin = (s: SigilChild): string => s.ready.admin as string;
    const mint = await svidMinter(pki.caDir);

    // The baseline's two connections, with a client SVID like the sidecars'.
    const client = await mint(`spiffe://${TD.name}/agent/bench-nats-client`);
    const natsOpts = (name: string) => ({ servers: [server.url], name, tls: { cert: client.certPem, key: client.keyPem, ca: server.caPem } });
    const pub = await connect(natsOpts('bench-pub'));
    const sub = await connect(natsOpts('bench-sub'));
    conns.push(pub, sub);
    // A payload the size of a real revocation record: an envelope signed with an SVID like the
    // sidecars', carrying a record's data (docs/revocation.md) for one of the victims.
    const id = '6f1c7f0e-3c4b-4a63-9a55-2f7f3c8f9b1d';
    const payload = Buffer.from(
      createEnvelopeSigner(client.svid).sign({
        subject: `${SUBJECT}.${id}.revoke`,
        data: {
          v: 1,
          op: 'revoke',
          entry: { id, kind: 'agent', value: `spiffe://${TD.name}/agent/victim-00`, reason: 'bench: propagation', revokedBy: 'bench', revokedAt: new Date().toISOString() },
        },
      }).jws,
    );
    let onCore: ((t: bigint) => void) | undefined;
    sub.subscribe('bench.rtt', { callback: () => onCore?.(hr()) });
    await sub.flush();
    const jsm = await jetstreamManager(pub);
    await jsm.streams.add({ name: 'BENCH_RTT', subjects: ['bench.js.*'], max_msgs_per_subject: 1, retention: RetentionPolicy.Limits, storage: StorageType.File });
    const consumer = await jetstream(sub).consumers.get('BENCH_RTT', { deliver_policy: DeliverPolicy.New });
    const messages = await consumer.consume();
    let onJs: ((t: bigint) => void) | undefined;
    void (async () => {
      for await (const _m of messages) onJs?.(hr());
    })();
    const js = jetstream(pub);
    const core: number[] = [];
    const jsDelivered: number[] = [];
    const jsAcked: number[] = [];
    let jsSeq = 0;
    const coreSample = async (record: boolean): Promise<void> => {
      const got = new Promise<bigint>((r) => (onCore = r));
      const t0 = hr();
      pub.publish('bench.rtt', payload);
      const t1 = await withTimeout(got, 2_000, 'NATS core round trip');
      if (record) core.push(msSince(t0, t1));
    };
    const jsSample = async (record: boolean): Promise<void> => {
      const delivered = new Promise<bigint>((r) => (onJs = r));
      const t0 = hr();
      await js.publish(`bench.js.${jsSeq++}`, payload);
      const acked = hr();
      const t1 = await withTimeout(delivered, 2_000, 'JetStream delivery');
      if (record) {
        jsAcked.push(msSince(t0, acked));
        jsDelivered.push(msSince(t0, t1));
      }
    };

    // Reference: two Revocations instances in this process (what each sidecar runs), over the
    // same server on their own subject and stream: revoke() on one → applied by the other. No
    // HTTP, no Cedar (authorize always allows), no process hop but NATS.
    const bundles = new BundleSet([X509Bundle.fromPem(TD, await readFile(join(pki.caDir, 'bundle.pem'), 'utf8'))]);
    let onPairApplied: ((t: bigint) => void) | undefined;
    const pairMember = async (name: string, onAdded?: () => void): Promise<Revocations> => {
      const snapshot: IdentitySnapshot = { svid: (await mint(`spiffe://${TD.name}/agent/${name}`)).svid, bundles, generation: 1 };
      const r = new Revocations(
        {
          syncIntervalMs: 1_000,
          leewayMs: 5_000,
          maxRecordBytes: 1 << 20,
          nats: { servers: [server.url], caPem: server.caPem, subject: 'bench.revocations', stream: 'BENCH_REVOCATIONS', createStream: true },
        },
        {
          identity: () => snapshot,
          authorize: (signer, _record, subject): Decision => {
            const request: AuthzRequest = { action: 'revocation.issue', direction: 'inbound', principal: signer, resource: { type: 'Topic', subject }, peer: signer };
            return { allowed: true, reason: 'allowed', policies: [], wouldDeny: false, policyVersion: 'bench', request };
          },
          auditRejection: () => {},
          logger: silentLogger,
          name,
          ...(onAdded ? { onAdded } : {}),
        },
      );
      await r.start();
      stops.push(() => r.stop());
      return r;
    };
    const pairOrigin = await pairMember('pair-origin');
    await pairMember('pair-remote', () => onPairApplied?.(hr()));
    const pairApplied: number[] = [];
    const pairResolved: number[] = [];
    let pairSeq = 0;
    const pairSample = async (record: boolean): Promise<void> => {
      const applied = new Promise<bigint>((r) => (onPairApplied = r));
      const t0 = hr();
      const out = await pairOrigin.revoke({ kind: 'agent', value: `spiffe://${TD.name}/agent/pair-victim-${pairSeq++}`, reason: 'bench: pair' }, 'bench');
      const resolved = hr();
      const t1 = await withTimeout(applied, 2_000, 'in-process pair: remote applied');
      if (!out.propagated) throw new Error('in-process pair: the record did not reach the stream');
      if (record) {
        pairApplied.push(msSince(t0, t1));
        pairResolved.push(msSince(t0, resolved));
      }
    };
    // Every timed sample, baseline or Sigil, starts after the same idle gap: a publish after
    // 50 ms of quiet costs ~2-3x one right after another (caches, wake-ups on both ends).
    const idle = (): Promise<void> => sleep(GAP_MS);
    const baselineRound = async (record: boolean): Promise<void> => {
      for (let k = 0; k < o.natsSamples; k++) {
        await idle();
        await coreSample(record);
        await idle();
        await jsSample(record);
      }
      await idle();
      await pairSample(record);
    };

    // Victims: one agent per revocation, minted up front.
    const victims: BenchSvid[] = [];
    for (let r = 0; r < o.rounds; r++) victims.push(await mint(`spiffe://${TD.name}/agent/victim-${r}`));
    // Warm-up: a connection per sidecar as a throw-away agent, and baseline round trips.
    const warm = await mint(`spiffe://${TD.name}/agent/warm-up`);
    for (const s of sidecars) await mtlsGet(inbound(s), warm.ctx, '/warm', false);
    await baselineRound(false);

    const cut: number[][] = sidecars.map(() => []);
    const refused: number[][] = sidecars.map(() => []);
    const posted: number[] = [];
    const slowest: number[] = [];
    for (let r = 0; r < o.rounds; r++) {
      const victim = victims[r]!;
      const kept: KeptConnection[] = await Promise.all(sidecars.map((s) => mtlsGet(inbound(s), victim.ctx, '/before', true)));
      kept.forEach((k, i) => {
        if (k.response.status !== 200) throw new Error(`sidecar-${i}: the victim's request before the revocation got ${k.response.status}`);
      });
      await baselineRound(true);
      await idle();
      const t0 = hr();
      const post = httpJson(admin(sidecars[0]!), 'POST', '/v1/revocations', { kind: 'agent', value: victim.id.toString(), reason: 'bench: propagation', by: 'bench' }).then((res) => ({
        ...res,
        at: hr(),
      }));
      const closedAt = await withTimeout(Promise.all(kept.map((k) => k.closed)), 10_000, `round ${r}: every sidecar cuts the victim's connection`);
      const answer = await post;
      if (answer.status !== 201 || answer.json?.propagated !== true) throw new Error(`round ${r}: POST /v1/revocations → ${answer.status} ${answer.text}`);
      posted.push(msSince(t0, answer.at));
      closedAt.forEach((t, i) => cut[i]!.push(msSince(t0, t)));
      slowest.push(Math.max(...closedAt.slice(1).map((t) => msSince(t0, t))));
      // Enforced for new connections too: every sidecar answers 403 revoked.
      await Promise.all(
        sidecars.map(async (s, i) => {
          const fresh = await mtlsGet(inbound(s), victim.ctx, '/after', false);
          const reason = reasonOf(fresh.response.body);
          if (fresh.response.status !== 403 || reason !== 'revoked') throw new Error(`round ${r}: sidecar-${i} answered ${fresh.response.status} ${reason ?? fresh.response.body.slice(0, 80)} after the revocation`);
          refused[i]!.push(msSince(t0));
        }),
      );
      await sleep(100);
    }

    // Every record reached every sidecar through NATS (and was applied once, with one cut).
    for (let i = 0; i < sidecars.length; i++) {
      const m = (await httpJson(admin(sidecars[i]!), 'GET', '/metrics')).text;
      const applied = metricTotal(m, 'sigil_revocations_applied_total', { source: i === 0 ? 'admin' : 'nats', result: 'applied' });
      const cuts = metricTotal(m, 'sigil_revocation_cuts_total', { kind: 'connection' });
      if (applied !== o.rounds || cuts !== o.rounds) throw new Error(`sidecar-${i}: ${applied} revocations applied and ${cuts} connections cut, expected ${o.rounds} each`);
    }

    const base = stats(core);
    const rows: string[][] = [];
    const add = (name: string, samples: number[]): void => {
      const s = stats(samples);
      rows.push([name, String(s.n), fmt(s.p50, 3), fmt(s.p99, 3), `${fmt(s.p50 / base.p50, 1)}x`, `${fmt(s.p99 / base.p99, 1)}x`]);
    };
    add('NATS core publish → subscriber on another connection (baseline)', core);
    add('  ref: JetStream publish → ordered consumer on another connection', jsDelivered);
    add('  ref: JetStream publish → ack at the publisher', jsAcked);
    add('  ref: Revocations pair in this process: revoke() → applied by the other', pairApplied);
    add('  ref: Revocations pair in this process: revoke() resolved (stored)', pairResolved);
    add('sidecar-0 (origin: applies, then publishes): victim cut', cut[0]!);
    for (let i = 1; i < sidecars.length; i++) add(`sidecar-${i}: victim cut`, cut[i]!);
    add(`remote sidecars 1–${sidecars.length - 1} pooled: victim cut`, cut.slice(1).flat());
    add('slowest remote sidecar per revocation (enforced everywhere)', slowest);
    add('admin POST answered 201 (applied at origin + stored in JetStream)', posted);
    add('403 revoked on a fresh mTLS connection (all sidecars; opened after the cuts, incl. handshake)', refused.flat());
    process.stdout.write(
      `${o.rounds} revocations (a new victim agent each); before each, ${o.natsSamples} NATS core + ${o.natsSamples} JetStream round trips and 1 in-process pair revocation; ` +
        `every sample after ${GAP_MS} ms of quiet; payload ${payload.length} B (a signed revocation record); times from one clock in this process, from just before the request is written\n`,
    );
    printTable(['path', 'samples', 'p50 ms', 'p99 ms', 'p50 vs NATS core', 'p99 vs NATS core'], rows);
    const remote = stats(cut.slice(1).flat());
    const jsd = stats(jsDelivered);
    process.stdout.write(
      `ratio sigil (remote sidecar enforces) / NATS core round trip: p50 ${fmt(remote.p50 / base.p50, 1)}x (+${fmt(remote.p50 - base.p50, 2)} ms), p99 ${fmt(remote.p99 / base.p99, 1)}x; ` +
        `/ JetStream publish → consumer: p50 ${fmt(remote.p50 / jsd.p50, 1)}x (+${fmt(remote.p50 - jsd.p50, 2)} ms)` +
        `; p99 of fewer than 100 samples is their maximum` +
        `\n`,
    );
  } finally {
    for (const nc of conns) await nc.close().catch(() => {});
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await pki.cleanup();
  }
}
