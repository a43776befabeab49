// Text post-processing of a generated token stream: pure functions and small state machines, no
// model. Both generation backends (native slot loop, node-llama-cpp) feed every sampled token's bytes
// through one GenerationOutput, so streamed and returned text, stop handling, the <think> split and
// finish reasons are the same on either path.
//
//   token bytes -> Utf8Stream (never splits a character)
//               -> StopMatcher (stop strings across token boundaries; text after a stop never leaves)
//               -> ThinkSplitter (Qwen3 <think>…</think> -> reasoning / content)
//               -> ContentTransformer (content only; the tool-call parser plugs in here)
//               -> GenerationDelta[]
import type { FinishReason, GenerationDelta, TokenLogprob } from "./types.js";

/** A further stage for the CONTENT text stream (e.g. the `<tool_call>` parser). */
export interface ContentTransformer {
  /** Content text as it is released; returns the deltas to emit (content, tool_call, …). */
  push(text: string): GenerationDelta[];
  /** End of the stream: whatever was held back. */
  finish(): GenerationDelta[];
  /** A finish reason that overrides "stop" (e.g. "tool_calls" when a call was made). */
  finishReason?(): FinishReason | undefined;
}

/** The identity transformer: content passes through as one delta per release. */
export const plainContent = (): ContentTransformer => ({
  push: (text) => (text === "" ? [] : [{ kind: "content", text }]),
  finish: () => [],
});

// ---------------------------------------------------------------------------------------------------
// UTF-8
// ---------------------------------------------------------------------------------------------------

/** Incremental UTF-8 decoding: a character split across tokens comes out whole with its last byte. */
export class Utf8Stream {
  private readonly decoder = new TextDecoder("utf-8", { fatal: false });
  /** Bytes seen of the character in progress (0: none), and how many it needs. */
  private pending = 0;
  private needed = 0;

  push(bytes: Uint8Array): string {
    for (const byte of bytes) {
      if (this.pending > 0 && (byte & 0xc0) === 0x80) {
        this.pending++;
        if (this.pending >= this.needed) this.pending = 0;
        continue;
      }
      const length = sequenceLength(byte);
      this.pending = length > 1 ? 1 : 0;
      this.needed = length;
    }
    return this.decoder.decode(bytes, { stream: true });
  }

  /** True when the bytes pushed so far end inside a character. */
  get hasPending(): boolean {
    return this.pending > 0;
  }

  /** Flushes an incomplete trailing sequence as U+FFFD (only at the very end of a stream). */
  end(): string {
    this.pending = 0;
    return this.decoder.decode();
  }
}

function sequenceLength(lead: number): number {
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  if (lead >= 0xe0) return lead <= 0xef ? 3 : 1;
  if (lead >= 0xc2) return 2;
  return 1;
}

// ---------------------------------------------------------------------------------------------------
// Stop strings
// ---------------------------------------------------------------------------------------------------

/**
 * Finds the first stop string in a growing text. Text that could still be the start of a stop string
 * is held back; `push` returns only text that is certainly before any stop.
 */
export class StopMatcher {
  private buffer = "";
  private released = 0;
  private stoppedAt: number | null = null;
  private readonly stops: readonly string[];
  private readonly longest: number;

  constructor(stops: readonly string[]) {
    this.stops = stops.filter((s) => s !== "");
    this.longest = this.stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** Characters of generated text released so far (the offset of the next released character). */
  get releasedLength(): number {
    return this.released;
  }

  /** Offset in the whole text where the stop string began, or null while none was found. */
  get stopOffset(): number | null {
    return this.stoppedAt;
  }

  /** Adds text; returns the text now known to precede any stop string. */
  push(text: string): string {
    if (this.stoppedAt !== null) return "";
    this.buffer += text;
    if (this.stops.length === 0) return this.take(this.buffer.length);
    let first = -1;
    for (const stop of this.stops) {
      const at = this.buffer.indexOf(stop);
      if (at >= 0 && (first < 0 || at < first)) first = at;
    }
    if (first >= 0) {
      const out = this.take(first);
      this.stoppedAt = this.released;
      this.buffer = "";
      return out;
    }
    return this.take(this.buffer.length - this.heldBack());
  }

  /** End of generation: nothing can complete a stop string any more. */
  flush(): string {
    if (this.stoppedAt !== null) return "";
    return this.take(this.buffer.length);
  }

  /** Length of the longest buffer suffix that is a proper prefix of some stop string. */
  private heldBack(): number {
    const max = Math.min(this.longest - 1, this.buffer.length);
    for (let length = max; length > 0; length--) {
      const tail = this.buffer.slice(this.buffer.length - length);
      if (this.stops.some((s) => s.startsWith(tail))) return length;
    }
    return 0;
  }

  private take(count: number): string {
    const out = this.buffer.slice(0, count);
    this.buffer = this.buffer.slice(count);
    this.released += out.length;
    return out;
  }
}

// ---------------------------------------------------------------------------------------------------
// <think> split
// ---------------------------------------------------------------------------------------------------

const THINK_OPEN = "<think>";
const THINK_CLOSE = "</think>";

export type TextPart = { kind: "content" | "reasoning"; text: string };

/**
 * Splits Qwen3 output into reasoning (`<think>…</think>`) and content. The tags never leak, also when
 * one arrives split across tokens. Reasoning is trimmed of the newlines around it and the "\n\n"
 * Qwen3 writes between `</think>` and the answer is dropped (its chat template does the same).
 */
export class ThinkSplitter {
  private state: "content" | "reasoning" = "content";
  private pending = "";
  /** Reasoning whitespace not yet known to be followed by more reasoning. */
  private reasoningWhitespace = "";
  private reasoningStarted = false;
  private sawThought = false;
  private contentStarted = false;

  push(text: string): TextPart[] {
    this.pending += text;
    const parts: TextPart[] = [];
    for (;;) {
      const tag = this.state === "content" ? THINK_OPEN : THINK_CLOSE;
      // The other tag here is a stray one (a sampled `</think>` in an answer, a second `<think>` in a
      // thought): dropped, never text.
      const stray = this.state === "content" ? THINK_CLOSE : THINK_OPEN;
      const at = this.pending.indexOf(tag);
      const strayAt = this.pending.indexOf(stray);
      if (strayAt >= 0 && (at < 0 || strayAt < at)) {
        this.emit(this.pending.slice(0, strayAt), parts);
        this.pending = this.pending.slice(strayAt + stray.length);
        continue;
      }
      if (at >= 0) {
        this.emit(this.pending.slice(0, at), parts);
        this.pending = this.pending.slice(at + tag.length);
        if (this.state === "content") {
          this.state = "reasoning";
          this.reasoningStarted = false;
          this.sawThought = true;
        } else {
          this.state = "content";
          this.reasoningWhitespace = "";
        }
        continue;
      }
      const hold = Math.max(partialTagLength(this.pending, tag), partialTagLength(this.pending, stray));
      this.emit(this.pending.slice(0, this.pending.length - hold), parts);
      this.pending = this.pending.slice(this.pending.length - hold);
      return parts;
    }
  }

  /** End of the stream: a held-back partial tag is text after all. */
  flush(): TextPart[] {
    const parts: TextPart[] = [];
    this.emit(this.pending, parts);
    this.pending = "";
    return parts;
  }

  private emit(text: string, parts: TextPart[]): void {
    if (text === "") return;
    if (this.state === "reasoning") {
      let body = this.reasoningStarted ? text : text.replace(/^\s+/, "");
      if (body === "") return;
      this.reasoningStarted = true;
      body = this.reasoningWhitespace + body;
      const trimmed = body.replace(/\s+$/, "");
      this.reasoningWhitespace = body.slice(trimmed.length);
      if (trimmed !== "") push(parts, "reasoning", trimmed);
      return;
    }
    const body = this.sawThought && !this.contentStarted ? text.replace(/^\n+/, "") : text;
    if (body === "") return;
    this.contentStarted = true;
    push(parts, "content", body);
  }
}

function push(parts: TextPart[], kind: TextPart["kind"], text: string): void {
  const last = parts.at(-1);
  if (last !== undefined && last.kind === kind) last.text += text;
  else parts.push({ kind, text });
}

/** Length of the longest suffix of `text` that is a proper prefix of `tag`. */
export function partialTagLength(text: string, tag: string): number {
  for (let length = Math.min(tag.length - 1, text.length); length > 0; length--) {
    if (tag.startsWith(text.slice(text.length - length))) return length;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------
// The whole pipeline
// ---------------------------------------------------------------------------------------------------

export type GeneratedToken = {
  /** The token's bytes (llama_token_to_piece with special tokens rendered). */
  bytes: Uint8Array;
  /** End of generation (EOS/EOT): ends the stream, contributes no text. */
  isEnd: boolean;
  logprob?: TokenLogprob;
};

export type OutputOptions = {
  stop?: readonly string[];
  /** Parse `<think>…</think>` (chat prompts of thinking models; off for raw prompts). */
  splitThinking: boolean;
  /** Emit reasoning deltas and return the reasoning (thinking enabled); otherwise thoughts are dropped. */
  keepReasoning: boolean;
  /** Collect per-token logprobs (the request asked for them). */
  logprobs?: boolean;
  content?: ContentTransformer;
};

export type OutputSummary = {
  text: string;
  reasoning: string | null;
  finishReason: FinishReason;
  /** Tokens consumed up to and including the one that ended generation (end token or stop). */
  tokensGenerated: number;
  /**
   * Generated tokens whose text lies wholly before a stop string (all of them without a stop): the
   * slot's cache is trimmed to the prompt plus these.
   */
  keptTokens: number;
  /** A stop string ended generation (the cache must drop the tokens after `keptTokens`). */
  stoppedByString: boolean;
  logprobs: TokenLogprob[] | null;
};

/** Turns one request's sampled tokens into deltas and the final result. */
export class GenerationOutput {
  private readonly utf8 = new Utf8Stream();
  private readonly stops: StopMatcher;
  private readonly think: ThinkSplitter | null;
  private readonly content: ContentTransformer;
  private readonly options: OutputOptions;
  private text = "";
  private reasoning = "";
  private tokens = 0;
  private ended: "end" | "stop" | null = null;
  /** Per consumed token: the decoded text length after it, or -1 if it ended inside a character. */
  private readonly tokenEnds: number[] = [];
  private decodedLength = 0;
  private readonly allLogprobs: TokenLogprob[] = [];
  private pendingLogprobs: TokenLogprob[] = [];

  constructor(options: OutputOptions) {
    this.options = options;
    this.stops = new StopMatcher(options.stop ?? []);
    this.think = options.splitThinking ? new ThinkSplitter() : null;
    this.content = options.content ?? plainContent();
  }

  /** True once an end token or a stop string ended the stream: later tokens are ignored. */
  get done(): boolean {
    return this.ended !== null;
  }

  get tokensGenerated(): number {
    return this.tokens;
  }

  /** Consumes one sampled token; returns the deltas it releases. */
  push(token: GeneratedToken): GenerationDelta[] {
    if (this.ended !== null) return [];
    this.tokens++;
    if (token.isEnd) {
      this.ended = "end";
      this.tokenEnds.push(this.decodedLength);
      return this.release(this.utf8.end(), true);
    }
    if (this.options.logprobs && token.logprob !== undefined) {
      this.allLogprobs.push(token.logprob);
      this.pendingLogprobs.push(token.logprob);
    }
    const text = this.utf8.push(token.bytes);
    this.decodedLength += text.length;
    this.tokenEnds.push(this.utf8.hasPending ? -1 : this.decodedLength);
    return this.release(text, false);
  }

  /** The backend ended the stream (length limit, or after an end token): flush what was held back. */
  finish(): GenerationDelta[] {
    const tail = this.ended === "stop" || this.ended === "end" ? [] : this.release(this.utf8.end(), true);
    const deltas = tail.concat(this.content.finish());
    // Tokens whose text was never released (a thought when thinking is off) carry no delta: dropped.
    this.pendingLogprobs = [];
    return deltas;
  }

  summary(): OutputSummary {
    const stopOffset = this.stops.stopOffset;
    let keptTokens = this.tokens;
    if (stopOffset !== null) {
      keptTokens = 0;
      for (let i = 0; i < this.tokenEnds.length; i++) {
        const end = this.tokenEnds[i] ?? -1;
        if (end < 0 || end > stopOffset) break;
        keptTokens = i + 1;
      }
    } else if (this.ended === "end") {
      keptTokens = this.tokens - 1;
    }
    const finishReason: FinishReason = this.content.finishReason?.()
      ?? (this.ended === null ? "length" : "stop");
    let logprobs: TokenLogprob[] | null = null;
    if (this.options.logprobs) logprobs = stopOffset === null ? this.allLogprobs : this.allLogprobs.slice(0, Math.max(keptTokens, 0));
    return {
      text: this.text,
      reasoning: this.options.keepReasoning ? this.reasoning : null,
      finishReason,
      tokensGenerated: this.tokens,
      keptTokens,
      stoppedByString: stopOffset !== null,
      logprobs,
    };
  }

  private release(text: string, final: boolean): GenerationDelta[] {
    let released = this.stops.push(text);
    if (this.stops.stopOffset !== null) this.ended = "stop";
    else if (final) released += this.stops.flush();
    const parts = this.think ? this.think.push(released) : [{ kind: "content" as const, text: released }];
    if ((final || this.ended !== null) && this.think) parts.push(...this.think.flush());
    const deltas: GenerationDelta[] = [];
    for (const part of parts) {
      if (part.text === "") continue;
      if (part.kind === "reasoning") {
        this.reasoning += part.text;
        if (this.options.keepReasoning) deltas.push(this.withLogprobs({ kind: "reasoning", text: part.text }));
      } else {
        for (const delta of this.content.push(part.text)) {
          if (delta.kind === "content") {
            this.text += delta.text;
            deltas.push(this.withLogprobs(delta));
          } else {
            deltas.push(delta);
          }
        }
      }
    }
    return deltas;
  }

  /** Attaches the logprobs of tokens consumed since the last text delta to this one. */
  private withLogprobs(delta: { kind: "content" | "reasoning"; text: string }): GenerationDelta {
    if (!this.options.logprobs || this.pendingLogprobs.length === 0) return delta;
    const logprobs = this.pendingLogprobs;
    this.pendingLogprobs = [];
    return { ...delta, logprobs };
  }

}
