// What the rerank routes do with a reranker's raw scores, as pure functions: the limits checked before
// the model runs, logit -> probability, best-first order and top_n. Each API is a formatter over these.

/** One document's result as the engine gives it: index in the request, raw logit, tokens read. */
export type RawRanking = { index: number; score: number; tokens: number };
export type RankedResult = { index: number; raw: number; score: number };

/** 1 / (1 + e^-x): a cross-encoder's logit as a relevance probability (what Cohere, Jina and TEI return). */
export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/**
 * Best first (equal scores keep request order, so the output is deterministic); `topN` cuts the list.
 * `score` is the probability, or the raw logit when `raw` (TEI's raw_scores, llama-server's convention).
 */
export function rankResults(rankings: readonly RawRanking[], options: { topN?: number | undefined; raw?: boolean | undefined } = {}): RankedResult[] {
  const ranked = rankings.map((r) => ({ index: r.index, raw: r.score, score: options.raw ? r.score : sigmoid(r.score) }));
  ranked.sort((a, b) => b.raw - a.raw || a.index - b.index);
  return options.topN === undefined ? ranked : ranked.slice(0, options.topN);
}

export type RerankLimits = {
  /** Documents one request may rank (RERANK_MAX_DOCUMENTS). */
  maxDocuments: number;
  /** Tokens one query + document pair may have (the reranker's context). */
  maxTokensPerPair: number;
  /** Cohere v2's max_tokens_per_doc, when the request gives it. */
  maxTokensPerDocument?: number | undefined;
};

export type RerankLimitProblem = { kind: "too_many_documents" | "pair_too_long" | "document_too_long"; message: string; field: string };

/**
 * The first limit a request breaks, or null. `pairOverhead` is the special tokens around the two
 * texts ([CLS] q [SEP] d [SEP], <s> q </s></s> d </s>); `documentsField` is how the API names the list.
 */
export function checkRerankLimits(
  counts: { queryTokens: number; documentTokens: readonly number[]; pairOverhead: number },
  limits: RerankLimits,
  documentsField: string,
): RerankLimitProblem | null {
  const n = counts.documentTokens.length;
  if (n > limits.maxDocuments) {
    return { kind: "too_many_documents", field: documentsField, message: `${n} documents in one request; at most ${limits.maxDocuments} (RERANK_MAX_DOCUMENTS).` };
  }
  for (let i = 0; i < n; i++) {
    const doc = counts.documentTokens[i]!;
    if (limits.maxTokensPerDocument !== undefined && doc > limits.maxTokensPerDocument) {
      return { kind: "document_too_long", field: `${documentsField}[${i}]`, message: `${documentsField}[${i}] is ${doc} tokens; max_tokens_per_doc is ${limits.maxTokensPerDocument}.` };
    }
    const pair = counts.queryTokens + doc + counts.pairOverhead;
    if (pair > limits.maxTokensPerPair) {
      return {
        kind: "pair_too_long", field: `${documentsField}[${i}]`,
        message: `query + ${documentsField}[${i}] are ${pair} tokens; the reranker reads at most ${limits.maxTokensPerPair} per pair (shorten the document or split it).`,
      };
    }
  }
  return null;
}
