// Where our native addons (batch_embed, slot_loop) are built and found. Both link the libllama of the
// binding node-llama-cpp ACTUALLY loaded in this process (prebuilt CPU, a local source build under
// node-llama-cpp/llama/localBuilds, the CUDA or Vulkan package), never another copy: the library is read
// from the process's own list of loaded shared objects after getLlama(). The build cache is keyed by
// that library, so switching backends builds (or finds) the matching addon.
//
// Used by scripts/build-native.ts (building) and by batchEmbedder.ts / slotLoop.ts (finding).
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);

/** Every addon, in build order (one compiler at a time: two would fight over the cores). */
export const NATIVE_ADDONS = ["batch_embed", "slot_loop"] as const;
export type NativeAddonName = (typeof NATIVE_ADDONS)[number];

/** The libllama / libggml files of the binding node-llama-cpp loaded. */
export type LoadedLlamaLibrary = {
  dir: string;
  /** File names in `dir`, e.g. libllama.v0.5.0.so, libllama.cuda.v0.5.0.so, libllama.dylib. */
  llama: string;
  ggml: string;
  ggmlBase: string;
};

export type NativeAddonBuildInfo = {
  name: NativeAddonName;
  projectRoot: string;
  sourceFile: string;
  library: LoadedLlamaLibrary;
  nodeLlamaCppVersion: string;
  llamaCppTag: string;
  compileFlags: readonly string[];
  key: string;
  /** node_modules/.cache/bora-native/<name>/<key>/<name>.node */
  addonFile: string;
};

const LIBRARY_PATTERNS = {
  llama: /^libllama(\.[\w.]+)?\.(so|dylib)$/,
  ggml: /^libggml(\.[\w.]+)?\.(so|dylib)$/,
  ggmlBase: /^libggml-base(\.[\w.]+)?\.(so|dylib)$/,
};

/** Compiler flags per platform; part of the cache key. */
/** A source file and, recursively, every `#include "x.h"` of it found in the same folder. */
export function localSources(sourceFile: string): string[] {
  const dir = path.dirname(sourceFile);
  const seen: string[] = [];
  const visit = (file: string) => {
    if (seen.includes(file) || !existsSync(file)) return;
    seen.push(file);
    for (const [, name] of readFileSync(file, "utf8").matchAll(/^\s*#include\s+"([^"]+)"/gm)) visit(path.join(dir, name!));
  };
  visit(sourceFile);
  return seen;
}

export function nativeCompileFlags(platform: NodeJS.Platform = process.platform): readonly string[] {
  const common = ["-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden", "-DNAPI_VERSION=8", "-DNAPI_CPP_EXCEPTIONS", "-DNODE_ADDON_API_DISABLE_DEPRECATED"];
  // macOS: Node's N-API symbols are resolved from the host process at load time.
  if (platform === "darwin") return [...common, "-bundle", "-undefined", "dynamic_lookup"];
  return [...common, "-shared"];
}

/**
 * The llama.cpp release node-llama-cpp's package was built from ("v0.5.0"): `llama/llama.cpp.info.json`, or
 * `llama/binariesGithubRelease.json` where that is gone (`npx node-llama-cpp source clear` deletes the former).
 */
export function bundledLlamaCppTag(nodeLlamaCppDir: string): string {
  const info = path.join(nodeLlamaCppDir, "llama", "llama.cpp.info.json");
  if (existsSync(info)) return (JSON.parse(readFileSync(info, "utf8")) as { tag: string }).tag;
  return (JSON.parse(readFileSync(path.join(nodeLlamaCppDir, "llama", "binariesGithubRelease.json"), "utf8")) as { release: string }).release;
}

/**
 * The libllama node-llama-cpp loaded into this process (call after getLlama()), from the process's list
 * of shared objects; null when none is loaded or the platform is not supported.
 */
export function loadedLlamaLibrary(sharedObjects: readonly string[] = listSharedObjects()): LoadedLlamaLibrary | null {
  if (process.platform !== "linux" && process.platform !== "darwin") return null;
  const llamaPath = sharedObjects.find((file) => LIBRARY_PATTERNS.llama.test(path.basename(file)));
  if (llamaPath === undefined) return null;
  const dir = path.dirname(llamaPath);
  const files = readdirSync(dir);
  const pick = (pattern: RegExp) => sharedObjects.map((f) => path.basename(f)).find((f) => pattern.test(f) && files.includes(f))
    ?? files.filter((f) => pattern.test(f)).sort()[0];
  const ggml = pick(LIBRARY_PATTERNS.ggml);
  const ggmlBase = pick(LIBRARY_PATTERNS.ggmlBase);
  if (ggml === undefined || ggmlBase === undefined) return null;
  return { dir, llama: path.basename(llamaPath), ggml, ggmlBase };
}

/** The libllama / libggml files a binding folder holds (a build that is not loaded yet), or null. */
export function libraryInDir(dir: string): LoadedLlamaLibrary | null {
  if (!existsSync(dir)) return null;
  const files = readdirSync(dir).sort();
  const llama = files.find((f) => LIBRARY_PATTERNS.llama.test(f));
  const ggml = files.find((f) => LIBRARY_PATTERNS.ggml.test(f));
  const ggmlBase = files.find((f) => LIBRARY_PATTERNS.ggmlBase.test(f));
  return llama === undefined || ggml === undefined || ggmlBase === undefined ? null : { dir, llama, ggml, ggmlBase };
}

function listSharedObjects(): string[] {
  const report = process.report?.getReport() as { sharedObjects?: string[] } | undefined;
  return report?.sharedObjects ?? [];
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

export function projectRootDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = findUp(here, (dir) => existsSync(path.join(dir, "package.json")) && existsSync(path.join(dir, "src", "engine", "native")));
  if (root === null) throw new Error(`cannot find the project root above ${here}`);
  return root;
}

export function nodeLlamaCppPackageDir(): string {
  const entry = path.dirname(require.resolve("node-llama-cpp"));
  const dir = findUp(entry, (d) => existsSync(path.join(d, "package.json")) && existsSync(path.join(d, "llama")));
  if (dir === null) throw new Error("cannot locate the node-llama-cpp package directory");
  return dir;
}

/** Describes an addon's build against a loaded libllama (cheap: no compiling). Throws when unsupported. */
export function nativeAddonBuildInfo(name: NativeAddonName, library: LoadedLlamaLibrary | null = loadedLlamaLibrary()): NativeAddonBuildInfo {
  if (process.platform !== "linux" && process.platform !== "darwin") {
    // MSVC links a DLL only through its import library, and node-llama-cpp's prebuilt win-x64 binding ships
    // llama.dll / ggml*.dll without llama.lib / ggml.lib (@node-llama-cpp/win-x64@3.21.1's files).
    throw new Error(`the native addons are built on Linux and macOS only (this is ${process.platform}: node-llama-cpp's Windows binding has no import libraries to link against)`);
  }
  if (library === null) throw new Error("node-llama-cpp has not loaded a libllama in this process (call getLlama() first)");
  const projectRoot = projectRootDir();
  const sourceFile = path.join(projectRoot, "src", "engine", "native", `${name}.cpp`);
  if (!existsSync(sourceFile)) throw new Error(`missing ${sourceFile}`);
  const nlcDir = nodeLlamaCppPackageDir();
  const nodeLlamaCppVersion = (JSON.parse(readFileSync(path.join(nlcDir, "package.json"), "utf8")) as { version: string }).version;
  const llamaCppTag = bundledLlamaCppTag(nlcDir);
  const compileFlags = nativeCompileFlags();
  const llamaFile = statSync(path.join(library.dir, library.llama));

  const hash = createHash("sha256");
  for (const part of [
    `bora-native-${name}/2`, nodeLlamaCppVersion, llamaCppTag, process.platform, process.arch,
    `node-abi-${process.versions.modules}`, `napi-${process.versions.napi ?? "?"}`,
    library.dir, library.llama, library.ggml, library.ggmlBase, String(llamaFile.size), String(Math.floor(llamaFile.mtimeMs)),
    compileFlags.join(" "),
  ]) {
    hash.update(part).update("\0");
  }
  // The source and the headers of its own folder it includes (the loop core, the sampler, the prompt cache…).
  for (const file of localSources(sourceFile)) hash.update(path.basename(file)).update(readFileSync(file));
  const key = `${nodeLlamaCppVersion}-${process.platform}-${process.arch}-abi${process.versions.modules}-${hash.digest("hex").slice(0, 16)}`;
  const addonFile = path.join(projectRoot, "node_modules", ".cache", "bora-native", name, key, `${name}.node`);
  return { name, projectRoot, sourceFile, library, nodeLlamaCppVersion, llamaCppTag, compileFlags, key, addonFile };
}

/** The built addon for the current source and the loaded libllama, or null when it is not built. */
export function findNativeAddon(name: NativeAddonName): string | null {
  try {
    const { addonFile } = nativeAddonBuildInfo(name);
    return existsSync(addonFile) ? addonFile : null;
  } catch {
    return null;
  }
}

/** Why findNativeAddon returned null, for the one warning line. */
export function nativeAddonUnavailableReason(name: NativeAddonName): string {
  try {
    const { addonFile } = nativeAddonBuildInfo(name);
    return existsSync(addonFile) ? "" : `the ${name} addon is not built for this libllama (run \`npx tsx scripts/build-native.ts\`; expected ${addonFile})`;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}
