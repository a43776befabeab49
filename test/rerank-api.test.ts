// Reranking through every API shape on the real fixtures, with several models loaded at once (chat,
// MiniLM as the default embedder, an e5-like XLM-R embedder, a bge-reranker-like cross-encoder): the Cohere
// SDK (v1 and v2) and LangChain's CohereRerank pointed at the service, Jina/llama-server-style and TEI-style
// raw requests, the seed API's /api/llm/rerank; scores equal the engine's own, in each API's convention.
import t from "tap";
import { linkSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { CohereClient } from "cohere-ai";
import { CohereRerank } from "@langchain/cohere";
import { Document } from "@langchain/core/documents";
import { ensureMultilingualTestModels } from "../scripts/make-test-models.js";
import { sigmoid } from "../src/http/rerankResults.js";
import { postJson, startTestService } from "./helpers/service.js";

const multilingual = await ensureMultilingualTestModels();
// A models directory of its own: the fixtures under manifest names, the e5-like model with e5's prompts,
// the reranker with a short pair limit (so a too long pair is cheap to make).
const dir = mkdtempSync(path.join(os.tmpdir(), "bora-rerank-"));
const entry = (name: string, kind: string, file: string, extra: object) => {
  linkSync(file, path.join(dir, `${name}.gguf`));
  return { name, kind, file: `${name}.gguf`, url: `https://example.invalid/${name}.gguf`, size: statSync(file).size, sha256: null, ...extra };
};
writeFileSync(path.join(dir, "models.json"), JSON.stringify({
  models: [
    entry("e5-tiny", "embedding", multilingual.embed, {
      prompts: { query: "query: ", passage: "passage: " },
      inputTypes: { search_query: "query", search_document: "passage", classification: "query", clustering: "query" },
    }),
    entry("bge-reranker-tiny", "rerank", multilingual.rerank, { aliases: ["bge-reranker-v2-m3-test"], maxTokens: 96 }),
  ],
}));
const service = await startTestService({ MODELS_DIR: dir, EMBED_MODELS: "e5-tiny", RERANK_MODELS: "bge-reranker-tiny", RERANK_MAX_DOCUMENTS: "8" });
const base = await service.listen();
t.teardown(() => service.close());
const models = service.engines.models;
const reranker = models.defaultOf("rerank")!;
const RERANKER = reranker.name;

const query = "¿Dónde vive el jaguar?";
const documents = [
  "El jaguar vive en la selva amazónica.",
  "La receta lleva harina, huevos y azúcar.",
  "Los jaguares cazan de noche cerca de los ríos.",
  "Mañana lloverá en Lima.",
  "El yaguareté es el felino más grande de América.",
];
/** The engine's own logits, in request order: what every API formats. */
const logits = (await reranker.engine.rerank(query, documents)).map((r) => r.score);
const expectedOrder = documents.map((_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
const close = (a: number, b: number) => Math.abs(a - b) < 1e-6;

t.test("several models at once, each of its kind; the reranker is listed everywhere", async (t) => {
  t.same(models.list().map((m) => m.kind), ["chat", "embedding", "embedding", "rerank"]);
  t.equal(service.engines.embed, models.embedding.engine, "the default embedder is still EMBED_MODEL");
  t.equal(reranker.engine.scoreKind, "logit", "a bert/xlm-roberta head gives logits");
  t.equal(reranker.engine.maxTokensPerPair, 96, "the manifest's maxTokens is the pair limit");
  t.equal(models.resolve("rerank", "bge-reranker-v2-m3-test"), reranker, "by alias");
  const tags = await (await fetch(`${base}/api/tags`)).json() as { models: { name: string }[] };
  t.same(tags.models.map((m) => m.name), models.list().map((m) => m.name));
  const show = await postJson(service.app, "/api/show", { model: RERANKER });
  t.same(show.json<{ capabilities: string[] }>().capabilities, ["rerank"]);
  const status = await (await fetch(`${base}/api/status`)).json() as { models: { name: string; kind: string; max_tokens?: number }[] };
  t.match(status.models.at(-1), { name: RERANKER, kind: "rerank", max_tokens: reranker.engine.maxTokensPerPair });
  const e5 = await postJson(service.app, "/v1/embeddings", { model: models.ofKind("embedding")[1]!.name, input: "hola" });
  t.equal(e5.statusCode, 200, "the second embedding model answers by its name");
  t.equal(e5.json<{ data: { embedding: number[] }[] }>().data[0]!.embedding.length, models.ofKind("embedding")[1]!.engine.dimension);
  // e5's prompts from its manifest entry: input_type search_query reads "query: hola".
  const asQuery = await postJson(service.app, "/v1/embeddings", { model: "e5-tiny", input: "hola", input_type: "search_query" });
  const pasted = await postJson(service.app, "/v1/embeddings", { model: "e5-tiny", input: "query: hola" });
  t.same(asQuery.json<{ data: { embedding: number[] }[] }>().data[0]!.embedding, pasted.json<{ data: { embedding: number[] }[] }>().data[0]!.embedding);
});

t.test("Cohere SDK (v1 and v2): relevance_score is the probability, best first, top_n, documents", async (t) => {
  const cohere = new CohereClient({ token: "not-needed", environment: base });
  const r = await cohere.rerank({ model: RERANKER, query, documents, topN: 3, returnDocuments: true });
  t.same(r.results.map((x) => x.index), expectedOrder.slice(0, 3));
  for (const x of r.results) {
    t.ok(close(x.relevanceScore, sigmoid(logits[x.index]!)), `document ${x.index}: sigmoid of the logit`);
    t.equal(x.document?.text, documents[x.index]);
  }
  t.equal(r.meta?.billedUnits?.searchUnits, 1);
  const v2 = await cohere.v2.rerank({ model: RERANKER, query, documents, topN: 2 });
  t.same(v2.results.map((x) => x.index), expectedOrder.slice(0, 2));
  const unknown = await cohere.rerank({ model: "rerank-v3.5", query, documents }).then(() => null, (e: unknown) => e as { statusCode?: number; body?: { error?: { message?: string } } });
  t.equal(unknown?.statusCode, 404);
  t.match(unknown?.body?.error?.message, new RegExp(`rerank-v3.5.*'${RERANKER}'`));
});

t.test("LangChain's CohereRerank reorders documents and sets relevanceScore", async (t) => {
  // LangChain takes a client pointed anywhere (it has no base-URL field); its own copy of cohere-ai types it apart.
  const client = new CohereClient({ token: "not-needed", environment: base }) as unknown as NonNullable<ConstructorParameters<typeof CohereRerank>[0]>["client"];
  const rerank = new CohereRerank({ model: RERANKER, client, topN: 2 });
  const docs = documents.map((text, i) => new Document({ pageContent: text, metadata: { i } }));
  const kept = await rerank.compressDocuments(docs, query);
  t.same(kept.map((d) => d.metadata.i), expectedOrder.slice(0, 2));
  t.ok(close(kept[0]!.metadata.relevanceScore as number, sigmoid(logits[expectedOrder[0]!]!)));
  const ranked = await rerank.rerank(documents, query, { topN: 5 });
  t.same(ranked.map((x) => x.index), expectedOrder);
});

t.test("Jina / llama-server shape on /v1/rerank and /rerank: {text} documents, raw_scores, usage", async (t) => {
  for (const url of ["/v1/rerank", "/rerank"]) {
    const res = await postJson(service.app, url, { model: RERANKER, query, documents: documents.map((text) => ({ text })), top_n: 2, return_documents: true });
    t.equal(res.statusCode, 200, url);
    const body = res.json<{ model: string; object: string; results: { index: number; relevance_score: number; document: { text: string } }[]; usage: { prompt_tokens: number; total_tokens: number } }>();
    t.equal(body.model, RERANKER);
    t.equal(body.object, "list");
    t.same(body.results.map((x) => x.index), expectedOrder.slice(0, 2));
    t.same(body.results.map((x) => x.document.text), expectedOrder.slice(0, 2).map((i) => documents[i]));
    const pairTokens = documents.reduce((sum, d) => sum + reranker.engine.pairTokens(query, d).length, 0);
    t.equal(body.usage.prompt_tokens, pairTokens, "usage counts every pair's tokens");
  }
  // No model named: the default reranker. raw_scores: llama-server's convention (the head's logit).
  const raw = (await postJson(service.app, "/v1/rerank", { query, documents, raw_scores: true })).json<{ results: { index: number; relevance_score: number }[] }>();
  t.same(raw.results.map((x) => x.index), expectedOrder);
  for (const x of raw.results) t.ok(close(x.relevance_score, logits[x.index]!));
});

t.test("TEI shape on /rerank: texts, a bare array, sigmoid unless raw_scores, return_text", async (t) => {
  const res = await postJson(service.app, "/rerank", { query, texts: documents, return_text: true });
  t.equal(res.statusCode, 200);
  const body = res.json<{ index: number; score: number; text: string }[]>();
  t.ok(Array.isArray(body));
  t.same(body.map((x) => x.index), expectedOrder);
  for (const x of body) {
    t.ok(close(x.score, sigmoid(logits[x.index]!)));
    t.equal(x.text, documents[x.index]);
  }
  const raw = (await postJson(service.app, "/rerank", { query, texts: documents, raw_scores: true })).json<{ index: number; score: number; text?: string }[]>();
  for (const x of raw) {
    t.ok(close(x.score, logits[x.index]!));
    t.notOk("text" in x);
  }
});

t.test("the seed API's /api/llm/rerank: score and raw_score, best first", async (t) => {
  const res = await postJson(service.app, "/api/llm/rerank", { query, documents, top_n: 4, return_documents: true });
  t.equal(res.statusCode, 200);
  const body = res.json<{ model: string; tokens: number; truncated: number; results: { index: number; score: number; raw_score: number; document: string }[] }>();
  t.equal(body.model, RERANKER);
  t.equal(body.truncated, 0);
  t.same(body.results.map((x) => x.index), expectedOrder.slice(0, 4));
  for (const x of body.results) {
    t.ok(close(x.raw_score, logits[x.index]!));
    t.ok(close(x.score, sigmoid(x.raw_score)));
    t.equal(x.document, documents[x.index]);
  }
  const bad = await postJson(service.app, "/api/llm/rerank", { query, documents, model: models.chat.name });
  t.equal(bad.statusCode, 400);
  t.match(bad.json(), { error: { code: "model_not_found", field: "model", message: /is a chat model, not a rerank model/ } });
});

t.test("limits: documents per request and tokens per pair, each API's 4xx", async (t) => {
  const nine = Array.from({ length: 9 }, (_, i) => `documento ${i}`);
  const cohereShape = await postJson(service.app, "/v1/rerank", { query, documents: nine });
  t.equal(cohereShape.statusCode, 400);
  t.match(cohereShape.json(), { error: { param: "documents", message: /9 documents.*at most 8/ } });
  const teiMany = await postJson(service.app, "/rerank", { query, texts: nine });
  t.equal(teiMany.statusCode, 413);
  t.match(teiMany.json(), { error: /batch size 9 > maximum allowed batch size 8/, error_type: "Validation" });

  const long = "jaguar ".repeat(reranker.engine.maxTokensPerPair);
  const teiLong = await postJson(service.app, "/rerank", { query, texts: ["corto", long] });
  t.equal(teiLong.statusCode, 413, "TEI refuses a pair over the limit unless truncate");
  t.match(teiLong.json(), { error: /texts\[1\]/, error_type: "Validation" });
  const teiCut = await postJson(service.app, "/rerank", { query, texts: ["corto", long], truncate: true });
  t.equal(teiCut.statusCode, 200);
  const cut = await postJson(service.app, "/api/llm/rerank", { query, documents: ["corto", long] });
  t.equal(cut.json<{ truncated: number }>().truncated, 1, "the seed API cuts a long document and says so");
  const refused = await postJson(service.app, "/v1/rerank", { query, documents: ["corto", long], truncate: false });
  t.equal(refused.statusCode, 400);
  t.match(refused.json(), { error: { param: "documents[1]", code: "context_length_exceeded" } });
  const longQuery = await postJson(service.app, "/v1/rerank", { query: long, documents: ["corto"] });
  t.equal(longQuery.statusCode, 400);
  t.match(longQuery.json(), { error: { param: "query" } });
  const teiBadModel = await postJson(service.app, "/rerank", { query, texts: ["a"], model: "bge-reranker-large" });
  t.equal(teiBadModel.statusCode, 422);
  t.match(teiBadModel.json(), { error: /bge-reranker-large/, error_type: "Validation" });
  const both = await postJson(service.app, "/v1/rerank", { query, texts: ["a"] });
  t.equal(both.statusCode, 400, "texts is TEI's field, on /rerank only");
});
