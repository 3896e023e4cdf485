// Child process of the policy-size curve: compiles a policy of N rules and times uncached
// Cedar decisions (CedarAuthorizer.authorize with the decision cache dropped before every
// batch, so every call evaluates in WASM) for the given seconds after a warm-up, then prints one
// JSON line {compileMs, firstCallUs, rssGrowthMiB, slices, batchUs, allowed, calls}. Before the
// warm-up it times the first call of each of the 63 agents (what a new pair costs: for a pinned
// policy that includes registering its slice) and the resident memory that added.
//
// Each size runs in its own short-lived process because long loops calling into Cedar's WASM
// crash V8 in Node 20 (fatal "unreachable code" in the deoptimizer) once the 1,000-rule policy
// has been evaluated long enough in one process; the authz bench met the same bug.
// Usage: node policy-child.js --rules N --shape pinned|unpinned --seconds S --warmup S
import { CedarAuthorizer, compileCedarPolicy } from '../../src/authz/index.js';
import { args } from '../servers/common.js';
import { policyOf, policyRequests, type PolicyShape } from './policy-fixture.js';

const BATCH = 64;
const a = args();
const rules = Number(a.rules);
const seconds = Number(a.seconds);
const warmup = Number(a.warmup ?? 0.2);
const shape = (a.shape ?? 'pinned') as PolicyShape;

const t0 = performance.now();
const authz = new CedarAuthorizer(compileCedarPolicy(policyOf(rules, shape), `scale-${rules}-${shape}.cedar`));
const compileMs = performance.now() - t0;
const requests = policyRequests(4096);

// The first call of each agent (requests 0..62 are the 63 distinct principals).
const rss0 = process.memoryUsage().rss;
const firstCallUs: number[] = [];
for (let k = 0; k < 63; k++) {
  const f0 = process.hrtime.bigint();
  authz.authorize(requests[k]!);
  firstCallUs.push(Number(process.hrtime.bigint() - f0) / 1000);
}
const rssGrowthMiB = (process.memoryUsage().rss - rss0) / 1048576;
let i = 0;
let allowed = 0;
let calls = 0;

function timeFor(s: number, out: number[] | undefined): void {
  const deadline = process.hrtime.bigint() + BigInt(Math.round(s * 1e9));
  while (process.hrtime.bigint() < deadline) {
    authz.dropCachedDecisions();
    const b0 = process.hrtime.bigint();
    for (let k = 0; k < BATCH; k++) {
      if (authz.authorize(requests[i++ % requests.length]!).allowed) allowed++;
    }
    out?.push(Number(process.hrtime.bigint() - b0) / 1000 / BATCH);
    calls += BATCH;
  }
}

timeFor(warmup, undefined);
allowed = 0;
calls = 0;
const batchUs: number[] = [];
timeFor(seconds, batchUs);
process.stdout.write(JSON.stringify({ compileMs, firstCallUs, rssGrowthMiB, slices: authz.sliceCount, batchUs, allowed, calls }) + '\n');
