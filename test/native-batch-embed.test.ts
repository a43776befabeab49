// The native batch embedder against real GGUF files: its tokens and vectors must match node-llama-cpp's
// own embedding path, batching must not change any vector, and misuse must give Errors, not crashes.
import t from "tap";
import { TEST_THREADS } from "./helpers/threads.js";
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import { ensureNativeEmbedAddon } from "../scripts/build-native.ts";
import { ensureTestModels } from "../scripts/make-test-models.ts";
import { NativeBatchEmbedder } from "../src/engine/native/batchEmbedder.ts";

const THREADS = Number(TEST_THREADS);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] ?? NaN) - (b[i] ?? NaN)));
  return max;
}

function norm(v: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += (v[i] ?? 0) ** 2;
  return Math.sqrt(s);
}

async function load(
  modelPath: string,
  maxSequences: number,
  batchTokens: number,
  addonFile: string,
  flashAttention?: boolean,
  maxTokensPerText?: number,
): Promise<NativeBatchEmbedder> {
  const options = {
    modelPath, threads: THREADS, maxSequences, batchTokens,
    ...(flashAttention === undefined ? {} : { flashAttention }),
    ...(maxTokensPerText === undefined ? {} : { maxTokensPerText }),
  };
  const result = await NativeBatchEmbedder.tryLoad(options, addonFile);
  if ("unavailable" in result) throw new Error(`native embedder unavailable: ${result.unavailable}`);
  return result.embedder;
}

// ~40 texts of varied length (1 .. ~120 words), deterministic.
const words = (
  "the of and to in is that for it as with was on be by this are from at or an which have not " +
  "embedding vector sentence model token batch decode sequence pooling cosine similarity attention layer " +
  "Ísland café naïve coöperate señor über straße 東京 😀 12345 3.14 e-mail user@example.com"
).split(" ");
let seed = 0x2545f491;
const random = (): number => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 2 ** 32;
};
const texts: string[] = [
  "¿Qué significa 'ímihí'?",
  "Hello, world!",
  "a",
  "The quick brown fox jumps over the lazy dog.",
  ...Array.from({ length: 36 }, (_, i) => {
    const n = i % 6 === 5 ? 80 + Math.floor(random() * 40) : 1 + Math.floor(random() * 25);
    return Array.from({ length: n }, () => words[Math.floor(random() * words.length)] ?? "x").join(" ");
  }),
];

const addonFile = await ensureNativeEmbedAddon();
if (addonFile === null) {
  t.fail("the native batch embedding addon could not be built (see the [build-native] line above)");
} else {
  const { embed: modelPath } = await ensureTestModels();
  // node-llama-cpp first: its getLlama() registers the ggml backends this addon shares.
  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath });
  t.teardown(() => model.dispose());

  // Default settings (flash attention "auto", as in llama-server).
  const embedder = await load(modelPath, 64, 2048, addonFile);
  t.teardown(() => embedder.dispose());
  const tokenLists = texts.map((text) => embedder.tokenize(text));
  // Without flash attention a text's vector does not depend on what else is in its batch (to float
  // rounding); flash attention's blocked softmax changes the rounding with the batch (~1e-5).
  const exact = await load(modelPath, 64, 2048, addonFile, false);
  t.teardown(() => exact.dispose());
  // 3 texts per decode and a budget that fits the longest text alone: many decodes, different packings.
  const longest = Math.max(...tokenLists.map((tokens) => tokens.length));
  const small = await load(modelPath, 3, 3 * Math.ceil(longest / 3), addonFile, false);
  t.teardown(() => small.dispose());
  // A batch far smaller than most texts: it must not cut any text (longer ones are decoded alone).
  const tinyBatch = await load(modelPath, 3, 16, addonFile, false);
  t.teardown(() => tinyBatch.dispose());

  t.test("tryLoad reports what it loaded, and reports unavailability instead of throwing", async (t) => {
    t.equal(embedder.dimension, model.embeddingVectorSize);
    t.equal(embedder.trainContextSize, model.trainContextSize);
    t.equal(embedder.maxSequences, 64);
    t.equal(embedder.batchTokens, 2048);
    t.equal(embedder.contextTokens, 2048);
    t.equal(embedder.maxTokensPerText, model.trainContextSize, "the model's trained context by default");
    t.equal(tinyBatch.batchTokens, 16);
    t.equal(tinyBatch.maxTokensPerText, model.trainContextSize, "a small batch does not lower the per-text limit");
    t.equal(tinyBatch.contextTokens, 3 * Math.ceil(model.trainContextSize / 3), "the context holds the longest text, rounded up to the sequences");
    const limited = await load(modelPath, 4, 64, addonFile, false, 100);
    t.teardown(() => limited.dispose());
    t.equal(limited.maxTokensPerText, 100, "maxTokensPerText option (sentence-transformers' max_seq_length)");
    t.equal(limited.contextTokens, 100);
    await t.rejects(limited.embed([new Uint32Array(101).fill(tokenLists[1]?.[1] ?? 1)]), { message: /more than the maximum of 100/ });
    const capped = await load(modelPath, 4, 64, addonFile, false, 100_000);
    t.teardown(() => capped.dispose());
    t.equal(capped.maxTokensPerText, model.trainContextSize, "capped at the trained context");
    t.equal(embedder.poolingType, "mean");

    const missingModel = await NativeBatchEmbedder.tryLoad({ modelPath: "/nonexistent.gguf", threads: 1, maxSequences: 1, batchTokens: 64 }, addonFile);
    t.ok("unavailable" in missingModel, "missing model file");
    const missingAddon = await NativeBatchEmbedder.tryLoad({ modelPath, threads: 1, maxSequences: 1, batchTokens: 64 }, "/nonexistent/batch_embed.node");
    t.ok("unavailable" in missingAddon, "missing addon");
    const badOptions = await NativeBatchEmbedder.tryLoad({ modelPath, threads: 0, maxSequences: 1, batchTokens: 64 }, addonFile);
    t.ok("unavailable" in badOptions, "invalid options");
  });

  t.test("tokenize adds [CLS] … [SEP] around node-llama-cpp's tokens, as llama-server does", async (t) => {
    const cls = model.tokens.bos;
    const sep = model.tokens.sep;
    t.not(cls, null);
    t.not(sep, null);
    for (const text of ["¿Qué significa 'ímihí'?", "Hello, world!", "  spaced   out  ", "Ísland 東京 😀 user@example.com 3.14", ...texts.slice(4, 10)]) {
      const expected = [cls, ...model.tokenize(text, true), sep];
      t.same(Array.from(embedder.tokenize(text)), expected, JSON.stringify(text));
    }
  });

  t.test("vectors match node-llama-cpp's embedding context", async (t) => {
    const context = await model.createEmbeddingContext({ threads: THREADS });
    t.teardown(() => context.dispose());
    const batched = await embedder.embed(tokenLists);
    t.equal(batched.length, texts.length);
    let worst = 0;
    for (let i = 0; i < texts.length; i++) {
      const reference = (await context.getEmbeddingFor(texts[i] ?? "")).vector;
      const vector = batched[i];
      t.ok(vector instanceof Float32Array && vector.length === embedder.dimension, `vector ${i} shape`);
      worst = Math.max(worst, maxAbsDiff(vector ?? [], reference));
    }
    // node-llama-cpp returns llama.cpp's pooled vector as is (not normalised), and so do we.
    t.ok(worst <= 1e-4, `max |native - node-llama-cpp| = ${worst.toExponential(2)} <= 1e-4`);
    const first = batched[0] ?? new Float32Array();
    t.ok(Math.abs(norm(first) - 1) > 1e-3, `vectors are not normalised (|v| = ${norm(first).toFixed(4)})`);
  });

  t.test("a batch gives the same vectors as each text alone, in input order", async (t) => {
    t.ok(longest > 100 && small.batchTokens < 2 * longest, `texts of up to ${longest} tokens; small packs into ${small.batchTokens}-token decodes`);
    const alone: Float32Array[] = [];
    for (const tokens of tokenLists) {
      const [vector] = await exact.embed([tokens]);
      if (vector === undefined) throw new Error("no vector");
      alone.push(vector);
    }
    const worstAgainstAlone = (vectors: readonly Float32Array[]): number =>
      Math.max(...vectors.map((vector, i) => maxAbsDiff(vector, alone[i] ?? [])));

    const batched = await exact.embed(tokenLists);
    t.equal(batched.length, texts.length);
    const worstBatched = worstAgainstAlone(batched);
    t.ok(worstBatched <= 1e-5, `one 64-sequence decode: max diff ${worstBatched.toExponential(2)} <= 1e-5`);
    const worstSmall = worstAgainstAlone(await small.embed(tokenLists));
    t.ok(worstSmall <= 1e-5, `3-sequence / ${small.batchTokens}-token decodes: max diff ${worstSmall.toExponential(2)} <= 1e-5`);
    const worstTinyBatch = worstAgainstAlone(await tinyBatch.embed(tokenLists));
    t.ok(worstTinyBatch <= 1e-5, `16-token batches (longer texts alone): max diff ${worstTinyBatch.toExponential(2)} <= 1e-5`);
    const stats = tinyBatch.lastStats();
    const totalTokens = tokenLists.reduce((sum, tokens) => sum + tokens.length, 0);
    t.same({ texts: stats.texts, tokens: stats.tokens }, { texts: texts.length, tokens: totalTokens }, "every token decoded once");
    t.ok(stats.decodes >= tokenLists.filter((tokens) => tokens.length > 16).length, `${stats.decodes} decodes: each long text alone`);
    t.ok(stats.decodeMs > 0 && stats.decodeMs >= stats.packMs && stats.readMs >= 0, "per-phase timers");

    // A text of exactly the model's limit, with a 16-token batch and with a large one.
    const filler = tokenLists[1]?.[1] ?? 1;
    const full = new Uint32Array(tinyBatch.maxTokensPerText).fill(filler);
    full[0] = tokenLists[1]?.[0] ?? 101;
    full[full.length - 1] = tokenLists[1]?.at(-1) ?? 102;
    const [fullTiny] = await tinyBatch.embed([tokenLists[0] ?? new Uint32Array(), full]).then((v) => v.slice(1));
    const [fullExact] = await exact.embed([full]);
    const fullDiff = maxAbsDiff(fullTiny ?? [], fullExact ?? []);
    t.ok(fullDiff <= 1e-5, `a ${full.length}-token text: max diff ${fullDiff.toExponential(2)} <= 1e-5`);

    const worstDefault = worstAgainstAlone(await embedder.embed(tokenLists));
    t.ok(worstDefault <= 1e-4, `default settings (flash attention auto): max diff ${worstDefault.toExponential(2)} <= 1e-4`);

    // Order: reversed input gives reversed output; distinct texts give distinct vectors.
    const reversed = (await exact.embed([...tokenLists].reverse())).reverse();
    const worstReversed = worstAgainstAlone(reversed);
    t.ok(worstReversed <= 1e-5, `reversed input: max diff ${worstReversed.toExponential(2)} <= 1e-5`);
    for (let i = 1; i < texts.length; i++) {
      if (texts[i] === texts[i - 1]) continue;
      t.ok(maxAbsDiff(batched[i] ?? [], batched[i - 1] ?? []) > 1e-3, `text ${i} differs from text ${i - 1}`);
    }

    // The same text twice in one batch gives the same vector twice.
    const [a, b] = await exact.embed([tokenLists[3] ?? new Uint32Array(), tokenLists[3] ?? new Uint32Array()]);
    t.ok(maxAbsDiff(a ?? [], b ?? []) <= 1e-6, "duplicate texts in one batch");
  });

  t.test("concurrent calls are queued and each gets its own results", async (t) => {
    const expected = await exact.embed(tokenLists);
    const parts = await Promise.all([
      exact.embed(tokenLists.slice(0, 10)),
      small.embed(tokenLists.slice(10, 20)),
      exact.embed(tokenLists.slice(20, 30)),
      exact.embed(tokenLists.slice(30)),
    ]);
    const all = parts.flat();
    t.equal(all.length, texts.length);
    let worst = 0;
    for (let i = 0; i < texts.length; i++) worst = Math.max(worst, maxAbsDiff(all[i] ?? [], expected[i] ?? []));
    t.ok(worst <= 1e-5, `max diff ${worst.toExponential(2)}`);
  });

  t.test("the event loop keeps running while a batch decodes", async (t) => {
    const long = Array.from({ length: 48 }, () => tokenLists[9] ?? new Uint32Array());
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const started = performance.now();
    await embedder.embed(long);
    const elapsed = performance.now() - started;
    clearInterval(timer);
    t.ok(ticks > 0 || elapsed < 2, `${ticks} timer ticks during a ${elapsed.toFixed(1)} ms embed`);
  });

  t.test("bad input rejects with an Error and the embedder keeps working", async (t) => {
    const [before] = await embedder.embed([tokenLists[1] ?? new Uint32Array()]);
    const tooLong = new Uint32Array(embedder.maxTokensPerText + 1).fill(tokenLists[1]?.[1] ?? 1);
    await t.rejects(embedder.embed([tokenLists[0] ?? new Uint32Array(), tooLong]), { message: /more than the maximum/ });
    const smallTooLong = new Uint32Array(small.maxTokensPerText + 1).fill(tokenLists[1]?.[1] ?? 1);
    await t.rejects(small.embed([smallTooLong]), { message: /more than the maximum/ }, "longer than the model reads");
    await t.rejects(embedder.embed([new Uint32Array(0)]), { message: /no tokens/ });
    await t.rejects(embedder.embed([Uint32Array.of(101, 0xfffffff, 102)]), { message: /outside the vocabulary/ });
    t.same(await embedder.embed([]), []);

    const [after] = await embedder.embed([tokenLists[1] ?? new Uint32Array()]);
    t.ok(maxAbsDiff(after ?? [], before ?? []) <= 1e-6, "still works after errors");
  });

  t.test("dispose frees the embedder; later calls reject", async (t) => {
    const temp = await load(modelPath, 4, 256, addonFile);
    const pending = temp.embed(tokenLists.slice(0, 8)); // queued before dispose: completes
    const disposed = temp.dispose();
    t.equal((await pending).length, 8);
    await disposed;
    t.equal(temp.disposed, true);
    await t.rejects(temp.embed([tokenLists[0] ?? new Uint32Array()]), { message: /disposed/ });
    t.throws(() => temp.tokenize("hello"), { message: /disposed/ });
    await temp.dispose(); // idempotent
  });
}
