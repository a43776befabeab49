// One response of the Responses API, built from the engine's deltas: its output items (reasoning,
// message, function_call) and, for a streamed response, the spec's event sequence with a
// sequence_number on every event and output_index / content_index / item_id where the spec has them:
//
//   response.created, response.in_progress,
//   per item: response.output_item.added,
//     reasoning: content_part.added, reasoning_text.delta..., reasoning_text.done, content_part.done
//     message:   content_part.added, output_text.delta..., output_text.done, content_part.done
//     call:      function_call_arguments.delta..., function_call_arguments.done
//   response.output_item.done, then response.completed (or response.incomplete at max_output_tokens);
//   a failure after the start: error, then response.failed.
//
// The plain (non-streamed) response is built by the same class with no listener, so both agree by
// construction. Pure: no Fastify, no model.
import type { GenerationDelta, GenerationResult } from "../engine/chat/types.js";
import type { ErrorPayload } from "./errors.js";
import { newItemId } from "./responseItems.js";
import type { FunctionCallItem, OutputItem, OutputMessage, ReasoningItem, ResponseObject } from "./schemas/responses.js";

/** A streamed event: `type` is also the SSE event name. */
export type ResponseStreamEvent = { type: string; sequence_number: number } & Record<string, unknown>;

type OpenItem =
  | { kind: "message"; index: number; item: OutputMessage }
  | { kind: "reasoning"; index: number; item: ReasoningItem }
  | { kind: "function_call"; index: number; item: FunctionCallItem };

export class ResponseBuilder {
  private sequence = 0;
  private readonly output: OutputItem[] = [];
  private open: OpenItem | null = null;
  /** Engine tool-call index -> its output item. */
  private readonly calls = new Map<number, FunctionCallItem>();

  /**
   * `base` is the response as created (status in_progress, no output, usage null). `emit` receives
   * each event as a copy taken when it was sent (items change afterwards); omitted: no events.
   */
  constructor(private readonly base: ResponseObject, private readonly emit?: (event: ResponseStreamEvent) => void) {}

  /** response.created and response.in_progress. */
  start(): void {
    this.send("response.created", { response: this.snapshot() });
    this.send("response.in_progress", { response: this.snapshot() });
  }

  push(delta: GenerationDelta): void {
    switch (delta.kind) {
      case "reasoning": {
        const open = this.openReasoning();
        open.item.content[0]!.text += delta.text;
        this.send("response.reasoning_text.delta", { item_id: open.item.id, output_index: open.index, content_index: 0, delta: delta.text });
        return;
      }
      case "content": {
        const open = this.openMessage();
        open.item.content[0]!.text += delta.text;
        this.send("response.output_text.delta", { item_id: open.item.id, output_index: open.index, content_index: 0, delta: delta.text, logprobs: [] });
        return;
      }
      case "tool_call": {
        const item: FunctionCallItem = { type: "function_call", id: newItemId("fc"), call_id: delta.id, name: delta.name, arguments: "", status: "in_progress" };
        this.calls.set(delta.index, item);
        this.begin({ kind: "function_call", index: this.output.length, item });
        return;
      }
      case "tool_call_arguments": {
        const item = this.calls.get(delta.index);
        if (item === undefined || this.open?.item !== item) return; // the parser always starts a call first
        item.arguments += delta.text;
        this.send("response.function_call_arguments.delta", { item_id: item.id, output_index: this.open.index, delta: delta.text });
        return;
      }
    }
  }

  /**
   * Closes the open item (an answer with neither text nor calls gets one empty message) and, streamed,
   * sends response.completed or response.incomplete. Returns the finished response.
   */
  finish(result: GenerationResult, usage: NonNullable<ResponseObject["usage"]>): ResponseObject {
    const incomplete = result.finishReason === "length";
    // A response always says something: an answer with neither text nor calls is one empty message.
    if (this.open === null && !this.output.some((item) => item.type === "message" || item.type === "function_call")) this.openMessage();
    if (this.open !== null) this.close(this.open, incomplete ? "incomplete" : "completed");
    const response: ResponseObject = {
      ...this.base,
      status: incomplete ? "incomplete" : "completed",
      completed_at: Math.floor(Date.now() / 1000),
      incomplete_details: incomplete ? { reason: "max_output_tokens" } : null,
      output: this.output,
      usage,
    };
    this.send(incomplete ? "response.incomplete" : "response.completed", { response });
    return response;
  }

  /** A failure after the stream started: an `error` event, then response.failed with the response so far. */
  fail(error: ErrorPayload): ResponseObject {
    const response: ResponseObject = {
      ...this.base,
      status: "failed",
      error: { code: error.status >= 500 ? "server_error" : error.code, message: error.message },
      output: this.output,
    };
    this.send("error", { code: error.code, message: error.message, param: error.field ?? null });
    this.send("response.failed", { response });
    return response;
  }

  private snapshot(): ResponseObject {
    return { ...this.base, output: [...this.output] };
  }

  private send(type: string, fields: Record<string, unknown>): void {
    if (this.emit === undefined) return;
    this.emit(structuredClone({ type, sequence_number: this.sequence++, ...fields }));
  }

  private openReasoning(): Extract<OpenItem, { kind: "reasoning" }> {
    if (this.open?.kind === "reasoning") return this.open;
    const item: ReasoningItem = { type: "reasoning", id: newItemId("rs"), summary: [], content: [], status: "in_progress" };
    const open = { kind: "reasoning" as const, index: this.output.length, item };
    this.begin(open);
    item.content.push({ type: "reasoning_text", text: "" });
    this.send("response.content_part.added", { item_id: item.id, output_index: open.index, content_index: 0, part: { type: "reasoning_text", text: "" } });
    return open;
  }

  private openMessage(): Extract<OpenItem, { kind: "message" }> {
    if (this.open?.kind === "message") return this.open;
    const item: OutputMessage = { type: "message", id: newItemId("msg"), role: "assistant", status: "in_progress", content: [] };
    const open = { kind: "message" as const, index: this.output.length, item };
    this.begin(open);
    const part = { type: "output_text" as const, text: "", annotations: [], logprobs: [] };
    item.content.push(part);
    this.send("response.content_part.added", { item_id: item.id, output_index: open.index, content_index: 0, part });
    return open;
  }

  /** Closes whatever item is open and adds `open` to the output. */
  private begin(open: OpenItem): void {
    if (this.open !== null) this.close(this.open, "completed");
    this.open = open;
    this.output.push(open.item);
    this.send("response.output_item.added", { output_index: open.index, item: open.item });
  }

  private close(open: OpenItem, status: "completed" | "incomplete"): void {
    const { item, index } = open;
    if (open.kind === "reasoning") {
      const part = open.item.content[0]!;
      this.send("response.reasoning_text.done", { item_id: item.id, output_index: index, content_index: 0, text: part.text });
      this.send("response.content_part.done", { item_id: item.id, output_index: index, content_index: 0, part });
    } else if (open.kind === "message") {
      const part = open.item.content[0]!;
      this.send("response.output_text.done", { item_id: item.id, output_index: index, content_index: 0, text: part.text, logprobs: [] });
      this.send("response.content_part.done", { item_id: item.id, output_index: index, content_index: 0, part });
    } else {
      this.send("response.function_call_arguments.done", { item_id: item.id, output_index: index, name: open.item.name, arguments: open.item.arguments });
    }
    item.status = status;
    this.send("response.output_item.done", { output_index: index, item });
    this.open = null;
  }
}
