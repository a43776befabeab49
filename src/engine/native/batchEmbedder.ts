// Batched embeddings through a small native addon (batch_embed.cpp) that links against the libllama
// shipped with node-llama-cpp's prebuilt binaries. Many texts go into ONE llama_decode, each text as its
// own sequence, and every sequence's pooled vector is read with llama_get_embeddings_seq — the way
// llama-server does it — instead of node-llama-cpp's one-text-per-decode embedding context.
//
// The addon is compiled by scripts/build-native.ts into node_modules/.cache/bora-native/<key>/. This
// module only *finds* and loads it: when it is missing or cannot load, `tryLoad` reports why and the
// engine falls back to node-llama-cpp's embedding context.
//
// Load it after node-llama-cpp's `getLlama()`: that registers the ggml backends (the CPU variants are
// separate shared objects) and loads libllama, which this addon then shares. If no backend is
// registered the addon loads them itself from the directory of the libllama it is linked to.
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);

export interface NativeBatchEmbedderOptions {
  modelPath: string;
  threads: number;
  /** Most texts (sequences) per llama_decode, 1..256 (capped at batchTokens). */
  maxSequences: number;
  /**
   * Tokens packed into one llama_decode. It never limits a text: a text longer than this (up to
   * `maxTokensPerText`) is decoded alone, so no batch setting changes a vector.
   */
  batchTokens: number;
  /**
   * Longest text (in tokens) the model reads, e.g. sentence-transformers' max_seq_length; capped at the
   * model's trained context, which is also the default. The context (n_ctx = n_batch = n_ubatch) holds
   * max(batchTokens, this), rounded up to a multiple of maxSequences (llama.cpp aborts otherwise).
   */
  maxTokensPerText?: number;
  /** Layers to offload to a GPU; defaults to 0 (CPU). */
  gpuLayers?: number;
  /** Flash attention on/off; default: llama.cpp's "auto". */
  flashAttention?: boolean;
}

/** What the native `load()` resolves with. */
interface NativeLoadInfo {
  dimension: number;
  trainContextSize: number;
  poolingType: string;
  maxSequences: number;
  batchTokens: number;
  contextTokens: number;
  maxTokensPerText: number;
  hasMemory: boolean;
}

/** Where the time of the last `embed` call went, from the addon's own timers (milliseconds). */
export interface NativeEmbedStats {
  texts: number;
  tokens: number;
  decodes: number;
  /** Filling llama_batch. */
  packMs: number;
  /** llama_decode: the model. */
  decodeMs: number;
  /** Reading each text's pooled vector. */
  readMs: number;
  /** Handing the vectors to JS (on the JS thread). */
  returnMs: number;
}

/** The native object (see batch_embed.cpp). */
interface NativeHandle {
  lastStats(): NativeEmbedStats;
  load(): Promise<NativeLoadInfo>;
  tokenize(text: string): Uint32Array;
  embed(tokens: Uint32Array, lengths: Uint32Array): Promise<Float32Array>;
  dispose(): Promise<void>;
}

interface NativeModule {
  BatchEmbedder: new (
    modelPath: string,
    options: { threads: number; maxSequences: number; batchTokens: number; maxTokensPerText?: number; gpuLayers: number; flashAttention?: boolean },
  ) => NativeHandle;
  systemInfo(): { backendDevices: number; llamaLibraryDir: string; llamaSystemInfo: string };
}

// ---------------------------------------------------------------------------------------------------
// Where the addon lives (shared with scripts/build-native.ts so both agree on the cache key)
// ---------------------------------------------------------------------------------------------------

/** Compiler flags of the addon; part of the cache key. */
export const nativeCompileFlags: readonly string[] = [
  "-std=c++17",
  "-O2",
  "-shared",
  "-fPIC",
  "-fvisibility=hidden",
  "-DNAPI_VERSION=8",
  "-DNAPI_CPP_EXCEPTIONS",
  "-DNODE_ADDON_API_DISABLE_DEPRECATED",
];

export interface NativeEmbedAddonBuildInfo {
  /** Project root (the directory holding package.json and node_modules). */
  projectRoot: string;
  sourceFile: string;
  /** Directory of node-llama-cpp's prebuilt libllama / libggml for this platform. */
  binsDir: string;
  /** Library file names in binsDir, e.g. libllama.v0.5.0.so. */
  libraries: { llama: string; ggml: string; ggmlBase: string };
  nodeLlamaCppVersion: string;
  llamaCppTag: string;
  key: string;
  /** The addon file: node_modules/.cache/bora-native/<key>/batch_embed.node */
  addonFile: string;
}

function findUp(start: string, test: (dir: string) => boolean): string | null {
  let dir = start;
  for (;;) {
    if (test(dir)) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

function projectRootDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = findUp(here, (dir) => existsSync(path.join(dir, "package.json")) && existsSync(path.join(dir, "src", "engine", "native")));
  if (root === null) throw new Error(`cannot find the project root above ${here}`);
  return root;
}

function nodeLlamaCppPackageDir(): string {
  const entry = path.dirname(require.resolve("node-llama-cpp"));
  const dir = findUp(entry, (d) => existsSync(path.join(d, "package.json")) && existsSync(path.join(d, "llama")));
  if (dir === null) throw new Error("cannot locate the node-llama-cpp package directory");
  return dir;
}

function findLibrary(files: readonly string[], pattern: RegExp, what: string, dir: string): string {
  const found = files.filter((f) => pattern.test(f)).sort();
  const file = found[0];
  if (file === undefined) throw new Error(`no ${what} library in ${dir}`);
  return file;
}

/** Describes the addon build for this machine (cheap: no compiling, no cloning). Throws when unsupported. */
export function nativeEmbedAddonBuildInfo(): NativeEmbedAddonBuildInfo {
  if (process.platform !== "linux") throw new Error(`the native batch embedder is only built on Linux (this is ${process.platform})`);
  const projectRoot = projectRootDir();
  const sourceFile = path.join(projectRoot, "src", "engine", "native", "batch_embed.cpp");
  if (!existsSync(sourceFile)) throw new Error(`missing ${sourceFile}`);

  const nlcDir = nodeLlamaCppPackageDir();
  const nodeLlamaCppVersion = (JSON.parse(readFileSync(path.join(nlcDir, "package.json"), "utf8")) as { version: string }).version;
  const llamaCppTag = (JSON.parse(readFileSync(path.join(nlcDir, "llama", "llama.cpp.info.json"), "utf8")) as { tag: string }).tag;

  const platformArch = `${process.platform}-${process.arch}`;
  const candidates = [
    path.join(nlcDir, "node_modules", "@node-llama-cpp", platformArch, "bins", platformArch),
    path.join(path.dirname(nlcDir), "@node-llama-cpp", platformArch, "bins", platformArch),
  ];
  const binsDir = candidates.find((dir) => existsSync(dir));
  if (binsDir === undefined) throw new Error(`node-llama-cpp has no prebuilt binaries for ${platformArch} (looked in ${candidates.join(", ")})`);
  const files = readdirSync(binsDir);
  const libraries = {
    llama: findLibrary(files, /^libllama(\.v[\w.]+)?\.so$/, "libllama", binsDir),
    ggml: findLibrary(files, /^libggml(\.v[\w.]+)?\.so$/, "libggml", binsDir),
    ggmlBase: findLibrary(files, /^libggml-base(\.v[\w.]+)?\.so$/, "libggml-base", binsDir),
  };

  const hash = createHash("sha256");
  for (const part of [
    "bora-native-batch-embed/1",
    nodeLlamaCppVersion,
    llamaCppTag,
    process.platform,
    process.arch,
    `node-abi-${process.versions.modules}`,
    `napi-${process.versions.napi ?? "?"}`,
    binsDir,
    libraries.llama,
    String(statSync(path.join(binsDir, libraries.llama)).size),
    nativeCompileFlags.join(" "),
  ]) {
    hash.update(part).update("\0");
  }
  hash.update(readFileSync(sourceFile));
  const key = `${nodeLlamaCppVersion}-${platformArch}-abi${process.versions.modules}-${hash.digest("hex").slice(0, 16)}`;
  const addonFile = path.join(projectRoot, "node_modules", ".cache", "bora-native", key, "batch_embed.node");
  return { projectRoot, sourceFile, binsDir, libraries, nodeLlamaCppVersion, llamaCppTag, key, addonFile };
}

/** Path of the built addon for the current source and runtime, or null when it has not been built. */
export function findNativeEmbedAddon(): string | null {
  try {
    const { addonFile } = nativeEmbedAddonBuildInfo();
    return existsSync(addonFile) ? addonFile : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------------
// The embedder
// ---------------------------------------------------------------------------------------------------

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function isNativeModule(value: unknown): value is NativeModule {
  if (typeof value !== "object" || value === null) return false;
  const candidate = value as Record<string, unknown>;
  return typeof candidate["BatchEmbedder"] === "function" && typeof candidate["systemInfo"] === "function";
}

let loadedModule: { file: string; module: NativeModule } | null = null;

function loadNativeModule(file: string): NativeModule {
  if (loadedModule !== null && loadedModule.file === file) return loadedModule.module;
  const loaded: unknown = require(file);
  if (!isNativeModule(loaded)) throw new Error(`${file} is not the batch embedding addon`);
  loadedModule = { file, module: loaded };
  return loaded;
}

function checkInteger(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${value}`);
}

/**
 * Embeds many texts per llama_decode.
 *
 * Concurrency: calls are queued — `embed` calls run one after another in call order (one decode at a
 * time per embedder); `dispose` waits for queued work, and anything called after `dispose` rejects.
 */
export class NativeBatchEmbedder {
  readonly dimension: number;
  readonly trainContextSize: number;
  readonly maxSequences: number;
  /** Tokens packed into one decode (a longer text is decoded alone). */
  readonly batchTokens: number;
  /** Most tokens one decode holds: max(batchTokens, maxTokensPerText), rounded up to a multiple of maxSequences. */
  readonly contextTokens: number;
  /** Most tokens one text may have: the requested limit capped at trainContextSize; independent of batchTokens. */
  readonly maxTokensPerText: number;
  /** The context's pooling type as llama.cpp reports it ("mean", "cls", "last", "none"). */
  readonly poolingType: string;
  readonly addonFile: string;

  #handle: NativeHandle;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;

  private constructor(handle: NativeHandle, info: NativeLoadInfo, addonFile: string) {
    this.#handle = handle;
    this.dimension = info.dimension;
    this.trainContextSize = info.trainContextSize;
    this.maxSequences = info.maxSequences;
    this.batchTokens = info.batchTokens;
    this.contextTokens = info.contextTokens;
    this.maxTokensPerText = info.maxTokensPerText;
    this.poolingType = info.poolingType;
    this.addonFile = addonFile;
  }

  /**
   * Loads the addon (if built) and the model. Never throws: resolves `{ unavailable: reason }` when the
   * addon is not built, cannot be loaded, or the model cannot be used, so the caller can fall back.
   */
  static async tryLoad(opts: NativeBatchEmbedderOptions, addonFile?: string): Promise<{ embedder: NativeBatchEmbedder } | { unavailable: string }> {
    try {
      checkInteger("threads", opts.threads, 1, 1024);
      checkInteger("maxSequences", opts.maxSequences, 1, 256);
      checkInteger("batchTokens", opts.batchTokens, 1, 1 << 20);
      if (opts.maxTokensPerText !== undefined) checkInteger("maxTokensPerText", opts.maxTokensPerText, 1, 1 << 20);
      if (opts.gpuLayers !== undefined) checkInteger("gpuLayers", opts.gpuLayers, -1, 1 << 20);
      if (!existsSync(opts.modelPath)) return { unavailable: `model file not found: ${opts.modelPath}` };

      const file = addonFile ?? findNativeEmbedAddon();
      if (file === null) return { unavailable: "the native batch embedding addon is not built (run `npx tsx scripts/build-native.ts`)" };
      if (!existsSync(file)) return { unavailable: `native addon not found: ${file}` };

      let native: NativeModule;
      try {
        native = loadNativeModule(file);
      } catch (error) {
        return { unavailable: `cannot load the native addon ${file}: ${errorMessage(error)}` };
      }

      const handle = new native.BatchEmbedder(opts.modelPath, {
        threads: opts.threads,
        maxSequences: opts.maxSequences,
        batchTokens: opts.batchTokens,
        ...(opts.maxTokensPerText === undefined ? {} : { maxTokensPerText: opts.maxTokensPerText }),
        gpuLayers: opts.gpuLayers ?? 0,
        ...(opts.flashAttention === undefined ? {} : { flashAttention: opts.flashAttention }),
      });
      // Without pooling (poolingType "none") the addon returns each text's last-token embedding, like node-llama-cpp.
      const info = await handle.load();
      return { embedder: new NativeBatchEmbedder(handle, info, file) };
    } catch (error) {
      return { unavailable: errorMessage(error) };
    }
  }

  /** Tokens for an embedding input, with special tokens added ([CLS] … [SEP]) exactly as llama-server does. */
  tokenize(text: string): Uint32Array {
    if (this.#disposed) throw new Error("NativeBatchEmbedder is disposed");
    return this.#handle.tokenize(text);
  }

  /**
   * Pooled (not normalised) embedding of each token list, in input order. Texts are packed into as few
   * llama_decode calls as possible (<= maxSequences texts and <= batchTokens tokens per decode, a longer
   * text alone); the
   * work runs on a libuv worker thread. An empty array resolves to []. Rejects with an Error (the whole
   * call) for an empty token list, a token list longer than `maxTokensPerText` or a token id outside the
   * vocabulary.
   */
  embed(tokenLists: readonly Uint32Array[]): Promise<Float32Array[]> {
    if (this.#disposed) return Promise.reject(new Error("NativeBatchEmbedder is disposed"));
    if (tokenLists.length === 0) return Promise.resolve([]);
    let total = 0;
    const lengths = new Uint32Array(tokenLists.length);
    for (let i = 0; i < tokenLists.length; i++) {
      const tokens = tokenLists[i];
      if (!(tokens instanceof Uint32Array)) return Promise.reject(new TypeError(`token list ${i} is not a Uint32Array`));
      if (tokens.length === 0) return Promise.reject(new Error(`text ${i} has no tokens`));
      if (tokens.length > this.maxTokensPerText) {
        return Promise.reject(
          new Error(`text ${i} has ${tokens.length} tokens, more than the maximum of ${this.maxTokensPerText} tokens per text`),
        );
      }
      lengths[i] = tokens.length;
      total += tokens.length;
    }
    const flat = new Uint32Array(total);
    let offset = 0;
    for (const tokens of tokenLists) {
      flat.set(tokens, offset);
      offset += tokens.length;
    }

    return this.#enqueue(async () => {
      const vectors = await this.#handle.embed(flat, lengths);
      const dim = this.dimension;
      const result: Float32Array[] = [];
      // Views into the one buffer the addon returned: no copy per text.
      for (let i = 0; i < tokenLists.length; i++) result.push(vectors.subarray(i * dim, (i + 1) * dim));
      return result;
    });
  }

  /** Per-phase timings of the last completed `embed` call (the addon's own timers). */
  lastStats(): NativeEmbedStats {
    return this.#handle.lastStats();
  }

  /** Frees the model and context after queued work finished. Idempotent; later calls to embed reject. */
  dispose(): Promise<void> {
    if (this.#disposed) return this.#queue.then(() => undefined);
    this.#disposed = true;
    return this.#enqueue(() => this.#handle.dispose());
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  #enqueue<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(work, work);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}

/** Diagnostic info from a loaded addon (backend device count, the libllama directory, llama system info). */
export function nativeEmbedSystemInfo(addonFile?: string): { backendDevices: number; llamaLibraryDir: string; llamaSystemInfo: string } | null {
  const file = addonFile ?? findNativeEmbedAddon();
  if (file === null) return null;
  try {
    return loadNativeModule(file).systemInfo();
  } catch {
    return null;
  }
}
