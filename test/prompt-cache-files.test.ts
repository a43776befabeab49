// Prompt-cache files and bounds on the real engine: host memory and disk stay within their MiB; a damaged
// or foreign cache file is skipped and a valid one loads and is used.
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { decodeEntry, encodeEntry, type PromptCacheKey } from "../src/engine/chat/promptCacheStore.js";
import type { ChatMessage } from "../src/engine/chat/types.js";
import { ask, question, SAMPLINGS, systemA } from "./helpers/prompt-cache.js";
import { pino } from "pino";
import { disposeEngines, loadEngines } from "../src/composition.js";
import { startTestService, testConfig } from "./helpers/service.js";

t.setTimeout(900_000);

t.test("bounds: host memory and disk stay within their limits", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "bora-prompt-cache-bounds-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // Limits below a MiB (the tiny model's KV is ~270 bytes a token): 256 KiB of host memory, 128 KiB of disk.
  const config = await testConfig({ LLM_PARALLEL: "1", LLM_CONTEXT_SIZE: "1024" });
  const engines = await loadEngines({ ...config, chat: { ...config.chat, promptCache: { ...config.chat.promptCache, hostMiB: 0.25, diskMiB: 0.125, dir, saveIntervalS: 0 } } }, pino({ level: "silent" }));
  t.teardown(() => disposeEngines(engines));
  const chat = engines.chat;
  for (let i = 0; i < 8; i++) {
    const system: ChatMessage = { role: "system", content: `Documento ${i}: ` + `párrafo ${i} sobre la historia número ${i * 7}. `.repeat(30) };
    await ask(chat, [system, question], SAMPLINGS[0]!, { maxTokens: 1 });
  }
  const stats = chat.promptCacheStats()!;
  t.ok(stats.saves >= 6, `${stats.saves} prefixes saved to host memory`);
  t.ok(stats.evictions > 0, `${stats.evictions} evicted for room`);
  t.ok(stats.hostBytes <= 256 * 1024, `host: ${stats.hostBytes} bytes <= 256 KiB`);
  await chat.persistPromptCache();
  const after = chat.promptCacheStats()!;
  t.ok(after.diskFiles >= 1, `${after.diskFiles} files`);
  t.ok(after.diskBytes <= 128 * 1024, `disk: ${after.diskBytes} bytes <= 128 KiB`);
  t.comment(`host bytes per token: ${(stats.savedStateBytes / stats.savedTokens).toFixed(1)}; disk bytes per token: ${(after.diskBytes / Math.max(1, stats.savedTokens / Math.max(1, stats.saves) * after.diskFiles)).toFixed(1)}`);
});

t.test("damaged and foreign files are skipped, valid ones load", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "bora-prompt-cache-files-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { LLM_PARALLEL: "1", LLM_CONTEXT_SIZE: "1024", PROMPT_CACHE_DIR: dir, PROMPT_CACHE_DISK_MIB: "64", PROMPT_CACHE_SAVE_INTERVAL_S: "0" };
  let service = await startTestService(env);
  await ask(service.engines.chat, [systemA, question], SAMPLINGS[0]!);
  await service.close();
  const files = (await readdir(dir)).filter((f) => f.endsWith(".promptcache"));
  t.ok(files.length >= 1, `${files.length} file(s) persisted`);
  const good = path.join(dir, files[0]!);
  const bytes = await readFile(good);
  const prefix = files[0]!.split("-")[0]!;
  // The key inside a valid file, for a foreign one that differs only in the model hash.
  const header = JSON.parse(bytes.subarray(12, 12 + bytes.readUInt32LE(8)).toString("utf8")) as { key: PromptCacheKey };
  const entry = decodeEntry(header.key, bytes);
  t.notOk("reason" in entry, "the persisted file decodes under its own key");
  if ("reason" in entry) return;
  const foreignKey = { ...header.key, modelSha256: "0".repeat(64) };
  t.match(decodeEntry(header.key, encodeEntry(foreignKey, entry)), { reason: /another model/ });
  const damaged = Buffer.from(bytes);
  damaged[damaged.length - 10] = (damaged[damaged.length - 10]! + 1) % 256;
  t.match(decodeEntry(header.key, damaged), { reason: /checksum/ });
  t.match(decodeEntry(header.key, bytes.subarray(0, bytes.length - 1)), { reason: /size/ });
  // Both under this key's file prefix, so the loader reads and rejects them.
  await writeFile(path.join(dir, `${prefix}-damaged.promptcache`), damaged);
  await writeFile(path.join(dir, `${prefix}-foreign.promptcache`), encodeEntry(foreignKey, entry));
  service = await startTestService(env);
  t.teardown(() => service.close());
  t.equal(service.engines.chat.promptCacheLoad?.entries, 1, "only the valid file is loaded");
  const r = await ask(service.engines.chat, [systemA, question], SAMPLINGS[0]!);
  t.ok(r.cachedPromptTokens > 80, "and it is used");
});

