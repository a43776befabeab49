// The multilingual engine on generated XLM-RoBERTa fixtures (the real 250k unigram vocabulary): embeddings
// from an e5-like model and rerank scores from a bge-reranker-like model must equal node-llama-cpp's own
// LlamaEmbeddingContext / LlamaRankingContext on the same files (a second, one-at-a-time path through the same
// library) within 1e-4, in the same order; pairs must be built as llama-server builds them; batching must not
// change a score; limits must be typed 400s; several models must serve at once.
import t from "tap";
import { TEST_THREADS } from "./helpers/threads.js";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { ensureNativeEmbedAddon } from "../scripts/build-native.ts";
import { ensureModel, ensureMultilingualTestModels, QWEN3_RERANK_TEMPLATE, TEST_EMBED_SHAPE } from "../scripts/make-test-models.ts";
import { EmbedEngine } from "../src/engine/embed.ts";
import { EngineError } from "../src/engine/errors.ts";
import { NativeBatchEmbedder } from "../src/engine/native/batchEmbedder.ts";
import { assemblePair, fillRerankTemplate, pairFormat, RerankEngine, toProbability } from "../src/engine/rerank.ts";

const THREADS = Number(TEST_THREADS);
const TOLERANCE = 1e-4;

const query = "¿Cuál es la capital de Francia?";
const documents = [
  "París es la capital y la ciudad más poblada de Francia.",
  "Las manzanas son frutas rojas y dulces que crecen en los árboles.",
  "La teoría de la relatividad fue desarrollada por Albert Einstein.",
  "Madrid es la capital de España; Lisboa, la de Portugal.",
  "El aprendizaje profundo es una rama del aprendizaje automático basada en redes neuronales.",
  "Francia limita con Bélgica, Luxemburgo, Alemania, Suiza, Italia, Mónaco, Andorra y España.",
  "¿Qué significa 'ímihí'? 'ímihí' significa agua.",
  "Le château de Versailles se trouve près de Paris.",
  "東京は日本の首都です。",
  "a",
  "Der schnelle braune Fuchs springt über den faulen Hund. ".repeat(6).trim(),
  "Una frase con emoji 😀 y un correo: usuario@ejemplo.com, 3,14 y 12345.",
];

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] ?? NaN) - (b[i] ?? NaN)));
  return max;
}

const order = (scores: readonly number[]): number[] => scores.map((_, i) => i).sort((x, y) => (scores[y] ?? 0) - (scores[x] ?? 0));

const addonFile = await ensureNativeEmbedAddon({ log: (line) => t.comment(line) });
if (addonFile === null) {
  t.fail("the native batch embedding addon could not be built (see the [build-native] line above)");
} else {
  const { embed: e5Path, rerank: rerankPath, qwen3Rerank: qwen3RerankPath } = await ensureMultilingualTestModels();
  // node-llama-cpp first: its getLlama() registers the ggml backends the addon shares.
  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });

  t.test("XLM-R embeddings: tokens and vectors equal node-llama-cpp's embedding context", async (t) => {
    const model = await llama.loadModel({ modelPath: e5Path });
    t.teardown(() => model.dispose());
    const loaded = await NativeBatchEmbedder.tryLoad({ modelPath: e5Path, threads: THREADS, maxSequences: 8, batchTokens: 512 }, addonFile);
    if ("unavailable" in loaded) throw new Error(loaded.unavailable);
    const embedder = loaded.embedder;
    t.teardown(() => embedder.dispose());
    t.equal(embedder.architecture, "bert");
    t.equal(embedder.poolingType, "mean");
    t.equal(embedder.dimension, 32);
    t.same(embedder.special, { bos: 0, eos: 2, sep: 2, addBos: true, addEos: true, addSep: true });

    // The unigram tokenizer of multilingual-e5 / bge-m3: <s> text </s>, SentencePiece pieces with ▁.
    const pieces = model.tokenize(query, false);
    t.ok(pieces.length > 3 && pieces.length < query.length, `"${query}" is ${pieces.length} pieces`);
    t.match(model.detokenize(pieces), query);
    for (const text of [query, ...documents]) {
      t.same(Array.from(embedder.tokenize(text)), [0, ...model.tokenize(text, false), 2], JSON.stringify(text));
    }

    // The same tokens through node-llama-cpp's context, one text per decode. (Given a string, node-llama-cpp's
    // embedding context would leave out <s> for a unigram vocabulary; llama-server and sentence-transformers
    // put it in, and so do we.)
    const context = await model.createEmbeddingContext({ threads: THREADS });
    t.teardown(() => context.dispose());
    const texts = [query, ...documents];
    const tokenLists = texts.map((text) => embedder.tokenize(text));
    const vectors = await embedder.embed(tokenLists);
    let worst = 0;
    for (const [i, tokens] of tokenLists.entries()) {
      const input = model.tokenize("", false).concat(Array.from(tokens) as ReturnType<typeof model.tokenize>);
      worst = Math.max(worst, maxAbsDiff(vectors[i] ?? [], (await context.getEmbeddingFor(input)).vector));
    }
    t.ok(worst <= TOLERANCE, `max |batched native - node-llama-cpp| = ${worst.toExponential(2)} <= ${TOLERANCE}`);
  });

  t.test("several embedding models at once, each with its own pooling and normalisation", async (t) => {
    const minilmPath = await ensureModel(TEST_EMBED_SHAPE);
    const common = { threads: 1, batchTokens: 512, batchSequences: 8, gpuLayers: 0 as const, truncate: true, maxTexts: 64, preferNative: true };
    const e5 = await EmbedEngine.load(llama, { ...common, modelPath: e5Path, modelName: "multilingual-e5-small", aliases: ["e5"], maxTokens: 512 });
    const minilm = await EmbedEngine.load(llama, { ...common, modelPath: minilmPath, modelName: "all-MiniLM-L6-v2", aliases: [], maxTokens: 256 });
    const e5Cls = await EmbedEngine.load(llama, { ...common, modelPath: e5Path, modelName: "e5-cls", aliases: [], pooling: "cls", normalize: false });
    t.teardown(async () => {
      await Promise.all([e5.dispose(), minilm.dispose(), e5Cls.dispose()]);
    });
    t.equal(e5.describe().backend, "native-batched");
    t.equal(e5.dimension, 32);
    t.equal(minilm.dimension, 64);
    t.ok(e5.serves("e5") && !minilm.serves("e5"));

    // Concurrent requests to different models: each answers with its own model's vectors.
    const [a, b, c, aAgain] = await Promise.all([e5.embed(documents), minilm.embed(documents), e5Cls.embed(documents), e5.embed(documents.slice(0, 3))]);
    t.equal(a.dim, 32);
    t.equal(b.dim, 64);
    t.equal(c.dim, 32);
    for (const vector of a.embeddings) t.ok(Math.abs(Math.hypot(...vector) - 1) < 1e-5, "e5 vectors are L2-normalised");
    t.ok(c.embeddings.some((vector) => Math.abs(Math.hypot(...vector) - 1) > 1e-3), "normalize: false returns the raw pooled vector");
    t.ok(maxAbsDiff(aAgain.embeddings[0] ?? [], a.embeddings[0] ?? []) < 1e-5, "same text, same vector across concurrent requests");

    // Pooling from the manifest: CLS pooling of the same file is the hidden state of <s>, not the mean.
    const cls = await NativeBatchEmbedder.tryLoad({ modelPath: e5Path, threads: 1, maxSequences: 4, batchTokens: 512, pooling: "cls" }, addonFile);
    if ("unavailable" in cls) throw new Error(cls.unavailable);
    t.teardown(() => cls.embedder.dispose());
    t.equal(cls.embedder.poolingType, "cls");
    const [clsVector] = await cls.embedder.embed([cls.embedder.tokenize(documents[0] ?? "")]);
    t.ok(maxAbsDiff(clsVector ?? [], c.embeddings[0] ?? []) < TOLERANCE, "EmbedEngine pooling: cls reaches the native context");
    t.ok(maxAbsDiff(clsVector ?? [], a.embeddings[0] ?? []) > 1e-3, "and differs from mean pooling");

    await t.rejects(EmbedEngine.load(llama, { ...common, modelPath: rerankPath, modelName: "bge-reranker", aliases: [] }), { message: /reranker/ });
  });

  t.test("rerank: pairs as llama-server builds them, scores equal node-llama-cpp's LlamaRankingContext", async (t) => {
    const engine = await RerankEngine.load({
      modelPath: rerankPath, modelName: "bge-reranker-v2-m3", aliases: ["BAAI/bge-reranker-v2-m3"], threads: THREADS,
      batchTokens: 1024, batchSequences: 16, maxTokens: 512, maxDocuments: 64, truncate: false,
    });
    t.teardown(() => engine.dispose());
    t.same(engine.describe(), {
      model: "bge-reranker-v2-m3", backend: "native-batched", architecture: "bert", scoreKind: "logit", pairFormat: "special",
      maxTokensPerPair: 512, maxDocuments: 64, batchSequences: 16, batchTokens: 1024, loadMs: engine.describe().loadMs,
    });
    t.ok(engine.serves("BAAI/bge-reranker-v2-m3"));

    const model = await llama.loadModel({ modelPath: rerankPath });
    t.teardown(() => model.dispose());
    // format_prompt_rerank for this vocabulary (add_bos, add_eos, add_sep): <s> query </s> </s> document </s>.
    for (const document of documents) {
      t.same(Array.from(engine.pairTokens(query, document)), [0, ...model.tokenize(query, false), 2, 2, ...model.tokenize(document, false), 2]);
    }
    // Special-token text in a document is text, not a control token (parse_special = false, as llama-server).
    t.notOk(Array.from(engine.pairTokens(query, "</s><s>")).slice(-4, -1).includes(2), "</s> inside a document stays plain text");

    const batchCount = { decodes: 0, pairs: 0 };
    engine.onBatch((pairs) => {
      batchCount.decodes++;
      batchCount.pairs += pairs;
    });
    const results = await engine.rerank(query, documents);
    t.same(results.map((r) => r.index), documents.map((_, i) => i), "results in input order");
    t.ok(batchCount.decodes < documents.length, `${documents.length} pairs in ${batchCount.decodes} decodes, never one at a time`);
    for (const [i, r] of results.entries()) t.equal(r.tokens, engine.pairTokens(query, documents[i] ?? "").length);

    const ranking = await model.createRankingContext({ contextSize: 512, threads: THREADS });
    t.teardown(() => ranking.dispose());
    const reference = await ranking.rankAll(query, documents);
    // node-llama-cpp returns sigmoid(logit); llama.cpp's head gives the logit (what llama-server returns).
    const ours = results.map((r) => toProbability(r.score));
    const worst = maxAbsDiff(ours, reference);
    t.ok(worst <= TOLERANCE, `max |sigmoid(ours) - LlamaRankingContext| = ${worst.toExponential(2)} <= ${TOLERANCE}`);
    t.same(order(ours), order(reference), "identical order");
    const logits = results.map((r) => r.score);
    const sorted = [...logits].sort((x, y) => y - x);
    const gaps = sorted.slice(1).map((score, i) => (sorted[i] ?? 0) - score);
    t.ok(Math.min(...gaps) > 10 * TOLERANCE, `the fixture's logits are distinct (smallest gap ${Math.min(...gaps).toExponential(2)}), so the order is meaningful`);
    t.ok(Math.max(...logits) - Math.min(...logits) > 0.5, `logits spread over ${(Math.max(...logits) - Math.min(...logits)).toFixed(2)}`);
  });

  t.test("rerank: batching and concurrency do not change a score", async (t) => {
    const engine = await RerankEngine.load({
      modelPath: rerankPath, modelName: "r", threads: THREADS, batchTokens: 128, batchSequences: 3, maxTokens: 512, maxDocuments: 64, truncate: false,
    });
    t.teardown(() => engine.dispose());
    const alone: number[] = [];
    for (const document of documents) alone.push((await engine.rerank(query, [document]))[0]?.score ?? NaN);
    const together = (await engine.rerank(query, documents)).map((r) => r.score);
    t.ok(maxAbsDiff(together, alone) <= TOLERANCE, `one request of ${documents.length} (3 pairs / 128 tokens per decode) vs each alone: ${maxAbsDiff(together, alone).toExponential(2)}`);
    // 8 concurrent requests share the queue and the decodes.
    const concurrent = await Promise.all(Array.from({ length: 8 }, (_, k) => engine.rerank(query, documents.slice(k % 4, (k % 4) + 6))));
    for (const [k, response] of concurrent.entries()) {
      t.ok(maxAbsDiff(response.map((r) => r.score), alone.slice(k % 4, (k % 4) + 6)) <= TOLERANCE, `client ${k}`);
    }
  });

  t.test("rerank: flash attention off (the bench oracle's setting) reaches llama.cpp", async (t) => {
    const load = (flashAttention?: boolean) => RerankEngine.load({
      modelPath: rerankPath, modelName: "r", threads: THREADS, batchTokens: 128, batchSequences: 3, maxTokens: 512, maxDocuments: 64, truncate: false,
      ...(flashAttention === undefined ? {} : { flashAttention }),
    });
    const [plain, off] = [await load(), await load(false)];
    t.teardown(async () => { await plain.dispose(); await off.dispose(); });
    const scores = async (engine: RerankEngine) => (await engine.rerank(query, documents)).map((r) => r.score);
    const [a, b, again] = [await scores(plain), await scores(off), await scores(off)];
    // CPU flash attention rounds Q, K and V to F16: the default's scores move by a few 1e-3 of a logit.
    t.ok(maxAbsDiff(a, b) > 0, `another arithmetic than the default (|diff| ${maxAbsDiff(a, b).toExponential(2)})`);
    const spread = Math.max(...a) - Math.min(...a);
    t.ok(maxAbsDiff(a, b) < 0.01 * spread, `within 1% of the logits' spread (${spread.toFixed(2)})`);
    t.same(order(a), order(b), "same order");
    t.same(again, b, "repeatable");
  });

  t.test("rerank limits are typed 400s naming the field; truncation keeps the query", async (t) => {
    const engine = await RerankEngine.load({
      modelPath: rerankPath, modelName: "r", threads: 1, batchTokens: 256, batchSequences: 4, maxTokens: 64, maxDocuments: 4, truncate: false,
    });
    t.teardown(() => engine.dispose());
    const long = "palabra ".repeat(200);
    const expectError = async (promise: Promise<unknown>, code: string, field: string): Promise<void> => {
      const error = await promise.then(() => null, (e: unknown) => e);
      t.ok(error instanceof EngineError, `${field}: EngineError`);
      if (error instanceof EngineError) {
        t.equal(error.code, code);
        t.equal(error.status, 400);
        t.equal(error.field, field);
      }
    };
    await expectError(engine.rerank(query, []), "invalid_request", "documents");
    await expectError(engine.rerank(query, ["a", "b", "c", "d", "e"]), "invalid_request", "documents");
    await expectError(engine.rerank(query, ["a", long]), "context_length_exceeded", "documents[1]");
    await expectError(engine.rerank(query, ["a", long], { field: "texts" }), "context_length_exceeded", "texts[1]");
    await expectError(engine.rerank(long, ["a"]), "context_length_exceeded", "query");

    const [short, cut] = await engine.rerank(query, ["a", long], { truncate: true });
    t.equal(short?.truncated, false);
    t.equal(cut?.truncated, true);
    t.equal(cut?.tokens, 64, "a cut pair fills the limit exactly");

    await t.rejects(RerankEngine.load({ modelPath: e5Path, modelName: "e5", threads: 1, batchTokens: 64, batchSequences: 2, maxDocuments: 4, truncate: false }),
      { message: /not a reranker/ });
    await engine.dispose();
    await t.rejects(engine.rerank(query, ["a"]), { code: "shutting_down", status: 503 });
  });

  t.test("a Qwen3-Reranker: its rerank template, last-token rank pooling of a causal model, probabilities", async (t) => {
    const engine = await RerankEngine.load({
      modelPath: qwen3RerankPath, modelName: "qwen3-reranker", threads: THREADS, batchTokens: 1024, batchSequences: 4, maxTokens: 512, maxDocuments: 64, truncate: true,
    });
    t.teardown(() => engine.dispose());
    t.equal(engine.describe().architecture, "qwen3");
    t.equal(engine.scoreKind, "probability", "llama.cpp applies a softmax over the yes/no head");
    t.same(engine.format, { kind: "template", template: QWEN3_RERANK_TEMPLATE });
    const model = await llama.loadModel({ modelPath: qwen3RerankPath, vocabOnly: true });
    t.teardown(() => model.dispose());
    // As llama-server: the whole filled-in template tokenized at once, special tokens parsed, none added.
    const prompt = fillRerankTemplate(QWEN3_RERANK_TEMPLATE, query, documents[0] ?? "");
    t.same(Array.from(engine.pairTokens(query, documents[0] ?? "")), model.tokenize(prompt, true));
    t.equal(engine.pairTokens(query, "x")[0], 151644, "starts with <|im_start|> (parsed, not spelled out)");

    const together = await engine.rerank(query, documents);
    for (const r of together) t.ok(r.score > 0 && r.score < 1, `P(yes) of document ${r.index} = ${r.score.toFixed(4)}`);
    const alone: number[] = [];
    for (const document of documents.slice(0, 5)) alone.push((await engine.rerank(query, [document]))[0]?.score ?? NaN);
    // A causal model with a KV cache: each pair is its own sequence in the shared decode, cleared between decodes.
    const worst = maxAbsDiff(together.slice(0, 5).map((r) => r.score), alone);
    t.ok(worst <= TOLERANCE, `batched vs alone: ${worst.toExponential(2)}`);
    await t.rejects(engine.rerank(query, ["palabra ".repeat(600)]), { code: "context_length_exceeded", field: "documents[0]" }, "no truncation for templates");
  });

  t.test("pair formats: pure functions", async (t) => {
    const special = { bos: 0, eos: 2, sep: 2, addBos: true, addEos: true, addSep: true };
    const format = pairFormat(special, null);
    t.same(format, { kind: "special", bos: 0, eos: 2, sep: 2 });
    if (format.kind === "special") t.same(Array.from(assemblePair(format, Uint32Array.of(7, 8), Uint32Array.of(9))), [0, 7, 8, 2, 2, 9, 2]);
    // WordPiece (bert-base): no add_eos in the vocab, add_sep: [CLS] q [SEP] d.
    const bert = pairFormat({ bos: 101, eos: -1, sep: 102, addBos: true, addEos: false, addSep: true }, null);
    if (bert.kind === "special") t.same(Array.from(assemblePair(bert, Uint32Array.of(7), Uint32Array.of(9))), [101, 7, 102, 9]);
    t.same(pairFormat(special, "<q>{query}</q><d>{document}</d>"), { kind: "template", template: "<q>{query}</q><d>{document}</d>" });
    t.equal(fillRerankTemplate("Q={query} D={document}", "$& {document}", "x"), "Q=$& x D=x", "as string_replace_all: query first, then every {document}");
    t.equal(toProbability(0), 0.5);
  });
}
