// The chat engine: one interface over two generation backends. Admission and slot choice live in
// scheduler.ts, prompts and grammars in prompt.ts, text post-processing in output.ts; the backend
// (native slot loop, or node-llama-cpp's context sequences) only decodes and samples tokens.
import { GgmlType, type GgufFileInfo, type GgufInsights, type Llama, type LlamaModel, type Token } from "node-llama-cpp";
import { EngineError, invalidRequest } from "../errors.js";
import type { BackendKind, BackendToken, GenerationBackend, SamplingParams, SlotState } from "./backend.js";
import { SlotLoopBackend, type CacheTaskResult } from "../native/slotLoop.js";
import { nativeAddonBuildInfo } from "../native/addonBuild.js";
import { modelSha256, PromptCacheStore, type PromptCacheOptions, type PromptCacheSnapshot } from "./promptCacheStore.js";
import { NodeLlamaCppBackend } from "./nodeLlamaCppBackend.js";
import { GenerationOutput, type GeneratedToken } from "./output.js";
import { PromptBuilder, type RenderedPrompt } from "./prompt.js";
import { SlotScheduler } from "./scheduler.js";
import { ToolCallParser } from "./toolCallParser.js";
import { toolCallParserFor } from "./toolPrompt.js";
import type { ChatEngineSettings } from "./settings.js";
import { llamaModelVocabulary, type Vocabulary } from "../vocabulary.js";
import type { ChatMessage, GenerateRequest, GenerationResult, TokenLogprob } from "./types.js";

export const DEFAULT_MAX_TOKENS = 4096;
/** llama-server's default penalty window. */
const PENALTY_LAST_N = 64;
const MAX_LOGPROBS_TOP = 20;

export type ChatEngineKind = BackendKind;

export type ChatEngineOptions = {
  modelPath: string;
  modelName: string;
  /** CPU threads for decoding, as the runtime resolved them (affinity, cgroup quota, LLM_THREADS). */
  threads: number;
  /** How the engine runs: the configuration's structure, unchanged (settings.ts). */
  settings: ChatEngineSettings;
  /** Told once when the native path was asked for and cannot run, with the reason. */
  onFallback?: (reason: string) => void;
  /** The prompt cache's warnings (a skipped file, a failed write; never user text). */
  warn?: (message: string, details: Record<string, unknown>) => void;
  /** The file's GGUF header (tokenizer arrays left out) and node-llama-cpp's insights from it: the chat template, GPU layers, memory estimates. */
  gguf: { fileInfo: GgufFileInfo; insights: GgufInsights };
};

export type PreparedGeneration = {
  readonly request: GenerateRequest;
  readonly prompt: Token[];
  /** GBNF text constraining the output, when the request asked for one. */
  readonly grammar: string | undefined;
  readonly chat: boolean;
  readonly preparedAt: number;
};

/** Where a backend was chosen: which runs, and why not the native loop when it is not. */
export type EngineSelection = { kind: ChatEngineKind; requested: ChatEngineKind; fallbackReason: string | null };

export class ChatEngine {
  readonly modelName: string;
  readonly contextSize: number;
  readonly loadMs: number;
  readonly selection: EngineSelection;
  private readonly scheduler: SlotScheduler;
  private readonly prompts: PromptBuilder;
  private readonly finishedListeners = new Set<(result: GenerationResult) => void>();
  private closed = false;
  /** Persistence and counters of the prompt cache (native path with a host tier). */
  private promptCacheStore: PromptCacheStore | null = null;

  private constructor(
    llama: Llama,
    /** The model's vocabulary: the slot loop's own on the native path, node-llama-cpp's model on the fallback. */
    readonly vocabulary: Vocabulary,
    /** node-llama-cpp's full model on the fallback path (disposed with the engine), else null. */
    private readonly fallbackModel: LlamaModel | null,
    private readonly backend: GenerationBackend & { contextSize: number },
    private readonly options: ChatEngineOptions,
    selection: EngineSelection,
    loadMs: number,
  ) {
    this.modelName = options.modelName;
    this.contextSize = backend.contextSize;
    this.loadMs = loadMs;
    this.selection = selection;
    this.prompts = new PromptBuilder(llama, vocabulary, options.gguf.fileInfo, options.modelPath);
    this.scheduler = new SlotScheduler(backend.slotCount, options.settings.queueSize, (prompt) => backend.sharedPrefixes(prompt));
  }

  static async load(llama: Llama, options: ChatEngineOptions): Promise<ChatEngine> {
    const started = performance.now();
    const settings = options.settings;
    const requested = settings.engine;
    let fallbackReason: string | null = null;
    if (requested === "native") {
      // The addon loads the weights and the vocabulary once; node-llama-cpp renders the chat template over it.
      try {
        const { gpuLayers } = await options.gguf.insights.configurationResolver.resolveModelGpuLayersV2(settings.gpuLayers);
        const loaded = await SlotLoopBackend.tryLoad({
          modelPath: options.modelPath, threads: options.threads, slots: settings.parallel,
          contextSize: settings.contextSize, batchSize: settings.batchSize, gpuLayers,
          nice: settings.nice, kvCacheType: settings.kvCacheType, flashAttention: settings.flashAttention,
          promptCacheKiB: settings.promptCache.hostMiB * 1024, promptCacheMinTokens: settings.promptCache.minTokens,
        });
        if ("backend" in loaded) {
          const engine = new ChatEngine(llama, loaded.backend.vocabulary, null, loaded.backend, options, { kind: "native", requested, fallbackReason: null }, performance.now() - started);
          // In the background: /ready does not wait for prefixes that can be read while the service serves.
          engine.promptCacheLoaded = engine.#openPromptCache(loaded.backend, { ...settings.promptCache, ...(options.warn ? { warn: options.warn } : {}) })
            .catch((error: unknown) => {
              options.warn?.("prompt cache not loaded from disk", { reason: error instanceof Error ? error.message : String(error) });
              return null;
            });
          return engine;
        }
        fallbackReason = loaded.unavailable;
      } catch (error) {
        fallbackReason = error instanceof Error ? error.message : String(error);
      }
      options.onFallback?.(fallbackReason ?? "unknown");
    }
    const model = await llama.loadModel({ modelPath: options.modelPath, gpuLayers: settings.gpuLayers });
    try {
      const backend = await NodeLlamaCppBackend.create(llama, model, {
        contextSize: settings.contextSize, slots: settings.parallel, batchSize: settings.batchSize, threads: options.threads,
        kvCacheType: settings.kvCacheType, flashAttention: settings.flashAttention,
      });
      return new ChatEngine(llama, llamaModelVocabulary(model), model, backend, options, { kind: "node-llama-cpp", requested, fallbackReason }, performance.now() - started);
    } catch (error) {
      await model.dispose();
      throw error;
    }
  }

  /** Directory of the slot API's save/restore files (empty: off). */
  get slotSavePath(): string {
    return this.options.settings.slotSavePath;
  }

  /** Reads the persisted prompt prefixes of this model and context into host memory (before ready). */
  async #openPromptCache(backend: SlotLoopBackend, options: PromptCacheOptions): Promise<{ entries: number; tokens: number; ms: number }> {
    const build = nativeAddonBuildInfo("slot_loop");
    const store = new PromptCacheStore(backend, {
      modelSha256: options.hostMiB > 0 && options.diskMiB > 0 ? await modelSha256(this.options.modelPath, options.dir) : "",
      llamaCpp: `${build.llamaCppTag}/${build.library.llama}`,
      slots: backend.slotCount,
      contextPerSlot: backend.contextSize,
      // What the loop reports it runs with: a file made with another KV type cannot be restored here.
      kvType: backend.kvCacheType,
      flashAttention: backend.flashAttention,
    }, options);
    this.promptCacheStore = store;
    const loaded = await store.load();
    this.promptCacheLoad = loaded;
    return loaded;
  }

  /** What the start loaded from disk (entries, tokens, ms) once it has, for the start log. */
  promptCacheLoad: { entries: number; tokens: number; ms: number } | null = null;
  /** Settles when the prompt cache's files are read (null: nothing persisted, or it failed and said so). */
  promptCacheLoaded: Promise<{ entries: number; tokens: number; ms: number } | null> = Promise.resolve(null);

  /** Counters of every prompt-cache tier (null on the node-llama-cpp path). */
  promptCacheStats(): PromptCacheSnapshot | null {
    if (this.promptCacheStore !== null) return this.promptCacheStore.snapshot();
    // The store opens in the background (it hashes the model file first): the loop's own counters meanwhile.
    const native = this.backend instanceof SlotLoopBackend ? this.backend.cacheStats() : null;
    return native === null ? null : { ...native, diskBytes: 0, diskFiles: 0, loadedFromDisk: 0, lastSaveMs: null, filesWritten: 0 };
  }

  /** Writes the prompt prefixes not on disk yet now (also done at shutdown and every PROMPT_CACHE_SAVE_INTERVAL_S). */
  async persistPromptCache(): Promise<void> {
    // The store opens in the background (it hashes the model file first): a save asked for meanwhile waits for it.
    await this.promptCacheLoaded;
    await this.promptCacheStore?.save();
  }

  /**
   * llama-server's slot actions: save a slot's KV to `file`, restore it from `file`, or erase it.
   * Null when the generation path has no slot loop.
   */
  async slotAction(slot: number, action: "save" | "restore" | "erase", file = ""): Promise<CacheTaskResult | null> {
    if (!(this.backend instanceof SlotLoopBackend)) return null;
    if (this.closed) throw shuttingDown();
    // The scheduler owns the slots: the action holds this one, so no request starts on it meanwhile.
    if (!this.scheduler.reserve(slot)) {
      throw new EngineError("slot_busy", `Slot ${slot} is processing a request; retry when it is idle.`, 409, "id_slot", 1);
    }
    try {
      const kind = ({ save: "slotSave", restore: "slotRestore", erase: "slotErase" } as const)[action];
      return await this.backend.cacheTask(kind, slot, file);
    } finally {
      this.scheduler.release(slot);
    }
  }

  /**
   * An embedding or rerank decode of this process is starting: generation gives it the cores until the returned
   * function is called (the native loop; the fallback path does nothing). Embeddings keep their lead over
   * decoding this way rather than by a nice value that would also lose to every other program.
   */
  yieldToRetrieval(): () => void {
    return this.backend instanceof SlotLoopBackend ? this.backend.yieldToRetrieval() : () => undefined;
  }

  /** What the process logs at start: which path generates, where the model lives, what the slots take. */
  describe() {
    const slots = this.backend.slotCount;
    const kvCacheType = this.backend instanceof SlotLoopBackend ? this.backend.kvCacheType : this.options.settings.kvCacheType;
    const flashAttention = this.backend instanceof SlotLoopBackend ? this.backend.flashAttention : this.options.settings.flashAttention;
    const kvGgmlType = GgmlType[kvCacheType.toUpperCase() as keyof typeof GgmlType];
    const gpuLayers = this.backend instanceof SlotLoopBackend ? this.backend.gpuLayers : this.fallbackModel?.gpuLayers ?? 0;
    const estimate = this.options.gguf.insights.estimateContextResourceRequirements({
      contextSize: this.contextSize, sequences: slots, batchSize: this.options.settings.batchSize, modelGpuLayers: gpuLayers,
      kvCacheKeyType: kvGgmlType, kvCacheValueType: kvGgmlType, flashAttention: flashAttention !== "off",
    });
    return {
      model: this.modelName,
      engine: this.selection.kind,
      ...(this.selection.fallbackReason !== null ? { engineFallbackReason: this.selection.fallbackReason } : {}),
      gpuLayers,
      slots,
      contextPerSlot: this.contextSize,
      contextTotal: this.contextSize * slots,
      contextMemoryMiB: Math.round((estimate.cpuRam + estimate.gpuVram) / 2 ** 20),
      contextMemoryPerSlotMiB: Math.round((estimate.cpuRam + estimate.gpuVram) / slots / 2 ** 20),
      threads: this.backend.threads,
      ...(this.backend instanceof SlotLoopBackend ? { threadsActive: this.backend.loopThreads().active, threadsGoverned: this.backend.loopThreads().governed } : {}),
      kvCacheType,
      flashAttention,
      ...(this.backend instanceof SlotLoopBackend ? { nice: this.options.settings.nice } : {}),
      chatWrapper: this.prompts.chatWrapperName,
      loadMs: Math.round(this.loadMs),
    };
  }

  stats() {
    return this.scheduler.stats();
  }

  /** Called after every successful generation (metrics). */
  onGenerationFinished(listener: (result: GenerationResult) => void): () => void {
    this.finishedListeners.add(listener);
    return () => this.finishedListeners.delete(listener);
  }

  /** Per slot: busy or not, the tokens its KV cache holds and the tokens it decoded (for /metrics and tests). */
  slotsSnapshot(): SlotState[] {
    return this.backend.slotStates().map((s) => ({ ...s, busy: this.scheduler.isBusy(s.id) }));
  }

  /** The exact tokens the chat template produces for these messages, generation prompt included. */
  tokenizePrompt(messages: readonly ChatMessage[], enableThinking: boolean): Token[] {
    return this.prompts.tokenizeMessages(messages, enableThinking);
  }

  /** How many tokens the request's prompt is (tools included), without checking it fits: /v1/responses/input_tokens. */
  countPromptTokens(request: GenerateRequest): number {
    return this.prompts.renderPrompt(request).tokens.length;
  }

  /** Validates a request against the model (prompt length, grammar) without taking a slot. */
  async prepare(request: GenerateRequest): Promise<PreparedGeneration> {
    if (this.closed) throw shuttingDown();
    const rendered: RenderedPrompt = this.prompts.renderPrompt(request);
    const prompt = rendered.tokens;
    if (prompt.length === 0) throw new EngineError("invalid_request", "The prompt is empty.", 400, request.rawPrompt !== undefined ? "prompt" : "messages");
    const maxTokens = request.maxTokens ?? Math.max(1, Math.min(DEFAULT_MAX_TOKENS, this.contextSize - prompt.length));
    this.checkBudget(prompt.length, maxTokens, request.maxTokensField ?? "max_new_tokens", request.rawPrompt !== undefined ? "prompt" : "messages");
    this.checkLogitBias(request.logitBias);
    const grammar = await this.prompts.selectGrammar(request);
    return { request: { ...request, maxTokens }, prompt, grammar, chat: rendered.chat, preparedAt: performance.now() };
  }

  /**
   * Waits for a slot (bounded queue, deadline) and generates. `onAdmitted` runs once the slot is
   * taken and before the first token: the HTTP lifecycle starts a streamed response there, so a full
   * queue, a deadline in the queue or a shutdown are still real HTTP statuses. If it throws, the
   * slot is released and the error is the run's.
   */
  async run(prepared: PreparedGeneration, onDelta?: GenerateRequest["onDelta"], onAdmitted?: () => void): Promise<GenerationResult> {
    const { prompt, preparedAt } = prepared;
    const request = onDelta ? { ...prepared.request, onDelta } : prepared.request;
    const timeoutMs = this.options.settings.requestTimeoutMs;
    // One controller per request, linked to the caller's signal and a timer that are both undone in
    // `finally`: AbortSignal.timeout would keep each request's state alive until its deadline, and a
    // listener left on a long-lived caller signal would pile up.
    const deadlineController = new AbortController();
    const deadline = deadlineController.signal;
    const controller = new AbortController();
    const timer = setTimeout(() => {
      deadlineController.abort(new Error("deadline"));
      controller.abort(deadline.reason);
    }, timeoutMs);
    const callerSignal = request.signal;
    const onCallerAbort = () => controller.abort(callerSignal?.reason);
    if (callerSignal?.aborted) onCallerAbort();
    else callerSignal?.addEventListener("abort", onCallerAbort, { once: true });
    const signal = controller.signal;
    try {
      const slot = await this.scheduler.acquire(prompt, signal, () => abortReason(deadline, timeoutMs, "waiting for a free slot"));
      const queueMs = performance.now() - preparedAt;
      // The slot goes back to the scheduler when the backend has let go of it, which after an abort the
      // loop may do later than the request ends (see runOnSlot).
      let backendDone: Promise<unknown> | null = null;
      try {
        onAdmitted?.();
        const result = await this.runOnSlot(slot, prepared, request, signal, deadline, (done) => { backendDone = done; });
        const totalMs = performance.now() - preparedAt;
        this.scheduler.recordServiceTime(totalMs - queueMs);
        const finished: GenerationResult = { ...result, slot, timings: { ...result.timings, queueMs, totalMs } };
        for (const listener of this.finishedListeners) listener(finished);
        return finished;
      } finally {
        if (backendDone === null) this.scheduler.release(slot);
        else void (backendDone as Promise<unknown>).then(() => this.scheduler.release(slot), () => this.scheduler.release(slot));
      }
    } finally {
      clearTimeout(timer);
      callerSignal?.removeEventListener("abort", onCallerAbort);
    }
  }

  async generate(request: GenerateRequest): Promise<GenerationResult> {
    return this.run(await this.prepare(request));
  }

  /**
   * Generates on a taken slot. An abort (deadline, client gone, shutdown) asks the backend to end the job,
   * which the native loop does at its next step; when the loop is slow to get there (a long prompt chunk, a
   * starved thread: LLM_NICE under a busy machine), the request does not wait past ABORT_ACK_MS for it. It
   * ends with its own error, stops forwarding tokens, and hands `stillRunning` the backend's promise: the
   * slot stays taken until the loop lets go of it.
   */
  private async runOnSlot(slot: number, prepared: PreparedGeneration, request: GenerateRequest,
    signal: AbortSignal, deadline: AbortSignal, stillRunning: (done: Promise<unknown>) => void): Promise<Omit<GenerationResult, "slot">> {
    const { prompt } = prepared;
    const logprobsTop = request.logprobs === undefined ? undefined : Math.max(0, Math.min(MAX_LOGPROBS_TOP, Math.floor(request.logprobs.top)));
    // The content stream's further stage: the tool-call parser when the request offers tools.
    const content = prepared.chat ? toolCallParserFor(request) : undefined;
    const output = new GenerationOutput({
      stop: request.stop,
      splitThinking: prepared.chat,
      keepReasoning: prepared.chat && request.enableThinking,
      logprobs: logprobsTop !== undefined,
      content,
    });
    let abandoned = false;
    const emit = (deltas: ReturnType<GenerationOutput["push"]>) => {
      if (request.onDelta && !abandoned) for (const delta of deltas) request.onDelta(delta);
    };
    const generation = this.backend.generate(slot, {
      prompt,
      maxTokens: request.maxTokens ?? DEFAULT_MAX_TOKENS,
      sampling: samplingOf(request, this.contextSize),
      ...(prepared.grammar !== undefined ? { grammar: prepared.grammar } : {}),
      ...(logprobsTop !== undefined ? { logprobsTop } : {}),
      signal,
      onTokens: (tokens) => {
        if (abandoned) return true;
        for (const token of tokens) {
          emit(output.push(toGenerated(token)));
          if (output.done) return true;
        }
        return false;
      },
    });
    const outcome = await settleOrAbandon(generation, signal, ABORT_ACK_MS);
    if (outcome === ABANDONED) {
      abandoned = true;
      stillRunning(generation);
      throw abortReason(deadline, this.options.settings.requestTimeoutMs, "generating");
    }
    if (outcome.cancelled) throw abortReason(deadline, this.options.settings.requestTimeoutMs, "generating");
    emit(output.finish());
    const summary = output.summary();
    // Text after a stop string was never sent: the cache keeps only what the answer kept.
    if (summary.stoppedByString) await this.backend.trimCache(slot, prompt.length + summary.keptTokens);
    return {
      text: summary.text,
      reasoning: summary.reasoning,
      toolCalls: content instanceof ToolCallParser ? [...content.calls] : [],
      logprobs: summary.logprobs,
      tokensGenerated: summary.tokensGenerated,
      promptTokens: prompt.length,
      cachedPromptTokens: outcome.cachedPromptTokens,
      evaluatedTokens: outcome.evaluatedTokens,
      finishReason: summary.finishReason,
      timings: { queueMs: 0, firstTokenMs: outcome.firstTokenMs, totalMs: 0 },
    };
  }

  private checkLogitBias(bias: GenerateRequest["logitBias"]): void {
    const size = this.vocabulary.size;
    const wrong = bias?.find((b) => !Number.isInteger(b.id) || b.id < 0 || b.id >= size);
    if (wrong !== undefined) throw invalidRequest(`logit_bias names token ${wrong.id}, not a token id of this model (0..${size - 1}).`, "logit_bias");
  }

  private checkBudget(promptTokens: number, maxTokens: number, field: string, promptField: string): void {
    if (maxTokens >= this.contextSize) {
      throw new EngineError("context_length_exceeded",
        `${field} is ${maxTokens}, but the context holds ${this.contextSize} tokens (prompt included).`, 400, field);
    }
    if (promptTokens >= this.contextSize) {
      throw new EngineError("context_length_exceeded",
        `The prompt is ${promptTokens} tokens, longer than the context of ${this.contextSize} tokens.`, 400, promptField);
    }
    if (promptTokens + maxTokens > this.contextSize) {
      throw new EngineError("context_length_exceeded",
        `The prompt (${promptTokens} tokens) plus ${field} (${maxTokens}) exceeds the context of ${this.contextSize} tokens; ` +
        `lower ${field} to at most ${this.contextSize - promptTokens} or shorten the messages.`, 400, field);
    }
  }

  /** Refuses new work, fails queued requests, and frees the model once running requests end. */
  async dispose(): Promise<void> {
    this.closed = true;
    this.scheduler.rejectWaiting(shuttingDown);
    // After the drain: what was not written yet goes to disk (entries are saved as they appear).
    await this.promptCacheLoaded;
    await this.promptCacheStore?.close();
    await this.backend.dispose();
    await this.fallbackModel?.dispose();
  }
}

function shuttingDown(): EngineError {
  return new EngineError("shutting_down", "The service is shutting down.", 503, undefined, 5);
}

/** How long an aborted request waits for the backend to confirm the end of its job before it ends anyway. */
export const ABORT_ACK_MS = 250;

const ABANDONED = Symbol("abandoned");

/**
 * The backend's outcome, or ABANDONED when `signal` aborted and the backend did not settle within `ackMs`
 * of it. The promise is never left unhandled: a later rejection is the slot's business, not the request's.
 */
export function settleOrAbandon<T>(work: Promise<T>, signal: AbortSignal, ackMs: number): Promise<T | typeof ABANDONED> {
  work.catch(() => undefined);
  return new Promise<T | typeof ABANDONED>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => { timer = setTimeout(() => resolve(ABANDONED), ackMs); };
    const done = () => {
      signal.removeEventListener("abort", onAbort);
      if (timer !== undefined) clearTimeout(timer);
    };
    work.then((value) => { done(); resolve(value); }, (error: unknown) => { done(); reject(error); });
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}

function abortReason(deadline: AbortSignal, timeoutMs: number, phase: string): EngineError {
  if (deadline.aborted) {
    return new EngineError("deadline_exceeded", `The request exceeded its deadline of ${timeoutMs} ms while ${phase}.`, 504);
  }
  return new EngineError("cancelled", `The request was cancelled while ${phase}.`, 499);
}

/** The request's sampling settings with llama-server's defaults filled in (`contextSize`: what repeat_last_n -1 means). */
export function samplingOf(request: GenerateRequest, contextSize: number): SamplingParams {
  return {
    temperature: request.temperature,
    topP: request.topP,
    topK: request.topK ?? 40,
    minP: request.minP ?? 0,
    seed: request.seed ?? Math.floor(Math.random() * 0xffffffff),
    // Off unless asked for, as in transformers' generate and llama-server.
    repeatPenalty: request.repeatPenalty ?? 1,
    presencePenalty: request.presencePenalty ?? 0,
    frequencyPenalty: request.frequencyPenalty ?? 0,
    penaltyLastN: request.repeatLastN === -1 ? contextSize : request.repeatLastN ?? PENALTY_LAST_N,
    ignoreEos: request.ignoreEos ?? false,
    logitBias: request.logitBias ?? [],
  };
}

const lossyUtf8 = new TextDecoder("utf-8", { fatal: false });

function toGenerated(token: BackendToken): GeneratedToken {
  const generated: GeneratedToken = { bytes: token.bytes, isEnd: token.isEnd };
  if (token.logprob !== undefined) {
    const logprob: TokenLogprob = {
      token: lossyUtf8.decode(token.bytes),
      logprob: token.logprob.logprob,
      bytes: Array.from(token.bytes),
      top: token.logprob.top.map((alt) => ({ token: lossyUtf8.decode(alt.bytes), logprob: alt.logprob, bytes: Array.from(alt.bytes) })),
    };
    generated.logprob = logprob;
  }
  return generated;
}
