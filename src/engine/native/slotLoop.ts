// The native generation backend: a thin wrapper over slot_loop.cpp, its only caller. The addon owns the
// weights and one llama_context, and runs one loop thread that decodes every active slot in one
// llama_decode, samples each natively and hands each step's tokens to JS in one call. This module turns
// those per-step events into the token-level GenerationBackend the chat engine drives.
//
// Load it after node-llama-cpp's getLlama(): the addon must find (and is built against) the libllama
// of the binding node-llama-cpp loaded; see addonBuild.ts.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import type { BackendJob, BackendOutcome, BackendToken, GenerationBackend, SlotState } from "../chat/backend.js";
import { invalidRequest } from "../errors.js";
import type { FlashAttention, KvCacheType } from "../chat/settings.js";
import { NativeVocabulary, type NativeVocabularySource } from "../vocabulary.js";
import { findNativeAddon, nativeAddonUnavailableReason } from "./addonBuild.js";

const require = createRequire(import.meta.url);

export type SlotLoopOptions = {
  modelPath: string;
  threads: number;
  slots: number;
  /** Context tokens per slot. */
  contextSize: number;
  batchSize: number;
  /** Layers offloaded to a GPU (the value node-llama-cpp resolved for this model and machine). */
  gpuLayers: number;
  /** llama.cpp's flash attention (default auto). */
  flashAttention?: FlashAttention;
  /** KV cache element type (default f16). */
  kvCacheType?: KvCacheType;
  /**
   * Nice value (0–19) of the loop thread and its compute threads (Linux): embeddings, HTTP and probes
   * then run ahead of the decode when they need a core. 0 leaves the priority alone.
   */
  nice?: number;
  /** Host-memory prompt cache bound (KiB; 0: off). See prompt_cache.h. */
  promptCacheKiB?: number;
  /** Shortest prefix worth copying, restoring or saving. */
  promptCacheMinTokens?: number;
};

/** The decode's threads now: `governed` when they follow the machine's load (thread_governor.h, Linux). */
export type LoopThreads = { active: number; max: number; changes: number; governed: boolean; yieldAborts: number };

/** The prompt cache's counters (prompt_cache_napi.h), cumulative since start. */
export type PromptCacheNativeStats = {
  hits: Record<PromptCacheTier, number>;
  tokens: Record<PromptCacheTier, number>;
  misses: number;
  restoreSeconds: number;
  restores: number;
  saves: number;
  evictions: number;
  savedStateBytes: number;
  savedTokens: number;
  hostBytes: number;
  hostEntries: number;
  changes: number;
};
export type PromptCacheTier = "slot" | "copy" | "host" | "disk";
export type PromptCacheEntryData = { tokens: Uint32Array; state: Uint8Array; hits: number };
/** A snapshot's entry: `state` null when its file is on disk already (the store writes each entry once). */
export type PromptCacheSnapshotEntry = { tokens: Uint32Array; state: Uint8Array | null; hits: number };
export type CacheTaskResult = { error?: string; tokens: number; bytes: number; ms: number; entries: PromptCacheSnapshotEntry[] };
/** "snapshot": the prompt cache's persistence; the others: llama-server's slot actions (POST /slots/{id}?action=). */
export type CacheTaskKind = "snapshot" | "slotSave" | "slotRestore" | "slotErase";

type NativeLoadInfo = {
  slots: number; contextSize: number; batchSize: number; threads: number; threadsBatch: number; vocabSize: number; gpuLayers: number;
  kvCacheType: KvCacheType; flashAttention: FlashAttention;
};

/** One slot's share of a step, as slot_loop.cpp's deliverStep builds it. */
type NativeStepEvent =
  | { slot: number; trimmed: true; task?: undefined }
  | { slot: number; task: number; trimmed?: undefined }
  | {
    slot: number;
    jobId: number;
    trimmed?: undefined;
    task?: undefined;
    tokens: Uint32Array;
    pieces: Uint8Array[];
    ends: boolean[];
    logprobs?: Float32Array;
    top?: { ids: Uint32Array; logprobs: Float32Array; pieces: Uint8Array[] }[];
    done?: "eog" | "length" | "ended" | "error";
    error?: string;
    /** "request": the request made generation impossible (400); "internal": llama.cpp failed (500). */
    errorKind?: "request" | "internal";
    cachedPromptTokens?: number;
    evaluatedTokens?: number;
  };

type NativeJobParams = {
  maxTokens: number;
  temperature: number; topP: number; topK: number; minP: number; seed: number;
  repeatPenalty: number; presencePenalty: number; frequencyPenalty: number; penaltyLastN: number; ignoreEos: boolean;
  logitBias?: { ids: Uint32Array; biases: Float32Array };
  grammar?: string;
  logprobsTop?: number;
};

interface NativeSlotLoop extends NativeVocabularySource {
  load(): Promise<NativeLoadInfo>;
  start(slot: number, jobId: number, prompt: Uint32Array, params: NativeJobParams): void;
  end(slot: number, jobId: number): void;
  trim(slot: number, length: number): void;
  slotTokens(slot: number): Uint32Array;
  commonPrefixes(prompt: Uint32Array): Int32Array;
  slotStates(): { busy: boolean; cachedTokens: number; tokensDecoded: number }[];
  threads(): LoopThreads;
  retrieval(delta: 1 | -1): void;
  dispose(): Promise<void>;
  cacheTask(kind: CacheTaskKind, slot: number, path: string, byteBudget: number): number;
  takeCacheTask(id: number): CacheTaskResult | null;
  cacheImport(tokens: Uint32Array, state: Uint8Array, hits: number): boolean;
  cacheStats(): PromptCacheNativeStats | null;
}

interface NativeModule {
  SlotLoop: new (modelPath: string, options: Record<string, unknown>, onStep: (events: NativeStepEvent[]) => void) => NativeSlotLoop;
}

function isNativeModule(value: unknown): value is NativeModule {
  return typeof value === "object" && value !== null && typeof (value as Record<string, unknown>)["SlotLoop"] === "function";
}

type RunningJob = {
  id: number;
  job: BackendJob;
  started: number;
  firstTokenMs: number | null;
  stopped: boolean;
  resolve: (outcome: BackendOutcome) => void;
  reject: (error: Error) => void;
};

export class SlotLoopBackend implements GenerationBackend {
  readonly kind = "native" as const;
  readonly slotCount: number;
  readonly contextSize: number;
  readonly threads: number;
  readonly batchSize: number;
  readonly gpuLayers: number;
  /** What the loop's context was created with (the prompt cache's key, status and the start log read these). */
  readonly kvCacheType: KvCacheType;
  readonly flashAttention: FlashAttention;
  readonly addonFile: string;
  #native: NativeSlotLoop;
  #running = new Map<number, RunningJob>();
  #trims = new Map<number, (() => void)[]>();
  #cacheTasks = new Map<number, { resolve: (result: CacheTaskResult) => void; reject: (error: Error) => void }>();
  /** Jobs given up on in JS (their consumer threw) that the loop has not ended yet, per slot. */
  #draining = new Map<number, { id: number; done: Promise<void>; resolve: () => void }>();
  #nextJobId = 1;
  #disposed = false;
  #vocabulary: NativeVocabulary | undefined;

  private constructor(native: NativeSlotLoop, info: NativeLoadInfo, addonFile: string) {
    this.#native = native;
    this.slotCount = info.slots;
    this.contextSize = info.contextSize;
    this.threads = info.threads;
    this.batchSize = info.batchSize;
    this.gpuLayers = info.gpuLayers;
    this.kvCacheType = info.kvCacheType;
    this.flashAttention = info.flashAttention;
    this.addonFile = addonFile;
  }

  /** Loads the addon and the weights; `{ unavailable }` (never a throw) when the addon cannot run here. */
  static async tryLoad(options: SlotLoopOptions, addonFile: string | null = findNativeAddon("slot_loop")): Promise<{ backend: SlotLoopBackend } | { unavailable: string }> {
    if (addonFile === null) return { unavailable: nativeAddonUnavailableReason("slot_loop") || "the slot loop addon is not built" };
    if (!existsSync(addonFile)) return { unavailable: `native addon not found: ${addonFile}` };
    let module: unknown;
    try {
      module = require(addonFile);
    } catch (error) {
      return { unavailable: `cannot load the native addon ${addonFile}: ${error instanceof Error ? error.message : String(error)}` };
    }
    if (!isNativeModule(module)) return { unavailable: `${addonFile} is not the slot loop addon` };
    let backend: SlotLoopBackend | undefined;
    const native = new module.SlotLoop(options.modelPath, {
      threads: options.threads,
      slots: options.slots,
      contextSize: options.contextSize,
      batchSize: options.batchSize,
      gpuLayers: options.gpuLayers,
      flashAttention: options.flashAttention ?? "auto",
      kvCacheType: options.kvCacheType ?? "f16",
      ...(options.nice === undefined ? {} : { nice: options.nice }),
      ...(options.promptCacheKiB === undefined ? {} : { promptCacheKiB: Math.round(options.promptCacheKiB) }),
      ...(options.promptCacheMinTokens === undefined ? {} : { promptCacheMinTokens: options.promptCacheMinTokens }),
    }, (events) => backend?.onStep(events));
    try {
      const info = await native.load();
      backend = new SlotLoopBackend(native, info, addonFile);
      return { backend };
    } catch (error) {
      return { unavailable: error instanceof Error ? error.message : String(error) };
    }
  }

  /** The slot's cache as of its last idle moment (what slot choice compares prompts with). */
  cachedTokens(slot: number): readonly number[] {
    return this.#disposed ? [] : Array.from(this.#native.slotTokens(slot));
  }

  sharedPrefixes(prompt: readonly number[]): readonly number[] {
    return this.#disposed ? new Array<number>(this.slotCount).fill(0) : Array.from(this.#native.commonPrefixes(Uint32Array.from(prompt)));
  }

  /** The loaded model's vocabulary (tokenizer endpoints, prompt rendering): no second vocabulary load. */
  get vocabulary(): NativeVocabulary {
    this.#vocabulary ??= new NativeVocabulary(this.#native);
    return this.#vocabulary;
  }

  decodedTokens(): number {
    return this.slotStates().reduce((sum, s) => sum + s.tokensDecoded, 0);
  }

  /** How many threads the last decode ran on, and how often the governor changed it. */
  loopThreads(): LoopThreads {
    return this.#disposed ? { active: 0, max: this.threads, changes: 0, governed: false, yieldAborts: 0 } : this.#native.threads();
  }

  /**
   * An embedding or rerank decode is starting: the loop gives it the cores (a step of generated tokens is
   * aborted and done again; the next steps wait, at most 50 ms each) until the returned function is called.
   */
  yieldToRetrieval(): () => void {
    if (this.#disposed) return () => undefined;
    this.#native.retrieval(1);
    let released = false;
    return () => {
      if (released || this.#disposed) return;
      released = true;
      this.#native.retrieval(-1);
    };
  }

  slotStates(): SlotState[] {
    if (this.#disposed) return [];
    return this.#native.slotStates().map((s, id) => ({ id, ...s }));
  }

  async generate(slot: number, job: BackendJob): Promise<BackendOutcome> {
    await this.#draining.get(slot)?.done;
    if (this.#disposed) throw new Error("the slot loop is disposed");
    if (this.#running.has(slot)) throw new Error(`slot ${slot} is busy`);
    const id = this.#nextJobId++;
    return new Promise<BackendOutcome>((resolve, reject) => {
      const running: RunningJob = { id, job, started: performance.now(), firstTokenMs: null, stopped: false, resolve, reject };
      const onAbort = () => this.#native.end(slot, id);
      job.signal.addEventListener("abort", onAbort, { once: true });
      const settle = <T>(fn: (value: T) => void) => (value: T) => {
        job.signal.removeEventListener("abort", onAbort);
        this.#running.delete(slot);
        fn(value);
      };
      running.resolve = settle(resolve);
      running.reject = settle(reject);
      this.#running.set(slot, running);
      try {
        const { logitBias, ...sampling } = job.sampling;
        this.#native.start(slot, id, Uint32Array.from(job.prompt), {
          maxTokens: job.maxTokens,
          ...sampling,
          ...(logitBias.length > 0 ? { logitBias: { ids: Uint32Array.from(logitBias, (b) => b.id), biases: Float32Array.from(logitBias, (b) => b.bias) } } : {}),
          ...(job.grammar !== undefined ? { grammar: job.grammar } : {}),
          ...(job.logprobsTop !== undefined ? { logprobsTop: job.logprobsTop } : {}),
        });
      } catch (error) {
        running.reject(error instanceof Error ? error : new Error(String(error)));
        return;
      }
      if (job.signal.aborted) onAbort();
    });
  }

  trimCache(slot: number, length: number): Promise<void> {
    if (this.#disposed) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const waiting = this.#trims.get(slot) ?? [];
      waiting.push(resolve);
      this.#trims.set(slot, waiting);
      this.#native.trim(slot, length);
    });
  }

  /**
   * Prompt-cache work on the loop thread, between steps: "snapshot" (idle slots into the host cache, then
   * the most reused entries within `byteBudget`), or a slot action: "slotSave" / "slotRestore" (a llama.cpp
   * sequence state file at `path`) / "slotErase".
   */
  cacheTask(kind: CacheTaskKind, slot: number, path = "", byteBudget = 0): Promise<CacheTaskResult> {
    if (this.#disposed) return Promise.reject(new Error("the slot loop is disposed"));
    return new Promise<CacheTaskResult>((resolve, reject) => {
      try {
        const id = this.#native.cacheTask(kind, slot, path, byteBudget);
        this.#cacheTasks.set(id, { resolve, reject });
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  /** Adds an entry read from disk to the host cache; false when it was refused (too big, bad token). */
  cacheImport(entry: PromptCacheEntryData): boolean {
    return this.#disposed ? false : this.#native.cacheImport(entry.tokens, entry.state, entry.hits);
  }

  cacheStats(): PromptCacheNativeStats | null {
    return this.#disposed ? null : this.#native.cacheStats();
  }

  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const task of this.#cacheTasks.values()) task.reject(new Error("the slot loop was disposed"));
    this.#cacheTasks.clear();
    for (const running of this.#running.values()) running.reject(new Error("the slot loop was disposed"));
    for (const waiting of this.#trims.values()) for (const resolve of waiting) resolve();
    for (const draining of this.#draining.values()) draining.resolve();
    await this.#native.dispose();
  }

  /** One call per loop step: every slot's new tokens, ends and acknowledgements. */
  private onStep(events: NativeStepEvent[]): void {
    if (this.#disposed) return;
    for (const event of events) {
      if (event.task !== undefined) {
        const waiting = this.#cacheTasks.get(event.task);
        this.#cacheTasks.delete(event.task);
        const result = this.#native.takeCacheTask(event.task);
        if (waiting !== undefined) {
          if (result === null) waiting.reject(new Error("the prompt cache task left no result"));
          else waiting.resolve(result);
        }
        continue;
      }
      if (event.trimmed) {
        this.#trims.get(event.slot)?.shift()?.();
        continue;
      }
      const draining = this.#draining.get(event.slot);
      if (draining !== undefined && draining.id === event.jobId && event.done !== undefined) {
        this.#draining.delete(event.slot);
        draining.resolve();
      }
      const running = this.#running.get(event.slot);
      if (running === undefined || running.id !== event.jobId) continue;
      try {
        this.#deliver(event, running);
      } catch (error) {
        // A failing consumer ends its own job only; the slot is reused once the loop has ended it.
        if (event.done === undefined) {
          let resolve = () => {};
          const done = new Promise<void>((r) => { resolve = r; });
          this.#draining.set(event.slot, { id: running.id, done, resolve });
          this.#native.end(event.slot, running.id);
        }
        running.reject(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }

  #deliver(event: Extract<NativeStepEvent, { jobId: number }>, running: RunningJob): void {
    {
      if (!running.stopped && event.tokens.length > 0) {
        running.firstTokenMs ??= performance.now() - running.started;
        const tokens: BackendToken[] = [];
        for (let i = 0; i < event.tokens.length; i++) {
          const token: BackendToken = { id: event.tokens[i] ?? 0, bytes: event.pieces[i] ?? new Uint8Array(), isEnd: event.ends[i] ?? false };
          const top = event.top?.[i];
          if (event.logprobs !== undefined && top !== undefined) {
            token.logprob = {
              logprob: event.logprobs[i] ?? 0,
              top: Array.from(top.ids, (id, k) => ({ id, bytes: top.pieces[k] ?? new Uint8Array(), logprob: top.logprobs[k] ?? 0 })),
            };
          }
          tokens.push(token);
        }
        if (running.job.onTokens(tokens)) {
          // A stop string: the loop ends the slot within a step; later tokens are not delivered.
          running.stopped = true;
          this.#native.end(event.slot, running.id);
        }
      }
      if (event.done === undefined) return;
      if (event.done === "error") {
        running.reject(generationFailure(event.error, event.errorKind));
        return;
      }
      running.resolve({
        cachedPromptTokens: event.cachedPromptTokens ?? 0,
        evaluatedTokens: event.evaluatedTokens ?? 0,
        firstTokenMs: running.firstTokenMs,
        cancelled: event.done === "ended" && !running.stopped && running.job.signal.aborted,
      });
    }
  }
}

/**
 * A slot the loop ended with an error, as the engine's error: a 400 when the request itself made the
 * generation impossible (the loop only says so for grammar dead ends and banned-only candidates), a plain
 * Error (500) when llama.cpp failed.
 */
export function generationFailure(message: string | undefined, kind: "request" | "internal" | undefined): Error {
  const text = message ?? "unknown error";
  if (kind === "request") {
    return invalidRequest(`The request cannot be generated: ${text}. Drop ignore_eos or the grammar (tools with tool_choice, response_format).`, "ignore_eos");
  }
  return new GenerationFailedError(`generation failed: ${text}`);
}

/** llama.cpp failed on a slot (decode or sampler error): this request only, answered as a 500. */
export class GenerationFailedError extends Error {
  override readonly name = "GenerationFailedError";
}
