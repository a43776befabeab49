// The OpenAI Responses API's wire on the real engine (the scripted fixture): responses.create through
// the official `openai` SDK, input items, reasoning items, the exact event sequence and sequence_number
// continuity on the raw stream, max_output_tokens, errors in OpenAI's shape with `param`, and the
// store's bounds and eviction. (responses-clients.test.ts: the SDK's stream helpers, json_schema,
// previous_response_id, LangChain; responses-tools.test.ts: function tools.)
import t from "tap";
import OpenAI from "openai";
import { SCRIPTED_OUTPUT, ensureScriptedModel } from "../scripts/make-test-models.js";
import { buildApp } from "../src/http/app.js";
import { ResponseBuilder, type ResponseStreamEvent } from "../src/http/responseEvents.js";
import { ResponseStore } from "../src/http/responseStore.js";
import { postJson, startTestService } from "./helpers/service.js";
import { everyEventIsWholeUtf8, readSse } from "./helpers/sse.js";

t.setTimeout(600_000);
const service = await startTestService({ LLM_MODEL: await ensureScriptedModel() });
t.teardown(() => service.close());
const base = await service.listen();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const model = service.engines.chat.modelName;
const instructions = "Eres Mentor Bora.";
const question = "¿Qué significa 'ímihí'?";

type RawEvent = { type: string; sequence_number: number; output_index?: number; content_index?: number; item_id?: string; item?: { id: string; type: string }; delta?: string; response?: OpenAI.Responses.Response };

async function rawStream(body: Record<string, unknown>): Promise<{ events: RawEvent[]; names: string[]; raw: Buffer }> {
  const res = await fetch(`${base}/v1/responses`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, stream: true }) });
  t.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
  const { events, raw } = await readSse(res);
  return { events: events.map((e) => JSON.parse(e.data) as RawEvent), names: events.map((e) => e.event), raw };
}

/** The event types in order, with runs of deltas collapsed to one `…delta*`. */
const shape = (events: readonly RawEvent[]) => events.map((e) => e.type).filter((type, i, all) => !(type.endsWith(".delta") && all[i - 1] === type)).map((type) => type.endsWith(".delta") ? `${type}*` : type);

t.test("create: one message item with the answer, usage with cached tokens", async (t) => {
  const r = await client.responses.create({ model, instructions, input: question, temperature: 0 });
  t.match(r.id, /^resp_[0-9a-f]{48}$/);
  t.equal(r.object, "response");
  t.equal(r.status, "completed");
  t.equal(r.model, model);
  t.equal(r.output_text, SCRIPTED_OUTPUT.answer, "the SDK's output_text");
  t.equal(r.output.length, 1);
  const message = r.output[0] as OpenAI.Responses.ResponseOutputMessage;
  t.equal(message.type, "message");
  t.equal(message.role, "assistant");
  t.equal(message.status, "completed");
  t.match(message.id, /^msg_/);
  t.same(message.content, [{ type: "output_text", text: SCRIPTED_OUTPUT.answer, annotations: [], logprobs: [] }]);
  t.equal(r.instructions, instructions);
  t.equal((r as { store?: boolean }).store, true);
  t.equal(r.usage!.output_tokens, SCRIPTED_OUTPUT.answerTokens.length);
  const prompt = service.engines.chat.tokenizePrompt([{ role: "system", content: instructions }, { role: "user", content: question }], false);
  t.equal(r.usage!.input_tokens, prompt.length, "the chat template's prompt, instructions as the system message");
  t.equal(r.usage!.total_tokens, r.usage!.input_tokens + r.usage!.output_tokens);
  t.equal(r.usage!.input_tokens_details.cached_tokens + r.usage!.input_tokens_details.cache_write_tokens, r.usage!.input_tokens);
  t.equal(r.usage!.output_tokens_details.reasoning_tokens, 0);
  // The same prompt again: the slot's KV holds all of it but the last token.
  const again = await client.responses.create({ model, instructions, input: question, temperature: 0, store: false });
  t.ok(again.usage!.input_tokens_details.cached_tokens >= prompt.length - 1, `cached ${again.usage!.input_tokens_details.cached_tokens} of ${prompt.length}`);
  t.equal((again as { store?: boolean }).store, false);
  t.equal((await fetch(`${base}/v1/responses/${again.id}`)).status, 404, "store: false is not kept");
  // Messages as items (input_text parts, a developer message) give the same prompt.
  const items = await client.responses.create({
    model, temperature: 0,
    input: [{ role: "developer", content: instructions }, { type: "message", role: "user", content: [{ type: "input_text", text: question }] }],
  });
  t.equal(items.usage!.input_tokens, prompt.length);
  t.equal(items.output_text, SCRIPTED_OUTPUT.answer);
});

t.test("reasoning: effort low and above turns Qwen3's thinking on; the thought is a reasoning item", async (t) => {
  const r = await client.responses.create({ model, input: question, temperature: 0, reasoning: { effort: "medium" } });
  t.equal(r.output.length, 2);
  const reasoning = r.output[0] as OpenAI.Responses.ResponseReasoningItem;
  t.equal(reasoning.type, "reasoning");
  t.match(reasoning.id, /^rs_/);
  t.same(reasoning.summary, []);
  t.same(reasoning.content, [{ type: "reasoning_text", text: SCRIPTED_OUTPUT.reasoning }]);
  t.equal(r.output_text, SCRIPTED_OUTPUT.answer);
  t.equal(r.usage!.output_tokens, SCRIPTED_OUTPUT.thinkingTokens.length);
  t.equal(r.usage!.output_tokens_details.reasoning_tokens, service.engines.chat.vocabulary.tokenize(SCRIPTED_OUTPUT.reasoning).length);
  t.same(r.reasoning, { effort: "medium", summary: null });
  for (const effort of ["none", "minimal"] as const) {
    const off = await client.responses.create({ model, input: question, temperature: 0, reasoning: { effort } });
    t.equal(off.output.length, 1, `${effort}: no reasoning item`);
    t.equal(off.output_text, SCRIPTED_OUTPUT.answer);
  }
});

t.test("raw stream: the spec's exact event sequence, sequence_number 0..n-1, indexes and item ids", async (t) => {
  const { events, names, raw } = await rawStream({ model, input: question, temperature: 0, reasoning: { effort: "high" }, metadata: { topic: "ímihí" } });
  t.ok(everyEventIsWholeUtf8(raw), "no event splits a UTF-8 character (the 🦙 spans three tokens)");
  t.same(names, events.map((e) => e.type), "each SSE event name is its type");
  t.same(events.map((e) => e.sequence_number), events.map((_, i) => i), "sequence_number counts up from 0 with no gap");
  t.same(shape(events), [
    "response.created", "response.in_progress",
    "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta*", "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
    "response.output_item.added", "response.content_part.added", "response.output_text.delta*", "response.output_text.done", "response.content_part.done", "response.output_item.done",
    "response.completed",
  ]);
  const created = events[0]!.response!;
  t.equal(created.status, "in_progress");
  t.same(created.output, []);
  t.same(created.metadata, { topic: "ímihí" });
  const reasoningId = events[2]!.item!.id;
  const messageId = events.find((e) => e.type === "response.output_item.added" && e.output_index === 1)!.item!.id;
  for (const e of events.slice(2, -1)) {
    const itemId = e.item_id ?? e.item?.id;
    t.equal(itemId, e.output_index === 0 ? reasoningId : messageId, `${e.sequence_number} ${e.type}: item id of output ${e.output_index}`);
    if (e.type.includes("content_part") || e.type.includes("_text.")) t.equal(e.content_index, 0);
  }
  t.equal(events.filter((e) => e.type === "response.reasoning_text.delta").map((e) => e.delta).join(""), SCRIPTED_OUTPUT.reasoning);
  t.equal(events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""), SCRIPTED_OUTPUT.answer);
  const done = events.at(-1)!.response!;
  t.equal(done.status, "completed");
  t.equal(done.id, created.id);
  t.same(done.output.map((o) => o.type), ["reasoning", "message"]);
  // The stored copy is the completed response the stream ended with.
  const stored = await client.responses.retrieve(done.id);
  t.same(stored.output, done.output);
  t.same(stored.usage, done.usage);
});

t.test("max_output_tokens: status incomplete, the stream ends with response.incomplete", async (t) => {
  const r = await client.responses.create({ model, input: question, temperature: 0, max_output_tokens: 3 });
  t.equal(r.status, "incomplete");
  t.same(r.incomplete_details, { reason: "max_output_tokens" });
  t.equal(r.usage!.output_tokens, 3);
  t.equal((r.output[0] as OpenAI.Responses.ResponseOutputMessage).status, "incomplete");
  const { events } = await rawStream({ model, input: question, temperature: 0, max_output_tokens: 3 });
  t.equal(events.at(-1)!.type, "response.incomplete");
  t.equal(events.at(-1)!.response!.status, "incomplete");
});

t.test("errors in OpenAI's shape, with param", async (t) => {
  const cases: [unknown, number, string][] = [
    [{ input: "x", model: "gpt-4o" }, 404, "model"],
    [{ input: "x", temperature: 3 }, 400, "temperature"],
    [{ input: "x", tools: [{ type: "web_search" }] }, 400, "tools[0].type"],
    [{ input: [{ role: "user", content: [{ type: "input_image", image_url: "http://x/y.png" }] }] }, 400, "input[0].content[0].type"],
    [{ input: [{ type: "function_call_output", call_id: "call_1", output: "{}" }] }, 400, "input[0].call_id"],
    [{ input: [] }, 400, "input"],
    [{ input: "x", max_output_tokens: 5000 }, 400, "max_output_tokens"],
    [{ input: "x", background: true }, 400, "background"],
    // Admission comes before the first byte: a streamed request that cannot run is a plain 400.
    [{ input: "x", max_output_tokens: 5000, stream: true }, 400, "max_output_tokens"],
    [{ input: "x", conversation: "conv_1" }, 400, "conversation"],
  ];
  for (const [body, status, param] of cases) {
    const res = await postJson(service.app, "/v1/responses", body);
    t.equal(res.statusCode, status, JSON.stringify(body));
    const error = res.json().error as { message: string; type: string; param: string | null; code: string };
    t.equal(error.param, param, `${JSON.stringify(body)}: ${error.message}`);
    t.type(error.type, "string");
  }
  // The bare alias speaks the same API and the same error shape.
  const alias = await postJson(service.app, "/responses", { input: "x", temperature: 3 });
  t.equal(alias.statusCode, 400);
  t.equal(alias.json().error.param, "temperature");
  const ok = await postJson(service.app, "/responses", { input: question, temperature: 0, store: false });
  t.equal(ok.json().output[0].content[0].text, SCRIPTED_OUTPUT.answer);
});

t.test("the store: count and byte bounds, least recently used evicted first", async (t) => {
  const store = new ResponseStore<string>({ maxItems: 3, maxBytes: 36 });
  t.ok(store.put("a", "aaaa") && store.put("b", "bbbb") && store.put("c", "cccc"));
  store.get("a"); // a is now the most recently used
  store.put("d", "dddd");
  t.same(["a", "b", "c", "d"].map((id) => store.has(id)), [true, false, true, true], "count bound: b (least recent) went");
  t.same(store.stats(), { items: 3, bytes: 18, evicted: 1 });
  store.put("e", "e".repeat(26)); // 28 bytes of JSON
  t.same(["a", "c", "d", "e"].map((id) => store.has(id)), [false, false, true, true], "the count bound took c, the byte bound a");
  t.equal(store.stats().bytes, 34);
  t.notOk(store.put("big", "x".repeat(50)), "an entry larger than the bound is not kept");
  t.ok(store.has("d") && store.has("e"), "and evicts nothing");
  t.ok(store.delete("d"));
  t.same(store.stats(), { items: 1, bytes: 28, evicted: 3 });
  const off = new ResponseStore<string>({ maxItems: 0, maxBytes: 1000 });
  t.notOk(off.put("a", "a"));

  // Through the API, on an app whose store holds two responses.
  const small = await buildApp({ state: service.state, bodyLimitBytes: 1 << 20, logger: false, responseStore: { maxItems: 2, maxBytes: 1 << 20 } });
  t.teardown(() => small.close());
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push((await postJson(small, "/v1/responses", { input: question, temperature: 0, max_output_tokens: 2 })).json().id);
  const status = async (id: string) => (await small.inject({ method: "GET", url: `/v1/responses/${id}` })).statusCode;
  t.same([await status(ids[0]!), await status(ids[1]!), await status(ids[2]!)], [404, 200, 200], "the oldest of three was evicted");
  const evicted = await postJson(small, "/v1/responses", { input: "x", previous_response_id: ids[0] });
  t.equal(evicted.statusCode, 400);
  t.match(evicted.json().error.message, /evicted/);
});

t.test("a failure after the stream began: error, then response.failed (the builder, no model)", async (t) => {
  const base = (await client.responses.create({ model, input: question, temperature: 0, max_output_tokens: 1, store: false })) as unknown as ConstructorParameters<typeof ResponseBuilder>[0];
  const events: ResponseStreamEvent[] = [];
  const builder = new ResponseBuilder({ ...base, status: "in_progress", output: [], usage: null }, (e) => events.push(e));
  builder.start();
  builder.push({ kind: "content", text: "¡Ho" });
  const failed = builder.fail({ status: 504, code: "deadline_exceeded", message: "The request exceeded its deadline." });
  t.same(events.map((e) => e.type), [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.output_text.delta", "error", "response.failed",
  ]);
  t.same(events.map((e) => e.sequence_number), [0, 1, 2, 3, 4, 5, 6]);
  t.match(events[5], { type: "error", code: "deadline_exceeded", message: "The request exceeded its deadline.", param: null });
  t.equal(failed.status, "failed");
  t.same(failed.error, { code: "server_error", message: "The request exceeded its deadline." });
  t.equal((events[2] as unknown as { item: { content: unknown[] } }).item.content.length, 0, "events are copies taken when sent");
});
