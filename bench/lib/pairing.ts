// Pure logic of the paired bench: the order of the alternating blocks, the ratio of a row (the median of
// per-pair ratios with its min–max) and the drift detector. No I/O, no servers: unit-tested in
// test/bench-pairing.test.ts.
import { median } from "./stats.ts";

export type Side = "ours" | "llama";

/**
 * The block order for `pairs` pairs: A B, B A, A B, B A ... (A = ours). Each pair's two blocks run back to
 * back; flipping the order every pair cancels a steady drift across a pair instead of always favouring the
 * side that goes first.
 */
export function blockOrder(pairs: number): [Side, Side][] {
  if (!Number.isInteger(pairs) || pairs < 1) throw new Error(`pairs must be a whole number of at least 1; got ${pairs}`);
  return Array.from({ length: pairs }, (_, i) => (i % 2 === 0 ? ["ours", "llama"] : ["llama", "ours"]));
}

/** One pair of blocks of one row: each side's value (null when that block failed). */
export type PairSample = { ours: number | null; llama: number | null };

export type DriftCheck = {
  /** Largest over smallest value of each side's blocks within the run (1 = steady). */
  ours: number;
  llama: number;
  /** The factor the row was checked against. */
  factor: number;
  /** Either side's blocks varied by more than `factor`: the machine (or a server) was not steady. */
  unstable: boolean;
};

export type PairedSummary = {
  /** Median of each side's block values. */
  ours: number | null;
  llama: number | null;
  /** Median of the per-pair ratios ours/llama-server; null when no pair has both values. */
  ratio: number | null;
  /** Lowest and highest per-pair ratio, and how many pairs gave one. */
  spread: { pairs: number; min: number; max: number } | null;
  drift: DriftCheck;
};

/** Values a ratio can be taken of: finite and positive (a zero or negative time or rate is a broken block). */
function usable(x: number | null): x is number {
  return x !== null && Number.isFinite(x) && x > 0;
}

/** max/min of the usable values; 1 with fewer than two. */
export function driftFactor(values: readonly (number | null)[]): number {
  const xs = values.filter(usable);
  if (xs.length < 2) return 1;
  return Math.max(...xs) / Math.min(...xs);
}

/**
 * One row's summary from its pairs. The ratio is the median of the per-pair ratios, never a ratio of
 * medians: each pair compares the two servers within seconds of each other, so a machine that slows down
 * between pairs moves both sides of a pair together. A row whose own side's blocks differ by more than
 * `factor` (largest over smallest) is marked unstable.
 */
export function summarizePairs(samples: readonly PairSample[], factor: number): PairedSummary {
  if (!(factor > 1)) throw new Error(`the drift factor must be above 1; got ${factor}`);
  const ratios = samples.filter((s) => usable(s.ours) && usable(s.llama)).map((s) => (s.ours as number) / (s.llama as number));
  const side = (pick: (s: PairSample) => number | null) => {
    const xs = samples.map(pick).filter(usable);
    return xs.length === 0 ? null : median(xs);
  };
  const oursDrift = driftFactor(samples.map((s) => s.ours));
  const llamaDrift = driftFactor(samples.map((s) => s.llama));
  return {
    ours: side((s) => s.ours),
    llama: side((s) => s.llama),
    ratio: ratios.length === 0 ? null : median(ratios),
    spread: ratios.length === 0 ? null : { pairs: ratios.length, min: Math.min(...ratios), max: Math.max(...ratios) },
    drift: { ours: oursDrift, llama: llamaDrift, factor, unstable: oursDrift > factor || llamaDrift > factor },
  };
}
