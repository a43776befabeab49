// The engine's per-token log-probabilities in each API's shape: OpenAI chat completions
// (`choices[].logprobs.content[]`), legacy completions (`tokens`, `token_logprobs`, `top_logprobs`,
// `text_offset`) and Ollama (`logprobs[]`). Pure functions: the numbers are the engine's.
import type { GenerationDelta, TokenLogprob } from "../engine/chat/types.js";
import { invalidRequest } from "../engine/errors.js";

/**
 * A probability that underflows to 0 has logprob -Infinity, which JSON cannot carry; OpenAI reports
 * such tokens as -9999.
 */
export const LOGPROB_FLOOR = -9999;
const finite = (logprob: number): number => Number.isFinite(logprob) ? logprob : LOGPROB_FLOOR;

export type ChatLogprobs = {
  content: { token: string; logprob: number; bytes: number[]; top_logprobs: { token: string; logprob: number; bytes: number[] }[] }[];
  refusal: null;
};

/** OpenAI chat completions: every token with its `top` alternatives. */
export function toChatLogprobs(tokens: readonly TokenLogprob[]): ChatLogprobs {
  return {
    content: tokens.map((t) => ({
      token: t.token,
      logprob: finite(t.logprob),
      bytes: t.bytes,
      top_logprobs: t.top.map((alt) => ({ token: alt.token, logprob: finite(alt.logprob), bytes: alt.bytes })),
    })),
    refusal: null,
  };
}

export type CompletionLogprobs = {
  tokens: string[];
  token_logprobs: number[];
  /** One `{token: logprob}` map per token (of the `logprobs` most likely), as the legacy API returns. */
  top_logprobs: Record<string, number>[];
  /** Where each token starts in the text, in characters (UTF-16 units, as JavaScript and OpenAI count). */
  text_offset: number[];
};

/**
 * The legacy completions shape. `startOffset` is where the generated text begins (0 without echo;
 * a streamed chunk passes the length already sent). A token that ends inside a character starts at
 * the offset of that character's end.
 */
export function toCompletionLogprobs(tokens: readonly TokenLogprob[], startOffset = 0): CompletionLogprobs {
  const decoder = new TextDecoder("utf-8");
  let offset = startOffset;
  const text_offset: number[] = [];
  for (const t of tokens) {
    text_offset.push(offset);
    offset += decoder.decode(Uint8Array.from(t.bytes), { stream: true }).length;
  }
  return {
    tokens: tokens.map((t) => t.token),
    token_logprobs: tokens.map((t) => finite(t.logprob)),
    top_logprobs: tokens.map((t) => Object.fromEntries(t.top.map((alt) => [alt.token, finite(alt.logprob)]))),
    text_offset,
  };
}

/** Ollama's `logprobs` (api/types.go Logprob): token, logprob, bytes and the top alternatives. */
export function toOllamaLogprobs(tokens: readonly TokenLogprob[]) {
  return tokens.map((t) => ({
    token: t.token,
    logprob: finite(t.logprob),
    bytes: t.bytes,
    top_logprobs: t.top.map((alt) => ({ token: alt.token, logprob: finite(alt.logprob), bytes: alt.bytes })),
  }));
}

/** OpenAI's `logprobs` / `top_logprobs` -> the engine's request; top_logprobs without logprobs is a 400, as on OpenAI. */
export function chatLogprobsRequest(body: { logprobs?: boolean | null; top_logprobs?: number | null }): { logprobs?: { top: number } } {
  const top = body.top_logprobs ?? undefined;
  if (body.logprobs !== true) {
    if (top !== undefined && top > 0) throw invalidRequest("top_logprobs needs logprobs: true", "top_logprobs");
    return {};
  }
  return { logprobs: { top: top ?? 0 } };
}

/**
 * The answer's tokens, collected from the content deltas (thinking tokens are not part of the answer,
 * so not of `choices[].logprobs`); `null` when the request did not ask.
 */
export class AnswerLogprobs {
  private readonly tokens: TokenLogprob[] = [];
  constructor(private readonly requested: { top: number } | undefined) {}

  readonly collect = (delta: GenerationDelta): void => {
    if (this.requested !== undefined && delta.kind === "content" && delta.logprobs) this.tokens.push(...delta.logprobs);
  };

  result(): ChatLogprobs | null {
    return this.requested === undefined ? null : toChatLogprobs(this.tokens);
  }

  /** A streamed content chunk's own tokens. */
  ofDelta(delta: GenerationDelta): ChatLogprobs | null {
    if (this.requested === undefined || delta.kind !== "content") return null;
    return toChatLogprobs(delta.logprobs ?? []);
  }
}
