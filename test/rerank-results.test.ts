// The rerank routes' pure parts: logit -> probability, best-first order, top_n (no model needed: these
// are arithmetic on the engine's raw output).
import fc from "fast-check";
import t from "tap";
import { rankResults, sigmoid } from "../src/http/rerankResults.js";
import { toProbability } from "../src/engine/rerank.js";

t.test("sigmoid: 0 -> 0.5, symmetric, finite at the extremes", async (t) => {
  t.equal(sigmoid(0), 0.5);
  t.ok(Math.abs(sigmoid(2) + sigmoid(-2) - 1) < 1e-15);
  t.equal(sigmoid(1000), 1);
  t.equal(sigmoid(-1000), 0);
  t.ok(Math.abs(sigmoid(1) - 0.7310585786300049) < 1e-15);
  for (const x of [-30, -2.5, 0, 0.1, 7]) t.ok(Math.abs(sigmoid(x) - toProbability(x)) < 1e-15, `the engine's toProbability agrees at ${x}`);
});

t.test("rankResults: best first, ties in request order, top_n, raw or probability", async (t) => {
  const raw = [{ index: 0, score: -1, tokens: 5 }, { index: 1, score: 3, tokens: 6 }, { index: 2, score: 3, tokens: 7 }, { index: 3, score: 0, tokens: 4 }];
  t.same(rankResults(raw).map((r) => r.index), [1, 2, 3, 0]);
  t.same(rankResults(raw, { topN: 2 }).map((r) => r.index), [1, 2]);
  t.same(rankResults(raw, { topN: 10 }).length, 4, "top_n past the list returns all");
  t.same(rankResults(raw, { raw: true }).map((r) => r.score), [3, 3, 0, -1]);
  t.same(rankResults(raw).map((r) => r.score), [sigmoid(3), sigmoid(3), 0.5, sigmoid(-1)]);
  t.same(rankResults(raw).map((r) => r.raw), [3, 3, 0, -1]);
  const probabilities = [{ index: 0, score: 0.2, tokens: 1 }, { index: 1, score: 0.9, tokens: 1 }];
  t.same(rankResults(probabilities, { scoreKind: "probability" }).map((r) => [r.index, r.score]), [[1, 0.9], [0, 0.2]], "a qwen3 head's probabilities are kept");
});

t.test("rankResults (property): a permutation of the input, sorted by raw score, probabilities in 0..1", async (t) => {
  fc.assert(fc.property(fc.array(fc.double({ min: -50, max: 50, noNaN: true }), { maxLength: 40 }), fc.option(fc.integer({ min: 1, max: 50 }), { nil: undefined }), (scores, topN) => {
    const ranked = rankResults(scores.map((score, index) => ({ index, score, tokens: 1 })), { topN });
    const all = rankResults(scores.map((score, index) => ({ index, score, tokens: 1 })));
    if ([...all.map((r) => r.index)].sort((a, b) => a - b).join() !== scores.map((_, i) => i).join()) return false;
    for (let i = 1; i < all.length; i++) if (all[i - 1]!.raw < all[i]!.raw || all[i - 1]!.score < all[i]!.score) return false;
    return ranked.length === Math.min(topN ?? scores.length, scores.length) && all.every((r) => r.score >= 0 && r.score <= 1 && r.raw === scores[r.index]);
  }));
  t.pass();
});
