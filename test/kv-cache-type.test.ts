// LLM_KV_CACHE_TYPE (llama-server's -ctk/-ctv, Ollama's OLLAMA_KV_CACHE_TYPE): the loop's context is created
// with it, /api/status reports what the loop runs with, a slot's saved KV state is about half as large with
// q8_0, and the prompt cache's key follows it (prefixes persisted under f16 are not restored under q8_0).
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { ensureModel, TEST_CHAT_KV32_SHAPE } from "../scripts/make-test-models.js";
import { loadConfig } from "../src/config.js";
import { postJson, startTestService, type TestService } from "./helpers/service.js";
import { systemA, question } from "./helpers/prompt-cache.js";

t.setTimeout(300_000);
const chatModel = await ensureModel(TEST_CHAT_KV32_SHAPE);
const dir = await mkdtemp(path.join(os.tmpdir(), "bora-kv-type-"));
t.teardown(() => rm(dir, { recursive: true, force: true }));
const body = { messages: [systemA, question], max_new_tokens: 4, temperature: 0 };

async function withService<T>(kv: string, run: (service: TestService) => Promise<T>): Promise<T> {
  const service = await startTestService({
    LLM_MODEL: chatModel, LLM_KV_CACHE_TYPE: kv, LLM_PARALLEL: "1", SLOT_SAVE_PATH: dir, PROMPT_CACHE_DIR: path.join(dir, "cache"), PROMPT_CACHE_DISK_MIB: "16", PROMPT_CACHE_MIN_TOKENS: "8",
  });
  try {
    return await run(service);
  } finally {
    await service.close();
  }
}

type Usage = { usage: { cached_prompt_tokens: number } };
type Status = { chat: { kv_cache_type: string; flash_attention: string } };
const saveSlot = async (service: TestService, file: string) =>
  (await postJson(service.app, `/slots/0?action=save`, { filename: file })).json<{ n_saved: number; n_written: number }>();

t.test("f16 then q8_0: status, the saved state's size, the prompt cache's key", async (t) => {
  const f16 = await withService("f16", async (service) => {
    const status = (await service.app.inject({ method: "GET", url: "/api/status" })).json<Status>();
    t.match(status.chat, { kv_cache_type: "f16", flash_attention: "auto" });
    t.equal((await postJson(service.app, "/api/llm/generate", body)).statusCode, 200);
    return saveSlot(service, "f16.bin");
  });
  const q8 = await withService("q8_0", async (service) => {
    const status = (await service.app.inject({ method: "GET", url: "/api/status" })).json<Status>();
    t.match(status.chat, { kv_cache_type: "q8_0" }, "the loop runs with q8_0");
    t.equal((await service.engines.chat.promptCacheLoaded)?.entries ?? 0, 0, "nothing restored: the f16 prefixes are under another key");
    const answer = await postJson(service.app, "/api/llm/generate", body);
    t.equal(answer.statusCode, 200, "generates");
    t.ok(answer.json<Usage>().usage.cached_prompt_tokens <= 2, "the first request is cold (at most the warm-up's first tokens)");
    return saveSlot(service, "q8.bin");
  });
  t.equal(q8.n_saved, f16.n_saved, "the same tokens in the slot");
  const ratio = q8.n_written / f16.n_written;
  t.ok(ratio > 0.4 && ratio < 0.65, `a q8_0 slot's state is about half an f16 one's (${q8.n_written} / ${f16.n_written} bytes = ${ratio.toFixed(2)})`);
  await withService("f16", async (service) => {
    t.ok(((await service.engines.chat.promptCacheLoaded)?.entries ?? 0) > 0, "under f16 again, the f16 prefixes are restored");
    const answer = (await postJson(service.app, "/api/llm/generate", body)).json<Usage>();
    t.ok(answer.usage.cached_prompt_tokens > 20, `and the first request is warm (${answer.usage.cached_prompt_tokens} tokens cached)`);
  });
});

t.test("a quantized KV cache without flash attention is refused at start, naming both variables", async (t) => {
  t.throws(() => loadConfig({ LLM_KV_CACHE_TYPE: "q4_0", LLM_FLASH_ATTENTION: "off" }), /LLM_KV_CACHE_TYPE=q4_0 with LLM_FLASH_ATTENTION=off/);
  t.throws(() => loadConfig({ LLM_KV_CACHE_TYPE: "q5_1" }), /LLM_KV_CACHE_TYPE/);
});
