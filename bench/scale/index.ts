// Scale curves: how Sigil's costs grow with what a deployment holds, each beside its baseline.
//   - policy: one uncached Cedar decision and the compile (reload) time at 10 / 100 / 1,000 rules;
//   - bundle: one SPIFFE path verification with 1 / 10 / 100 CAs and 10 federated domains;
//   - connections: resident memory per open verified mTLS connection at 100 / 1k / 10k,
//     beside a raw Node https server.
// Revocation list size (0 to 1M entries) is part 1 of the revocation bench; payload size
// (256 B to 16 KiB) is in the envelope bench.
import { machineLine } from '../lib.js';
import { runBundleCurve } from './bundle.js';
import { runConnectionsCurve } from './connections.js';
import { scaleOptions, type ScaleOptions } from './options.js';
import { runPolicyCurve } from './policy.js';

export async function runScaleBench(o: ScaleOptions = scaleOptions()): Promise<void> {
  process.stdout.write(`\n## scale: cost as the deployment grows (${o.seconds} s per row in ${o.rounds} alternating rounds)\n${machineLine()}\n`);
  for (const part of o.parts) {
    if (part === 'policy') await runPolicyCurve(o);
    else if (part === 'bundle') await runBundleCurve(o);
    else if (part === 'connections') await runConnectionsCurve({ levels: o.connectionLevels, settleMs: o.settleMs });
    else throw new Error(`BENCH_SCALE_PARTS: unknown part "${part}" (policy, bundle, connections)`);
  }
  process.stdout.write('\nRevocation list size (0 to 1M entries): the revocation bench, part 1. Payload size (256 B to 16 KiB): the envelope bench.\n');
}
