// /v1/completions (raw prompt, no chat template) and logprobs on completions and chat completions,
// through the official `openai` client on a real port, over the scripted model.
import t from "tap";
import OpenAI from "openai";
import { SCRIPTED_OUTPUT, ensureTestModels } from "../scripts/make-test-models.js";
import { startTestService } from "./helpers/service.js";

const models = await ensureTestModels();
const service = await startTestService({ LLM_MODEL: models.scripted });
t.teardown(() => service.close());
const base = await service.listen();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const model = service.engines.chat.modelName;
/** The scripted model answers after a prompt ending `</think>\n\n`. */
const prompt = "<|im_start|>user\n¿Qué significa 'ímihí'?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";
const messages = [{ role: "user" as const, content: "¿Qué significa 'ímihí'?" }];

type Alternative = { token: string; logprob: number; bytes: number[] | null };

/** The checks every logprobs answer must pass, whatever the weights. */
function checkAlternatives(t: Pick<typeof import("tap").default, "ok" | "equal">, sampled: { logprob: number }, top: readonly Alternative[], n: number, greedy: boolean, label: string) {
  t.equal(top.length, n, `${label}: ${n} alternatives`);
  t.ok(top.every((a, i) => i === 0 || top[i - 1]!.logprob >= a.logprob), `${label}: sorted, most likely first`);
  t.ok(top.reduce((sum, a) => sum + Math.exp(a.logprob), 0) <= 1 + 1e-6, `${label}: probabilities sum to at most 1`);
  t.ok(sampled.logprob <= 0, `${label}: a log-probability`);
  if (greedy && n > 0) t.ok(Math.abs(sampled.logprob - top[0]!.logprob) < 1e-6, `${label}: greedy picks the top-1`);
}

const utf8 = (byteLists: readonly (readonly number[] | null)[]) => Buffer.from(byteLists.flatMap((b) => b ?? [])).toString("utf8");

t.test("completion of a raw prompt: no chat template, usage, finish reasons", async (t) => {
  const c = await client.completions.create({ model, prompt, max_tokens: 40, temperature: 0 });
  t.match(c.id, /^cmpl-/);
  t.equal(c.object, "text_completion");
  t.equal(c.model, model);
  t.equal(c.choices.length, 1);
  t.equal(c.choices[0]!.text, SCRIPTED_OUTPUT.answer);
  t.equal(c.choices[0]!.finish_reason, "stop");
  t.equal(c.choices[0]!.logprobs, null, "null when not asked");
  t.equal(c.usage!.completion_tokens, SCRIPTED_OUTPUT.answerTokens.length);
  const tokenized = (await service.app.inject({ method: "POST", url: "/tokenize", payload: { content: prompt } })).json<{ tokens: number[] }>();
  t.equal(c.usage!.prompt_tokens, tokenized.tokens.length, "the prompt is tokenized as is");
  const cut = await client.completions.create({ model, prompt: [prompt], temperature: 0, max_tokens: 3 });
  t.equal(cut.choices[0]!.finish_reason, "length");
  t.equal(cut.usage!.completion_tokens, 3);
});

t.test("streamed completion: text_completion chunks add up, usage chunk, [DONE]", async (t) => {
  const stream = await client.completions.create({ model, prompt, max_tokens: 40, temperature: 0, stream: true, stream_options: { include_usage: true } });
  let text = "";
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    t.equal(chunk.object, "text_completion");
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.text;
      finish = choice.finish_reason ?? finish;
    }
  }
  t.equal(text, SCRIPTED_OUTPUT.answer);
  t.equal(finish, "stop");
  t.equal(usage?.completion_tokens, SCRIPTED_OUTPUT.answerTokens.length);
});

t.test("completion logprobs: tokens spell the text, offsets, sorted alternatives, greedy = top-1", async (t) => {
  const c = await client.completions.create({ model, prompt, max_tokens: 40, temperature: 0, logprobs: 3 });
  const lp = c.choices[0]!.logprobs!;
  const text = c.choices[0]!.text;
  t.ok(lp.tokens!.length >= SCRIPTED_OUTPUT.answerTokens.length - 1);
  t.equal(lp.tokens!.length, lp.token_logprobs!.length);
  t.equal(lp.tokens!.length, lp.top_logprobs!.length);
  t.equal(lp.text_offset![0], 0);
  t.ok(lp.text_offset!.every((o, i) => i === 0 || o >= lp.text_offset![i - 1]!), "offsets never go back");
  t.ok(lp.text_offset!.every((o) => o <= text.length));
  t.ok(text.startsWith(lp.tokens!.slice(0, 5).join("")), "the first tokens spell the start of the text");
  lp.top_logprobs!.forEach((top, i) => {
    const alternatives = Object.entries(top).map(([token, logprob]) => ({ token, logprob, bytes: null }));
    t.ok(alternatives.length <= 3, `token ${i}: at most 3 alternatives`);
    t.ok(Math.abs(lp.token_logprobs![i]! - Math.max(...alternatives.map((a) => a.logprob))) < 1e-6, `token ${i}: greedy picks the top-1`);
  });
  const stream = await client.completions.create({ model, prompt, max_tokens: 40, temperature: 0, logprobs: 3, stream: true });
  const streamed: number[] = [];
  const offsets: number[] = [];
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      streamed.push(...(choice.logprobs?.token_logprobs ?? []));
      offsets.push(...(choice.logprobs?.text_offset ?? []));
    }
  }
  t.equal(streamed.length, lp.token_logprobs!.length, "streamed: one logprob per token");
  t.ok(streamed.every((v, i) => Math.abs(v - lp.token_logprobs![i]!) < 1e-6), "streamed logprobs equal the plain ones");
  t.same(offsets, lp.text_offset, "streamed offsets continue across chunks");
});

t.test("chat logprobs: the answer's tokens with top_logprobs, streamed the same, null when not asked", async (t) => {
  const c = await client.chat.completions.create({ model, messages, temperature: 0, logprobs: true, top_logprobs: 4 });
  const content = c.choices[0]!.logprobs!.content!;
  t.equal(utf8(content.map((x) => x.bytes)), SCRIPTED_OUTPUT.answer, "the tokens' bytes spell the answer");
  content.forEach((x, i) => checkAlternatives(t, x, x.top_logprobs, 4, true, `token ${i}`));
  t.equal(c.choices[0]!.logprobs!.refusal, null);

  const stream = await client.chat.completions.create({ model, messages, temperature: 0, logprobs: true, top_logprobs: 4, stream: true });
  const streamed: { token: string; logprob: number }[] = [];
  for await (const chunk of stream) streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
  t.same(streamed.map((x) => x.token), content.map((x) => x.token), "same tokens streamed");
  t.ok(streamed.every((x, i) => Math.abs(x.logprob - content[i]!.logprob) < 1e-6), "same logprobs streamed");

  const noTop = await client.chat.completions.create({ model, messages, temperature: 0, logprobs: true });
  t.ok(noTop.choices[0]!.logprobs!.content!.every((x) => x.top_logprobs.length === 0), "top_logprobs omitted: none");
  const thinking = await client.chat.completions.create({ model, messages, temperature: 0, logprobs: true, top_logprobs: 1, enable_thinking: true } as OpenAI.ChatCompletionCreateParamsNonStreaming);
  // The thought's tokens are not the answer's. (The engine attaches the tokens between the thought
  // and the answer, `</think>\n\n`, to the first answer delta: only the thought itself is asserted absent.)
  const answerBytes = utf8(thinking.choices[0]!.logprobs!.content!.map((x) => x.bytes));
  t.ok(answerBytes.endsWith(SCRIPTED_OUTPUT.answer), "the answer's tokens are there");
  t.notOk(answerBytes.includes(SCRIPTED_OUTPUT.reasoning), "the thought's tokens are not");
  const plain = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 2 });
  t.equal(plain.choices[0]!.logprobs, null);
});

t.test("bad input: 400 in OpenAI's shape naming the field", async (t) => {
  const cases: [string, Record<string, unknown>, string][] = [
    ["/v1/completions", { prompt, echo: true }, "echo"],
    ["/v1/completions", { prompt: [prompt, prompt] }, "prompt"],
    ["/v1/completions", { prompt: [1, 2, 3] }, "prompt"],
    ["/v1/completions", { prompt, logprobs: 6 }, "logprobs"],
    ["/v1/completions", { prompt, max_tokens: "many" }, "max_tokens"],
    ["/v1/completions", { prompt, max_tokens: 100_000 }, "max_tokens"],
    ["/v1/completions", { prompt, suffix: "x" }, "suffix"],
    ["/v1/completions", { prompt, model: "all-MiniLM-L6-v2-nope" }, "model"],
    ["/v1/completions", {}, "prompt"],
    ["/v1/chat/completions", { messages, top_logprobs: 21, logprobs: true }, "top_logprobs"],
    ["/v1/chat/completions", { messages, top_logprobs: 2 }, "top_logprobs"],
    ["/v1/chat/completions", { messages, logprobs: "yes" }, "logprobs"],
  ];
  for (const [url, body, param] of cases) {
    const res = await fetch(`${base}${url}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    t.ok(res.status >= 400 && res.status < 500, `${url} ${JSON.stringify(body).slice(0, 60)}: ${res.status}`);
    const json = await res.json() as { error: { param: string | null; type: string; message: string } };
    t.equal(json.error.param, param, json.error.message);
  }
});
