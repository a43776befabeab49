// The composition root: runtime -> model files -> one engine per served model (chat, each
// embedding model, each reranker) -> the model registry -> warm-up.
import type { Logger } from "pino";
import type { Config } from "./config.js";
import { ChatEngine } from "./engine/chat/engine.js";
import { EmbedEngine } from "./engine/embed.js";
import { ModelFileError, resolveModelFile, type ManifestEntry } from "./engine/modelFiles.js";
import { checkPrompts, promptsOf } from "./engine/prompts.js";
import { RerankEngine } from "./engine/rerank.js";
import { ModelRegistry, readIdentity, type EngineOf, type ModelIdentity, type ModelKind, type ServedModel } from "./engine/registry.js";
import { loadRuntime, type Runtime } from "./engine/runtime.js";
import { ModelTokenizer } from "./engine/tokenizer.js";
import type { Engines } from "./service.js";

export type LoadedEngines = Engines & { runtime: Runtime };

/** One model to serve: where its setting came from (for errors) and the names it gets besides its own. */
type ModelSpec = { kind: ModelKind; setting: string; envName: string; extraAliases: readonly string[] };

type EngineLoader<K extends ModelKind> = (runtime: Runtime, model: ModelIdentity & { entry: ManifestEntry | null }, config: Config, log: Logger) => Promise<EngineOf[K]>;

/** How each kind of model gets its engine: a new kind of model adds a line here (and its engine file and route). */
const loaders: { [K in ModelKind]: EngineLoader<K> } = {
  chat: async (runtime, model, config, log) => {
    const chat = await ChatEngine.load(runtime.llama, {
      modelPath: model.path,
      modelName: model.name,
      threads: runtime.cpu.threads,
      settings: config.chat,
      onFallback: (reason) => log.warn({ engine: "node-llama-cpp", reason }, "native slot loop unavailable; generating through node-llama-cpp"),
      warn: (message, details) => log.warn(details, message),
      gguf: model.gguf,
    });
    // llamaBuild: "prebuilt" (node-llama-cpp's binaries) or "localBuild" (a fast build, docs/native-build.md).
    log.info({ backend: runtime.backend, llamaBuild: runtime.llama.buildType, ...chat.describe(), file: model.path }, "chat model loaded");
    void chat.promptCacheLoaded.then((loaded) => {
      if (loaded !== null && config.chat.promptCache.hostMiB > 0 && config.chat.promptCache.diskMiB > 0) log.info({ ...loaded, ms: Math.round(loaded.ms), dir: config.chat.promptCache.dir }, "prompt cache loaded from disk");
    });
    return chat;
  },
  embedding: async (runtime, model, config, log) => {
    const pooling = model.entry?.pooling;
    if (pooling === "rank") throw new ModelFileError(`${model.name} has pooling "rank" in models.json: it is a reranker (RERANK_MODELS), not an embedding model.`);
    const embed = await EmbedEngine.load(runtime.llama, {
      modelPath: model.path,
      modelName: model.name,
      aliases: model.aliases,
      threads: runtime.cpu.threads,
      batchTokens: config.embedBatchTokens,
      batchSequences: config.embedBatchSequences,
      gpuLayers: config.gpuLayers,
      maxTokens: model.entry?.maxTokens,
      truncate: true,
      // Pooling and normalisation as the model's card says (manifest).
      ...(pooling === undefined ? {} : { pooling }),
      ...(model.entry?.normalize === undefined ? {} : { normalize: model.entry.normalize }),
      maxTexts: config.embedMaxTexts,
      queue: config.retrievalQueue,
      preferNative: config.embedNative,
      onFallback: (reason) => log.warn({ model: model.name, reason }, "batched native embedder unavailable; using node-llama-cpp's embedding context"),
    });
    log.info({ ...embed.describe(), file: model.path }, "embedding model loaded");
    return embed;
  },
  rerank: async (runtime, model, config, log) => {
    const rerank = await RerankEngine.load({
      modelPath: model.path,
      modelName: model.name,
      aliases: model.aliases,
      threads: runtime.cpu.threads,
      batchTokens: config.embedBatchTokens,
      batchSequences: config.embedBatchSequences,
      gpuLayers: typeof config.gpuLayers === "number" ? config.gpuLayers : undefined,
      maxTokens: model.entry?.maxTokens,
      maxDocuments: config.rerankMaxDocuments,
      queue: config.retrievalQueue,
      // Each API says whether a long document is cut (the routes pass it per request); refusing is the safe default.
      truncate: false,
    });
    log.info({ ...rerank.describe(), file: model.path }, "rerank model loaded");
    return rerank;
  },
};

function modelSpecs(config: Config): ModelSpec[] {
  return [
    { kind: "chat", setting: config.llmModel, envName: "LLM_MODEL", extraAliases: config.llmModelAliases },
    ...config.embedModels.map((setting, i): ModelSpec => i === 0
      ? { kind: "embedding", setting, envName: "EMBED_MODEL", extraAliases: config.embedModelAliases }
      : { kind: "embedding", setting, envName: "EMBED_MODELS", extraAliases: [] }),
    ...config.rerankModels.map((setting): ModelSpec => ({ kind: "rerank", setting, envName: "RERANK_MODELS", extraAliases: [] })),
  ];
}

const mib = (bytes: number) => Math.round(bytes / 2 ** 20 * 10) / 10;

export async function loadEngines(config: Config, log: Logger): Promise<LoadedEngines> {
  const runtime = await loadRuntime(config.gpu, config.threads, (level, message) => {
    if (level === "error" || level === "fatal") log.error({ llama: message }, "llama.cpp");
    else log.debug({ llama: message }, "llama.cpp");
  }, config.binding);
  const { binding } = runtime;
  if (binding.notLoaded !== null) log.warn({ build: binding.notLoaded.id, loaded: binding.loaded }, "the fast llama.cpp build did not load; node-llama-cpp fell back to another binding");
  log.info({ backend: runtime.backend, binding: binding.build?.id ?? binding.loaded, libraryDir: binding.libraryDir, threads: runtime.cpu.threads, threadSource: runtime.cpu.source, cpusInAffinity: runtime.cpu.affinity, cgroupCpuQuota: runtime.cpu.cgroupQuota }, "native runtime loaded");

  const resolveOptions = { modelsDir: config.modelsDir, allowDownload: config.modelDownload, log: (m: string) => log.info(m) };
  const loaded: ServedModel[] = [];
  try {
    for (const spec of modelSpecs(config)) {
      const file = await resolveModelFile(spec.setting, { ...resolveOptions, envName: spec.envName, kind: spec.kind });
      const prompts = promptsOf(file.entry);
      const promptProblem = checkPrompts(file.name, prompts);
      if (promptProblem !== null) throw new ModelFileError(`models.json: ${promptProblem}`);
      const rssBefore = process.memoryUsage.rss();
      // An encoder (embedding, rerank) gets a vocabulary-only tokenizer of its own ([CLS] … [SEP], as the
      // embedder reads it); the chat model's tokenizer is its engine's own vocabulary, loaded with the weights.
      const ownTokenizer = spec.kind === "chat" ? null : await ModelTokenizer.load(runtime.llama, file.path, "embedding");
      let engine: EngineOf[ModelKind];
      let identity: ModelIdentity;
      let tokenizer: ModelTokenizer;
      try {
        identity = await readIdentity(runtime.llama, file, spec.extraAliases, prompts, ownTokenizer?.llamaModel ?? undefined);
        engine = await (loaders[spec.kind] as EngineLoader<ModelKind>)(runtime, { ...identity, entry: file.entry }, config, log);
        tokenizer = ownTokenizer ?? ModelTokenizer.over((engine as ChatEngine).vocabulary, "chat");
      } catch (error) {
        await ownTokenizer?.dispose();
        throw error;
      }
      // Weights are memory-mapped: the RSS growth counts what the load touched; the estimate is what they take once read.
      const memory = { weightsBytes: identity.details.weightsBytes, rssGrowthBytes: Math.max(0, process.memoryUsage.rss() - rssBefore) };
      loaded.push({ ...identity, tokenizer, kind: spec.kind, isDefault: false, memory, engine } as ServedModel);
      log.info({ kind: spec.kind, model: identity.name, weightsMiB: mib(memory.weightsBytes), rssGrowthMiB: mib(memory.rssGrowthBytes), fileMiB: mib(identity.details.fileBytes) }, "model memory");
    }
    const models = new ModelRegistry(loaded);
    // Every embedding or rerank decode takes the cores from generation while it runs (in-process priority).
    for (const m of models.list()) {
      if (m.kind !== "chat") m.engine.onBatch(() => models.chat.engine.yieldToRetrieval());
    }
    log.info({ models: models.list().map((m) => ({ kind: m.kind, names: [m.name, ...m.aliases], default: m.isDefault })) }, "model names (every API accepts any of them)");
    return { chat: models.chat.engine, embed: models.embedding.engine, models, runtime };
  } catch (error) {
    await Promise.allSettled(loaded.flatMap((m) => [m.engine.dispose(), m.tokenizer.dispose()]));
    throw error;
  }
}

/** The cheapest real call of each kind: the first request then does not pay for cold caches. */
const warmUpCalls: { [K in ModelKind]: (engine: EngineOf[K]) => Promise<unknown> } = {
  chat: (chat) => chat.generate({ messages: [{ role: "user", content: "Hola" }], maxTokens: 2, temperature: 0, topP: 1, enableThinking: false }),
  embedding: (embed) => embed.embed(["hola"]),
  rerank: (rerank) => rerank.rerank("hola", ["hola", "adiós"]),
};

/** One short call of every served model, one after the other. */
export async function warmUp(engines: Engines): Promise<number> {
  const started = performance.now();
  for (const model of engines.models.list()) await (warmUpCalls[model.kind] as (engine: EngineOf[ModelKind]) => Promise<unknown>)(model.engine);
  return performance.now() - started;
}

export async function disposeEngines(engines: LoadedEngines): Promise<void> {
  await engines.models.dispose();
  await engines.runtime.llama.dispose();
}
