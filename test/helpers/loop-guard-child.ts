// Child process for test/loop-guard.test.ts: drives the native slot loop directly with jobs that used to
// abort the whole process (a grammar that finishes while ignore_eos bans the end token), then a plain job
// on the same loop. Prints one JSON line per job; a crash shows up as the child's exit status, not as a
// dead test runner.
import fc from "fast-check";
import { createRequire } from "node:module";
import { findNativeAddon } from "../../src/engine/native/addonBuild.js";
import { SlotLoopBackend } from "../../src/engine/native/slotLoop.js";
import { loadRuntime } from "../../src/engine/runtime.js";
import { commonPrefixLength, type BackendJob, type SamplingParams } from "../../src/engine/chat/backend.js";

const [modelPath, scenario] = process.argv.slice(2) as [string, string];
await loadRuntime("cpu", 1);
if (scenario === "non-causal") {
  // An embedding model given as the chat model: refused at load, never a GGML_ASSERT on a long prompt.
  const result = await SlotLoopBackend.tryLoad({ modelPath, threads: 1, slots: 1, contextSize: 1024, batchSize: 1024, gpuLayers: 0 });
  console.log(JSON.stringify({ name: "non-causal", unavailable: "unavailable" in result ? result.unavailable : null }));
  process.exit(0);
}
// LOOP_ADDON: another build of the addon (to show a regression test fails on the old one).
const loaded = await SlotLoopBackend.tryLoad({ modelPath, threads: 1, slots: 2, contextSize: 256, batchSize: 64, gpuLayers: 0 }, ...(process.env["LOOP_ADDON"] ? [process.env["LOOP_ADDON"]] : []));
if (!("backend" in loaded)) throw new Error(loaded.unavailable);
const backend = loaded.backend;

const greedy: SamplingParams = { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 1, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, penaltyLastN: 64, ignoreEos: false, logitBias: [] };
const prompt = [151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198];

async function run(name: string, job: Omit<Partial<BackendJob>, "sampling"> & { sampling?: Partial<SamplingParams> }): Promise<void> {
  const tokens: number[] = [];
  try {
    const outcome = await backend.generate(job.sampling?.ignoreEos ? 1 : 0, {
      prompt, maxTokens: 40, signal: new AbortController().signal,
      ...job,
      sampling: { ...greedy, ...job.sampling },
      // Never stops early: the loop alone must notice the grammar has nowhere to go.
      onTokens: (t) => { tokens.push(...t.map((x) => x.id)); return false; },
    });
    console.log(JSON.stringify({ name, ok: true, tokens: tokens.length, cancelled: outcome.cancelled }));
  } catch (error) {
    const e = error as Error & { status?: number; code?: string; field?: string };
    console.log(JSON.stringify({ name, ok: false, tokens: tokens.length, message: e.message, status: e.status ?? 500, code: e.code, field: e.field }));
  }
}

if (scenario === "grammar-end") {
  // The grammar ends after one word; ignore_eos bans the only token it then allows.
  await run("finished grammar + ignore_eos", { grammar: 'root ::= "hello"', sampling: { ignoreEos: true } });
  await run("finished grammar + ignore_eos, sampled", { grammar: 'root ::= "{}"', sampling: { ignoreEos: true, temperature: 0.8, topK: 40, topP: 0.95 } });
  await run("finished grammar + ignore_eos + penalties", { grammar: 'root ::= "a" "b"?', sampling: { ignoreEos: true, repeatPenalty: 1.3 } });
  // The loop goes on: both slots still generate.
  await run("plain after", {});
  await run("plain after, slot 1", { sampling: { ignoreEos: true } });
  await run("grammar without ignore_eos", { grammar: 'root ::= "hello"' });
} else if (scenario === "dispose") {
  await run("plain", {});
  // Slot choice: the native common prefix equals the prefix computed on a copy of the cache.
  const cached = backend.cachedTokens(0);
  const mismatches = fc.sample(fc.tuple(fc.nat(cached.length + 2), fc.array(fc.integer({ min: 0, max: 151_000 }), { maxLength: 8 })), { seed: 15, numRuns: 300 })
    .map(([keep, tail]) => [...cached.slice(0, keep), ...tail])
    .filter((prompt) => backend.sharedPrefixes(prompt)[0] !== commonPrefixLength(cached, prompt)).length;
  console.log(JSON.stringify({ name: "common prefix", cached: cached.length, mismatches }));
  await backend.dispose();
  console.log(JSON.stringify({ name: "after dispose", states: backend.slotStates(), tokens: backend.cachedTokens(0), prefix: backend.sharedPrefixes(prompt)[0] }));
  // The addon itself, without the wrapper's guard: every method after dispose throws, none dereferences
  // the moved-out core.
  const addon = createRequire(import.meta.url)(process.env["LOOP_ADDON"] ?? findNativeAddon("slot_loop")!) as {
    SlotLoop: new (...args: unknown[]) => Record<string, (...args: unknown[]) => unknown>;
  };
  const native = new addon.SlotLoop(modelPath, { threads: 1, slots: 1, contextSize: 64, batchSize: 32, gpuLayers: 0 }, () => {});
  await native["load"]!();
  await native["dispose"]!();
  const calls: Record<string, () => unknown> = {
    slotStates: () => native["slotStates"]!(),
    slotTokens: () => native["slotTokens"]!(0),
    commonPrefixes: () => native["commonPrefixes"]!(Uint32Array.of(1)),
    start: () => native["start"]!(0, 1, Uint32Array.of(1), {}),
    end: () => native["end"]!(0, 1),
    trim: () => native["trim"]!(0, 0),
  };
  const answers: Record<string, string> = {};
  for (const [method, call] of Object.entries(calls)) {
    try {
      call();
      answers[method] = "returned";
    } catch (error) {
      answers[method] = (error as Error).message;
    }
  }
  answers["dispose again"] = String(await native["dispose"]!());
  console.log(JSON.stringify({ name: "native after dispose", answers }));
  process.exit(0);
}
await backend.dispose();
