// `npm run bench` → node dist/bench/run.js [handshake|proxy|authz|envelope|delegation|revocation|egress]... [--quick]
// Runs the hot-path benchmarks in sequence, each with its baseline side by side.
// `--quick` shortens the benches that have a quick mode (egress); the others ignore it.
import { runAuthzBench } from './authz.js';
import { runDelegationBench } from './delegation.js';
import { egressOptions, runEgressBench } from './egress.js';
import { runEnvelopeBench } from './envelope.js';
import { runHandshakeBench } from './handshake.js';
import { runProxyBench } from './proxy.js';
import { runRevocationBench } from './revocation/index.js';

interface RunFlags {
  quick: boolean;
}

const BENCHES: Record<string, (flags: RunFlags) => Promise<void>> = {
  handshake: () => runHandshakeBench(),
  proxy: () => runProxyBench(),
  authz: () => runAuthzBench(),
  envelope: () => runEnvelopeBench(),
  delegation: () => runDelegationBench(),
  revocation: () => runRevocationBench(),
  egress: (f) => runEgressBench(egressOptions(f.quick)),
};

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
  const started = performance.now();
  let failed = false;
  for (const name of wanted.length > 0 ? wanted : Object.keys(BENCHES)) {
    try {
      await BENCHES[name]!(flags);
    } catch (err) {
      failed = true;
      process.stderr.write(`${name} failed: ${(err as Error).stack ?? String(err)}\n`);
    }
  }
  process.stdout.write(`\ntotal bench time ${((performance.now() - started) / 1000).toFixed(1)} s\n`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
