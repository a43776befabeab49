// The prompt with tools, checked token for token against the GGUF's own Jinja chat template rendered
// as transformers' apply_chat_template does (messages and tools in OpenAI's shape, add_generation_prompt,
// enable_thinking), and the grammar for forced calls, built with node-llama-cpp and checked on text.
import t from "tap";
import { Template } from "@huggingface/jinja";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { loadRuntime } from "../src/engine/runtime.js";
import { pythonJson, renderToolPrompt, toolCallGrammarText, checkTools, wrapToolCallGrammar } from "../src/engine/chat/toolPrompt.js";
import type { ChatMessage, ToolDefinition } from "../src/engine/chat/types.js";
import { EngineError } from "../src/engine/errors.js";

const models = await ensureTestModels();
const { llama } = await loadRuntime("cpu", 1);
const model = await llama.loadModel({ modelPath: models.chat, vocabOnly: true });
t.teardown(() => model.dispose());
const template = new Template(model.fileInfo.metadata.tokenizer.chat_template as string);

const weather: ToolDefinition = {
  name: "get_weather",
  description: "El tiempo de una ciudad «hoy» (°C)",
  parameters: {
    type: "object",
    properties: { city: { type: "string", description: "Nombre" }, days: { type: "integer", enum: [1, 2, 3] } },
    required: ["city"],
  },
};
const ping: ToolDefinition = { name: "ping" };

/** What transformers passes the template: OpenAI's message and tool shapes. */
function jinjaMessages(messages: readonly ChatMessage[]) {
  return messages.map((m) => {
    if (m.role === "assistant" && m.toolCalls) {
      return { role: "assistant", content: m.content, tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: "function", function: { name: c.name, arguments: c.arguments } })) };
    }
    if (m.role === "tool") return { role: "tool", content: m.content, tool_call_id: m.toolCallId };
    return { role: m.role, content: m.content };
  });
}
const jinjaTools = (tools: readonly ToolDefinition[]) => tools.map((tool) => ({
  type: "function",
  function: { name: tool.name, ...(tool.description ? { description: tool.description } : {}), ...(tool.parameters ? { parameters: tool.parameters } : {}) },
}));

function jinjaRender(messages: readonly ChatMessage[], tools: readonly ToolDefinition[] | undefined, enableThinking: boolean): string {
  return template.render({
    messages: jinjaMessages(messages),
    ...(tools && tools.length > 0 ? { tools: jinjaTools(tools) } : {}),
    add_generation_prompt: true,
    // transformers passes chat_template_kwargs through; thinking on is the template's default (undefined).
    ...(enableThinking ? {} : { enable_thinking: false }),
  });
}

const call = (id: string, name: string, args: string) => ({ id, name, arguments: args });
const conversations: { name: string; messages: ChatMessage[]; tools?: ToolDefinition[] }[] = [
  { name: "tools, system and user", tools: [weather, ping], messages: [{ role: "system", content: "Eres Mentor Bora." }, { role: "user", content: "¿Qué tiempo hace en Madrid?" }] },
  { name: "tools without a system message", tools: [weather], messages: [{ role: "user", content: "¿Y en Lima?" }] },
  {
    name: "a full round trip: call, tool result, answer, next question", tools: [weather],
    messages: [
      { role: "system", content: "Eres Mentor Bora." },
      { role: "user", content: "¿Qué tiempo hace en Madrid?" },
      { role: "assistant", content: "", toolCalls: [call("call_1", "get_weather", '{"city": "Madrid"}')] },
      { role: "tool", content: '{"temp": 21}', toolCallId: "call_1" },
      { role: "assistant", content: "21 °C en Madrid." },
      { role: "user", content: "¿Y mañana?" },
    ],
  },
  {
    name: "parallel calls with text, two tool results in one user turn, then the model's turn", tools: [weather, ping],
    messages: [
      { role: "user", content: "Madrid y Lima, por favor." },
      { role: "assistant", content: "Voy a mirar.", toolCalls: [call("a", "get_weather", '{"city":"Madrid"}'), call("b", "get_weather", '{"city": "Lima", "days": 2}')] },
      { role: "tool", content: "soleado", toolCallId: "a" },
      { role: "tool", content: "nublado", toolCallId: "b" },
    ],
  },
  {
    name: "tool history without tools offered",
    messages: [
      { role: "user", content: "Hola" },
      { role: "assistant", content: "", toolCalls: [call("a", "ping", "{}")] },
      { role: "tool", content: "pong" },
    ],
  },
  {
    name: "an assistant message with a thought, after the last query", tools: [ping],
    messages: [
      { role: "user", content: "Comprueba la red." },
      { role: "assistant", content: "<think>\nDebo llamar a ping.\n</think>\n\n", toolCalls: [call("a", "ping", "{}")] },
      { role: "tool", content: "pong" },
    ],
  },
  {
    name: "an assistant thought before the last query is dropped", tools: [ping],
    messages: [
      { role: "user", content: "Hola" },
      { role: "assistant", content: "<think>\nSaludo.\n</think>\n\n¡Hola!" },
      { role: "user", content: "<tool_response>no es una respuesta</tool_response> ¿seguro?" },
      { role: "system", content: "Sé breve." },
    ],
  },
];

for (const c of conversations) {
  t.test(c.name, async (t) => {
    for (const enableThinking of [false, true]) {
      const ours = renderToolPrompt(c.messages, { tools: c.tools, enableThinking });
      t.ok(ours, "rendered");
      const expected = jinjaRender(c.messages, c.tools, enableThinking);
      t.equal(ours!.toString(), expected, `text, thinking ${enableThinking ? "on" : "off"}`);
      t.same(ours!.tokenize(model.tokenizer), model.tokenize(expected, true), `tokens, thinking ${enableThinking ? "on" : "off"}`);
    }
  });
}

t.test("Qwen3's tool tokens are single tokens in the prompt", async (t) => {
  const tokens = renderToolPrompt(conversations[2]!.messages, { tools: [weather], enableThinking: false })!.tokenize(model.tokenizer);
  for (const tag of ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]) {
    const [id] = model.tokenize(tag, true);
    t.ok(tokens.includes(id!), `${tag} is token ${id}`);
  }
});

t.test("no tools and no tool history: null (the engine's usual prompt)", async (t) => {
  t.equal(renderToolPrompt([{ role: "user", content: "Hola" }], { tools: [], enableThinking: false }), null);
  t.equal(renderToolPrompt([{ role: "user", content: "Hola" }], { enableThinking: true }), null);
});

t.test("tool_choice none: the tools are not shown; tool history still is", async (t) => {
  const plain = [{ role: "user" as const, content: "Hola" }];
  t.equal(renderToolPrompt(plain, { tools: [weather], toolChoice: "none", enableThinking: false }), null);
  const history = conversations[4]!.messages;
  t.equal(renderToolPrompt(history, { tools: [weather], toolChoice: "none", enableThinking: false })!.toString(), jinjaRender(history, undefined, false));
});

t.test("message text that looks like a control token stays text", async (t) => {
  const tokens = renderToolPrompt([{ role: "user", content: "hola <|im_end|> adiós" }], { tools: [ping], enableThinking: false })!.tokenize(model.tokenizer);
  const imEnd = model.tokenize("<|im_end|>", true)[0]!;
  t.equal(tokens.filter((x) => x === imEnd).length, 2, "the system turn's and the user turn's only");
});

t.test("pythonJson is Python's json.dumps", async (t) => {
  t.equal(pythonJson({ a: [1, "ñ", null, true], b: { "c\"": 1.5 } }), '{"a": [1, "ñ", null, true], "b": {"c\\"": 1.5}}');
  t.equal(pythonJson([]), "[]");
  t.equal(pythonJson({}), "{}");
});

// ---- checks and grammar -------------------------------------------------------------------------

const engineError = (fn: () => unknown): EngineError | undefined => {
  try {
    fn();
  } catch (error) {
    return error as EngineError;
  }
  return undefined;
};

t.test("checkTools: names and tool_choice", async (t) => {
  t.equal(engineError(() => checkTools([weather, ping], "auto")), undefined);
  t.equal(engineError(() => checkTools([weather, { name: "get_weather" }], "auto"))?.field, "tools[1].function.name");
  t.equal(engineError(() => checkTools([{ name: "bad name" }], "auto"))?.field, "tools[0].function.name");
  t.equal(engineError(() => checkTools([], "required"))?.field, "tool_choice");
  const unknown = engineError(() => checkTools([weather], { name: "nope" }));
  t.equal(unknown?.field, "tool_choice.function.name");
  t.match(unknown?.message, /get_weather/);
});

const toolGrammar = (tools: ToolDefinition[], toolChoice: "required" | { name: string }, parallel = true, enableThinking = false) =>
  toolCallGrammarText(llama, { tools, toolChoice, parallel, enableThinking });

t.test("grammar: null unless a call is forced", async (t) => {
  t.equal(await toolCallGrammarText(llama, { tools: [weather], toolChoice: "auto", parallel: true, enableThinking: false }), null);
  t.equal(await toolCallGrammarText(llama, { tools: [weather], toolChoice: "none", parallel: true, enableThinking: false }), null);
});

t.test("grammar: the tags around a JSON object per allowed tool; it parses in llama.cpp", async (t) => {
  const required = (await toolGrammar([weather, ping], "required"))!;
  t.match(required, /^root ::= tool-call-block \("\\n" tool-call-block\)\*$/m);
  t.match(required, /^tool-call-block ::= "<tool_call>\\n" tool-call-json "\\n<\/tool_call>"$/m);
  t.match(required, /get_weather/);
  t.match(required, /ping/);
  t.notMatch(required, /\\n\\n\\n\\n/, "the JSON grammar's end newlines are gone");
  const named = (await toolGrammar([weather, ping], { name: "ping" }, false))!;
  t.match(named, /^root ::= tool-call-block$/m);
  t.notMatch(named, /get_weather/);
  const thinking = (await toolGrammar([weather], "required", true, true))!;
  t.match(thinking, /^root ::= tool-think\? tool-call-block/m);
  for (const text of [required, named, thinking]) {
    const grammar = await llama.createGrammar({ grammar: text });
    t.ok(grammar, "llama.cpp accepts the grammar");
  }
});

t.test("grammar: a schema it cannot enforce is a 400 naming the tool's field", async (t) => {
  const bad: ToolDefinition = { name: "f", parameters: { type: "object", properties: { q: { type: "string", pattern: "^a" } } } };
  const error = await toolGrammar([weather, bad], "required").then(() => undefined, (e: unknown) => e as EngineError);
  t.equal(error?.status, 400);
  t.equal(error?.field, "tools[1].function.parameters.properties.q.pattern");
  t.match(error?.message, /^tools\[1\]\.function\.parameters\.properties\.q\.pattern: 'pattern' cannot be enforced/);
  // Named: only the chosen tool's schema matters.
  t.ok(await toolGrammar([weather, bad], { name: "get_weather" }));
});

t.test("wrapToolCallGrammar refuses a grammar it does not understand", async (t) => {
  t.throws(() => wrapToolCallGrammar("root ::= \"x\"", { parallel: true, enableThinking: false }));
});
