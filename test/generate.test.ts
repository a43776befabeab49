// POST /api/llm/generate over HTTP with the real engine on the generated Qwen3 fixture.
import t from "tap";
import { postJson, startTestService } from "./helpers/service.js";

const service = await startTestService();
t.teardown(() => service.close());
const { app } = service;
const { chat } = service.engines;

type GenerateResponse = {
  answer: string; model: string; tokens_generated: number; finish_reason: string; reasoning?: string;
  usage: { prompt_tokens: number; cached_prompt_tokens: number; completion_tokens: number; total_tokens: number };
};
const messages = [
  { role: "system", content: "Eres Mentor Bora, un tutor de español." },
  { role: "user", content: "¿Qué significa 'ímihí'?" },
];
const generate = async (body: Record<string, unknown>) => {
  const res = await postJson(app, "/api/llm/generate", { messages, ...body });
  if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}: ${res.body}`);
  return res.json<GenerateResponse>();
};

t.test("the seed's request gets the seed's response fields", async (t) => {
  // Exactly the seed's body: defaults max_new_tokens 250, temperature 0.5, top_p 0.9.
  const res = await postJson(app, "/api/llm/generate", { messages, max_new_tokens: 250, temperature: 0.5, top_p: 0.9 });
  t.equal(res.statusCode, 200);
  const body = res.json<GenerateResponse>();
  t.type(body.answer, "string");
  t.equal(body.model, "test-qwen3-tiny");
  t.ok(Number.isInteger(body.tokens_generated));
  t.ok(body.tokens_generated >= 1 && body.tokens_generated <= 250);
  t.notMatch(body.answer, /<think>|<\/think>/);
  t.equal(body.reasoning, undefined, "no reasoning field when thinking is off");
  t.equal(body.usage.completion_tokens, body.tokens_generated);
  t.equal(body.usage.total_tokens, body.usage.prompt_tokens + body.tokens_generated);
  t.equal(body.usage.prompt_tokens, chat.tokenizePrompt(messages as never, false).length);
});

t.test("tokens_generated is the count generated, up to max_new_tokens", async (t) => {
  for (const max of [1, 7, 40]) {
    const body = await generate({ max_new_tokens: max, temperature: 0 });
    // The random-weight model does not produce its end token this early: it runs to the limit.
    t.equal(body.finish_reason, "length");
    t.equal(body.tokens_generated, max, `max_new_tokens=${max}`);
  }
});

t.test("a stop string ends generation early and is not in the answer", async (t) => {
  const full = await generate({ max_new_tokens: 30, temperature: 0 });
  const stop = full.answer.slice(8, 12);
  t.ok(stop.length > 0);
  const stopped = await generate({ max_new_tokens: 30, temperature: 0, stop });
  t.equal(stopped.finish_reason, "stop");
  t.ok(full.answer.startsWith(stopped.answer), "the text up to the stop string");
  t.notOk(stopped.answer.includes(stop));
  t.ok(stopped.tokens_generated < 30 && stopped.tokens_generated <= full.tokens_generated);
});

t.test("greedy and seeded sampling are reproducible", async (t) => {
  const a = await generate({ max_new_tokens: 24, temperature: 0 });
  const b = await generate({ max_new_tokens: 24, temperature: 0 });
  t.equal(a.answer, b.answer, "greedy");
  const s1 = await generate({ max_new_tokens: 24, temperature: 1, top_p: 0.95, seed: 1234 });
  const s2 = await generate({ max_new_tokens: 24, temperature: 1, top_p: 0.95, seed: 1234 });
  const s3 = await generate({ max_new_tokens: 24, temperature: 1, top_p: 0.95, seed: 99 });
  t.equal(s1.answer, s2.answer, "same seed, same text at temperature 1");
  t.not(s1.answer, s3.answer, "another seed, another text");
});

t.test("Spanish and Bora text round-trips through the tokenizer", async (t) => {
  const text = "¿Qué significa 'ímihí'? Ñandú, pingüino, acción — «comillas» 🦙";
  t.equal(chat.vocabulary.detokenize(chat.vocabulary.tokenize(text, false)), text);
  const body = await generate({ messages: [{ role: "user", content: text }], max_new_tokens: 3 });
  t.equal(body.usage.prompt_tokens, chat.tokenizePrompt([{ role: "user", content: text }], false).length);
});

t.test("thinking on: the prompt leaves the turn open and reasoning comes back apart", async (t) => {
  const body = await generate({ max_new_tokens: 12, temperature: 0, enable_thinking: true });
  t.type(body.reasoning, "string");
  t.notMatch(body.answer, /<think>|<\/think>/);
  t.equal(body.usage.prompt_tokens, chat.tokenizePrompt(messages as never, true).length);
  t.ok(body.tokens_generated <= 12);
});

t.test("the same system prompt is reused from the slot's cache", async (t) => {
  const system = { role: "system", content: "Eres Mentor Bora. " + "Contexto recuperado sobre la lengua bora. ".repeat(20) };
  const first = await generate({ messages: [system, { role: "user", content: "Primera pregunta" }], max_new_tokens: 2 });
  const second = await generate({ messages: [system, { role: "user", content: "Otra pregunta distinta" }], max_new_tokens: 2 });
  const systemTokens = chat.tokenizePrompt([system as never], false).length;
  t.ok(second.usage.cached_prompt_tokens >= systemTokens - 8, `cached ${second.usage.cached_prompt_tokens} of a ${systemTokens}-token system prompt`);
  t.ok(second.usage.cached_prompt_tokens > first.usage.cached_prompt_tokens);
});
