// Slots under load: prefix reuse picks the right slot, a full queue is a 429, deadlines end requests,
// disconnects free slots, and embeddings never wait behind a generation.
import t from "tap";
import { postJson, startTestService } from "./helpers/service.js";

type Result = { tokens_generated: number; finish_reason: string; usage: { prompt_tokens: number; cached_prompt_tokens: number } };
const longRun = (extra: Record<string, unknown> = {}) => ({
  messages: [{ role: "user", content: "Cuenta una historia larga." }], max_new_tokens: 3500, ignore_eos: true, temperature: 0.7, ...extra,
});

t.test("prefix reuse: each system prompt goes back to the slot that holds it", async (t) => {
  const service = await startTestService({ LLM_PARALLEL: "2", LLM_CONTEXT_SIZE: "2048" });
  t.teardown(() => service.close());
  const chat = service.engines.chat;
  const systemA = { role: "system" as const, content: "Eres Mentor Bora. Contexto A: " + "la lengua bora tiene tonos altos y bajos. ".repeat(30) };
  const systemB = { role: "system" as const, content: "Eres un asistente de gramática. Contexto B: " + "los verbos irregulares del español. ".repeat(30) };
  const ask = (system: typeof systemA, question: string) =>
    chat.generate({ messages: [system, { role: "user", content: question }], maxTokens: 1, temperature: 0, topP: 1, enableThinking: false });
  // The system turn's tokens, without the open assistant turn the template appends.
  const systemTokens = (system: typeof systemA) => chat.tokenizePrompt([system], false).length - 5;
  t.ok(systemTokens(systemA) > 300, `a ${systemTokens(systemA)}-token system prompt`);

  const a1 = await ask(systemA, "¿Qué es un tono?");
  const b1 = await ask(systemB, "¿Qué es un verbo?");
  t.not(a1.slot, b1.slot, "a stranger's prompt takes the other slot instead of evicting A");
  const a2 = await ask(systemA, "Otra pregunta sobre los tonos, distinta");
  const b2 = await ask(systemB, "Otra pregunta sobre verbos");
  t.equal(a2.slot, a1.slot);
  t.equal(b2.slot, b1.slot);
  for (const [name, r, system] of [["A", a2, systemA], ["B", b2, systemB]] as const) {
    t.ok(r.cachedPromptTokens >= systemTokens(system), `${name}: ${r.cachedPromptTokens} of ${r.promptTokens} prompt tokens reused`);
    // With one token generated, what was decoded is the prompt's uncached tail only.
    t.ok(r.evaluatedTokens <= r.promptTokens - r.cachedPromptTokens + 1, `${name}: decoded ${r.evaluatedTokens} tokens`);
  }
  t.equal(a1.evaluatedTokens, a1.promptTokens - a1.cachedPromptTokens, "the first request decoded its whole prompt");
});

t.test("a full queue answers 429 with Retry-After; a queued request's deadline is a 504", async (t) => {
  const service = await startTestService({ LLM_PARALLEL: "1", LLM_QUEUE_SIZE: "1", LLM_REQUEST_TIMEOUT_MS: "2500", LLM_CONTEXT_SIZE: "4096" });
  t.teardown(() => service.close());
  const { app } = service;
  const running = postJson(app, "/api/llm/generate", longRun());
  await waitFor(() => service.engines.chat.stats().slotsBusy === 1);
  const queued = postJson(app, "/api/llm/generate", longRun());
  await waitFor(() => service.engines.chat.stats().queued === 1);
  const rejected = await postJson(app, "/api/llm/generate", longRun());
  t.equal(rejected.statusCode, 429);
  t.ok(Number(rejected.headers["retry-after"]) >= 1);
  t.equal(rejected.json<{ error: { code: string } }>().error.code, "queue_full");

  const [first, second] = await Promise.all([running, queued]);
  t.equal(first.statusCode, 504, "the running request hit its deadline");
  t.equal(first.json<{ error: { code: string; message: string } }>().error.code, "deadline_exceeded");
  t.match(first.json<{ error: { message: string } }>().error.message, /while generating/);
  t.equal(second.statusCode, 504, "the queued one too");
  t.match(second.json<{ error: { message: string } }>().error.message, /waiting for a free slot|while generating/);
  t.same(service.engines.chat.stats(), { slotsTotal: 1, slotsBusy: 0, queued: 0, queueCapacity: 1 }, "all freed");
  const after = await postJson(app, "/api/llm/generate", { messages: [{ role: "user", content: "hola" }], max_new_tokens: 4 });
  t.equal(after.statusCode, 200);
});

t.test("clients that disconnect free their slots within a token", async (t) => {
  const service = await startTestService({ LLM_PARALLEL: "2", LLM_CONTEXT_SIZE: "4096" });
  t.teardown(() => service.close());
  const base = await service.listen();
  const chat = service.engines.chat;
  const timed = async () => {
    const started = performance.now();
    const res = await fetch(`${base}/api/llm/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(longRun({ max_new_tokens: 100 })) });
    const body = (await res.json()) as Result;
    t.equal(body.tokens_generated, 100);
    return performance.now() - started;
  };
  const before = await timed();

  for (let i = 0; i < 20; i++) {
    const controller = new AbortController();
    const stream = i % 2 === 0;
    const response = fetch(`${base}/api/llm/generate`, {
      method: "POST", headers: { "content-type": "application/json" }, signal: controller.signal,
      body: JSON.stringify(longRun({ stream })),
    }).then(async (res) => { if (stream) for await (const _ of res.body as unknown as AsyncIterable<Uint8Array>) break; }).catch(() => undefined);
    await waitFor(() => chat.stats().slotsBusy > 0);
    if (stream) await response;
    controller.abort();
    await response;
  }
  await waitFor(() => chat.stats().slotsBusy === 0, 2000);
  const frozen = chat.slotsSnapshot();
  await new Promise((r) => setTimeout(r, 300));
  t.same(chat.slotsSnapshot(), frozen, "no slot keeps generating after its client left");
  t.ok(frozen.every((s) => !s.busy));
  t.equal(chat.stats().queued, 0);
  const after = await timed();
  t.ok(after < before * 3 + 500, `the next request runs at full speed (${Math.round(before)} ms before, ${Math.round(after)} ms after)`);
});

t.test("an embedding request does not wait for a long generation", async (t) => {
  const service = await startTestService({ LLM_PARALLEL: "1", LLM_CONTEXT_SIZE: "4096" });
  t.teardown(() => service.close());
  const { app } = service;
  const generation = postJson(app, "/api/llm/generate", longRun({ max_new_tokens: 600 }));
  await waitFor(() => service.engines.chat.stats().slotsBusy === 1);
  const embed = await postJson(app, "/api/llm/embed", { texts: ["hola", "adiós", "¿Qué significa 'ímihí'?"] });
  t.equal(embed.statusCode, 200);
  t.equal(service.engines.chat.stats().slotsBusy, 1, "the generation was still running when the embeddings came back");
  t.equal((await generation).statusCode, 200);
});

async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeoutMs) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}
