// Builds our native addons — src/engine/native/batch_embed.cpp (batched embeddings) and slot_loop.cpp
// (the generation slot loop) — against the libllama of the binding node-llama-cpp actually loads with
// the service's configuration (LLM_GPU / binding-config/backend.json: the prebuilt CPU binding, a local
// source build, the CUDA or Vulkan package), with headers from the exact llama.cpp source node-llama-cpp
// bundles. Output: node_modules/.cache/bora-native/<addon>/<key>/<addon>.node, keyed by that library,
// the node-llama-cpp version, platform, Node ABI, compiler flags and the source's hash.
//
//   npx tsx scripts/build-native.ts [--force]
//
// Works offline after `npm ci` (needs a C++ compiler and git). It never fails its caller: when something
// is missing it prints one line per addon and exits 0, and the service falls back to node-llama-cpp.
//
// Platforms (docs/native-build.md): Linux is built and run here. macOS (Metal comes with node-llama-cpp's
// libggml): Xcode's clang++ with the darwin flags in addonBuild.ts (-bundle -undefined dynamic_lookup, what
// cmake-js gives node-llama-cpp's own addon there): written, not run here. Windows: not built; the service
// falls back to node-llama-cpp (addonBuild.ts says why).
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { loadConfig } from "../src/config.ts";
import { findOnPath } from "../src/engine/binding/fastBuild.ts";
import { loadedLlamaLibrary, NATIVE_ADDONS, nativeAddonBuildInfo, nodeLlamaCppPackageDir, type LoadedLlamaLibrary, type NativeAddonBuildInfo, type NativeAddonName } from "../src/engine/native/addonBuild.ts";
import { loadRuntime } from "../src/engine/runtime.ts";
import { ensureLlamaSource } from "./lib/llama-source.ts";

const require = createRequire(import.meta.url);

export interface EnsureNativeAddonOptions {
  /** Rebuild even when an up-to-date addon exists. */
  force?: boolean;
  /** Where the one-line messages go (default: console.error). */
  log?: (line: string) => void;
  /**
   * Build against this library instead of the one node-llama-cpp loads with the service's settings: a
   * fast build that is not in use yet (scripts/build-llama-native.ts, before it commits the build).
   */
  library?: LoadedLlamaLibrary;
}

const FALLBACK: Record<NativeAddonName, string> = {
  batch_embed: "embeddings will use node-llama-cpp's embedding context",
  slot_loop: "generation will use node-llama-cpp's context sequences",
};

interface RunResult {
  ok: boolean;
  output: string;
}

function run(command: string, args: readonly string[], timeoutMs = 10 * 60_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      resolve({ ok: error === null, output: `${stdout}${stderr}${error !== null && stderr === "" ? error.message : ""}` });
    });
  });
}

function firstErrorLine(output: string): string {
  const lines = output.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  return lines.find((l) => /error/i.test(l)) ?? lines[0] ?? "no output";
}

/** Directory holding node_api.h for the running Node. */
function findNodeHeaders(): string | null {
  const candidates = [
    process.env["npm_config_nodedir"] ? path.join(process.env["npm_config_nodedir"], "include", "node") : null,
    path.resolve(path.dirname(process.execPath), "..", "include", "node"),
    typeof process.config.variables === "object" && "node_prefix" in process.config.variables
      ? path.join(String((process.config.variables as Record<string, unknown>)["node_prefix"]), "include", "node")
      : null,
    "/usr/include/node",
    "/usr/local/include/node",
    path.join(os.homedir(), ".cache", "node-gyp", process.versions.node, "include", "node"),
    // Where Node came without its headers: the N-API headers node-llama-cpp's own build uses (cmake-js's
    // node-api-headers package); the addons use nothing but N-API.
    nodeApiHeadersDir(),
  ];
  for (const dir of candidates) if (dir !== null && existsSync(path.join(dir, "node_api.h"))) return dir;
  return null;
}

function nodeApiHeadersDir(): string | null {
  try {
    const cmakeJs = createRequire(path.join(nodeLlamaCppPackageDir(), "package.json")).resolve("cmake-js/package.json");
    return path.join(path.dirname(createRequire(cmakeJs).resolve("node-api-headers/package.json")), "include");
  } catch {
    return null;
  }
}

/** The platform's C++ compiler: CXX, else the first of the usual names on PATH (g++ on Linux, Xcode's clang++ on macOS). */
function findCompiler(): string {
  if (process.env["CXX"]) return process.env["CXX"];
  const names = process.platform === "darwin" ? ["clang++", "c++"] : ["g++", "c++", "clang++"];
  return names.find((name) => findOnPath(name) !== null) ?? names[0]!;
}

function findNodeAddonApi(): string | null {
  try {
    const dir = path.dirname(require.resolve("node-addon-api/package.json"));
    return existsSync(path.join(dir, "napi.h")) ? dir : null;
  } catch {
    return null;
  }
}

/** Written beside each build: the library it links, so pruning keeps the builds of other bindings still installed. */
const LIBRARY_NOTE = "library.json";

/**
 * Removes this addon's builds that nothing can load any more: those for the same library (an older source)
 * and those whose library is gone. Builds for another binding that is still there stay: the prebuilt one,
 * the native and the portable fast builds each keep their addons, so switching LLAMA_BINDING needs no
 * rebuild and building one never breaks another. Never touches another addon's builds.
 */
export function pruneStaleBuilds(addonCacheDir: string, keep: string, library: string): void {
  for (const entry of readdirSync(addonCacheDir, { withFileTypes: true })) {
    if (!entry.isDirectory() || entry.name === keep) continue;
    let linked: string | null = null;
    try {
      linked = (JSON.parse(readFileSync(path.join(addonCacheDir, entry.name, LIBRARY_NOTE), "utf8")) as { library?: string }).library ?? null;
    } catch { /* a build from before the note: treat as stale */ }
    if (linked === null || linked === library || !existsSync(linked)) rmSync(path.join(addonCacheDir, entry.name), { recursive: true, force: true });
  }
}

/** Drops builds from the old one-addon layout (bora-native/<key>/), which nothing finds any more. */
function pruneLegacyBuilds(cacheRoot: string): void {
  if (!existsSync(cacheRoot)) return;
  for (const entry of readdirSync(cacheRoot, { withFileTypes: true })) {
    if (entry.isDirectory() && /^\d+\.\d+\.\d+-/.test(entry.name)) rmSync(path.join(cacheRoot, entry.name), { recursive: true, force: true });
  }
}

/** Linker arguments for the loaded libllama, per platform. */
function linkArgs(library: LoadedLlamaLibrary): string[] {
  if (process.platform === "darwin") {
    return [path.join(library.dir, library.llama), path.join(library.dir, library.ggml), path.join(library.dir, library.ggmlBase), `-Wl,-rpath,${library.dir}`];
  }
  return [`-L${library.dir}`, `-l:${library.llama}`, `-l:${library.ggml}`, `-l:${library.ggmlBase}`, `-Wl,-rpath,${library.dir}`, "-ldl", "-lpthread"];
}

/**
 * The libllama node-llama-cpp loads with the service's backend choice: loads it in this process when
 * nothing loaded one yet.
 */
async function libraryToBuildAgainst(): Promise<LoadedLlamaLibrary | null> {
  const loaded = loadedLlamaLibrary();
  if (loaded !== null) return loaded;
  let config: Pick<ReturnType<typeof loadConfig>, "gpu" | "binding"> = { gpu: "auto", binding: "auto" };
  try {
    config = loadConfig(process.env);
  } catch { /* a bad variable is reported by the service itself */ }
  await loadRuntime(config.gpu, 0, undefined, config.binding);
  return loadedLlamaLibrary();
}

/**
 * Returns the path of an up-to-date addon, building it when needed, or null (after printing one line)
 * when it cannot be built here. Never throws.
 */
export async function ensureNativeAddon(name: NativeAddonName, options: EnsureNativeAddonOptions = {}): Promise<string | null> {
  const log = options.log ?? ((line: string) => console.error(line));
  const skip = (reason: string): null => {
    log(`[build-native] ${name} not built: ${reason}; ${FALLBACK[name]}`);
    return null;
  };
  try {
    let info: NativeAddonBuildInfo;
    try {
      info = nativeAddonBuildInfo(name, options.library ?? await libraryToBuildAgainst());
    } catch (error) {
      return skip(error instanceof Error ? error.message : String(error));
    }
    if (!options.force && existsSync(info.addonFile)) return info.addonFile;

    const cxx = findCompiler();
    const version = await run(cxx, ["--version"], 30_000);
    if (!version.ok) return skip(`no C++ compiler (${cxx})`);

    const nodeHeaders = findNodeHeaders();
    if (nodeHeaders === null) return skip("Node.js headers (node_api.h) not found; install the nodejs dev headers or set npm_config_nodedir");
    const addonApi = findNodeAddonApi();
    if (addonApi === null) return skip("node-addon-api is not installed");

    let llamaSource: string;
    try {
      llamaSource = ensureLlamaSource();
    } catch (error) {
      return skip(`cannot get node-llama-cpp's bundled llama.cpp source: ${error instanceof Error ? error.message : String(error)}`);
    }
    const includeDirs = [path.join(llamaSource, "include"), path.join(llamaSource, "ggml", "include")];
    if (!existsSync(path.join(includeDirs[0] ?? "", "llama.h")) || !existsSync(path.join(includeDirs[1] ?? "", "ggml-backend.h"))) {
      return skip(`llama.cpp headers missing in ${llamaSource}`);
    }

    const outDir = path.dirname(info.addonFile);
    mkdirSync(outDir, { recursive: true });
    const tmpFile = path.join(outDir, `${name}.${process.pid}.${Date.now()}.tmp.node`);
    const args = [
      ...info.compileFlags,
      `-I${nodeHeaders}`,
      `-I${addonApi}`,
      ...includeDirs.map((dir) => `-I${dir}`),
      info.sourceFile,
      "-o",
      tmpFile,
      ...linkArgs(info.library),
    ];
    const started = Date.now();
    const compiled = await run(cxx, args);
    writeFileSync(path.join(outDir, "build.log"), `${cxx} ${args.join(" ")}\n\n${compiled.output}`);
    if (!compiled.ok) {
      rmSync(tmpFile, { force: true });
      return skip(`compiling failed (${firstErrorLine(compiled.output)}); full log in ${path.join(outDir, "build.log")}`);
    }

    // Load it in a throwaway process: catches unresolved symbols without touching this process.
    const check = await run(process.execPath, ["-e", `require(${JSON.stringify(tmpFile)})`], 60_000);
    if (!check.ok) {
      rmSync(tmpFile, { force: true });
      return skip(`the built addon does not load (${firstErrorLine(check.output)})`);
    }
    renameSync(tmpFile, info.addonFile);
    const library = path.join(info.library.dir, info.library.llama);
    writeFileSync(path.join(outDir, LIBRARY_NOTE), `${JSON.stringify({ library })}\n`);
    pruneStaleBuilds(path.dirname(outDir), info.key, library);
    pruneLegacyBuilds(path.dirname(path.dirname(outDir)));
    log(`[build-native] built ${path.relative(info.projectRoot, info.addonFile)} against ${path.join(info.library.dir, info.library.llama)} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
    return info.addonFile;
  } catch (error) {
    return skip(`unexpected error: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** The batched embedder (kept for callers of the single-addon API). */
export function ensureNativeEmbedAddon(options: EnsureNativeAddonOptions = {}): Promise<string | null> {
  return ensureNativeAddon("batch_embed", options);
}

export function ensureSlotLoopAddon(options: EnsureNativeAddonOptions = {}): Promise<string | null> {
  return ensureNativeAddon("slot_loop", options);
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (invokedDirectly) {
  const force = process.argv.includes("--force");
  for (const name of NATIVE_ADDONS) {
    const file = await ensureNativeAddon(name, { force });
    if (file !== null) console.log(file);
  }
  process.exitCode = 0;
  // getLlama() keeps native handles open; the build is done.
  process.exit();
}
