// What running the slot loop in a child process would cost (issue 15: GGML_ASSERT/abort() inside
// llama.cpp cannot be caught in-process; Ollama runs its runner as a child for that reason). A minimal
// prototype, NOT the isolation itself: the child loads the slot loop on the tiny test model and forwards
// every step's tokens to the parent over Node's IPC channel, one message per step, as a child-process
// engine would. Prints the child's resident memory, the IPC round trip, and decode speed in-process vs
// through the child. Usage: npx tsx bench/child-loop-cost.ts [tokens=400] [runs=5]
import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { ensureTestModels } from "../scripts/make-test-models.js";
import type { SamplingParams } from "../src/engine/chat/backend.js";
import { SlotLoopBackend } from "../src/engine/native/slotLoop.js";
import { loadRuntime } from "../src/engine/runtime.js";

const greedy: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 1, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, penaltyLastN: 64, ignoreEos: true, logitBias: [] };
const prompt = [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198];
const status = (pid: number | "self") => Object.fromEntries(readFileSync(`/proc/${pid}/status`, "utf8").split("\n")
  .filter((l) => /^(VmHWM|VmRSS|RssAnon|RssFile):/.test(l)).map((l) => [l.split(":")[0]!, Number(/\d+/.exec(l)![0]) / 1024]));

async function loadLoop(modelPath: string): Promise<SlotLoopBackend> {
  await loadRuntime("cpu", 1);
  const loaded = await SlotLoopBackend.tryLoad({ modelPath, threads: 1, slots: 2, contextSize: 1024, batchSize: 512, gpuLayers: 0 });
  if (!("backend" in loaded)) throw new Error(loaded.unavailable);
  return loaded.backend;
}

type ToChild = { kind: "generate"; tokens: number } | { kind: "ping"; sent: number } | { kind: "exit" };
type ToParent = { kind: "ready" } | { kind: "step"; ids: number[] } | { kind: "done"; count: number } | { kind: "pong"; sent: number };

if (process.argv[2] === "--child") {
  const backend = await loadLoop(process.argv[3]!);
  const send = (m: ToParent) => process.send!(m);
  process.on("message", (m: ToChild) => {
    if (m.kind === "ping") send({ kind: "pong", sent: m.sent });
    else if (m.kind === "exit") void backend.dispose().then(() => process.exit(0));
    else {
      let count = 0;
      void backend.generate(0, {
        prompt, maxTokens: m.tokens, sampling: greedy, signal: new AbortController().signal,
        onTokens: (tokens) => { count += tokens.length; send({ kind: "step", ids: tokens.map((t) => t.id) }); return false; },
      }).then(() => send({ kind: "done", count }));
    }
  });
  send({ kind: "ready" });
} else {
  const tokens = Number(process.argv[2] ?? 400);
  const runs = Number(process.argv[3] ?? 5);
  const { chat } = await ensureTestModels();
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

  const before = status("self");
  const backend = await loadLoop(chat);
  const inProcessLoad = status("self");
  const inProcess: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    await backend.generate(0, { prompt, maxTokens: tokens, sampling: greedy, signal: new AbortController().signal, onTokens: () => false });
    inProcess.push((performance.now() - t0) / tokens);
  }
  await backend.dispose();

  const child = fork(fileURLToPath(import.meta.url), ["--child", chat], { execArgv: ["--import", "tsx"], stdio: ["ignore", "ignore", "inherit", "ipc"] });
  const next = () => new Promise<ToParent>((resolve) => child.once("message", (m: ToParent) => resolve(m)));
  await next();
  const childStatus = status(child.pid!);
  const rtts: number[] = [];
  for (let i = 0; i < 2000; i++) {
    child.send({ kind: "ping", sent: performance.now() } satisfies ToChild);
    const pong = await next();
    if (pong.kind === "pong") rtts.push(performance.now() - pong.sent);
  }
  const viaChild: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = performance.now();
    child.send({ kind: "generate", tokens } satisfies ToChild);
    for (;;) {
      const m = await next();
      if (m.kind === "done") break;
    }
    viaChild.push((performance.now() - t0) / tokens);
  }
  child.send({ kind: "exit" } satisfies ToChild);
  const sorted = [...rtts].sort((a, b) => a - b);
  console.log(JSON.stringify({
    parentMiB: { beforeLoop: before, withLoopInProcess: inProcessLoad },
    childMiB: childStatus,
    ipcRoundTripMs: { median: median(rtts), p99: sorted[Math.floor(sorted.length * 0.99)], n: rtts.length },
    msPerToken: { inProcess: median(inProcess), viaChild: median(viaChild), runs, tokens },
  }, null, 2));
}
