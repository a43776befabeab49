// Measures the prompt cache's costs on one model, in-process: host-memory bytes per token, disk bytes per
// token, and restore time per 1,000 tokens (host tier: a prefix evicted by a stranger, then asked again).
//
//   npx tsx bench/prompt-cache-cost.ts [model.gguf] [prefix tokens, default 1000] [repetitions, default 3]
//
// Default model: the tiny test fixture. Prints one JSON line. Timings on a shared machine are indicative.
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { ensureTestModels } from "../scripts/make-test-models.ts";
import { loadConfig } from "../src/config.ts";
import { disposeEngines, loadEngines } from "../src/composition.ts";

const models = await ensureTestModels();
const modelPath = process.argv[2] ?? models.chat;
const prefixTokens = Number(process.argv[3] ?? 1000);
const reps = Number(process.argv[4] ?? 3);
const dir = await mkdtemp(path.join(os.tmpdir(), "bora-prompt-cache-cost-"));
const config = loadConfig({
  LLM_MODEL: modelPath, EMBED_MODEL: models.embed, MODEL_DOWNLOAD: "false", LOG_LEVEL: "silent", LLM_PARALLEL: "1",
  LLM_CONTEXT_SIZE: String(Math.max(2048, prefixTokens * 2)), WARMUP: "false", LLM_NICE: "0", PROMPT_CACHE_DIR: dir, PROMPT_CACHE_DISK_MIB: "8192", PROMPT_CACHE_SAVE_INTERVAL_S: "0",
});
const engines = await loadEngines(config, pino({ level: "silent" }));
try {
  const chat = engines.chat;
  const filler = (id: number) => {
    let text = `Documento ${id}. `;
    while (chat.tokenizePrompt([{ role: "system", content: text }], false).length < prefixTokens) text += `La frase ${text.length} del documento ${id} habla de tonos y verbos. `;
    return text;
  };
  const ask = (system: string, maxTokens = 1) =>
    chat.generate({ messages: [{ role: "system", content: system }, { role: "user", content: "¿Qué?" }], maxTokens, temperature: 0, topP: 1, enableThinking: false });
  const runs: { coldMs: number; restoredTokens: number; restoreMs: number; firstTokenMs: number | null }[] = [];
  for (let i = 0; i < reps; i++) {
    const system = filler(i);
    const cold = await ask(system);
    await ask(filler(1000 + i)); // a stranger: the prefix goes to host memory
    const before = chat.promptCacheStats()!;
    const warm = await ask(system);
    const after = chat.promptCacheStats()!;
    runs.push({
      coldMs: cold.timings.firstTokenMs ?? NaN,
      restoredTokens: warm.cachedPromptTokens,
      restoreMs: (after.restoreSeconds - before.restoreSeconds) * 1000,
      firstTokenMs: warm.timings.firstTokenMs,
    });
  }
  await chat.persistPromptCache();
  const stats = chat.promptCacheStats()!;
  const restoredTokens = runs.reduce((s, r) => s + r.restoredTokens, 0);
  const restoreMs = runs.reduce((s, r) => s + r.restoreMs, 0);
  let persistedTokens = 0;
  let persistedBytes = 0;
  for (const name of (await readdir(dir)).filter((f) => f.endsWith(".promptcache"))) {
    const bytes = await readFile(path.join(dir, name));
    persistedTokens += (JSON.parse(bytes.subarray(12, 12 + bytes.readUInt32LE(8)).toString("utf8")) as { tokens: number }).tokens;
    persistedBytes += bytes.length;
  }
  process.stdout.write(`${JSON.stringify({
    model: path.basename(modelPath), prefixTokens, reps,
    hostBytesPerToken: Math.round(stats.savedStateBytes / stats.savedTokens * 10) / 10,
    diskBytesPerToken: persistedTokens > 0 ? Math.round(persistedBytes / persistedTokens * 10) / 10 : null,
    restoreMsPer1000Tokens: Math.round(restoreMs / restoredTokens * 1000 * 100) / 100,
    runs,
  })}\n`);
} finally {
  await disposeEngines(engines);
  await rm(dir, { recursive: true, force: true });
}
