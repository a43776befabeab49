// Turns a model setting (a name from models/models.json or a path) into a GGUF file on disk,
// downloading a missing default once with a progress bar and checking its size and sha256.
import { createHash } from "node:crypto";
import { createReadStream, existsSync, readFileSync, statSync } from "node:fs";
import { rename, unlink } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Type, type Static } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { createModelDownloader, readGgufFileInfo } from "node-llama-cpp";

const ManifestEntry = Type.Object({
  name: Type.String({ minLength: 1 }),
  kind: Type.Union([Type.Literal("chat"), Type.Literal("embedding"), Type.Literal("rerank")]),
  aliases: Type.Optional(Type.Array(Type.String())),
  file: Type.String({ minLength: 1 }),
  url: Type.String({ pattern: "^https://" }),
  size: Type.Integer({ minimum: 1 }),
  sha256: Type.Union([Type.String({ pattern: "^[0-9a-f]{64}$" }), Type.Null()]),
  /** Tokens per text the model was trained to read (sentence-transformers' max_seq_length), when below its context. */
  maxTokens: Type.Optional(Type.Integer({ minimum: 2 })),
  /**
   * Texts put before an input, by name (sentence-transformers' `prompts`, TEI's `prompt_name`), e.g.
   * multilingual-e5's {"query": "query: ", "passage": "passage: "}. Clients name one; they never paste it.
   */
  prompts: Type.Optional(Type.Record(Type.String({ minLength: 1 }), Type.String())),
  /** Which prompt each Cohere/Voyage `input_type` means for this model; an input_type not listed adds nothing. */
  inputTypes: Type.Optional(Type.Partial(Type.Object({
    search_query: Type.String(), search_document: Type.String(), classification: Type.String(), clustering: Type.String(),
  }))),
  /** The prompt used when a request names none (sentence-transformers' `default_prompt_name`); none: no prefix. */
  defaultPrompt: Type.Optional(Type.String()),
  /** Pooling as the model's card says, when the GGUF's own `pooling_type` differs (embedding models; native embedder only). */
  pooling: Type.Optional(Type.Union([Type.Literal("none"), Type.Literal("mean"), Type.Literal("cls"), Type.Literal("last"), Type.Literal("rank")])),
  /** L2-normalise the vectors (default true, as sentence-transformers' Normalize layer). */
  normalize: Type.Optional(Type.Boolean()),
  license: Type.Optional(Type.String()),
  notes: Type.Optional(Type.String()),
});
export type ManifestEntry = Static<typeof ManifestEntry>;
const Manifest = Type.Object({ models: Type.Array(ManifestEntry) });

export type ResolvedModelFile = {
  path: string;
  /** The name the API reports: the manifest name, or the file name without `.gguf`. */
  name: string;
  /** Other names a client may use for this model (seed spelling, e.g. sentence-transformers/...). */
  aliases: readonly string[];
  entry: ManifestEntry | null;
};

export class ModelFileError extends Error {
  override readonly name = "ModelFileError";
}

/** The project's own manifest, used when MODELS_DIR (e.g. a container volume) has none of its own. */
const shippedManifest = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "models", "models.json");

export function manifestPath(modelsDir: string): string {
  const own = path.join(modelsDir, "models.json");
  return existsSync(own) ? own : shippedManifest;
}

export function readManifest(modelsDir: string): ManifestEntry[] {
  const file = manifestPath(modelsDir);
  if (!existsSync(file)) return [];
  const parsed: unknown = JSON.parse(readFileSync(file, "utf8"));
  if (!Value.Check(Manifest, parsed)) {
    const first = [...Value.Errors(Manifest, parsed)][0];
    throw new ModelFileError(`${file} is malformed at ${first?.path}: ${first?.message}`);
  }
  return parsed.models;
}

function looksLikePath(setting: string): boolean {
  return setting.endsWith(".gguf") || setting.includes("/") && existsSync(setting) || setting.startsWith(".") || path.isAbsolute(setting);
}

export type ResolveOptions = {
  modelsDir: string;
  allowDownload: boolean;
  /** Name of the environment variable the setting came from, for error messages. */
  envName: string;
  /** Which manifest entries a file given by path may be recognised as. */
  kind?: ManifestEntry["kind"];
  log: (message: string) => void;
};

export async function resolveModelFile(setting: string, opts: ResolveOptions): Promise<ResolvedModelFile> {
  const manifest = readManifest(opts.modelsDir);
  const entry = manifest.find((m) => m.name === setting || (m.aliases ?? []).includes(setting));
  if (entry === undefined) {
    if (!looksLikePath(setting)) {
      throw new ModelFileError(
        `${opts.envName}=${setting} is neither a path to a .gguf file nor a model in ${manifestPath(opts.modelsDir)} ` +
        `(known: ${manifest.map((m) => m.name).join(", ") || "none"}).`);
    }
    const file = path.resolve(setting);
    if (!existsSync(file) || !statSync(file).isFile()) throw new ModelFileError(`${opts.envName}: no file at ${file}.`);
    return recogniseFile(file, manifest.filter((m) => opts.kind === undefined || m.kind === opts.kind));
  }
  const file = path.join(opts.modelsDir, entry.file);
  const resolved = { path: file, name: entry.name, aliases: entry.aliases ?? [], entry };
  if (existsSync(file)) {
    const size = statSync(file).size;
    if (size !== entry.size) {
      throw new ModelFileError(`${file} is ${size} bytes, models.json says ${entry.size}: delete it to download it again, ` +
        `or set ${opts.envName} to the path of a GGUF file.`);
    }
    return resolved;
  }
  const howToFix = `Download it yourself (curl -L -o '${file}' '${entry.url}') or set ${opts.envName}=/path/to/a/local.gguf.`;
  if (!opts.allowDownload) throw new ModelFileError(`Model file ${file} is missing and MODEL_DOWNLOAD=false. ${howToFix}`);
  opts.log(`Downloading ${entry.name} (${(entry.size / 2 ** 20).toFixed(0)} MiB) from ${entry.url}`);
  try {
    await download(entry, file);
  } catch (error) {
    throw new ModelFileError(`Could not download ${entry.file} from ${entry.url}: ${(error as Error).message}. ${howToFix}`);
  }
  return resolved;
}

/** Names compared the way people type them: case, spaces and a `.gguf` suffix do not matter. */
export const normaliseModelName = (name: string): string => name.trim().toLowerCase().replace(/\.gguf$/, "").replace(/\s+/g, "-");

async function ggufGeneralName(file: string): Promise<string | null> {
  try {
    const info = await readGgufFileInfo(file, { readTensorInfo: false, logWarnings: false, ignoreKeys: ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"] });
    const name = (info.metadata.general as { name?: unknown } | undefined)?.name;
    return typeof name === "string" && name.trim() !== "" ? name.trim() : null;
  } catch {
    return null; // llama.cpp reports an unreadable file when it loads it, with a better message.
  }
}

/**
 * A model given by path keeps the names it has in the manifest: a file named as the manifest's (or
 * as the download URL's) file is that model, and so is one whose stem or GGUF `general.name` is the
 * manifest's name or an alias. Matched by file name it reports the manifest name; matched by its
 * own name it reports its file stem and answers to the manifest's names too.
 */
async function recogniseFile(file: string, manifest: readonly ManifestEntry[]): Promise<ResolvedModelFile> {
  const stem = path.basename(file).replace(/\.gguf$/i, "");
  const generalName = await ggufGeneralName(file);
  const fileName = normaliseModelName(path.basename(file));
  const byFile = manifest.find((m) => normaliseModelName(m.file) === fileName || normaliseModelName(path.basename(new URL(m.url).pathname)) === fileName);
  const ownNames = [stem, ...(generalName === null ? [] : [generalName])].map(normaliseModelName);
  const entry = byFile ?? manifest.find((m) => [m.name, ...(m.aliases ?? [])].some((n) => ownNames.includes(normaliseModelName(n)))) ?? null;
  const name = byFile ? byFile.name : stem;
  const names = [...(entry ? [entry.name, ...(entry.aliases ?? [])] : []), stem, ...(generalName === null ? [] : [generalName])];
  return { path: file, name, aliases: [...new Set(names)].filter((n) => n !== name), entry };
}

/**
 * The downloader retries a refused connection for minutes; one quick request first tells an offline
 * machine apart at once.
 */
async function checkReachable(url: string): Promise<void> {
  try {
    await fetch(url, { method: "HEAD", redirect: "follow", signal: AbortSignal.timeout(15_000) });
  } catch (error) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    throw new Error(`the host is unreachable (${cause?.code ?? cause?.message ?? (error as Error).message}); this machine looks offline`);
  }
}

async function download(entry: ManifestEntry, file: string): Promise<void> {
  await checkReachable(entry.url);
  // The downloader resumes a partial file left by an interrupted run (it keeps it beside the target).
  const partial = `${file}.partial`;
  const downloader = await createModelDownloader({
    modelUri: entry.url,
    dirPath: path.dirname(file),
    fileName: path.basename(partial),
    showCliProgress: process.stderr.isTTY,
    deleteTempFileOnCancel: false,
    skipExisting: true,
  });
  await downloader.download();
  const size = statSync(partial).size;
  if (size !== entry.size) throw new Error(`downloaded ${size} bytes, expected ${entry.size}`);
  if (entry.sha256 !== null) {
    const actual = await sha256File(partial);
    if (actual !== entry.sha256) {
      await unlink(partial);
      throw new Error(`sha256 mismatch: got ${actual}, expected ${entry.sha256} (the file was deleted)`);
    }
  }
  await rename(partial, file);
}

export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    createReadStream(file).on("data", (chunk) => hash.update(chunk)).on("error", reject).on("end", () => resolve(hash.digest("hex")));
  });
}
