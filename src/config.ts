// Configuration comes from environment variables, validated once at start against a TypeBox schema
// and frozen. A bad value stops the start with a message naming the variable.
import { Type, type Static, type TSchema } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { KV_CACHE_TYPES, type ChatEngineSettings } from "./engine/chat/settings.js";

export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

const GpuChoice = Type.Union([
  Type.Literal("auto"), Type.Literal("cuda"), Type.Literal("metal"), Type.Literal("vulkan"), Type.Literal("cpu"),
]);
export type GpuChoice = Static<typeof GpuChoice>;

/** Every variable the service reads, with its default and its meaning (docs/configuration.md's table is this). */
export const EnvSchema = Type.Object({
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 8001, description: "TCP port to listen on" }),
  HOST: Type.String({ minLength: 1, default: "127.0.0.1", description: "Interface to bind (0.0.0.0 in containers)" }),
  LLM_MODEL: Type.String({ minLength: 1, default: "Qwen3-1.7B-Q4_K_M", description: "Chat model: a name from models/models.json or a path to a .gguf file" }),
  EMBED_MODEL: Type.String({ minLength: 1, default: "all-MiniLM-L6-v2", description: "Embedding model: a name from models/models.json or a path to a .gguf file" }),
  LLM_MODEL_ALIASES: Type.String({ default: "", description: "More names the chat model answers to, comma-separated (besides its manifest name and aliases)" }),
  EMBED_MODEL_ALIASES: Type.String({ default: "", description: "More names the embedding model answers to, comma-separated" }),
  EMBED_MODELS: Type.String({ default: "", description: "More embedding models served beside EMBED_MODEL (names from models/models.json or paths), comma-separated; each is chosen by a request's `model`, EMBED_MODEL stays the default" }),
  RERANK_MODELS: Type.String({ default: "", description: "Reranking models (names from models/models.json or paths), comma-separated; the first is the default of the rerank routes. Empty: no rerank routes answer" }),
  RERANK_MAX_DOCUMENTS: Type.Integer({ minimum: 1, maximum: 100_000, default: 1000, description: "Documents allowed in one rerank request (Cohere's limit is 1000)" }),
  MODELS_DIR: Type.String({ minLength: 1, default: path.join(projectRoot, "models"), description: "Where models.json lives and downloads go" }),
  MODEL_DOWNLOAD: Type.Boolean({ default: true, description: "Download a missing default model (false: fail with instructions instead)" }),
  LLM_CONTEXT_SIZE: Type.Integer({ minimum: 256, maximum: 1_048_576, default: 4096, description: "Context tokens per slot (prompt + generated)" }),
  LLM_PARALLEL: Type.Integer({ minimum: 1, maximum: 64, default: 2, description: "Generation slots (context sequences) decoded together in one batch" }),
  LLM_BATCH_SIZE: Type.Integer({ minimum: 32, maximum: 65536, default: 512, description: "Tokens per decode batch (prompt processing)" }),
  LLM_GPU: Type.Union([GpuChoice, Type.Literal("")], { default: "", description: "Native backend: auto, cuda, metal, vulkan, cpu (empty: binding-config/backend.json)" }),
  LLAMA_BINDING: Type.Union([Type.Literal("auto"), Type.Literal("prebuilt"), Type.Literal("native"), Type.Literal("portable")], { default: "auto", description: "Which llama.cpp binding loads: auto (the fast build made on this machine when there is one, else node-llama-cpp's prebuilt binaries), prebuilt, native or portable (that fast build; an error when it is not built)" }),
  LLAMA_FAST_BUILD: Type.Union([Type.Literal("auto"), Type.Literal("off")], { default: "auto", description: "auto: where cmake and a C++ compiler exist and no fast build is there, build llama.cpp for this machine in the background (nice 19) while serving on the prebuilt binding; the next start uses it. off: never (the tests, images)" }),
  LLM_GPU_LAYERS: Type.Union([Type.Literal("auto"), Type.Literal("max"), Type.Integer({ minimum: 0 })], { default: "auto", description: "Layers offloaded to the GPU: auto, max or a number" }),
  LLM_THREADS: Type.Integer({ minimum: 0, maximum: 1024, default: 0, description: "CPU threads for decoding; 0 = the CPUs this process may use (affinity and cgroup quota)" }),
  LLM_KV_CACHE_TYPE: Type.Union(KV_CACHE_TYPES.map((t) => Type.Literal(t)), { default: "f16", description: "KV cache element type (llama-server's -ctk/-ctv, Ollama's OLLAMA_KV_CACHE_TYPE): f16, q8_0 (half the memory per slot) or q4_0 (a quarter); quantized types turn flash attention on" }),
  LLM_FLASH_ATTENTION: Type.Union([Type.Literal("auto"), Type.Literal("on"), Type.Literal("off")], { default: "auto", description: "Flash attention (llama-server's -fa): auto (where the backend has it), on or off" }),
  LLM_NICE: Type.Integer({ minimum: 0, maximum: 19, default: 0, description: "Nice value of the generation loop's thread (native engine, Linux). Its helper threads always run at 19 and the thread count follows the load, so embeddings, HTTP and other programs get a core first without a nice value on the loop; 19: the loop yields to every other program too" }),
  LLM_QUEUE_SIZE: Type.Integer({ minimum: 0, maximum: 100_000, default: 64, description: "Generation requests that may wait for a free slot; beyond it: 429" }),
  LLM_ENGINE: Type.Union([Type.Literal("native"), Type.Literal("node-llama-cpp")], { default: "native", description: "Generation path: native (our slot loop; falls back to node-llama-cpp when the addon is not built) or node-llama-cpp" }),
  LLM_REQUEST_TIMEOUT_MS: Type.Integer({ minimum: 1000, maximum: 86_400_000, default: 300_000, description: "Deadline for a generation request, waiting included" }),
  EMBED_MAX_TEXTS: Type.Integer({ minimum: 1, maximum: 100_000, default: 2048, description: "Texts allowed in one embed request" }),
  EMBED_BATCH_TOKENS: Type.Integer({ minimum: 64, maximum: 65536, default: 512, description: "Tokens packed into one embedding decode; never limits a text (a longer text is decoded alone)" }),
  EMBED_BATCH_SEQUENCES: Type.Integer({ minimum: 1, maximum: 256, default: 32, description: "Texts per embedding decode" }),
  RETRIEVAL_QUEUE_TEXTS: Type.Integer({ minimum: 1, maximum: 10_000_000, default: 8192, description: "Per embedding or rerank model: texts (rerank pairs) admitted and not yet answered, over all requests; a request that would pass it gets 429 with Retry-After (an idle model always admits one request). Must hold EMBED_MAX_TEXTS and RERANK_MAX_DOCUMENTS" }),
  RETRIEVAL_QUEUE_TOKENS: Type.Integer({ minimum: 1, maximum: 1_073_741_824, default: 2_097_152, description: "Per embedding or rerank model: tokens of the texts admitted and not yet answered (4 bytes each while queued); beyond it: 429 with Retry-After" }),
  RETRIEVAL_TIMEOUT_MS: Type.Optional(Type.Integer({ minimum: 100, maximum: 86_400_000, description: "Deadline of an embedding, rerank or tokenize request, waiting included (504 after; its texts still waiting are dropped); default LLM_REQUEST_TIMEOUT_MS" })),
  EMBED_NATIVE: Type.Boolean({ default: true, description: "Use the batched native embedder when it is built (false: node-llama-cpp's embedding context)" }),
  BODY_LIMIT_BYTES: Type.Integer({ minimum: 1024, maximum: 1_073_741_824, default: 8 * 1024 * 1024, description: "Largest request body accepted; larger: 413" }),
  WARMUP: Type.Boolean({ default: true, description: "Run one short generation before /ready turns ready" }),
  LOG_LEVEL: Type.Union(["fatal", "error", "warn", "info", "debug", "trace", "silent"].map((l) => Type.Literal(l)), { default: "info", description: "pino log level" }),
  LOG_FORMAT: Type.Union([Type.Literal("auto"), Type.Literal("pretty"), Type.Literal("json")], { default: "auto", description: "auto: readable (pino-pretty) on a terminal, JSON lines otherwise" }),
  LLM_API_KEY: Type.String({ default: "", description: "API key(s), comma-separated; empty: no key needed. Sent as Authorization: Bearer or x-api-key" }),
  CORS_ORIGINS: Type.String({ default: "http://localhost:8000", description: "Browser origins allowed (comma-separated, with credentials); * allows any origin without credentials" }),
  METRICS_AUTH: Type.Boolean({ default: false, description: "true: /metrics needs the API key too" }),
  RESPONSES_STORE_MAX_ITEMS: Type.Integer({ minimum: 0, maximum: 10_000_000, default: 1000, description: "Responses API: most stored responses (previous_response_id, GET /v1/responses/{id}), least recently used evicted first; 0: nothing is stored. In memory" }),
  RESPONSES_STORE_MAX_BYTES: Type.Integer({ minimum: 0, maximum: 1_099_511_627_776, default: 64 * 1024 * 1024, description: "Responses API: most bytes (JSON) the stored responses take, least recently used evicted first" }),
  PROMPT_CACHE_MIB: Type.Integer({ minimum: 0, maximum: 1_048_576, default: 2048, description: "Host memory for prompt prefixes evicted from slots (MiB; 0: off). A 400-token prefix of Qwen3-1.7B is ~44 MiB" }),
  PROMPT_CACHE_MIN_TOKENS: Type.Integer({ minimum: 1, maximum: 1_048_576, default: 32, description: "Shortest prompt prefix worth copying between slots, restoring or saving" }),
  PROMPT_CACHE_DIR: Type.String({ default: "", description: "Where prompt prefixes are kept across restarts (empty: <MODELS_DIR>/.cache/prompt-cache)" }),
  PROMPT_CACHE_DISK_MIB: Type.Integer({ minimum: 0, maximum: 1_048_576, default: 4096, description: "Disk for prompt prefixes kept across restarts, per model and context (MiB; 0: not persisted)" }),
  PROMPT_CACHE_SAVE_INTERVAL_S: Type.Integer({ minimum: 0, maximum: 86_400, default: 10, description: "How often new prompt prefixes are written to disk (each once, as they appear), so a stop has little left to write (0: only at shutdown)" }),
  SLOT_SAVE_PATH: Type.String({ default: "", description: "Directory for llama-server's POST /slots/{id}?action=save|restore files (empty: the slot actions are off, as in llama-server)" }),
  DRAIN_TIMEOUT_MS: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400_000, description: "On SIGTERM, how long running requests may finish; default LLM_REQUEST_TIMEOUT_MS" })),
});
export type Env = Static<typeof EnvSchema>;

export type Config = Readonly<{
  port: number;
  host: string;
  llmModel: string;
  embedModel: string;
  llmModelAliases: readonly string[];
  embedModelAliases: readonly string[];
  /** Every embedding model served, the default (EMBED_MODEL) first. */
  embedModels: readonly string[];
  rerankModels: readonly string[];
  rerankMaxDocuments: number;
  modelsDir: string;
  modelDownload: boolean;
  /** Everything the chat engine runs with, passed to it unchanged. */
  chat: ChatEngineSettings;
  gpu: GpuChoice;
  gpuLayers: "auto" | "max" | number;
  /** LLAMA_BINDING and LLAMA_FAST_BUILD (docs/native-build.md). */
  binding: Env["LLAMA_BINDING"];
  fastBuild: Env["LLAMA_FAST_BUILD"];
  threads: number;
  embedMaxTexts: number;
  embedBatchTokens: number;
  embedBatchSequences: number;
  embedNative: boolean;
  /** Per embedding or rerank model: what its queue admits (texts or pairs, and their tokens). */
  retrievalQueue: Readonly<{ maxInputs: number; maxTokens: number }>;
  retrievalTimeoutMs: number;
  bodyLimitBytes: number;
  warmup: boolean;
  logLevel: Env["LOG_LEVEL"];
  logFormat: Env["LOG_FORMAT"];
  apiKeys: readonly string[];
  corsOrigins: readonly string[];
  metricsAuth: boolean;
  drainTimeoutMs: number;
  responseStore: Readonly<{ maxItems: number; maxBytes: number }>;
}>;

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

function readBackendDefault(): GpuChoice {
  try {
    const file = JSON.parse(readFileSync(path.join(projectRoot, "binding-config", "backend.json"), "utf8")) as { gpu?: unknown };
    if (Value.Check(GpuChoice, file.gpu)) return file.gpu;
  } catch { /* no file: auto */ }
  return "auto";
}

/**
 * Strict string -> value: "12" is an integer only where the schema takes one, "12.5" never is one
 * (TypeBox's own Convert would truncate it), "true"/"false" are booleans only where expected.
 */
function fromEnvString(schema: TSchema, value: string): unknown {
  const members: TSchema[] = "anyOf" in schema ? (schema.anyOf as TSchema[]) : [schema];
  const literals = members.flatMap((m) => ("const" in m ? [m.const] : []));
  if (literals.includes(value)) return value;
  const types = new Set(members.map((m) => m.type as unknown));
  if (types.has("integer") && /^-?\d+$/.test(value)) return Number(value);
  if (types.has("boolean") && (value === "true" || value === "false")) return value === "true";
  return value;
}

/** Reads and validates the variables; throws ConfigError listing every bad variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const raw: Record<string, string> = {};
  const converted: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(EnvSchema.properties)) {
    const value = env[key]?.trim();
    if (value === undefined || value === "") continue;
    raw[key] = value;
    converted[key] = fromEnvString(schema, value);
  }
  const withDefaults = Value.Default(EnvSchema, converted);
  const errors = [...Value.Errors(EnvSchema, withDefaults)];
  if (errors.length > 0) {
    const lines = errors.map((e) => {
      const name = e.path.replace(/^\//, "").split("/")[0] ?? e.path;
      return `  ${name}=${JSON.stringify(raw[name])}: ${e.message}` + (EnvSchema.properties[name as keyof Env]?.description ? ` (${EnvSchema.properties[name as keyof Env].description})` : "");
    });
    throw new ConfigError(`Invalid configuration:\n${[...new Set(lines)].join("\n")}`);
  }
  const e = withDefaults as Env;
  const conflicts = [...settingConflicts(e), ...retrievalConflicts(e)];
  if (conflicts.length > 0) throw new ConfigError(`Invalid configuration (settings that cannot work together):\n${conflicts.map((c) => `  ${c}`).join("\n")}`);
  const corsOrigins = parseCorsOrigins(e.CORS_ORIGINS);
  return Object.freeze({
    port: e.PORT,
    host: e.HOST,
    llmModel: e.LLM_MODEL,
    embedModel: e.EMBED_MODEL,
    llmModelAliases: splitList(e.LLM_MODEL_ALIASES),
    embedModelAliases: splitList(e.EMBED_MODEL_ALIASES),
    // EMBED_MODEL is first whatever EMBED_MODELS says: adding a model never changes the vectors of
    // requests that name none (the seed's, and every vector store built before).
    embedModels: Object.freeze([...new Set([e.EMBED_MODEL, ...splitList(e.EMBED_MODELS)])]),
    rerankModels: Object.freeze([...new Set(splitList(e.RERANK_MODELS))]),
    rerankMaxDocuments: e.RERANK_MAX_DOCUMENTS,
    modelsDir: path.resolve(e.MODELS_DIR),
    modelDownload: e.MODEL_DOWNLOAD,
    chat: Object.freeze({
      contextSize: e.LLM_CONTEXT_SIZE,
      parallel: e.LLM_PARALLEL,
      batchSize: e.LLM_BATCH_SIZE,
      gpuLayers: e.LLM_GPU_LAYERS,
      nice: e.LLM_NICE,
      kvCacheType: e.LLM_KV_CACHE_TYPE,
      flashAttention: e.LLM_FLASH_ATTENTION,
      queueSize: e.LLM_QUEUE_SIZE,
      requestTimeoutMs: e.LLM_REQUEST_TIMEOUT_MS,
      engine: e.LLM_ENGINE,
      slotSavePath: e.SLOT_SAVE_PATH === "" ? "" : path.resolve(e.SLOT_SAVE_PATH),
      promptCache: Object.freeze({
        hostMiB: e.PROMPT_CACHE_MIB,
        minTokens: e.PROMPT_CACHE_MIN_TOKENS,
        dir: e.PROMPT_CACHE_DIR === "" ? path.join(path.resolve(e.MODELS_DIR), ".cache", "prompt-cache") : path.resolve(e.PROMPT_CACHE_DIR),
        diskMiB: e.PROMPT_CACHE_DISK_MIB,
        saveIntervalS: e.PROMPT_CACHE_SAVE_INTERVAL_S,
      }),
    }),
    gpu: e.LLM_GPU === "" ? readBackendDefault() : e.LLM_GPU,
    gpuLayers: e.LLM_GPU_LAYERS,
    binding: e.LLAMA_BINDING,
    fastBuild: e.LLAMA_FAST_BUILD,
    threads: e.LLM_THREADS,
    embedMaxTexts: e.EMBED_MAX_TEXTS,
    embedBatchTokens: e.EMBED_BATCH_TOKENS,
    embedBatchSequences: e.EMBED_BATCH_SEQUENCES,
    embedNative: e.EMBED_NATIVE,
    retrievalQueue: Object.freeze({ maxInputs: e.RETRIEVAL_QUEUE_TEXTS, maxTokens: e.RETRIEVAL_QUEUE_TOKENS }),
    retrievalTimeoutMs: e.RETRIEVAL_TIMEOUT_MS ?? e.LLM_REQUEST_TIMEOUT_MS,
    bodyLimitBytes: e.BODY_LIMIT_BYTES,
    warmup: e.WARMUP,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    apiKeys: Object.freeze(splitList(e.LLM_API_KEY)),
    corsOrigins,
    metricsAuth: e.METRICS_AUTH,
    // A request never outlives its own deadline, so draining that long lets every answer finish.
    drainTimeoutMs: e.DRAIN_TIMEOUT_MS ?? e.LLM_REQUEST_TIMEOUT_MS,
    responseStore: Object.freeze({ maxItems: e.RESPONSES_STORE_MAX_ITEMS, maxBytes: e.RESPONSES_STORE_MAX_BYTES }),
  });
}

/**
 * Settings that are each valid but cannot work together. llama.cpp meets some of them with GGML_ASSERT and
 * abort() (48 slots with a 32-token batch: `n_outputs_max <= cparams.n_outputs_max`), so they are refused
 * here, before anything is loaded, each with the variables it involves and a value that works.
 */
export function settingConflicts(e: Pick<Env, "LLM_PARALLEL" | "LLM_BATCH_SIZE" | "LLM_CONTEXT_SIZE"> & Partial<Pick<Env, "LLM_KV_CACHE_TYPE" | "LLM_FLASH_ATTENTION">>): string[] {
  const conflicts: string[] = [];
  if (e.LLM_KV_CACHE_TYPE !== undefined && e.LLM_KV_CACHE_TYPE !== "f16" && e.LLM_FLASH_ATTENTION === "off") {
    // llama.cpp refuses a quantized V cache without flash attention (the context would not be created).
    conflicts.push(`LLM_KV_CACHE_TYPE=${e.LLM_KV_CACHE_TYPE} with LLM_FLASH_ATTENTION=off: a quantized KV cache needs flash attention; set LLM_FLASH_ATTENTION=auto (or LLM_KV_CACHE_TYPE=f16).`);
  }
  const slots = e.LLM_PARALLEL;
  const batch = e.LLM_BATCH_SIZE;
  const perSlot = e.LLM_CONTEXT_SIZE;
  const batchMin = EnvSchema.properties.LLM_BATCH_SIZE.minimum ?? 1;
  if (slots > batch) {
    // Every generating slot puts one token into each decode batch.
    const working = Math.max(slots, 2 ** Math.ceil(Math.log2(slots)));
    conflicts.push(`LLM_PARALLEL=${slots} with LLM_BATCH_SIZE=${batch}: each decode batch carries one token of every slot, so LLM_PARALLEL must not exceed LLM_BATCH_SIZE; ` +
      `set LLM_BATCH_SIZE=${working} (or LLM_PARALLEL=${batch}).`);
  }
  const total = perSlot * slots;
  if (batch > total) {
    // llama.cpp cuts n_batch down to n_ctx; a batch larger than the whole context can never be filled.
    const working = Math.max(batchMin, Math.max(slots, 2 ** Math.floor(Math.log2(total))));
    conflicts.push(`LLM_BATCH_SIZE=${batch} is above the whole context (LLM_CONTEXT_SIZE=${perSlot} x LLM_PARALLEL=${slots} = ${total} tokens): ` +
      `a decode never holds more tokens than the context; set LLM_BATCH_SIZE=${working} (or LLM_CONTEXT_SIZE=${Math.ceil(batch / slots)}).`);
  }
  return conflicts;
}

/** A request larger than its model's queue would only ever run on an idle model: under load it would get 429s forever. */
export function retrievalConflicts(e: Pick<Env, "RETRIEVAL_QUEUE_TEXTS" | "EMBED_MAX_TEXTS" | "RERANK_MAX_DOCUMENTS" | "RERANK_MODELS">): string[] {
  const conflicts: string[] = [];
  if (e.RETRIEVAL_QUEUE_TEXTS < e.EMBED_MAX_TEXTS) {
    conflicts.push(`RETRIEVAL_QUEUE_TEXTS=${e.RETRIEVAL_QUEUE_TEXTS} is below EMBED_MAX_TEXTS=${e.EMBED_MAX_TEXTS}: the largest embed request would not fit the queue beside any other; ` +
      `set RETRIEVAL_QUEUE_TEXTS=${e.EMBED_MAX_TEXTS * 4} (or EMBED_MAX_TEXTS=${e.RETRIEVAL_QUEUE_TEXTS}).`);
  }
  if (e.RERANK_MODELS.trim() !== "" && e.RETRIEVAL_QUEUE_TEXTS < e.RERANK_MAX_DOCUMENTS) {
    conflicts.push(`RETRIEVAL_QUEUE_TEXTS=${e.RETRIEVAL_QUEUE_TEXTS} is below RERANK_MAX_DOCUMENTS=${e.RERANK_MAX_DOCUMENTS}: the largest rerank request would not fit the queue beside any other; ` +
      `set RETRIEVAL_QUEUE_TEXTS=${e.RERANK_MAX_DOCUMENTS * 4} (or RERANK_MAX_DOCUMENTS=${e.RETRIEVAL_QUEUE_TEXTS}).`);
  }
  return conflicts;
}

const splitList = (value: string): string[] => value.split(",").map((item) => item.trim()).filter((item) => item !== "");

/** Each entry must be `*` or a bare origin (`scheme://host[:port]`): a path or a trailing slash never matches a browser's Origin. */
function parseCorsOrigins(value: string): readonly string[] {
  const origins = splitList(value);
  for (const origin of origins) {
    if (origin === "*") continue;
    let parsed: URL | undefined;
    try {
      parsed = new URL(origin);
    } catch { /* reported below */ }
    if (parsed?.origin !== origin) {
      throw new ConfigError(`Invalid configuration:\n  CORS_ORIGINS=${JSON.stringify(value)}: ${JSON.stringify(origin)} is not an origin like http://localhost:8000 (scheme://host[:port], no path)`);
    }
  }
  return Object.freeze(origins);
}
