// The prompt-cache tier test shared by test/prompt-cache-*.test.ts: on the real engine, the same request
// gives the same tokens with and without each tier (slot, copy from another slot, host memory, disk), and
// the tier is the one expected. Greedy and seeded sampling.
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { ensureScriptedModel } from "../../scripts/make-test-models.js";
import type { ChatEngine } from "../../src/engine/chat/engine.js";
import type { ChatMessage } from "../../src/engine/chat/types.js";
import { startTestService, type TestService } from "./service.js";

export const systemA: ChatMessage = { role: "system", content: "Eres Mentor Bora, tutor de lengua. Contexto A: " + "la lengua bora tiene tonos altos y bajos, y los verbos llevan sufijos. ".repeat(6) };
const systemB: ChatMessage = { role: "system", content: "Eres un asistente de gramática. Contexto B: " + "los verbos irregulares del español cambian la raíz. ".repeat(6) };
export const question: ChatMessage = { role: "user", content: "¿Qué es un tono alto?" };

export type Sampling = { name: string; temperature: number; seed?: number };
export const SAMPLINGS: Sampling[] = [{ name: "greedy", temperature: 0 }, { name: "seeded", temperature: 0.9, seed: 1234 }];

export const ask = (chat: ChatEngine, messages: ChatMessage[], s: Sampling, extra: { maxTokens?: number; signal?: AbortSignal; ignoreEos?: boolean } = {}) =>
  chat.generate({
    messages, maxTokens: extra.maxTokens ?? 12, temperature: s.temperature, topP: 1, enableThinking: false,
    ...(s.seed !== undefined ? { seed: s.seed } : {}),
    ...(extra.signal ? { signal: extra.signal } : {}),
    ...(extra.ignoreEos ? { ignoreEos: true } : {}),
  });

const hits = (chat: ChatEngine) => chat.promptCacheStats()!.hits;

/** Cold answers: a service without any cache across requests (each answer from a fresh slot). */
async function coldAnswers(env: Record<string, string>, samplings: readonly Sampling[]): Promise<Map<string, string>> {
  const answers = new Map<string, string>();
  const service = await startTestService({ ...env, PROMPT_CACHE_MIB: "0" });
  try {
    for (const s of samplings) {
      const r = await ask(service.engines.chat, [systemA, question], s);
      if (r.cachedPromptTokens > 8) throw new Error("the reference answer was not cold");
      answers.set(s.name, r.text);
      // Wipe slot 0 with a stranger so the next sampling is cold as well.
      await ask(service.engines.chat, [systemB, question], s, { maxTokens: 1 });
    }
  } finally {
    await service.close();
  }
  return answers;
}

/** Registers the tier test for one model. */
export function tierTest(model: "tiny" | "scripted", samplings: readonly Sampling[]): void {
  // Four services one after the other: slow on a loaded machine.
  t.setTimeout(900_000);
  t.test(`${model} model: every tier gives the cold answer (${samplings.map((s) => s.name).join(", ")})`, async (t) => {
    const modelEnv: Record<string, string> = model === "scripted" ? { LLM_MODEL: await ensureScriptedModel() } : {};
    const cold = await coldAnswers({ ...modelEnv, LLM_PARALLEL: "1", LLM_CONTEXT_SIZE: "1024" }, samplings);
    for (const [name, text] of cold) t.ok(text.length > 0, `${name}: a cold answer to compare with`);
    const dir = await mkdtemp(path.join(os.tmpdir(), "bora-prompt-cache-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const env = { ...modelEnv, LLM_CONTEXT_SIZE: "1024", PROMPT_CACHE_DIR: dir, PROMPT_CACHE_DISK_MIB: "64", PROMPT_CACHE_SAVE_INTERVAL_S: "0" };

    // slot and host tiers: one slot, a stranger in between evicts A into host memory
    let service: TestService = await startTestService({ ...env, LLM_PARALLEL: "1" });
    for (const s of samplings) {
      const chat = service.engines.chat;
      const first = await ask(chat, [systemA, question], s);
      t.equal(first.text, cold.get(s.name), `${s.name}: first request = cold`);
      const before = hits(chat);
      const again = await ask(chat, [systemA, question], s);
      t.equal(again.text, cold.get(s.name), `${s.name}: slot tier = cold`);
      t.ok(again.cachedPromptTokens > 80, `${s.name}: ${again.cachedPromptTokens} cached from the slot`);
      t.equal(hits(chat).slot, before.slot + 1, "counted as a slot hit");
      await ask(chat, [systemB, question], s, { maxTokens: 2 });
      const beforeHost = hits(chat);
      const host = await ask(chat, [systemA, question], s);
      t.equal(host.text, cold.get(s.name), `${s.name}: host tier = cold`);
      t.ok(host.cachedPromptTokens > 80, `${s.name}: ${host.cachedPromptTokens} cached from host memory`);
      t.equal(hits(chat).host, beforeHost.host + 1, "counted as a host hit");
      await ask(chat, [systemB, question], s, { maxTokens: 2 }); // A leaves the slot again
    }
    await service.close(); // persists

    // disk tier: a new service (same dir, model and context) starts with A in host memory
    service = await startTestService({ ...env, LLM_PARALLEL: "1" });
    t.ok((service.engines.chat.promptCacheLoad?.entries ?? 0) >= 1, "entries loaded from disk at start");
    for (const s of samplings) {
      const chat = service.engines.chat;
      const before = hits(chat);
      const r = await ask(chat, [systemA, question], s);
      t.equal(r.text, cold.get(s.name), `${s.name}: after a restart = cold`);
      t.ok(r.cachedPromptTokens > 80, `${s.name}: ${r.cachedPromptTokens} cached after the restart`);
      t.equal(hits(chat).disk + hits(chat).host + hits(chat).slot, before.disk + before.host + before.slot + 1);
      await ask(chat, [systemB, question], s, { maxTokens: 2 });
    }
    t.ok(hits(service.engines.chat).disk >= 1, "the first use after the restart is a disk hit");
    await service.close();

    // copy tier: two slots, A's slot busy with a long stream; the same prefix on the other slot is copied
    service = await startTestService({ ...modelEnv, LLM_CONTEXT_SIZE: "2048", LLM_PARALLEL: "2", PROMPT_CACHE_MIN_TOKENS: "16" });
    for (const s of samplings) {
      const chat = service.engines.chat;
      const stop = new AbortController();
      const long = ask(chat, [systemA, { role: "user", content: "Cuenta una historia larga." }], s, { maxTokens: 1700, signal: stop.signal, ignoreEos: true }).catch(() => null);
      await waitFor(() => chat.stats().slotsBusy === 1 && chat.slotsSnapshot().some((slot) => slot.busy && slot.cachedTokens > 80));
      const before = hits(chat);
      const r = await ask(chat, [systemA, question], s);
      t.equal(r.text, cold.get(s.name), `${s.name}: copy tier = cold`);
      t.ok(r.cachedPromptTokens > 80, `${s.name}: ${r.cachedPromptTokens} copied from the busy slot`);
      t.equal(hits(chat).copy, before.copy + 1, "counted as a copy hit");
      stop.abort();
      await long;
      await ask(chat, [systemB, question], s, { maxTokens: 2 });
      await ask(chat, [systemB, { role: "user", content: "otra" }], s, { maxTokens: 2 });
    }
    await service.close();
  });
}

export async function waitFor(condition: () => boolean, timeoutMs = 20_000): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeoutMs) throw new Error("condition not met in time");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
