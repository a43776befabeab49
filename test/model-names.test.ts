// Model names: a model given by path keeps its manifest names (the seed's spelling included),
// *_MODEL_ALIASES add more, every API resolves them the same way, unknown names list the served ones.
import t from "tap";
import { copyFileSync, mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import { Ollama } from "ollama";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { loadConfig } from "../src/config.js";
import { readManifest, resolveModelFile } from "../src/engine/modelFiles.js";
import { postJson, startTestService } from "./helpers/service.js";

const models = await ensureTestModels();
const dir = mkdtempSync(path.join(os.tmpdir(), "bora-names-"));
// Renamed copies, as a user who downloaded the models by hand would have them.
const embedByStem = path.join(dir, "all-MiniLM-L6-v2.gguf");
const embedByFile = path.join(dir, "all-MiniLM-L6-v2-f16.gguf");
const embedByUrlName = path.join(dir, "all-MiniLM-L6-v2-ggml-model-f16.gguf");
const chatUnknown = path.join(dir, "my-qwen.gguf");
for (const file of [embedByStem, embedByFile, embedByUrlName]) copyFileSync(models.embed, file);
copyFileSync(models.chat, chatUnknown);
const shipped = path.resolve("models");
const opts = { modelsDir: shipped, allowDownload: false, log: () => {} };

t.test("a file given by path is recognised as the manifest model by its name or the manifest's file name", async (t) => {
  const manifestEmbed = readManifest(shipped).find((m) => m.kind === "embedding")!;
  const byStem = await resolveModelFile(embedByStem, { ...opts, envName: "EMBED_MODEL", kind: "embedding" });
  t.equal(byStem.path, embedByStem, "the file given is the file loaded");
  t.equal(byStem.name, "all-MiniLM-L6-v2");
  t.ok(byStem.aliases.includes("sentence-transformers/all-MiniLM-L6-v2"));
  t.equal(byStem.entry?.maxTokens, manifestEmbed.maxTokens, "and keeps the manifest's token limit");
  const byFile = await resolveModelFile(embedByFile, { ...opts, envName: "EMBED_MODEL", kind: "embedding" });
  t.equal(byFile.name, "all-MiniLM-L6-v2");
  const byUrlName = await resolveModelFile(embedByUrlName, { ...opts, envName: "EMBED_MODEL", kind: "embedding" });
  t.equal(byUrlName.name, "all-MiniLM-L6-v2", "the file name of the download URL counts too");
  t.ok(byUrlName.aliases.includes("all-MiniLM-L6-v2-ggml-model-f16"), "and the file's own name stays an alias");
  const wrongKind = await resolveModelFile(embedByStem, { ...opts, envName: "LLM_MODEL", kind: "chat" });
  t.equal(wrongKind.entry, null, "a chat setting never takes an embedding entry");
  const unknown = await resolveModelFile(chatUnknown, { ...opts, envName: "LLM_MODEL", kind: "chat" });
  t.equal(unknown.name, "my-qwen");
  t.ok(unknown.aliases.includes("Qwen3-Tiny-Test"), "the GGUF's general.name is an alias");
});

t.test("*_MODEL_ALIASES: comma-separated, trimmed", async (t) => {
  const config = loadConfig({ LLM_MODEL_ALIASES: " bora-chat, gpt-3.5-turbo ,,", EMBED_MODEL_ALIASES: "text-embedding-3-small" });
  t.same(config.llmModelAliases, ["bora-chat", "gpt-3.5-turbo"]);
  t.same(config.embedModelAliases, ["text-embedding-3-small"]);
  t.same(loadConfig({}).llmModelAliases, []);
});

t.test("a service started with EMBED_MODEL=<path>: every API answers to the seed's and the manifest's names", async (t) => {
  const service = await startTestService({
    EMBED_MODEL: embedByStem,
    LLM_MODEL: chatUnknown,
    MODELS_DIR: shipped,
    EMBED_MODEL_ALIASES: "text-embedding-3-small",
    LLM_MODEL_ALIASES: "bora-chat",
  });
  t.teardown(() => service.close());
  const base = await service.listen();
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
  const ollama = new Ollama({ host: base });

  // The seed's own request (../shared/seed): model "sentence-transformers/all-MiniLM-L6-v2".
  const seed = await postJson(service.app, "/api/llm/embed", { texts: ["hola"], model: "sentence-transformers/all-MiniLM-L6-v2" });
  t.equal(seed.statusCode, 200);
  t.equal(seed.json<{ model: string }>().model, "all-MiniLM-L6-v2");
  for (const name of ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "text-embedding-3-small", "all-minilm", "ALL-MINILM:latest"]) {
    const e = await client.embeddings.create({ model: name, input: "hola" });
    t.equal(e.model, "all-MiniLM-L6-v2", `OpenAI: ${name}`);
    const o = await ollama.embed({ model: name, input: "hola" });
    t.equal(o.embeddings.length, 1, `Ollama: ${name}`);
  }
  t.same((await client.models.list()).data.map((m) => m.id), ["my-qwen", "all-MiniLM-L6-v2"]);
  t.equal((await client.models.retrieve("text-embedding-3-small")).id, "all-MiniLM-L6-v2");
  t.equal((await client.models.retrieve("sentence-transformers/all-MiniLM-L6-v2")).id, "all-MiniLM-L6-v2");
  const chat = await client.chat.completions.create({ model: "bora-chat", messages: [{ role: "user", content: "hola" }], max_tokens: 1 });
  t.equal(chat.model, "my-qwen");
  const tokens = await (await fetch(`${base}/tokenize`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ content: "hola", model: "sentence-transformers/all-MiniLM-L6-v2" }) })).json() as { model: string };
  t.equal(tokens.model, "all-MiniLM-L6-v2");

  // Unknown names stay errors that list what is served, in each API's shape.
  type ApiError = InstanceType<typeof OpenAI.APIError>;
  const openaiUnknown = await client.embeddings.create({ model: "text-embedding-ada-002", input: "hola" }).then(() => null, (e: unknown) => e as ApiError);
  t.equal(openaiUnknown?.status, 404);
  t.match(openaiUnknown?.message, /text-embedding-ada-002.*all-MiniLM-L6-v2.*sentence-transformers\/all-MiniLM-L6-v2/);
  const chatForEmbeddings = await client.embeddings.create({ model: "bora-chat", input: "hola" }).then(() => null, (e: unknown) => e as ApiError);
  t.equal(chatForEmbeddings?.status, 404, "the chat model is no embedding model");
  const seedUnknown = await postJson(service.app, "/api/llm/embed", { texts: ["hola"], model: "bert-base" });
  t.equal(seedUnknown.statusCode, 400);
  t.match(seedUnknown.json(), { error: { code: "model_not_found", field: "model", message: /all-MiniLM-L6-v2/ } });
  const ollamaUnknown = await ollama.show({ model: "llama3" }).then(() => null, (e: unknown) => e as Error & { status_code: number });
  t.equal(ollamaUnknown?.status_code, 404);
  t.match(ollamaUnknown?.message, /my-qwen.*bora-chat/);
});
