// The reranking model (a cross-encoder such as bge-reranker-v2-m3, or a Qwen3-style reranker with a rerank
// template): builds each query+document pair exactly as llama-server does, checks the limits, and scores the
// pairs through the batched native embedder with rank pooling. Pairs of concurrent requests share one queue,
// so many pairs (from one request or several) go into each llama_decode, each pair its own sequence.
//
// A bert-like cross-encoder attends in both directions, so the query cannot be decoded once and shared between
// pairs: every pair is a full sequence. Scores are what llama.cpp's rank head returns (element 0 of the head's
// output, as llama-server's /rerank): a raw logit for xlm-roberta/bert heads, already a probability for qwen3
// (llama.cpp applies a softmax there). `scoreKind` says which; `toProbability` maps a logit the way
// node-llama-cpp's LlamaRankingContext and TEI (raw_scores: false) do.
import { EngineError, invalidRequest } from "./errors.js";
import { TokenBatchQueue, type BatchListener, type QueueBounds, type QueueStats } from "./tokenBatchQueue.js";
import { NativeBatchEmbedder, type NativeSpecialTokens } from "./native/batchEmbedder.js";

export type RerankEngineOptions = {
  modelPath: string;
  modelName: string;
  aliases?: readonly string[];
  threads: number;
  /** Tokens packed into one llama_decode (a longer pair is decoded alone). */
  batchTokens: number;
  /** Most pairs (sequences) per llama_decode, 1..256. */
  batchSequences: number;
  /** Layers to offload to a GPU; default 0. */
  gpuLayers?: number;
  /** Most tokens one query+document pair may have (manifest `maxTokens`); default the model's trained context. */
  maxTokens?: number;
  /** Most documents one request may score. */
  maxDocuments: number;
  /** A pair over the limit: true cuts the document (the query stays whole), false rejects the request (400). */
  truncate: boolean;
  /** Pairs and tokens of all requests admitted and not yet answered (RETRIEVAL_QUEUE_*); beyond: 429. Default: unbounded. */
  queue?: QueueBounds;
  /** Flash attention: default llama.cpp's "auto" (on where the backend has it); the bench's oracle turns it off on both sides. */
  flashAttention?: boolean;
};

export type RerankOptions = {
  /** Per request (TEI's `truncate`); default: the engine's setting. */
  truncate?: boolean;
  /** How the caller's API names the documents and the query, for errors (`documents`, `texts`; `query`). */
  field?: string;
  queryField?: string;
  /** Ends the request (its reason is the error): its waiting pairs leave the queue at once. */
  signal?: AbortSignal;
};

/** One document's score, in input order. */
export type RerankScore = {
  index: number;
  /** The rank head's value: a logit or a probability, see `RerankEngine.scoreKind`. */
  score: number;
  /** Tokens of the query+document pair as decoded. */
  tokens: number;
  /** The document was cut to fit `maxTokensPerPair`. */
  truncated: boolean;
};

/** The logistic function: a cross-encoder logit as a relevance probability in (0, 1). */
export function toProbability(logit: number): number {
  return 1 / (1 + Math.exp(-logit));
}

/**
 * How a pair becomes tokens, as llama-server's format_prompt_rerank: with a rerank template (Qwen3-Reranker),
 * the template's {query} and {document} replaced, then tokenized with special tokens parsed; otherwise
 * [BOS] query [EOS] [SEP] document [EOS], each marker only where the vocabulary says to add it.
 */
export type PairFormat =
  | { kind: "template"; template: string }
  | { kind: "special"; bos: number | null; eos: number | null; sep: number | null };

export function pairFormat(special: NativeSpecialTokens, rerankTemplate: string | null): PairFormat {
  if (rerankTemplate !== null) return { kind: "template", template: rerankTemplate };
  // llama-server: SEP stands in for a missing EOS.
  const eos = special.eos >= 0 ? special.eos : special.sep;
  return {
    kind: "special",
    bos: special.addBos && special.bos >= 0 ? special.bos : null,
    eos: special.addEos && eos >= 0 ? eos : null,
    sep: special.addSep && special.sep >= 0 ? special.sep : null,
  };
}

/** The template filled in as llama-server's string_replace_all does it: {query} first, then {document}. */
export function fillRerankTemplate(template: string, query: string, document: string): string {
  return template.replaceAll("{query}", () => query).replaceAll("{document}", () => document);
}

/** [BOS] query [EOS] [SEP] document [EOS], with the markers `format` asks for. */
export function assemblePair(format: Extract<PairFormat, { kind: "special" }>, query: Uint32Array, document: Uint32Array): Uint32Array {
  const head = (format.bos === null ? 0 : 1) + query.length + (format.eos === null ? 0 : 1) + (format.sep === null ? 0 : 1);
  const out = new Uint32Array(head + document.length + (format.eos === null ? 0 : 1));
  let at = 0;
  if (format.bos !== null) out[at++] = format.bos;
  out.set(query, at);
  at += query.length;
  if (format.eos !== null) out[at++] = format.eos;
  if (format.sep !== null) out[at++] = format.sep;
  out.set(document, at);
  at += document.length;
  if (format.eos !== null) out[at++] = format.eos;
  return out;
}

export class RerankEngine {
  readonly modelName: string;
  readonly aliases: readonly string[];
  readonly loadMs: number;
  /** Most tokens one pair may have. */
  readonly maxTokensPerPair: number;
  readonly maxDocuments: number;
  /** What `score` is: a logit (bert/xlm-roberta heads) or a probability (qwen3: llama.cpp applies a softmax). */
  readonly scoreKind: "logit" | "probability";
  readonly format: PairFormat;
  /** Pairs of every request wait here for a decode, one sequence each (rank pooling: one score per sequence). */
  private readonly queue: TokenBatchQueue<number>;

  private constructor(private readonly embedder: NativeBatchEmbedder, private readonly options: RerankEngineOptions, loadMs: number) {
    this.modelName = options.modelName;
    this.aliases = options.aliases ?? [];
    this.loadMs = loadMs;
    this.maxTokensPerPair = embedder.maxTokensPerText;
    this.maxDocuments = options.maxDocuments;
    // Rank pooling gives one value per sequence: the pair's score.
    this.queue = new TokenBatchQueue(embedder, async (batch) => (await embedder.embed(batch)).map((output) => output[0]!), options.queue);
    this.scoreKind = embedder.architecture === "qwen3" || embedder.architecture === "qwen3vl" ? "probability" : "logit";
    this.format = pairFormat(embedder.special, embedder.rerankTemplate);
  }

  /** Loads the model (its GGUF must declare rank pooling). Throws when the native addon is missing or it is no reranker. */
  static async load(options: RerankEngineOptions): Promise<RerankEngine> {
    if (!Number.isInteger(options.maxDocuments) || options.maxDocuments < 1) throw new RangeError("maxDocuments must be a positive integer");
    const started = performance.now();
    const loaded = await NativeBatchEmbedder.tryLoad({
      modelPath: options.modelPath,
      threads: options.threads,
      maxSequences: options.batchSequences,
      batchTokens: options.batchTokens,
      // The GGUF's own pooling: forcing "rank" on a model without a classification head would read the first
      // element of a hidden state as a score instead of failing.
      ...(options.maxTokens === undefined ? {} : { maxTokensPerText: options.maxTokens }),
      ...(options.gpuLayers === undefined ? {} : { gpuLayers: options.gpuLayers }),
      ...(options.flashAttention === undefined ? {} : { flashAttention: options.flashAttention }),
    });
    // No one-pair-per-decode fallback (node-llama-cpp's LlamaRankingContext): a reranker is served batched or not at all.
    if ("unavailable" in loaded) throw new Error(`cannot load the reranker ${options.modelName}: ${loaded.unavailable}`);
    const embedder = loaded.embedder;
    if (embedder.poolingType !== "rank" || embedder.dimension < 1) {
      await embedder.dispose();
      throw new Error(`${options.modelName} is not a reranker (pooling ${embedder.poolingType}, ${embedder.dimension} outputs)`);
    }
    return new RerankEngine(embedder, options, performance.now() - started);
  }

  describe() {
    return {
      model: this.modelName,
      backend: "native-batched" as const,
      architecture: this.embedder.architecture,
      scoreKind: this.scoreKind,
      pairFormat: this.format.kind,
      maxTokensPerPair: this.maxTokensPerPair,
      maxDocuments: this.maxDocuments,
      batchSequences: this.embedder.maxSequences,
      batchTokens: this.embedder.batchTokens,
      loadMs: Math.round(this.loadMs),
    };
  }

  /** True when `name` is this model (its name or an alias). */
  serves(name: string): boolean {
    return name === this.modelName || this.aliases.includes(name);
  }

  /** Called for every decode batch with its pair and token counts (metrics); may return a callback for its end (tracing). */
  onBatch(listener: BatchListener): () => void {
    return this.queue.onBatch(listener);
  }

  /** Requests, pairs and tokens admitted and not yet answered, and the queue's bounds. */
  queueStats(): QueueStats {
    return this.queue.stats();
  }

  /** The tokens of one pair as they are decoded, before any limit (for tests and token counting). */
  pairTokens(query: string, document: string): Uint32Array {
    if (this.format.kind === "template") {
      return this.embedder.tokenize(fillRerankTemplate(this.format.template, query, document), { addSpecial: false, parseSpecial: true });
    }
    return assemblePair(this.format, this.bare(query), this.bare(document));
  }

  /**
   * Scores every document against the query; results in input order (sorting, top_n and the score convention
   * of each API are the caller's). Throws EngineError (400, naming the field) for an empty document list, more
   * than `maxDocuments`, or a pair longer than `maxTokensPerPair` without truncation.
   */
  async rerank(query: string, documents: readonly string[], request: RerankOptions = {}): Promise<RerankScore[]> {
    const field = request.field ?? "documents";
    const queryField = request.queryField ?? "query";
    const truncate = request.truncate ?? this.options.truncate;
    if (this.queue.closed) throw new EngineError("shutting_down", "The service is shutting down.", 503, undefined, 5);
    if (documents.length === 0) throw invalidRequest(`${field} must hold at least one document.`, field);
    if (documents.length > this.maxDocuments) {
      throw invalidRequest(`${documents.length} documents in one request; at most ${this.maxDocuments}.`, field);
    }
    const pairs = this.format.kind === "template"
      ? documents.map((document, index) => this.templatePair(query, document, index, field))
      : this.specialPairs(this.format, query, documents, truncate, field, queryField);
    const scores = await this.queue.run(pairs.map((pair) => pair.tokens), { signal: request.signal, noun: "pairs" });
    return pairs.map((pair, index) => ({ index, score: scores[index]!, tokens: pair.tokens.length, truncated: pair.truncated }));
  }

  private bare(text: string): Uint32Array {
    return this.embedder.tokenize(text, { addSpecial: false, parseSpecial: false });
  }

  private specialPairs(format: Extract<PairFormat, { kind: "special" }>, query: string, documents: readonly string[], truncate: boolean,
    field: string, queryField: string): { tokens: Uint32Array; truncated: boolean }[] {
    const queryTokens = this.bare(query);
    const markers = (format.bos === null ? 0 : 1) + (format.eos === null ? 0 : 2) + (format.sep === null ? 0 : 1);
    const room = this.maxTokensPerPair - markers - queryTokens.length;
    if (room < 1) {
      throw new EngineError("context_length_exceeded",
        `${queryField} is ${queryTokens.length} tokens; with a document it must fit in ${this.maxTokensPerPair} tokens per pair.`, 400, queryField);
    }
    return documents.map((document, index) => {
      const documentTokens = this.bare(document);
      if (documentTokens.length <= room) return { tokens: assemblePair(format, queryTokens, documentTokens), truncated: false };
      if (!truncate) {
        throw new EngineError("context_length_exceeded",
          `${field}[${index}] makes a pair of ${documentTokens.length + queryTokens.length + markers} tokens; the reranker reads at most ` +
          `${this.maxTokensPerPair} per query+document pair.`, 400, `${field}[${index}]`);
      }
      return { tokens: assemblePair(format, queryTokens, documentTokens.subarray(0, room)), truncated: true };
    });
  }

  private templatePair(query: string, document: string, index: number, field: string): { tokens: Uint32Array; truncated: boolean } {
    const tokens = this.pairTokens(query, document);
    if (tokens.length > this.maxTokensPerPair) {
      // A template interleaves the pieces, so there is no clean place to cut: reject instead.
      throw new EngineError("context_length_exceeded",
        `${field}[${index}] makes a prompt of ${tokens.length} tokens; the reranker reads at most ${this.maxTokensPerPair}.`, 400, `${field}[${index}]`);
    }
    if (tokens.length === 0) throw invalidRequest(`${field}[${index}] gives an empty prompt.`, `${field}[${index}]`);
    return { tokens, truncated: false };
  }

  async dispose(): Promise<void> {
    this.queue.close();
    await this.embedder.dispose();
  }
}
