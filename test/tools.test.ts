// Tool calling end to end with the official `openai` client and LangChain.js against a real port, on the
// scripted fixture whose answer is a Qwen3 tool call (and whose thought holds a <tool_call> block that
// must stay reasoning): tool_choice auto, streaming as OpenAI streams calls, a full round trip with a tool
// message, none, and the seed API's same shapes.
import t from "tap";
import OpenAI from "openai";
import { ChatOpenAI } from "@langchain/openai";
import { AIMessage, HumanMessage, ToolMessage } from "@langchain/core/messages";
import { SCRIPTED_TOOL_OUTPUT, ensureScriptedToolsModel } from "../scripts/make-test-models.js";
import { renderToolPrompt } from "../src/engine/chat/toolPrompt.js";
import { postJson, startTestService } from "./helpers/service.js";
import { readSse } from "./helpers/sse.js";

t.setTimeout(600_000);
const service = await startTestService({ LLM_MODEL: await ensureScriptedToolsModel() });
t.teardown(() => service.close());
const base = await service.listen();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const model = service.engines.chat.modelName;

const weatherTool = {
  type: "function" as const,
  function: {
    name: "get_weather",
    description: "El tiempo en una ciudad",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};
const tools = [weatherTool, { type: "function" as const, function: { name: "ping", parameters: { type: "object", properties: {} } } }];
const messages: OpenAI.ChatCompletionMessageParam[] = [
  { role: "system", content: "Eres Mentor Bora." },
  { role: "user", content: "¿Qué tiempo hace en Madrid?" },
];
const expectedCall = SCRIPTED_TOOL_OUTPUT.call;

t.test("auto: the call in message.tool_calls, content null, finish_reason tool_calls", async (t) => {
  const c = await client.chat.completions.create({ model, messages, tools, temperature: 0 });
  const choice = c.choices[0]!;
  t.equal(choice.finish_reason, "tool_calls");
  t.equal(choice.message.content, null);
  t.equal(choice.message.tool_calls?.length, 1);
  const call = choice.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
  t.match(call.id, /^call_[A-Za-z0-9]{24}$/);
  t.equal(call.type, "function");
  t.same(call.function, expectedCall);
  t.same(JSON.parse(call.function.arguments), { city: "Madrid" });
  t.equal(c.usage!.completion_tokens, SCRIPTED_TOOL_OUTPUT.answerTokens.length);
  // The prompt is the tool template's: the tokens the engine counted are those of renderToolPrompt.
  const prompt = renderToolPrompt(messages.map((m) => ({ role: m.role as "system" | "user", content: m.content as string })),
    { tools: tools.map((x) => ({ name: x.function.name, description: "description" in x.function ? x.function.description : undefined, parameters: x.function.parameters })), enableThinking: false })!;
  t.equal(c.usage!.prompt_tokens, prompt.tokenize(service.engines.chat.vocabulary.tokenizer).length);
});

t.test("streaming: delta.tool_calls as OpenAI sends them, reassembled equal to the plain answer", async (t) => {
  const stream = await client.chat.completions.create({ model, messages, tools, temperature: 0, stream: true });
  const toolDeltas: OpenAI.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
  let content = "";
  let finish: string | null = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    content += choice.delta.content ?? "";
    toolDeltas.push(...(choice.delta.tool_calls ?? []));
    finish = choice.finish_reason ?? finish;
  }
  t.equal(content, "", "no content: no half tag ever reached it");
  t.equal(finish, "tool_calls");
  const [first, ...rest] = toolDeltas;
  t.match(first, { index: 0, type: "function", function: { name: expectedCall.name, arguments: "" } });
  t.match(first!.id, /^call_/);
  t.ok(rest.length > 1, "the arguments arrive in several fragments");
  t.ok(rest.every((d) => d.index === 0 && d.id === undefined && d.function?.name === undefined), "fragments carry only arguments");
  t.equal(rest.map((d) => d.function!.arguments).join(""), expectedCall.arguments);

  // The SDK's own stream helper rebuilds the same message.
  const final = await client.chat.completions.stream({ model, messages, tools, temperature: 0 }).finalChatCompletion();
  const call = final.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
  t.same(call.function, expectedCall);
  t.equal(final.choices[0]!.finish_reason, "tool_calls");
});

t.test("thinking on: the <tool_call> inside the thought is reasoning, not a call", async (t) => {
  const c = await client.chat.completions.create({ model, messages, tools, temperature: 0, chat_template_kwargs: { enable_thinking: true } } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const message = c.choices[0]!.message as OpenAI.ChatCompletionMessage & { reasoning_content?: string };
  t.equal(message.reasoning_content, SCRIPTED_TOOL_OUTPUT.reasoning);
  t.match(message.reasoning_content, /<tool_call>/);
  t.equal(message.tool_calls?.length, 1, "one call: the answer's");
  t.same((message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function, expectedCall);
  t.equal(message.content, null);
  t.equal(c.usage!.completion_tokens, SCRIPTED_TOOL_OUTPUT.thinkingTokens.length);

  const stream = await client.chat.completions.create({ model, messages, tools, temperature: 0, stream: true, chat_template_kwargs: { enable_thinking: true } } as OpenAI.ChatCompletionCreateParamsStreaming);
  let reasoning = "";
  const names: string[] = [];
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta as (OpenAI.ChatCompletionChunk.Choice.Delta & { reasoning_content?: string }) | undefined;
    reasoning += delta?.reasoning_content ?? "";
    t.notOk(delta?.content, "no content chunk");
    for (const d of delta?.tool_calls ?? []) if (d.function?.name) names.push(d.function.name);
  }
  t.equal(reasoning, SCRIPTED_TOOL_OUTPUT.reasoning);
  t.same(names, [expectedCall.name]);
});

t.test("tool_choice none: never a call (the scripted model's text stays text)", async (t) => {
  const c = await client.chat.completions.create({ model, messages, tools, tool_choice: "none", temperature: 0 });
  t.equal(c.choices[0]!.message.tool_calls, undefined);
  t.equal(c.choices[0]!.finish_reason, "stop");
  t.equal(c.choices[0]!.message.content, SCRIPTED_TOOL_OUTPUT.answer);
  // The tools are not in the prompt.
  const auto = await client.chat.completions.create({ model, messages, tools, temperature: 0, max_tokens: 1 });
  t.ok(c.usage!.prompt_tokens < auto.usage!.prompt_tokens);
});

t.test("a full round trip: the call and its tool result go back, as the template renders them", async (t) => {
  const first = await client.chat.completions.create({ model, messages, tools, temperature: 0 });
  const assistant = first.choices[0]!.message;
  const call = assistant.tool_calls![0]!;
  const history: OpenAI.ChatCompletionMessageParam[] = [
    ...messages,
    { role: "assistant", content: assistant.content, tool_calls: assistant.tool_calls },
    { role: "tool", tool_call_id: call.id, content: '{"temp_c": 21, "sky": "despejado"}' },
  ];
  const second = await client.chat.completions.create({ model, messages: history, tools, temperature: 0 });
  t.equal(second.choices[0]!.finish_reason, "tool_calls", "the scripted model calls again");
  const expectedPrompt = renderToolPrompt([
    { role: "system", content: "Eres Mentor Bora." },
    { role: "user", content: "¿Qué tiempo hace en Madrid?" },
    { role: "assistant", content: "", toolCalls: [{ id: call.id, name: expectedCall.name, arguments: expectedCall.arguments }] },
    { role: "tool", content: '{"temp_c": 21, "sky": "despejado"}', toolCallId: call.id },
  ], { tools: tools.map((x) => ({ name: x.function.name, description: "description" in x.function ? x.function.description : undefined, parameters: x.function.parameters })), enableThinking: false })!;
  t.match(expectedPrompt.toString(), /<tool_response>\n\{"temp_c": 21, "sky": "despejado"\}\n<\/tool_response>/);
  t.equal(second.usage!.prompt_tokens, expectedPrompt.tokenize(service.engines.chat.vocabulary.tokenizer).length);
  t.ok((second.usage!.prompt_tokens_details?.cached_tokens ?? 0) > 0, "the first request's prompt is reused from the slot");
});

t.test("parallel_tool_calls false: still the one call", async (t) => {
  const c = await client.chat.completions.create({ model, messages, tools, parallel_tool_calls: false, temperature: 0 });
  t.equal(c.choices[0]!.message.tool_calls?.length, 1);
});

t.test("LangChain ChatOpenAI.bindTools: a call, then the tool result back", async (t) => {
  const llm = new ChatOpenAI({ model, apiKey: "not-needed", temperature: 0, maxRetries: 0, configuration: { baseURL: `${base}/v1` } });
  const withTools = llm.bindTools([weatherTool]);
  const question = new HumanMessage("¿Qué tiempo hace en Madrid?");
  const ai = await withTools.invoke([question]);
  t.equal(ai.tool_calls?.length, 1);
  t.equal(ai.tool_calls![0]!.name, "get_weather");
  t.same(ai.tool_calls![0]!.args, { city: "Madrid" });
  t.match(ai.tool_calls![0]!.id, /^call_/);
  const back = await withTools.invoke([question, ai, new ToolMessage({ tool_call_id: ai.tool_calls![0]!.id!, content: "21 °C, despejado" })]);
  t.ok(back instanceof AIMessage);
  t.equal(back.tool_calls?.length, 1, "the scripted model answers with its call again");

  // Streaming through LangChain reassembles the same call.
  let chunks = 0;
  let merged: Awaited<ReturnType<typeof withTools.invoke>> | undefined;
  for await (const chunk of await withTools.stream([question])) {
    chunks++;
    merged = merged === undefined ? chunk : merged.concat(chunk);
  }
  t.ok(chunks > 2);
  t.same(merged!.tool_calls?.map((c) => [c.name, c.args]), [["get_weather", { city: "Madrid" }]]);
});

t.test("the seed API: the same tools and tool_calls shapes; SSE tool_call events", async (t) => {
  const body = { messages: [{ role: "user", content: "¿Qué tiempo hace en Madrid?" }], tools, temperature: 0 };
  const res = await postJson(service.app, "/api/llm/generate", body);
  t.equal(res.statusCode, 200, res.body);
  const json = res.json<{ answer: string; finish_reason: string; tool_calls: { id: string; type: string; function: { name: string; arguments: string } }[] }>();
  t.equal(json.answer, "");
  t.equal(json.finish_reason, "tool_calls");
  t.equal(json.tool_calls.length, 1);
  t.same(json.tool_calls[0]!.function, expectedCall);
  t.equal(json.tool_calls[0]!.type, "function");

  const response = await fetch(`${base}/api/llm/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) });
  const { events } = await readSse(response);
  const toolEvents = events.filter((e) => e.event === "tool_call").map((e) => JSON.parse(e.data) as { index: number; id?: string; function: { name?: string; arguments: string } });
  t.equal(toolEvents[0]!.function.name, expectedCall.name);
  t.match(toolEvents[0]!.id, /^call_/);
  t.equal(toolEvents.map((e) => e.function.arguments).join(""), expectedCall.arguments);
  t.equal(events.filter((e) => e.event === "delta").length, 0);
  const done = JSON.parse(events.at(-1)!.data) as typeof json;
  t.equal(events.at(-1)!.event, "done");
  t.equal(done.tool_calls[0]!.id, toolEvents[0]!.id);

  // History with a call and its result on the seed API.
  const round = await postJson(service.app, "/api/llm/generate", {
    ...body,
    messages: [...body.messages, { role: "assistant", content: "", tool_calls: json.tool_calls }, { role: "tool", tool_call_id: json.tool_calls[0]!.id, content: "21" }],
  });
  t.equal(round.statusCode, 200, round.body);
});
