// The paired bench's pure logic (bench/lib/pairing.ts): block order, median of per-pair ratios with its
// spread, and the drift detector that marks a row UNSTABLE. No model or server involved.
import t from "tap";
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
