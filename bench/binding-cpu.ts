// CPU time per embedded text on each llama.cpp binding (prebuilt, the native and the portable fast build),
// in-process, one compute thread: what a binding's kernels cost, readable on a shared machine where wall
// clock is not (other processes change how long a text takes, much less how much CPU it takes).
//
//   npx tsx bench/binding-cpu.ts [--rounds=3] [--bindings=prebuilt,native,portable] [--model=PATH]
//
// Each measurement is a fresh process (one binding per process: node-llama-cpp loads one), in rotating
// order per round; each embeds the bench's 256 Spanish sentences twice after a warm-up. The MiniLM-shaped
// F16 file by default (scripts/make-test-models.ts BENCH_EMBED_SHAPE), the embedder's defaults (512 tokens,
// 32 texts per decode). A missing fast build is reported, not built (npm run build:llama-native [-- --portable]).
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BENCH_EMBED_SHAPE, ensureModel } from "../scripts/make-test-models.ts";
import type { BindingSetting } from "../src/engine/binding/fastBuild.ts";
import { spanishSentences } from "./lib/workload.ts";

type Sample = { binding: string; loaded: string; cpuMsPerText: number[]; wallMsPerText: number[] };
const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);

async function child(binding: BindingSetting, modelPath: string): Promise<void> {
  const { loadRuntime } = await import("../src/engine/runtime.ts");
  const { EmbedEngine } = await import("../src/engine/embed.ts");
  const runtime = await loadRuntime("cpu", 1, undefined, binding);
  const engine = await EmbedEngine.load(runtime.llama, {
    modelPath, modelName: "bench-embed", aliases: [], threads: 1, batchTokens: 512, batchSequences: 32, gpuLayers: 0,
    truncate: true, maxTexts: 4096, preferNative: true, onFallback: (reason) => { throw new Error(`native embedder unavailable: ${reason}`); },
  });
  const texts = spanishSentences(256);
  await engine.embed(texts.slice(0, 32));
  const sample: Sample = { binding, loaded: runtime.binding.build?.id ?? runtime.binding.loaded, cpuMsPerText: [], wallMsPerText: [] };
  for (let i = 0; i < 2; i++) {
    const cpu = process.cpuUsage();
    const wall = performance.now();
    await engine.embed(texts);
    const used = process.cpuUsage(cpu);
    sample.cpuMsPerText.push((used.user + used.system) / 1000 / texts.length);
    sample.wallMsPerText.push((performance.now() - wall) / texts.length);
  }
  console.log(JSON.stringify(sample));
  await engine.dispose();
  process.exit(0);
}

function runChild(binding: string, modelPath: string): Promise<Sample | string> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), `--child=${binding}`, `--model=${modelPath}`], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    c.stdout.on("data", (d: Buffer) => { out += d.toString(); });
    c.stderr.on("data", (d: Buffer) => { err += d.toString(); });
    c.on("close", () => {
      const line = out.split("\n").find((l) => l.startsWith("{"));
      resolve(line === undefined ? (err.trim().split("\n").find((l) => /Error/.test(l)) ?? (err.trim() || "no output")) : JSON.parse(line) as Sample);
    });
  });
}

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

async function main(): Promise<void> {
  const childBinding = arg("child");
  const modelPath = arg("model") ?? await ensureModel(BENCH_EMBED_SHAPE);
  if (childBinding !== undefined) return child(childBinding as BindingSetting, modelPath);
  const bindings = (arg("bindings") ?? "prebuilt,native,portable").split(",");
  const rounds = Number(arg("rounds") ?? 3);
  const samples = new Map<string, Sample[]>(bindings.map((b) => [b, []]));
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? bindings : [...bindings].reverse();
    for (const binding of order) {
      const result = await runChild(binding, modelPath);
      if (typeof result === "string") console.log(`round ${r + 1} ${binding}: ${result}`);
      else {
        samples.get(binding)?.push(result);
        console.log(`round ${r + 1} ${binding} (${result.loaded}): ${result.cpuMsPerText.map((x) => x.toFixed(2)).join(", ")} ms CPU per text, ${result.wallMsPerText.map((x) => x.toFixed(2)).join(", ")} ms wall`);
      }
    }
  }
  const base = median(samples.get("prebuilt")?.flatMap((s) => s.cpuMsPerText) ?? []);
  console.log(`\n| binding | loaded | CPU ms per text (median, min–max) | vs prebuilt | wall ms per text (median) |\n|---|---|---:|---:|---:|`);
  for (const [binding, list] of samples) {
    const cpu = list.flatMap((s) => s.cpuMsPerText);
    if (cpu.length === 0) continue;
    console.log(`| ${binding} | ${list[0]?.loaded} | ${median(cpu).toFixed(2)} (${Math.min(...cpu).toFixed(2)}–${Math.max(...cpu).toFixed(2)}) | ${(base / median(cpu)).toFixed(2)}x | ${median(list.flatMap((s) => s.wallMsPerText)).toFixed(2)} |`);
  }
  console.log(`\n${path.basename(modelPath)}, 256 texts x 2 per process, ${rounds} rounds; "vs prebuilt" = prebuilt's CPU per text / this one's (higher is faster)`);
}

await main();
