// Where the service's memory goes, stage by stage: the same loading steps as src/composition.ts (runtime,
// the chat engine, the embedding tokenizer's vocabulary-only model, the embedder, warm-up), with RSS and
// anonymous memory (/proc/self/smaps_rollup) and the V8 heap after each. Prints a table of deltas.
//
//   npx tsx bench/memory-breakdown.ts [chat.gguf] [embed.gguf]     (default: the test suite's tiny models)
//
// Run through tsx, so the first line includes the loader; `node dist/main.js` against `node --import tsx
// src/main.ts` (the service's VmHWM) gives the loader's own share. LLM_ENGINE and the other variables apply
// as in the service.
import { readFileSync } from "node:fs";
import path from "node:path";
import v8 from "node:v8";
import { loadConfig, projectRoot } from "../src/config.ts";
import { ChatEngine } from "../src/engine/chat/engine.ts";
import { EmbedEngine } from "../src/engine/embed.ts";
import { ModelTokenizer } from "../src/engine/tokenizer.ts";
import { readModelGguf } from "../src/engine/registry.ts";
import { loadRuntime } from "../src/engine/runtime.ts";

type Sample = { stage: string; rssMB: number; anonMB: number; hwmMB: number; heapMB: number; externalMB: number };

function kb(text: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  return m?.[1] === undefined ? Number.NaN : Number(m[1]) / 1024;
}

const samples: Sample[] = [];
function sample(stage: string): void {
  const rollup = readFileSync("/proc/self/smaps_rollup", "utf8");
  const status = readFileSync("/proc/self/status", "utf8");
  const heap = v8.getHeapStatistics();
  samples.push({
    stage, rssMB: kb(rollup, "Rss"), anonMB: kb(rollup, "Anonymous"), hwmMB: kb(status, "VmHWM"),
    heapMB: heap.used_heap_size / 2 ** 20, externalMB: process.memoryUsage().external / 2 ** 20,
  });
}

async function main(): Promise<void> {
  sample("node + tsx + service modules imported");
  const chatFile = path.resolve(process.argv[2] ?? path.join(projectRoot, "models", ".cache", "test-qwen3-tiny.gguf"));
  const embedFile = path.resolve(process.argv[3] ?? path.join(projectRoot, "models", ".cache", "test-minilm-tiny.gguf"));
  const config = loadConfig({ ...process.env, LLM_GPU: process.env["LLM_GPU"] ?? "cpu" });
  const runtime = await loadRuntime(config.gpu, config.threads);
  sample("getLlama (libllama + ggml loaded)");
  const gguf = await readModelGguf(runtime.llama, chatFile);
  sample("the chat model's GGUF header (tokenizer arrays left out) and insights");
  // The chat tokenizer endpoints use the engine's own vocabulary (vocabulary.ts): no vocabulary-only model.
  const chat = await ChatEngine.load(runtime.llama, {
    modelPath: chatFile, modelName: "chat", threads: runtime.cpu.threads, settings: config.chat, gguf,
    onFallback: (reason) => console.error(`chat engine fallback: ${reason}`),
  });
  sample(`chat engine (${chat.describe().engine}; ${config.chat.parallel} slots x ${config.chat.contextSize}, batch ${config.chat.batchSize})`);
  const embedVocab = await ModelTokenizer.load(runtime.llama, embedFile, "embedding");
  sample("tokenizer endpoints: embedding vocabulary-only model");
  const embed = await EmbedEngine.load(runtime.llama, {
    modelPath: embedFile, modelName: "embed", aliases: [], threads: runtime.cpu.threads, batchTokens: config.embedBatchTokens,
    batchSequences: config.embedBatchSequences, gpuLayers: config.gpuLayers, truncate: true, maxTexts: config.embedMaxTexts,
    preferNative: config.embedNative, onFallback: (reason) => console.error(`embedder fallback: ${reason}`),
  });
  sample(`embedder (${String(embed.describe().backend)})`);
  await chat.generate({ messages: [{ role: "user", content: "Hola" }], maxTokens: 16, temperature: 0, topP: 1, enableThinking: false });
  await embed.embed(Array.from({ length: 64 }, (_, i) => `frase número ${i} para medir la memoria`));
  sample("after a generation and a 64-text embedding");

  const rows = samples.map((s, i) => {
    const prev = samples[i - 1];
    const d = (pick: (x: Sample) => number) => (prev === undefined ? pick(s) : pick(s) - pick(prev));
    return `| ${s.stage} | ${d((x) => x.rssMB).toFixed(1)} | ${d((x) => x.anonMB).toFixed(1)} | ${d((x) => x.heapMB).toFixed(1)} | ${s.rssMB.toFixed(0)} | ${s.anonMB.toFixed(0)} | ${s.hwmMB.toFixed(0)} |`;
  });
  console.log(["| stage | +RSS MB | +anon MB | +V8 heap MB | RSS MB | anon MB | VmHWM MB |", "|---|---:|---:|---:|---:|---:|---:|", ...rows].join("\n"));
  await Promise.allSettled([chat.dispose(), embed.dispose(), embedVocab.dispose()]);
  await runtime.llama.dispose();
}

await main();
