// Per-request cost of delegation-token verification (src/delegation DelegationVerifier) beside a
// plain jose `jwtVerify` of the same JWT with the same key.
//
// One ES256 broker key (newSigningKey, what `sigil broker` signs with). A pool of distinct
// delegation tokens (alice → orchestrator → worker, addressed to the tool; distinct jti) is
// signed once. Rows, timed in alternating rounds in one process, each call awaited before the
// next (one request at a time, as a sidecar does per connection):
//   - jose jwtVerify (baseline): jwtVerify(token, CryptoKey, {issuer, audience, typ: 'at+jwt',
//     algorithms: ['ES256']}) — signature + the standard claims, no actor/chain/scope checks;
//   - verify, cache miss: DelegationVerifier.verify on a token it has not seen (the pool is cycled
//     and the cache cleared between passes, outside the timed slice): header + kid + jose
//     compactVerify + every claim rule + actor + depth + context + cache insert;
//   - verify, cache hit: the same pool, already verified: key-set version, cache lookup, exp
//     re-check (what every request after the first pays for a token used on many requests);
//   - ref: raw crypto.verify of the same signing input (no JOSE, no WebCrypto): the floor.
// Per-op latency comes from an hrtime pair around each call (p50/p99); ops/s and mean µs from
// the slice's total; CPU µs/op from process.cpuUsage() (all threads: WebCrypto verifies on the
// libuv pool). "vs jose (paired)" = median over rounds of the baseline's CPU µs/op ÷ the row's
// in the same round (> 1 = cheaper than the baseline).
import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as jose from 'jose';
import { DelegationVerifier, newSigningKey, signDelegationToken, staticJwks, type DelegationTokenClaims } from '../src/delegation/index.js';
import { fmt, machineLine, percentile, printTable } from './lib.js';

export interface DelegationBenchOptions {
  /** Measured seconds per row, split over `rounds`. */
  seconds: number;
  rounds: number;
  /** Distinct pre-signed tokens. */
  pool: number;
}

const DEFAULTS: DelegationBenchOptions = {
  seconds: Number(process.env.BENCH_DELEGATION_SECONDS ?? 5),
  rounds: Number(process.env.BENCH_DELEGATION_ROUNDS ?? 10),
  pool: Number(process.env.BENCH_DELEGATION_POOL ?? 1024),
};

const ISSUER = 'https://broker.bench.example';
const USER = 'alice@bench.example';
const ORCH = 'spiffe://bench.example/agent/orchestrator';
const WORKER = 'spiffe://bench.example/agent/worker';
const TOOL = 'spiffe://bench.example/agent/tool';

interface Row {
  name: string;
  baseline?: boolean;
  run: (i: number) => Promise<unknown> | unknown;
  /** Before a pass over the pool starts (outside the timed region). */
  onWrap?: () => void;
  i: number;
  ns: number;
  ops: number;
  cpuUs: number;
  lat: number[];
  roundCpu: number[];
}

function fullGc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

export async function runDelegationBench(opts: Partial<DelegationBenchOptions> = {}): Promise<void> {
  const o = { ...DEFAULTS, ...opts };
  const key = await newSigningKey();
  const now = Math.floor(Date.now() / 1000);
  const tokens: string[] = [];
  for (let i = 0; i < o.pool; i++) {
    const claims: DelegationTokenClaims = {
      iss: ISSUER,
      sub: USER,
      aud: TOOL,
      client_id: WORKER,
      act: { sub: WORKER, act: { sub: ORCH } },
      scope: 'tickets:read tickets:write',
      iat: now,
      exp: now + 3600,
      jti: `bench-${i}-${Math.random().toString(36).slice(2)}`,
      task: 'task-bench',
    };
    // Flatten: a received token is a flat string, never the signer's cons string.
    tokens.push(Buffer.from(await signDelegationToken(claims, key)).toString());
  }
  const sample = tokens[0]!;
  const joseKey = await jose.importJWK(key.publicJwk, 'ES256');
  const pub = createPublicKey(key.privateKey);
  const inputs = tokens.map((t) => Buffer.from(t.slice(0, t.lastIndexOf('.'))));
  const sigs = tokens.map((t) => Buffer.from(t.slice(t.lastIndexOf('.') + 1), 'base64url'));
  const keys = staticJwks({ keys: [key.publicJwk] });
  const expect = { audience: TOOL, actor: WORKER };
  const miss = new DelegationVerifier({ issuer: ISSUER, keys, cacheLimit: o.pool * 2 });
  const hit = new DelegationVerifier({ issuer: ISSUER, keys, cacheLimit: o.pool * 2 });
  for (const t of tokens) await hit.verify(t, expect);
  const joseOpts: jose.JWTVerifyOptions = { issuer: ISSUER, audience: TOOL, typ: 'at+jwt', algorithms: ['ES256'] };
  // Sanity: every row accepts the pool (and the baseline does the same amount of work).
  await jose.jwtVerify(sample, joseKey, joseOpts);
  if (!cryptoVerify('sha256', inputs[0]!, { key: pub, dsaEncoding: 'ieee-p1363' }, sigs[0]!)) throw new Error('raw verify failed');

  const row = (r: Omit<Row, 'i' | 'ns' | 'ops' | 'cpuUs' | 'lat' | 'roundCpu'>): Row => ({ ...r, i: 0, ns: 0, ops: 0, cpuUs: 0, lat: [], roundCpu: [] });
  const rows: Row[] = [
    row({ name: 'jose jwtVerify (baseline)', baseline: true, run: (i) => jose.jwtVerify(tokens[i]!, joseKey, joseOpts) }),
    row({ name: 'DelegationVerifier.verify, cache miss', run: (i) => miss.verify(tokens[i]!, expect), onWrap: () => miss.clearCache() }),
    row({ name: 'DelegationVerifier.verify, cache hit', run: (i) => hit.verify(tokens[i]!, expect) }),
    row({ name: '  ref: raw crypto.verify (same input, no JOSE)', run: (i) => cryptoVerify('sha256', inputs[i]!, { key: pub, dsaEncoding: 'ieee-p1363' }, sigs[i]!) }),
  ];

  const slice = async (r: Row, seconds: number, record: boolean): Promise<void> => {
    const budget = BigInt(Math.round(seconds * 1e9));
    const cpu0 = process.cpuUsage();
    const start = process.hrtime.bigint();
    let ops = 0;
    let excluded = 0n;
    for (;;) {
      if (r.i === 0 && r.onWrap) {
        const w0 = process.hrtime.bigint();
        r.onWrap();
        excluded += process.hrtime.bigint() - w0;
      }
      const t0 = process.hrtime.bigint();
      const out = r.run(r.i);
      if (out instanceof Promise) await out;
      const t1 = process.hrtime.bigint();
      r.i = (r.i + 1) % tokens.length;
      ops++;
      if (record) r.lat.push(Number(t1 - t0) / 1000);
      if (t1 - start - excluded >= budget) break;
    }
    const ns = Number(process.hrtime.bigint() - start - excluded);
    const c = process.cpuUsage(cpu0);
    if (record) {
      r.ns += ns;
      r.ops += ops;
      const cpu = c.user + c.system;
      r.cpuUs += cpu;
      r.roundCpu.push(cpu / ops);
    }
  };

  process.stdout.write(
    `\n## delegation: DelegationVerifier.verify vs jose jwtVerify (ES256, same key, same tokens)\n${machineLine()}\n` +
      `${fmt(o.seconds, 1)} s per row in ${o.rounds} alternating rounds; ${o.pool} distinct tokens of ${sample.length} B (2 actors, 2 scopes); one call at a time\n`,
  );
  fullGc();
  for (const r of rows) await slice(r, 0.2, false);
  for (let round = 0; round < o.rounds; round++) {
    const order = round % 2 === 0 ? rows : [...rows].reverse();
    for (const r of order) await slice(r, o.seconds / o.rounds, true);
  }

  const base = rows.find((r) => r.baseline)!;
  const baseOps = base.ops / (base.ns / 1e9);
  const table = rows.map((r) => {
    const opsPerS = r.ops / (r.ns / 1e9);
    const sorted = Float64Array.from(r.lat).sort();
    const arr = Array.from(sorted);
    const paired = r.roundCpu.map((c, i) => base.roundCpu[i]! / c).sort((a, b) => a - b);
    return [
      r.name,
      fmt(opsPerS),
      fmt(r.ns / 1000 / r.ops, 2),
      fmt(percentile(arr, 50), 2),
      fmt(percentile(arr, 99), 2),
      fmt(r.cpuUs / r.ops, 2),
      `${fmt(opsPerS / baseOps, 3)}x`,
      `${fmt(percentile(paired, 50), 3)}x`,
    ];
  });
  printTable(['row', 'ops/s', 'mean µs', 'p50 µs', 'p99 µs', 'CPU µs/op', 'vs jose (ops/s)', 'vs jose (paired CPU)'], table);
  const missRow = rows[1]!;
  const hitRow = rows[2]!;
  process.stdout.write(
    `cache miss costs ${fmt(missRow.ns / missRow.ops / (base.ns / base.ops), 2)}x a plain jwtVerify per call; a cache hit ${fmt(hitRow.ns / hitRow.ops / 1000, 2)} µs ` +
      `(${fmt((base.ns / base.ops) / (hitRow.ns / hitRow.ops), 0)}x cheaper than jwtVerify). hits=${hit.stats.hits} misses(miss row)=${miss.stats.misses} failures=${hit.stats.failures + miss.stats.failures}\n`,
  );
  if (hit.stats.failures + miss.stats.failures > 0) throw new Error('verification failures during the bench');
}
