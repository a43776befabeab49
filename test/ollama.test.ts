// The Ollama-compatible API through the official `ollama` client and LangChain's ChatOllama and
// OllamaEmbeddings, on a real port, over the scripted model (its answer is known token for token).
import t from "tap";
import { Ollama } from "ollama";
import { ChatOllama, OllamaEmbeddings } from "@langchain/ollama";
import { SCRIPTED_OUTPUT, ensureTestModels } from "../scripts/make-test-models.js";
import { postJson, startTestService } from "./helpers/service.js";

const models = await ensureTestModels();
const service = await startTestService({ LLM_MODEL: models.scripted });
t.teardown(() => service.close());
const base = await service.listen();
const ollama = new Ollama({ host: base });
const chatModel = service.engines.models.chat.name;
const embedModel = service.engines.models.embedding.name;
const messages = [
  { role: "system", content: "Eres Mentor Bora." },
  { role: "user", content: "¿Qué significa 'ímihí'?" },
];
const answerTokens = SCRIPTED_OUTPUT.answerTokens.length;

const post = (url: string, body: unknown) => fetch(`${base}${url}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

t.test("chat, not streamed: the answer, Ollama's statistics, the model name echoed", async (t) => {
  const r = await ollama.chat({ model: chatModel, messages, stream: false, options: { temperature: 0 } });
  t.equal(r.model, chatModel);
  t.equal(r.message.role, "assistant");
  t.equal(r.message.content, SCRIPTED_OUTPUT.answer);
  t.equal(r.message.thinking, undefined, "no thinking unless asked");
  t.equal(r.done, true);
  t.equal(r.done_reason, "stop");
  t.equal(r.eval_count, answerTokens);
  t.ok(r.prompt_eval_count > 10);
  for (const key of ["total_duration", "prompt_eval_duration", "eval_duration"] as const) t.ok(Number.isInteger(r[key]) && r[key] > 0, key);
  t.ok(r.total_duration >= r.eval_duration);
  t.ok(!Number.isNaN(Date.parse(String(r.created_at))));
});

t.test("chat streamed (the default): NDJSON lines that add up to the answer, statistics on the last", async (t) => {
  const stream = await ollama.chat({ model: chatModel, messages, options: { temperature: 0 }, stream: true });
  const parts = [];
  for await (const part of stream) parts.push(part);
  t.ok(parts.length > 3);
  t.equal(parts.map((p) => p.message.content).join(""), SCRIPTED_OUTPUT.answer);
  t.ok(parts.slice(0, -1).every((p) => p.done === false));
  const last = parts.at(-1)!;
  t.equal(last.done, true);
  t.equal(last.done_reason, "stop");
  t.equal(last.eval_count, answerTokens);

  const raw = await post("/api/chat", { model: chatModel, messages, options: { temperature: 0, num_predict: 2 } });
  t.equal(raw.status, 200);
  t.equal(raw.headers.get("content-type"), "application/x-ndjson");
  const lines = (await raw.text()).split("\n").filter(Boolean);
  t.ok(lines.every((line) => typeof JSON.parse(line) === "object"), "one JSON object a line");
});

t.test("think: the thought apart from the answer, streamed and not", async (t) => {
  const r = await ollama.chat({ model: chatModel, messages, think: true, stream: false });
  t.equal(r.message.content, SCRIPTED_OUTPUT.answer);
  t.equal(r.message.thinking, SCRIPTED_OUTPUT.reasoning);
  t.equal(r.eval_count, SCRIPTED_OUTPUT.thinkingTokens.length);
  let thinking = "";
  let content = "";
  for await (const part of await ollama.chat({ model: chatModel, messages, think: true, stream: true })) {
    thinking += part.message.thinking ?? "";
    content += part.message.content;
  }
  t.equal(thinking, SCRIPTED_OUTPUT.reasoning);
  t.equal(content, SCRIPTED_OUTPUT.answer);
});

t.test("options: num_predict, stop, seed; keep_alive and unknown options accepted", async (t) => {
  const cut = await ollama.chat({ model: chatModel, messages, stream: false, keep_alive: "5m", options: { num_predict: 3, num_ctx: 8192, num_thread: 2, mirostat: 0 } });
  t.equal(cut.done_reason, "length");
  t.equal(cut.eval_count, 3);
  const stopped = await ollama.chat({ model: chatModel, messages, stream: false, options: { stop: ["agua"], seed: 7, top_k: 5, min_p: 0.05, repeat_penalty: 1.1 } });
  t.equal(stopped.message.content, "¡Hola! 'ímihí' significa ");
  t.equal(stopped.done_reason, "stop");
});

t.test("tools are accepted, and a history with tool calls and tool results", async (t) => {
  const tools = [{ type: "function", function: { name: "buscar_palabra", description: "Busca una palabra", parameters: { type: "object", properties: { palabra: { type: "string" } }, required: ["palabra"] } } }];
  const history = [
    ...messages,
    { role: "assistant", content: "", tool_calls: [{ function: { name: "buscar_palabra", arguments: { palabra: "ímihí" } } }] },
    { role: "tool", content: "{\"significado\": \"agua\"}", tool_name: "buscar_palabra" },
  ];
  const r = await ollama.chat({ model: chatModel, messages: history, tools, stream: false, options: { num_predict: 8 } });
  t.equal(r.done, true);
  t.type(r.message.content, "string");
  if (r.message.tool_calls) {
    for (const call of r.message.tool_calls) t.type(call.function.arguments, "object", "arguments as an object, as Ollama sends them");
  }
});

t.test("generate: prompt + system through the template, raw: the prompt as is, empty: load", async (t) => {
  const r = await ollama.generate({ model: chatModel, prompt: "¿Qué significa 'ímihí'?", system: "Eres Mentor Bora.", stream: false });
  t.equal(r.response, SCRIPTED_OUTPUT.answer);
  t.equal(r.done_reason, "stop");
  t.equal(r.eval_count, answerTokens);
  // The scripted model answers after `</think>\n\n`: a raw prompt ending so gets the same answer.
  const rawPrompt = "<|im_start|>user\nHola<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
  const raw = await ollama.generate({ model: chatModel, prompt: rawPrompt, raw: true, stream: false });
  t.equal(raw.response, SCRIPTED_OUTPUT.answer);
  const templated = (await service.app.inject({ method: "POST", url: "/tokenize", payload: { content: rawPrompt } })).json<{ tokens: number[] }>();
  t.equal(raw.prompt_eval_count, templated.tokens.length, "the raw prompt is tokenized as is, special tokens parsed");
  let streamed = "";
  for await (const part of await ollama.generate({ model: chatModel, prompt: "¿Qué significa 'ímihí'?", stream: true, think: true })) streamed += part.response;
  t.equal(streamed, SCRIPTED_OUTPUT.answer);
  const load = await ollama.generate({ model: chatModel, prompt: "", stream: false });
  t.equal(load.done_reason, "load");
  t.equal(load.response, "");
});

t.test("format: a JSON schema constrains the answer; logprobs in Ollama's shape; no messages: load", async (t) => {
  const format = { type: "object", properties: { correcta: { type: "boolean" } }, required: ["correcta"], additionalProperties: false };
  const r = await ollama.chat({ model: chatModel, messages, format, stream: false, options: { num_predict: 30 } });
  t.equal(r.done_reason, "stop", "the grammar ends the answer");
  t.match(JSON.parse(r.message.content), { correcta: Boolean });
  const json = await ollama.generate({ model: chatModel, prompt: "Hola", format: "json", stream: false, options: { num_predict: 5 } });
  t.ok(/^\s*[{["\d\-tfn]/.test(json.response ?? ""), `"json" starts a JSON value: ${JSON.stringify(json.response)}`);

  const lp = await ollama.chat({ model: chatModel, messages, stream: false, logprobs: true, top_logprobs: 2, options: { temperature: 0 } });
  const logprobs = lp.logprobs as unknown as { token: string; logprob: number; bytes: number[]; top_logprobs: { logprob: number }[] }[];
  t.equal(Buffer.from(logprobs.flatMap((x) => x.bytes)).toString("utf8"), SCRIPTED_OUTPUT.answer);
  t.ok(logprobs.every((x) => x.top_logprobs.length === 2 && Math.abs(x.logprob - x.top_logprobs[0]!.logprob) < 1e-6), "greedy: the top-1");
  const plain = await ollama.chat({ model: chatModel, messages, stream: false, options: { num_predict: 1 } });
  t.equal(plain.logprobs, undefined, "none unless asked");

  const load = await ollama.chat({ model: chatModel, messages: [], stream: false });
  t.equal(load.done_reason, "load");
});

t.test("format: a bad JSON schema is a 400 naming format", async (t) => {
  const res = await post("/api/chat", { model: chatModel, messages, stream: false, format: { type: "object", properties: { a: { type: "no-such-type" } } } });
  t.equal(res.status, 400);
  const body = await res.json() as { error: unknown };
  t.type(body.error, "string");
  t.match(body.error, /format/);
});

t.test("embed and the legacy embeddings equal /api/llm/embed", async (t) => {
  const texts = ["hola", "¿Qué significa 'ímihí'?", "adiós"];
  const seed = (await postJson(service.app, "/api/llm/embed", { texts })).json<{ embeddings: number[][] }>();
  const r = await ollama.embed({ model: embedModel, input: texts });
  t.equal(r.model, embedModel);
  t.equal(r.embeddings.length, 3);
  r.embeddings.forEach((v, i) => t.ok(v.every((x, j) => Math.abs(x - seed.embeddings[i]![j]!) < 1e-6), `text ${i}`));
  t.ok(r.prompt_eval_count > 3);
  const one = await ollama.embed({ model: embedModel, input: "hola" });
  t.same(one.embeddings, [r.embeddings[0]]);
  const legacy = await ollama.embeddings({ model: embedModel, prompt: "adiós" });
  t.ok(legacy.embedding.every((x, j) => Math.abs(x - seed.embeddings[2]![j]!) < 1e-6));
});

t.test("embed truncate: true cuts a long text, false refuses it as Ollama does", async (t) => {
  const long = "palabra ".repeat(600);
  const cut = await ollama.embed({ model: embedModel, input: [long], truncate: true });
  t.equal(cut.embeddings.length, 1);
  const refused = await post("/api/embed", { model: embedModel, input: ["hola", long], truncate: false });
  t.equal(refused.status, 400);
  t.match(await refused.json(), { error: /input\[1\] is \d+ tokens/ });
});

t.test("list, show, ps, version", async (t) => {
  const list = await ollama.list();
  t.same(list.models.map((m) => m.name), [chatModel, embedModel]);
  const chatEntry = list.models[0]!;
  t.equal(chatEntry.details.family, "qwen3");
  t.equal(chatEntry.details.format, "gguf");
  t.equal(chatEntry.details.quantization_level, "F32");
  t.match(chatEntry.digest, /^[0-9a-f]{64}$/);
  t.ok(chatEntry.size > 1_000_000);

  const show = await ollama.show({ model: chatModel });
  t.same(show.capabilities, ["completion", "tools", "thinking"]);
  const info = show.model_info as unknown as Record<string, unknown>;
  t.equal(info["general.architecture"], "qwen3");
  t.equal(info["qwen3.context_length"], 4096);
  t.equal(info["qwen3.embedding_length"], 64);
  t.ok((info["general.parameter_count"] as number) > 1_000_000);
  t.match(show.template, /<\|im_start\|>/);
  t.match(show.parameters, /temperature\s+0\.6/);
  const embedShow = await ollama.show({ model: embedModel });
  t.same(embedShow.capabilities, ["embedding"]);
  t.equal((embedShow.model_info as unknown as Record<string, unknown>)["bert.embedding_length"], 64);
  t.equal(embedShow.details.family, "bert");

  const ps = await ollama.ps();
  t.same(ps.models.map((m) => m.name), [chatModel, embedModel]);
  t.equal((ps.models[0] as unknown as { context_length: number }).context_length, service.engines.chat.contextSize);
  t.match((await ollama.version()).version, /^\d+\.\d+\.\d+$/);
});

t.test("LangChain: ChatOllama and OllamaEmbeddings", async (t) => {
  const llm = new ChatOllama({ baseUrl: base, model: chatModel, temperature: 0 });
  const reply = await llm.invoke([["system", "Eres Mentor Bora."], ["human", "¿Qué significa 'ímihí'?"]]);
  t.equal(reply.content, SCRIPTED_OUTPUT.answer);
  t.equal(reply.usage_metadata?.output_tokens, answerTokens);
  let streamed = "";
  for await (const chunk of await llm.stream([["system", "Eres Mentor Bora."], ["human", "¿Qué significa 'ímihí'?"]])) streamed += String(chunk.content);
  t.equal(streamed, SCRIPTED_OUTPUT.answer);

  const embeddings = new OllamaEmbeddings({ baseUrl: base, model: embedModel });
  const texts = ["hola", "adiós"];
  const seed = (await postJson(service.app, "/api/llm/embed", { texts })).json<{ embeddings: number[][] }>();
  const vectors = await embeddings.embedDocuments(texts);
  vectors.forEach((v, i) => t.ok(v.every((x, j) => Math.abs(x - seed.embeddings[i]![j]!) < 1e-6), `document ${i}`));
  const query = await embeddings.embedQuery("hola");
  t.ok(query.every((x, j) => Math.abs(x - seed.embeddings[0]![j]!) < 1e-6));
});

t.test("errors in Ollama's shape: {error: string}, the right status, never a 500", async (t) => {
  const unknown = await ollama.chat({ model: "llama3:8b", messages, stream: false }).catch((e: unknown) => e);
  t.equal((unknown as { status_code?: number }).status_code, 404);
  t.match((unknown as Error).message, /model "llama3:8b" not found.*Qwen3-Scripted-Test|test-qwen3-scripted/);
  const cases: [string, unknown, number, RegExp][] = [
    ["/api/chat", { messages }, 400, /model is required/],
    ["/api/chat", { model: chatModel, messages: [{ role: "robot", content: "x" }] }, 400, /messages\[0\]\.role/],
    ["/api/chat", { model: chatModel, messages, options: { temperature: "hot" } }, 400, /options\.temperature/],
    ["/api/chat", { model: chatModel, messages, options: { num_predict: 100000 } }, 400, /num_predict/],
    ["/api/chat", { model: chatModel, messages, tools: [{ type: "function", function: { description: "no name" } }] }, 400, /tools\[0\]\.function\.name/],
    ["/api/chat", { model: chatModel, messages, think: "very" }, 400, /think/],
    ["/api/chat", { model: embedModel, messages }, 400, /does not support generate/],
    ["/api/generate", { model: chatModel, prompt: "x", suffix: "y" }, 400, /suffix|insert/],
    ["/api/generate", { model: chatModel, prompt: 5 }, 400, /prompt/],
    ["/api/embed", { model: chatModel, input: "hola" }, 400, /does not support embeddings/],
    ["/api/embed", { model: embedModel, input: [1, 2] }, 400, /input/],
    ["/api/embed", { model: embedModel, input: ["hola", ""] }, 400, /input\[1\]/],
    ["/api/embed", { model: embedModel, input: "hola", dimensions: 3 }, 400, /dimensions/],
    ["/api/embeddings", { model: "nope", prompt: "hola" }, 404, /not found/],
    ["/api/show", {}, 400, /model is required/],
    ["/api/show", { model: "nope" }, 404, /not found/],
    ["/api/nonexistent", {}, 404, /No route/],
  ];
  for (const [url, body, status, message] of cases) {
    const res = await post(url, body);
    t.equal(res.status, status, `${url} ${JSON.stringify(body).slice(0, 80)}`);
    const json = await res.json() as { error: unknown };
    t.type(json.error, "string", "Ollama's error shape");
    t.match(json.error, message);
  }
  const notJson = await fetch(`${base}/api/chat`, { method: "POST", headers: { "content-type": "application/json" }, body: "{" });
  t.equal(notJson.status, 400);
  t.type(((await notJson.json()) as { error: unknown }).error, "string");
  // The seed API keeps its own error shape beside it.
  const seed = await post("/api/llm/embed", { texts: [] });
  t.type(((await seed.json()) as { error: { code: string } }).error.code, "string");
});
