// The paired bench's pure logic (bench/lib/pairing.ts): block order, median of per-pair ratios with its
// spread, the drift detector that marks a row UNSTABLE, and how the runner (paired.ts) turns measured
// blocks into a table row. No model or server involved.
import t from "tap";
import { pairedRow, type BlockRecord, type MetricRecord } from "../bench/lib/paired.ts";
import { blockOrder, driftFactor, summarizePairs } from "../bench/lib/pairing.ts";
import { markdownTable, type Row } from "../bench/lib/report.ts";

t.test("blocks alternate A B, B A, A B ...", async (t) => {
  t.same(blockOrder(1), [["ours", "llama"]]);
  t.same(blockOrder(4), [["ours", "llama"], ["llama", "ours"], ["ours", "llama"], ["llama", "ours"]]);
  t.same(blockOrder(5).flat(), ["ours", "llama", "llama", "ours", "ours", "llama", "llama", "ours", "ours", "llama"]);
  for (const bad of [0, -1, 1.5, Number.NaN]) t.throws(() => blockOrder(bad), `pairs=${bad}`);
});

t.test("the ratio is the median of per-pair ratios, not a ratio of medians", async (t) => {
  // The machine halves its speed after the second pair: both sides slow down together.
  const s = summarizePairs([
    { ours: 10, llama: 10 }, { ours: 11, llama: 10 }, { ours: 5, llama: 5.5 }, { ours: 5.2, llama: 5 },
  ], 100);
  t.equal(s.spread?.pairs, 4);
  t.equal(s.ratio, (1.0 + 1.04) / 2);
  t.equal(s.spread?.min, 5 / 5.5);
  t.equal(s.spread?.max, 1.1);
  t.equal(s.ours, (5.2 + 10) / 2);
  t.equal(s.llama, (5.5 + 10) / 2);
});

t.test("a failed block drops its pair from the ratio but keeps the other side's value", async (t) => {
  const s = summarizePairs([{ ours: 10, llama: 8 }, { ours: null, llama: 9 }, { ours: 12, llama: 0 }], 2);
  t.equal(s.spread?.pairs, 1);
  t.equal(s.ratio, 10 / 8);
  t.equal(s.ours, 11);
  t.equal(s.llama, 8.5, "a zero is not a measured value");
  const none = summarizePairs([{ ours: null, llama: 3 }], 2);
  t.equal(none.ratio, null);
  t.equal(none.spread, null);
  t.equal(none.ours, null);
});

t.test("drift: one side's blocks differing by more than the factor mark the row unstable", async (t) => {
  t.equal(driftFactor([]), 1);
  t.equal(driftFactor([7, null]), 1);
  t.equal(driftFactor([2, 4, 3]), 2);
  // The 2026-11-29 case: llama-server's own decode fell from 11.4 to 1.5 tok/s within one run.
  const drifting = summarizePairs([{ ours: 15.4, llama: 11.4 }, { ours: 10.4, llama: 1.87 }, { ours: 5.05, llama: 1.49 }], 1.5);
  t.ok(drifting.drift.unstable);
  t.ok(drifting.drift.llama > 7);
  const steady = summarizePairs([{ ours: 10, llama: 10.5 }, { ours: 10.8, llama: 10 }, { ours: 10.2, llama: 10.3 }], 1.5);
  t.notOk(steady.drift.unstable);
  t.ok(steady.drift.ours < 1.1);
  // Exactly at the factor is still stable; just above it is not.
  t.notOk(summarizePairs([{ ours: 2, llama: 1 }, { ours: 3, llama: 1 }], 1.5).drift.unstable);
  t.ok(summarizePairs([{ ours: 2, llama: 1 }, { ours: 3.01, llama: 1 }], 1.5).drift.unstable);
  t.throws(() => summarizePairs([], 1));
});

t.test("an unstable row shows UNSTABLE instead of its ratio, and no PASS/FAIL", async (t) => {
  const row: Row = {
    id: "decode", label: "Single-stream decode", unit: "tok/s", digits: 2, ours: 10, llama: 5, ratio: 2, better: "higher",
    target: { text: "≥ 1.0x", limit: 1, pass: true }, failed: { ours: false, llama: false },
    spread: { runs: 3, min: 1.2, max: 5.1 }, spreadOf: "pairs", unstable: { ours: 1.1, llama: 7.6, factor: 1.5 },
  };
  const table = markdownTable([row]);
  t.match(table, /UNSTABLE/);
  t.notMatch(table, /PASS|FAIL/);
  t.notMatch(table, /\| +2\.00x/);
  t.match(table, /Min–max \(3 pairs\)/);
  const stable = markdownTable([{ ...row, unstable: null }]);
  t.match(stable, /2\.00x/);
  t.match(stable, /PASS/);
});

t.test("the paired runner's rows: blocks matched into pairs by pair number, whatever the order", async (t) => {
  const spec = { id: "decode", label: "Single-stream decode", unit: "tok/s", digits: 2, better: "higher" as const, limit: 1.0 };
  const block = (pair: number, side: "ours" | "llama", value: number | null, error?: string): BlockRecord => {
    const values: Record<string, number> = value === null ? {} : { decode: value };
    return { pair, side, values, otherCores: 0, seconds: 1, ...(error === undefined ? {} : { error }) };
  };
  // A B, B A, A B: the second pair ran llama-server first.
  const record: MetricRecord = { metric: "decode", group: "main", errors: [], blocks: [
    block(0, "ours", 10), block(0, "llama", 8), block(1, "llama", 9), block(1, "ours", 9), block(2, "ours", 11), block(2, "llama", 10),
  ] };
  const row = pairedRow(spec, record, 1.5);
  t.equal(row.ratio, 1.1, "median of 1.25, 1.0 and 1.1");
  t.same(row.spread, { runs: 3, min: 1, max: 1.25 });
  t.equal(row.spreadOf, "pairs");
  t.equal(row.unstable, null);
  t.equal(row.target?.pass, true);
  t.same(row.failed, { ours: false, llama: false });

  const drifting = pairedRow(spec, { ...record, blocks: [block(0, "ours", 10), block(0, "llama", 11.4), block(1, "llama", 1.5), block(1, "ours", 9)] }, 1.5);
  t.ok(drifting.unstable, "llama-server's 11.4 -> 1.5 tok/s marks the row");
  t.match(markdownTable([drifting]), /UNSTABLE/);

  const oursFailed = pairedRow(spec, { ...record, blocks: [block(0, "ours", null, "boom"), block(0, "llama", 8), block(1, "llama", 9), block(1, "ours", null, "boom")] }, 1.5);
  t.same(oursFailed.failed, { ours: true, llama: false });
  t.equal(oursFailed.ratio, null);
  t.equal(oursFailed.target?.pass, false, "a side of ours that failed every block fails the target");
  t.match(markdownTable([oursFailed]), /ERROR/);

  const noisy = pairedRow({ ...spec, id: "health_p99", driftFactor: 2.5 }, { ...record, blocks: [block(0, "ours", 2), block(0, "llama", 2), block(1, "llama", 4), block(1, "ours", 4)].map((b) => ({ ...b, values: { health_p99: b.values["decode"] ?? 0 } })) }, 1.5);
  t.equal(noisy.unstable, null, "a row's own drift factor (2.5) overrides the default (1.5)");
});

t.test("a row with oursLimit judges ours' own value (e.g. after-restart / warm TTFT), not the ratio", async (t) => {
  const spec = { id: "cache_restart_over_warm", label: "After-restart / warm", unit: "x", digits: 2, better: "lower" as const, oursLimit: 1.2 };
  const block = (pair: number, side: "ours" | "llama", value: number): BlockRecord => ({ pair, side, values: { cache_restart_over_warm: value }, otherCores: 0, seconds: 1 });
  // Ours 1.1x its own warm TTFT, llama-server 8x: the ratio (0.14) would pass any ratio target; ours' own value decides.
  const record: MetricRecord = { metric: "cache-restart", group: "cache", errors: [], blocks: [block(0, "ours", 1.1), block(0, "llama", 8), block(1, "llama", 8), block(1, "ours", 1.1)] };
  const row = pairedRow(spec, record, 2.5);
  t.equal(row.target?.pass, true);
  t.match(row.target?.text, /^ours ≤ 1\.2x$/);
  const slow = pairedRow(spec, { ...record, blocks: [block(0, "ours", 1.5), block(0, "llama", 8), block(1, "llama", 8), block(1, "ours", 1.5)] }, 2.5);
  t.equal(slow.target?.pass, false, "ours 1.5x its own warm TTFT fails although the ratio against llama-server is 0.19");
  t.ok((slow.ratio ?? 1) < 0.2);
});
