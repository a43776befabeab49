// Issue 25's retrieval lifecycle over real HTTP on the tiny fixtures: a 1-text query during a bulk request
// answers within 1.5x its idle latency plus one decode (fair batching, not FIFO); a client that leaves
// frees the embedder within one decode; a flood beyond the queue's bound gets 429s with Retry-After and
// nothing else, the queue never past its bound; embed, rerank and tokenize past their deadline answer 504.
// Every timing is judged as a ratio to a figure measured in the same run (idle latency, decode time).
import t from "tap";
import { ensureMultilingualTestModels } from "../scripts/make-test-models.js";
import { buildApp } from "../src/http/app.js";
import { startTestService } from "./helpers/service.js";

const multilingual = await ensureMultilingualTestModels();
const service = await startTestService({ RERANK_MODELS: multilingual.rerank, RERANK_MAX_DOCUMENTS: "2048" });
const base = await service.listen();
t.teardown(() => service.close());
const embedder = service.engines.embed;

const words = "el jaguar vive en la selva amazónica y caza de noche entre los árboles altos del bosque lluvioso".split(" ");
/** ~45 words, as the bulk request. */
const passage = (i: number) => Array.from({ length: 45 }, (_, j) => words[(i * 7 + j) % words.length]).join(" ");
const bulkTexts = Array.from({ length: 2048 }, (_, i) => passage(i));

const post = (path: string, body: unknown, signal?: AbortSignal) =>
  fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal });
const median = (values: readonly number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const quantile = (values: readonly number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * q))]!;

async function queryLatency(text: string): Promise<number> {
  const started = performance.now();
  const res = await post("/api/llm/embed", { texts: [text] });
  await res.json();
  if (res.status !== 200) throw new Error(`query: ${res.status}`);
  return performance.now() - started;
}

/** Decode start times of the embedder (the gaps between them are the decodes). */
function watchDecodes(): { starts: number[]; texts: number[]; stop: () => void } {
  const starts: number[] = [];
  const texts: number[] = [];
  const stop = embedder.onBatch((n) => { starts.push(performance.now()); texts.push(n); });
  return { starts, texts, stop };
}

const until = async (condition: () => boolean, timeoutMs = 30_000) => {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeoutMs) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 1));
  }
};

// Idle latency and decode time, measured first: the yardsticks of the ratios below.
for (let i = 0; i < 5; i++) await queryLatency("calentamiento");
const idle: number[] = [];
for (let i = 0; i < 15; i++) idle.push(await queryLatency(`¿dónde vive el jaguar? ${i}`));
const idleMs = median(idle);
const alone = watchDecodes();
const aloneStarted = performance.now();
const aloneRes = await post("/api/llm/embed", { texts: bulkTexts });
if (aloneRes.status !== 200) throw new Error(`bulk alone: ${aloneRes.status}`);
await aloneRes.arrayBuffer();
const bulkAloneMs = performance.now() - aloneStarted;
alone.stop();
const gaps = alone.starts.slice(1).map((s, i) => s - alone.starts[i]!);
const decodeMs = quantile(gaps, 0.9);
console.log(`# idle query ${idleMs.toFixed(2)} ms; bulk of 2048 alone ${bulkAloneMs.toFixed(0)} ms in ${alone.starts.length} decodes (p90 ${decodeMs.toFixed(2)} ms each)`);

t.test("a 1-text query during a 2,048-text request: <= 1.5x idle latency + one decode", async (t) => {
  const decodes = watchDecodes();
  t.teardown(decodes.stop);
  let bulkDone = false;
  const bulk = post("/api/llm/embed", { texts: bulkTexts }).then(async (res) => { await res.arrayBuffer(); bulkDone = true; return res.status; });
  // Past the bulk request's parsing and tokenization: its decodes are running.
  await until(() => decodes.starts.length >= 20);
  const during: number[] = [];
  for (let i = 0; i < 7; i++) during.push(await queryLatency(`¿qué come el jaguar? ${i}`));
  t.notOk(bulkDone, "every query ran while the bulk request was being embedded");
  t.equal(await bulk, 200);
  const target = 1.5 * idleMs + decodeMs;
  const ratio = median(during) / idleMs;
  t.comment(`during bulk: median ${median(during).toFixed(2)} ms (${ratio.toFixed(2)}x idle), target ${target.toFixed(2)} ms = 1.5 x ${idleMs.toFixed(2)} + ${decodeMs.toFixed(2)}; FIFO would wait ~${bulkAloneMs.toFixed(0)} ms`);
  t.ok(median(during) <= target, `median query during bulk ${median(during).toFixed(2)} ms <= ${target.toFixed(2)} ms`);
});

t.test("a bulk request whose client leaves frees the embedder: its waiting texts are dropped, the next query is fast", async (t) => {
  const decodes = watchDecodes();
  t.teardown(decodes.stop);
  const abort = new AbortController();
  const bulk = post("/api/llm/embed", { texts: bulkTexts }, abort.signal).catch((e: unknown) => e);
  await until(() => decodes.starts.length >= 10);
  abort.abort();
  await bulk;
  await until(() => embedder.queueStats().requests === 0, 5_000);
  const decodedAtDrop = decodes.texts.reduce((a, b) => a + b, 0);
  const batchesAtDrop = decodes.starts.length;
  const latency = await queryLatency("¿sigue ahí?");
  t.equal(decodes.starts.length, batchesAtDrop + 1, "after the drop, the only decode is the query's");
  t.equal(decodes.texts.at(-1), 1, "which holds the query alone");
  t.ok(decodedAtDrop < bulkTexts.length / 2, `${decodedAtDrop} of ${bulkTexts.length} texts decoded before the drop stopped the work`);
  t.same(embedder.queueStats(), { ...embedder.queueStats(), requests: 0, inputs: 0, tokens: 0 }, "nothing left queued");
  const next = [latency, await queryLatency("¿sigue ahí? 2"), await queryLatency("¿sigue ahí? 3")];
  const target = 1.5 * idleMs + decodeMs;
  t.ok(median(next) <= target, `the next queries: median ${median(next).toFixed(2)} ms <= ${target.toFixed(2)} ms (the first ${latency.toFixed(2)} ms)`);
});

t.test("past their deadline, embed, rerank and tokenize answer 504 in each API's shape, and drop their work", async (t) => {
  const deadlineMs = 100;
  const app = await buildApp({ state: service.state, bodyLimitBytes: 16 << 20, logger: false, retrievalTimeoutMs: deadlineMs });
  t.teardown(() => app.close());
  const longContent = "el jaguar vive en la selva amazónica y caza de noche. ".repeat(40_000);
  const cases: [string, unknown, (body: unknown) => boolean][] = [
    ["/api/llm/embed", { texts: bulkTexts }, (b) => (b as { error: { code: string } }).error.code === "deadline_exceeded"],
    ["/v1/embeddings", { input: bulkTexts }, (b) => (b as { error: { code: string; type: string } }).error.type === "timeout_error"],
    ["/api/embed", { model: embedder.modelName, input: bulkTexts }, (b) => typeof (b as { error: unknown }).error === "string"],
    ["/v1/rerank", { query: "¿dónde vive el jaguar?", documents: bulkTexts.slice(0, 2048) }, (b) => (b as { error: { code: string } }).error.code === "deadline_exceeded"],
    ["/api/llm/rerank", { query: "¿dónde vive el jaguar?", documents: bulkTexts.slice(0, 2048) }, (b) => (b as { error: { code: string } }).error.code === "deadline_exceeded"],
    ["/tokenize", { content: longContent }, (b) => (b as { error: { code: string } }).error.code === "deadline_exceeded"],
  ];
  for (const [url, body, shaped] of cases) {
    const started = performance.now();
    const res = await app.inject({ method: "POST", url, payload: body as object, headers: { "content-type": "application/json" } });
    const ms = performance.now() - started;
    t.equal(res.statusCode, 504, `${url}: 504 after ${ms.toFixed(0)} ms (deadline ${deadlineMs} ms)`);
    t.ok(shaped(res.json()), `${url}: the API's error shape: ${res.body.slice(0, 160)}`);
    await until(() => embedder.queueStats().requests === 0 && service.engines.models.defaultOf("rerank")!.engine.queueStats().requests === 0, 5_000);
  }
  const after: number[] = [];
  for (let i = 0; i < 5; i++) after.push(await queryLatency(`después ${i}`));
  t.ok(median(after) <= 1.5 * idleMs + decodeMs, `the embedder is free again: a query takes ${median(after).toFixed(2)} ms`);
});

t.test("a flood beyond the queue's bound: 200s and 429s with Retry-After, nothing else; the queue never passes its bound", async (t) => {
  const small = await startTestService({ RETRIEVAL_QUEUE_TEXTS: "256", EMBED_MAX_TEXTS: "64", WARMUP: "false" });
  t.teardown(() => small.close());
  const smallBase = await small.listen();
  const engine = small.engines.embed;
  let peakInputs = 0;
  const sample = () => { peakInputs = Math.max(peakInputs, engine.queueStats().inputs); };
  const stop = engine.onBatch(sample);
  t.teardown(stop);
  const heapBefore = process.memoryUsage().heapUsed;
  const requests = Array.from({ length: 60 }, (_, i) => fetch(`${smallBase}/v1/embeddings`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ input: bulkTexts.slice(i, i + 64) }),
  }).then(async (res) => { sample(); return { status: res.status, retryAfter: res.headers.get("retry-after"), body: await res.json() as { error?: { type?: string; code?: string } } }; }));
  const answers = await Promise.all(requests);
  const statuses = answers.map((a) => a.status);
  t.comment(`statuses: ${JSON.stringify(Object.fromEntries([...new Set(statuses)].map((s) => [s, statuses.filter((x) => x === s).length])))}; peak queued texts ${peakInputs}`);
  t.ok(statuses.every((s) => s === 200 || s === 429), "only 200 and 429");
  t.ok(statuses.filter((s) => s === 429).length >= 10, "the flood was refused beyond the bound");
  t.ok(statuses.filter((s) => s === 200).length >= 4, "the bound's worth was served");
  for (const refused of answers.filter((a) => a.status === 429)) {
    t.match(refused.retryAfter, /^[1-9]\d*$/, "Retry-After in whole seconds");
    t.match(refused.body, { error: { type: "rate_limit_error", code: "queue_full" } });
  }
  t.ok(peakInputs <= 256, `queued texts peaked at ${peakInputs} <= RETRIEVAL_QUEUE_TEXTS (256)`);
  t.same(engine.queueStats().inputs, 0, "all answered, nothing left queued");
  const grownMiB = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
  t.ok(grownMiB < 64, `heap grew ${grownMiB.toFixed(1)} MiB over the flood`);
});
