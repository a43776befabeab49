// Many prompts over few slots (the bench's "16 prompts over 4 slots" row, issue 25): 16 distinct system prompts
// sent in turn over 4 slots. Every request after the first round finds its prefix (in a slot or in host memory),
// and host memory holds each prefix once, not once per question. Before the fix, a slot's prompt was not saved
// when the prompt that replaced it came from host memory, and 4 prompts in 16 were cold in every round.
import t from "tap";
import type { ChatMessage } from "../src/engine/chat/types.js";
import { startTestService } from "./helpers/service.js";

const PROMPTS = 16;
const service = await startTestService({ LLM_PARALLEL: "4", LLM_CONTEXT_SIZE: "1024", PROMPT_CACHE_MIB: "64" });
t.teardown(() => service.close());
const chat = service.engines.chat;
const system = (p: number): ChatMessage => ({
  role: "system",
  content: `Sesión ${p}. Eres Bora, mentor de la lección ${p * 7 + 3}. ` + `La regla ${p} dice que el tono ${p % 3} sube antes del sufijo ${p * 11}. `.repeat(12),
});
const ask = (p: number, question: number) => chat.generate({
  messages: [system(p), { role: "user", content: `Pregunta ${question}: ¿qué dice la regla ${p}?` }],
  maxTokens: 8, ignoreEos: true, temperature: 0.8, topP: 0.95, seed: question, enableThinking: false,
});

t.test("16 prompts over 4 slots: warm from the second round on, each prefix held once", async (t) => {
  for (let p = 0; p < PROMPTS; p++) await ask(p, p);
  let cached = 0;
  let total = 0;
  const cold: string[] = [];
  for (let round = 1; round <= 2; round++) {
    for (let p = 0; p < PROMPTS; p++) {
      const answer = await ask(p, round * PROMPTS + p);
      cached += answer.cachedPromptTokens;
      total += answer.promptTokens;
      if (answer.cachedPromptTokens < answer.promptTokens * 0.8) cold.push(`round ${round} prompt ${p}: ${answer.cachedPromptTokens}/${answer.promptTokens}`);
    }
  }
  t.same(cold, [], "no request after the first round is cold");
  t.ok(cached / total > 0.85, `prompt tokens cached: ${(100 * cached / total).toFixed(1)}% (llama-server's bench share: 93%)`);
  const stats = chat.promptCacheStats()!;
  t.ok(stats.hostEntries <= PROMPTS, `host memory holds each prefix once (${stats.hostEntries} entries for ${PROMPTS} prompts and ${3 * PROMPTS} questions)`);
  t.equal(stats.evictions, 0, "nothing evicted for room");
});
