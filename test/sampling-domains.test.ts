// Sampling parameters are checked against llama.cpp's domains in the TypeBox schemas (issue 15), so the
// OpenAI-style and Ollama APIs and /docs say the same: repeat_penalty > 0 (llama.h), seed below
// LLAMA_DEFAULT_SEED (which llama.cpp reads as "random"). Every value the schemas accept, combined,
// reaches the native sampler without an error.
import fc from "fast-check";
import t from "tap";
import { postJson, startTestService } from "./helpers/service.js";

const service = await startTestService();
t.teardown(() => service.close());
const model = service.engines.chat.modelName;
const messages = [{ role: "user", content: "hola" }];

t.test("values outside llama.cpp's domains: 400 naming the field on both APIs", async (t) => {
  for (const [field, value] of [["repeat_penalty", 0], ["repeat_penalty", -0.5], ["seed", 4294967295]] as const) {
    const openai = await postJson(service.app, "/v1/chat/completions", { model, messages, max_tokens: 1, [field]: value });
    t.equal(openai.statusCode, 400, `OpenAI ${field}=${value}`);
    t.match(openai.body, field);
    const ollama = await postJson(service.app, "/api/chat", { model, messages, stream: false, options: { num_predict: 1, [field]: value } });
    t.equal(ollama.statusCode, 400, `Ollama ${field}=${value}`);
    t.match(ollama.body, field);
  }
});

t.test("logit_bias and repeat_last_n: 400 naming the field, in either logit_bias form", async (t) => {
  const vocab = service.engines.models.chat.tokenizer.vocabularySize;
  const cases: [object, string][] = [
    [{ logit_bias: { [String(vocab)]: 5 } }, String(vocab)],
    [{ logit_bias: [[vocab + 7, false]] }, String(vocab + 7)],
    [{ logit_bias: { hello: 5 } }, "hello"],
    [{ logit_bias: { "12": 101 } }, "100"],
    [{ repeat_last_n: -2 }, "repeat_last_n"],
  ];
  for (const [fields, says] of cases) {
    const res = await postJson(service.app, "/v1/chat/completions", { model, messages, max_tokens: 1, ...fields });
    t.equal(res.statusCode, 400, JSON.stringify(fields));
    const error = res.json<{ error: { param: string; message: string } }>().error;
    t.match(error.param, Object.keys(fields)[0]!, `names ${Object.keys(fields)[0]}`);
    t.match(error.message, says, `says ${says}`);
  }
  const ollama = await postJson(service.app, "/api/chat", { model, messages, stream: false, options: { num_predict: 1, repeat_last_n: -5 } });
  t.equal(ollama.statusCode, 400);
  t.match(ollama.body, "repeat_last_n");
});

t.test("the schema's published domains say the same on both APIs", async (t) => {
  const doc = (await service.app.inject({ method: "GET", url: "/docs/json" })).json<Record<string, unknown>>();
  const text = JSON.stringify(doc);
  const repeatPenalties = [...text.matchAll(/"repeat_penalty":(\{[^}]*\})/g)].map((m) => JSON.parse(m[1]!) as { minimum?: number });
  t.ok(repeatPenalties.length >= 2, `repeat_penalty documented on several routes (${repeatPenalties.length})`);
  t.ok(repeatPenalties.every((p) => p.minimum !== undefined && p.minimum > 0), "every route: above 0 (a minimum that stays above 0 as a 32-bit float)");
  t.notMatch(text, /"repeat_penalty":\{"minimum":0[,}]/, "no inclusive 0 for repeat_penalty anywhere");
  t.notMatch(text, /"maximum":4294967295/, "no seed reaching LLAMA_DEFAULT_SEED");
});

t.test("any combination the schema accepts generates (property, both APIs)", async (t) => {
  const controls = fc.record({
    temperature: fc.double({ min: 0, max: 2, noNaN: true }),
    top_p: fc.double({ min: 0.01, max: 1, noNaN: true }),
    top_k: fc.integer({ min: 0, max: 1000 }),
    min_p: fc.double({ min: 0, max: 1, noNaN: true }),
    seed: fc.integer({ min: 0, max: 4294967294 }),
    repeat_penalty: fc.double({ min: 0.0001, max: 10, noNaN: true }),
    presence_penalty: fc.double({ min: -2, max: 2, noNaN: true }),
    frequency_penalty: fc.double({ min: -2, max: 2, noNaN: true }),
    repeat_last_n: fc.integer({ min: -1, max: 4096 }),
  }, { requiredKeys: [] });
  // OpenAI only (Ollama has no logit_bias): either wire form, banned tokens included.
  const bias = fc.option(fc.oneof(
    fc.dictionary(fc.integer({ min: 0, max: 151_000 }).map(String), fc.double({ min: -100, max: 100, noNaN: true }), { maxKeys: 8 }),
    fc.array(fc.tuple(fc.integer({ min: 0, max: 151_000 }), fc.oneof(fc.double({ min: -100, max: 100, noNaN: true }), fc.constant(false as const))), { maxLength: 8 }),
  ), { nil: undefined });
  await fc.assert(fc.asyncProperty(controls, bias, fc.boolean(), async (c, logitBias, ollama) => {
    const res = ollama
      ? await postJson(service.app, "/api/chat", { model, messages, stream: false, options: { ...c, num_predict: 2 } })
      : await postJson(service.app, "/v1/chat/completions", { model, messages, max_tokens: 2, ...c, ...(logitBias === undefined ? {} : { logit_bias: logitBias }) });
    if (res.statusCode !== 200) throw new Error(`${res.statusCode} ${res.body} for ${JSON.stringify(c)}`);
  }), { seed: 15, numRuns: 40 });
  t.pass("property holds");
});
