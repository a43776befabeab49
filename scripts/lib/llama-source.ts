// The llama.cpp source that node-llama-cpp ships as a git bundle inside its npm package.
// Fixtures (vocab GGUFs, the Qwen3 template), native headers and the llama-server yardstick all come
// from this one checkout, so everything is built from the exact source the runtime binary uses.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { bundledLlamaCppTag } from "../../src/engine/native/addonBuild.ts";

const require = createRequire(import.meta.url);

export const projectRoot = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");

/** Directory of the node-llama-cpp package that is actually installed. */
export function nodeLlamaCppDir(): string {
  // "node-llama-cpp/package.json" is not in the package's `exports`, so resolve the entry point
  // (…/node-llama-cpp/dist/index.js) and walk up to the directory holding its package.json.
  let dir = path.dirname(require.resolve("node-llama-cpp"));
  while (!existsSync(path.join(dir, "package.json")) || !existsSync(path.join(dir, "llama"))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("cannot locate the node-llama-cpp package directory");
    dir = parent;
  }
  return dir;
}

/** The llama.cpp release tag node-llama-cpp was built from (e.g. "b1234" or "v0.5.0"). */
export function llamaCppTag(): string {
  return bundledLlamaCppTag(nodeLlamaCppDir());
}

/**
 * Clones the bundle once into a cache keyed by the release tag and returns the checkout's path.
 * Offline by construction: the bundle is a local file.
 */
export function ensureLlamaSource(cacheRoot = path.join(projectRoot, "models", ".cache")): string {
  const dir = path.join(cacheRoot, `llama.cpp-${llamaCppTag()}`);
  if (existsSync(path.join(dir, "include", "llama.h"))) return dir;
  mkdirSync(cacheRoot, { recursive: true });
  const bundle = path.join(nodeLlamaCppDir(), "llama", "gitRelease.bundle");
  if (!existsSync(bundle)) throw new Error(`node-llama-cpp ships no llama.cpp bundle at ${bundle}`);
  const tmp = `${dir}.tmp-${process.pid}`;
  execFileSync("git", ["-c", "advice.detachedHead=false", "clone", "--quiet", bundle, tmp], { stdio: "inherit" });
  try {
    // Atomic: a concurrent clone that finished first wins, and ours is dropped.
    renameSync(tmp, dir);
  } catch (error) {
    rmSync(tmp, { recursive: true, force: true });
    if (!existsSync(path.join(dir, "include", "llama.h"))) throw error;
  }
  return dir;
}
