// The OpenAI-compatible API through the official `openai` client and raw SSE, on the real engine.
import t from "tap";
import OpenAI from "openai";
import { SCRIPTED_OUTPUT, ensureTestModels } from "../scripts/make-test-models.js";
import { postJson, startTestService } from "./helpers/service.js";
import { everyEventIsWholeUtf8, readSse } from "./helpers/sse.js";

const models = await ensureTestModels();
const service = await startTestService({ LLM_MODEL: models.scripted });
t.teardown(() => service.close());
const base = await service.listen();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const model = service.engines.chat.modelName;
const messages = [
  { role: "system" as const, content: "Eres Mentor Bora." },
  { role: "user" as const, content: "¿Qué significa 'ímihí'?" },
];

t.test("chat completion", async (t) => {
  const c = await client.chat.completions.create({ model, messages, temperature: 0 });
  t.match(c.id, /^chatcmpl-/);
  t.equal(c.object, "chat.completion");
  t.equal(c.model, model);
  t.ok(Math.abs(c.created - Date.now() / 1000) < 60);
  t.equal(c.choices.length, 1);
  t.equal(c.choices[0]!.message.role, "assistant");
  t.equal(c.choices[0]!.message.content, SCRIPTED_OUTPUT.answer);
  t.equal(c.choices[0]!.finish_reason, "stop");
  t.equal(c.usage!.completion_tokens, SCRIPTED_OUTPUT.answerTokens.length);
  t.equal(c.usage!.total_tokens, c.usage!.prompt_tokens + c.usage!.completion_tokens);
  const cut = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 3 });
  t.equal(cut.choices[0]!.finish_reason, "length");
  t.equal(cut.usage!.completion_tokens, 3);
});

t.test("streamed chunks add up to the non-streamed text; usage chunk on request", async (t) => {
  const plain = await client.chat.completions.create({ model, messages, temperature: 0.7, seed: 5 });
  const stream = await client.chat.completions.create({ model, messages, temperature: 0.7, seed: 5, stream: true, stream_options: { include_usage: true } });
  let text = "";
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (!choice) continue;
    text += choice.delta.content ?? "";
    finish = choice.finish_reason ?? finish;
  }
  t.equal(text, plain.choices[0]!.message.content);
  t.equal(finish, "stop");
  t.same(usage, plain.usage);
});

t.test("thinking: reasoning_content apart from content, streaming included", async (t) => {
  const c = await client.chat.completions.create({ model, messages, temperature: 0, enable_thinking: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const message = c.choices[0]!.message as OpenAI.ChatCompletionMessage & { reasoning_content?: string };
  t.equal(message.content, SCRIPTED_OUTPUT.answer);
  t.equal(message.reasoning_content, SCRIPTED_OUTPUT.reasoning);
  const off = await client.chat.completions.create({ model, messages, temperature: 0 });
  t.equal((off.choices[0]!.message as { reasoning_content?: string }).reasoning_content, undefined, "off by default");
  // vLLM / llama-server spelling.
  const stream = await client.chat.completions.create({ model, messages, temperature: 0, stream: true, chat_template_kwargs: { enable_thinking: true } } as OpenAI.ChatCompletionCreateParamsStreaming);
  let content = "";
  let reasoning = "";
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta as { content?: string; reasoning_content?: string } | undefined;
    content += delta?.content ?? "";
    reasoning += delta?.reasoning_content ?? "";
  }
  t.equal(content, SCRIPTED_OUTPUT.answer);
  t.equal(reasoning, SCRIPTED_OUTPUT.reasoning);
});

t.test("stop strings are honoured and left out", async (t) => {
  const c = await client.chat.completions.create({ model, messages, temperature: 0, stop: "agua" });
  t.equal(c.choices[0]!.message.content, "¡Hola! 'ímihí' significa ");
});

t.test("embeddings equal /api/llm/embed, as floats and as base64", async (t) => {
  const texts = ["hola", "¿Qué significa 'ímihí'?", "adiós"];
  const seed = (await postJson(service.app, "/api/llm/embed", { texts })).json<{ embeddings: number[][] }>();
  const e = await client.embeddings.create({ model: service.engines.embed.modelName, input: texts, encoding_format: "float" });
  t.equal(e.data.length, 3);
  e.data.forEach((d, i) => {
    t.equal(d.index, i);
    t.ok(d.embedding.every((x, j) => Math.abs(x - seed.embeddings[i]![j]!) < 1e-6), `text ${i}`);
  });
  t.ok(e.usage.prompt_tokens > 0);
  // The client asks for base64 by default and decodes it itself.
  const b = await client.embeddings.create({ model: service.engines.embed.modelName, input: "hola" });
  t.ok(b.data[0]!.embedding.every((x, j) => Math.abs(x - seed.embeddings[0]![j]!) < 1e-6), "base64 float32 decodes to the same vector");
});

t.test("models list", async (t) => {
  const list = await client.models.list();
  t.same(list.data.map((m) => m.id), [model, service.engines.embed.modelName]);
});

t.test("errors come in OpenAI's shape with the right status", async (t) => {
  const bad = await client.chat.completions.create({ model, messages, temperature: 3 }).catch((e: unknown) => e);
  t.ok(bad instanceof OpenAI.APIError);
  const apiError = bad as InstanceType<typeof OpenAI.APIError>;
  t.equal(apiError.status, 400);
  t.equal(apiError.type, "invalid_request_error");
  t.equal(apiError.param, "temperature");
  const unknown = await client.chat.completions.create({ model: "gpt-4o", messages }).catch((e: unknown) => e);
  t.equal((unknown as InstanceType<typeof OpenAI.APIError>).status, 404);
  t.equal((unknown as InstanceType<typeof OpenAI.APIError>).code, "model_not_found");
  const long = await client.chat.completions.create({ model, messages, max_tokens: 100_000 }).catch((e: unknown) => e);
  t.equal((long as InstanceType<typeof OpenAI.APIError>).param, "max_tokens");
  t.equal((long as InstanceType<typeof OpenAI.APIError>).code, "context_length_exceeded");
  const raw = await fetch(`${base}/v1/embeddings`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: [] }) });
  t.equal(raw.status, 400);
  t.same(Object.keys(((await raw.json()) as { error: object }).error).sort(), ["code", "message", "param", "type"]);
});

t.test("raw SSE: framing, usage chunk, [DONE], whole UTF-8 characters", async (t) => {
  const response = await fetch(`${base}/v1/chat/completions`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  t.equal(response.status, 200);
  t.match(response.headers.get("content-type"), /^text\/event-stream/);
  const { events, raw } = await readSse(response);
  t.ok(raw.toString("utf8").split("\n\n").filter(Boolean).every((block) => block.startsWith("data: ")), "every event is one data: line");
  t.ok(everyEventIsWholeUtf8(raw));
  t.equal(events.at(-1)!.data, "[DONE]");
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data) as { object: string; choices: { delta: { role?: string; content?: string }; finish_reason: string | null }[]; usage?: { completion_tokens: number } });
  t.ok(chunks.every((c) => c.object === "chat.completion.chunk"));
  t.equal(chunks[0]!.choices[0]!.delta.role, "assistant");
  const usage = chunks.at(-1)!;
  t.same(usage.choices, []);
  t.equal(usage.usage!.completion_tokens, SCRIPTED_OUTPUT.answerTokens.length);
  t.equal(chunks.at(-2)!.choices[0]!.finish_reason, "stop");
  const text = chunks.flatMap((c) => c.choices.map((ch) => ch.delta.content ?? "")).join("");
  t.equal(text, SCRIPTED_OUTPUT.answer);
});
