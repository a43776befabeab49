// Forced tool calls on the random-weight model: with tool_choice "required" or a named function the
// grammar makes whatever the model samples a call that parses and matches the tool's schema, on every
// seed; streamed arguments reassemble to the non-streamed ones; "none" never calls; bad tools are 400s
// in each API's own error shape.
import t from "tap";
import OpenAI from "openai";
import { postJson, startTestService } from "./helpers/service.js";

// Grammar-constrained sampling checks the grammar against the whole 151k vocabulary at every token:
// the forced calls below are the slow part, so the seeds are few.
t.setTimeout(600_000);
const service = await startTestService();
t.teardown(() => service.close());
const base = await service.listen();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const model = service.engines.chat.modelName;
const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "¿Qué tiempo hace?" }];

// Closed value sets keep a random model's calls short; the schemas still have objects, enums, booleans, consts.
const schemas: Record<string, { properties: Record<string, { enum?: unknown[]; const?: unknown; type?: string }> }> = {
  get_weather: { properties: { city: { enum: ["Madrid", "Lima", "Quito"] }, unit: { enum: ["c", "f"] }, detailed: { type: "boolean" } } },
  translate: { properties: { to: { const: "es" }, formal: { type: "boolean" } } },
};
const tools: OpenAI.ChatCompletionTool[] = Object.entries(schemas).map(([name, { properties }]) => ({
  type: "function",
  function: { name, parameters: { type: "object", properties, required: Object.keys(properties), additionalProperties: false } },
}));

/** The arguments against the tool's schema: exactly the listed keys, each value allowed. */
function schemaProblems(name: string, argumentsText: string): string[] {
  const schema = schemas[name];
  if (!schema) return [`unknown tool ${name}`];
  let args: unknown;
  try {
    args = JSON.parse(argumentsText);
  } catch {
    return [`arguments are not JSON: ${argumentsText}`];
  }
  if (typeof args !== "object" || args === null || Array.isArray(args)) return ["arguments are not an object"];
  const problems: string[] = [];
  const keys = Object.keys(args);
  if (keys.sort().join() !== Object.keys(schema.properties).sort().join()) problems.push(`keys ${keys.join()}`);
  for (const [key, rule] of Object.entries(schema.properties)) {
    const value = (args as Record<string, unknown>)[key];
    if (rule.enum && !rule.enum.includes(value)) problems.push(`${key}=${JSON.stringify(value)} not in enum`);
    if ("const" in rule && value !== rule.const) problems.push(`${key}=${JSON.stringify(value)} is not the const`);
    if (rule.type === "boolean" && typeof value !== "boolean") problems.push(`${key} is not a boolean`);
  }
  return problems;
}

const functionCalls = (message: OpenAI.ChatCompletionMessage) =>
  (message.tool_calls ?? []).map((c) => (c as OpenAI.ChatCompletionMessageFunctionToolCall).function);

t.test("required: a call that parses and matches its schema, on every seed", async (t) => {
  const names = new Set<string>();
  for (const seed of [1, 2, 3]) {
    const c = await client.chat.completions.create({ model, messages, tools, tool_choice: "required", parallel_tool_calls: false, temperature: 1, seed, max_tokens: 200 });
    const choice = c.choices[0]!;
    t.equal(choice.finish_reason, "tool_calls", `seed ${seed}`);
    const calls = functionCalls(choice.message);
    t.equal(calls.length, 1, `seed ${seed}: one call`);
    t.same(schemaProblems(calls[0]!.name, calls[0]!.arguments), [], `seed ${seed}: ${calls[0]!.name}(${calls[0]!.arguments})`);
    names.add(calls[0]!.name);
  }
  t.ok(names.size >= 1);
});

t.test("a named function: that function, valid arguments, on every seed", async (t) => {
  for (const seed of [1, 2]) {
    const c = await client.chat.completions.create({
      model, messages, tools, tool_choice: { type: "function", function: { name: "translate" } }, temperature: 1, seed, max_tokens: 200, parallel_tool_calls: false,
    });
    const calls = functionCalls(c.choices[0]!.message);
    t.equal(calls.length, 1);
    t.equal(calls[0]!.name, "translate");
    t.same(schemaProblems("translate", calls[0]!.arguments), [], calls[0]!.arguments);
  }
});

t.test("parallel calls allowed: every complete call is valid", async (t) => {
  const c = await client.chat.completions.create({ model, messages, tools, tool_choice: "required", temperature: 1, seed: 11, max_tokens: 100 });
  const choice = c.choices[0]!;
  const calls = functionCalls(choice.message);
  t.ok(calls.length >= 1);
  // With finish_reason length the last call may be cut, as OpenAI reports it.
  const complete = choice.finish_reason === "length" ? calls.slice(0, -1) : calls;
  for (const call of complete) t.same(schemaProblems(call.name, call.arguments), [], call.arguments);
  t.ok(choice.finish_reason === "tool_calls" || choice.finish_reason === "length");
});

t.test("streamed arguments reassemble to the non-streamed ones (same seed)", async (t) => {
  const request = { model, messages, tools, tool_choice: "required" as const, temperature: 1, seed: 7, max_tokens: 200, parallel_tool_calls: false };
  const plain = functionCalls((await client.chat.completions.create(request)).choices[0]!.message)[0]!;
  const stream = await client.chat.completions.create({ ...request, stream: true });
  let name = "";
  let args = "";
  for await (const chunk of stream) {
    for (const d of chunk.choices[0]?.delta.tool_calls ?? []) {
      name += d.function?.name ?? "";
      args += d.function?.arguments ?? "";
    }
  }
  t.equal(name, plain.name);
  t.equal(args, plain.arguments);
});

t.test("none: no tool calls", async (t) => {
  for (const seed of [1, 2]) {
    const c = await client.chat.completions.create({ model, messages, tools, tool_choice: "none", temperature: 1, seed, max_tokens: 24 });
    t.equal(c.choices[0]!.message.tool_calls, undefined);
    t.not(c.choices[0]!.finish_reason, "tool_calls");
    t.type(c.choices[0]!.message.content, "string");
  }
});

// ---- bad input --------------------------------------------------------------------------------------

type OpenAIErrorBody = { error: { message: string; type: string; param: string | null; code: string } };
type SeedErrorBody = { error: { code: string; message: string; field?: string } };

const badTools: { name: string; body: Record<string, unknown>; param: string; code: string }[] = [
  { name: "a tool without a function", body: { tools: [{ type: "function" }] }, param: "tools[0].function", code: "validation_error" },
  { name: "a tool of another type", body: { tools: [{ type: "retrieval", function: { name: "x" } }] }, param: "tools[0].type", code: "validation_error" },
  { name: "a name with spaces", body: { tools: [{ type: "function", function: { name: "get weather" } }] }, param: "tools[0].function.name", code: "invalid_request" },
  { name: "two tools with one name", body: { tools: [tools[0], tools[0]] }, param: "tools[1].function.name", code: "invalid_request" },
  { name: "parameters that are not an object", body: { tools: [{ type: "function", function: { name: "f", parameters: "{}" } }] }, param: "tools[0].function.parameters", code: "validation_error" },
  { name: "an unknown tool_choice", body: { tools, tool_choice: "sometimes" }, param: "tool_choice", code: "validation_error" },
  { name: "tool_choice naming a function not in tools", body: { tools, tool_choice: { type: "function", function: { name: "nope" } } }, param: "tool_choice.function.name", code: "invalid_request" },
  { name: "required without tools", body: { tool_choice: "required" }, param: "tool_choice", code: "invalid_request" },
  {
    name: "a schema the grammar cannot enforce, with required",
    body: { tools: [{ type: "function", function: { name: "f", parameters: { type: "object", properties: { q: { type: "string", pattern: "^a" } } } } }], tool_choice: "required" },
    param: "tools[0].function.parameters.properties.q.pattern", code: "invalid_request",
  },
  { name: "parallel_tool_calls not a boolean", body: { tools, parallel_tool_calls: "yes" }, param: "parallel_tool_calls", code: "validation_error" },
];

t.test("bad tools: 400 in OpenAI's error shape naming the field, streaming or not", async (t) => {
  for (const bad of badTools) {
    for (const stream of [false, true]) {
      const res = await postJson(service.app, "/v1/chat/completions", { messages, ...bad.body, stream });
      t.equal(res.statusCode, 400, `${bad.name}: ${res.body.slice(0, 200)}`);
      const body = res.json<OpenAIErrorBody>();
      t.equal(body.error.param, bad.param, bad.name);
      t.equal(body.error.code, bad.code, bad.name);
      t.equal(body.error.type, "invalid_request_error");
    }
  }
});

t.test("bad tools: 400 in the seed API's error shape naming the same field", async (t) => {
  for (const bad of badTools) {
    const res = await postJson(service.app, "/api/llm/generate", { messages, ...bad.body });
    t.equal(res.statusCode, 400, bad.name);
    const body = res.json<SeedErrorBody>();
    t.equal(body.error.field, bad.param, bad.name);
    t.equal(body.error.code, bad.code, bad.name);
  }
});

t.test("bad tool history: 400 naming the message", async (t) => {
  const call = { id: "call_1", type: "function", function: { name: "get_weather", arguments: "{}" } };
  const cases: { messages: unknown[]; param: string }[] = [
    { messages: [{ role: "user", content: "hola" }, { role: "assistant", content: null }], param: "messages[1].content" },
    { messages: [{ role: "user", content: "hola", tool_calls: [call] }], param: "messages[0].tool_calls" },
    { messages: [{ role: "user", content: "hola" }, { role: "assistant", content: null, tool_calls: [{ ...call, function: { name: "f", arguments: {} } }] }], param: "messages[1].tool_calls[0].function.arguments" },
    { messages: [{ role: "tool" }], param: "messages[0].content" },
  ];
  for (const c of cases) {
    const res = await postJson(service.app, "/v1/chat/completions", { messages: c.messages, tools });
    t.equal(res.statusCode, 400, res.body.slice(0, 200));
    t.equal(res.json<OpenAIErrorBody>().error.param, c.param);
  }
  // An assistant message that only calls tools may have content null; the history is accepted.
  const ok = await postJson(service.app, "/v1/chat/completions", {
    messages: [{ role: "user", content: "hola" }, { role: "assistant", content: null, tool_calls: [call] }, { role: "tool", tool_call_id: "call_1", content: "21" }],
    tools, max_tokens: 2,
  });
  t.equal(ok.statusCode, 200, ok.body.slice(0, 200));
});
