// The slot loop's own vocabulary (src/engine/vocabulary.ts, NativeVocabulary) against node-llama-cpp's
// vocabulary-only model, on the real Qwen2/Qwen3 BPE tokenizer (the tiny fixture) and a SentencePiece one
// (stories260K): the same tokens for every text, with and without special tokens and trimLeadingSpace, the
// same detokenized text, special tokens and end tokens. Prompts render to the same tokens on both paths.
import fc from "fast-check";
import t, { type Test } from "tap";
import type { Token } from "node-llama-cpp";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { SlotLoopBackend } from "../src/engine/native/slotLoop.js";
import { loadRuntime } from "../src/engine/runtime.js";
import { llamaModelVocabulary, type Vocabulary } from "../src/engine/vocabulary.js";
import { STORIES_MODEL, storiesModelPresent } from "./helpers/stories-parity.js";

const models = await ensureTestModels();
const runtime = await loadRuntime("cpu", 1);
t.teardown(() => runtime.llama.dispose());

const texts = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom("", " ", "  hola", "\nhola", "\n\nhola", " <|im_start|>user\n", "<|im_end|>", "<s>Once", "</s>", "¿Qué significa 'ímihí'?", "🦙 emoji", "\t tabs\t", "a  b"),
  fc.array(fc.constantFrom("hola", " ", "\n", "<|im_start|>", "<|im_end|>", "<think>", "</s>", "<s>", "ñ", "🦙", "Once"), { maxLength: 8 }).map((parts) => parts.join("")),
);

async function compare(t: Test, label: string, modelPath: string): Promise<void> {
  const reference = await runtime.llama.loadModel({ modelPath, vocabOnly: true });
  t.teardown(() => reference.dispose());
  const loaded = await SlotLoopBackend.tryLoad({ modelPath, threads: 1, slots: 1, contextSize: 256, batchSize: 64, gpuLayers: 0 });
  if (!("backend" in loaded)) throw new Error(loaded.unavailable);
  t.teardown(() => loaded.backend.dispose());
  const ours: Vocabulary = loaded.backend.vocabulary;
  const theirs: Vocabulary = llamaModelVocabulary(reference);
  t.equal(ours.size, theirs.size, `${label}: vocabulary size`);
  t.equal(ours.byteLevel, theirs.byteLevel, `${label}: byte-level or not`);
  for (const key of ["bos", "eos", "eot", "nl", "sep", "bosString", "eosString", "eotString", "nlString", "shouldPrependBosToken", "shouldAppendEosToken"] as const) {
    t.equal(ours.tokens[key], theirs.tokens[key], `${label}: tokens.${key}`);
  }
  let cases = 0;
  fc.assert(fc.property(texts, fc.boolean(), fc.boolean(), (text, special, trim) => {
    cases++;
    const options = trim ? "trimLeadingSpace" as const : undefined;
    const a = ours.tokenize(text, special, options);
    const b = theirs.tokenize(text, special, options);
    if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${JSON.stringify(text)} special=${special} trim=${trim}: ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
    for (const spelled of [false, true]) {
      if (ours.detokenize(a, spelled) !== theirs.detokenize(b, spelled)) throw new Error(`detokenize ${JSON.stringify(a)} spelled=${spelled}`);
    }
    if (JSON.stringify(ours.tokenizer(text, special, options)) !== JSON.stringify(a)) throw new Error("the tokenizer function differs from tokenize");
  }), { seed: 24, numRuns: 400 });
  t.pass(`${label}: ${cases} texts tokenize and detokenize alike`);
  const ids = Array.from({ length: 300 }, (_, i) => Math.floor((i * 7919) % ours.size) as Token).concat([0, 1, 2, ours.size - 1].map((i) => i as Token));
  for (const special of [ours.tokens.bos, ours.tokens.eos, ours.tokens.eot].filter((x): x is Token => x !== null)) ids.push(special);
  const mismatch = ids.filter((id) => ours.isSpecialToken(id) !== theirs.isSpecialToken(id) || ours.isEogToken(id) !== theirs.isEogToken(id) || ours.tokenText(id) !== theirs.tokenText(id));
  t.same(mismatch, [], `${label}: special, end-of-generation and stored text of ${ids.length} tokens`);
  t.same(ours.tokenizer("BOS", "builtin"), theirs.tokenizer("BOS", "builtin"), `${label}: builtin BOS`);
  t.same(ours.tokenizer("EOS", "builtin"), theirs.tokenizer("EOS", "builtin"), `${label}: builtin EOS`);
}

t.test("Qwen2/Qwen3 BPE (the tiny fixture)", (t) => compare(t, "qwen", models.chat));
t.test("SentencePiece (stories260K)", { skip: !storiesModelPresent() && `${STORIES_MODEL} is missing` }, (t) => compare(t, "stories", STORIES_MODEL));
