// `npm run bench:direct`: single-request decode of the same GGUF through node-llama-cpp called directly
// (LlamaContextSequence.evaluate, no HTTP, no chat layer) and through this service over HTTP, in one
// run, same threads and sampling. The service must be within 0.9x of the library it wraps.
import { spawn } from "node:child_process";
import path from "node:path";
import { projectRoot } from "../scripts/lib/llama-source.ts";
import { ensureBenchModels, ensureLlamaBuild } from "./lib/artifacts.ts";
import { freePort } from "./lib/processes.ts";
import { SAMPLING } from "./lib/targets.ts";
import { loadRuntime, resolveCpuBudget } from "../src/engine/runtime.ts";

const TOKENS = 128;
const RUNS = 3;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function direct(modelPath: string, threads: number): Promise<number[]> {
  // The binding the service loads (prebuilt, or the build:llama-native one), on the CPU.
  const { llama } = await loadRuntime("cpu", threads);
  const model = await llama.loadModel({ modelPath });
  const context = await model.createContext({ contextSize: 4096, threads });
  const sequence = context.getSequence();
  const prompt = model.tokenize("<|im_start|>user\nCuenta una historia sobre el río.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", true);
  const rates: number[] = [];
  for (let run = 0; run <= RUNS; run++) {
    await sequence.clearHistory();
    let first = 0;
    let count = 0;
    for await (const _token of sequence.evaluate(prompt, { temperature: SAMPLING.temperature, topP: SAMPLING.top_p, topK: SAMPLING.top_k, minP: SAMPLING.min_p, seed: run })) {
      if (++count === 1) first = performance.now();
      if (count >= TOKENS) break;
    }
    if (run > 0) rates.push((count - 1) / ((performance.now() - first) / 1000)); // run 0 warms up
  }
  await llama.dispose();
  return rates;
}

async function overHttp(modelPath: string, embedPath: string, threads: number): Promise<number[]> {
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", path.join(projectRoot, "src", "main.ts")], {
    cwd: projectRoot, stdio: "ignore",
    env: { ...process.env, PORT: String(port), LLM_MODEL: modelPath, EMBED_MODEL: embedPath, LLM_THREADS: String(threads), LLM_PARALLEL: "1", LOG_LEVEL: "warn", MODEL_DOWNLOAD: "false" },
  });
  try {
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; ; i++) {
      const ready = await fetch(`${base}/ready`).then((r) => r.ok, () => false);
      if (ready) break;
      if (i > 600) throw new Error("service did not become ready");
      await new Promise((r) => setTimeout(r, 200));
    }
    const rates: number[] = [];
    for (let run = 0; run <= RUNS; run++) {
      const response = await fetch(`${base}/api/llm/generate`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ messages: [{ role: "user", content: "Cuenta una historia sobre el río." }], max_new_tokens: TOKENS, ignore_eos: true, stream: true, seed: run, ...SAMPLING }),
      });
      let first = 0;
      let text = "";
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        text += Buffer.from(chunk).toString("utf8");
        if (first === 0 && text.includes("event: delta")) first = performance.now();
      }
      const end = performance.now();
      const done = JSON.parse(/event: done\ndata: (.*)\n/.exec(text)![1]!) as { tokens_generated: number };
      if (run > 0) rates.push((done.tokens_generated - 1) / ((end - first) / 1000));
    }
    return rates;
  } finally {
    child.kill("SIGTERM");
  }
}

const build = await ensureLlamaBuild();
const models = await ensureBenchModels(build);
const threads = resolveCpuBudget(0).threads;
const directRates = await direct(models.chat, threads);
const httpRates = await overHttp(models.chat, models.embed, threads);
const d = median(directRates);
const h = median(httpRates);
console.log(`file ${path.basename(models.chat)}, ${threads} threads, ${TOKENS} tokens, median of ${RUNS}`);
console.log(`node-llama-cpp direct: ${d.toFixed(2)} tok/s  (${directRates.map((r) => r.toFixed(2)).join(", ")})`);
console.log(`service over HTTP:     ${h.toFixed(2)} tok/s  (${httpRates.map((r) => r.toFixed(2)).join(", ")})`);
console.log(`ratio HTTP/direct:     ${(h / d).toFixed(2)}x (target >= 0.90x)`);
