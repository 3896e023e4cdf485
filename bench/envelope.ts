// Cost of signing and verifying bus-message envelopes (src/bus/envelope), beside raw node:crypto.
//
// One ES256 SVID from the dev issuer (what `identity.dev` mints). For each payload size (256 B,
// 1 KiB, 16 KiB) the same process measures the sign rows, then the verify rows, each phase in
// alternating rounds after a full GC:
//   - raw crypto.sign / crypto.verify over a payload of that size with the same key
//     (ECDSA P-256, SHA-256, IEEE P1363 signatures): the baselines the targets refer to
//     (verify cycles through as many distinct signed payloads as envelope verify does);
//   - EnvelopeSigner.sign with the data as a JSON string value of that size, and with bytes
//     of that size (sent as data_b64);
//   - EnvelopeVerifier.verify on the cache-hit path with a ReplayWindow: every verified
//     envelope is a distinct pre-signed one (fresh jti), so the replay check records each;
//   - for reference: raw sign/verify over a buffer as long as the envelope's signing input (what
//     the JWS format itself costs: base64url makes the hashed input ≥ 4/3 of the payload, plus
//     the x5c header), and jose 6 (CompactSign / compactVerify with a CryptoKey, async), which
//     does not check the chain, the claims or replay at all.
// Ops/s and mean µs come from batches of back-to-back operations (one hrtime pair per batch);
// CPU µs/op from process.cpuUsage() around each slice (all threads, so GC helpers count too).
// The targets (sign ≥ 0.90, verify ≥ 0.85 of raw) are judged on the median over rounds of the
// per-round CPU-time ratio to the baseline ("paired"): on a shared VM wall-clock throughput
// also measures whoever else is running, and pairing each slice with the baseline's slice of
// the same round cancels slow drift.
import { randomBytes, sign as cryptoSign, verify as cryptoVerify, createPrivateKey, type KeyObject } from 'node:crypto';
import * as jose from 'jose';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { ENVELOPE_TYP, EnvelopeVerifier, ReplayWindow, createEnvelopeSigner, type EnvelopeSigner, type VerifyContext } from '../src/bus/envelope/index.js';
// Internal helper, imported only to time the duplicate-member check on its own.
import { memberCount } from '../src/bus/envelope/encoding.js';
import { DevIssuer, createDevCa, type X509Svid } from '../src/identity/index.js';
import { BundleSet, SpiffeId, X509Bundle } from '../src/spiffe/index.js';
import { ID_A, TD, fmt, machineLine, printTable, summarize } from './lib.js';

export interface EnvelopeBenchOptions {
  /** Measured seconds per variant, split over `rounds`. */
  seconds: number;
  rounds: number;
  /** Distinct pre-signed envelopes per verify variant (a multiple of BATCH). */
  pool: number;
  sizes: number[];
}

const DEFAULTS: EnvelopeBenchOptions = {
  seconds: Number(process.env.BENCH_ENVELOPE_SECONDS ?? 0.9),
  rounds: Number(process.env.BENCH_ENVELOPE_ROUNDS ?? 24),
  pool: Number(process.env.BENCH_ENVELOPE_POOL ?? 2048),
  sizes: (process.env.BENCH_ENVELOPE_SIZES ?? '256,1024,16384').split(',').map(Number),
};

const BATCH = 64;
const SIGN_TARGET = 0.9;
const VERIFY_TARGET = 0.85;
const TOPIC = 'orders.created';

type Group = 'sign' | 'verify';

interface Variant {
  name: string;
  group: Group;
  /** The baseline of its group (ratios are against it). */
  baseline?: boolean;
  /** Compared with the target (the envelope rows). */
  target?: number;
  /** Sync op; returns something truthy so the work cannot be optimised away. */
  run?: (i: number) => unknown;
  runAsync?: (i: number) => Promise<unknown>;
  /** Called before a batch that starts at index 0 (outside the timed region). */
  onWrap?: () => void;
  size: number;
  ns: number;
  ops: number;
  /** Process CPU time (user + system, all threads) over the recorded slices, µs, and their ops. */
  cpuUs: number;
  cpuOps: number;
  /** CPU µs per op of each recorded slice, in round order (paired with the baseline's). */
  roundCpu: number[];
  batchMeans: number[];
}

function variant(v: Omit<Variant, 'ns' | 'ops' | 'cpuUs' | 'cpuOps' | 'roundCpu' | 'batchMeans' | 'size'> & { size?: number }): Variant {
  return { size: BATCH, ...v, ns: 0, ops: 0, cpuUs: 0, cpuOps: 0, roundCpu: [], batchMeans: [] };
}

async function runBatches(v: Variant, seconds: number, record: boolean, state: { i: number }): Promise<void> {
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  let sink = 0;
  let cpuOps = 0;
  const cpu0 = process.cpuUsage();
  for (;;) {
    if (state.i === 0) v.onWrap?.();
    const t0 = process.hrtime.bigint();
    if (v.run) {
      for (let k = 0; k < BATCH; k++) {
        if (v.run(state.i)) sink++;
        if (++state.i === v.size) state.i = 0;
      }
    } else {
      for (let k = 0; k < BATCH; k++) {
        if (await v.runAsync!(state.i)) sink++;
        if (++state.i === v.size) state.i = 0;
      }
    }
    const t1 = process.hrtime.bigint();
    cpuOps += BATCH;
    if (record) {
      const ns = Number(t1 - t0);
      v.ns += ns;
      v.ops += BATCH;
      v.batchMeans.push(ns / 1000 / BATCH);
    }
    if (t1 >= deadline) break;
  }
  if (record) {
    // CPU time of the whole slice (pool wrap-arounds included: a few µs per pass) over its ops.
    // Unlike wall time it does not count time the thread spent descheduled on a shared host.
    const cpu = process.cpuUsage(cpu0);
    v.cpuUs += cpu.user + cpu.system;
    v.cpuOps += cpuOps;
    v.roundCpu.push((cpu.user + cpu.system) / cpuOps);
  }
  if (sink === 0) throw new Error(`${v.name}: no operation succeeded`);
}

/** Printable ASCII that needs no JSON escaping, like most text payloads. */
function text(n: number): string {
  return randomBytes(n).toString('base64').slice(0, n);
}

function svidOf(issued: { id: SpiffeId; certificates: X509Svid['certificates']; certChainPem: string; privateKeyPem: string }): X509Svid {
  const leaf = issued.certificates[0]!;
  return { ...issued, notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo), serial: leaf.serialNumber };
}

/** A full, synchronous garbage collection (the bench runs without --expose-gc). */
function fullGc(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

function signingInputLength(jws: string): number {
  return jws.lastIndexOf('.');
}

export async function runEnvelopeBench(opts: Partial<EnvelopeBenchOptions> = {}): Promise<void> {
  const o = { ...DEFAULTS, ...opts };
  if (o.pool % BATCH !== 0) throw new Error(`pool must be a multiple of ${BATCH}`);
  const material = await createDevCa(TD);
  const issuer = await DevIssuer.fromPem(TD, material);
  const svid = svidOf(await issuer.issue(ID_A, 3600_000));
  const bundles = new BundleSet([new X509Bundle(TD, [issuer.caCertificate])]);
  const signer: EnvelopeSigner = createEnvelopeSigner(svid);
  const privateKey: KeyObject = createPrivateKey(svid.privateKeyPem);
  const publicKey: KeyObject = svid.certificates[0]!.publicKey;
  const joseAlg = 'ES256';
  const josePrivate = await jose.importPKCS8(svid.privateKeyPem, joseAlg);
  const josePublic = await jose.importX509(svid.certificates[0]!.toString(), joseAlg);
  const joseHeader = { alg: joseAlg, typ: ENVELOPE_TYP, x5c: svid.certificates.map((c) => c.raw.toString('base64')) };
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const signOpts = { key: privateKey, dsaEncoding: 'ieee-p1363' as const };
  const verifyOpts = { key: publicKey, dsaEncoding: 'ieee-p1363' as const };

  process.stdout.write(
    `\n## envelope: sign/verify vs raw crypto.sign/crypto.verify (ES256, same key)\n${machineLine()}\n` +
      `${fmt(o.seconds, 2)}s per variant in ${o.rounds} alternating rounds, batches of ${BATCH}; verify = cache hit + ReplayWindow, ${o.pool} distinct pre-signed envelopes per variant\n`,
  );

  const summary: string[] = [];
  const measure = async (variants: Variant[]): Promise<void> => {
    // Start each phase from a collected heap: the previous phase's pools are garbage now, and
    // collecting them would otherwise be charged to whichever rows allocate (the envelope ones).
    fullGc();
    const states = new Map(variants.map((v) => [v, { i: 0 }]));
    for (const v of variants) await runBatches(v, 0.1, false, states.get(v)!);
    for (let r = 0; r < o.rounds; r++) {
      const order = r % 2 === 0 ? variants : [...variants].reverse();
      for (const v of order) await runBatches(v, o.seconds / o.rounds, true, states.get(v)!);
    }
  };
  for (const size of o.sizes) {
    const str = text(size);
    const bytes = randomBytes(size);
    const raw = randomBytes(size);
    const sample = signer.sign({ subject: TOPIC, data: str, ttlSeconds: 300 }).jws;
    const sampleBytes = signer.sign({ subject: TOPIC, bytes, ttlSeconds: 300 }).jws;
    const inputLen = signingInputLength(sample);
    const input = randomBytes(inputLen);

    // Phase 1, sign. Runs before the verify pools exist: allocating code pays for incremental
    // marking in proportion to the live heap, and 100+ MB of pre-signed envelopes would tax
    // the envelope rows (which allocate) and not the raw ones.
    const signVariants: Variant[] = [
      variant({ name: `raw crypto.sign, ${size} B (baseline)`, group: 'sign', baseline: true, run: () => cryptoSign('sha256', raw, signOpts) }),
      variant({ name: 'envelope sign, data: JSON string', group: 'sign', target: SIGN_TARGET, run: () => signer.sign({ subject: TOPIC, data: str }).jws }),
      variant({ name: 'envelope sign, bytes (data_b64)', group: 'sign', target: SIGN_TARGET, run: () => signer.sign({ subject: TOPIC, bytes }).jws }),
      variant({ name: `  ref: raw crypto.sign, ${inputLen} B (= signing input)`, group: 'sign', run: () => cryptoSign('sha256', input, signOpts) }),
      variant({
        name: '  ref: jose CompactSign, data: JSON string',
        group: 'sign',
        runAsync: async () => {
          const now = Math.floor(Date.now() / 1000);
          const claims = { iss: ID_A.toString(), sub: TOPIC, iat: now, exp: now + 60, jti: randomBytes(16).toString('base64url'), data: str };
          return new jose.CompactSign(encoder.encode(JSON.stringify(claims))).setProtectedHeader(joseHeader).sign(josePrivate);
        },
      }),
    ];
    await measure(signVariants);

    // Phase 2, verify. Raw verify gets the same treatment as envelope verify: a pool of
    // distinct messages, so both read data that is not already in the CPU caches.
    const signedPool = (n: number): Array<{ data: Buffer; sig: Buffer }> =>
      Array.from({ length: o.pool }, () => {
        const data = randomBytes(n);
        return { data, sig: cryptoSign('sha256', data, signOpts) };
      });
    const rawPool = signedPool(size);
    const inputPool = signedPool(inputLen);
    // Pre-signed envelopes: one distinct envelope per verify, so the replay window records
    // each. Each goes through bytes and back, as a received message does: the signer's output
    // is a V8 cons string (header + payload + signature concatenated), which a receiver never
    // sees and which would make the verifier pay for flattening it.
    const verifier = new EnvelopeVerifier();
    const received = (jws: string): string => Buffer.from(jws, 'latin1').toString('latin1');
    const poolStr = Array.from({ length: o.pool }, () => received(signer.sign({ subject: TOPIC, data: str, ttlSeconds: 300 }).jws));
    const poolBytes = Array.from({ length: o.pool }, () => received(signer.sign({ subject: TOPIC, bytes, ttlSeconds: 300 }).jws));
    const iat = Math.floor(Date.now() / 1000);
    const joseJws = received(
      await new jose.CompactSign(encoder.encode(JSON.stringify({ iss: ID_A.toString(), sub: TOPIC, iat, exp: iat + 300, jti: randomBytes(16).toString('base64url'), data: str })))
        .setProtectedHeader(joseHeader)
        .sign(josePrivate),
    );
    const replayStr = new ReplayWindow();
    const replayBytes = new ReplayWindow();
    const ctxStr: VerifyContext = { bundles, replay: replayStr };
    const ctxBytes: VerifyContext = { bundles, replay: replayBytes };
    // Sanity: everything verifies, with the expected content, before anything is timed.
    if (verifier.verify(poolStr[0]!, { bundles }).data !== str) throw new Error('string envelope does not round-trip');
    if (!verifier.verify(poolBytes[0]!, { bundles }).bytes?.equals(bytes)) throw new Error('bytes envelope does not round-trip');
    if (new EnvelopeVerifier().verify(joseJws, { bundles }).data !== str) throw new Error('jose envelope does not verify with Sigil');

    const verifyVariants: Variant[] = [
      variant({
        name: `raw crypto.verify, ${size} B (baseline)`,
        group: 'verify',
        baseline: true,
        size: o.pool,
        run: (i) => cryptoVerify('sha256', rawPool[i]!.data, verifyOpts, rawPool[i]!.sig),
      }),
      variant({
        name: 'envelope verify, data: JSON string',
        group: 'verify',
        target: VERIFY_TARGET,
        size: o.pool,
        onWrap: () => replayStr.clear(),
        run: (i) => verifier.verify(poolStr[i]!, ctxStr).jti,
      }),
      variant({
        name: 'envelope verify, bytes (data_b64)',
        group: 'verify',
        target: VERIFY_TARGET,
        size: o.pool,
        onWrap: () => replayBytes.clear(),
        run: (i) => verifier.verify(poolBytes[i]!, ctxBytes).jti,
      }),
      variant({
        name: `  ref: raw crypto.verify, ${inputLen} B (= signing input)`,
        group: 'verify',
        size: o.pool,
        run: (i) => cryptoVerify('sha256', inputPool[i]!.data, verifyOpts, inputPool[i]!.sig),
      }),
      variant({
        name: '  ref: jose compactVerify + JSON.parse (no chain/claims/replay)',
        group: 'verify',
        runAsync: async () => {
          const r = await jose.compactVerify(joseJws, josePublic, { algorithms: [joseAlg] });
          return JSON.parse(decoder.decode(r.payload)) as unknown;
        },
      }),
    ];
    await measure(verifyVariants);
    const variants = [...signVariants, ...verifyVariants];

    process.stdout.write(
      `\n### ${size} B payload (signing input: ${inputLen} B for the string, ${signingInputLength(sampleBytes)} B for bytes; compact JWS ${sample.length} B)\n`,
    );
    const rows: string[][] = [];
    for (const group of ['sign', 'verify'] as const) {
      const members = variants.filter((v) => v.group === group);
      const base = members.find((v) => v.baseline)!;
      const baseOps = (base.ops * 1e9) / base.ns;
      const baseCpu = base.cpuUs / base.cpuOps;
      for (const v of members) {
        const ops = (v.ops * 1e9) / v.ns;
        const cpu = v.cpuUs / v.cpuOps;
        const s = summarize(v.batchMeans);
        const wallRatio = ops / baseOps;
        const cpuRatio = baseCpu / cpu;
        // Each round's slice against the baseline's slice of the same round, then the median:
        // drift on a shared host moves both sides of a pair alike.
        const paired = summarize(v.roundCpu.map((c, r) => base.roundCpu[r]! / c)).median;
        const verdict = v.target === undefined ? '' : paired >= v.target ? `≥ ${fmt(v.target, 2)} met` : `≥ ${fmt(v.target, 2)} MISSED`;
        rows.push([v.name, fmt(ops), fmt(v.ns / v.ops / 1000, 2), fmt(s.median, 2), fmt(s.p99, 2), fmt(cpu, 2), `${fmt(wallRatio, 3)}x`, `${fmt(cpuRatio, 3)}x`, `${fmt(paired, 3)}x`, verdict]);
        if (v.target !== undefined) {
          summary.push(
            `${size} B ${v.name}: ${fmt(paired, 3)}x (paired rounds, CPU), ${fmt(cpuRatio, 3)}x (total CPU), ${fmt(wallRatio, 3)}x (wall-clock ops/s) — target ${verdict}`,
          );
        }
      }
    }
    printTable(['variant', 'ops/s', 'mean µs', 'batch p50 µs', 'batch p99 µs', 'CPU µs/op', 'vs raw (wall)', 'vs raw (CPU)', 'vs raw (paired)', 'target'], rows);
  }

  process.stdout.write(
    `\nratios vs raw crypto on the same key and payload size (throughput = 1 / CPU time per op on one core; wall-clock ratios on a shared host also carry other processes' noise):\n` +
      `${summary.map((l) => `  ${l}`).join('\n')}\n`,
  );
  dupCheckCost();
}

/** The duplicate-member check on 16 KiB claims: cost beside JSON.parse of the same text. */
function dupCheckCost(): void {
  const n = 16384;
  const head = { iss: ID_A.toString(), sub: TOPIC, iat: 1, exp: 2, jti: randomBytes(16).toString('base64url') };
  const items: unknown[] = [];
  while (JSON.stringify(items).length < n) items.push({ id: items.length, name: `item-${items.length}`, tags: ['a', 'b'], price: 12.5, ok: true });
  const texts: Array<[string, string]> = [
    ['data: 16 KiB JSON string', JSON.stringify({ ...head, data: text(n) })],
    ['data_b64: 16 KiB bytes', JSON.stringify({ ...head, data_b64: randomBytes(n).toString('base64url') })],
    [`data: 16 KiB object (${items.length} records)`, JSON.stringify({ ...head, data: items })],
  ];
  const time = (fn: () => unknown): number => {
    const reps = Number(process.env.BENCH_ENVELOPE_DUP_REPS ?? 20_000);
    for (let k = 0; k < reps / 10; k++) fn();
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < reps; k++) fn();
    return Number(process.hrtime.bigint() - t0) / 1000 / reps;
  };
  const rows = texts.map(([name, t]) => {
    const bytes = Buffer.from(t, 'utf8');
    if (memberCount(bytes) !== Object.keys(JSON.parse(t) as object).length) throw new Error('memberCount disagrees');
    const parse = time(() => JSON.parse(t));
    const dup = time(() => memberCount(bytes));
    return [name, String(t.length), fmt(parse, 2), fmt(dup, 2), `${fmt((dup / parse) * 100, 1)}%`];
  });
  process.stdout.write('\nduplicate top-level claim check at 16 KiB: memberCount over the payload bytes, beside JSON.parse of the same claims (both run once per message):\n');
  printTable(['claims text', 'chars', 'JSON.parse µs', 'dup check µs', 'of parse'], rows);
}
