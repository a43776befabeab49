// Both generation paths — the native slot loop and the node-llama-cpp fallback — through the same
// ChatEngine on the generated fixtures: the scripted model's exact output, seeds, stops across tokens,
// grammars, concurrency, cancellation, prefix reuse, late arrivals and logprobs.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { ensureSlotLoopAddon } from "../scripts/build-native.js";
import { ensureTestModels, SCRIPTED_OUTPUT } from "../scripts/make-test-models.js";
import { ChatEngine, type ChatEngineKind } from "../src/engine/chat/engine.js";
import type { GenerateRequest } from "../src/engine/chat/types.js";
import type { ChatEngineSettings } from "../src/engine/chat/settings.js";
import { EngineError } from "../src/engine/errors.js";
import { bundledLlamaCppTag } from "../src/engine/native/addonBuild.js";
import { SlotLoopBackend } from "../src/engine/native/slotLoop.js";
import { readModelGguf } from "../src/engine/registry.js";
import { loadRuntime } from "../src/engine/runtime.js";
import { postJson, startTestService } from "./helpers/service.js";
import { everyEventIsWholeUtf8, readSse } from "./helpers/sse.js";

const models = await ensureTestModels();
const runtime = await loadRuntime("cpu", 0);
t.teardown(() => runtime.llama.dispose());
t.ok(await ensureSlotLoopAddon(), "the slot loop addon builds here");

const messages = [{ role: "system" as const, content: "Eres Mentor Bora." }, { role: "user" as const, content: "¿Qué significa 'ímihí'?" }];
const greedy = (extra: Partial<GenerateRequest> = {}): GenerateRequest => ({ messages, temperature: 0, topP: 1, enableThinking: false, ...extra });

async function load(engine: ChatEngineKind, modelPath: string, extra: { threads?: number; settings?: Partial<ChatEngineSettings> } = {}): Promise<ChatEngine> {
  const fallbacks: string[] = [];
  const chat = await ChatEngine.load(runtime.llama, {
    // One thread: these tests check behaviour, not speed, and on a shared machine two spinning ggml
    // threads per step make each token cost a scheduler time slice.
    modelPath, modelName: "test", threads: extra.threads ?? 1, onFallback: (r) => fallbacks.push(r), gguf: await readModelGguf(runtime.llama, modelPath),
    settings: {
      contextSize: 1024, parallel: 4, batchSize: 512, gpuLayers: 0, nice: 0, kvCacheType: "f16", flashAttention: "auto",
      queueSize: 8, requestTimeoutMs: 120_000, engine, slotSavePath: "",
      promptCache: { hostMiB: 0, minTokens: 32, dir: "", diskMiB: 0, saveIntervalS: 0 }, ...extra.settings,
    },
  });
  if (engine === "native") t.same(fallbacks, [], "no fallback when the addon is built");
  return chat;
}

for (const kind of ["native", "node-llama-cpp"] as const) {
  t.test(`${kind}: the scripted model`, async (t) => {
    const chat = await load(kind, models.scripted);
    t.teardown(() => chat.dispose());
    t.equal(chat.selection.kind, kind);
    t.equal(chat.describe().engine, kind);

    const plain = await chat.generate(greedy());
    t.equal(plain.text, SCRIPTED_OUTPUT.answer);
    t.equal(plain.tokensGenerated, SCRIPTED_OUTPUT.answerTokens.length);
    t.equal(plain.finishReason, "stop");
    t.same(plain.toolCalls, []);
    t.equal(plain.logprobs, null);
    t.equal(plain.evaluatedTokens, plain.promptTokens + plain.tokensGenerated - 1, "prompt, then every token but the end token fed back");

    const thinking = await chat.generate(greedy({ enableThinking: true }));
    t.equal(thinking.reasoning, SCRIPTED_OUTPUT.reasoning);
    t.equal(thinking.text, SCRIPTED_OUTPUT.answer);
    t.equal(thinking.tokensGenerated, SCRIPTED_OUTPUT.thinkingTokens.length);

    // "Hola! '" spans three tokens ("Hola", "!", " '"): the stop is matched across them.
    const stopped = await chat.generate(greedy({ stop: ["a! 'í"] }));
    t.equal(stopped.text, "¡Hol");
    t.equal(stopped.finishReason, "stop");
    t.ok(stopped.tokensGenerated <= 6, `ended at the token completing the stop (${stopped.tokensGenerated})`);

    // Prefix reuse: the same prompt again decodes only its last token. After a stop, the cache keeps
    // only the kept text's tokens.
    const again = await chat.generate(greedy());
    t.equal(again.cachedPromptTokens, again.promptTokens - 1, "all of the prompt but its last token reused");
    t.equal(again.evaluatedTokens, 1 + again.tokensGenerated - 1);
    const slot = chat.slotsSnapshot()[again.slot];
    t.equal(slot?.cachedTokens, again.promptTokens + again.tokensGenerated - 1, "the slot holds the prompt and the answer");

    // Four concurrent streams each give exactly the solo answer (the script's margins are wide).
    const streamed = await Promise.all(Array.from({ length: 4 }, async () => {
      let text = "";
      const r = await chat.run(await chat.prepare(greedy()), (d) => { if (d.kind === "content") text += d.text; });
      return { r, text };
    }));
    for (const { r, text } of streamed) {
      t.equal(text, SCRIPTED_OUTPUT.answer);
      t.equal(r.text, SCRIPTED_OUTPUT.answer);
      t.equal(r.tokensGenerated, SCRIPTED_OUTPUT.answerTokens.length);
    }
    t.same(new Set(streamed.map((s) => s.r.slot)).size, 4, "on four slots");
  });

  t.test(`${kind}: the random model`, async (t) => {
    const chat = await load(kind, models.chat);
    t.teardown(() => chat.dispose());
    const seeded = (seed: number) => chat.generate(greedy({ temperature: 1, topP: 0.95, seed, maxTokens: 24, ignoreEos: true }));
    const [a, b, c] = [await seeded(1234), await seeded(1234), await seeded(99)];
    t.equal(a.text, b.text, "same seed, same answer");
    t.not(a.text, c.text, "another seed, another answer");

    // Well-formed concurrent streams with exact counts.
    const counts = [5, 17, 31, 40];
    const results = await Promise.all(counts.map((n) => chat.generate(greedy({ maxTokens: n, ignoreEos: true, temperature: 0.8, seed: n }))));
    results.forEach((r, i) => {
      t.equal(r.tokensGenerated, counts[i]);
      t.equal(r.finishReason, "length");
      t.type(r.text, "string");
    });

    // Grammar-constrained output validates.
    const schema = { type: "object", properties: { palabra: { type: "string" }, tonos: { type: "integer" } }, required: ["palabra", "tonos"] };
    const json = await chat.generate(greedy({ temperature: 0.7, seed: 3, maxTokens: 120, responseFormat: { type: "json_schema", schema } }));
    const parsed = JSON.parse(json.text) as { palabra: unknown; tonos: unknown };
    t.type(parsed.palabra, "string");
    t.ok(Number.isInteger(parsed.tonos));

    // Cancellation mid-generation frees the slot; the next request completes.
    const controller = new AbortController();
    let tokens = 0;
    const long = chat.run(await chat.prepare(greedy({ maxTokens: 900, ignoreEos: true, signal: controller.signal })), () => {
      if (++tokens === 5) controller.abort();
    });
    const error = await long.then(() => null, (e: unknown) => e);
    t.ok(error instanceof EngineError && error.code === "cancelled", "cancelled");
    t.equal(chat.stats().slotsBusy, 0, "the slot is free");
    const frozen = chat.slotsSnapshot();
    await new Promise((r) => setTimeout(r, 200));
    t.same(chat.slotsSnapshot(), frozen, "nothing decodes after the cancel");
    const next = await chat.generate(greedy({ maxTokens: 12, ignoreEos: true }));
    t.equal(next.tokensGenerated, 12);

    // A request arriving while 3 long streams run gets its answer before they finish.
    let finished = 0;
    const streams = [0, 1, 2].map((i) => chat.generate(greedy({ messages: [{ role: "user", content: `historia ${i}` }], maxTokens: 200, ignoreEos: true }))
      .then((r) => { finished++; return r; }));
    while (chat.slotsSnapshot().filter((s) => s.busy).length < 3) await new Promise((r) => setTimeout(r, 2));
    const late = await chat.generate(greedy({ messages: [{ role: "user", content: "una pregunta tardía" }], maxTokens: 3, ignoreEos: true }));
    t.equal(late.tokensGenerated, 3);
    // node-llama-cpp's batch scheduler starves a late prompt behind running sequences: only the
    // native loop's chunked prefill promises this.
    if (kind === "native") t.equal(finished, 0, "the late request finished while the 3 long streams were still running");
    for (const r of await Promise.all(streams)) t.equal(r.tokensGenerated, 200);

    // Logprobs: greedy's sampled token is the top-1; the top list is sorted; probabilities sum to <= 1.
    const lp = await chat.generate(greedy({ maxTokens: 6, ignoreEos: true, logprobs: { top: 5 } }));
    t.equal(lp.logprobs?.length, 6);
    for (const token of lp.logprobs ?? []) {
      t.equal(token.top.length, 5);
      const first = token.top[0];
      if (kind === "native") t.equal(token.logprob, first?.logprob, "sampled = top-1");
      t.same(token.top.map((x) => x.logprob), [...token.top.map((x) => x.logprob)].sort((x, y) => y - x), "sorted");
      t.ok(token.top.reduce((s, x) => s + Math.exp(x.logprob), 0) <= 1 + 1e-5, "sum of probabilities <= 1");
      t.ok(token.logprob <= 0);
    }
  });
}

// LLM_NICE: the loop thread and the compute threads it starts run at the lower priority, the JS
// thread (and so HTTP, probes and the embedder, which run elsewhere) does not.
t.test("native: the decode threads run at the configured nice value, the JS thread does not", { skip: process.platform !== "linux" && "thread priorities are set on Linux only" }, async (t) => {
  const niceOf = (tid: string): number | null => {
    try {
      // Fields after the command name (which may hold spaces); nice is the 19th field overall.
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]);
    } catch {
      return null; // the thread ended meanwhile
    }
  };
  const niced = () => readdirSync("/proc/self/task").filter((tid) => niceOf(tid) === 7);
  const before = niced().length;
  const chat = await load("native", models.scripted, { threads: 2, settings: { nice: 7 } });
  t.teardown(() => chat.dispose());
  t.equal(chat.describe().nice, 7);
  // Several steps so the compute threads exist (a persistent pool, or OpenMP's team, or one per step).
  const result = await chat.generate(greedy());
  t.equal(result.text, SCRIPTED_OUTPUT.answer, "the answer does not depend on the priority");
  t.ok(niced().length - before >= 1, `the loop thread at nice 7 (found ${niced().length - before})`);
  const helpers = readdirSync("/proc/self/task").filter((tid) => niceOf(tid) === 19);
  t.ok(helpers.length >= 1, `its compute helper at nice 19 (found ${helpers.length})`);
  t.equal(niceOf(String(process.pid)), 0, "the JS thread keeps its priority");
});

t.test("the native backend reports why it cannot load", async (t) => {
  const result = await SlotLoopBackend.tryLoad({ modelPath: models.chat, threads: 1, slots: 1, contextSize: 256, batchSize: 64, gpuLayers: 0 }, "/nonexistent/slot_loop.node");
  t.ok("unavailable" in result && /not found/.test(result.unavailable));
});

// The HTTP APIs on each path chosen by configuration (LLM_ENGINE), with /metrics saying which runs.
for (const engine of ["native", "node-llama-cpp"] as const) {
  t.test(`LLM_ENGINE=${engine}: the seed and OpenAI APIs`, async (t) => {
    const service = await startTestService({ LLM_MODEL: models.scripted, LLM_ENGINE: engine, LLM_THREADS: "1" });
    t.teardown(() => service.close());
    const base = await service.listen();
    const seed = await postJson(service.app, "/api/llm/generate", { messages, temperature: 0, enable_thinking: true });
    t.equal(seed.statusCode, 200);
    t.match(seed.json(), { answer: SCRIPTED_OUTPUT.answer, reasoning: SCRIPTED_OUTPUT.reasoning, tokens_generated: SCRIPTED_OUTPUT.thinkingTokens.length, finish_reason: "stop" });
    const response = await fetch(`${base}/v1/chat/completions`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages, temperature: 0, stream: true, stop: ["agua"] }),
    });
    const { events, raw } = await readSse(response);
    t.ok(everyEventIsWholeUtf8(raw));
    const chunks = events.map((e) => e.data).filter((d) => d !== "[DONE]").map((d) => JSON.parse(d) as { choices: { delta: { content?: string }; finish_reason: string | null }[] });
    t.equal(chunks.map((c) => c.choices[0]?.delta.content ?? "").join(""), "¡Hola! 'ímihí' significa ");
    t.equal(chunks.at(-1)?.choices[0]?.finish_reason, "stop");
    const metrics = await (await fetch(`${base}/metrics`)).text();
    t.match(metrics, `bora_generation_engine_info{engine="${engine}",requested="${engine}"} 1`);
    t.match(metrics, /bora_slot_cached_tokens\{slot="0"\} \d+/);
  });
}

// `npx node-llama-cpp source clear` (the way back from `npm run build:llama-native`) deletes
// llama/llama.cpp.info.json; the addon build then reads the tag from binariesGithubRelease.json.
t.test("the bundled llama.cpp tag is found with or without llama.cpp.info.json", async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "nlc-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, "llama"));
  writeFileSync(path.join(dir, "llama", "binariesGithubRelease.json"), JSON.stringify({ release: "v0.5.0" }));
  t.equal(bundledLlamaCppTag(dir), "v0.5.0", "from binariesGithubRelease.json");
  writeFileSync(path.join(dir, "llama", "llama.cpp.info.json"), JSON.stringify({ tag: "b9999", llamaCppGithubRepo: "ggml-org/llama.cpp" }));
  t.equal(bundledLlamaCppTag(dir), "b9999", "llama.cpp.info.json first");
});
