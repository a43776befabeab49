// response_format on the random-weight model: the grammar alone makes the output valid JSON that
// matches the schema. Also seeds through the OpenAI API and the generated OpenAPI document.
import t from "tap";
import OpenAI from "openai";
import { Value } from "@sinclair/typebox/value";
import { Type } from "@sinclair/typebox";
import { postJson, startTestService } from "./helpers/service.js";

const service = await startTestService();
t.teardown(() => service.close());
const base = await service.listen();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const messages = [{ role: "user" as const, content: "Devuelve la palabra bora y su significado." }];

const WordSchema = Type.Object({
  palabra: Type.String({ maxLength: 12 }),
  nivel: Type.Integer(),
  etiquetas: Type.Array(Type.String({ maxLength: 8 }), { maxItems: 3 }),
  correcta: Type.Boolean(),
  categoria: Type.Union([Type.Literal("sustantivo"), Type.Literal("verbo")]),
}, { additionalProperties: false });

t.test("json_schema: output parses and validates against the schema", async (t) => {
  for (const seed of [1, 2, 3]) {
    const c = await client.chat.completions.create({
      model: service.engines.chat.modelName, messages, temperature: 1, seed, max_tokens: 200,
      response_format: { type: "json_schema", json_schema: { name: "palabra", schema: JSON.parse(JSON.stringify(WordSchema)) as Record<string, unknown> } },
    });
    const content = c.choices[0]!.message.content!;
    t.equal(c.choices[0]!.finish_reason, "stop", `seed ${seed} finished by the grammar`);
    const parsed: unknown = JSON.parse(content);
    t.ok(Value.Check(WordSchema, parsed), `seed ${seed}: ${content}`);
  }
});

t.test("json_object on the seed API: any JSON object", async (t) => {
  const res = await postJson(service.app, "/api/llm/generate", { messages, temperature: 1, seed: 4, max_new_tokens: 300, response_format: { type: "json_object" } });
  t.equal(res.statusCode, 200);
  const body = res.json<{ answer: string; finish_reason: string }>();
  if (body.finish_reason === "stop") t.type(JSON.parse(body.answer), "object");
  else t.match(body.answer.trimStart(), /^[{[]/, "cut by the limit, but JSON from the first character");
});

t.test("a schema the grammar cannot enforce is a 400 naming the field and the keyword", async (t) => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ type: "object", properties: { a: { type: "no-such-type" } } }, /properties\.a\.type/],
    [{ type: "object", properties: { n: { type: "integer", minimum: 1 } } }, /properties\.n\.minimum.*cannot be enforced/],
    [{ type: "string", pattern: "^a+$" }, /pattern/],
    [{}, /unconstrained/],
  ];
  for (const [schema, message] of cases) {
    const res = await postJson(service.app, "/v1/chat/completions", { messages, response_format: { type: "json_schema", json_schema: { name: "x", schema } } });
    t.equal(res.statusCode, 400, JSON.stringify(schema));
    const body = res.json<{ error: { param: string; message: string } }>();
    t.equal(body.error.param, "response_format.json_schema.schema");
    t.match(body.error.message, message);
  }
});

t.test("same seed, same text at temperature > 0 through the OpenAI API", async (t) => {
  const ask = (seed: number) => client.chat.completions.create({ model: service.engines.chat.modelName, messages, temperature: 0.9, top_k: 50, min_p: 0.01, seed, max_tokens: 20 } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  const [a, b, c] = [await ask(11), await ask(11), await ask(12)];
  t.equal(a.choices[0]!.message.content, b.choices[0]!.message.content);
  t.not(a.choices[0]!.message.content, c.choices[0]!.message.content);
});

t.test("penalties and out-of-range controls", async (t) => {
  const ok = await postJson(service.app, "/v1/chat/completions", { messages, max_tokens: 5, presence_penalty: 0.5, frequency_penalty: 0.5, repeat_penalty: 1.1 });
  t.equal(ok.statusCode, 200);
  for (const [field, value] of [["top_k", -1], ["min_p", 1.5], ["presence_penalty", 3], ["frequency_penalty", -3], ["repeat_penalty", -1], ["seed", -4], ["n", 2], ["max_tokens", 0]] as const) {
    const res = await postJson(service.app, "/v1/chat/completions", { messages, [field]: value });
    t.equal(res.statusCode, 400, `${field}=${value}`);
    t.equal(res.json<{ error: { param: string } }>().error.param, field);
    const seedApi = await postJson(service.app, "/api/llm/generate", { messages, [field === "max_tokens" ? "max_new_tokens" : field]: value });
    if (field !== "n") t.equal(seedApi.statusCode, 400, `seed API ${field}=${value}`);
  }
});

t.test("OpenAPI document generated from the schemas, served at /docs", async (t) => {
  const doc = await service.app.inject({ method: "GET", url: "/docs/json" });
  t.equal(doc.statusCode, 200);
  const spec = doc.json<{ openapi: string; paths: Record<string, unknown> }>();
  t.match(spec.openapi, /^3\./);
  for (const path of ["/api/llm/generate", "/api/llm/embed", "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/health", "/ready"]) t.ok(path in spec.paths, path);
  const ui = await service.app.inject({ method: "GET", url: "/docs/" });
  t.equal(ui.statusCode, 200);
  t.match(ui.headers["content-type"], /text\/html/);
});

t.test("an OpenAI stream whose client disconnects stops generating and frees its slot", async (t) => {
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model: service.engines.chat.modelName, messages, stream: true, max_tokens: 900, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsStreaming,
    { signal: controller.signal },
  );
  let chunks = 0;
  let slot = -1;
  try {
    for await (const _chunk of stream) {
      if (++chunks === 3) {
        slot = service.engines.chat.slotsSnapshot().find((s) => s.busy)!.id;
        controller.abort();
      }
    }
  } catch {
    // the client's own abort
  }
  const chat = service.engines.chat;
  const started = Date.now();
  while (chat.stats().slotsBusy > 0 && Date.now() - started < 5000) await new Promise((r) => setTimeout(r, 10));
  t.equal(chat.stats().slotsBusy, 0, "slot freed");
  const cached = chat.slotsSnapshot()[slot]!.cachedTokens;
  t.ok(cached < 200, `stopped early (${cached} tokens in the slot, 900 asked)`);
});
