// The two models this service serves, under every name a client may use for them, with what their
// GGUF files say about them (for Ollama's /api/show and /api/tags) and their tokenizers. Every API
// resolves a requested model name here, so "all-MiniLM-L6-v2" means the same thing everywhere.
import { createHash } from "node:crypto";
import { statSync } from "node:fs";
import { GgufFileType, GgufInsights, readGgufFileInfo, type Llama } from "node-llama-cpp";
import { normaliseModelName, type ResolvedModelFile } from "./modelFiles.js";
import { ModelTokenizer } from "./tokenizer.js";

export type ModelKind = "chat" | "embedding";

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
};

export type ServedModel = {
  kind: ModelKind;
  /** The name every response reports. */
  name: string;
  /** Every other name it answers to: manifest aliases, the file's own names, *_MODEL_ALIASES. */
  aliases: readonly string[];
  path: string;
  details: ModelDetails;
  tokenizer: ModelTokenizer;
};

export class ServedModels {
  private constructor(readonly chat: ServedModel, readonly embedding: ServedModel) {}

  static async load(llama: Llama, files: Record<ModelKind, { file: ResolvedModelFile; extraAliases: readonly string[] }>): Promise<ServedModels> {
    const load = async (kind: ModelKind): Promise<ServedModel> => {
      const { file, extraAliases } = files[kind];
      const aliases = [...new Set([...file.aliases, ...extraAliases])].filter((a) => a !== file.name);
      const [details, tokenizer] = await Promise.all([readDetails(llama, file), ModelTokenizer.load(llama, file.path, kind)]);
      return { kind, name: file.name, aliases, path: file.path, details, tokenizer };
    };
    const chat = await load("chat");
    try {
      return new ServedModels(chat, await load("embedding"));
    } catch (error) {
      await chat.tokenizer.dispose();
      throw error;
    }
  }

  list(): ServedModel[] {
    return [this.chat, this.embedding];
  }

  /**
   * The model a name means: its name or an alias, compared without case, spaces or `.gguf`; an
   * Ollama-style `:latest` tag means the untagged name.
   */
  find(requested: string): ServedModel | undefined {
    const wanted = normaliseModelName(requested);
    const candidates = wanted.endsWith(":latest") ? [wanted, wanted.slice(0, -":latest".length)] : [wanted];
    return this.list().find((m) => [m.name, ...m.aliases].some((n) => candidates.includes(normaliseModelName(n))));
  }

  /** "Qwen3-1.7B-Q4_K_M (also: qwen3:1.7b, …)" for error messages that list what is served. */
  describeServed(): string {
    return this.list().map((m) => `'${m.name}'` + (m.aliases.length > 0 ? ` (also ${m.aliases.map((a) => `'${a}'`).join(", ")})` : "")).join("; ");
  }

  async dispose(): Promise<void> {
    await Promise.allSettled([this.chat.tokenizer.dispose(), this.embedding.tokenizer.dispose()]);
  }
}

async function readDetails(llama: Llama, file: ResolvedModelFile): Promise<ModelDetails> {
  const info = await readGgufFileInfo(file.path, { logWarnings: false, ignoreKeys: ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"] });
  const insights = await GgufInsights.from(info, llama);
  const metadata = info.metadata as unknown as Record<string, Record<string, unknown> | undefined>;
  const general = metadata.general ?? {};
  const architecture = typeof general.architecture === "string" ? general.architecture : "unknown";
  const fileType = typeof general.file_type === "number" ? GgufFileType[general.file_type] : undefined;
  const stat = statSync(file.path);
  const chatTemplate = (metadata.tokenizer as { chat_template?: unknown } | undefined)?.chat_template;
  const parameterCount = insights.totalParameters;
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
