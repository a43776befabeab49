// What the rerank routes do with a reranker's raw scores, as pure functions: logit -> probability,
// best-first order and top_n. Each API is a formatter over these.

/** One document's result as the engine gives it: index in the request, the rank head's output, tokens read. */
export type RawRanking = { index: number; score: number; tokens: number };
/** What the rank head returns: a logit (bert/xlm-roberta cross-encoders) or already a probability (qwen3 rerankers). */
export type ScoreKind = "logit" | "probability";
export type RankedResult = { index: number; raw: number; score: number };

/** 1 / (1 + e^-x): a cross-encoder's logit as a relevance probability (what Cohere, Jina and TEI return). */
export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/**
 * Best first (equal scores keep request order, so the output is deterministic); `topN` cuts the list.
 * `score` is a probability, or the head's raw output when `raw` (TEI's raw_scores, llama-server's
 * convention); `raw` is always the head's output. A head that already gives probabilities keeps them.
 */
export function rankResults(
  rankings: readonly RawRanking[],
  options: { topN?: number | undefined; raw?: boolean | undefined; scoreKind?: ScoreKind } = {},
): RankedResult[] {
  const toProbability = options.scoreKind === "probability" ? (x: number) => x : sigmoid;
  const ranked = rankings.map((r) => ({ index: r.index, raw: r.score, score: options.raw ? r.score : toProbability(r.score) }));
  ranked.sort((a, b) => b.raw - a.raw || a.index - b.index);
  return options.topN === undefined ? ranked : ranked.slice(0, options.topN);
}
