// Tools in and out of the model, Qwen3's way (the Hermes format its chat template uses):
//  - the prompt: exactly what the GGUF's Jinja chat template renders for a conversation with tools
//    or tool history (the `# Tools` system block with one JSON line per function in <tools>,
//    <tool_call> JSON in assistant turns, <tool_response> blocks in user turns); checked token for
//    token against the template itself in test/tools-prompt.test.ts;
//  - the grammar for tool_choice "required" or a named function: GBNF that admits only
//    `<tool_call>\n{"name": <a tool>, "arguments": <that tool's parameters schema>}\n</tool_call>`,
//    built on node-llama-cpp's JSON-schema grammar;
//  - the checks a request's tools must pass (unique names, a named choice that exists, schemas the
//    grammar can enforce), as 400s that name the wire field (`tools[1].function.parameters...`).
//
// tool_choice "none": the tools are left out of the prompt (as vLLM's --exclude-tools-when-tool-choice-none;
// a model shown tools writes calls, which would then be raw text), tool history is still rendered,
// and the output is never parsed for calls: the answer is text.
import { LlamaText, SpecialTokensText, type Llama, type LlamaGrammar } from "node-llama-cpp";
import { EngineError, invalidRequest } from "../errors.js";
import { toGrammarSchema } from "../jsonSchemaGrammar.js";
import { TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolCallParser } from "./toolCallParser.js";
import type { ChatMessage, GenerateRequest, ToolChoice, ToolDefinition } from "./types.js";

const IM_START = new SpecialTokensText("<|im_start|>");
const IM_END = new SpecialTokensText("<|im_end|>");

const TOOLS_PREAMBLE = "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
  "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
const TOOLS_POSTAMBLE = "\n</tools>\n\nFor each function call, return a json object with function name and arguments within " +
  "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>";

export type ToolPromptOptions = {
  tools?: readonly ToolDefinition[];
  /** "none": the tools are not shown to the model. */
  toolChoice?: ToolChoice;
  enableThinking: boolean;
};

/** True when the conversation needs the tool-aware template: tools offered, or tool calls/results in the history. */
export function usesTools(messages: readonly ChatMessage[], tools: readonly ToolDefinition[] | undefined): boolean {
  return (tools !== undefined && tools.length > 0) ||
    messages.some((m) => m.role === "tool" || (m.role === "assistant" && m.toolCalls !== undefined && m.toolCalls.length > 0));
}

/**
 * The prompt for a conversation with tools or tool history, as Qwen3's chat template renders it
 * (add_generation_prompt; thinking off pre-fills the empty think block, as the template's
 * enable_thinking=false does). Null when the conversation has neither: the engine renders it as usual.
 *
 * Template-owned control tokens are special-token text; message text and tool JSON are plain text,
 * so a user who writes `<|im_end|>` gets text, not a turn boundary.
 */
export function renderToolPrompt(messages: readonly ChatMessage[], options: ToolPromptOptions): LlamaText | null {
  const { enableThinking } = options;
  const tools = options.toolChoice === "none" ? undefined : options.tools;
  if (!usesTools(messages, tools)) return null;
  const out: (string | SpecialTokensText)[] = [];
  const turn = (role: string, text: string) => out.push(IM_START, `${role}\n${text}`, IM_END, "\n");
  const first = messages[0];

  if (tools !== undefined && tools.length > 0) {
    const system = first?.role === "system" ? `${first.content}\n\n` : "";
    turn("system", system + TOOLS_PREAMBLE + tools.map((tool) => `\n${pythonJson(toolJson(tool))}`).join("") + TOOLS_POSTAMBLE);
  } else if (first?.role === "system") {
    turn("system", first.content);
  }

  // The last real user query: assistant turns after it (this tool-using step) keep their thoughts.
  let lastQueryIndex = messages.length - 1;
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i]!;
    if (m.role === "user" && !(m.content.startsWith("<tool_response>") && m.content.endsWith("</tool_response>"))) {
      lastQueryIndex = i;
      break;
    }
  }

  messages.forEach((message, index) => {
    const isLast = index === messages.length - 1;
    if (message.role === "user" || (message.role === "system" && index !== 0)) {
      turn(message.role, message.content);
    } else if (message.role === "assistant") {
      let content = message.content;
      let reasoning = "";
      if (content.includes("</think>")) {
        const parts = content.split("</think>");
        content = trimStartNewlines(parts.at(-1)!);
        reasoning = trimStartNewlines(trimEndNewlines(parts[0]!).split("<think>").at(-1)!);
      }
      let text = index > lastQueryIndex && (isLast || reasoning !== "")
        ? `<think>\n${trimEndNewlines(trimStartNewlines(reasoning))}\n</think>\n\n${trimStartNewlines(content)}`
        : content;
      (message.toolCalls ?? []).forEach((call, i) => {
        if (i > 0 || content !== "") text += "\n";
        text += `${TOOL_CALL_OPEN}\n{"name": "${call.name}", "arguments": ${call.arguments}}\n${TOOL_CALL_CLOSE}`;
      });
      turn("assistant", text);
    } else if (message.role === "tool") {
      const previous = messages[index - 1];
      const next = messages[index + 1];
      if (previous?.role !== "tool") out.push(IM_START, "user");
      out.push(`\n<tool_response>\n${message.content}\n</tool_response>`);
      if (next?.role !== "tool") out.push(IM_END, "\n");
    }
  });

  out.push(IM_START, enableThinking ? "assistant\n" : "assistant\n<think>\n\n</think>\n\n");
  return LlamaText(out);
}

/** A tool as the template receives it: OpenAI's `{"type": "function", "function": {...}}`. */
function toolJson(tool: ToolDefinition): Record<string, unknown> {
  return {
    type: "function",
    function: {
      name: tool.name,
      ...(tool.description !== undefined ? { description: tool.description } : {}),
      ...(tool.parameters !== undefined ? { parameters: tool.parameters } : {}),
    },
  };
}

/** Jinja's `tojson` as transformers defines it: Python's json.dumps (", " and ": ", non-ASCII kept). */
export function pythonJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(pythonJson).join(", ")}]`;
  if (typeof value === "object" && value !== null) {
    return `{${Object.entries(value).filter(([, v]) => v !== undefined).map(([k, v]) => `${JSON.stringify(k)}: ${pythonJson(v)}`).join(", ")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

const trimStartNewlines = (s: string) => s.replace(/^\n+/, "");
const trimEndNewlines = (s: string) => s.replace(/\n+$/, "");

// ---- checks and grammar ----------------------------------------------------------------------------

/** Request-level checks that need no model: unique names, a tool_choice that fits the tools. */
export function checkTools(tools: readonly ToolDefinition[] | undefined, toolChoice: ToolChoice | undefined): void {
  const names = new Map<string, number>();
  (tools ?? []).forEach((tool, i) => {
    if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(tool.name)) {
      throw invalidRequest(`tools[${i}].function.name '${tool.name}' must be 1 to 64 letters, digits, '_', '-', '.' or ':'.`, `tools[${i}].function.name`);
    }
    const earlier = names.get(tool.name);
    if (earlier !== undefined) throw invalidRequest(`tools[${i}].function.name '${tool.name}' is also the name of tools[${earlier}].`, `tools[${i}].function.name`);
    names.set(tool.name, i);
  });
  if (toolChoice === "required" && names.size === 0) {
    throw invalidRequest("tool_choice 'required' needs at least one tool in tools.", "tool_choice");
  }
  if (typeof toolChoice === "object" && !names.has(toolChoice.name)) {
    throw invalidRequest(`tool_choice names the function '${toolChoice.name}', which is not in tools` +
      `${names.size > 0 ? ` (${[...names.keys()].join(", ")})` : ""}.`, "tool_choice.function.name");
  }
}

export type ToolGrammarOptions = {
  tools: readonly ToolDefinition[];
  toolChoice: ToolChoice | undefined;
  /** More than one call allowed (parallel_tool_calls, default true). */
  parallel: boolean;
  /** Thinking on: a <think> block may come before the calls (the grammar covers the whole output). */
  enableThinking: boolean;
};

/** The tools whose calls the grammar admits: null when tool_choice does not force a call ("auto", "none"). */
function forcedTools({ tools, toolChoice }: ToolGrammarOptions): { tool: ToolDefinition; index: number }[] | null {
  if (toolChoice === "required") return tools.map((tool, index) => ({ tool, index }));
  if (typeof toolChoice === "object") {
    const index = tools.findIndex((t) => t.name === toolChoice.name);
    return [{ tool: tools[index]!, index }];
  }
  return null;
}

/** A tool's parameters schema in the grammar builder's dialect, or a 400 naming the part it cannot enforce. */
function argumentsSchema(tool: ToolDefinition, index: number): unknown {
  const field = `tools[${index}].function.parameters`;
  const parameters = tool.parameters;
  // No parameters, or an object with none listed: the function takes no arguments.
  if (parameters === undefined || Object.keys(parameters).length === 0 ||
    (parameters.type === "object" && Object.keys(parameters).every((k) => k === "type" || k === "properties" || k === "required" || k === "additionalProperties" && parameters[k] === false) &&
      (parameters.properties === undefined || Object.keys(parameters.properties as object).length === 0))) {
    return { type: "object", properties: {}, additionalProperties: false };
  }
  try {
    return toGrammarSchema(parameters);
  } catch (error) {
    // The checker speaks of the response format's schema; the same check here is about this tool.
    const prefix = "response_format.json_schema.schema";
    if (!(error instanceof EngineError) || !error.message.startsWith(prefix)) throw error;
    const rest = error.message.slice(prefix.length);
    const at = rest.slice(0, rest.indexOf(": "));
    throw invalidRequest(`${field}${rest}`, `${field}${at}`);
  }
}

/**
 * GBNF for a forced call ("required" or a named function), or null. The JSON part is node-llama-cpp's
 * grammar for a schema `oneOf` the allowed `{"name": const, "arguments": parameters}` objects; it is
 * wrapped in the <tool_call> tags (repeatable when parallel calls are allowed) and, with thinking on,
 * may be preceded by a think block.
 */
export async function toolCallGrammarText(llama: Llama, options: ToolGrammarOptions): Promise<string | null> {
  const forced = forcedTools(options);
  if (forced === null) return null;
  const callSchemas = forced.map(({ tool, index }) => ({
    type: "object",
    properties: { name: { const: tool.name }, arguments: argumentsSchema(tool, index) },
    required: ["name", "arguments"],
    additionalProperties: false,
  }));
  const schema = callSchemas.length === 1 ? callSchemas[0]! : { oneOf: callSchemas };
  let jsonGrammar: LlamaGrammar;
  try {
    // The const generic infers a literal type from its argument; a runtime schema has none.
    jsonGrammar = await llama.createGrammarForJsonSchema(schema as Parameters<Llama["createGrammarForJsonSchema"]>[0]);
  } catch (error) {
    throw invalidRequest(`tools cannot be turned into a grammar: ${(error as Error).message}`, "tools");
  }
  return wrapToolCallGrammar(jsonGrammar.grammar, options);
}

/** Renames the JSON grammar's root, drops its end-of-JSON newlines, and adds the tags around it. */
export function wrapToolCallGrammar(jsonGbnf: string, { parallel, enableThinking }: Pick<ToolGrammarOptions, "parallel" | "enableThinking">): string {
  const lines = jsonGbnf.split("\n");
  const jsonEnd = ' "\\n\\n\\n\\n" [\\n]*';
  const root = lines[0]!;
  if (!root.startsWith("root ::= ") || !root.endsWith(jsonEnd)) throw new Error(`unexpected JSON-schema grammar root: ${root.slice(0, 80)}`);
  const ruleNames = new Set(lines.map((l) => l.split(" ::= ")[0]));
  for (const name of ["tool-call-block", "tool-call-json", "tool-think", "tool-thought"]) {
    if (ruleNames.has(name)) throw new Error(`the JSON-schema grammar already has a rule '${name}'`);
  }
  const gbnfString = (s: string) => JSON.stringify(s);
  const calls = parallel ? `tool-call-block ("\\n" tool-call-block)*` : "tool-call-block";
  return [
    `root ::= ${enableThinking ? "tool-think? " : ""}${calls}`,
    `tool-call-block ::= ${gbnfString(`${TOOL_CALL_OPEN}\n`)} tool-call-json ${gbnfString(`\n${TOOL_CALL_CLOSE}`)}`,
    // A thought may hold any text but "</": it ends at the first "</think>".
    ...(enableThinking ? [
      `tool-think ::= "<think>" tool-thought "</think>" [\\n]*`,
      `tool-thought ::= ([^<] | "<" [^/])*`,
    ] : []),
    `tool-call-json ::= ${root.slice("root ::= ".length, root.length - jsonEnd.length)}`,
    ...lines.slice(1),
  ].join("\n");
}

/** The grammar object for a forced call, or undefined when tool_choice does not force one. */
export async function createToolCallGrammar(llama: Llama, options: ToolGrammarOptions): Promise<LlamaGrammar | undefined> {
  const text = await toolCallGrammarText(llama, options);
  return text === null ? undefined : llama.createGrammar({ grammar: text });
}

/** The content-stream parser for a request that offers tools (none for tool_choice "none" or no tools). */
export function toolCallParserFor(request: GenerateRequest): ToolCallParser | undefined {
  if (request.rawPrompt !== undefined || request.tools === undefined || request.tools.length === 0 || request.toolChoice === "none") return undefined;
  return new ToolCallParser({ parallel: request.parallelToolCalls ?? true });
}
