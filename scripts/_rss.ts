import { readFileSync } from "node:fs";
import { SlotLoopBackend } from "../src/engine/native/slotLoop.js";
import { loadRuntime } from "../src/engine/runtime.js";
const st = (l: string) => readFileSync("/proc/self/status", "utf8").split("\n").filter((x) => /VmHWM|RssAnon|VmData/.test(x)).join(" ").replace(/\s+/g, " ");
await loadRuntime("cpu", 1);
console.log(l("runtime"));
function l(s: string) { return `${s}: ${st(s)}`; }
const loaded = await SlotLoopBackend.tryLoad({ modelPath: process.argv[2]!, threads: 1, slots: 2, contextSize: 1024, batchSize: 512, gpuLayers: 0 }, ...(process.env["LOOP_ADDON"] ? [process.env["LOOP_ADDON"]] : []));
if (!("backend" in loaded)) throw new Error(loaded.unavailable);
console.log(l("loaded"));
const prompt = Array.from({ length: 600 }, (_, i) => 1000 + i);
await loaded.backend.generate(0, { prompt, maxTokens: 10, sampling: { temperature: 0, topP: 1, topK: 0, minP: 0, seed: 1, repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0, penaltyLastN: 64, ignoreEos: false }, signal: new AbortController().signal, onTokens: () => false });
console.log(l("after a 600-token prompt"));
await loaded.backend.dispose();
