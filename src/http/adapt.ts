// Wire fields shared by the APIs (seed, OpenAI chat and completions; Ollama maps its own `options`)
// -> the engine's request. One mapping, so the adapters cannot drift apart.
import type { Static } from "@sinclair/typebox";
import type { ChatMessage, GenerateRequest, GenerationDelta, ResponseFormat, TokenBias, ToolCall } from "../engine/chat/types.js";
import { invalidRequest } from "../engine/errors.js";
import type { LogitBiasSchema, ResponseFormatSchema, SamplingControls } from "./schemas/common.js";
import type { ToolCallDeltaWire, ToolCallWire, ToolChoiceWire, ToolWire } from "./schemas/tools.js";

type Controls = { [K in keyof typeof SamplingControls]?: Static<(typeof SamplingControls)[K]> };
type ToolFields = { tools?: readonly ToolWire[]; tool_choice?: ToolChoiceWire; parallel_tool_calls?: boolean };

export function toGenerateRequest(
  body: Controls & ToolFields & { messages: readonly ChatMessage[]; temperature: number; top_p: number },
  maxTokens: number | undefined,
  defaultThinking: boolean,
): GenerateRequest {
  return { ...toSamplingRequest(body, maxTokens, defaultThinking), ...toToolRequest(body) };
}

/**
 * The fields every generating API shares, tools excluded: a route whose schema does not take tools
 * (text completions) must not read them, since unknown fields reach it unvalidated.
 */
export function toSamplingRequest(
  body: Controls & { messages: readonly ChatMessage[]; temperature: number; top_p: number },
  maxTokens: number | undefined,
  defaultThinking: boolean,
): GenerateRequest {
  return {
    messages: body.messages,
    maxTokens,
    temperature: body.temperature,
    topP: body.top_p,
    topK: body.top_k,
    minP: body.min_p,
    seed: body.seed,
    stop: body.stop === undefined ? undefined : typeof body.stop === "string" ? [body.stop] : body.stop,
    repeatPenalty: body.repeat_penalty,
    presencePenalty: body.presence_penalty,
    frequencyPenalty: body.frequency_penalty,
    ...(body.repeat_last_n !== undefined ? { repeatLastN: body.repeat_last_n } : {}),
    ...(body.logit_bias !== undefined ? { logitBias: toLogitBias(body.logit_bias) } : {}),
    responseFormat: toResponseFormat(body.response_format),
    ignoreEos: body.ignore_eos ?? false,
    enableThinking: body.enable_thinking ?? defaultThinking,
  };
}

/** tools / tool_choice / parallel_tool_calls (OpenAI's names and shapes) -> the engine's. */
export function toToolRequest(body: ToolFields): Pick<GenerateRequest, "tools" | "toolChoice" | "parallelToolCalls"> {
  const choice = body.tool_choice;
  return {
    ...(body.tools !== undefined && body.tools.length > 0
      ? { tools: body.tools.map(({ function: f }) => ({ name: f.name, description: f.description, parameters: f.parameters })) }
      : {}),
    ...(choice !== undefined ? { toolChoice: typeof choice === "string" ? choice : { name: choice.function.name } } : {}),
    ...(body.parallel_tool_calls !== undefined ? { parallelToolCalls: body.parallel_tool_calls } : {}),
  };
}

/** A message as the wire carries it, its content already flattened to text (or null). */
export type WireMessage = {
  role: "system" | "developer" | "user" | "assistant" | "tool";
  content: string | null | undefined;
  tool_calls?: readonly ToolCallWire[] | null;
  tool_call_id?: string;
  name?: string;
};

/** One wire message -> the engine's; content may only be missing on an assistant message that calls tools. */
export function toChatMessage(m: WireMessage, index: number): ChatMessage {
  const calls = m.tool_calls ?? [];
  if ((m.content === null || m.content === undefined) && !(m.role === "assistant" && calls.length > 0)) {
    throw invalidRequest(`messages[${index}].content is required${m.role === "assistant" ? " unless the message has tool_calls" : ""}.`, `messages[${index}].content`);
  }
  const content = m.content ?? "";
  if (calls.length > 0 && m.role !== "assistant") {
    throw invalidRequest(`messages[${index}].tool_calls is only allowed on assistant messages.`, `messages[${index}].tool_calls`);
  }
  switch (m.role) {
    // OpenAI's newer "developer" role is the system prompt for models that have no such role.
    case "developer":
    case "system":
      return { role: "system", content };
    case "user":
      return { role: "user", content };
    case "assistant":
      return calls.length > 0
        ? { role: "assistant", content, toolCalls: calls.map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments })) }
        : { role: "assistant", content };
    case "tool":
      return { role: "tool", content, ...(m.tool_call_id !== undefined ? { toolCallId: m.tool_call_id } : {}), ...(m.name !== undefined ? { name: m.name } : {}) };
  }
}

export const toolCallsToWire = (calls: readonly ToolCall[]): ToolCallWire[] =>
  calls.map((c) => ({ id: c.id, type: "function" as const, function: { name: c.name, arguments: c.arguments } }));

/** A tool-call delta as one item of OpenAI's streamed `delta.tool_calls`; null for text deltas. */
export function toolCallDeltaToWire(delta: GenerationDelta): ToolCallDeltaWire | null {
  if (delta.kind === "tool_call") return { index: delta.index, id: delta.id, type: "function", function: { name: delta.name, arguments: "" } };
  if (delta.kind === "tool_call_arguments") return { index: delta.index, function: { arguments: delta.text } };
  return null;
}

/** Either wire form of logit_bias -> the engine's list (false: banned, -Infinity). */
export function toLogitBias(wire: Static<typeof LogitBiasSchema>): TokenBias[] {
  if (Array.isArray(wire)) return wire.map(([id, bias]) => ({ id, bias: bias === false ? -Infinity : bias }));
  return Object.entries(wire).map(([id, bias]) => ({ id: Number(id), bias }));
}

function toResponseFormat(format: Static<typeof ResponseFormatSchema> | undefined): ResponseFormat | undefined {
  if (format === undefined || format.type !== "json_schema") return format;
  return { type: "json_schema", schema: format.json_schema.schema };
}
