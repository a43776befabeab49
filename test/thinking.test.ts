// The scripted Qwen3 fixture answers with a known token chain (a thought, then an answer), so the
// split of reasoning and answer, token counts, stop strings and streaming are checked exactly.
import t from "tap";
import { SCRIPTED_OUTPUT, ensureTestModels } from "../scripts/make-test-models.js";
import { postJson, startTestService } from "./helpers/service.js";
import { everyEventIsWholeUtf8, readSse } from "./helpers/sse.js";

const models = await ensureTestModels();
const service = await startTestService({ LLM_MODEL: models.scripted });
t.teardown(() => service.close());
const base = await service.listen();
const { app } = service;
const messages = [{ role: "system", content: "Eres Mentor Bora." }, { role: "user", content: "¿Qué significa 'ímihí'?" }];

type GenerateResponse = { answer: string; reasoning?: string; tokens_generated: number; finish_reason: string };
const generate = async (body: Record<string, unknown>) => {
  const res = await postJson(app, "/api/llm/generate", { messages, temperature: 0, ...body });
  t.equal(res.statusCode, 200, res.body.slice(0, 200));
  return res.json<GenerateResponse>();
};

t.test("thinking off (default): the answer alone, counted token by token", async (t) => {
  const body = await generate({});
  t.equal(body.answer, SCRIPTED_OUTPUT.answer);
  t.equal(body.reasoning, undefined);
  t.equal(body.finish_reason, "stop");
  // Answer tokens plus the end token: what the model generated, not a re-tokenization of the text.
  t.equal(body.tokens_generated, SCRIPTED_OUTPUT.answerTokens.length);
  t.not(body.tokens_generated, service.engines.chat.vocabulary.tokenize(body.answer, false).length);
});

t.test("thinking on: reasoning apart, never inside the answer", async (t) => {
  const body = await generate({ enable_thinking: true });
  t.equal(body.reasoning, SCRIPTED_OUTPUT.reasoning);
  t.equal(body.answer, SCRIPTED_OUTPUT.answer);
  t.notMatch(body.answer, /think/);
  t.equal(body.tokens_generated, SCRIPTED_OUTPUT.thinkingTokens.length, "thinking tokens count too");
});

t.test("max_new_tokens cuts the thought too, and says length", async (t) => {
  const body = await generate({ enable_thinking: true, max_new_tokens: 5 });
  t.equal(body.finish_reason, "length");
  t.equal(body.tokens_generated, 5);
  t.equal(body.answer, "");
  t.ok(SCRIPTED_OUTPUT.reasoning.startsWith(body.reasoning ?? "?"));
});

t.test("a stop string ends the answer before it", async (t) => {
  const body = await generate({ stop: ["agua", "nunca"] });
  t.equal(body.answer, "¡Hola! 'ímihí' significa ");
  t.equal(body.finish_reason, "stop");
  t.ok(body.tokens_generated < SCRIPTED_OUTPUT.answerTokens.length);
});

t.test("same answer at temperature 1 with a seed (the script dominates sampling)", async (t) => {
  const body = await generate({ temperature: 1, seed: 7 });
  t.equal(body.answer, SCRIPTED_OUTPUT.answer);
});

t.test("streaming on the seed API: deltas, whole characters, then done", async (t) => {
  for (const enableThinking of [false, true]) {
    const response = await fetch(`${base}/api/llm/generate`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages, temperature: 0, stream: true, enable_thinking: enableThinking }),
    });
    t.equal(response.status, 200);
    t.match(response.headers.get("content-type"), /text\/event-stream/);
    const { events, raw } = await readSse(response);
    t.ok(everyEventIsWholeUtf8(raw), "no delta splits a UTF-8 character");
    const deltas = events.filter((e) => e.event === "delta").map((e) => (JSON.parse(e.data) as { text: string }).text);
    const reasoning = events.filter((e) => e.event === "reasoning").map((e) => (JSON.parse(e.data) as { text: string }).text);
    t.ok(deltas.length > 3, "several deltas");
    t.equal(deltas.join(""), SCRIPTED_OUTPUT.answer);
    t.ok(deltas.some((d) => d.includes("🦙")), "the three-token emoji arrives whole");
    t.equal(reasoning.join(""), enableThinking ? SCRIPTED_OUTPUT.reasoning : "");
    const done = events.at(-1)!;
    t.equal(done.event, "done");
    const final = JSON.parse(done.data) as GenerateResponse;
    t.equal(final.finish_reason, "stop");
    t.equal(final.answer, SCRIPTED_OUTPUT.answer);
    t.equal(final.tokens_generated, enableThinking ? SCRIPTED_OUTPUT.thinkingTokens.length : SCRIPTED_OUTPUT.answerTokens.length);
  }
});

t.test("streaming errors that need the model are still plain 4xx JSON", async (t) => {
  const response = await fetch(`${base}/api/llm/generate`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages, stream: true, max_new_tokens: 1_000_000 }),
  });
  t.equal(response.status, 400);
  t.equal(((await response.json()) as { error: { field: string } }).error.field, "max_new_tokens");
});
