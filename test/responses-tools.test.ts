// Function tools on the Responses API, on the scripted fixture whose answer is a Qwen3 tool call: the
// function_call item, its streamed argument events, the function_call_output round trip (by items and
// by previous_response_id), tool_choice none / a named function, and LangChain's bindTools.
import t from "tap";
import OpenAI from "openai";
import { ChatOpenAI } from "@langchain/openai";
import { HumanMessage } from "@langchain/core/messages";
import { SCRIPTED_TOOL_OUTPUT, ensureScriptedToolsModel } from "../scripts/make-test-models.js";
import { startTestService } from "./helpers/service.js";

t.setTimeout(600_000);
const service = await startTestService({ LLM_MODEL: await ensureScriptedToolsModel() });
t.teardown(() => service.close());
const base = await service.listen();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const model = service.engines.chat.modelName;
const weather: OpenAI.Responses.FunctionTool = {
  type: "function", name: "get_weather", description: "El tiempo en una ciudad", strict: null,
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
};
const tools: OpenAI.Responses.FunctionTool[] = [weather, { type: "function", name: "ping", strict: null, parameters: { type: "object", properties: {} } }];
const question = "¿Qué tiempo hace en Madrid?";

t.test("auto: a function_call item; the round trip with function_call_output", async (t) => {
  const r = await client.responses.create({ model, input: question, tools, temperature: 0 });
  t.equal(r.status, "completed");
  t.equal(r.output.length, 1, "no message item: the answer is the call");
  const call = r.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
  t.equal(call.type, "function_call");
  t.match(call.id, /^fc_/);
  t.match(call.call_id, /^call_[A-Za-z0-9]{24}$/);
  t.equal(call.name, SCRIPTED_TOOL_OUTPUT.call.name);
  t.equal(call.arguments, SCRIPTED_TOOL_OUTPUT.call.arguments);
  t.equal(call.status, "completed");
  t.equal(r.output_text, "");
  t.equal(r.tool_choice, "auto");
  t.same(r.tools.map((x) => (x as OpenAI.Responses.FunctionTool).name), ["get_weather", "ping"]);

  // The round trip as the docs show it: the earlier output items plus the function_call_output.
  const output = JSON.stringify({ temperatura: 21 });
  const input: OpenAI.Responses.ResponseInput = [{ role: "user", content: question }, call, { type: "function_call_output", call_id: call.call_id, output }];
  const second = await client.responses.create({ model, input, tools, temperature: 0 });
  t.equal(second.status, "completed");
  const expected = service.engines.chat.countPromptTokens({
    messages: [
      { role: "user", content: question },
      { role: "assistant", content: "", toolCalls: [{ id: call.call_id, name: call.name, arguments: call.arguments }] },
      { role: "tool", content: output, toolCallId: call.call_id, name: call.name },
    ],
    tools: tools.map((x) => ({ name: x.name, ...(x.description ? { description: x.description } : {}), parameters: x.parameters! })),
    enableThinking: false, temperature: 0, topP: 1,
  });
  t.equal(second.usage!.input_tokens, expected, "the tool result is in the prompt as the template's tool response");

  // The same by previous_response_id: only the function_call_output is sent.
  const chained = await client.responses.create({ model, previous_response_id: r.id, input: [{ type: "function_call_output", call_id: call.call_id, output }], tools, temperature: 0 });
  t.equal(chained.usage!.input_tokens, expected, "the stored call is found in the chain");
  t.ok(chained.usage!.input_tokens_details.cached_tokens > 0);
});

t.test("streamed: function_call_arguments.delta/done, and the SDK's stream helper agrees", async (t) => {
  const stream = await client.responses.create({ model, input: question, tools, temperature: 0, stream: true });
  const types: string[] = [];
  let args = "";
  let done: OpenAI.Responses.ResponseFunctionCallArgumentsDoneEvent | undefined;
  let sequence = 0;
  for await (const event of stream) {
    t.equal(event.sequence_number, sequence++);
    if (types.at(-1) !== event.type) types.push(event.type);
    if (event.type === "response.function_call_arguments.delta") {
      t.equal(event.output_index, 0);
      args += event.delta;
    }
    if (event.type === "response.function_call_arguments.done") done = event;
  }
  t.same(types, [
    "response.created", "response.in_progress", "response.output_item.added",
    "response.function_call_arguments.delta", "response.function_call_arguments.done", "response.output_item.done", "response.completed",
  ]);
  t.equal(args, SCRIPTED_TOOL_OUTPUT.call.arguments);
  t.equal(done!.name, SCRIPTED_TOOL_OUTPUT.call.name);
  t.equal(done!.arguments, SCRIPTED_TOOL_OUTPUT.call.arguments);

  const helper = client.responses.stream({ model, input: question, tools, temperature: 0 });
  const final = await helper.finalResponse();
  t.equal((final.output[0] as OpenAI.Responses.ResponseFunctionToolCall).arguments, SCRIPTED_TOOL_OUTPUT.call.arguments);
});

t.test("tool_choice none: text; a named function: that call, grammar-constrained", async (t) => {
  const none = await client.responses.create({ model, input: question, tools, tool_choice: "none", temperature: 0, max_output_tokens: 40 });
  t.notOk(none.output.some((o) => o.type === "function_call"));
  const named = await client.responses.create({ model, input: question, tools, tool_choice: { type: "function", name: "ping" }, temperature: 0, max_output_tokens: 60 });
  const call = named.output.find((o) => o.type === "function_call") as OpenAI.Responses.ResponseFunctionToolCall | undefined;
  t.equal(call?.name, "ping");
  t.type(JSON.parse(call!.arguments), "object");
  t.same(named.tool_choice, { type: "function", name: "ping" });
  const one = await client.responses.create({ model, input: question, tools, parallel_tool_calls: false, temperature: 0 });
  t.equal(one.parallel_tool_calls, false);
  t.equal(one.output.filter((o) => o.type === "function_call").length, 1);
});

t.test("LangChain.js: bindTools over useResponsesApi", async (t) => {
  const llm = new ChatOpenAI({ model, apiKey: "not-needed", configuration: { baseURL: `${base}/v1` }, temperature: 0, useResponsesApi: true, maxRetries: 0 });
  const answer = await llm.bindTools([{ type: "function", function: { name: weather.name, description: weather.description!, parameters: weather.parameters! } }]).invoke([new HumanMessage(question)]);
  t.equal(answer.tool_calls?.length, 1);
  t.equal(answer.tool_calls![0]!.name, "get_weather");
  t.same(answer.tool_calls![0]!.args, { city: "Madrid" });
});
