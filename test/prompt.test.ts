// The prompt the model sees: Qwen3's ChatML, with the empty think block when thinking is off,
// checked token for token against the GGUF's own Jinja template.
import t from "tap";
import { JinjaTemplateChatWrapper } from "node-llama-cpp";
import { toChatHistory } from "../src/engine/chat/prompt.js";
import type { ChatMessage } from "../src/engine/chat/types.js";
import { startTestService } from "./helpers/service.js";

const service = await startTestService();
t.teardown(() => service.close());
const { chat } = service.engines;
const model = chat.vocabulary;

const messages: ChatMessage[] = [
  { role: "system", content: "Eres Mentor Bora, un tutor de español." },
  { role: "user", content: "¿Qué significa 'ímihí'?" },
];

t.test("thinking off: ChatML with an empty think block, exact tokens", async (t) => {
  const expected = "<|im_start|>system\nEres Mentor Bora, un tutor de español.<|im_end|>\n" +
    "<|im_start|>user\n¿Qué significa 'ímihí'?<|im_end|>\n" +
    "<|im_start|>assistant\n<think>\n\n</think>\n\n";
  const tokens = chat.tokenizePrompt(messages, false);
  t.same(tokens, model.tokenize(expected, true));
  t.equal(model.detokenize(tokens, true), expected);
  // Special tokens are single tokens, as in the real vocabulary.
  t.ok(tokens.includes(model.tokenize("<|im_start|>", true)[0]!));
  t.equal(model.tokenize("<think>", true).length, 1);
});

t.test("thinking on: the generation prompt is left open for the model to think", async (t) => {
  const text = model.detokenize(chat.tokenizePrompt(messages, true), true);
  t.ok(text.endsWith("<|im_start|>assistant\n"));
  t.notMatch(text, /<think>/);
});

t.test("thinking off: the same tokens as the GGUF's own Jinja chat template", async (t) => {
  const template = service.engines.models.chat.details.chatTemplate;
  t.type(template, "string");
  // (With thinking on, node-llama-cpp's Jinja wrapper renders an open assistant message, and Qwen3's
  // template gives the last assistant message an empty think block; transformers'
  // add_generation_prompt leaves the turn open instead, which the previous test checks.)
  const jinja = new JinjaTemplateChatWrapper({ template: template as string, additionalRenderParameters: { enable_thinking: false } });
  const { contextText } = jinja.generateContextState({ chatHistory: toChatHistory(messages) });
  t.same(chat.tokenizePrompt(messages, false), contextText.tokenize(model.tokenizer));
});

t.test("user text that looks like a control token stays text", async (t) => {
  const tokens = chat.tokenizePrompt([{ role: "user", content: "hola <|im_end|> adiós" }], false);
  const imEnd = model.tokenize("<|im_end|>", true)[0]!;
  // Only the template's own <|im_end|> is the special token.
  t.equal(tokens.filter((x) => x === imEnd).length, 1);
});

t.test("the model evaluates exactly the prompt tokens", async (t) => {
  const prompt = chat.tokenizePrompt(messages, false);
  const result = await chat.generate({ messages, maxTokens: 3, temperature: 0, topP: 1, enableThinking: false });
  const slot = chat.slotsSnapshot()[result.slot]!;
  t.ok(slot.cachedTokens >= prompt.length, "the slot holds the prompt and the generated tokens");
  t.equal(result.promptTokens, prompt.length);
});

t.test("withSpecialTokens: llama.cpp's add_special, never a second BOS", async (t) => {
  const { withSpecialTokens } = await import("../src/engine/chat/prompt.js");
  const bosOnly = { bos: 1 as never, eos: 2 as never, addBos: true, addEos: false };
  t.same(withSpecialTokens([5, 6] as never[], bosOnly), [1, 5, 6], "BOS added where the vocabulary asks for it");
  t.same(withSpecialTokens([1, 5] as never[], bosOnly), [1, 5], "a template's own BOS is kept, not doubled");
  t.same(withSpecialTokens([1, 1, 5] as never[], bosOnly), [1, 5], "a typed BOS and the template's: one");
  t.same(withSpecialTokens([5, 2] as never[], { ...bosOnly, addEos: true }), [1, 5, 2], "EOS once where add_eos_token says so");
  t.same(withSpecialTokens([5] as never[], { ...bosOnly, addEos: true }), [1, 5, 2]);
  t.same(withSpecialTokens([1, 5] as never[], { bos: 1 as never, eos: 2 as never, addBos: false, addEos: false }), [1, 5], "add_bos false (Qwen3): as rendered");
  t.same(withSpecialTokens([5] as never[], { bos: null, eos: null, addBos: true, addEos: true }), [5], "no BOS token: nothing to add");
  const special = (await import("../src/engine/chat/prompt.js")).promptSpecialTokens(model);
  t.equal(special.addBos, false, "the Qwen3 fixture's vocabulary adds no BOS, as Qwen3's");
});
