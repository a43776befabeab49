// Builds the native batch-embedding addon (src/engine/native/batch_embed.cpp) against the libllama that
// node-llama-cpp's prebuilt binaries ship, with headers from the exact llama.cpp source node-llama-cpp
// bundles (so the ABI matches). Output: node_modules/.cache/bora-native/<key>/batch_embed.node, where the
// key covers the node-llama-cpp version, platform, Node ABI, compiler flags and the source's hash.
//
//   npx tsx scripts/build-native.ts [--force]
//
// Works offline after `npm ci` (needs g++ and git). It never fails its caller: when something is
// missing it prints one line and exits 0, and the service falls back to node-llama-cpp's embedding context.
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { nativeCompileFlags, nativeEmbedAddonBuildInfo } from "../src/engine/native/batchEmbedder.ts";
import { ensureLlamaSource } from "./lib/llama-source.ts";

const require = createRequire(import.meta.url);

export interface EnsureNativeEmbedAddonOptions {
  /** Rebuild even when an up-to-date addon exists. */
  force?: boolean;
  /** Where the one-line messages go (default: console.error). */
  log?: (line: string) => void;
}

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
  ];
  for (const dir of candidates) if (dir !== null && existsSync(path.join(dir, "node_api.h"))) return dir;
  return null;
}

function findNodeAddonApi(): string | null {
  try {
    const dir = path.dirname(require.resolve("node-addon-api/package.json"));
    return existsSync(path.join(dir, "napi.h")) ? dir : null;
  } catch {
    return null;
  }
}

/** Removes addon builds for other keys (older sources, other node-llama-cpp versions). */
function pruneStaleBuilds(cacheRoot: string, keep: string): void {
  for (const entry of readdirSync(cacheRoot, { withFileTypes: true })) {
    if (entry.isDirectory() && entry.name !== keep) rmSync(path.join(cacheRoot, entry.name), { recursive: true, force: true });
  }
}

/**
 * Returns the path of an up-to-date addon, building it when needed, or null (after printing one line)
 * when it cannot be built here. Never throws.
 */
export async function ensureNativeEmbedAddon(options: EnsureNativeEmbedAddonOptions = {}): Promise<string | null> {
  const log = options.log ?? ((line: string) => console.error(line));
  const skip = (reason: string): null => {
    log(`[build-native] native batch embedder not built: ${reason}; embeddings will use node-llama-cpp's embedding context`);
    return null;
  };
  try {
    let info;
    try {
      info = nativeEmbedAddonBuildInfo();
    } catch (error) {
      return skip(error instanceof Error ? error.message : String(error));
    }
    if (!options.force && existsSync(info.addonFile)) return info.addonFile;

    const cxx = process.env["CXX"] ?? "g++";
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
    const tmpFile = path.join(outDir, `batch_embed.${process.pid}.${Date.now()}.tmp.node`);
    const args = [
      ...nativeCompileFlags,
      `-I${nodeHeaders}`,
      `-I${addonApi}`,
      ...includeDirs.map((dir) => `-I${dir}`),
      info.sourceFile,
      "-o",
      tmpFile,
      `-L${info.binsDir}`,
      `-l:${info.libraries.llama}`,
      `-l:${info.libraries.ggml}`,
      `-l:${info.libraries.ggmlBase}`,
      `-Wl,-rpath,${info.binsDir}`,
      "-ldl",
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
    pruneStaleBuilds(path.dirname(outDir), info.key);
    log(`[build-native] built ${path.relative(info.projectRoot, info.addonFile)} in ${((Date.now() - started) / 1000).toFixed(1)}s`);
    return info.addonFile;
  } catch (error) {
    return skip(`unexpected error: ${error instanceof Error ? error.message : String(error)}`);
  }
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (invokedDirectly) {
  const file = await ensureNativeEmbedAddon({ force: process.argv.includes("--force") });
  if (file !== null) console.log(file);
  process.exitCode = 0;
}
