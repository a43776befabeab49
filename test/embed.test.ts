// POST /api/llm/embed over HTTP on the generated MiniLM-shaped fixture (real WordPiece vocabulary).
import { Value } from "@sinclair/typebox/value";
import t from "tap";
import { EmbedEngine } from "../src/engine/embed.js";
import { NativeBatchEmbedder } from "../src/engine/native/batchEmbedder.js";
import { EmbedResponseSchema } from "../src/http/schemas/llm.js";
import { EmbeddingsResponseSchema } from "../src/http/schemas/openai.js";
import { base64Float32, vectorResponseJson } from "../src/http/vectors.js";
import { postJson, startTestService } from "./helpers/service.js";

const service = await startTestService();
t.teardown(() => service.close());
const { app } = service;

type EmbedResponse = { embeddings: number[][]; dim: number; model: string; truncated: number };
const embed = async (body: Record<string, unknown>) => {
  const res = await postJson(app, "/api/llm/embed", body);
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${res.body}`);
  return res.json<EmbedResponse>();
};
const norm = (v: number[]) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const maxDiff = (a: number[], b: number[]) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

const texts = [
  "hola", "adiós", "¿Qué significa 'ímihí'?", "El mentor Bora responde en español.",
  "La lengua bora se habla en la Amazonía peruana y colombiana.", "ímihí", "a", "Ñandú pingüino acción",
  "una frase bastante más larga que las demás para que los textos tengan longitudes distintas en el lote",
];

t.test("the seed's request: model's dimension, unit norm, input order", async (t) => {
  const body = await embed({ texts: ["hola", "adiós"], model: "test-minilm-tiny" });
  t.equal(body.dim, service.engines.embed.dimension);
  t.equal(body.model, "test-minilm-tiny");
  t.equal(body.embeddings.length, 2);
  for (const v of body.embeddings) {
    t.equal(v.length, body.dim);
    t.ok(Math.abs(norm(v) - 1) < 1e-6, `norm ${norm(v)}`);
  }
  t.ok(maxDiff(body.embeddings[0]!, body.embeddings[1]!) > 1e-3, "different texts, different vectors");
});

t.test("a batch equals the same texts embedded one by one, in order", async (t) => {
  const batch = await embed({ texts });
  t.equal(batch.embeddings.length, texts.length);
  for (const [i, text] of texts.entries()) {
    const single = await embed({ texts: [text] });
    t.ok(maxDiff(batch.embeddings[i]!, single.embeddings[0]!) < 1e-5, `text ${i} within 1e-5`);
  }
  const reversed = await embed({ texts: [...texts].reverse() });
  for (const [i] of texts.entries()) {
    t.ok(maxDiff(batch.embeddings[i]!, reversed.embeddings[texts.length - 1 - i]!) < 1e-5, `order kept for ${i}`);
  }
});

t.test("concurrent requests are answered each with its own vectors", async (t) => {
  const singles = await Promise.all(texts.map((text) => embed({ texts: [text] })));
  const concurrent = await Promise.all(texts.map((text) => embed({ texts: [text, text] })));
  for (const [i] of texts.entries()) {
    t.ok(maxDiff(concurrent[i]!.embeddings[0]!, singles[i]!.embeddings[0]!) < 1e-5);
    t.ok(maxDiff(concurrent[i]!.embeddings[1]!, singles[i]!.embeddings[0]!) < 1e-5);
  }
});

t.test("accented Spanish and Bora text tokenizes with the real WordPiece vocabulary", async (t) => {
  const model = service.engines.embed;
  const a = await model.embed(["¿Qué significa 'ímihí'?"]);
  const b = await model.embed(["¿que significa 'imihi'?"]);
  // bert-base-uncased lower-cases and strips accents, so these are the same tokens and vector.
  t.ok(maxDiff(a.embeddings[0]!, b.embeddings[0]!) < 1e-6);
  t.equal(a.promptTokens, b.promptTokens);
});


t.test("without the native addon: node-llama-cpp's embedding context gives the same vectors", async (t) => {
  t.equal(service.engines.embed.describe().backend, "native-batched");
  const fallback = await startTestService({ EMBED_NATIVE: "false" });
  t.teardown(() => fallback.close());
  t.equal(fallback.engines.embed.describe().backend, "node-llama-cpp");
  const long = "palabra ".repeat(1500);
  const [native, plain] = await Promise.all([service.engines.embed.embed([...texts, long]), fallback.engines.embed.embed([...texts, long])]);
  t.equal(plain.truncated, 1);
  t.equal(plain.promptTokens, native.promptTokens, "same token counts: [CLS] and [SEP] included");
  native.embeddings.forEach((v, i) => t.ok(maxDiff(v, plain.embeddings[i]!) < 1e-4, `text ${i}`));
});

t.test("a batch setting never changes a vector: texts longer than EMBED_BATCH_TOKENS are decoded alone, not cut", async (t) => {
  const reference = service.engines.embed;
  const tinyBatches = await EmbedEngine.load(service.engines.runtime.llama, {
    modelPath: service.config.embedModel, modelName: "tiny-batches", aliases: [], threads: 2,
    batchTokens: 64, batchSequences: 4, gpuLayers: 0, truncate: true, maxTexts: 100, preferNative: true,
  });
  t.teardown(() => tinyBatches.dispose());
  t.equal(tinyBatches.describe().backend, "native-batched");
  t.equal(tinyBatches.describe().batchTokens, 64);
  t.equal(tinyBatches.describe().maxTokensPerText, reference.describe().maxTokensPerText, "the per-text limit is the model's, not the batch's");
  const limit = reference.describe().maxTokensPerText;
  const medium = "palabra ".repeat(100); // ~200 tokens: above the 64-token batch, below the limit
  const long = "palabra ".repeat(1500); // above the limit: cut to exactly the limit on both
  const inputs = [...texts, medium, long];
  const [small, big] = await Promise.all([tinyBatches.embed(inputs), reference.embed(inputs)]);
  t.equal(small.truncated, 1);
  t.equal(big.truncated, 1);
  t.equal(small.promptTokens, big.promptTokens, "same tokens read");
  t.ok(small.promptTokens > limit + 64, `${small.promptTokens} tokens: the medium text was not cut to the batch`);
  inputs.forEach((_, i) => t.ok(maxDiff(small.embeddings[i]!, big.embeddings[i]!) < 1e-5, `text ${i} within 1e-5`));
});

t.test("embedding responses: the fast writer sends exactly what the response schemas describe", async (t) => {
  const res = await postJson(app, "/api/llm/embed", { texts: texts.slice(0, 3) });
  t.equal(res.statusCode, 200);
  t.match(res.headers["content-type"], /^application\/json/);
  const body = res.json<EmbedResponse>();
  t.ok(Value.Check(EmbedResponseSchema, body), "valid against EmbedResponseSchema");
  t.same(Object.keys(body), ["embeddings", "dim", "model", "truncated"], "fields in schema order");
  const direct = await service.engines.embed.embed(texts.slice(0, 3));
  t.same(body.embeddings, direct.embeddings, "the doubles survive the writer exactly");

  const openai = await postJson(app, "/v1/embeddings", { input: texts.slice(0, 3), model: "test-minilm-tiny" });
  t.equal(openai.statusCode, 200);
  t.ok(Value.Check(EmbeddingsResponseSchema, openai.json()), "valid against EmbeddingsResponseSchema");
  const b64 = await postJson(app, "/v1/embeddings", { input: texts.slice(0, 3), encoding_format: "base64" });
  const b64Body = b64.json<{ data: { embedding: string }[] }>();
  t.ok(Value.Check(EmbeddingsResponseSchema, b64Body), "base64: valid against EmbeddingsResponseSchema");
  b64Body.data.forEach((item, i) => {
    const bytes = Buffer.from(item.embedding, "base64");
    t.equal(bytes.length, 4 * direct.dim);
    const floats = Array.from({ length: direct.dim }, (_, k) => bytes.readFloatLE(4 * k));
    t.same(floats, Array.from(Float32Array.from(direct.embeddings[i]!)), `base64 vector ${i} is the float32 vector, little-endian`);
  });

  t.equal(vectorResponseJson({ embeddings: [[0.1, -2e-7, 1]], dim: 3, model: "m", truncated: 0 }), '{"embeddings":[[0.1,-2e-7,1]],"dim":3,"model":"m","truncated":0}');
  const view = new Float32Array([9, 1.5, -0.25, 9]).subarray(1, 3);
  t.equal(base64Float32(Array.from(view)), Buffer.from(new Float32Array([1.5, -0.25]).buffer).toString("base64"));
});

t.test("the texts of one request, and of requests arriving together, share one decode", async (t) => {
  // A call-through spy on the real embedder: it only records how many texts each decode got.
  const decodes: number[] = [];
  const embed = NativeBatchEmbedder.prototype.embed;
  NativeBatchEmbedder.prototype.embed = function (this: NativeBatchEmbedder, lists) {
    decodes.push(lists.length);
    return embed.call(this, lists);
  };
  t.teardown(() => { NativeBatchEmbedder.prototype.embed = embed; });
  const engine = service.engines.embed;
  await engine.embed(["uno", "dos", "tres"]);
  t.same(decodes, [3], "one request of 3 texts: one decode of 3 (the first text is not decoded alone)");
  decodes.length = 0;
  await Promise.all([engine.embed(["a", "b"]), engine.embed(["c", "d"]), engine.embed(["e"])]);
  t.same(decodes, [5], "three requests in the same tick: one decode of 5");
});
