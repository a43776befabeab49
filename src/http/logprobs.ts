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
 * Where the next token starts in the generated text. One cursor follows a whole answer, across
 * streamed chunks: a character split over tokens (and so perhaps over chunks) counts where it ends.
 */
export class TextOffsetCursor {
  private readonly decoder = new TextDecoder("utf-8");
  constructor(private offset = 0) {}

  /** The offset of a token, then moves past its bytes. */
  advance(bytes: readonly number[]): number {
    const start = this.offset;
    this.offset += this.decoder.decode(Uint8Array.from(bytes), { stream: true }).length;
    return start;
  }
}

/** The legacy completions shape; `cursor` carries the text offset over streamed chunks. */
export function toCompletionLogprobs(tokens: readonly TokenLogprob[], cursor = new TextOffsetCursor()): CompletionLogprobs {
  return {
    tokens: tokens.map((t) => t.token),
    token_logprobs: tokens.map((t) => finite(t.logprob)),
    top_logprobs: tokens.map((t) => Object.fromEntries(t.top.map((alt) => [alt.token, finite(alt.logprob)]))),
    text_offset: tokens.map((t) => cursor.advance(t.bytes)),
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
