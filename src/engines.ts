// Composition of the engine: runtime -> model files -> chat and embedding engines -> warm-up.
import type { Logger } from "pino";
import type { Config } from "./config.js";
import { ChatEngine } from "./engine/chat.js";
import { EmbedEngine } from "./engine/embed.js";
import { resolveModelFile } from "./engine/modelFiles.js";
import { loadRuntime, type Runtime } from "./engine/runtime.js";
import { ServedModels } from "./engine/servedModels.js";
import type { Engines } from "./service.js";

export type LoadedEngines = Engines & { runtime: Runtime };

export async function loadEngines(config: Config, log: Logger): Promise<LoadedEngines> {
  const runtime = await loadRuntime(config.gpu, config.threads, (level, message) => {
    if (level === "error" || level === "fatal") log.error({ llama: message }, "llama.cpp");
    else log.debug({ llama: message }, "llama.cpp");
  });
  log.info({ backend: runtime.backend, threads: runtime.cpu.threads, threadSource: runtime.cpu.source, cpusInAffinity: runtime.cpu.affinity, cgroupCpuQuota: runtime.cpu.cgroupQuota }, "native runtime loaded");

  const resolveOptions = { modelsDir: config.modelsDir, allowDownload: config.modelDownload, log: (m: string) => log.info(m) };
  const chatFile = await resolveModelFile(config.llmModel, { ...resolveOptions, envName: "LLM_MODEL", kind: "chat" });
  const embedFile = await resolveModelFile(config.embedModel, { ...resolveOptions, envName: "EMBED_MODEL", kind: "embedding" });
  const models = await ServedModels.load(runtime.llama, {
    chat: { file: chatFile, extraAliases: config.llmModelAliases },
    embedding: { file: embedFile, extraAliases: config.embedModelAliases },
  });
  log.info({ chat: [models.chat.name, ...models.chat.aliases], embedding: [models.embedding.name, ...models.embedding.aliases] }, "model names (every API accepts any of them)");

  const chat = await ChatEngine.load(runtime.llama, {
    modelPath: chatFile.path,
    modelName: chatFile.name,
    contextSize: config.contextSize,
    parallel: config.parallel,
    batchSize: config.batchSize,
    gpuLayers: config.gpuLayers,
    threads: runtime.cpu.threads,
    nice: config.nice,
    queueSize: config.queueSize,
    requestTimeoutMs: config.requestTimeoutMs,
    engine: config.llmEngine,
    onFallback: (reason) => log.warn({ engine: "node-llama-cpp", reason }, "native slot loop unavailable; generating through node-llama-cpp"),
    slotSavePath: config.slotSavePath,
    promptCache: { ...config.promptCache, warn: (message, details) => log.warn(details, message) },
  });
  // llamaBuild: "prebuilt" (node-llama-cpp's binaries) or "localBuild" (`npm run build:llama-native`).
  log.info({ backend: runtime.backend, llamaBuild: runtime.llama.buildType, ...chat.describe(), file: chatFile.path }, "chat model loaded");
  if (chat.promptCacheLoad !== null) log.info({ ...chat.promptCacheLoad, ms: Math.round(chat.promptCacheLoad.ms), dir: config.promptCache.dir }, "prompt cache loaded from disk");

  try {
    const embed = await EmbedEngine.load(runtime.llama, {
      modelPath: embedFile.path,
      modelName: embedFile.name,
      aliases: models.embedding.aliases,
      threads: runtime.cpu.threads,
      batchTokens: config.embedBatchTokens,
      batchSequences: config.embedBatchSequences,
      gpuLayers: config.gpuLayers,
      maxTokens: embedFile.entry?.maxTokens,
      truncate: true,
      maxTexts: config.embedMaxTexts,
      preferNative: config.embedNative,
      onFallback: (reason) => log.warn({ reason }, "batched native embedder unavailable; using node-llama-cpp's embedding context"),
    });
    log.info({ ...embed.describe(), file: embedFile.path }, "embedding model loaded");
    return { chat, embed, models, runtime };
  } catch (error) {
    await chat.dispose();
    await models.dispose();
    throw error;
  }
}

/** One short generation and one embedding, so the first real request does not pay for cold caches. */
export async function warmUp(engines: Engines): Promise<number> {
  const started = performance.now();
  await engines.chat.generate({ messages: [{ role: "user", content: "Hola" }], maxTokens: 2, temperature: 0, topP: 1, enableThinking: false });
  await engines.embed.embed(["hola"]);
  return performance.now() - started;
}

export async function disposeEngines(engines: LoadedEngines): Promise<void> {
  await Promise.allSettled([engines.chat.dispose(), engines.embed.dispose(), engines.models.dispose()]);
  await engines.runtime.llama.dispose();
}
