// The chat model: loading, slots (context sequences of one shared context), scheduling with prefix
// reuse, admission (bounded queue, deadlines, cancellation) and generation through node-llama-cpp's
// LlamaChat, which applies the chat wrapper, stop triggers, thought segments and grammars.
import {
  LlamaChat,
  QwenChatWrapper,
  TokenBias,
  resolveChatWrapper,
  type ChatHistoryItem,
  type ChatWrapper,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaGrammar,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import { EngineError, invalidRequest } from "./errors.js";
import { toGrammarSchema } from "./jsonSchemaGrammar.js";

import type { ChatMessage, GenerateRequest, GenerationResult, ResponseFormat } from "./chat/types.js";

export type * from "./chat/types.js";

export const DEFAULT_MAX_TOKENS = 4096;
const PREFIX_SIMILARITY = 0.1;

export type ChatEngineOptions = {
  modelPath: string;
  modelName: string;
  contextSize: number;
  parallel: number;
  batchSize: number;
  gpuLayers: "auto" | "max" | number;
  threads: number;
  queueSize: number;
  requestTimeoutMs: number;
};

export type PreparedGeneration = {
  readonly request: GenerateRequest;
  readonly prompt: Token[];
  readonly grammar: LlamaGrammar | undefined;
  readonly preparedAt: number;
};

type Slot = { id: number; sequence: LlamaContextSequence; busy: boolean; lastUsed: number };

type Waiter = {
  prompt: Token[];
  resolve: (slot: Slot) => void;
  reject: (error: Error) => void;
};

export class ChatEngine {
  readonly modelName: string;
  readonly contextSize: number;
  readonly loadMs: number;
  private readonly slots: Slot[];
  private readonly waiting: Waiter[] = [];
  private readonly grammarCache = new Map<string, Promise<LlamaGrammar>>();
  private readonly wrappers: { thinking: ChatWrapper; noThinking: ChatWrapper };
  private readonly noEndTokens: TokenBias;
  private readonly finishedListeners = new Set<(result: GenerationResult) => void>();
  private useCounter = 0;
  private recentDurationsMs: number[] = [];
  private closed = false;

  private constructor(
    private readonly llama: Llama,
    readonly model: LlamaModel,
    private readonly context: LlamaContext,
    private readonly options: ChatEngineOptions,
    loadMs: number,
  ) {
    this.modelName = options.modelName;
    this.contextSize = context.contextSize;
    this.loadMs = loadMs;
    this.slots = Array.from({ length: options.parallel }, (_, id) => ({ id, sequence: context.getSequence(), busy: false, lastUsed: 0 }));
    this.wrappers = resolveWrappers(model);
    this.noEndTokens = new TokenBias(model.tokenizer);
    for (const token of [model.tokens.eos, model.tokens.eot, ...endOfGenerationTokens(model)]) {
      if (token !== null) this.noEndTokens.set(token, "never");
    }
  }

  static async load(llama: Llama, options: ChatEngineOptions): Promise<ChatEngine> {
    const started = performance.now();
    const model = await llama.loadModel({ modelPath: options.modelPath, gpuLayers: options.gpuLayers });
    try {
      const context = await model.createContext({
        contextSize: options.contextSize,
        sequences: options.parallel,
        batchSize: options.batchSize,
        threads: options.threads,
        // Requests must not be silently cut by a context shift: prompts are checked up front.
        failedCreationRemedy: false,
      });
      return new ChatEngine(llama, model, context, options, performance.now() - started);
    } catch (error) {
      await model.dispose();
      throw error;
    }
  }

  /** What the process logs at start: where the model lives and what memory the slots take. */
  describe() {
    const estimate = this.model.fileInsights.estimateContextResourceRequirements({
      contextSize: this.contextSize, sequences: this.slots.length, batchSize: this.options.batchSize, modelGpuLayers: this.model.gpuLayers,
    });
    return {
      model: this.modelName,
      gpuLayers: this.model.gpuLayers,
      slots: this.slots.length,
      contextPerSlot: this.contextSize,
      contextTotal: this.contextSize * this.slots.length,
      contextMemoryMiB: Math.round((estimate.cpuRam + estimate.gpuVram) / 2 ** 20),
      contextMemoryPerSlotMiB: Math.round((estimate.cpuRam + estimate.gpuVram) / this.slots.length / 2 ** 20),
      threads: this.context.currentThreads,
      chatWrapper: this.wrappers.noThinking.wrapperName,
      loadMs: Math.round(this.loadMs),
    };
  }

  stats() {
    return {
      slotsTotal: this.slots.length,
      slotsBusy: this.slots.filter((s) => s.busy).length,
      queued: this.waiting.length,
      queueCapacity: this.options.queueSize,
    };
  }

  /** Called after every successful generation (metrics). */
  onGenerationFinished(listener: (result: GenerationResult) => void): () => void {
    this.finishedListeners.add(listener);
    return () => this.finishedListeners.delete(listener);
  }

  /** Per slot: busy or not, and how many tokens its KV cache holds (for /metrics and tests). */
  slotsSnapshot(): { id: number; busy: boolean; cachedTokens: number }[] {
    return this.slots.map((s) => ({ id: s.id, busy: s.busy, cachedTokens: s.sequence.contextTokens.length }));
  }

  /** The exact tokens the chat template produces for these messages, generation prompt included. */
  tokenizePrompt(messages: readonly ChatMessage[], enableThinking: boolean): Token[] {
    const wrapper = enableThinking ? this.wrappers.thinking : this.wrappers.noThinking;
    const { contextText } = wrapper.generateContextState({ chatHistory: toChatHistory(messages) });
    return contextText.tokenize(this.model.tokenizer);
  }

  /** Validates a request against the model (prompt length, grammar) without taking a slot. */
  async prepare(request: GenerateRequest): Promise<PreparedGeneration> {
    if (this.closed) throw new EngineError("shutting_down", "The service is shutting down.", 503, undefined, 5);
    const prompt = this.tokenizePrompt(request.messages, request.enableThinking);
    const maxTokens = request.maxTokens ?? Math.max(1, Math.min(DEFAULT_MAX_TOKENS, this.contextSize - prompt.length));
    this.checkBudget(prompt.length, maxTokens, request.maxTokensField ?? "max_new_tokens");
    const grammar = await this.grammarFor(request.responseFormat);
    return { request: { ...request, maxTokens }, prompt, grammar, preparedAt: performance.now() };
  }

  /** Waits for a slot (bounded queue, deadline) and generates. */
  async run(prepared: PreparedGeneration, onDelta?: GenerateRequest["onDelta"]): Promise<GenerationResult> {
    const { prompt, grammar, preparedAt } = prepared;
    const request = onDelta ? { ...prepared.request, onDelta } : prepared.request;
    const deadline = AbortSignal.timeout(this.options.requestTimeoutMs);
    const signal = request.signal ? AbortSignal.any([request.signal, deadline]) : deadline;
    const slot = await this.acquireSlot(prompt, signal, deadline);
    const queueMs = performance.now() - preparedAt;
    try {
      const result = await this.runOnSlot(slot, prompt, request, grammar, signal, deadline);
      this.recordDuration(performance.now() - preparedAt);
      const finished = { ...result, slot: slot.id, timings: { ...result.timings, queueMs, totalMs: performance.now() - preparedAt } };
      for (const listener of this.finishedListeners) listener(finished);
      return finished;
    } finally {
      this.releaseSlot(slot);
    }
  }

  async generate(request: GenerateRequest): Promise<GenerationResult> {
    return this.run(await this.prepare(request));
  }

  private checkBudget(promptTokens: number, maxTokens: number, field: string): void {
    if (maxTokens >= this.contextSize) {
      throw new EngineError("context_length_exceeded",
        `${field} is ${maxTokens}, but the context holds ${this.contextSize} tokens (prompt included).`, 400, field);
    }
    if (promptTokens >= this.contextSize) {
      throw new EngineError("context_length_exceeded",
        `The prompt is ${promptTokens} tokens, longer than the context of ${this.contextSize} tokens.`, 400, "messages");
    }
    if (promptTokens + maxTokens > this.contextSize) {
      throw new EngineError("context_length_exceeded",
        `The prompt (${promptTokens} tokens) plus ${field} (${maxTokens}) exceeds the context of ${this.contextSize} tokens; ` +
        `lower ${field} to at most ${this.contextSize - promptTokens} or shorten the messages.`, 400, field);
    }
  }

  private async grammarFor(format: ResponseFormat | undefined): Promise<LlamaGrammar | undefined> {
    if (format === undefined || format.type === "text") return undefined;
    const key = format.type === "json_object" ? "json" : JSON.stringify(format.schema);
    let grammar = this.grammarCache.get(key);
    if (grammar === undefined) {
      grammar = format.type === "json_object"
        ? this.llama.getGrammarFor("json")
        // The const generic infers a literal type from its argument; a runtime schema has none.
        : this.llama.createGrammarForJsonSchema(toGrammarSchema(format.schema) as Parameters<Llama["createGrammarForJsonSchema"]>[0]);
      if (this.grammarCache.size > 64) this.grammarCache.delete(this.grammarCache.keys().next().value as string);
      this.grammarCache.set(key, grammar);
    }
    try {
      return await grammar;
    } catch (error) {
      this.grammarCache.delete(key);
      if (error instanceof EngineError) throw error;
      throw invalidRequest(`response_format.json_schema.schema cannot be turned into a grammar: ${(error as Error).message}`,
        "response_format.json_schema.schema");
    }
  }

  /**
   * The free slot whose cached tokens share the longest prefix with the prompt. When even the best
   * shares under a tenth of the prompt (as llama-server's --slot-prompt-similarity), the least
   * recently used slot is taken instead, so one conversation's cache is not evicted for a stranger.
   */
  private pickSlot(prompt: Token[]): Slot | undefined {
    const free = this.slots.filter((s) => !s.busy);
    if (free.length === 0) return undefined;
    const lru = free.reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a));
    let best = lru;
    let bestShared = -1;
    for (const slot of free) {
      const shared = sharedPrefixLength(slot.sequence, prompt);
      if (shared > bestShared) {
        best = slot;
        bestShared = shared;
      }
    }
    return bestShared >= PREFIX_SIMILARITY * prompt.length ? best : lru;
  }

  private acquireSlot(prompt: Token[], signal: AbortSignal, deadline: AbortSignal): Promise<Slot> {
    const free = this.waiting.length === 0 ? this.pickSlot(prompt) : undefined;
    if (free) {
      free.busy = true;
      return Promise.resolve(free);
    }
    if (this.waiting.length >= this.options.queueSize) {
      return Promise.reject(new EngineError("queue_full",
        `All ${this.slots.length} slots are busy and ${this.waiting.length} requests are waiting.`, 429, undefined, this.retryAfterSeconds()));
    }
    return new Promise<Slot>((resolve, reject) => {
      const onAbort = () => {
        const index = this.waiting.indexOf(waiter);
        if (index >= 0) this.waiting.splice(index, 1);
        reject(abortReason(signal, deadline, this.options.requestTimeoutMs, "waiting for a free slot"));
      };
      const waiter: Waiter = {
        prompt,
        resolve: (slot) => { signal.removeEventListener("abort", onAbort); resolve(slot); },
        reject,
      };
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  private releaseSlot(slot: Slot): void {
    slot.busy = false;
    slot.lastUsed = ++this.useCounter;
    const next = this.waiting.shift();
    if (next === undefined) return;
    const chosen = this.pickSlot(next.prompt) ?? slot;
    chosen.busy = true;
    next.resolve(chosen);
  }

  private async runOnSlot(slot: Slot, prompt: Token[], request: GenerateRequest, grammar: LlamaGrammar | undefined,
    signal: AbortSignal, deadline: AbortSignal): Promise<Omit<GenerationResult, "slot">> {
    const sequence = slot.sequence;
    const cachedPromptTokens = sharedPrefixLength(sequence, prompt);
    const meterBefore = sequence.tokenMeter.getState();
    const started = performance.now();
    let firstTokenMs: number | null = null;
    let sawThought = false;
    // The answer as streamed: the non-streamed text is the same string, so the two cannot differ.
    let content = "";
    const chat = new LlamaChat({
      contextSequence: sequence,
      chatWrapper: request.enableThinking ? this.wrappers.thinking : this.wrappers.noThinking,
      autoDisposeSequence: false,
    });
    const penalties = request.repeatPenalty !== undefined || request.presencePenalty !== undefined || request.frequencyPenalty !== undefined;
    try {
      const response = await chat.generateResponse(toChatHistory(request.messages), {
        maxTokens: request.maxTokens,
        temperature: request.temperature,
        topP: request.topP,
        topK: request.topK,
        minP: request.minP,
        seed: request.seed,
        grammar,
        signal,
        stopOnAbortSignal: false,
        // Off unless asked for, as in transformers' generate and llama-server.
        repeatPenalty: penalties
          ? { penalty: request.repeatPenalty ?? 1, presencePenalty: request.presencePenalty ?? 0, frequencyPenalty: request.frequencyPenalty ?? 0 }
          : false,
        tokenBias: request.ignoreEos ? this.noEndTokens : undefined,
        customStopTriggers: request.stop && request.stop.length > 0 ? [...request.stop] : undefined,
        onResponseChunk: (chunk) => {
          firstTokenMs ??= performance.now() - started;
          if (chunk.type === undefined) {
            // Qwen3 writes "\n\n" between </think> and the answer; its template strips it, so do we.
            const text = sawThought && content === "" ? chunk.text.replace(/^\n+/, "") : chunk.text;
            if (text === "") return;
            content += text;
            request.onDelta?.({ kind: "content", text });
          } else if (chunk.segmentType === "thought") {
            sawThought = true;
            if (request.enableThinking && chunk.text !== "") request.onDelta?.({ kind: "reasoning", text: chunk.text });
          }
        },
      });
      const used = sequence.tokenMeter.diff(meterBefore);
      const thoughts = response.fullResponse.flatMap((item) => typeof item !== "string" && item.segmentType === "thought" ? [item.text] : []);
      return {
        text: content,
        reasoning: request.enableThinking ? thoughts.join("") : null,
        toolCalls: [],
        logprobs: null,
        // One logits row is read per sampled token, so the output meter counts exactly the tokens generated.
        tokensGenerated: used.usedOutputTokens,
        promptTokens: prompt.length,
        cachedPromptTokens,
        evaluatedTokens: used.usedInputTokens + used.usedOutputTokens,
        finishReason: response.metadata.stopReason === "maxTokens" ? "length" : "stop",
        timings: { queueMs: 0, firstTokenMs, totalMs: 0 },
      };
    } catch (error) {
      if (signal.aborted) throw abortReason(signal, deadline, this.options.requestTimeoutMs, "generating");
      throw error;
    } finally {
      chat.dispose({ disposeSequence: false });
    }
  }

  private recordDuration(ms: number): void {
    this.recentDurationsMs.push(ms);
    if (this.recentDurationsMs.length > 32) this.recentDurationsMs.shift();
  }

  /** A hint for 429s: about how long until a queued request would start. */
  private retryAfterSeconds(): number {
    const samples = this.recentDurationsMs;
    const mean = samples.length === 0 ? 5000 : samples.reduce((a, b) => a + b, 0) / samples.length;
    return Math.min(60, Math.max(1, Math.ceil(mean / 1000)));
  }

  /** Refuses new work, fails queued requests, and frees the model once running requests end. */
  async dispose(): Promise<void> {
    this.closed = true;
    for (const waiter of this.waiting.splice(0)) {
      waiter.reject(new EngineError("shutting_down", "The service is shutting down.", 503, undefined, 5));
    }
    await this.context.dispose();
    await this.model.dispose();
  }
}

/** The chat template's end-of-turn tokens (e.g. `<|im_end|>`), which are not always the GGUF's EOS. */
function endOfGenerationTokens(model: LlamaModel): Token[] {
  return ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"].flatMap((text) => {
    const tokens = model.tokenize(text, true);
    return tokens.length === 1 && model.isSpecialToken(tokens[0]) ? tokens : [];
  });
}

function abortReason(signal: AbortSignal, deadline: AbortSignal, timeoutMs: number, phase: string): EngineError {
  if (deadline.aborted) {
    return new EngineError("deadline_exceeded", `The request exceeded its deadline of ${timeoutMs} ms while ${phase}.`, 504);
  }
  void signal;
  return new EngineError("cancelled", `The request was cancelled while ${phase}.`, 499);
}

function sharedPrefixLength(sequence: LlamaContextSequence, prompt: Token[]): number {
  return sequence.compareContextTokens(prompt).firstDifferentIndex;
}

export function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = messages.map((m): ChatHistoryItem => {
    if (m.role === "system") return { type: "system", text: m.content };
    if (m.role === "user") return { type: "user", text: m.content };
    return { type: "model", response: [m.content] };
  });
  // The open assistant turn the model answers in (add_generation_prompt in transformers' terms).
  history.push({ type: "model", response: [] });
  return history;
}

/**
 * Qwen3's template turns thinking off by pre-filling an empty think block (`<think>\n\n</think>\n\n`);
 * node-llama-cpp's QwenChatWrapper does exactly that with `thoughts: "discourage"` and parses
 * `<think>` output into a thought segment. Other models get whatever node-llama-cpp resolves from
 * their GGUF (thinking then has no effect on the prompt).
 */
function resolveWrappers(model: LlamaModel): { thinking: ChatWrapper; noThinking: ChatWrapper } {
  const resolved = resolveChatWrapper(model);
  if (resolved instanceof QwenChatWrapper) {
    return {
      thinking: new QwenChatWrapper({ variation: resolved.variation, thoughts: "auto" }),
      noThinking: new QwenChatWrapper({ variation: resolved.variation, thoughts: "discourage" }),
    };
  }
  return { thinking: resolved, noThinking: resolved };
}
