// `npm run gpu-check [-- --pairs=N]`: the bench's main rows with every layer on an NVIDIA GPU, ours
// against llama-server built with CUDA from the same bundle, in one go (meant to take under 10 minutes
// on a 16-core machine with one GPU):
//
//   1. nvidia-smi sees a GPU (else it stops at once: exit 2) and nvcc is there (the CUDA toolkit, for llama-server);
//   2. node-llama-cpp's CUDA binding (@node-llama-cpp/linux-x64-cuda, an optional dependency npm ci installs;
//      installed here when missing) and our addons built against its libllama (LLM_GPU=cuda);
//   3. llama-server and llama-quantize from node-llama-cpp's bundled llama.cpp with GGML_CUDA=ON for this
//      GPU's architecture only (bench/.cache/llama.cpp-cuda, reused on a second run);
//   4. `npm run bench -- --gpu --llama-bin=... --only=decode,aggregate,ttft,embed`: single-stream decode,
//      4 and 8 clients, TTFT cold / warm, embeddings; ours with LLM_GPU=cuda LLM_GPU_LAYERS=max,
//      llama-server with -ngl 999. Results in bench/results/partial.{md,json}.
//
// Written without a GPU at hand: only the stop in step 1 has run (test/gpu-check.test.ts).
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { findOnPath } from "../src/engine/binding/fastBuild.ts";
import { nodeLlamaCppDir, projectRoot } from "./lib/llama-source.ts";

const require = createRequire(import.meta.url);
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 60_000).toFixed(1)} min`;
const say = (line: string) => console.log(`[gpu-check ${elapsed()}] ${line}`);

class Stop extends Error {
  constructor(message: string, readonly code: number) {
    super(message);
  }
}

function run(command: string, args: readonly string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    console.log(`$ ${command} ${args.join(" ")}`);
    const child = spawn(command, args, { cwd: options.cwd ?? projectRoot, env: options.env ?? process.env, stdio: "inherit" });
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Stop(`${path.basename(command)} ${args[0] ?? ""} exited with code ${code}`, 1))));
  });
}

/** Step 1: a GPU, or stop at once. Returns the GPU's name and compute capability ("9.0"). */
function requireGpu(): { name: string; computeCap: string; nvcc: string } {
  const smi = findOnPath("nvidia-smi");
  if (smi === null) throw new Stop("no NVIDIA GPU here: nvidia-smi is not on PATH (gpu-check needs a CUDA machine with the NVIDIA driver); nothing was run", 2);
  let out: string;
  try {
    out = execFileSync(smi, ["--query-gpu=name,compute_cap", "--format=csv,noheader"], { encoding: "utf8", timeout: 20_000 });
  } catch (error) {
    throw new Stop(`nvidia-smi failed (${error instanceof Error ? error.message.split("\n")[0] : String(error)}): no usable GPU; nothing was run`, 2);
  }
  const [name, computeCap] = (out.trim().split("\n")[0] ?? "").split(",").map((s) => s.trim());
  if (!name || !computeCap || !/^\d+\.\d+$/.test(computeCap)) throw new Stop(`nvidia-smi lists no GPU (${JSON.stringify(out.trim())}); nothing was run`, 2);
  const nvcc = findOnPath("nvcc") ?? ["/usr/local/cuda/bin/nvcc"].find((p) => existsSync(p)) ?? null;
  if (nvcc === null) throw new Stop(`${name} found, but no nvcc (the CUDA toolkit) to build llama-server with CUDA: install cuda-toolkit or put /usr/local/cuda/bin on PATH`, 2);
  return { name, computeCap, nvcc };
}

/** Step 2: the CUDA binding of the installed node-llama-cpp, installed when npm ci left it out. */
async function ensureCudaBinding(): Promise<void> {
  const { version } = JSON.parse(readFileSync(path.join(nodeLlamaCppDir(), "package.json"), "utf8")) as { version: string };
  const installed = (name: string) => {
    try {
      return (JSON.parse(readFileSync(require.resolve(`${name}/package.json`), "utf8")) as { version: string }).version;
    } catch {
      return null;
    }
  };
  const wanted = ["@node-llama-cpp/linux-x64-cuda", "@node-llama-cpp/linux-x64-cuda-ext"];
  const missing = wanted.filter((name) => installed(name) !== version);
  if (missing.length > 0) {
    say(`installing ${missing.map((m) => `${m}@${version}`).join(" ")}`);
    await run("npm", ["install", "--no-save", "--no-audit", "--no-fund", ...missing.map((m) => `${m}@${version}`)]);
  }
  say(`CUDA binding: ${wanted.map((w) => `${w}@${installed(w) ?? "missing"}`).join(", ")}`);
}

/** Step 3: llama-server + llama-quantize with CUDA, for this GPU's architecture only (a build for all takes far longer). */
async function ensureCudaLlamaServer(computeCap: string, nvcc: string): Promise<string> {
  const dir = path.join(projectRoot, "bench", ".cache", "llama.cpp-cuda");
  const bin = path.join(dir, "build", "bin");
  const arch = computeCap.replace(".", "");
  const stampFile = path.join(dir, ".gpu-check.json");
  const stamp = JSON.stringify({ arch, bundle: readFileSync(path.join(nodeLlamaCppDir(), "llama", "llama.cpp.info.json"), "utf8").trim() });
  if (existsSync(path.join(bin, "llama-server")) && existsSync(stampFile) && readFileSync(stampFile, "utf8") === stamp) return bin;
  if (!existsSync(path.join(dir, ".git"))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(path.dirname(dir), { recursive: true });
    await run("git", ["-c", "advice.detachedHead=false", "clone", "--quiet", path.join(nodeLlamaCppDir(), "llama", "gitRelease.bundle"), tmp]);
    renameSync(tmp, dir);
  }
  say(`building llama-server with CUDA for sm_${arch}`);
  await run("cmake", [
    "-B", "build", "-DCMAKE_BUILD_TYPE=Release", "-DGGML_CUDA=ON", `-DCMAKE_CUDA_ARCHITECTURES=${arch}`, `-DCMAKE_CUDA_COMPILER=${nvcc}`,
    "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
  ], { cwd: dir });
  await run("cmake", ["--build", "build", "-j", String(os.availableParallelism()), "--target", "llama-server", "llama-quantize"], { cwd: dir });
  writeFileSync(stampFile, stamp);
  return bin;
}

async function main(): Promise<void> {
  const gpu = requireGpu();
  say(`GPU: ${gpu.name} (compute ${gpu.computeCap}); nvcc: ${gpu.nvcc}`);
  await ensureCudaBinding();
  // Our addons against the CUDA binding's libllama (the cache is keyed by library: the CPU ones stay).
  await run(process.execPath, ["--import", "tsx", "scripts/build-native.ts"], { env: { ...process.env, LLM_GPU: "cuda" } });
  const bin = await ensureCudaLlamaServer(gpu.computeCap, gpu.nvcc);
  say(`llama-server (CUDA): ${path.relative(projectRoot, bin)}`);
  const pairs = process.argv.find((a) => a.startsWith("--pairs="))?.slice("--pairs=".length) ?? "2";
  await run(process.execPath, [
    "--import", "tsx", "bench/run.ts", "--gpu", `--llama-bin=${bin}`, "--only=decode,aggregate,ttft,embed", `--pairs=${pairs}`, "--no-readme", "--quiet-wait=10",
  ]);
  say("done: bench/results/partial.md (table, notes, both sides' flags)");
}

try {
  await main();
} catch (error) {
  console.error(`[gpu-check ${elapsed()}] ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = error instanceof Stop ? error.code : 1;
}
