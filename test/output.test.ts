// The token-stream text post-processing (src/engine/chat/output.ts) without a model: UTF-8 across
// tokens, stop strings across tokens with hold-back, the <think> split, finish reasons, kept tokens.
import t from "tap";
import {
  GenerationOutput,
  StopMatcher,
  ThinkSplitter,
  Utf8Stream,
  partialTagLength,
  type ContentTransformer,
  type GeneratedToken,
  type OutputOptions,
} from "../src/engine/chat/output.js";
import type { GenerationDelta } from "../src/engine/chat/types.js";

const utf8 = new TextEncoder();
const tok = (text: string): GeneratedToken => ({ bytes: utf8.encode(text), isEnd: false });
const bytesTok = (bytes: number[]): GeneratedToken => ({ bytes: Uint8Array.from(bytes), isEnd: false });
const END: GeneratedToken = { bytes: new Uint8Array(), isEnd: true };

function run(tokens: GeneratedToken[], options: Partial<OutputOptions> = {}) {
  const output = new GenerationOutput({ splitThinking: true, keepReasoning: true, ...options });
  const deltas: GenerationDelta[] = [];
  let consumed = 0;
  for (const token of tokens) {
    if (output.done) break;
    consumed++;
    deltas.push(...output.push(token));
  }
  deltas.push(...output.finish());
  const text = (kind: string) => deltas.flatMap((d) => (d.kind === kind && "text" in d ? [d.text] : []));
  return { summary: output.summary(), deltas, content: text("content"), reasoning: text("reasoning"), consumed };
}

t.test("UTF-8: a character split over tokens comes out whole, once", async (t) => {
  const llama = [...utf8.encode("🦙")];
  const stream = new Utf8Stream();
  t.equal(stream.push(Uint8Array.from(llama.slice(0, 1))), "");
  t.ok(stream.hasPending);
  t.equal(stream.push(Uint8Array.from(llama.slice(1, 3))), "");
  t.equal(stream.push(Uint8Array.from(llama.slice(3))), "🦙");
  t.notOk(stream.hasPending);
  const r = run([tok("a"), bytesTok(llama.slice(0, 2)), bytesTok(llama.slice(2)), tok("b"), END]);
  t.same(r.content.join(""), "a🦙b");
  t.ok(r.content.every((c) => !c.includes("\uFFFD")), "no replacement character in any delta");
  t.equal(r.summary.tokensGenerated, 5);
  t.equal(r.summary.finishReason, "stop");
  t.equal(r.summary.keptTokens, 4, "the end token is not kept in the cache");
});

t.test("UTF-8: an incomplete character at the very end becomes U+FFFD", async (t) => {
  const r = run([tok("x"), bytesTok([0xf0, 0x9f])], { splitThinking: false });
  t.equal(r.content.join(""), "x\uFFFD");
  t.equal(r.summary.finishReason, "length");
});

t.test("stop strings: across token boundaries, held back, never emitted", async (t) => {
  const stops = new StopMatcher(["agua"]);
  t.equal(stops.push("significa a"), "significa ", "a possible stop start is held back");
  t.equal(stops.push("g"), "");
  t.equal(stops.push("ua 🦙"), "");
  t.equal(stops.stopOffset, 10);
  t.equal(stops.push("more"), "", "nothing after the stop");

  const held = new StopMatcher(["agua"]);
  t.equal(held.push("a"), "");
  t.equal(held.push("b"), "ab", "released once it cannot be a stop");

  const r = run([tok("¡Hola! "), tok("sig"), tok("nifica a"), tok("g"), tok("ua"), tok(" 🦙"), END], { stop: ["agua", "nunca"] });
  t.equal(r.content.join(""), "¡Hola! significa ");
  t.equal(r.summary.text, "¡Hola! significa ");
  t.equal(r.summary.finishReason, "stop");
  t.equal(r.consumed, 5, "generation ends at the token completing the stop string");
  t.equal(r.summary.tokensGenerated, 5);
  t.equal(r.summary.keptTokens, 2, "the token holding the stop's first letter is not kept");
  t.ok(r.summary.stoppedByString);

  const boundary = run([tok("ab"), tok("cd"), tok("STOP"), tok("x")], { stop: ["STOP"] });
  t.equal(boundary.summary.text, "abcd");
  t.equal(boundary.summary.keptTokens, 2, "a stop starting exactly at a token boundary keeps every token before it");

  const earliest = run([tok("xx nunca agua")], { stop: ["agua", "nunca"] });
  t.equal(earliest.summary.text, "xx ", "the earliest stop wins");

  const partialAtEnd = run([tok("ag")], { stop: ["agua"] });
  t.equal(partialAtEnd.summary.text, "ag", "a held-back prefix is released when generation ends");
  t.equal(partialAtEnd.summary.finishReason, "length");
});

t.test("stop strings split inside a multi-byte character", async (t) => {
  const llama = [...utf8.encode("🦙")];
  const r = run([tok("ok "), bytesTok(llama.slice(0, 2)), bytesTok(llama.slice(2)), tok("!")], { stop: ["🦙"] });
  t.equal(r.summary.text, "ok ");
  t.equal(r.summary.keptTokens, 1, "neither half of the stop character is kept");
});

t.test("think split: streamed tags split across tokens never leak", async (t) => {
  const tokens = [tok("<thi"), tok("nk>\nPienso"), tok(" en"), tok(" la palabra.\n"), tok("</"), tok("think>"), tok("\n\n"), tok("¡Hola!"), END];
  const r = run(tokens);
  t.equal(r.reasoning.join(""), "Pienso en la palabra.", "reasoning trimmed of the newlines around it");
  t.equal(r.content.join(""), "¡Hola!", "the \\n\\n after </think> is dropped");
  t.notOk(r.deltas.some((d) => "text" in d && /<\/?think|think>/.test(d.text)), "no tag fragment in any delta");
  t.equal(r.summary.reasoning, "Pienso en la palabra.");
  t.equal(r.summary.text, "¡Hola!");

  const off = run(tokens, { keepReasoning: false });
  t.equal(off.summary.reasoning, null, "thinking off: no reasoning returned");
  t.equal(off.reasoning.length, 0, "and none streamed");
  t.equal(off.summary.text, "¡Hola!");

  const raw = run([tok("<think>x</think>y")], { splitThinking: false });
  t.equal(raw.summary.text, "<think>x</think>y", "raw completions are not split");
});

t.test("think split: whitespace inside reasoning is kept, only its ends are trimmed", async (t) => {
  const splitter = new ThinkSplitter();
  const parts = [...splitter.push("<think>\na \n"), ...splitter.push("\nb\n</think>\n\nc"), ...splitter.flush()];
  t.same(parts, [{ kind: "reasoning", text: "a" }, { kind: "reasoning", text: " \n\nb" }, { kind: "content", text: "c" }]);
  t.equal(partialTagLength("abc</th", "</think>"), 4);
  t.equal(partialTagLength("abc", "</think>"), 0);
  const unfinished = run([tok("<think>half a thought <")]);
  t.equal(unfinished.summary.reasoning, "half a thought <", "a held-back partial tag is text at the end");
  t.equal(unfinished.summary.text, "");
});

t.test("think split: a stray tag (a sampled </think> in the answer, a second <think> in a thought) is dropped", async (t) => {
  // At every split point of the input across two pushes.
  const input = "HS</think>HS<think>a<think>b</think>c";
  for (let cut = 0; cut <= input.length; cut++) {
    const splitter = new ThinkSplitter();
    const parts = [...splitter.push(input.slice(0, cut)), ...splitter.push(input.slice(cut)), ...splitter.flush()];
    const text = (kind: string) => parts.filter((p) => p.kind === kind).map((p) => p.text).join("");
    t.equal(text("content"), "HSHSc", `content, cut at ${cut}`);
    t.equal(text("reasoning"), "ab", `reasoning, cut at ${cut}`);
  }
  // Thinking off (the template already closed the thought): a sampled </think> never reaches the answer.
  const off = run([tok("HSHS"), tok("</think>"), tok(" hola")], { keepReasoning: false });
  t.equal(off.summary.text, "HSHS hola");
});

t.test("the content transformer sees content only and may end with tool_calls", async (t) => {
  const seen: string[] = [];
  const transformer: ContentTransformer = {
    push(text) { seen.push(text); return [{ kind: "content", text: text.toUpperCase() }]; },
    finish() { return [{ kind: "tool_call", index: 0, id: "call_0", name: "f" }]; },
    finishReason: () => "tool_calls",
  };
  const r = run([tok("<think>no</think>"), tok("\n\nhola"), END], { content: transformer });
  t.same(seen.join(""), "hola");
  t.equal(r.summary.text, "HOLA");
  t.equal(r.summary.finishReason, "tool_calls");
  t.same(r.deltas.at(-1), { kind: "tool_call", index: 0, id: "call_0", name: "f" });
});

t.test("logprobs ride on the delta that releases their text and stop at the stop string", async (t) => {
  const lp = (text: string, logprob: number): GeneratedToken => ({
    ...tok(text), logprob: { token: text, logprob, bytes: [...utf8.encode(text)], top: [] },
  });
  const r = run([lp("a", -0.1), lp("b", -0.2), lp("X", -0.3), lp("c", -0.4)], { logprobs: true, stop: ["X"], splitThinking: false });
  t.same(r.summary.logprobs?.map((l) => l.logprob), [-0.1, -0.2]);
  const streamed = r.deltas.flatMap((d) => ("logprobs" in d && d.logprobs ? d.logprobs.map((l) => l.logprob) : []));
  t.same(streamed, [-0.1, -0.2]);
  const none = run([tok("a")], { splitThinking: false });
  t.equal(none.summary.logprobs, null);
});
