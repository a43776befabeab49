// Responses API items <-> the engine's chat messages: `input` (a string or a list of items), the
// stored chain behind `previous_response_id`, `instructions`, tools, text.format and reasoning. Pure
// functions, no Fastify and no model.
import { randomBytes } from "node:crypto";
import type { ChatMessage, GenerateRequest, ResponseFormat, ToolCall } from "../engine/chat/types.js";
import { invalidRequest } from "../engine/errors.js";
import type {
  FunctionTool, InputItem, OutputItem, ResponseCreateBody, StoredInputItem, InputTokensBody,
} from "./schemas/responses.js";

/** OpenAI-style ids: a prefix and 48 hex digits (resp_, msg_, rs_, fc_). */
export const newItemId = (prefix: "resp" | "msg" | "rs" | "fc"): string => `${prefix}_${randomBytes(24).toString("hex")}`;

/** `input` as stored items, each with an id (a bare string is one user message). */
export function normalizeInput(input: ResponseCreateBody["input"]): StoredInputItem[] {
  if (input === undefined) return [];
  if (typeof input === "string") return [{ type: "message", id: newItemId("msg"), role: "user", content: [{ type: "input_text", text: input }] }];
  return input.map((item) => ({ ...item, id: item.id ?? newItemId(item.type === "function_call" ? "fc" : item.type === "reasoning" ? "rs" : "msg") }));
}

const partText = (part: { type: string; text?: string; refusal?: string }): string => part.type === "refusal" ? part.refusal ?? "" : part.text ?? "";

/**
 * History items (the stored chain, then this request's input) -> chat messages, `instructions` first.
 * A function_call joins the assistant message right before it (one turn that says something and
 * calls tools); a function_call_output becomes a tool message; reasoning items are left out, as
 * Qwen3's template leaves out the thoughts of past turns.
 */
export function itemsToMessages(instructions: string | null | undefined, items: readonly (InputItem | OutputItem)[], firstInputIndex: number): ChatMessage[] {
  const messages: ChatMessage[] = instructions ? [{ role: "system", content: instructions }] : [];
  const callNames = new Map<string, string>();
  items.forEach((item, position) => {
    const field = position >= firstInputIndex ? `input[${position - firstInputIndex}]` : "previous_response_id";
    if (item.type === "reasoning") return;
    if (item.type === "function_call") {
      callNames.set(item.call_id, item.name);
      const call: ToolCall = { id: item.call_id, name: item.name, arguments: item.arguments };
      const last = messages.at(-1);
      if (last?.role === "assistant") messages[messages.length - 1] = { ...last, toolCalls: [...(last.toolCalls ?? []), call] };
      else messages.push({ role: "assistant", content: "", toolCalls: [call] });
      return;
    }
    if (item.type === "function_call_output") {
      if (!callNames.has(item.call_id)) {
        throw invalidRequest(`No function_call with call_id '${item.call_id}' comes before this function_call_output.`, `${field}.call_id`);
      }
      const content = typeof item.output === "string" ? item.output : item.output.map(partText).join("");
      messages.push({ role: "tool", content, toolCallId: item.call_id, name: callNames.get(item.call_id)! });
      return;
    }
    const content = typeof item.content === "string" ? item.content : (item.content as readonly { type: string; text?: string; refusal?: string }[]).map(partText).join("");
    if (item.role === "assistant") messages.push({ role: "assistant", content });
    else messages.push({ role: item.role === "user" ? "user" : "system", content });
  });
  if (messages.length === 0) throw invalidRequest("input is required (a text or a list of items), unless previous_response_id gives a history.", "input");
  return messages;
}

/** reasoning.effort -> Qwen3's thinking switch: none/minimal (and no reasoning at all) = off. */
export function thinkingFor(reasoning: ResponseCreateBody["reasoning"]): boolean {
  const effort = reasoning?.effort;
  return effort !== undefined && effort !== null && effort !== "none" && effort !== "minimal";
}

/** Function tools, tool_choice and parallel_tool_calls in the engine's shapes. */
export function toolRequestOf(body: Pick<InputTokensBody, "tools" | "tool_choice" | "parallel_tool_calls">): Pick<GenerateRequest, "tools" | "toolChoice" | "parallelToolCalls"> {
  const choice = body.tool_choice;
  return {
    ...(body.tools !== undefined && body.tools.length > 0 ? { tools: body.tools.map(toToolDefinition) } : {}),
    ...(choice !== undefined ? { toolChoice: typeof choice === "string" ? choice : { name: choice.name } } : {}),
    ...(body.parallel_tool_calls !== undefined && body.parallel_tool_calls !== null ? { parallelToolCalls: body.parallel_tool_calls } : {}),
  };
}

function toToolDefinition(tool: FunctionTool) {
  return {
    name: tool.name,
    ...(tool.description ? { description: tool.description } : {}),
    ...(tool.parameters ? { parameters: tool.parameters } : {}),
  };
}

/** text.format -> the engine's response format (json_schema and json_object go through the existing grammars). */
export function responseFormatOf(format: NonNullable<InputTokensBody["text"]>["format"]): ResponseFormat | undefined {
  if (format === undefined || format.type === "text") return undefined;
  if (format.type === "json_object") return { type: "json_object" };
  return { type: "json_schema", schema: format.schema };
}

const KNOWN_ITEM_TYPES = new Set(["message", "function_call", "function_call_output", "reasoning"]);
const TEXT_PART_TYPES = new Set(["input_text", "output_text", "refusal"]);
const isObject = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value);

/**
 * The Responses API features this server does not serve (hosted tools, images, files, item
 * references), named with a clear message before schema validation, which would otherwise report a
 * missing field of the one shape it knows. The schema still rejects them.
 */
export function checkServedFeatures(body: unknown): void {
  if (!isObject(body)) return;
  for (const field of ["conversation", "prompt"] as const) {
    if (body[field] !== undefined && body[field] !== null) {
      throw invalidRequest(`${field} is not served here (${field === "conversation" ? "use previous_response_id" : "send input and instructions"}).`, field);
    }
  }
  if (Array.isArray(body.tools)) {
    body.tools.forEach((tool, i) => {
      if (isObject(tool) && typeof tool.type === "string" && tool.type !== "function") {
        throw invalidRequest(`Only function tools are served here; tools[${i}] is of type '${tool.type}'.`, `tools[${i}].type`);
      }
    });
  }
  if (!Array.isArray(body.input)) return;
  body.input.forEach((item, i) => {
    if (!isObject(item)) return;
    if (typeof item.type === "string" && !KNOWN_ITEM_TYPES.has(item.type)) {
      throw invalidRequest(`input[${i}] is of type '${item.type}'; served item types: ${[...KNOWN_ITEM_TYPES].join(", ")}.`, `input[${i}].type`);
    }
    if (!Array.isArray(item.content)) return;
    item.content.forEach((part, j) => {
      if (isObject(part) && typeof part.type === "string" && !TEXT_PART_TYPES.has(part.type)) {
        throw invalidRequest(`Only text parts are served here (${[...TEXT_PART_TYPES].join(", ")}); input[${i}].content[${j}] is '${part.type}'.`, `input[${i}].content[${j}].type`);
      }
    });
  });
}
