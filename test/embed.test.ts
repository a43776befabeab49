// POST /api/llm/embed over HTTP on the generated MiniLM-shaped fixture (real WordPiece vocabulary).
import t from "tap";
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
