// Every model this service serves: one chat model, one or more embedding models (the first is the
// default), zero or more rerankers. Each has its names (manifest name, aliases, file names), what its
// GGUF says about it, its tokenizer, the memory it took at load and its engine. Every API resolves a
// request's `model` here, so "all-MiniLM-L6-v2" means the same model everywhere; a new kind of model
// is a new entry in `EngineOf`, an engine file and a route.
import { createHash } from "node:crypto";
import { statSync } from "node:fs";
import { GgufFileType, GgufInsights, readGgufFileInfo, type GgufFileInfo, type Llama, type LlamaModel } from "node-llama-cpp";
import type { ChatEngine } from "./chat/engine.js";
import type { EmbedEngine } from "./embed.js";
import { EngineError } from "./errors.js";
import { normaliseModelName, type ResolvedModelFile } from "./modelFiles.js";
import type { RerankEngine } from "./rerank.js";
import type { ModelPrompts } from "./prompts.js";
import type { ModelTokenizer } from "./tokenizer.js";

/** The engine behind each kind of model. */
export type EngineOf = { chat: ChatEngine; embedding: EmbedEngine; rerank: RerankEngine };
export type ModelKind = keyof EngineOf;
export const MODEL_KINDS: readonly ModelKind[] = ["chat", "embedding", "rerank"];

/** What the GGUF header says about a model. */
export type ModelDetails = {
  /** `general.architecture`, e.g. qwen3, bert. */
  architecture: string;
  /** Parameters counted from the tensor shapes. */
  parameterCount: number;
  /** As Ollama writes it: "1.7B", "23M". */
  parameterSize: string;
  /** The file type: Q4_K_M, F16, F32 … */
  quantization: string;
  contextLength: number | null;
  embeddingLength: number | null;
  /** The GGUF's Jinja chat template (`tokenizer.chat_template`), if it has one. */
  chatTemplate: string | null;
  /** `general.*` and `<architecture>.*` keys with scalar values (Ollama's model_info). */
  info: Record<string, string | number | boolean>;
  fileBytes: number;
  modifiedAt: Date;
  /** The manifest's sha256 when the file is the manifest's; else a hash of path, size and mtime (an identifier only). */
  digest: string;
  /** llama.cpp's own estimate (through node-llama-cpp) of the RAM the weights take on the CPU. */
  weightsBytes: number;
};

/** Memory a model took when it was loaded: the estimate of its weights and the process's RSS growth while its engine loaded. */
export type ModelMemory = { weightsBytes: number; rssGrowthBytes: number };

export type ServedModelOf<K extends ModelKind> = {
  kind: K;
  /** The name every response reports. */
  name: string;
  /** Every other name it answers to: manifest aliases, the file's own names, *_MODEL_ALIASES. */
  aliases: readonly string[];
  /** The default of its kind: what a request that names no model gets. */
  isDefault: boolean;
  path: string;
  details: ModelDetails;
  tokenizer: ModelTokenizer;
  /** Prefixes by name, from the manifest (embedding models). */
  prompts: ModelPrompts;
  memory: ModelMemory;
  engine: EngineOf[K];
};
export type ServedModel = { [K in ModelKind]: ServedModelOf<K> }[ModelKind];

/** A model's names and GGUF facts, read before its engine loads (the chat model's tokenizer comes with its engine). */
export type ModelIdentity = Omit<ServedModelOf<ModelKind>, "kind" | "isDefault" | "memory" | "engine" | "tokenizer"> & {
  /** The GGUF header (tokenizer arrays left out where read here) and node-llama-cpp's insights from it. */
  gguf: { fileInfo: GgufFileInfo; insights: GgufInsights };
};

const withArticle = (kind: ModelKind) => `${kind === "embedding" ? "an" : "a"} ${kind}`;

/** One served model's names, as a model error lists them. */
export type ServedName = { kind: ModelKind; name: string; aliases: readonly string[] };

/**
 * A request named a model this server cannot use for it: unknown (`found` undefined), of another kind
 * (`found` its kind), or none of the `wanted` kind is served. It carries what each API needs to say so
 * in its own words and status (src/http/errors.ts); the message is the OpenAI-style wording.
 */
export class ModelNotFoundError extends EngineError {
  constructor(
    readonly requested: string | undefined,
    /** The kind the route needs; undefined: any kind (tokenize, a model's details). */
    readonly wanted: ModelKind | undefined,
    readonly found: ModelKind | undefined,
    readonly served: readonly ServedName[],
  ) {
    super("model_not_found", modelNotFoundMessage(requested, wanted, found, served, "'"), 404, "model");
  }
}

/** "'Qwen3-1.7B-Q4_K_M' (also 'qwen3:1.7b', …); …" for error messages that list what is served. */
export function describeNames(served: readonly ServedName[], q = "'"): string {
  return served.map((m) => `${q}${m.name}${q}` + (m.aliases.length > 0 ? ` (also ${m.aliases.map((a) => `${q}${a}${q}`).join(", ")})` : "")).join("; ");
}

/** The wording of the seed, OpenAI and TEI APIs (`q` quotes names). */
export function modelNotFoundMessage(requested: string | undefined, wanted: ModelKind | undefined, found: ModelKind | undefined, served: readonly ServedName[], q: string): string {
  const ofKind = served.filter((m) => wanted === undefined || m.kind === wanted);
  if (ofKind.length === 0) return `This server serves no ${wanted} model (${describeNames(served, q)}).`;
  if (found === undefined) {
    return wanted === undefined
      ? `The model ${q}${requested}${q} does not exist here; this server serves ${describeNames(served, q)}.`
      : `The model ${q}${requested}${q} is not served here; ${wanted} models: ${describeNames(ofKind, q)}.`;
  }
  return `${q}${requested}${q} is ${withArticle(found)} model, not ${withArticle(wanted!)} model; ${wanted} models: ${describeNames(ofKind, q)}.`;
}

export class ModelRegistry {
  private readonly models: readonly ServedModel[];

  /** @param models in configuration order; the first of each kind is its default. */
  constructor(models: readonly ServedModel[]) {
    if (!models.some((m) => m.kind === "chat")) throw new Error("ModelRegistry: no chat model");
    if (!models.some((m) => m.kind === "embedding")) throw new Error("ModelRegistry: no embedding model");
    const taken = new Set<string>();
    // Names are unique across the registry: a model whose name another one already answers to is a
    // configuration error; an alias already taken is dropped from the later model (the first keeps it).
    this.models = Object.freeze(models.map((m) => {
      const name = normaliseModelName(m.name);
      if (taken.has(name)) throw new Error(`Two served models answer to '${m.name}': give one of them another file name or remove it.`);
      taken.add(name);
      const aliases = m.aliases.filter((a) => {
        const n = normaliseModelName(a);
        if (taken.has(n)) return false;
        taken.add(n);
        return true;
      });
      return { ...m, aliases, isDefault: models.find((o) => o.kind === m.kind) === m } as ServedModel;
    }));
  }

  /** Every model, in configuration order (chat, embeddings, rerankers). */
  list(): readonly ServedModel[] {
    return this.models;
  }

  ofKind<K extends ModelKind>(kind: K): ServedModelOf<K>[] {
    return this.models.filter((m): m is ServedModelOf<K> & ServedModel => m.kind === kind);
  }

  defaultOf<K extends ModelKind>(kind: K): ServedModelOf<K> | undefined {
    return this.ofKind(kind)[0];
  }

  get chat(): ServedModelOf<"chat"> {
    return this.defaultOf("chat")!;
  }

  /** The default embedding model (EMBED_MODEL). */
  get embedding(): ServedModelOf<"embedding"> {
    return this.defaultOf("embedding")!;
  }

  /**
   * The model a name means: its name or an alias, compared without case, spaces or `.gguf`; an
   * Ollama-style `:latest` tag means the untagged name.
   */
  find(requested: string): ServedModel | undefined {
    const wanted = normaliseModelName(requested);
    const candidates = wanted.endsWith(":latest") ? [wanted, wanted.slice(0, -":latest".length)] : [wanted];
    return this.models.find((m) => [m.name, ...m.aliases].some((n) => candidates.includes(normaliseModelName(n))));
  }

  /**
   * The model of `kind` a request names (its default when it names none; `undefined` kind: any model,
   * the chat model by default). Unknown names, models of another kind and a kind not served throw a
   * ModelNotFoundError; each API words it and chooses its status (src/http/errors.ts).
   */
  resolve<K extends ModelKind>(kind: K, requested: string | undefined): ServedModelOf<K>;
  resolve(kind: ModelKind | undefined, requested: string | undefined): ServedModel;
  resolve(kind: ModelKind | undefined, requested: string | undefined): ServedModel {
    const served = kind === undefined ? this.models : this.models.filter((m) => m.kind === kind);
    const refuse = (found: ModelKind | undefined) => new ModelNotFoundError(requested, kind, found, this.models);
    if (served.length === 0) throw refuse(undefined);
    if (requested === undefined) return kind === undefined ? this.chat : served[0]!;
    const found = this.find(requested);
    if (found === undefined) throw refuse(undefined);
    if (kind !== undefined && found.kind !== kind) throw refuse(found.kind);
    return found;
  }

  async dispose(): Promise<void> {
    await Promise.allSettled(this.models.flatMap((m) => [m.engine.dispose(), m.tokenizer.dispose()]));
  }
}

/** The tokenizer arrays (151,936 strings for Qwen): the chat engine's own vocabulary answers for them. */
const TOKENIZER_ARRAYS = ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"];

/**
 * A model file's names and GGUF details (the engine and tokenizer are loaded by the caller). `source`: a model
 * already loaded from the file (a vocabulary-only tokenizer), whose header is reused rather than read again.
 */
export async function readIdentity(
  llama: Llama, file: ResolvedModelFile, extraAliases: readonly string[], prompts: ModelPrompts, source?: LlamaModel,
): Promise<ModelIdentity> {
  const aliases = [...new Set([...file.aliases, ...extraAliases])].filter((a) => a !== file.name);
  const gguf = source ? { fileInfo: source.fileInfo, insights: source.fileInsights } : await readModelGguf(llama, file.path);
  return { name: file.name, aliases, path: file.path, details: await readDetails(gguf.fileInfo, gguf.insights, file), prompts, gguf };
}

/** A GGUF's header (tokenizer arrays left out) and node-llama-cpp's insights from it, without loading the model. */
export async function readModelGguf(llama: Llama, modelPath: string): Promise<{ fileInfo: GgufFileInfo; insights: GgufInsights }> {
  const fileInfo = await readGgufFileInfo(modelPath, { logWarnings: false, ignoreKeys: TOKENIZER_ARRAYS });
  return { fileInfo, insights: await GgufInsights.from(fileInfo, llama) };
}

async function readDetails(info: GgufFileInfo, insights: GgufInsights, file: ResolvedModelFile): Promise<ModelDetails> {
  const metadata = info.metadata as unknown as Record<string, Record<string, unknown> | undefined>;
  const general = metadata.general ?? {};
  const architecture = typeof general.architecture === "string" ? general.architecture : "unknown";
  const fileType = typeof general.file_type === "number" ? GgufFileType[general.file_type] : undefined;
  const stat = statSync(file.path);
  const chatTemplate = (metadata.tokenizer as { chat_template?: unknown } | undefined)?.chat_template;
  const parameterCount = insights.totalParameters;
  const weights = await insights.estimateModelResourceRequirementsV2({ gpuLayers: 0 });
  return {
    architecture,
    parameterCount,
    parameterSize: humanCount(parameterCount),
    quantization: fileType?.replace(/^(MOSTLY|ALL)_/, "") ?? "unknown",
    contextLength: insights.trainContextSize ?? null,
    embeddingLength: insights.embeddingVectorSize ?? null,
    chatTemplate: typeof chatTemplate === "string" ? chatTemplate : null,
    info: {
      ...flatScalars("general", general),
      "general.parameter_count": parameterCount,
      ...flatScalars(architecture, metadata[architecture] ?? {}),
    },
    fileBytes: stat.size,
    modifiedAt: stat.mtime,
    digest: file.entry?.sha256 && file.entry.size === stat.size
      ? file.entry.sha256
      : createHash("sha256").update(`${file.path}\0${stat.size}\0${stat.mtimeMs}`).digest("hex"),
    weightsBytes: weights.cpuRam,
  };
}

/** `{attention: {head_count: 16}}` under "qwen3" -> `{"qwen3.attention.head_count": 16}`; arrays are left out. */
function flatScalars(prefix: string, value: Record<string, unknown>): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [key, v] of Object.entries(value)) {
    const name = `${prefix}.${key}`;
    if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") out[name] = v;
    else if (typeof v === "bigint") out[name] = Number(v);
    else if (v !== null && typeof v === "object" && !Array.isArray(v)) Object.assign(out, flatScalars(name, v as Record<string, unknown>));
  }
  return out;
}

/** 1_720_574_976 -> "1.7B", 22_713_216 -> "23M", as Ollama's details.parameter_size. */
export function humanCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (n >= 1e6) return `${Math.round(n / 1e6)}M`;
  if (n >= 1e3) return `${Math.round(n / 1e3)}K`;
  return String(n);
}
