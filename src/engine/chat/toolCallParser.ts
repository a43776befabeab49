// Streaming extraction of Qwen3 (Hermes-style) tool calls from the answer text:
//
//   <tool_call>
//   {"name": "get_weather", "arguments": {"city": "Madrid"}}
//   </tool_call>
//
// It runs on the CONTENT stream only (after the <think> split), so a <tool_call> written inside a
// thought is never a call. Pure text processing: no model, no node-llama-cpp.
//
// What a client sees, and why:
// - Text outside calls passes through as `content`. Anything that may be the start of `<tool_call>`
//   is held back until it is known not to be one, so a half tag never reaches `content`.
// - Whitespace-only content is held back too; it is dropped when a call follows it or when the
//   answer made a call (Qwen3 writes "\n" between calls, which is not an answer), so an answer made
//   of calls has content "" (null on the OpenAI wire).
// - A call is announced (`tool_call`: index, id, name) as soon as its name is read, and its
//   `arguments` JSON then streams as `tool_call_arguments` fragments exactly as the model writes it;
//   the fragments concatenated are the final `arguments` string, streamed or not. Arguments written
//   before the name are buffered and sent right after the announcement.
// - Malformed calls. A block whose name cannot be read (not a JSON object, no string "name") is not
//   a call: its raw text, tags included, is returned as content. Once the name was read the call has
//   been announced and cannot be taken back: its arguments stay exactly what the model wrote (a
//   missing "arguments" is "{}"; text that is not JSON stays as written, as OpenAI's and vLLM's
//   `arguments` may: clients parse it defensively). tool_choice "required" or a named function
//   constrains the output with a grammar (toolPrompt.ts), so there the arguments always parse.
// - A call whose JSON object is complete but whose `</tool_call>` is missing (the model went on or
//   ended) is accepted as a call; text after the object then continues as content.
// - `parallel: false` keeps the first call; later calls are parsed and dropped (and `wantsMore`
//   turns false so the engine may stop generating).
import { randomBytes } from "node:crypto";
import type { GenerationDelta, ToolCall } from "./types.js";

export const TOOL_CALL_OPEN = "<tool_call>";
export const TOOL_CALL_CLOSE = "</tool_call>";

export type ToolCallParserOptions = {
  /** false: only the first call is kept (OpenAI's parallel_tool_calls). Default true. */
  parallel?: boolean;
  /** Makes call ids; default `call_` + 24 random alphanumerics, as OpenAI's look. */
  newId?: () => string;
};

const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

export function newToolCallId(): string {
  return `call_${[...randomBytes(24)].map((b) => ID_ALPHABET[b % ID_ALPHABET.length]).join("")}`;
}

/** How many trailing characters of `text` are a proper prefix of `tag` (and so may become the tag). */
export function partialTagLength(text: string, tag: string): number {
  for (let n = Math.min(text.length, tag.length - 1); n > 0; n--) {
    if (tag.startsWith(text.slice(text.length - n))) return n;
  }
  return 0;
}

const isJsonWhitespace = (c: string) => c === " " || c === "\n" || c === "\r" || c === "\t";

/**
 * Reads the JSON object inside one <tool_call> block as it arrives: the "name" string and the raw
 * text of the "arguments" value (other keys are skipped). It checks structure (quotes, escapes,
 * nesting), not the full JSON grammar: the arguments are checked with JSON.parse by whoever needs them.
 */
class CallBodyScanner {
  /** Every character fed so far. */
  raw = "";
  name: string | null = null;
  /** The raw text of the "arguments" value so far. */
  args = "";
  /** Structure error: the object cannot be read further. */
  broken = false;
  /** The outer object closed. */
  complete = false;

  private phase: "start" | "key" | "colon" | "value" | "afterValue" | "done" = "start";
  private key = "";
  private inKey = false;
  private keyEscape = false;
  private valueKey = "";
  private valueRaw = "";
  private valueStarted = false;
  private depth = 0;
  private inString = false;
  private escape = false;
  private sawArgs = false;

  /**
   * Feeds body text; returns how many characters belong to the call. Fewer than given means the
   * object closed and non-whitespace text followed it (a missing `</tool_call>`).
   */
  feed(text: string): number {
    for (let i = 0; i < text.length; i++) {
      if (this.broken) {
        this.raw += text;
        return text.length;
      }
      const c = text[i]!;
      if (this.phase === "done" && !isJsonWhitespace(c)) {
        this.raw += text.slice(0, i);
        return i;
      }
      this.step(c);
    }
    this.raw += text;
    return text.length;
  }

  /** At the end of the output: a scalar value still open (e.g. `"arguments": 5`) ends here. */
  end(): void {
    if (this.phase === "value" && this.valueStarted && this.depth === 0 && !this.inString) this.endValue();
  }

  private step(c: string): void {
    switch (this.phase) {
      case "start":
        if (c === "{") this.phase = "key";
        else if (!isJsonWhitespace(c)) this.broken = true;
        return;
      case "key":
        if (this.inKey) {
          this.key += c;
          if (this.keyEscape) this.keyEscape = false;
          else if (c === "\\") this.keyEscape = true;
          else if (c === '"') {
            this.inKey = false;
            try {
              this.valueKey = JSON.parse(this.key) as string;
            } catch {
              this.broken = true;
            }
            this.phase = "colon";
          }
        } else if (c === '"') {
          this.inKey = true;
          this.key = '"';
        } else if (c === "}" && this.key === "") {
          this.phase = "done";
          this.complete = true;
        } else if (!isJsonWhitespace(c)) this.broken = true;
        return;
      case "colon":
        if (c === ":") {
          this.phase = "value";
          this.valueRaw = "";
          this.valueStarted = false;
          this.depth = 0;
          this.inString = false;
          this.escape = false;
        } else if (!isJsonWhitespace(c)) this.broken = true;
        return;
      case "value":
        this.stepValue(c);
        return;
      case "afterValue":
        if (c === ",") {
          this.phase = "key";
          this.key = "";
        } else if (c === "}") {
          this.phase = "done";
          this.complete = true;
        } else if (!isJsonWhitespace(c)) this.broken = true;
        return;
      case "done":
        return;
    }
  }

  private stepValue(c: string): void {
    if (!this.valueStarted) {
      if (isJsonWhitespace(c)) return;
      if (c === "," || c === "}" || c === "]" || c === ":") {
        this.broken = true;
        return;
      }
      this.valueStarted = true;
    } else if (this.depth === 0 && !this.inString && !this.isCompound() && (c === "," || c === "}" || isJsonWhitespace(c))) {
      // The end of a scalar (number, true, false, null): the delimiter belongs to the object.
      this.endValue();
      this.step(c);
      return;
    }
    this.appendValue(c);
    if (this.inString) {
      if (this.escape) this.escape = false;
      else if (c === "\\") this.escape = true;
      else if (c === '"') {
        this.inString = false;
        if (this.depth === 0) this.endValue();
      }
      return;
    }
    if (c === '"') this.inString = true;
    else if (c === "{" || c === "[") this.depth++;
    else if (c === "}" || c === "]") {
      this.depth--;
      if (this.depth < 0) this.broken = true;
      else if (this.depth === 0) this.endValue();
    }
  }

  private isCompound(): boolean {
    return this.valueRaw.startsWith("{") || this.valueRaw.startsWith("[") || this.valueRaw.startsWith('"');
  }

  private isArgumentsValue(): boolean {
    return !this.sawArgs && (this.valueKey === "arguments" || this.valueKey === "parameters");
  }

  private appendValue(c: string): void {
    this.valueRaw += c;
    if (this.isArgumentsValue()) this.args += c;
  }

  private endValue(): void {
    if (this.isArgumentsValue()) this.sawArgs = true;
    else if (this.valueKey === "name" && this.name === null) {
      let name: unknown;
      try {
        name = JSON.parse(this.valueRaw);
      } catch {
        name = null;
      }
      if (typeof name === "string" && name !== "") this.name = name;
      else this.broken = true;
    }
    this.phase = "afterValue";
    this.key = "";
  }
}

type OpenCall = {
  scanner: CallBodyScanner;
  /** Not reported (a second call with parallel calls off). */
  dropped: boolean;
  index: number;
  id: string | null;
  sentArgs: number;
  whitespaceBefore: string;
};

/** One request's tool-call extraction: feed it the content text as it is generated. */
export class ToolCallParser {
  private readonly parallel: boolean;
  private readonly newId: () => string;
  private mode: "content" | "call" = "content";
  /** Unprocessed text that may be the start of a tag. */
  private pending = "";
  private heldWhitespace = "";
  private call: OpenCall | null = null;
  private out: GenerationDelta[] = [];
  private contentText = "";
  private readonly toolCalls: ToolCall[] = [];
  private finished = false;
  private afterCall = false;
  /** The output ended inside a call's JSON. */
  private cutCall = false;

  constructor(options: ToolCallParserOptions = {}) {
    this.parallel = options.parallel ?? true;
    this.newId = options.newId ?? newToolCallId;
  }

  /** The content text reported so far (what the deltas' content concatenates to). */
  get content(): string {
    return this.contentText;
  }

  /** The calls completed so far (and, after finish(), every call). */
  get calls(): readonly ToolCall[] {
    return this.toolCalls;
  }

  /**
   * "tool_calls" when the answer made calls and each of them ended (its `</tool_call>` or its JSON
   * object closed); undefined otherwise, so a call cut off by the token limit still reports "length".
   */
  finishReason(): "tool_calls" | undefined {
    return this.toolCalls.length > 0 && !this.cutCall ? "tool_calls" : undefined;
  }

  /** False once nothing more the model writes can be reported (parallel calls off and one call made). */
  get wantsMore(): boolean {
    return this.parallel || this.toolCalls.length === 0;
  }

  push(text: string): GenerationDelta[] {
    if (this.finished) throw new Error("ToolCallParser: push() after finish()");
    this.out = [];
    const input = this.pending + text;
    this.pending = "";
    this.process(input, false);
    return this.out;
  }

  /** The output ended: flushes held text, and ends a call left open. */
  finish(): GenerationDelta[] {
    if (this.finished) return [];
    this.out = [];
    const input = this.pending;
    this.pending = "";
    this.process(input, true);
    this.finished = true;
    if (this.toolCalls.length === 0 && this.heldWhitespace !== "") this.emitContent(this.heldWhitespace);
    this.heldWhitespace = "";
    return this.out;
  }

  private process(input: string, final: boolean): void {
    for (;;) {
      if (this.mode === "content") {
        const at = input.indexOf(TOOL_CALL_OPEN);
        if (at >= 0) {
          this.addContent(input.slice(0, at));
          this.openCall();
          input = input.slice(at + TOOL_CALL_OPEN.length);
          continue;
        }
        const keep = final ? 0 : partialTagLength(input, TOOL_CALL_OPEN);
        this.addContent(input.slice(0, input.length - keep));
        this.pending = input.slice(input.length - keep);
        return;
      }
      const call = this.call!;
      const closeAt = input.indexOf(TOOL_CALL_CLOSE);
      // At the end of the output, a half-written close tag still ends the call.
      const bodyEnd = closeAt >= 0 ? closeAt : input.length - partialTagLength(input, TOOL_CALL_CLOSE);
      const body = input.slice(0, bodyEnd);
      const used = call.scanner.feed(body);
      if (call.scanner.broken && call.scanner.name === null) {
        // Not a call: the block is text. Everything after the open tag is read again as content
        // (it may hold the real call).
        this.mode = "content";
        this.call = null;
        this.heldWhitespace = call.whitespaceBefore;
        this.addContent(TOOL_CALL_OPEN);
        input = call.scanner.raw + input.slice(bodyEnd);
        continue;
      }
      this.announce(call);
      if (used < body.length) {
        // The object closed and other text followed without `</tool_call>`.
        this.closeCall(call);
        input = input.slice(used);
        continue;
      }
      if (closeAt >= 0) {
        this.closeCall(call, TOOL_CALL_CLOSE);
        input = input.slice(closeAt + TOOL_CALL_CLOSE.length);
        continue;
      }
      if (final) {
        call.scanner.end();
        this.announce(call);
        if (!call.scanner.complete && !call.dropped && call.scanner.name !== null) this.cutCall = true;
        this.closeCall(call, input.slice(bodyEnd));
      } else {
        this.pending = input.slice(bodyEnd);
      }
      return;
    }
  }

  private openCall(): void {
    const dropped = !this.parallel && this.toolCalls.length > 0;
    // The whitespace before the tag is dropped if this is a call, restored if it is not.
    this.call = { scanner: new CallBodyScanner(), dropped, index: this.toolCalls.length, id: null, sentArgs: 0, whitespaceBefore: this.heldWhitespace };
    this.heldWhitespace = "";
    this.mode = "call";
  }

  /** Sends the call's announcement once its name is known, then any arguments not yet sent. */
  private announce(call: OpenCall): void {
    if (call.dropped) return;
    const { scanner } = call;
    if (call.id === null) {
      if (scanner.name === null) return;
      call.id = this.newId();
      this.out.push({ kind: "tool_call", index: call.index, id: call.id, name: scanner.name });
    }
    if (scanner.args.length > call.sentArgs) {
      this.out.push({ kind: "tool_call_arguments", index: call.index, text: scanner.args.slice(call.sentArgs) });
      call.sentArgs = scanner.args.length;
    }
  }

  private closeCall(call: OpenCall, closeTag = ""): void {
    this.mode = "content";
    this.call = null;
    if (call.scanner.name === null) {
      // Never named: not a call. Its text is content, the open tag included.
      this.heldWhitespace = call.whitespaceBefore;
      this.addContent(TOOL_CALL_OPEN + call.scanner.raw + closeTag);
      return;
    }
    this.afterCall = true;
    if (call.dropped || call.id === null) return;
    if (call.sentArgs === 0) {
      this.out.push({ kind: "tool_call_arguments", index: call.index, text: "{}" });
    }
    this.toolCalls.push({ id: call.id, name: call.scanner.name!, arguments: call.sentArgs === 0 ? "{}" : call.scanner.args });
  }

  /** Content text, holding back trailing whitespace (dropped if a call follows). */
  private addContent(text: string): void {
    if (this.afterCall) {
      // The line breaks after a call are formatting, not an answer.
      text = text.trimStart();
      if (text !== "") this.afterCall = false;
    }
    if (text === "") return;
    const body = text.trimEnd();
    if (body === "") {
      this.heldWhitespace += text;
      return;
    }
    this.emitContent(this.heldWhitespace + body);
    this.heldWhitespace = text.slice(body.length);
  }

  private emitContent(text: string): void {
    this.contentText += text;
    const last = this.out.at(-1);
    if (last?.kind === "content") last.text += text;
    else this.out.push({ kind: "content", text });
  }
}
