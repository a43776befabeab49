// models/models.json: names and the seed's spellings resolve to files; a missing file offline fails
// with a message naming the file, the URL and the variable to set instead.
import t from "tap";
import { copyFileSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { readManifest, resolveModelFile, sha256File } from "../src/engine/modelFiles.js";
import { postJson, startTestService } from "./helpers/service.js";
import { startServiceProcess } from "./helpers/process.js";

const models = await ensureTestModels();
const dir = mkdtempSync(path.join(os.tmpdir(), "bora-models-"));
copyFileSync(models.embed, path.join(dir, "minilm.gguf"));
copyFileSync(models.chat, path.join(dir, "qwen.gguf"));
const entry = async (name: string, kind: string, file: string, aliases: string[] = []) => ({
  name, kind, aliases, file,
  url: `https://127.0.0.1:9/${file}`,
  size: statSync(path.join(dir, file)).size,
  sha256: await sha256File(path.join(dir, file)),
});
writeFileSync(path.join(dir, "models.json"), JSON.stringify({
  models: [
    await entry("Qwen3-Test", "chat", "qwen.gguf"),
    await entry("all-MiniLM-L6-v2", "embedding", "minilm.gguf", ["sentence-transformers/all-MiniLM-L6-v2"]),
    { name: "missing-model", kind: "chat", file: "missing.gguf", url: "https://127.0.0.1:9/missing.gguf", size: 1234, sha256: null },
  ],
}));
const opts = { modelsDir: dir, allowDownload: false, envName: "LLM_MODEL", log: () => {} };

t.test("the shipped manifest is valid and pins size and sha256 of every model, or says loudly that it cannot", async (t) => {
  const shipped = readManifest(path.resolve("models"));
  t.same(shipped.map((m) => m.name), ["Qwen3-1.7B-Q4_K_M", "all-MiniLM-L6-v2", "multilingual-e5-small", "bge-reranker-v2-m3"]);
  for (const m of shipped) {
    t.match(m.url, /^https:\/\/huggingface\.co\//);
    if (m.notes?.startsWith("UNVERIFIED PLACEHOLDER PIN") === true) {
      // No published value was found: the placeholders make a download fail its size check instead of trusting the file.
      t.equal(m.sha256, null, `${m.name}: no invented sha256`);
      t.equal(m.size, 1, `${m.name}: placeholder size`);
      continue;
    }
    t.match(m.sha256, /^[0-9a-f]{64}$/, m.name);
    t.ok(m.size > 1_000_000, m.name);
    t.match(m.url, /\/resolve\/[0-9a-f]{40}\//, `${m.name}: pinned to a revision`);
  }
  t.ok(shipped[1]!.aliases!.includes("sentence-transformers/all-MiniLM-L6-v2"));
});

t.test("names, aliases and paths resolve", async (t) => {
  t.equal((await resolveModelFile("Qwen3-Test", opts)).path, path.join(dir, "qwen.gguf"));
  const alias = await resolveModelFile("sentence-transformers/all-MiniLM-L6-v2", opts);
  t.equal(alias.name, "all-MiniLM-L6-v2");
  const byPath = await resolveModelFile(models.chat, opts);
  t.equal(byPath.name, "test-qwen3-tiny");
  await t.rejects(resolveModelFile("nonsense-name", opts), /neither a path to a \.gguf file nor a model/);
  await t.rejects(resolveModelFile("/no/such/file.gguf", opts), /no file at/);
});

t.test("a missing model with downloads off names the file, the URL and the variable", async (t) => {
  await t.rejects(resolveModelFile("missing-model", opts), /missing\.gguf.*MODEL_DOWNLOAD=false.*https:\/\/127\.0\.0\.1:9\/missing\.gguf.*LLM_MODEL=/s);
});

t.test("a missing model offline: the download fails with what to do", async (t) => {
  await t.rejects(resolveModelFile("missing-model", { ...opts, allowDownload: true }), /Could not download missing\.gguf from https:\/\/127\.0\.0\.1:9\/missing\.gguf.*LLM_MODEL=\/path\/to/s);
});

t.test("a file whose size differs from the manifest is refused", async (t) => {
  const manifest = JSON.parse(readFileSync(path.join(dir, "models.json"), "utf8")) as { models: { size: number }[] };
  manifest.models[0]!.size += 1;
  const other = mkdtempSync(path.join(os.tmpdir(), "bora-models-"));
  copyFileSync(path.join(dir, "qwen.gguf"), path.join(other, "qwen.gguf"));
  writeFileSync(path.join(other, "models.json"), JSON.stringify(manifest));
  await t.rejects(resolveModelFile("Qwen3-Test", { ...opts, modelsDir: other }), /delete it to download it again/);
});

t.test("npm start offline with a missing model exits non-zero and says what to do", async (t) => {
  const proc = startServiceProcess({ MODELS_DIR: dir, LLM_MODEL: "missing-model", EMBED_MODEL: "all-MiniLM-L6-v2" });
  const exit = await proc.exited;
  t.equal(exit.code, 1);
  t.match(proc.output(), /missing\.gguf/);
  t.match(proc.output(), /LLM_MODEL=\/path\/to\/a\/local\.gguf/);
});

t.test("the embed endpoint accepts both seed spellings of the default model", async (t) => {
  const service = await startTestService({ MODELS_DIR: dir, LLM_MODEL: "Qwen3-Test", EMBED_MODEL: "all-MiniLM-L6-v2" });
  t.teardown(() => service.close());
  for (const model of ["all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", undefined]) {
    const res = await postJson(service.app, "/api/llm/embed", { texts: ["hola", "adiós"], ...(model ? { model } : {}) });
    t.equal(res.statusCode, 200, String(model));
    t.equal(res.json<{ model: string }>().model, "all-MiniLM-L6-v2");
  }
  const gen = await postJson(service.app, "/api/llm/generate", { messages: [{ role: "user", content: "hola" }], max_new_tokens: 2 });
  t.equal(gen.json<{ model: string }>().model, "Qwen3-Test");
});
