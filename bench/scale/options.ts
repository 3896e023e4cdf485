// Knobs of the scale bench (environment variables, read when the options are built).
export interface ScaleOptions {
  /** Which curves run: policy, bundle, connections. */
  parts: string[];
  /** Measured seconds per row (policy: per size), split over `rounds`. */
  seconds: number;
  rounds: number;
  policySizes: number[];
  bundleSizes: number[];
  connectionLevels: number[];
  settleMs: number;
}

const list = (name: string, fallback: string): string[] => (process.env[name] ?? fallback).split(',').map((s) => s.trim()).filter(Boolean);
const numbers = (name: string, fallback: string): number[] => {
  const out = list(name, fallback).map(Number);
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n <= 0)) throw new Error(`${name}: expected comma-separated positive integers`);
  return out.sort((a, b) => a - b);
};

export function scaleOptions(): ScaleOptions {
  return {
    parts: list('BENCH_SCALE_PARTS', 'policy,bundle,connections'),
    seconds: Number(process.env.BENCH_SCALE_SECONDS ?? 2),
    rounds: Number(process.env.BENCH_SCALE_ROUNDS ?? 3),
    policySizes: numbers('BENCH_SCALE_POLICY_SIZES', '10,100,1000'),
    bundleSizes: numbers('BENCH_SCALE_BUNDLE_SIZES', '1,10,100'),
    connectionLevels: numbers('BENCH_SCALE_CONNS', '100,1000,10000'),
    settleMs: Number(process.env.BENCH_SCALE_SETTLE_MS ?? 1500),
  };
}
