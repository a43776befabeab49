// What the bench needs on disk: llama-server and llama-quantize built from the llama.cpp source that
// node-llama-cpp ships (its git bundle), and the Q4_K_M chat model. Everything is cached under
// bench/.cache and keyed, so a second run (and this machine's existing build) does no work.
import { spawn } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ensureBenchSourceModels, ensureModel, TEST_CHAT_SHAPE, TEST_EMBED_SHAPE } from "../../scripts/make-test-models.ts";
import { llamaCppTag, nodeLlamaCppDir, projectRoot } from "../../scripts/lib/llama-source.ts";
import { progress } from "./log.ts";

export const benchCacheDir = path.join(projectRoot, "bench", ".cache");
const checkoutDir = path.join(benchCacheDir, "llama.cpp");
const binDir = path.join(checkoutDir, "build", "bin");
const buildStampFile = path.join(checkoutDir, ".bench-build.json");
const QUANT_TYPE = "Q4_K_M";

// The flags of the build this bench was written against: CPU only, no network code, only the two tools.
const CMAKE_CONFIGURE = [
  "-B", "build", "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
  "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
];
const CMAKE_TARGETS = ["llama-server", "llama-quantize"];

export type LlamaBuild = { tag: string; commit: string; server: string; quantize: string };
export type BenchModels = {
  chat: string; chatF16: string; embed: string;
  /** The test suite's tiny Qwen3 (64 wide, 2 layers): decoding it is bound by per-token overhead, not by the kernels. */
  tinyChat: string;
  /** The tiny BERT our tiny-model server loads beside it (our service always loads an embedding model). */
  tinyEmbed: string;
  /** BENCH_CHAT_MODEL / BENCH_EMBED_MODEL replaced the bench models: a harness check, not a benchmark. */
  overridden: boolean;
};

type BuildStamp = { tag: string; commit: string; configure: string[] };

/** Runs a command to completion, its output appended to a log file; rejects with the log's tail on failure. */
export function runLogged(command: string, args: readonly string[], cwd: string, logFile: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const log = createWriteStream(logFile, { flags: "a" });
    log.write(`$ ${command} ${args.join(" ")}\n`);
    const child = spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
    // Long steps (a build, a quantization) print a heartbeat so the run never looks hung.
    const started = Date.now();
    const heartbeat = setInterval(() => progress(`  … ${path.basename(command)} still running (${Math.round((Date.now() - started) / 1000)} s)`), 30_000);
    child.on("error", (error) => { clearInterval(heartbeat); log.end(); reject(error); });
    child.on("close", (code) => {
      clearInterval(heartbeat);
      log.end(() => {
        if (code === 0) return resolve();
        const tail = readFileSync(logFile, "utf8").split("\n").slice(-25).join("\n");
        reject(new Error(`${path.basename(command)} exited with ${code}; see ${logFile}\n${tail}`));
      });
    });
  });
}

function gitOutput(args: readonly string[], cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("git", args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => { out += d.toString(); });
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`git ${args.join(" ")} exited with ${code}`))));
  });
}

/** The commit the bundle's HEAD points at: identifies the source more exactly than the tag. */
async function bundleCommit(bundle: string): Promise<string> {
  const heads = await gitOutput(["bundle", "list-heads", bundle], projectRoot);
  const head = heads.split("\n").find((l) => l.endsWith(" HEAD")) ?? heads.split("\n")[0] ?? "";
  const commit = head.split(" ")[0] ?? "";
  if (!/^[0-9a-f]{40}$/.test(commit)) throw new Error(`cannot read the commit of ${bundle}`);
  return commit;
}

function readBuildStamp(): BuildStamp | null {
  try {
    return JSON.parse(readFileSync(buildStampFile, "utf8")) as BuildStamp;
  } catch {
    return null;
  }
}

function binariesExist(): boolean {
  return CMAKE_TARGETS.every((t) => existsSync(path.join(binDir, t)));
}

async function checkoutCommit(): Promise<string | null> {
  if (!existsSync(path.join(checkoutDir, ".git"))) return null;
  return gitOutput(["rev-parse", "HEAD"], checkoutDir).catch(() => null);
}

/** Clones the bundle into bench/.cache/llama.cpp (atomically), replacing a checkout of another version. */
async function cloneSource(bundle: string, logFile: string): Promise<void> {
  progress(`cloning llama.cpp from ${path.relative(projectRoot, bundle)}`);
  rmSync(checkoutDir, { recursive: true, force: true });
  const tmp = `${checkoutDir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  await runLogged("git", ["-c", "advice.detachedHead=false", "clone", "--quiet", bundle, tmp], benchCacheDir, logFile);
  renameSync(tmp, checkoutDir);
}

async function buildTools(logFile: string): Promise<void> {
  progress(`building ${CMAKE_TARGETS.join(" + ")} (several minutes on 2 cores; log: ${path.relative(projectRoot, logFile)})`);
  await runLogged("cmake", CMAKE_CONFIGURE, checkoutDir, logFile);
  await runLogged("cmake", ["--build", "build", "-j", String(os.availableParallelism()), "--target", ...CMAKE_TARGETS], checkoutDir, logFile);
}

/**
 * llama-server and llama-quantize from node-llama-cpp's own llama.cpp source. Reused when the stamp names
 * the same tag and commit; a build without a stamp (made by hand with the same flags) is adopted when its
 * checkout is the bundle's commit.
 */
export async function ensureLlamaBuild(): Promise<LlamaBuild> {
  const tag = llamaCppTag();
  const bundle = path.join(nodeLlamaCppDir(), "llama", "gitRelease.bundle");
  const commit = await bundleCommit(bundle);
  const result: LlamaBuild = { tag, commit, server: path.join(binDir, "llama-server"), quantize: path.join(binDir, "llama-quantize") };
  mkdirSync(benchCacheDir, { recursive: true });
  const stamp = readBuildStamp();
  if (binariesExist() && stamp?.tag === tag && stamp.commit === commit) return result;
  const logFile = path.join(benchCacheDir, "llama-build.log");
  const current = await checkoutCommit();
  if (binariesExist() && stamp === null && current === commit) {
    writeBuildStamp({ tag, commit, configure: CMAKE_CONFIGURE });
    return result;
  }
  if (current !== commit) await cloneSource(bundle, logFile);
  await buildTools(logFile);
  if (!binariesExist()) throw new Error(`the build finished but ${binDir} lacks ${CMAKE_TARGETS.join(" or ")}`);
  writeBuildStamp({ tag, commit, configure: CMAKE_CONFIGURE });
  return result;
}

/** `--llama-bin=DIR`: llama-server and llama-quantize built elsewhere from the same bundle (scripts/gpu-check.ts's CUDA build). */
export async function llamaBuildFrom(dir: string): Promise<LlamaBuild> {
  const server = path.resolve(dir, "llama-server");
  const quantize = path.resolve(dir, "llama-quantize");
  for (const file of [server, quantize]) if (!existsSync(file)) throw new Error(`--llama-bin: ${file} is missing`);
  return { tag: llamaCppTag(), commit: await bundleCommit(path.join(nodeLlamaCppDir(), "llama", "gitRelease.bundle")), server, quantize };
}

function writeBuildStamp(stamp: BuildStamp): void {
  writeFileSync(buildStampFile, `${JSON.stringify(stamp)}\n`);
}

/**
 * The F16 chat model quantized to Q4_K_M once. The stamp holds the source's own stamp (generator version and
 * parameter hash) and the llama.cpp tag, so a changed source model or quantizer redoes it.
 */
async function ensureQuantized(build: LlamaBuild, f16: string): Promise<string> {
  const out = path.join(benchCacheDir, path.basename(f16).replace(/-f16\.gguf$/i, `-${QUANT_TYPE}.gguf`));
  const stampFile = `${out}.stamp`;
  const sourceStamp = existsSync(`${f16}.stamp`) ? readFileSync(`${f16}.stamp`, "utf8").trim() : String(statSync(f16).size);
  const want = JSON.stringify({ source: path.basename(f16), sourceStamp, tag: build.tag, commit: build.commit, type: QUANT_TYPE });
  const have = existsSync(stampFile) ? readFileSync(stampFile, "utf8").trim() : null;
  if (existsSync(out) && have === want) return out;
  // A file quantized by hand before stamps existed is adopted when it is newer than its source.
  if (existsSync(out) && have === null && statSync(out).mtimeMs > statSync(f16).mtimeMs) {
    writeFileSync(stampFile, `${want}\n`);
    return out;
  }
  progress(`quantizing ${path.basename(f16)} to ${QUANT_TYPE} (~3 min, once)`);
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    await runLogged(build.quantize, [f16, tmp, QUANT_TYPE, String(os.availableParallelism())], benchCacheDir, path.join(benchCacheDir, "quantize.log"));
    renameSync(tmp, out);
  } finally {
    rmSync(tmp, { force: true });
  }
  writeFileSync(stampFile, `${want}\n`);
  return out;
}

/**
 * The bench's models. BENCH_CHAT_MODEL / BENCH_EMBED_MODEL (paths) replace them, for checking the harness
 * quickly with the tiny test models; such numbers say nothing about performance.
 */
export async function ensureBenchModels(build: LlamaBuild): Promise<BenchModels> {
  const chatOverride = process.env["BENCH_CHAT_MODEL"];
  const embedOverride = process.env["BENCH_EMBED_MODEL"];
  const [tinyChat, tinyEmbed] = await Promise.all([ensureModel(TEST_CHAT_SHAPE), ensureModel(TEST_EMBED_SHAPE)]);
  if (chatOverride && embedOverride) {
    return { chat: path.resolve(chatOverride), chatF16: path.resolve(chatOverride), embed: path.resolve(embedOverride), tinyChat, tinyEmbed, overridden: true };
  }
  const source = await ensureBenchSourceModels();
  const chat = await ensureQuantized(build, source.chatF16);
  return { chat, chatF16: source.chatF16, embed: source.embed, tinyChat, tinyEmbed, overridden: false };
}
