// `node dist/bench/run.js revocation`: the kill switch (src/revocation), in three parts, each
// with its baseline side by side in the same run:
//   1. lookup cost on the hot path by list size (0 entries = baseline), in process;
//   2. propagation: admin API → N sidecars over NATS JetStream, vs the raw NATS round trip
//      (skipped, loudly, without nats-server);
//   3. cutting 1000 live mTLS connections of the revoked agent, vs a raw Node https server
//      destroying the same number of connections.
// BENCH_REVOCATION_PARTS (e.g. "lookup,cut") runs a subset.
import { destroyAdminAgent } from './support.js';
import { runCutBench } from './cut.js';
import { runLookupBench } from './lookup.js';
import { runPropagationBench } from './propagation.js';

const env = (name: string, fallback: number): number => {
  const v = process.env[name];
  return v === undefined || v === '' ? fallback : Number(v);
};

const PARTS = ['lookup', 'propagation', 'cut'] as const;

export async function runRevocationBench(): Promise<void> {
  const parts = (process.env.BENCH_REVOCATION_PARTS ?? PARTS.join(',')).split(',').map((p) => p.trim());
  for (const p of parts) if (!(PARTS as readonly string[]).includes(p)) throw new Error(`BENCH_REVOCATION_PARTS: unknown part "${p}" (${PARTS.join(', ')})`);
  try {
    if (parts.includes('lookup')) {
      await runLookupBench({
        sizes: (process.env.BENCH_REVOCATION_SIZES ?? '0,1,10000,1000000').split(',').map(Number),
        seconds: env('BENCH_REVOCATION_LOOKUP_SECONDS', 0.4),
        rounds: env('BENCH_REVOCATION_LOOKUP_ROUNDS', 8),
      });
    }
    if (parts.includes('propagation')) {
      await runPropagationBench({
        // SIGIL_BENCH_SIDECARS is accepted as an alias.
        sidecars: Math.max(2, env('BENCH_REVOCATION_SIDECARS', env('SIGIL_BENCH_SIDECARS', 3))),
        rounds: env('BENCH_REVOCATION_ROUNDS', 12),
        natsSamples: env('BENCH_REVOCATION_NATS_SAMPLES', 3),
      });
    }
    if (parts.includes('cut')) {
      await runCutBench({ conns: env('BENCH_REVOCATION_CONNS', 1000), rounds: env('BENCH_REVOCATION_CUT_ROUNDS', 3) });
    }
  } finally {
    destroyAdminAgent();
  }
}
