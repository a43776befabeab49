// The two servers behind one interface: what a benchmark sends (messages, token budget, sampling) and
// what it gets back (event times and token counts). Each adapter speaks its server's own API; the timing
// rules are the same for both: first content event = first token, completion event = last token.
import { postJson, postSse, type SseEvent } from "./http.ts";

export type ChatMessage = { role: "system" | "user"; content: string };

/** Identical on both sides and always explicit, so neither server's defaults matter. */
export const SAMPLING = { temperature: 0.5, top_p: 0.9, top_k: 40, min_p: 0.05 } as const;

export type GenerateParams = {
  messages: readonly ChatMessage[];
  maxTokens: number;
  ignoreEos: boolean;
  seed: number;
  signal?: AbortSignal;
  /** Deadline for the whole stream (default: http.ts DEFAULT_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Called at the first content event (e.g. to start a load generator once decoding runs). */
  onFirstContent?: () => void;
};

export type StreamResult = {
  sentAtMs: number;
  /** Arrival of the first event carrying answer text; null if none did. */
  firstContentAtMs: number | null;
  /** Arrival of the event that says generation finished (ours: `done`; llama-server: finish_reason). */
  finishedAtMs: number;
  tokens: number;
  promptTokens: number;
  cachedPromptTokens: number;
  /** llama-server's own decode rate (timings.predicted_per_second), for cross-checking the client-side one. */
  serverDecodeTokPerS: number | null;
  /** Longest wait between two content events after the first: a stream stalled by other work shows here. */
  maxContentGapMs: number;
};

export interface ChatTarget {
  readonly name: string;
  readonly baseUrl: string;
  generate(params: GenerateParams): Promise<StreamResult>;
}

export interface EmbedTarget {
  readonly baseUrl: string;
  /** Embeds the texts; resolves with the vector count (checked against the input). */
  embed(texts: readonly string[]): Promise<number>;
}

/** Shared bookkeeping of one stream: first content, finish, counts. */
class StreamRecorder {
  readonly sentAtMs = performance.now();
  firstContentAtMs: number | null = null;
  private lastContentAtMs: number | null = null;
  private maxContentGapMs = 0;
  finishedAtMs: number | null = null;
  tokens = 0;
  promptTokens = 0;
  cachedPromptTokens = 0;
  serverDecodeTokPerS: number | null = null;
  constructor(private readonly onFirstContent?: () => void) {}

  content(text: string, atMs: number): void {
    if (text === "") return;
    if (this.lastContentAtMs !== null) this.maxContentGapMs = Math.max(this.maxContentGapMs, atMs - this.lastContentAtMs);
    this.lastContentAtMs = atMs;
    if (this.firstContentAtMs !== null) return;
    this.firstContentAtMs = atMs;
    this.onFirstContent?.();
  }

  result(label: string): StreamResult {
    if (this.finishedAtMs === null) throw new Error(`${label}: the stream ended without a completion event`);
    return {
      sentAtMs: this.sentAtMs, firstContentAtMs: this.firstContentAtMs, finishedAtMs: this.finishedAtMs, tokens: this.tokens,
      promptTokens: this.promptTokens, cachedPromptTokens: this.cachedPromptTokens, serverDecodeTokPerS: this.serverDecodeTokPerS,
      maxContentGapMs: this.maxContentGapMs,
    };
  }
}

// ---- our service: the seed API -------------------------------------------------------------------------

type OurDone = {
  tokens_generated: number;
  usage: { prompt_tokens: number; cached_prompt_tokens: number; completion_tokens: number };
};

export class OurChat implements ChatTarget, EmbedTarget {
  readonly name = "ours";
  constructor(readonly baseUrl: string) {}

  async generate(p: GenerateParams): Promise<StreamResult> {
    const rec = new StreamRecorder(p.onFirstContent);
    const body = {
      messages: p.messages, max_new_tokens: p.maxTokens, ignore_eos: p.ignoreEos, seed: p.seed,
      enable_thinking: false, stream: true, ...SAMPLING,
    };
    await postSse(`${this.baseUrl}/api/llm/generate`, body, (e) => this.onEvent(rec, e), p.signal, p.timeoutMs);
    return rec.result("ours /api/llm/generate");
  }

  private onEvent(rec: StreamRecorder, e: SseEvent): void {
    if (e.event === "delta") rec.content((JSON.parse(e.data) as { text: string }).text, e.atMs);
    else if (e.event === "done") {
      const done = JSON.parse(e.data) as OurDone;
      rec.finishedAtMs = e.atMs;
      rec.tokens = done.tokens_generated;
      rec.promptTokens = done.usage.prompt_tokens;
      rec.cachedPromptTokens = done.usage.cached_prompt_tokens;
    } else if (e.event === "error") throw new Error(`ours: error event ${e.data}`);
  }

  async embed(texts: readonly string[]): Promise<number> {
    const r = await postJson<{ embeddings: number[][] }>(`${this.baseUrl}/api/llm/embed`, { texts });
    return checkCount(r.embeddings.length, texts.length, "ours /api/llm/embed");
  }
}

// ---- llama-server: its OpenAI-compatible API -------------------------------------------------------------

type LlamaChunk = {
  choices?: { delta?: { content?: string | null }; finish_reason?: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details?: { cached_tokens?: number } };
  timings?: { predicted_n: number; predicted_per_second: number; prompt_n: number; cache_n: number };
};

export class LlamaServerChat implements ChatTarget {
  readonly name = "llama-server";
  constructor(readonly baseUrl: string) {}

  async generate(p: GenerateParams): Promise<StreamResult> {
    const rec = new StreamRecorder(p.onFirstContent);
    const body = {
      messages: p.messages, max_tokens: p.maxTokens, ignore_eos: p.ignoreEos, seed: p.seed, stream: true,
      // Qwen3's template with an empty think block, as our enable_thinking:false produces.
      chat_template_kwargs: { enable_thinking: false },
      stream_options: { include_usage: true },
      ...SAMPLING,
    };
    await postSse(`${this.baseUrl}/v1/chat/completions`, body, (e) => this.onEvent(rec, e), p.signal, p.timeoutMs);
    return rec.result("llama-server /v1/chat/completions");
  }

  private onEvent(rec: StreamRecorder, e: SseEvent): void {
    if (e.data === "[DONE]") return;
    const chunk = JSON.parse(e.data) as LlamaChunk & { error?: unknown };
    if (chunk.error !== undefined) throw new Error(`llama-server: error chunk ${e.data}`);
    const choice = chunk.choices?.[0];
    if (choice?.delta?.content) rec.content(choice.delta.content, e.atMs);
    if (choice?.finish_reason) rec.finishedAtMs ??= e.atMs;
    if (chunk.usage) {
      rec.promptTokens = chunk.usage.prompt_tokens;
      rec.tokens = chunk.usage.completion_tokens;
      rec.cachedPromptTokens = chunk.usage.prompt_tokens_details?.cached_tokens ?? 0;
    }
    if (chunk.timings) {
      rec.tokens = chunk.timings.predicted_n;
      rec.cachedPromptTokens = chunk.timings.cache_n;
      rec.serverDecodeTokPerS = chunk.timings.predicted_per_second;
    }
  }
}

export class LlamaServerEmbed implements EmbedTarget {
  constructor(readonly baseUrl: string) {}

  async embed(texts: readonly string[]): Promise<number> {
    const r = await postJson<{ data: { embedding: number[] }[] }>(`${this.baseUrl}/v1/embeddings`, { input: texts });
    return checkCount(r.data.length, texts.length, "llama-server /v1/embeddings");
  }
}

function checkCount(got: number, want: number, label: string): number {
  if (got !== want) throw new Error(`${label} returned ${got} vectors for ${want} texts`);
  return got;
}
