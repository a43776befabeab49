// The chat engine's request and result types: the one boundary every API adapter (seed, OpenAI,
// Ollama) and every generation backend (native slot loop, node-llama-cpp) agrees on.
//
// Module ownership inside src/engine/chat/:
//   types.ts           this file: the contract
//   output.ts          pure text post-processing: stop strings (across token boundaries too), the <think> split
//   toolPrompt.ts      tool definitions -> the prompt (the model's own template) and -> the grammar (GBNF)
//   toolCallParser.ts  the answer's <tool_call> blocks -> tool calls, streamed
//   prompt.ts, scheduler.ts, engine.ts, the backends, promptCacheStore.ts, settings.ts

export type ChatRole = "system" | "user" | "assistant" | "tool";

/** A tool call the model made (in an assistant message of the history, or in a result). */
export type ToolCall = {
  id: string;
  name: string;
  /** The arguments as JSON text, exactly as OpenAI's `function.arguments`. */
  arguments: string;
};

export type ChatMessage =
  | { role: "system" | "user"; content: string }
  | { role: "assistant"; content: string; toolCalls?: readonly ToolCall[] }
  | { role: "tool"; content: string; toolCallId?: string; name?: string };

/** A function the model may call (OpenAI's `tools[].function`). */
export type ToolDefinition = {
  name: string;
  description?: string;
  /** JSON schema of the arguments object. */
  parameters?: Record<string, unknown>;
};

/** OpenAI's tool_choice: "auto" (default when tools are given), "none", "required", or one named function. */
export type ToolChoice = "auto" | "none" | "required" | { name: string };

export type ResponseFormat =
  | { type: "text" }
  | { type: "json_object" }
  | { type: "json_schema"; schema: Record<string, unknown> };

export type GenerateRequest = {
  messages: readonly ChatMessage[];
  /**
   * Raw completion (`/v1/completions`, Ollama's `raw`): this text is tokenized as is, without the chat
   * template, and `messages`, `tools` and `enableThinking` are ignored.
   */
  rawPrompt?: string;
  /** Omitted: what the context leaves after the prompt, at most DEFAULT_MAX_TOKENS. */
  maxTokens?: number;
  /** How the caller's API names the token limit, for error messages (`max_new_tokens`, `max_tokens`). */
  maxTokensField?: string;
  temperature: number;
  topP: number;
  topK?: number;
  minP?: number;
  seed?: number;
  stop?: readonly string[];
  repeatPenalty?: number;
  presencePenalty?: number;
  frequencyPenalty?: number;
  /** How many of the last tokens (prompt included, as llama-server) the penalties look at; -1: the whole context; 0: off. Default 64. */
  repeatLastN?: number;
  /** Added to a token's logit before sampling (OpenAI's and llama-server's logit_bias); -Infinity bans it. */
  logitBias?: readonly TokenBias[];
  responseFormat?: ResponseFormat;
  /** Never sample an end-of-generation token (llama-server's ignore_eos): runs to maxTokens. */
  ignoreEos?: boolean;
  enableThinking: boolean;
  /** Functions rendered into the prompt by the model's chat template. */
  tools?: readonly ToolDefinition[];
  /** Default "auto" when tools are given. "required" / named: the call is constrained by a grammar. */
  toolChoice?: ToolChoice;
  /** false: at most one tool call. Default true. */
  parallelToolCalls?: boolean;
  /**
   * Log-probabilities: when set, every generated token reports its logprob and the `top` most likely
   * alternatives (0..20), from the softmax of the raw logits (before temperature and truncation).
   */
  logprobs?: { top: number };
  /** Aborts waiting or generating: the slot is freed within one step. */
  signal?: AbortSignal;
  /** Receives output as it is generated; text never splits a character. */
  onDelta?: (delta: GenerationDelta) => void;
};

export type TokenBias = { id: number; bias: number };

export type TokenLogprob = {
  /** The token's text (may be part of a character: then `bytes` says which bytes). */
  token: string;
  logprob: number;
  bytes: number[];
  top: { token: string; logprob: number; bytes: number[] }[];
};

export type GenerationDelta =
  | { kind: "content" | "reasoning"; text: string; logprobs?: TokenLogprob[] }
  /** A tool call begins: its index among this answer's calls, its id and the function's name. */
  | { kind: "tool_call"; index: number; id: string; name: string }
  /** A fragment of a tool call's JSON arguments (the fragments concatenated are `ToolCall.arguments`). */
  | { kind: "tool_call_arguments"; index: number; text: string };

export type FinishReason = "stop" | "length" | "tool_calls";

export type GenerationResult = {
  text: string;
  /** The thought segment when thinking was enabled, else null. */
  reasoning: string | null;
  /** Tool calls the model made (empty when none). */
  toolCalls: ToolCall[];
  /** Per generated token, when the request asked for logprobs; else null. */
  logprobs: TokenLogprob[] | null;
  /** Tokens the model sampled for this request (thoughts and the end token included). */
  tokensGenerated: number;
  promptTokens: number;
  /** Prompt tokens that were already in the slot's KV cache and were not evaluated again. */
  cachedPromptTokens: number;
  /** Tokens decoded for this request (prompt tokens not cached, and generated tokens fed back). */
  evaluatedTokens: number;
  finishReason: FinishReason;
  slot: number;
  timings: { queueMs: number; firstTokenMs: number | null; totalMs: number };
};
