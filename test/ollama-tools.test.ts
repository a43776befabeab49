// Tool calls through the Ollama API (`ollama` client, ChatOllama.bindTools), over the scripted tools model
// whose answer is a known Qwen3 <tool_call>.
import t from "tap";
import { Ollama } from "ollama";
import { ChatOllama } from "@langchain/ollama";
import { SCRIPTED_TOOL_OUTPUT, ensureScriptedToolsModel } from "../scripts/make-test-models.js";
import { startTestService } from "./helpers/service.js";

const service = await startTestService({ LLM_MODEL: await ensureScriptedToolsModel() });
t.teardown(() => service.close());
const base = await service.listen();
const ollama = new Ollama({ host: base });
const model = service.engines.models.chat.name;
const tools = [{ type: "function", function: { name: "get_weather", description: "El tiempo de una ciudad", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
const messages = [{ role: "user", content: "¿Qué tiempo hace en Madrid?" }];
const expectedArguments = JSON.parse(SCRIPTED_TOOL_OUTPUT.call.arguments) as Record<string, unknown>;

t.test("tool_calls in Ollama's shape: arguments an object, no <tool_call> text in content", async (t) => {
  const r = await ollama.chat({ model, messages, tools, stream: false });
  t.equal(r.message.content, "");
  t.equal(r.message.tool_calls?.length, 1);
  t.equal(r.message.tool_calls![0]!.function.name, "get_weather");
  t.same(r.message.tool_calls![0]!.function.arguments, expectedArguments);
  t.equal(r.done_reason, "stop", "Ollama reports stop after tool calls");
  let content = "";
  const calls = [];
  for await (const part of await ollama.chat({ model, messages, tools, stream: true })) {
    content += part.message.content;
    calls.push(...(part.message.tool_calls ?? []));
  }
  t.equal(content, "");
  t.same(calls.map((c) => [c.function.name, c.function.arguments]), [["get_weather", expectedArguments]]);
  const round = await ollama.chat({
    model, tools, stream: false, options: { num_predict: 4 },
    messages: [...messages, r.message, { role: "tool", content: "{\"temp\": 21}", tool_name: "get_weather" }],
  });
  t.equal(round.done, true, "the call and its result go back into the history");
});

t.test("LangChain ChatOllama.bindTools", async (t) => {
  const llm = new ChatOllama({ baseUrl: base, model }).bindTools(tools);
  const reply = await llm.invoke([["human", "¿Qué tiempo hace en Madrid?"]]);
  t.equal(reply.tool_calls?.length, 1);
  t.equal(reply.tool_calls![0]!.name, "get_weather");
  t.same(reply.tool_calls![0]!.args, expectedArguments);
});
