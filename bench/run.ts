// `npm run bench` → node dist/bench/run.js [handshake|proxy|protocols|authz|envelope|delegation|revocation|scale|egress]... [--quick]
// Runs the hot-path benchmarks in sequence, each with its baseline side by side, shows progress,
// and writes what they printed to bench/results/<time>-<full|quick>.{md,json} with machine info.
// `--quick` (≈1 min for the suite) shortens every phase: a smoke test that CI runs (no
// thresholds); its numbers are noisy. The environment (BENCH_* knobs) still overrides.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, freemem, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTableSink } from './lib.js';

interface RunFlags {
  quick: boolean;
}

// Imported when run: several benches read their BENCH_* knobs at load, after --quick set them.
const BENCHES: Record<string, (flags: RunFlags) => Promise<void>> = {
  handshake: async () => (await import('./handshake.js')).runHandshakeBench(),
  proxy: async () => (await import('./proxy.js')).runProxyBench(),
  protocols: async () => (await import('./protocols.js')).runProtocolsBench(),
  authz: async () => (await import('./authz.js')).runAuthzBench(),
  envelope: async () => (await import('./envelope.js')).runEnvelopeBench(),
  delegation: async () => (await import('./delegation.js')).runDelegationBench(),
  revocation: async () => (await import('./revocation/index.js')).runRevocationBench(),
  scale: async () => (await import('./scale/index.js')).runScaleBench(),
  egress: async (f) => {
    const egress = await import('./egress.js');
    await egress.runEgressBench(egress.egressOptions(f.quick));
  },
};

/** `--quick` defaults: every phase short (each bench a few seconds). Set BENCH_* to override. */
const QUICK_ENV: Record<string, string> = {
  BENCH_HS_N: '60',
  BENCH_HS_WARMUP: '10',
  BENCH_HS_ROUNDS: '2',
  BENCH_PROXY_SECONDS: '0.25',
  BENCH_PROXY_WARMUP: '0.2',
  BENCH_PROXY_RATE_SECONDS: '0.25',
  BENCH_PROXY_ROUNDS: '1',
  BENCH_PROTO_SECONDS: '0.3',
  BENCH_PROTO_SERIAL_SECONDS: '0.2',
  BENCH_PROTO_WARMUP: '0.15',
  BENCH_PROTO_ROUNDS: '1',
  BENCH_AUTHZ_INPROC_SECONDS: '0.03',
  BENCH_AUTHZ_SINGLE_CALLS: '100',
  BENCH_AUTHZ_SECONDS: '0.25',
  BENCH_AUTHZ_SERIAL_SECONDS: '0.15',
  BENCH_AUTHZ_WARMUP: '0.2',
  BENCH_AUTHZ_ROUNDS: '1',
  BENCH_AUTHZ_BUILD_CALLS: '2000',
  BENCH_ENVELOPE_SECONDS: '0.05',
  BENCH_ENVELOPE_ROUNDS: '2',
  BENCH_ENVELOPE_SIZES: '256,16384',
  BENCH_ENVELOPE_DUP_REPS: '1000',
  BENCH_ENVELOPE_POOL: '256',
  BENCH_DELEGATION_SECONDS: '0.2',
  BENCH_DELEGATION_ROUNDS: '2',
  BENCH_DELEGATION_POOL: '128',
  BENCH_REVOCATION_SIZES: '0,6400',
  BENCH_REVOCATION_LOOKUP_SECONDS: '0.02',
  BENCH_REVOCATION_LOOKUP_ROUNDS: '2',
  BENCH_REVOCATION_SIDECARS: '2',
  BENCH_REVOCATION_ROUNDS: '1',
  BENCH_REVOCATION_NATS_SAMPLES: '1',
  BENCH_REVOCATION_CONNS: '60',
  BENCH_REVOCATION_CUT_ROUNDS: '1',
  BENCH_SCALE_SECONDS: '0.15',
  BENCH_SCALE_ROUNDS: '1',
  BENCH_SCALE_POLICY_SIZES: '10',
  BENCH_SCALE_BUNDLE_SIZES: '1,10',
  BENCH_SCALE_CONNS: '100',
  BENCH_SCALE_SETTLE_MS: '300',
  BENCH_EGRESS_SECONDS: '0.25',
  BENCH_EGRESS_WARMUP: '0.2',
  BENCH_EGRESS_ROUNDS: '1',
  BENCH_EGRESS_RATE_SECONDS: '0.25',
};

interface RecordedTable {
  /** The last Markdown heading printed before the table. */
  heading: string;
  headers: string[];
  rows: string[][];
}

interface BenchRecord {
  name: string;
  ok: boolean;
  seconds: number;
  error?: string;
  tables: RecordedTable[];
}

function machine(): Record<string, unknown> {
  const cpu = cpus();
  return {
    cpus: cpu.length,
    cpuModel: cpu[0]?.model.trim() ?? 'unknown',
    memoryGiB: Number((totalmem() / 2 ** 30).toFixed(1)),
    freeMemoryGiB: Number((freemem() / 2 ** 30).toFixed(1)),
    node: process.version,
    openssl: process.versions.openssl,
    platform: `${process.platform}/${process.arch}`,
  };
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const flags: RunFlags = { quick: argv.includes('--quick') };
  const wanted = argv.filter((a) => a !== '--quick');
  for (const w of wanted) {
    if (!(w in BENCHES)) {
      process.stderr.write(`unknown benchmark "${w}"; usage: node dist/bench/run.js [${Object.keys(BENCHES).join('|')}]... [--quick]\n`);
      return 2;
    }
  }
  if (flags.quick) for (const [k, v] of Object.entries(QUICK_ENV)) process.env[k] ??= v;

  // Everything printed is kept: the Markdown report is the run's own output.
  const printed: string[] = [];
  let heading = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    printed.push(text);
    for (const line of text.split('\n')) if (line.startsWith('#')) heading = line.replace(/^#+\s*/, '');
    return (write as (c: string | Uint8Array, ...r: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof process.stdout.write;

  const records: BenchRecord[] = [];
  let current: BenchRecord | undefined;
  setTableSink((headers, rows) => current?.tables.push({ heading, headers, rows }));

  const names = wanted.length > 0 ? wanted : Object.keys(BENCHES);
  const started = performance.now();
  const startedAt = new Date();
  for (const [i, name] of names.entries()) {
    process.stderr.write(`[${i + 1}/${names.length}] ${name}${flags.quick ? ' (--quick)' : ''} …\n`);
    const t0 = performance.now();
    current = { name, ok: true, seconds: 0, tables: [] };
    records.push(current);
    try {
      await BENCHES[name]!(flags);
    } catch (err) {
      current.ok = false;
      current.error = (err as Error).message;
      process.stderr.write(`${name} failed: ${(err as Error).stack ?? String(err)}\n`);
    }
    current.seconds = Number(((performance.now() - t0) / 1000).toFixed(1));
    process.stderr.write(`[${i + 1}/${names.length}] ${name} ${current.ok ? 'done' : 'FAILED'} in ${current.seconds} s\n`);
  }
  const total = (performance.now() - started) / 1000;
  process.stdout.write(`\ntotal bench time ${total.toFixed(1)} s\n`);
  process.stdout.write = write;

  const mode = flags.quick ? 'quick' : 'full';
  const dir = join(fileURLToPath(new URL('../../bench/results/', import.meta.url)));
  mkdirSync(dir, { recursive: true });
  const stem = join(dir, `${startedAt.toISOString().replace(/[:.]/g, '-')}-${mode}`);
  const info = machine();
  writeFileSync(`${stem}.json`, JSON.stringify({ startedAt: startedAt.toISOString(), mode, totalSeconds: Number(total.toFixed(1)), machine: info, benches: records }, null, 2) + '\n');
  const header = `# Sigil benchmarks, ${mode} run, ${startedAt.toISOString()}\n\nmachine: ${Object.entries(info).map(([k, v]) => `${k} ${String(v)}`).join(', ')}\n${flags.quick ? '\n`--quick`: short phases, a smoke test; do not compare these numbers.\n' : ''}\n`;
  writeFileSync(`${stem}.md`, header + printed.join(''));
  process.stderr.write(`results: ${stem}.md and .json\n`);
  return records.every((r) => r.ok) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
