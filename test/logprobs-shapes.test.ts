// The pure mapping of the engine's per-token logprobs to OpenAI's and Ollama's shapes (no model).
import t from "tap";
import type { TokenLogprob } from "../src/engine/chat/types.js";
import { AnswerLogprobs, TextOffsetCursor, chatLogprobsRequest, toChatLogprobs, toCompletionLogprobs, toOllamaLogprobs } from "../src/http/logprobs.js";

const tok = (bytes: number[], logprob: number, top: [string, number][] = []): TokenLogprob => ({
  token: Buffer.from(bytes).toString("utf8"), logprob, bytes, top: top.map(([token, lp]) => ({ token, logprob: lp, bytes: Array.from(Buffer.from(token)) })),
});
// " 🦙." with the llama split over three tokens, as Qwen's tokenizer splits it.
const tokens = [tok([0x20, 0xf0, 0x9f], -0.1), tok([0xa6], -0.2), tok([0x99], -0.3), tok([0x2e], -Infinity, [[".", -Infinity]])];

t.test("text_offset counts UTF-16 units where characters end, across streamed chunks too", async (t) => {
  t.same(toCompletionLogprobs(tokens).text_offset, [0, 1, 1, 3]);
  const cursor = new TextOffsetCursor();
  const first = toCompletionLogprobs(tokens.slice(0, 1), cursor);
  const rest = toCompletionLogprobs(tokens.slice(1), cursor);
  t.same([...first.text_offset, ...rest.text_offset], [0, 1, 1, 3]);
});

t.test("an underflowed probability is -9999 (JSON has no -Infinity), in every shape", async (t) => {
  t.equal(toCompletionLogprobs(tokens).token_logprobs[3], -9999);
  t.same(toCompletionLogprobs(tokens).top_logprobs[3], { ".": -9999 });
  t.equal(toChatLogprobs(tokens).content[3]!.logprob, -9999);
  t.equal(toChatLogprobs(tokens).content[3]!.top_logprobs[0]!.logprob, -9999);
  t.equal(toOllamaLogprobs(tokens)[3]!.logprob, -9999);
  t.doesNotThrow(() => JSON.parse(JSON.stringify(toChatLogprobs(tokens))));
});

t.test("chat: logprobs/top_logprobs -> the engine's request; only answer tokens collected", async (t) => {
  t.same(chatLogprobsRequest({}), {});
  t.same(chatLogprobsRequest({ logprobs: false, top_logprobs: 0 }), {});
  t.same(chatLogprobsRequest({ logprobs: true }), { logprobs: { top: 0 } });
  t.same(chatLogprobsRequest({ logprobs: true, top_logprobs: 5 }), { logprobs: { top: 5 } });
  const error = (() => { try { chatLogprobsRequest({ top_logprobs: 2 }); } catch (e) { return e; } })();
  t.match(error, { field: "top_logprobs", status: 400 });
  const answer = new AnswerLogprobs({ top: 0 });
  answer.collect({ kind: "reasoning", text: "pienso", logprobs: [tok([0x70], -1)] });
  answer.collect({ kind: "content", text: " 🦙", logprobs: tokens.slice(0, 3) });
  t.same(answer.result()!.content.map((c) => c.logprob), [-0.1, -0.2, -0.3]);
  t.equal(new AnswerLogprobs(undefined).result(), null, "null when not asked");
  t.equal(new AnswerLogprobs(undefined).ofDelta({ kind: "content", text: "x" }), null);
});
