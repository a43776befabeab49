// Requests whose grammar can never finish (issue 15): a forced tool call or a JSON answer with ignore_eos.
// The pure check (grammarConflict) without a model; the JSON-schema grammar's end without node-llama-cpp's
// trailing newlines; then the three requests that used to kill the process, sent to a real service
// process (a crash fails the test, not the runner).
import fc from "fast-check";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import t from "tap";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { grammarConflict } from "../src/engine/chat/prompt.js";
import type { GenerateRequest } from "../src/engine/chat/types.js";
import { withoutTrailingNewlines } from "../src/engine/jsonSchemaGrammar.js";
import { startServiceProcess } from "./helpers/process.js";

const tools: NonNullable<GenerateRequest["tools"]> = [{ name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }];

t.test("grammarConflict: refused exactly when ignore_eos meets a grammar that ends", async (t) => {
  const arbitraryRequest = fc.record({
    ignoreEos: fc.option(fc.boolean(), { nil: undefined }),
    rawPrompt: fc.option(fc.constant("hola"), { nil: undefined }),
    tools: fc.option(fc.constant(tools), { nil: undefined }),
    toolChoice: fc.option(fc.constantFrom<NonNullable<GenerateRequest["toolChoice"]>>("auto", "none", "required", { name: "get_weather" }), { nil: undefined }),
    responseFormat: fc.option(fc.constantFrom<NonNullable<GenerateRequest["responseFormat"]>>({ type: "text" }, { type: "json_object" }, { type: "json_schema", schema: { type: "object" } }), { nil: undefined }),
  });
  fc.assert(fc.property(arbitraryRequest, (request) => {
    const forced = request.rawPrompt === undefined && request.tools !== undefined && (request.toolChoice === "required" || typeof request.toolChoice === "object");
    const json = request.responseFormat !== undefined && request.responseFormat.type !== "text";
    const conflict = grammarConflict(request);
    if (request.ignoreEos !== true || (!forced && !json)) return conflict === null;
    return conflict !== null && conflict.status === 400 && conflict.code === "invalid_request" && conflict.field === "ignore_eos" &&
      conflict.message.includes(forced ? "tool_choice" : "response_format");
  }), { seed: 15, numRuns: 500 });
  t.pass("property holds");
});

t.test("JSON-schema grammars end with the value: no trailing-newline rule", async (t) => {
  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
  for (const schema of [
    { type: "object", properties: { a: { type: "string" } } },
    { type: "array", items: { type: "integer" } },
    { type: "string" },
    { oneOf: [{ type: "object", properties: { x: { type: "boolean" } } }, { type: "null" }] },
  ]) {
    const original = (await llama.createGrammarForJsonSchema(schema as never)).grammar;
    t.match(original.split("\n")[0], /"\\n\\n\\n\\n" \[\\n\]\*$/, "node-llama-cpp's grammar has the rule");
    const trimmed = withoutTrailingNewlines(original);
    t.notMatch(trimmed, /\\n\\n\\n\\n/, JSON.stringify(schema));
    t.equal(trimmed.split("\n").slice(1).join("\n"), original.split("\n").slice(1).join("\n"), "only the root line changes");
    t.equal(withoutTrailingNewlines(trimmed), trimmed, "idempotent");
  }
  t.equal(withoutTrailingNewlines('root ::= "a"'), 'root ::= "a"', "another grammar is left alone");
});

t.test("a real process: the requests that used to kill it get a 400 naming the fields, and it keeps serving", async (t) => {
  const models = await ensureTestModels();
  const proc = startServiceProcess({ LLM_MODEL: models.chat, EMBED_MODEL: models.embed, MODEL_DOWNLOAD: "false", LLM_CONTEXT_SIZE: "1024", WARMUP: "false" });
  t.teardown(() => { proc.child.kill("SIGKILL"); });
  const base = /http:\/\/[^"]+/.exec(await proc.waitForLine(/Server listening at/))![0];
  await proc.waitForLine(/"msg":"ready"/, 120_000);
  const model = "test-qwen3-tiny";
  const wireTools = [{ type: "function", function: { name: "get_weather", parameters: tools[0]!.parameters } }];
  const messages = [{ role: "user", content: "hola" }];
  const post = (url: string, body: unknown) => fetch(`${base}${url}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const cases: [string, string, Record<string, unknown>, RegExp][] = [
    ["tools + tool_choice required + parallel_tool_calls false + ignore_eos", "/v1/chat/completions",
      { model, messages, tools: wireTools, tool_choice: "required", parallel_tool_calls: false, ignore_eos: true }, /tool_choice "required"/],
    ["tools + named tool_choice + ignore_eos", "/v1/chat/completions",
      { model, messages, tools: wireTools, tool_choice: { type: "function", function: { name: "get_weather" } }, parallel_tool_calls: false, ignore_eos: true }, /tool_choice a named function/],
    ["response_format json_object + ignore_eos", "/v1/chat/completions",
      { model, messages, response_format: { type: "json_object" }, ignore_eos: true }, /response_format json_object/],
    ["response_format json_schema + ignore_eos (seed API)", "/api/llm/generate",
      { messages, response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object", properties: { a: { type: "string" } } } } }, ignore_eos: true }, /response_format json_schema/],
  ];
  for (const [name, url, body, message] of cases) {
    const res = await post(url, body);
    t.equal(res.status, 400, name);
    const error = (await res.json() as { error: { message: string; param?: string; field?: string } }).error;
    t.equal(error.param ?? error.field, "ignore_eos", `${name}: names ignore_eos`);
    t.match(error.message, message, `${name}: names the other field`);
    // Streamed: refused too (the status is the HTTP side's, issue 15's other half); the process lives.
    const streamed = await post(url, { ...body, stream: true });
    t.match(await streamed.text(), /ignore_eos/, `${name}, streamed: the error names ignore_eos`);
  }
  // A JSON-schema answer ends at its closing brace: no tokens spent on newlines.
  const schema = { type: "object", properties: { a: { enum: ["sí", "no"] } }, required: ["a"], additionalProperties: false };
  const res = await post("/v1/chat/completions", { model, messages, temperature: 0, max_tokens: 60, response_format: { type: "json_schema", json_schema: { name: "x", schema } } });
  t.equal(res.status, 200);
  const completion = await res.json() as { choices: { message: { content: string }; finish_reason: string }[]; usage: { completion_tokens: number } };
  t.equal(completion.choices[0]!.finish_reason, "stop");
  const content = completion.choices[0]!.message.content;
  t.match(content, /\}$/, "ends with the JSON, no newlines");
  t.ok(["sí", "no"].includes((JSON.parse(content) as { a: string }).a));
  t.ok(completion.usage.completion_tokens <= 12, `few tokens: ${completion.usage.completion_tokens}`);
  const plain = await post("/v1/chat/completions", { model, messages, max_tokens: 3 });
  t.equal(plain.status, 200, "still serving");
  t.equal(proc.child.exitCode, null, "alive");
  proc.child.kill("SIGTERM");
  t.equal((await proc.exited).code, 0);
});
