// Batched embeddings through a small native addon (batch_embed.cpp) that links against the libllama
// of the binding node-llama-cpp loaded. Many texts go into ONE llama_decode, each text as its
// own sequence, and every sequence's pooled vector is read with llama_get_embeddings_seq — the way
// llama-server does it — instead of node-llama-cpp's one-text-per-decode embedding context.
//
// The addon is compiled by scripts/build-native.ts into node_modules/.cache/bora-native/batch_embed/<key>/. This
// module only *finds* and loads it: when it is missing or cannot load, `tryLoad` reports why and the
// engine falls back to node-llama-cpp's embedding context.
//
// Load it after node-llama-cpp's `getLlama()`: that registers the ggml backends (the CPU variants are
// separate shared objects) and loads libllama, which this addon then shares. If no backend is
// registered the addon loads them itself from the directory of the libllama it is linked to.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { findNativeAddon } from "./addonBuild.js";

const require = createRequire(import.meta.url);

export interface NativeBatchEmbedderOptions {
  modelPath: string;
  threads: number;
  /** Most texts (sequences) per llama_decode, 1..256 (capped at batchTokens). */
  maxSequences: number;
  /**
   * Tokens packed into one llama_decode. It never limits a text: a text longer than this (up to
   * `maxTokensPerText`) is decoded alone, so no batch setting changes a vector.
   */
  batchTokens: number;
  /**
   * Longest text (in tokens) the model reads, e.g. sentence-transformers' max_seq_length; capped at the
   * model's trained context, which is also the default. The context (n_ctx = n_batch = n_ubatch) holds
   * max(batchTokens, this), rounded up to a multiple of maxSequences (llama.cpp aborts otherwise).
   */
  maxTokensPerText?: number;
  /** Layers to offload to a GPU; defaults to 0 (CPU). */
  gpuLayers?: number;
  /** Flash attention on/off; default: llama.cpp's "auto". */
  flashAttention?: boolean;
  /** Pooling to use instead of the model's own (GGUF `pooling_type`); "rank" needs a classification head. */
  pooling?: NativePooling;
}

export type NativePooling = "none" | "mean" | "cls" | "last" | "rank";

/** The special tokens and flags a rerank pair is built from (llama-server's format_prompt_rerank); -1 = none. */
export interface NativeSpecialTokens {
  bos: number;
  eos: number;
  sep: number;
  addBos: boolean;
  addEos: boolean;
  addSep: boolean;
}

/** What the native `load()` resolves with. */
interface NativeLoadInfo {
  dimension: number;
  trainContextSize: number;
  poolingType: string;
  maxSequences: number;
  batchTokens: number;
  contextTokens: number;
  maxTokensPerText: number;
  hasMemory: boolean;
  special: NativeSpecialTokens;
  /** general.architecture of the GGUF ("bert", "qwen3", …). */
  architecture: string;
  /** The GGUF's `tokenizer.chat_template.rerank` ({query}/{document} placeholders), e.g. Qwen3-Reranker's. */
  rerankTemplate: string | null;
}

/** Where the time of the last `embed` call went, from the addon's own timers (milliseconds). */
export interface NativeEmbedStats {
  texts: number;
  tokens: number;
  decodes: number;
  /** Filling llama_batch. */
  packMs: number;
  /** llama_decode: the model. */
  decodeMs: number;
  /** Reading each text's pooled vector. */
  readMs: number;
  /** Handing the vectors to JS (on the JS thread). */
  returnMs: number;
}

/** The native object (see batch_embed.cpp). */
interface NativeHandle {
  lastStats(): NativeEmbedStats;
  load(): Promise<NativeLoadInfo>;
  tokenize(text: string, addSpecial?: boolean, parseSpecial?: boolean): Uint32Array;
  embed(tokens: Uint32Array, lengths: Uint32Array): Promise<Float32Array>;
  dispose(): Promise<void>;
}

interface NativeModule {
  BatchEmbedder: new (
    modelPath: string,
    options: {
      threads: number; maxSequences: number; batchTokens: number; maxTokensPerText?: number; gpuLayers: number;
      flashAttention?: boolean; pooling?: NativePooling;
    },
  ) => NativeHandle;
  systemInfo(): { backendDevices: number; llamaLibraryDir: string; llamaSystemInfo: string };
}

// ---------------------------------------------------------------------------------------------------
// Where the addon lives: built by scripts/build-native.ts against the libllama node-llama-cpp loaded
// (see addonBuild.ts, which both use so they agree on the cache key).
// ---------------------------------------------------------------------------------------------------

/** Path of the built addon for the current source and the loaded libllama, or null when it has not been built. */
export function findNativeEmbedAddon(): string | null {
  return findNativeAddon("batch_embed");
}

// ---------------------------------------------------------------------------------------------------
// The embedder
// ---------------------------------------------------------------------------------------------------

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isNativeModule(value: unknown): value is NativeModule {
  if (typeof value !== "object" || value === null) return false;
  const candidate = value as Record<string, unknown>;
  return typeof candidate["BatchEmbedder"] === "function" && typeof candidate["systemInfo"] === "function";
}

let loadedModule: { file: string; module: NativeModule } | null = null;

function loadNativeModule(file: string): NativeModule {
  if (loadedModule !== null && loadedModule.file === file) return loadedModule.module;
  const loaded: unknown = require(file);
  if (!isNativeModule(loaded)) throw new Error(`${file} is not the batch embedding addon`);
  loadedModule = { file, module: loaded };
  return loaded;
}

function checkInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
}

/**
 * Embeds many texts per llama_decode.
 *
 * Concurrency: calls are queued — `embed` calls run one after another in call order (one decode at a
 * time per embedder); `dispose` waits for queued work, and anything called after `dispose` rejects.
 */
export class NativeBatchEmbedder {
  readonly dimension: number;
  readonly trainContextSize: number;
  readonly maxSequences: number;
  /** Tokens packed into one decode (a longer text is decoded alone). */
  readonly batchTokens: number;
  /** Most tokens one decode holds: max(batchTokens, maxTokensPerText), rounded up to a multiple of maxSequences. */
  readonly contextTokens: number;
  /** Most tokens one text may have: the requested limit capped at trainContextSize; independent of batchTokens. */
  readonly maxTokensPerText: number;
  /** The context's pooling type as llama.cpp reports it ("mean", "cls", "last", "rank", "none"). */
  readonly poolingType: string;
  /** With rank pooling `dimension` is the head's output count and element 0 of each vector is the score. */
  readonly special: NativeSpecialTokens;
  readonly architecture: string;
  readonly rerankTemplate: string | null;
  readonly addonFile: string;

  #handle: NativeHandle;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;

  private constructor(handle: NativeHandle, info: NativeLoadInfo, addonFile: string) {
    this.#handle = handle;
    this.dimension = info.dimension;
    this.trainContextSize = info.trainContextSize;
    this.maxSequences = info.maxSequences;
    this.batchTokens = info.batchTokens;
    this.contextTokens = info.contextTokens;
    this.maxTokensPerText = info.maxTokensPerText;
    this.poolingType = info.poolingType;
    this.special = info.special;
    this.architecture = info.architecture;
    this.rerankTemplate = info.rerankTemplate;
    this.addonFile = addonFile;
  }

  /**
   * Loads the addon (if built) and the model. Never throws: resolves `{ unavailable: reason }` when the
   * addon is not built, cannot be loaded, or the model cannot be used, so the caller can fall back.
   */
  static async tryLoad(opts: NativeBatchEmbedderOptions, addonFile?: string): Promise<{ embedder: NativeBatchEmbedder } | { unavailable: string }> {
    try {
      checkInteger("threads", opts.threads, 1, 1024);
      checkInteger("maxSequences", opts.maxSequences, 1, 256);
      checkInteger("batchTokens", opts.batchTokens, 1, 1 << 20);
      if (opts.maxTokensPerText !== undefined) checkInteger("maxTokensPerText", opts.maxTokensPerText, 1, 1 << 20);
      if (opts.gpuLayers !== undefined) checkInteger("gpuLayers", opts.gpuLayers, -1, 1 << 20);
      if (!existsSync(opts.modelPath)) return { unavailable: `model file not found: ${opts.modelPath}` };

      const file = addonFile ?? findNativeEmbedAddon();
      if (file === null) return { unavailable: "the native batch embedding addon is not built (run `npx tsx scripts/build-native.ts`)" };
      if (!existsSync(file)) return { unavailable: `native addon not found: ${file}` };

      let native: NativeModule;
      try {
        native = loadNativeModule(file);
      } catch (error) {
        return { unavailable: `cannot load the native addon ${file}: ${errorMessage(error)}` };
      }

      const handle = new native.BatchEmbedder(opts.modelPath, {
        threads: opts.threads,
        maxSequences: opts.maxSequences,
        batchTokens: opts.batchTokens,
        ...(opts.maxTokensPerText === undefined ? {} : { maxTokensPerText: opts.maxTokensPerText }),
        gpuLayers: opts.gpuLayers ?? 0,
        ...(opts.flashAttention === undefined ? {} : { flashAttention: opts.flashAttention }),
        ...(opts.pooling === undefined ? {} : { pooling: opts.pooling }),
      });
      // Without pooling (poolingType "none") the addon returns each text's last-token embedding, like node-llama-cpp.
      const info = await handle.load();
      return { embedder: new NativeBatchEmbedder(handle, info, file) };
    } catch (error) {
      return { unavailable: errorMessage(error) };
    }
  }

  /**
   * Tokens for an embedding input, with special tokens added ([CLS] … [SEP]) and parsed exactly as llama-server
   * does for embeddings. `{ addSpecial: false, parseSpecial: false }` gives the bare pieces of a rerank pair.
   */
  tokenize(text: string, flags: { addSpecial?: boolean; parseSpecial?: boolean } = {}): Uint32Array {
    if (this.#disposed) throw new Error("NativeBatchEmbedder is disposed");
    return this.#handle.tokenize(text, flags.addSpecial ?? true, flags.parseSpecial ?? true);
  }

  /**
   * Pooled (not normalised) embedding of each token list, in input order. Texts are packed into as few
   * llama_decode calls as possible (<= maxSequences texts and <= batchTokens tokens per decode, a longer
   * text alone); the
   * work runs on the embedder's own compute thread. An empty array resolves to []. Rejects with an Error (the whole
   * call) for an empty token list, a token list longer than `maxTokensPerText` or a token id outside the
   * vocabulary.
   */
  embed(tokenLists: readonly Uint32Array[]): Promise<Float32Array[]> {
    if (this.#disposed) return Promise.reject(new Error("NativeBatchEmbedder is disposed"));
    if (tokenLists.length === 0) return Promise.resolve([]);
    let total = 0;
    const lengths = new Uint32Array(tokenLists.length);
    for (let i = 0; i < tokenLists.length; i++) {
      const tokens = tokenLists[i];
      if (!(tokens instanceof Uint32Array)) return Promise.reject(new TypeError(`token list ${i} is not a Uint32Array`));
      if (tokens.length === 0) return Promise.reject(new Error(`text ${i} has no tokens`));
      if (tokens.length > this.maxTokensPerText) {
        return Promise.reject(
          new Error(`text ${i} has ${tokens.length} tokens, more than the maximum of ${this.maxTokensPerText} tokens per text`),
        );
      }
      lengths[i] = tokens.length;
      total += tokens.length;
    }
    const flat = new Uint32Array(total);
    let offset = 0;
    for (const tokens of tokenLists) {
      flat.set(tokens, offset);
      offset += tokens.length;
    }

    return this.#enqueue(async () => {
      const vectors = await this.#handle.embed(flat, lengths);
      const dim = this.dimension;
      const result: Float32Array[] = [];
      // Views into the one buffer the addon returned: no copy per text.
      for (let i = 0; i < tokenLists.length; i++) result.push(vectors.subarray(i * dim, (i + 1) * dim));
      return result;
    });
  }

  /** Per-phase timings of the last completed `embed` call (the addon's own timers). */
  lastStats(): NativeEmbedStats {
    return this.#handle.lastStats();
  }

  /** Frees the model and context after queued work finished. Idempotent; later calls to embed reject. */
  dispose(): Promise<void> {
    if (this.#disposed) return this.#queue.then(() => undefined);
    this.#disposed = true;
    return this.#enqueue(() => this.#handle.dispose());
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  #enqueue<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(work, work);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}

/** Diagnostic info from a loaded addon (backend device count, the libllama directory, llama system info). */
export function nativeEmbedSystemInfo(addonFile?: string): { backendDevices: number; llamaLibraryDir: string; llamaSystemInfo: string } | null {
  const file = addonFile ?? findNativeEmbedAddon();
  if (file === null) return null;
  try {
    return loadNativeModule(file).systemInfo();
  } catch {
    return null;
  }
}
