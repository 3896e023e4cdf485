// Trust bundle size curve, in process: one SPIFFE path verification (PeerVerifier.verifyChain,
// which never answers from the verified-chain cache; the signature results of certificate
// pairs are memoized in spiffe/verify.ts, as on the hot path) against a bundle of 1, 10 and 100
// CAs in the peer's trust domain (the signing CA last, so a verifier that tries authorities in
// order pays for every other one), and with 10 federated trust domains of 10 CAs each beside
// it; next to raw X509Certificate.verify of the same leaf (what a never-seen leaf pays once).
// Rows take turns in alternating rounds after a warm-up.
import { X509Certificate } from 'node:crypto';
import { createCa, createLeaf, type Issued } from '../../src/probe/mint.js';
import { BundleSet, X509Bundle } from '../../src/spiffe/index.js';
import { PeerVerifier } from '../../src/tls/index.js';
import type { ScaleOptions } from './options.js';
import { reportCurve, type CurveRow } from './report.js';

const TDN = 'bench.example';
const BATCH = 64;

interface Row extends CurveRow {
  call: () => unknown;
}

function runFor(r: Row, seconds: number, record: boolean): void {
  const deadline = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
  let sink = 0;
  while (process.hrtime.bigint() < deadline) {
    const t0 = process.hrtime.bigint();
    for (let k = 0; k < BATCH; k++) sink += r.call() === undefined ? 0 : 1;
    if (record) r.batchUs.push(Number(process.hrtime.bigint() - t0) / 1000 / BATCH);
  }
  if (sink < 0) throw new Error('unreachable');
}

async function bundleRows(sizes: number[]): Promise<Row[]> {
  const signer = await createCa({ trustDomain: TDN });
  const leaf: Issued = await createLeaf(signer, `spiffe://${TDN}/agent/svc-1`);
  const chain = [new X509Certificate(leaf.der)];
  const others: Issued[] = [];
  for (let k = 1; k < Math.max(...sizes); k++) others.push(await createCa({ trustDomain: TDN }));
  const bundleOf = (n: number): X509Bundle => new X509Bundle(TDN, [...others.slice(0, n - 1).map((c) => c.cert), signer.cert]);
  const federated: X509Bundle[] = [];
  for (let d = 0; d < 10; d++) {
    const cas: X509Certificate[] = [];
    for (let k = 0; k < 10; k++) cas.push((await createCa({ trustDomain: `partner-${d}.example` })).cert);
    federated.push(new X509Bundle(`partner-${d}.example`, cas));
  }
  const row = (name: string, call: () => unknown): Row => ({ name, call, batchUs: [], batch: BATCH });
  const verifyRow = (name: string, bundles: BundleSet): Row => {
    const verifier = new PeerVerifier();
    return row(name, () => verifier.verifyChain(chain, bundles).id);
  };
  const largest = sizes[sizes.length - 1]!;
  return [
    row('raw X509Certificate.verify (one signature: a leaf never seen before pays it once)', () => chain[0]!.verify(signer.cert.publicKey)),
    ...sizes.map((n) => verifyRow(`verifyChain, ${n} CA${n === 1 ? '' : 's'} in the domain`, new BundleSet([bundleOf(n)]))),
    verifyRow(`verifyChain, ${largest} CAs + 10 federated domains × 10 CAs`, new BundleSet([bundleOf(largest), ...federated])),
  ];
}

export async function runBundleCurve(o: ScaleOptions): Promise<void> {
  const rows = await bundleRows(o.bundleSizes);
  for (const r of rows) runFor(r, Math.min(0.2, o.seconds / 4), false);
  for (let round = 0; round < o.rounds; round++) {
    for (const r of round % 2 === 0 ? rows : [...rows].reverse()) runFor(r, o.seconds / o.rounds, true);
  }
  reportCurve('trust bundle size: one SPIFFE path verification, no chain cache (baseline: 1 CA)', rows, rows[1]!);
}
