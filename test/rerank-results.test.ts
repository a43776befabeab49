// The rerank routes' pure parts: logit -> probability, best-first order, top_n, and the limits checked
// before the model runs (no model needed: these are arithmetic on the engine's raw output).
import fc from "fast-check";
import t from "tap";
import { checkRerankLimits, rankResults, sigmoid } from "../src/http/rerankResults.js";

t.test("sigmoid: 0 -> 0.5, symmetric, finite at the extremes", async (t) => {
  t.equal(sigmoid(0), 0.5);
  t.ok(Math.abs(sigmoid(2) + sigmoid(-2) - 1) < 1e-15);
  t.equal(sigmoid(1000), 1);
  t.equal(sigmoid(-1000), 0);
  t.ok(Math.abs(sigmoid(1) - 0.7310585786300049) < 1e-15);
});

t.test("rankResults: best first, ties in request order, top_n, raw or probability", async (t) => {
  const raw = [{ index: 0, score: -1, tokens: 5 }, { index: 1, score: 3, tokens: 6 }, { index: 2, score: 3, tokens: 7 }, { index: 3, score: 0, tokens: 4 }];
  t.same(rankResults(raw).map((r) => r.index), [1, 2, 3, 0]);
  t.same(rankResults(raw, { topN: 2 }).map((r) => r.index), [1, 2]);
  t.same(rankResults(raw, { topN: 10 }).length, 4, "top_n past the list returns all");
  t.same(rankResults(raw, { raw: true }).map((r) => r.score), [3, 3, 0, -1]);
  t.same(rankResults(raw).map((r) => r.score), [sigmoid(3), sigmoid(3), 0.5, sigmoid(-1)]);
  t.same(rankResults(raw).map((r) => r.raw), [3, 3, 0, -1]);
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

t.test("checkRerankLimits: documents per request, tokens per pair, Cohere's max_tokens_per_doc", async (t) => {
  const limits = { maxDocuments: 3, maxTokensPerPair: 20 };
  t.equal(checkRerankLimits({ queryTokens: 5, documentTokens: [10, 11], pairOverhead: 4 }, limits, "documents"), null, "5 + 11 + 4 = 20 fits");
  t.match(checkRerankLimits({ queryTokens: 5, documentTokens: [10, 12], pairOverhead: 4 }, limits, "documents"),
    { kind: "pair_too_long", field: "documents[1]", message: /21 tokens.*at most 20/ });
  t.match(checkRerankLimits({ queryTokens: 1, documentTokens: [1, 1, 1, 1], pairOverhead: 4 }, limits, "texts"),
    { kind: "too_many_documents", field: "texts", message: /4 documents.*at most 3/ });
  t.match(checkRerankLimits({ queryTokens: 1, documentTokens: [3, 9], pairOverhead: 4 }, { ...limits, maxTokensPerDocument: 8 }, "documents"),
    { kind: "document_too_long", field: "documents[1]" });
});
