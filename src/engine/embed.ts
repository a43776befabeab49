// One embedding model: tokenization, truncation, a shared batch queue that merges concurrent requests,
// pooling through the batched native embedder (or node-llama-cpp's embedding context as fallback),
// and L2 normalisation as sentence-transformers returns it (all-MiniLM-L6-v2, multilingual-e5). Each
// instance owns its model, so several embedding models can be served at once, each with the pooling,
// normalisation and token limit of its own manifest entry.
import type { Llama, LlamaEmbeddingContext, LlamaModel } from "node-llama-cpp";
import { EngineError, invalidRequest } from "./errors.js";
import { TokenBatchQueue, type BatchListener, type QueueBounds, type QueueStats } from "./tokenBatchQueue.js";
import { NativeBatchEmbedder, type NativePooling } from "./native/batchEmbedder.js";

/** What the engine needs from an embedding implementation: tokens in, pooled vectors out. */
interface PoolingBackend {
  readonly kind: "native-batched" | "node-llama-cpp";
  readonly dimension: number;
  /** Most tokens one text may have: the model's limit, never a batch setting. */
  readonly maxTokensPerText: number;
  readonly maxSequences: number;
  readonly batchTokens: number;
  tokenize(text: string): Uint32Array;
  pool(tokenLists: readonly Uint32Array[]): Promise<Float32Array[]>;
  dispose(): Promise<void>;
}

export type EmbedEngineOptions = {
  modelPath: string;
  modelName: string;
  aliases: readonly string[];
  threads: number;
  batchTokens: number;
  batchSequences: number;
  gpuLayers: "auto" | "max" | number;
  /** Tokens per text the model is meant to read (manifest `maxTokens`); defaults to its trained context. */
  maxTokens?: number;
  /** Longer texts are cut to the limit ([SEP] kept), as sentence-transformers does; false: 400. */
  truncate: boolean;
  /** Most texts one call may embed. */
  maxTexts: number;
  /** Texts and tokens of all requests admitted and not yet answered (RETRIEVAL_QUEUE_*); beyond: 429. Default: unbounded. */
  queue?: QueueBounds;
  /** Pooling instead of the GGUF's own `pooling_type` (manifest `pooling`); native path only. */
  pooling?: Exclude<NativePooling, "rank">;
  /** L2-normalise the vectors (default true, as sentence-transformers' Normalize layer). */
  normalize?: boolean;
  preferNative: boolean;
  onFallback?: (reason: string) => void;
};

export type EmbedResult = { embeddings: number[][]; dim: number; promptTokens: number; truncated: number };

export class EmbedEngine {
  readonly modelName: string;
  readonly aliases: readonly string[];
  readonly loadMs: number;
  private readonly maxTokens: number;
  /** Texts of every request wait here for a decode (TokenBatchQueue shares batches across requests). */
  private readonly queue: TokenBatchQueue<Float32Array>;

  private constructor(private readonly backend: PoolingBackend, private readonly options: EmbedEngineOptions, loadMs: number) {
    this.modelName = options.modelName;
    this.aliases = options.aliases;
    this.loadMs = loadMs;
    this.maxTokens = backend.maxTokensPerText;
    this.queue = new TokenBatchQueue(backend, (batch) => backend.pool(batch), options.queue);
  }

  static async load(llama: Llama, options: EmbedEngineOptions): Promise<EmbedEngine> {
    const started = performance.now();
    let backend: PoolingBackend | undefined;
    if (options.preferNative) {
      const native = await NativeBatchEmbedder.tryLoad({
        modelPath: options.modelPath,
        threads: options.threads,
        maxSequences: options.batchSequences,
        batchTokens: options.batchTokens,
        ...(options.maxTokens === undefined ? {} : { maxTokensPerText: options.maxTokens }),
        ...(options.pooling === undefined ? {} : { pooling: options.pooling }),
        gpuLayers: typeof options.gpuLayers === "number" ? options.gpuLayers : undefined,
      });
      if ("embedder" in native) {
        if (native.embedder.poolingType === "rank") {
          await native.embedder.dispose();
          throw new Error(`${options.modelName} is a reranker (rank pooling), not an embedding model`);
        }
        backend = nativeBackend(native.embedder);
      } else options.onFallback?.(native.unavailable);
    }
    if (backend === undefined && options.pooling !== undefined) {
      // node-llama-cpp's embedding context always uses the GGUF's pooling: say so rather than pool differently.
      options.onFallback?.(`pooling "${options.pooling}" needs the native embedder; the fallback uses the model's own pooling`);
    }
    backend ??= await LlamaCppBackend.load(llama, options);
    return new EmbedEngine(backend, options, performance.now() - started);
  }

  get dimension(): number {
    return this.backend.dimension;
  }

  describe() {
    return {
      model: this.modelName,
      backend: this.backend.kind,
      dimension: this.backend.dimension,
      maxTokensPerText: this.maxTokens,
      batchSequences: this.backend.maxSequences,
      batchTokens: this.backend.batchTokens,
      normalize: this.options.normalize !== false,
      loadMs: Math.round(this.loadMs),
    };
  }

  /** True when `name` is this model (its name, a seed spelling, or the file name). */
  serves(name: string): boolean {
    return name === this.modelName || this.aliases.includes(name);
  }

  /** Called for every decode batch with its text and token counts (metrics: batch sizes); may return a callback for its end (tracing). */
  onBatch(listener: BatchListener): () => void {
    return this.queue.onBatch(listener);
  }

  /** Requests, texts and tokens admitted and not yet answered, and the queue's bounds. */
  queueStats(): QueueStats {
    return this.queue.stats();
  }

  /**
   * @param request.truncate per request (Ollama's `truncate`); default: the engine's setting.
   * @param request.field how the caller's API names the list of texts, for errors (`texts`, `input`).
   * @param request.prefix put before every text (the model's prompt for the request's input_type, see prompts.ts).
   * @param request.signal ends the request (its reason is the error): its waiting texts leave the queue at once.
   */
  async embed(texts: readonly string[], request: { truncate?: boolean; field?: string; prefix?: string; signal?: AbortSignal } = {}): Promise<EmbedResult> {
    const field = request.field ?? "texts";
    const truncate = request.truncate ?? this.options.truncate;
    if (this.queue.closed) throw new EngineError("shutting_down", "The service is shutting down.", 503, undefined, 5);
    if (texts.length > this.options.maxTexts) {
      throw invalidRequest(`${texts.length} texts in one request; at most ${this.options.maxTexts} (EMBED_MAX_TEXTS).`, field);
    }
    let truncated = 0;
    let promptTokens = 0;
    const tokenLists = texts.map((text, index) => {
      const tokens = this.backend.tokenize(request.prefix ? request.prefix + text : text);
      if (tokens.length <= this.maxTokens) {
        promptTokens += tokens.length;
        return tokens;
      }
      if (!truncate) {
        throw invalidRequest(`${field}[${index}] is ${tokens.length} tokens; the embedding model reads at most ${this.maxTokens}.`, `${field}[${index}]`);
      }
      truncated++;
      promptTokens += this.maxTokens;
      return truncateKeepingLast(tokens, this.maxTokens);
    });
    const vectors = await this.queue.run(tokenLists, { signal: request.signal, noun: "texts" });
    const finish = this.options.normalize === false ? (v: Float32Array) => Array.from(v) : normalize;
    return { embeddings: vectors.map(finish), dim: this.backend.dimension, promptTokens, truncated };
  }

  async dispose(): Promise<void> {
    this.queue.close();
    await this.backend.dispose();
  }
}

function truncateKeepingLast(tokens: Uint32Array, limit: number): Uint32Array {
  const out = tokens.slice(0, limit);
  out[limit - 1] = tokens[tokens.length - 1]!;
  return out;
}

function normalize(vector: Float32Array): number[] {
  let sum = 0;
  for (const v of vector) sum += v * v;
  const norm = Math.sqrt(sum);
  // sentence-transformers' Normalize layer divides by max(norm, 1e-12).
  const scale = 1 / Math.max(norm, 1e-12);
  return Array.from(vector, (v) => v * scale);
}

function nativeBackend(embedder: NativeBatchEmbedder): PoolingBackend {
  return {
    kind: "native-batched",
    dimension: embedder.dimension,
    maxTokensPerText: embedder.maxTokensPerText,
    maxSequences: embedder.maxSequences,
    batchTokens: embedder.batchTokens,
    tokenize: (text) => embedder.tokenize(text),
    pool: (tokenLists) => embedder.embed(tokenLists),
    dispose: () => embedder.dispose(),
  };
}

/** node-llama-cpp's embedding context: one text per decode, the fallback where the native piece is missing. */
class LlamaCppBackend implements PoolingBackend {
  readonly kind = "node-llama-cpp" as const;
  readonly maxSequences = 1;

  private constructor(
    private readonly model: LlamaModel,
    private readonly context: LlamaEmbeddingContext,
    readonly maxTokensPerText: number,
    readonly batchTokens: number,
  ) {}

  static async load(llama: Llama, options: EmbedEngineOptions): Promise<LlamaCppBackend> {
    const model = await llama.loadModel({ modelPath: options.modelPath, gpuLayers: options.gpuLayers });
    // One text per decode: the context holds the longest text the model reads, whatever the batch setting.
    const usable = Math.min(model.trainContextSize, options.maxTokens ?? Infinity);
    try {
      // node-llama-cpp wants an input strictly shorter than the context: one spare slot lets a text of
      // the model's full length through, as on the native path.
      const context = await model.createEmbeddingContext({ contextSize: usable + 1, batchSize: usable + 1, threads: options.threads });
      return new LlamaCppBackend(model, context, usable, options.batchTokens);
    } catch (error) {
      await model.dispose();
      throw error;
    }
  }

  get dimension(): number {
    return this.model.embeddingVectorSize;
  }

  /** [CLS] text [SEP], as llama.cpp adds them for embeddings (and as the native path returns them). */
  tokenize(text: string): Uint32Array {
    const { bos, eos } = this.model.tokens;
    const inner = this.model.tokenize(text, true);
    return Uint32Array.from([...(bos === null ? [] : [bos]), ...inner, ...(eos === null ? [] : [eos])]);
  }

  async pool(tokenLists: readonly Uint32Array[]): Promise<Float32Array[]> {
    const out: Float32Array[] = [];
    for (const tokens of tokenLists) {
      const embedding = await this.context.getEmbeddingFor(Array.from(tokens) as Parameters<LlamaEmbeddingContext["getEmbeddingFor"]>[0] & number[]);
      out.push(Float32Array.from(embedding.vector));
    }
    return out;
  }

  async dispose(): Promise<void> {
    await this.context.dispose();
    await this.model.dispose();
  }
}

