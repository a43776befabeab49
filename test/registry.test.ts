// The model registry with several models at once: two embedding models (the MiniLM fixture, and the
// same file under another name whose manifest entry has e5-style prompts) beside the chat model. Each is
// chosen by `model` in every API, the default stays EMBED_MODEL for the seed's requests, listings show
// every model, input_type / prompt_name apply the manifest's prefixes, unknown names list what is served.
import t from "tap";
import { linkSync, mkdtempSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import { Ollama } from "ollama";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { loadConfig } from "../src/config.js";
import { postJson, startTestService } from "./helpers/service.js";

const fixtures = await ensureTestModels();
const dir = mkdtempSync(path.join(os.tmpdir(), "bora-registry-"));
const SECOND = "minilm-e5-prompts";
linkSync(fixtures.embed, path.join(dir, `${SECOND}.gguf`));
writeFileSync(path.join(dir, "models.json"), JSON.stringify({
  models: [{
    name: SECOND, kind: "embedding", aliases: ["second-embedder"], file: `${SECOND}.gguf`, url: "https://example.invalid/second.gguf",
    size: statSync(fixtures.embed).size, sha256: null,
    prompts: { query: "query: ", passage: "passage: " },
    inputTypes: { search_query: "query", search_document: "passage", classification: "query", clustering: "query" },
  }],
}));

t.test("config: EMBED_MODEL stays first (the default) whatever EMBED_MODELS lists", async (t) => {
  t.same(loadConfig({}).embedModels, ["all-MiniLM-L6-v2"]);
  t.same(loadConfig({ EMBED_MODELS: "e5, all-MiniLM-L6-v2 ,x" }).embedModels, ["all-MiniLM-L6-v2", "e5", "x"]);
  t.same(loadConfig({ EMBED_MODEL: "a", EMBED_MODELS: "b" }).embedModels, ["a", "b"]);
  t.same(loadConfig({ RERANK_MODELS: "r1,r2" }).rerankModels, ["r1", "r2"]);
});

const service = await startTestService({ MODELS_DIR: dir, EMBED_MODELS: SECOND });
const base = await service.listen();
t.teardown(() => service.close());
const chatName = service.engines.models.chat.name;
const defaultName = service.engines.models.embedding.name;
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: "none" });
const ollama = new Ollama({ host: base });
const cosine = (a: readonly number[], b: readonly number[]) => a.reduce((s, v, i) => s + v * b[i]!, 0);

t.test("the registry holds the chat model, the default embedding model first, then the second", async (t) => {
  const list = service.engines.models.list();
  t.same(list.map((m) => [m.kind, m.name, m.isDefault]), [["chat", chatName, true], ["embedding", defaultName, true], ["embedding", SECOND, false]]);
  t.equal(defaultName, path.basename(fixtures.embed, ".gguf"), "EMBED_MODEL is the default");
  t.equal(service.engines.embed, list[1]!.engine, "engines.embed is the default's engine");
  t.not(list[1]!.engine, list[2]!.engine, "each embedding model has its own engine");
  for (const m of list) t.ok(m.memory.weightsBytes > 0, `${m.name}: weights memory estimated`);
});

t.test("every listing shows every model", async (t) => {
  t.same((await openai.models.list()).data.map((m) => m.id), [chatName, defaultName, SECOND]);
  t.equal((await openai.models.retrieve("second-embedder")).id, SECOND, "by alias");
  t.same((await ollama.list()).models.map((m) => m.name), [chatName, defaultName, SECOND]);
  t.same((await ollama.ps()).models.map((m) => m.name), [chatName, defaultName, SECOND]);
  t.same((await ollama.show({ model: SECOND })).capabilities, ["embedding"]);
  const status = await (await fetch(`${base}/api/status`)).json() as { embedding: { model: string }; models: { name: string; kind: string; default: boolean; prompts?: object; weights_bytes: number }[] };
  t.equal(status.embedding.model, defaultName);
  t.same(status.models.map((m) => [m.name, m.kind, m.default]), [[chatName, "chat", true], [defaultName, "embedding", true], [SECOND, "embedding", false]]);
  t.same(status.models[2]!.prompts, { query: "query: ", passage: "passage: " });
  const metrics = await (await fetch(`${base}/metrics`)).text();
  for (const name of [chatName, defaultName, SECOND]) t.match(metrics, new RegExp(`bora_model_info\\{model="${name}",kind="\\w+",default="(true|false)"\\} 1`));
});

t.test("each embedding model is chosen by model; none named: the default, as the seed's requests", async (t) => {
  const seedDefault = await postJson(service.app, "/api/llm/embed", { texts: ["hola mundo"] });
  t.equal(seedDefault.json<{ model: string }>().model, defaultName);
  const seedSecond = await postJson(service.app, "/api/llm/embed", { texts: ["hola mundo"], model: "second-embedder" });
  t.equal(seedSecond.json<{ model: string }>().model, SECOND);
  const o = await openai.embeddings.create({ model: SECOND, input: "hola" });
  t.equal(o.model, SECOND);
  t.equal((await openai.embeddings.create({ model: defaultName, input: "hola" })).model, defaultName);
  t.equal((await ollama.embed({ model: SECOND, input: "hola" })).model, SECOND);
  // The same weights under two names: without a prompt the vectors agree, which shows the prompt is the only difference below.
  t.ok(cosine(seedDefault.json<{ embeddings: number[][] }>().embeddings[0]!, seedSecond.json<{ embeddings: number[][] }>().embeddings[0]!) > 0.9999);
});

t.test("input_type and prompt_name put the model's own prefix before each text", async (t) => {
  const plain = async (text: string) => (await openai.embeddings.create({ model: SECOND, input: text, encoding_format: "float" })).data[0]!.embedding;
  // The OpenAI SDK sends fields it does not know as they are (Python: extra_body={"input_type": ...}).
  const query = await openai.embeddings.create({ model: SECOND, input: "¿dónde vive el jaguar?", encoding_format: "float", input_type: "search_query" } as OpenAI.EmbeddingCreateParams);
  t.ok(cosine(query.data[0]!.embedding, await plain("query: ¿dónde vive el jaguar?")) > 0.99999, "input_type search_query = 'query: ' + text");
  t.ok(cosine(query.data[0]!.embedding, await plain("¿dónde vive el jaguar?")) < 0.9999, "and differs from the bare text");
  const bare = await openai.embeddings.create({ model: SECOND, input: "¿dónde vive el jaguar?" });
  t.ok(query.usage.prompt_tokens > bare.usage.prompt_tokens, "the prefix's tokens are counted");

  const seedDoc = await postJson(service.app, "/api/llm/embed", { texts: ["El jaguar vive en la selva."], model: SECOND, input_type: "search_document" });
  t.ok(cosine(seedDoc.json<{ embeddings: number[][] }>().embeddings[0]!, await plain("passage: El jaguar vive en la selva.")) > 0.99999, "seed API: search_document = 'passage: '");
  const byName = await ollama.embed({ model: SECOND, input: "El jaguar", prompt_name: "passage" } as Parameters<Ollama["embed"]>[0]);
  t.ok(cosine(byName.embeddings[0]!, await plain("passage: El jaguar")) > 0.99999, "Ollama route: prompt_name passage");

  // A model without prompts reads every input_type alike.
  const d1 = await openai.embeddings.create({ model: defaultName, input: "hola", input_type: "search_query" } as OpenAI.EmbeddingCreateParams);
  const d2 = await openai.embeddings.create({ model: defaultName, input: "hola" });
  t.same(d1.data[0]!.embedding, d2.data[0]!.embedding);

  const unknownPrompt = await postJson(service.app, "/v1/embeddings", { model: SECOND, input: "hola", prompt_name: "document" });
  t.equal(unknownPrompt.statusCode, 400);
  t.match(unknownPrompt.json(), { error: { param: "prompt_name", message: /'query', 'passage'/ } });
  const badType = await postJson(service.app, "/v1/embeddings", { model: SECOND, input: "hola", input_type: "search" });
  t.equal(badType.statusCode, 400);
  t.match(badType.json(), { error: { param: "input_type" } });
});

t.test("unknown or wrong-kind names: each API's error, listing the served embedding models", async (t) => {
  const o = await openai.embeddings.create({ model: "text-embedding-3-small", input: "hola" }).then(() => null, (e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
  t.equal(o?.status, 404);
  t.match(o?.message, new RegExp(`text-embedding-3-small.*'${defaultName}'.*'${SECOND}'`));
  const chatAsEmbedder = await postJson(service.app, "/v1/embeddings", { model: chatName, input: "hola" });
  t.equal(chatAsEmbedder.statusCode, 404);
  t.match(chatAsEmbedder.json(), { error: { code: "model_not_found", message: /is a chat model, not an embedding model/ } });
  const seed = await postJson(service.app, "/api/llm/embed", { texts: ["hola"], model: "e5-large" });
  t.equal(seed.statusCode, 400);
  t.match(seed.json(), { error: { code: "model_not_found", field: "model", message: new RegExp(SECOND) } });
  const oll = await postJson(service.app, "/api/embed", { model: chatName, input: "hola" });
  t.equal(oll.statusCode, 400);
  t.match(oll.json(), { error: new RegExp(`does not support embeddings; use "${defaultName}".*"${SECOND}"`) });
  const noReranker = await postJson(service.app, "/v1/rerank", { query: "q", documents: ["a"] });
  t.equal(noReranker.statusCode, 404);
  t.match(noReranker.json(), { error: { code: "model_not_found", message: /serves no rerank model/ } });
});
