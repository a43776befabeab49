// The Responses API through its clients, on the real engine (the scripted fixture): the official
// `openai` SDK's responses.create streamed, its responses.stream helper, text.format json_schema,
// previous_response_id with GET / input_items / DELETE / input_tokens, and LangChain.js ChatOpenAI with
// useResponsesApi. (responses.test.ts: the wire itself: items, events, errors, the store.)
import t from "tap";
import OpenAI from "openai";
import { ChatOpenAI } from "@langchain/openai";
import { HumanMessage, SystemMessage } from "@langchain/core/messages";
import { SCRIPTED_OUTPUT, ensureScriptedModel } from "../scripts/make-test-models.js";
import { postJson, startTestService } from "./helpers/service.js";

t.setTimeout(600_000);
const service = await startTestService({ LLM_MODEL: await ensureScriptedModel() });
t.teardown(() => service.close());
const base = await service.listen();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const model = service.engines.chat.modelName;
const instructions = "Eres Mentor Bora.";
const question = "¿Qué significa 'ímihí'?";

t.test("SDK: create with stream: true, and the responses.stream helper reassembling the text", async (t) => {
  const plain = await client.responses.create({ model, input: question, temperature: 0.7, seed: 3 } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
  const stream = await client.responses.create({ model, input: question, temperature: 0.7, seed: 3, stream: true } as OpenAI.Responses.ResponseCreateParamsStreaming);
  let text = "";
  let completed: OpenAI.Responses.Response | undefined;
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.type === "response.completed") completed = event.response;
  }
  t.equal(text, plain.output_text);
  t.same(completed!.usage!.output_tokens, plain.usage!.output_tokens);

  const helper = client.responses.stream({ model, input: question, temperature: 0, reasoning: { effort: "low" } });
  let deltas = "";
  helper.on("response.output_text.delta", (e) => { deltas += e.delta; });
  const final = await helper.finalResponse();
  t.equal(final.output_text, SCRIPTED_OUTPUT.answer, "finalResponse().output_text");
  t.equal(deltas, SCRIPTED_OUTPUT.answer);
  t.same((final.output[0] as OpenAI.Responses.ResponseReasoningItem).content, [{ type: "reasoning_text", text: SCRIPTED_OUTPUT.reasoning }]);
});

t.test("text.format json_schema and json_object go through the grammars", async (t) => {
  const schema = {
    type: "object",
    properties: { categoria: { type: "string", enum: ["sustantivo", "verbo"] }, correcta: { type: "boolean" } },
    required: ["categoria", "correcta"],
    additionalProperties: false,
  };
  const r = await client.responses.create({ model, input: question, temperature: 0, max_output_tokens: 60, text: { format: { type: "json_schema", name: "palabra", schema, strict: true } } });
  t.equal(r.status, "completed", r.output_text);
  const parsed = JSON.parse(r.output_text) as { categoria: string; correcta: boolean };
  t.ok(["sustantivo", "verbo"].includes(parsed.categoria) && typeof parsed.correcta === "boolean", r.output_text);
  t.same(Object.keys(parsed).sort(), ["categoria", "correcta"]);
  t.same(r.text?.format, { type: "json_schema", name: "palabra", schema, strict: true });
  const obj = await client.responses.create({ model, input: question, temperature: 0, max_output_tokens: 60, text: { format: { type: "json_object" } } });
  if (obj.status === "completed") t.type(JSON.parse(obj.output_text), "object");
  else t.match(obj.output_text, /^\s*\{/, "cut at the limit, but a JSON object so far");
  const bad = await postJson(service.app, "/v1/responses", { input: "x", text: { format: { type: "json_schema", name: "x", schema: { type: "nonsense" } } } });
  t.equal(bad.statusCode, 400);
  t.equal(bad.json().error.param, "text.format.schema");
});

t.test("previous_response_id: the stored chain is the history, warm in the slot; GET, input_items, DELETE", async (t) => {
  const first = await client.responses.create({ model, instructions, input: question, temperature: 0 });
  const follow = "¿Y en otra frase?";
  const second = await client.responses.create({ model, instructions, input: follow, previous_response_id: first.id, temperature: 0 });
  t.equal(second.previous_response_id, first.id);
  t.equal(second.output_text, SCRIPTED_OUTPUT.answer);
  const history = [
    { role: "system" as const, content: instructions },
    { role: "user" as const, content: question },
    { role: "assistant" as const, content: first.output_text },
    { role: "user" as const, content: follow },
  ];
  const expected = service.engines.chat.tokenizePrompt(history, false);
  t.equal(second.usage!.input_tokens, expected.length, "prompt = instructions + first input + first output + the new input");
  const firstPrompt = service.engines.chat.tokenizePrompt(history.slice(0, 2), false);
  // Qwen3's template renders a past answer without the empty think block the generation prompt had,
  // so the reusable prefix ends where the first answer began.
  t.ok(second.usage!.input_tokens_details.cached_tokens >= firstPrompt.length - 5, `warm: ${second.usage!.input_tokens_details.cached_tokens} cached of ${expected.length}`);

  // A chat completion with the same history counts the same prompt.
  const chat = await client.chat.completions.create({ model, messages: history, temperature: 0 });
  t.equal(chat.usage!.prompt_tokens, expected.length);

  // Three turns: the chain is followed back to the first.
  const third = await client.responses.create({ model, input: "¿Y otra vez?", previous_response_id: second.id, temperature: 0 });
  const counted = await client.responses.inputTokens.count({ model, input: "¿Y otra vez?", previous_response_id: second.id });
  t.same(counted, { object: "response.input_tokens", input_tokens: third.usage!.input_tokens });

  const got = await client.responses.retrieve(second.id);
  t.equal(got.id, second.id);
  t.equal(got.output_text, second.output_text);
  const items = await client.responses.inputItems.list(second.id);
  t.equal(items.data.length, 1);
  const item = items.data[0] as OpenAI.Responses.ResponseInputMessageItem;
  t.same([item.type, item.role, item.content], ["message", "user", [{ type: "input_text", text: follow }]]);
  t.match(item.id, /^msg_/);

  await client.responses.delete(first.id);
  t.equal((await fetch(`${base}/v1/responses/${first.id}`)).status, 404);
  const broken = await postJson(service.app, "/v1/responses", { input: "x", previous_response_id: third.id });
  t.equal(broken.statusCode, 400, "a link of the chain is gone");
  t.same(broken.json().error.param, "previous_response_id");
  t.equal(broken.json().error.code, "previous_response_not_found");
  const rejected = await client.responses.create({ model, input: "x", previous_response_id: "resp_nope" }).catch((e: unknown) => e);
  t.ok(rejected instanceof OpenAI.APIError && rejected.status === 400 && rejected.param === "previous_response_id", "the SDK's APIError, param included");
  const del = await fetch(`${base}/v1/responses/resp_nope`, { method: "DELETE" });
  t.equal(del.status, 404);
  t.same((await del.json() as { error: { param: string } }).error.param, "response_id");
});

t.test("LangChain.js ChatOpenAI with useResponsesApi", async (t) => {
  const llm = new ChatOpenAI({ model, apiKey: "not-needed", configuration: { baseURL: `${base}/v1` }, temperature: 0, useResponsesApi: true, maxRetries: 0 });
  const answer = await llm.invoke([new SystemMessage(instructions), new HumanMessage(question)]);
  t.equal(answer.text, SCRIPTED_OUTPUT.answer);
  t.match(answer.response_metadata, { id: /^resp_/ });
  let streamed = "";
  for await (const chunk of await llm.stream([new HumanMessage(question)])) streamed += chunk.text;
  t.equal(streamed, SCRIPTED_OUTPUT.answer);
});

