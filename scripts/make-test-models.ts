// Generates the synthetic GGUF models that tests and benchmarks load, fully offline.
//
// Each model has the real tokenizer (from the vocab-only GGUFs in node-llama-cpp's bundled llama.cpp source; for
// Qwen, the Qwen2 BPE with Qwen3's added tokens, as convert_hf_to_gguf.py writes Qwen3) and the real architecture
// metadata, but deterministic pseudo-random weights: the text they generate is gibberish, while tokenization, chat
// templating, context/KV sizing and compute cost match the real models. The exception is the scripted model, whose
// hand-set weights make it answer `SCRIPTED_OUTPUT` (a thought, then an answer) for any chat prompt.
//
//   test-qwen3-tiny.gguf              qwen3, 64 wide × 2 layers, F32           (~40 MB, chat tests)
//   test-minilm-tiny.gguf             bert,  64 wide × 2 layers, F32           (~8 MB, embedding tests)
//   test-qwen3-scripted.gguf          qwen3, 64 wide × 2 layers, F32           (~80 MB, generates SCRIPTED_OUTPUT)
//   bench-qwen3-1.7b-shape-f16.gguf   qwen3, exact Qwen3-1.7B shape, F16       (~3.4 GB, quantized later by the bench)
//   bench-minilm-shape-f16.gguf       bert,  exact all-MiniLM-L6-v2 shape, F16 (~45 MB)
//   test-e5-tiny.gguf                 bert + XLM-R unigram vocab, 32 wide × 2 layers, F32, mean pooling (~34 MB)
//   test-bge-reranker-tiny.gguf       bert + XLM-R vocab + classification head, rank pooling, F32 (~34 MB)
//   test-qwen3-reranker-tiny.gguf     qwen3 tiny + Qwen3-Reranker's yes/no head and rerank template (~40 MB)
//   bench-e5-small-shape-f16.gguf     exact multilingual-e5-small shape, F16 (~235 MB)
//   bench-bge-reranker-v2-m3-shape-f16.gguf  exact bge-reranker-v2-m3 shape (xlm-roberta large + head), F16 (~1.1 GB)
//
// The XLM-RoBERTa models are what convert_hf_to_gguf.py writes for XLMRobertaModel /
// XLMRobertaForSequenceClassification: architecture "bert" (llama.cpp has no separate xlm-roberta arch), the
// SentencePiece unigram vocabulary as tokenizer model "t5" (the 250k vocab of multilingual-e5 and bge-m3, taken from
// ggml-vocab-nomic-bert-moe.gguf and cut to the model's vocab_size), the position table without RoBERTa's 2 pad
// offsets, and for rerankers `cls.{weight,bias}` + `cls.output.{weight,bias}` with pooling_type 4 (rank).
//
// Files are cached in models/.cache next to a `<file>.stamp` (generator version + hash of every parameter);
// a matching stamp and file size skip generation without reading the model. Same inputs → byte-identical file.
//
// CLI: npx tsx scripts/make-test-models.ts [--bench]
import { gguf } from "@huggingface/gguf";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  type GgufKv,
  type GgufScalar,
  type GgufScalarType,
  type GgufTensor,
  type TensorDtype,
  type TensorFill,
  GgufValueType,
  encodeKv,
  f32ToF16Bits,
  planGguf,
  writeGguf,
} from "./lib/gguf-writer.ts";
import { ensureLlamaSource, llamaCppTag, projectRoot } from "./lib/llama-source.ts";

/** Bump whenever the bytes this script produces for the same parameters change. */
const GENERATOR_VERSION = 2; // 2: Qwen3 added tokens instead of Qwen2's [PADn]; scripted model

export const modelCacheDir = path.join(projectRoot, "models", ".cache");

// ---- model shapes ---------------------------------------------------------------------------------

export interface Qwen3Shape {
  kind: "qwen3";
  file: string;
  name: string;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  headDim: number;
  nFf: number;
  nCtx: number;
  ropeFreqBase: number;
  rmsEps: number;
  /** dtype of 2-D weight matrices (1-D tensors are always F32). */
  matrixDtype: TensorDtype;
  /** std-dev of the N(0, std²) weights. */
  std: number;
  seed: number;
  /**
   * A Qwen3-Reranker as convert_hf_to_gguf.py writes it: pooling_type 4 (rank: last token, then a softmax over
   * the head), labels ["yes", "no"], `cls.output.weight` (the two lm_head rows) and `tokenizer.chat_template.rerank`.
   */
  rerank?: boolean;
}

export interface BertShape {
  kind: "bert";
  file: string;
  name: string;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nFf: number;
  nCtx: number;
  layerNormEps: number;
  /** 1 = mean (llama.cpp LLAMA_POOLING_TYPE_MEAN). */
  poolingType: number;
  matrixDtype: TensorDtype;
  std: number;
  seed: number;
}

export const TEST_CHAT_SHAPE: Qwen3Shape = {
  kind: "qwen3",
  file: "test-qwen3-tiny.gguf",
  name: "Qwen3-Tiny-Test",
  nEmbd: 64,
  nLayer: 2,
  nHead: 4,
  nHeadKv: 2,
  headDim: 16,
  nFf: 128,
  nCtx: 4096,
  ropeFreqBase: 1_000_000,
  rmsEps: 1e-6,
  matrixDtype: "F32",
  std: 0.02,
  seed: 0x51a7e001,
};

/**
 * The tiny Qwen3 with 32-wide heads: a quantized KV cache (q8_0, q4_0) stores blocks of 32, which the other
 * fixtures' 16-wide heads cannot fill (llama.cpp refuses the context). Made on demand (test/kv-cache-type.test.ts).
 */
export const TEST_CHAT_KV32_SHAPE: Qwen3Shape = {
  ...TEST_CHAT_SHAPE,
  file: "test-qwen3-tiny-head32.gguf",
  name: "Qwen3-Tiny-Head32-Test",
  nHead: 2,
  nHeadKv: 1,
  headDim: 32,
  seed: 0x51a7e0c2,
};

export const TEST_EMBED_SHAPE: BertShape = {
  kind: "bert",
  file: "test-minilm-tiny.gguf",
  name: "MiniLM-Tiny-Test",
  nEmbd: 64,
  nLayer: 2,
  nHead: 4,
  nFf: 128,
  nCtx: 512,
  layerNormEps: 1e-12,
  poolingType: 1,
  matrixDtype: "F32",
  std: 0.02,
  seed: 0x51a7e002,
};

/** Qwen3-1.7B: hidden 2048, 28 layers, 16 q heads / 8 kv heads of 128, ffn 6144, 40960 ctx, tied embeddings. */
export const BENCH_CHAT_SHAPE: Qwen3Shape = {
  kind: "qwen3",
  file: "bench-qwen3-1.7b-shape-f16.gguf",
  name: "Qwen3-1.7B-shape-bench",
  nEmbd: 2048,
  nLayer: 28,
  nHead: 16,
  nHeadKv: 8,
  headDim: 128,
  nFf: 6144,
  nCtx: 40960,
  ropeFreqBase: 1_000_000,
  rmsEps: 1e-6,
  matrixDtype: "F16",
  std: 0.02,
  seed: 0x51a7e003,
};

/** all-MiniLM-L6-v2: hidden 384, 6 layers, 12 heads, ffn 1536, 512 positions. */
export const BENCH_EMBED_SHAPE: BertShape = {
  kind: "bert",
  file: "bench-minilm-shape-f16.gguf",
  name: "MiniLM-L6-shape-bench",
  nEmbd: 384,
  nLayer: 6,
  nHead: 12,
  nFf: 1536,
  nCtx: 512,
  layerNormEps: 1e-12,
  poolingType: 1,
  matrixDtype: "F16",
  std: 0.02,
  seed: 0x51a7e004,
};

/**
 * An XLM-RoBERTa encoder as llama.cpp loads it (arch "bert", unigram vocab). `rankHead` adds RoBERTa's
 * classification head (dense + tanh + out_proj to one logit) and makes it a reranker (pooling_type 4 = rank).
 */
export interface XlmrShape {
  kind: "xlmr";
  file: string;
  name: string;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nFf: number;
  /** Positions after the converter drops RoBERTa's pad offset (514 → 512, 8194 → 8192). */
  nCtx: number;
  layerNormEps: number;
  /** 1 = mean (multilingual-e5), 4 = rank (rerankers). */
  poolingType: number;
  /** config.json vocab_size: 250037 for multilingual-e5-small, 250002 for bge-m3 / bge-reranker-v2-m3. */
  nVocab: number;
  /** config.json type_vocab_size (2 for multilingual-e5-small, 1 for XLM-R large models). */
  tokenTypes: number;
  rankHead: boolean;
  matrixDtype: TensorDtype;
  std: number;
  /**
   * std-dev of the head's output projection (its dense layer has unit gain, std 1/sqrt(nEmbd)): large enough that
   * the documents' logits spread over a few units and their order is not float noise.
   */
  headStd: number;
  seed: number;
}

/** Qwen3-Reranker-0.6B's layout at the tiny chat model's scale (64 wide, 2 layers). */
export const TEST_QWEN3_RERANK_SHAPE: Qwen3Shape = {
  ...TEST_CHAT_SHAPE,
  file: "test-qwen3-reranker-tiny.gguf",
  name: "Qwen3-Reranker-Tiny-Test",
  seed: 0x51a7e00b,
  rerank: true,
};

/** The rerank template convert_hf_to_gguf.py (conversion/qwen.py) writes for Qwen3-Reranker. */
export const QWEN3_RERANK_TEMPLATE =
  "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct provided. " +
  "Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n" +
  "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n<Query>: {query}\n" +
  "<Document>: {document}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n";

/** multilingual-e5-small at test scale: same vocabulary, tokenizer and layout, 32 wide × 2 layers. */
export const TEST_XLMR_EMBED_SHAPE: XlmrShape = {
  kind: "xlmr",
  file: "test-e5-tiny.gguf",
  name: "Multilingual-E5-Tiny-Test",
  nEmbd: 32,
  nLayer: 2,
  nHead: 4,
  nFf: 64,
  nCtx: 512,
  layerNormEps: 1e-12,
  poolingType: 1,
  nVocab: 250037,
  tokenTypes: 2,
  rankHead: false,
  matrixDtype: "F32",
  std: 0.1,
  headStd: 0,
  seed: 0x51a7e007,
};

/** bge-reranker-v2-m3 at test scale: XLM-R vocabulary, 8192 positions, a one-logit classification head. */
export const TEST_RERANK_SHAPE: XlmrShape = {
  kind: "xlmr",
  file: "test-bge-reranker-tiny.gguf",
  name: "BGE-Reranker-Tiny-Test",
  nEmbd: 32,
  nLayer: 2,
  nHead: 4,
  nFf: 64,
  nCtx: 8192,
  layerNormEps: 1e-5,
  poolingType: 4,
  nVocab: 250002,
  tokenTypes: 1,
  rankHead: true,
  matrixDtype: "F32",
  std: 0.1,
  headStd: 2,
  seed: 0x51a7e008,
};

/** intfloat/multilingual-e5-small: hidden 384, 12 layers, 12 heads, ffn 1536, 512 positions, vocab 250037. */
export const BENCH_XLMR_EMBED_SHAPE: XlmrShape = {
  ...TEST_XLMR_EMBED_SHAPE,
  file: "bench-e5-small-shape-f16.gguf",
  name: "Multilingual-E5-Small-shape-bench",
  nEmbd: 384,
  nLayer: 12,
  nHead: 12,
  nFf: 1536,
  matrixDtype: "F16",
  std: 0.02,
  seed: 0x51a7e009,
};

/** BAAI/bge-reranker-v2-m3 (xlm-roberta large): hidden 1024, 24 layers, 16 heads, ffn 4096, 8192 positions. */
export const BENCH_RERANK_SHAPE: XlmrShape = {
  ...TEST_RERANK_SHAPE,
  file: "bench-bge-reranker-v2-m3-shape-f16.gguf",
  name: "BGE-Reranker-v2-M3-shape-bench",
  nEmbd: 1024,
  nLayer: 24,
  nHead: 16,
  nFf: 4096,
  matrixDtype: "F16",
  std: 0.02,
  headStd: 0.5,
  seed: 0x51a7e00a,
};

/**
 * A Qwen3 model whose output is scripted rather than random: see `defineScripted`. Same tiny shape and the same
 * tokenizer/template as test-qwen3-tiny; weights are F32.
 */
export interface ScriptedQwen3Shape extends Omit<Qwen3Shape, "kind" | "matrixDtype"> {
  kind: "qwen3-scripted";
  /** Tokens sampled after a prompt ending `<|im_start|>assistant\n` (thinking on), through EOS. */
  thinkingTokens: readonly number[];
  /** Tokens sampled after a prompt ending `</think>\n\n` (thinking off), through EOS. */
  answerTokens: readonly number[];
  /** Text the chain must spell: thinking `<think>\n{reasoning}\n</think>\n\n{answer}`, else `{answer}`. */
  reasoning: string;
  answer: string;
  /** Logit of the scripted next token: it beats every other logit by at least half of this. */
  logit: number;
}

/**
 * What test-qwen3-scripted.gguf generates for a Qwen3 chat prompt: greedily, and also with ordinary sampling
 * settings (temperature, top-k/p, penalties), since the scripted logit leads every other one by 80 or more. The
 * tokens are the canonical Qwen tokenization of Qwen3's output format, all distinct apart from the two "\n":
 *
 *   thinking on  (prompt ends `<|im_start|>assistant\n`): `<think>\nPienso en la palabra.\n</think>\n\n` + answer + `<|im_end|>`
 *   thinking off (prompt ends `<think>\n\n</think>\n\n`): answer + `<|im_end|>`
 *
 * The answer's 🦙 (4 UTF-8 bytes) is split over three tokens (" \xF0\x9F", "\xA6", "\x99"), for UTF-8-safe
 * streaming tests. Thinking on assumes no "<think>" earlier in the prompt. After any other prompt ending the
 * output is unspecified.
 */
export const SCRIPTED_OUTPUT = {
  reasoning: "Pienso en la palabra.",
  answer: "¡Hola! 'ímihí' significa agua 🦙.",
  /** Answer tokens then EOS (<|im_end|>, 151645): 15 tokens. */
  answerTokens: [39832, 68012, 0, 364, 54994, 6996, 2426, 6, 67732, 55462, 11162, 99, 247, 13, 151645],
  /** <think> \n P ien so ␣en ␣la ␣palabra .\n </think> \n\n, then `answerTokens`: 26 tokens. */
  thinkingTokens: [151667, 198, 47, 3591, 704, 662, 1187, 72937, 624, 151668, 271,
    39832, 68012, 0, 364, 54994, 6996, 2426, 6, 67732, 55462, 11162, 99, 247, 13, 151645],
} as const;

export const SCRIPTED_CHAT_SHAPE: ScriptedQwen3Shape = {
  ...(({ kind: _kind, matrixDtype: _dtype, ...rest }) => rest)(TEST_CHAT_SHAPE),
  kind: "qwen3-scripted",
  file: "test-qwen3-scripted.gguf",
  name: "Qwen3-Scripted-Test",
  seed: 0x51a7e005,
  thinkingTokens: SCRIPTED_OUTPUT.thinkingTokens,
  answerTokens: SCRIPTED_OUTPUT.answerTokens,
  reasoning: SCRIPTED_OUTPUT.reasoning,
  answer: SCRIPTED_OUTPUT.answer,
  logit: 160,
};

/**
 * What test-qwen3-scripted-tools.gguf generates: a Qwen3 tool call (Hermes format, compact JSON) for any chat
 * prompt, and with thinking on a thought that itself holds a `<tool_call>` block (spelled with ordinary tokens),
 * which must stay reasoning. Same bigram machine as `SCRIPTED_OUTPUT`; the token spellings were chosen so that no
 * token repeats with two different successors.
 *
 *   thinking on:  `<think>\n` + reasoning + `\n</think>\n\n` + answer + `<|im_end|>`
 *   thinking off: answer + `<|im_end|>`
 */
export const SCRIPTED_TOOL_OUTPUT = {
  reasoning: 'Aquí no: <tool_call>{"name":"ping"}</tool_call>',
  answer: '<tool_call>{"name": "get_weather","arguments":{"city":"Madrid"}}</tool_call>',
  call: { name: "get_weather", arguments: '{"city":"Madrid"}' },
  /** <tool_call> {" name ": ␣" get _weather "," arguments ":{" city ":" Mad rid "}} </tool_call> <|im_end|>: 17 tokens. */
  answerTokens: [151657, 4913, 606, 788, 330, 455, 69364, 2198, 16370, 22317, 8926, 3252, 37036, 1869, 30975, 151658, 151645],
  /** <think> \n, the reasoning with its "\n" (20 tokens), </think> \n\n, then `answerTokens`: 41 tokens. */
  thinkingTokens: [151667, 198, 91213, 2426, 902, 25, 366, 14172, 13429, 88863, 12400, 68, 1, 2974, 9989, 9207, 522, 36127, 75, 49604, 654, 397,
    151668, 271, 151657, 4913, 606, 788, 330, 455, 69364, 2198, 16370, 22317, 8926, 3252, 37036, 1869, 30975, 151658, 151645],
} as const;

export const SCRIPTED_TOOLS_CHAT_SHAPE: ScriptedQwen3Shape = {
  ...SCRIPTED_CHAT_SHAPE,
  file: "test-qwen3-scripted-tools.gguf",
  name: "Qwen3-Scripted-Tools-Test",
  seed: 0x51a7e006,
  thinkingTokens: SCRIPTED_TOOL_OUTPUT.thinkingTokens,
  answerTokens: SCRIPTED_TOOL_OUTPUT.answerTokens,
  reasoning: SCRIPTED_TOOL_OUTPUT.reasoning,
  answer: SCRIPTED_TOOL_OUTPUT.answer,
};

// ---- deterministic weights ----------------------------------------------------------------------

function fnv1a32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * 65,536 fixed N(0, 1) samples (Box–Muller over a seeded mulberry32). A weight is table[16 random bits] × std,
 * which makes drawing billions of F16 values a table lookup per element.
 */
const NORMAL_TABLE: Float64Array = (() => {
  const rnd = mulberry32(0x9e3779b9);
  const t = new Float64Array(65536);
  for (let i = 0; i < t.length; i += 2) {
    const u1 = 1 - rnd(); // (0, 1]
    const u2 = rnd();
    const r = Math.sqrt(-2 * Math.log(u1));
    t[i] = r * Math.cos(2 * Math.PI * u2);
    t[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  return t;
})();

const f32Tables = new Map<number, Float32Array>();
const f16Tables = new Map<number, Uint16Array>();

function normalTableF32(std: number): Float32Array {
  let t = f32Tables.get(std);
  if (!t) {
    t = Float32Array.from(NORMAL_TABLE, (z) => z * std);
    f32Tables.set(std, t);
  }
  return t;
}

function normalTableF16(std: number): Uint16Array {
  let t = f16Tables.get(std);
  if (!t) {
    t = Uint16Array.from(NORMAL_TABLE, (z) => f32ToF16Bits(z * std));
    f16Tables.set(std, t);
  }
  return t;
}

/** N(0, std²) weights from a per-tensor xorshift32 stream seeded by (model seed, tensor name). */
function normalFill(dtype: TensorDtype, std: number, modelSeed: number, tensorName: string): () => TensorFill {
  return () => {
    let x = (fnv1a32(tensorName) ^ modelSeed) | 0;
    if (x === 0) x = 0x2545f491;
    const table: Float32Array | Uint16Array = dtype === "F32" ? normalTableF32(std) : normalTableF16(std);
    return (out) => {
      const n = out.length;
      for (let i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        out[i] = table[x >>> 16] ?? 0;
      }
    };
  };
}

function constFill(dtype: TensorDtype, value: number): () => TensorFill {
  const bits = dtype === "F32" ? value : f32ToF16Bits(value);
  return () => (out) => {
    out.fill(bits);
  };
}

// ---- tokenizer metadata from the vocab-only GGUFs -------------------------------------------------

interface Vocab {
  /** tokenizer.* KVs in file order, with their original GGUF types. */
  kvs: Map<string, GgufKv>;
  tokens: readonly string[];
}

function isScalar(v: unknown): v is GgufScalar {
  return typeof v === "string" || typeof v === "number" || typeof v === "bigint" || typeof v === "boolean";
}

function isScalarType(t: number): t is GgufScalarType {
  return Number.isInteger(t) && t >= 0 && t <= 12 && t !== GgufValueType.ARRAY;
}

async function loadVocab(file: string): Promise<Vocab> {
  const raw = readFileSync(file);
  const parsed = await gguf(file, { allowLocalFile: true, typedMetadata: true });
  // A vocab-only file is header + KVs and nothing else: the KVs must end exactly at the end of the file,
  // i.e. the parser consumed every byte (no truncated arrays or skipped keys).
  if (parsed.tensorInfos.length !== 0 || parsed.tensorInfoByteRange[0] !== raw.length) {
    throw new Error(`${file}: metadata parse ended at ${parsed.tensorInfoByteRange[0]} of ${raw.length} bytes`);
  }
  const kvs = new Map<string, GgufKv>();
  for (const [key, entry] of Object.entries(parsed.typedMetadata)) {
    if (!key.startsWith("tokenizer.")) continue;
    let kv: GgufKv;
    const entryType: number = entry.type; // @huggingface/gguf's GGUFValueType has the same numbering
    if (entryType === GgufValueType.ARRAY) {
      const values = entry.value;
      const subType: number | undefined = "subType" in entry ? entry.subType : undefined;
      if (!Array.isArray(values) || subType === undefined || !isScalarType(subType)) {
        throw new Error(`${file}: ${key}: unsupported array`);
      }
      const scalars: GgufScalar[] = [];
      for (const v of values) {
        if (!isScalar(v)) throw new Error(`${file}: ${key}: nested arrays are not supported`);
        scalars.push(v);
      }
      kv = { key, type: GgufValueType.ARRAY, subType, value: scalars };
    } else {
      const type = entryType;
      const value = entry.value;
      if (!isScalarType(type) || !isScalar(value)) throw new Error(`${file}: ${key}: unsupported value`);
      kv = { key, type, value };
    }
    // Round-trip check: re-encoding the KV must reproduce the exact bytes of the source file
    // (catches any lossy decoding, e.g. invalid UTF-8 in a token, or a changed value type).
    if (raw.indexOf(encodeKv(kv)) < 0) throw new Error(`${file}: ${key} does not re-encode byte-identically`);
    kvs.set(key, kv);
  }
  const tokensKv = kvs.get("tokenizer.ggml.tokens");
  const typesKv = kvs.get("tokenizer.ggml.token_type");
  if (tokensKv?.type !== GgufValueType.ARRAY || typesKv?.type !== GgufValueType.ARRAY) {
    throw new Error(`${file}: no token list`);
  }
  const tokens = tokensKv.value.map((t) => String(t));
  if (typesKv.value.length !== tokens.length) throw new Error(`${file}: token_type length mismatch`);
  return { kvs, tokens };
}

function expectToken(vocab: Vocab, id: number, text: string): number {
  if (vocab.tokens[id] !== text) throw new Error(`vocab: token ${id} is ${JSON.stringify(vocab.tokens[id])}, expected ${text}`);
  return id;
}

const u32 = (key: string, value: number): GgufKv => ({ key, type: GgufValueType.UINT32, value });
const f32 = (key: string, value: number): GgufKv => ({ key, type: GgufValueType.FLOAT32, value });
const str = (key: string, value: string): GgufKv => ({ key, type: GgufValueType.STRING, value });

/** The general.* and size keys every architecture has, in the order llama.cpp's converter writes them. */
function architectureKvs(a: string, shape: { name: string; nLayer: number; nCtx: number; nEmbd: number; nFf: number; nHead: number },
  matrixDtype: Parameters<typeof fileType>[0]): GgufKv[] {
  return [
    str("general.architecture", a),
    str("general.type", "model"),
    str("general.name", shape.name),
    u32("general.file_type", fileType(matrixDtype)),
    u32("general.quantization_version", 2),
    u32(`${a}.block_count`, shape.nLayer),
    u32(`${a}.context_length`, shape.nCtx),
    u32(`${a}.embedding_length`, shape.nEmbd),
    u32(`${a}.feed_forward_length`, shape.nFf),
    u32(`${a}.attention.head_count`, shape.nHead),
  ];
}
const bool = (key: string, value: boolean): GgufKv => ({ key, type: GgufValueType.BOOL, value });

/** Copies the vocab's tokenizer KVs (in order), replacing or appending `overrides`. */
function tokenizerKvs(vocab: Vocab, overrides: readonly GgufKv[], drop: readonly string[] = []): GgufKv[] {
  const out = new Map(vocab.kvs);
  for (const key of drop) out.delete(key);
  for (const kv of overrides) out.set(kv.key, kv);
  return [...out.values()];
}

/** llama_ftype: 0 = ALL_F32, 1 = MOSTLY_F16. */
const fileType = (dtype: TensorDtype): number => (dtype === "F32" ? 0 : 1);

// ---- model definitions ------------------------------------------------------------------------------

interface ModelDefinition {
  kvs: GgufKv[];
  tensors: GgufTensor[];
}

// ---- Qwen3 vocabulary ---------------------------------------------------------------------------------

/**
 * llama.cpp ships no Qwen3 vocab GGUF, but Qwen3 kept the Qwen1.5/2 byte-level BPE (the same 151,643 ranks and
 * merges, pre-tokenizer "qwen2") and only named more added tokens. `ggml-vocab-qwen2.gguf` was converted from a
 * tokenizer with 3 added tokens and holds `[PADn]` (USER_DEFINED) from id 151646 on; this table is Qwen3's
 * `added_tokens_decoder` (tokenizer_config.json of Qwen/Qwen3-*): id, content, `special`.
 */
export const QWEN3_ADDED_TOKENS: readonly (readonly [id: number, content: string, special: boolean])[] = [
  [151643, "<|endoftext|>", true],
  [151644, "<|im_start|>", true],
  [151645, "<|im_end|>", true],
  [151646, "<|object_ref_start|>", true],
  [151647, "<|object_ref_end|>", true],
  [151648, "<|box_start|>", true],
  [151649, "<|box_end|>", true],
  [151650, "<|quad_start|>", true],
  [151651, "<|quad_end|>", true],
  [151652, "<|vision_start|>", true],
  [151653, "<|vision_end|>", true],
  [151654, "<|vision_pad|>", true],
  [151655, "<|image_pad|>", true],
  [151656, "<|video_pad|>", true],
  [151657, "<tool_call>", false],
  [151658, "</tool_call>", false],
  [151659, "<|fim_prefix|>", false],
  [151660, "<|fim_middle|>", false],
  [151661, "<|fim_suffix|>", false],
  [151662, "<|fim_pad|>", false],
  [151663, "<|repo_name|>", false],
  [151664, "<|file_sep|>", false],
  [151665, "<tool_response>", false],
  [151666, "</tool_response>", false],
  [151667, "<think>", false],
  [151668, "</think>", false],
];

/** Qwen3 config.json vocab_size (the embedding rows; ids past the last added token are padding). */
const QWEN3_VOCAB_SIZE = 151936;
/** Number of byte-level BPE tokens (ids 0..151642), shared by Qwen2 and Qwen3. */
const QWEN_BPE_TOKENS = 151643;

/** gguf-py TokenType. */
const TokenType = { NORMAL: 1, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5 } as const;

/** convert_hf_to_gguf.py (conversion/base.py) `does_token_look_special`, the clauses that can apply to Qwen. */
function doesTokenLookSpecial(text: string): boolean {
  return (text.startsWith("<|") && text.endsWith("|>")) || (text.startsWith("<｜") && text.endsWith("｜>"));
}

/**
 * The tokens/token_type arrays convert_hf_to_gguf.py writes for a Qwen3 checkpoint (`get_vocab_base`): BPE tokens
 * NORMAL; an added token CONTROL if `special` or it looks special (`<|…|>`, so the non-special fim/repo_name/
 * file_sep tokens are CONTROL too), else USER_DEFINED (<tool_call>, <tool_response>, <think> and their closers);
 * ids absent from the tokenizer `[PADn]` UNUSED.
 */
function qwen3TokenKvs(vocab: Vocab): GgufKv[] {
  const tokensKv = vocab.kvs.get("tokenizer.ggml.tokens");
  const typesKv = vocab.kvs.get("tokenizer.ggml.token_type");
  if (tokensKv?.type !== GgufValueType.ARRAY || typesKv?.type !== GgufValueType.ARRAY) throw new Error("vocab: no token list");
  if (vocab.tokens.length !== QWEN3_VOCAB_SIZE) throw new Error(`vocab: ${vocab.tokens.length} tokens, expected ${QWEN3_VOCAB_SIZE}`);
  const tokens = vocab.tokens.slice();
  const types = typesKv.value.map(Number);
  for (let i = 0; i < QWEN_BPE_TOKENS; i++) {
    if (types[i] !== TokenType.NORMAL) throw new Error(`vocab: BPE token ${i} has type ${types[i]}`);
  }
  for (let i = QWEN_BPE_TOKENS; i < QWEN3_VOCAB_SIZE; i++) {
    tokens[i] = `[PAD${i}]`;
    types[i] = TokenType.UNUSED;
  }
  for (const [id, content, special] of QWEN3_ADDED_TOKENS) {
    tokens[id] = content;
    types[id] = special || doesTokenLookSpecial(content) ? TokenType.CONTROL : TokenType.USER_DEFINED;
  }
  return [
    { key: tokensKv.key, type: GgufValueType.ARRAY, subType: tokensKv.subType, value: tokens },
    { key: typesKv.key, type: GgufValueType.ARRAY, subType: typesKv.subType, value: types },
  ];
}

/** Architecture + Qwen3 tokenizer metadata, shared by the random and the scripted Qwen3 models. */
async function qwen3Kvs(shape: Qwen3Shape | ScriptedQwen3Shape, llamaDir: string): Promise<{ kvs: GgufKv[]; vocab: Vocab }> {
  const matrixDtype: TensorDtype = shape.kind === "qwen3" ? shape.matrixDtype : "F32";
  const vocab = await loadVocab(path.join(llamaDir, "models", "ggml-vocab-qwen2.gguf"));
  const template = readFileSync(path.join(llamaDir, "models", "templates", "Qwen-Qwen3-0.6B.jinja"), "utf8");
  const endOfText = expectToken(vocab, 151643, "<|endoftext|>");
  const imEnd = expectToken(vocab, 151645, "<|im_end|>");
  expectToken(vocab, 151644, "<|im_start|>");
  expectToken(vocab, 198, "Ċ"); // "\n"
  expectToken(vocab, 271, "ĊĊ"); // "\n\n"
  const a = "qwen3";
  const kvs: GgufKv[] = [
    ...architectureKvs(a, shape, matrixDtype),
    u32(`${a}.attention.head_count_kv`, shape.nHeadKv),
    f32(`${a}.rope.freq_base`, shape.ropeFreqBase),
    f32(`${a}.attention.layer_norm_rms_epsilon`, shape.rmsEps),
    u32(`${a}.attention.key_length`, shape.headDim),
    u32(`${a}.attention.value_length`, shape.headDim),
    // As in the official Qwen3 instruct GGUFs: eos = <|im_end|>, bos = pad = <|endoftext|>, no BOS added.
    ...tokenizerKvs(vocab, [
      ...qwen3TokenKvs(vocab),
      u32("tokenizer.ggml.eos_token_id", imEnd),
      u32("tokenizer.ggml.padding_token_id", endOfText),
      u32("tokenizer.ggml.bos_token_id", endOfText),
      bool("tokenizer.ggml.add_bos_token", false),
      str("tokenizer.chat_template", template),
    ]),
  ];
  if (shape.kind === "qwen3" && shape.rerank === true) {
    kvs.push(
      u32(`${a}.pooling_type`, 4),
      { key: `${a}.classifier.output_labels`, type: GgufValueType.ARRAY, subType: GgufValueType.STRING, value: ["yes", "no"] },
      str("tokenizer.chat_template.rerank", QWEN3_RERANK_TEMPLATE),
    );
  }
  return { kvs, vocab };
}

async function defineQwen3(shape: Qwen3Shape, llamaDir: string): Promise<ModelDefinition> {
  const { kvs, vocab } = await qwen3Kvs(shape, llamaDir);
  const nVocab = vocab.tokens.length;
  const { nEmbd, headDim, nFf, std, seed } = shape;
  const qDim = shape.nHead * headDim;
  const kvDim = shape.nHeadKv * headDim;
  const matrix = (name: string, dims: number[]): GgufTensor => ({
    name, dims, dtype: shape.matrixDtype, makeFill: normalFill(shape.matrixDtype, std, seed, name),
  });
  const ones = (name: string, n: number): GgufTensor => ({ name, dims: [n], dtype: "F32", makeFill: constFill("F32", 1) });

  // Tied embeddings: no output.weight, llama.cpp reuses token_embd (TENSOR_DUPLICATED).
  const tensors: GgufTensor[] = [matrix("token_embd.weight", [nEmbd, nVocab])];
  for (let i = 0; i < shape.nLayer; i++) {
    const b = `blk.${i}`;
    tensors.push(
      ones(`${b}.attn_norm.weight`, nEmbd),
      matrix(`${b}.attn_q.weight`, [nEmbd, qDim]),
      matrix(`${b}.attn_k.weight`, [nEmbd, kvDim]),
      matrix(`${b}.attn_v.weight`, [nEmbd, kvDim]),
      matrix(`${b}.attn_output.weight`, [qDim, nEmbd]),
      ones(`${b}.attn_q_norm.weight`, headDim),
      ones(`${b}.attn_k_norm.weight`, headDim),
      ones(`${b}.ffn_norm.weight`, nEmbd),
      matrix(`${b}.ffn_gate.weight`, [nEmbd, nFf]),
      matrix(`${b}.ffn_up.weight`, [nEmbd, nFf]),
      matrix(`${b}.ffn_down.weight`, [nFf, nEmbd]),
    );
  }
  tensors.push(ones("output_norm.weight", nEmbd));
  // The yes/no rows of the (tied) lm_head; larger than the other weights so the two logits differ by more than noise.
  if (shape.rerank === true) tensors.push({ name: "cls.output.weight", dims: [nEmbd, 2], dtype: "F32", makeFill: normalFill("F32", 1, seed, "cls.output.weight") });
  return { kvs, tensors };
}

// ---- the scripted model ----------------------------------------------------------------------------

/** GPT-2 byte-level BPE: the printable character standing for each byte (bytes_to_unicode), inverted. */
const BYTE_OF_CHAR: ReadonlyMap<string, number> = (() => {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const m = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) m.set(String.fromCodePoint(printable(b) ? b : 256 + extra++), b);
  return m;
})();

/** The bytes a token of the Qwen3 vocab stands for (added tokens are their literal text). */
function tokenBytes(vocab: Vocab, id: number): Buffer {
  if (id >= QWEN_BPE_TOKENS) {
    const added = QWEN3_ADDED_TOKENS.find(([addedId]) => addedId === id);
    if (!added) throw new Error(`vocab: ${id} is not a Qwen3 token`);
    return Buffer.from(added[1], "utf8");
  }
  const text = vocab.tokens[id];
  if (text === undefined) throw new Error(`vocab: no token ${id}`);
  return Buffer.from([...text].map((c) => {
    const b = BYTE_OF_CHAR.get(c);
    if (b === undefined) throw new Error(`vocab: token ${id} ${JSON.stringify(text)} is not byte-level`);
    return b;
  }));
}

const THINK_OPEN = 151667;
const IM_END = 151645;

/**
 * The scripted Qwen3: a bigram machine with one bit of memory ("has <think> occurred?").
 *
 * Every `ffn_down` and layer 1's `attn_output` are zero, so the final residual is the last token's embedding plus
 * what layer 0's attention adds. Each scripted token k gets its own embedding direction (+1 on dimension k, 0
 * elsewhere); other tokens get N(0, 0.02²) on the dimensions no scripted token uses. The untied `output` row of
 * next(t) is `logit/8 · e_dim(t)` (the final RMSNorm scales a one-hot 1 to 8), every other row N(0, 0.02²) (logits
 * within about ±1), so the argmax after t is next(t), whatever came before.
 *
 * A pure bigram cannot produce Qwen3's `\n<think>\n` (two successors for "\n"), so layer 0 has a single
 * attention head that reads the "<think> seen" bit: only a "\n" query and only a <think> key are non-zero (on the
 * lowest-frequency RoPE pair, so the score is position-independent), k_norm scales the score to ~40, and V/O copy
 * a 1 from <think> into a flag dimension. At "\n" the flag is 1 iff <think> is in the context (softmax weight
 * ≈ 1 on it); elsewhere q = 0 and the flag is the uniform average 1/position, too small to matter. "\n" scores
 * `logit` for <think> and `logit/2` for "P" without the flag, 0 and ~1.06·`logit` with it.
 */
async function defineScripted(shape: ScriptedQwen3Shape, llamaDir: string): Promise<ModelDefinition> {
  const { kvs, vocab } = await qwen3Kvs(shape, llamaDir);
  const nVocab = vocab.tokens.length;
  const { nEmbd, headDim, nFf, std, seed, logit } = shape;
  const qDim = shape.nHead * headDim;
  const kvDim = shape.nHeadKv * headDim;

  // The text the chains must spell, byte for byte (checks the hard-coded ids against the vocab).
  const spell = (ids: readonly number[]): string =>
    Buffer.concat(ids.filter((id) => id !== IM_END).map((id) => tokenBytes(vocab, id))).toString("utf8");
  const thinkingText = `<think>\n${shape.reasoning}\n</think>\n\n${shape.answer}`;
  if (spell(shape.thinkingTokens) !== thinkingText) throw new Error(`scripted: thinking chain spells ${JSON.stringify(spell(shape.thinkingTokens))}`);
  if (spell(shape.answerTokens) !== shape.answer) throw new Error(`scripted: answer chain spells ${JSON.stringify(spell(shape.answerTokens))}`);
  if (shape.thinkingTokens.at(-1) !== IM_END || shape.answerTokens.at(-1) !== IM_END) throw new Error("scripted: chains must end with <|im_end|>");

  // Transitions keyed by (token, <think> seen). The prompts: thinking on ends "\n" without <think> before it;
  // thinking off ends "\n\n" after a <think>.
  type Key = `${number}:${0 | 1}`;
  const next = new Map<Key, number>();
  const addChain = (start: number, seenAtStart: boolean, chain: readonly number[]): void => {
    let prev = start;
    let seen = seenAtStart;
    for (const tok of chain) {
      const key: Key = `${prev}:${seen ? 1 : 0}`;
      const old = next.get(key);
      if (old !== undefined && old !== tok) throw new Error(`scripted: ${key} has two successors, ${old} and ${tok}`);
      next.set(key, tok);
      seen ||= tok === THINK_OPEN;
      prev = tok;
    }
  };
  addChain(198, false, shape.thinkingTokens);
  addChain(271, true, shape.answerTokens);

  // Embedding dimension of every scripted token, in order of appearance; the flag takes the last dimension.
  const dimOf = new Map<number, number>();
  for (const tok of [198, 271, ...shape.thinkingTokens, ...shape.answerTokens]) {
    if (!dimOf.has(tok)) dimOf.set(tok, dimOf.size);
  }
  const flagDim = nEmbd - 1;
  if (dimOf.size > flagDim) throw new Error(`scripted: ${dimOf.size} scripted tokens do not fit in ${nEmbd - 1} dimensions`);
  const dim = (tok: number): number => dimOf.get(tok) ?? -1;

  // output rows of the scripted tokens: sparse (dimension → weight).
  const w = logit / 8; // RMSNorm turns a lone 1 into sqrt(nEmbd) = 8
  if (nEmbd !== 64) throw new Error("scripted: the weights assume nEmbd = 64");
  const outRows = new Map<number, Map<number, number>>();
  const addOut = (tok: number, d: number, v: number): void => {
    let row = outRows.get(tok);
    if (!row) outRows.set(tok, (row = new Map()));
    row.set(d, (row.get(d) ?? 0) + v);
  };
  const ambiguous: number[] = [];
  for (const tok of dimOf.keys()) {
    const n0 = next.get(`${tok}:0`);
    const n1 = next.get(`${tok}:1`);
    if (n0 !== undefined && n1 !== undefined && n0 !== n1) {
      // Flag off: n0 scores w·8 = logit, n1 w·8/2. Flag on (residual e_t + e_flag, normalised to 5.66 each):
      // n0 scores 5.66·w·(1 − 1) = 0, n1 5.66·w·(1/2 + 1) ≈ 1.06·logit.
      ambiguous.push(tok);
      addOut(n0, dim(tok), w);
      addOut(n0, flagDim, -w);
      addOut(n1, dim(tok), w / 2);
      addOut(n1, flagDim, w);
    } else {
      const n = n0 ?? n1;
      if (n !== undefined) addOut(n, dim(tok), w);
    }
  }
  if (ambiguous.length === 0 || !dimOf.has(THINK_OPEN)) throw new Error("scripted: expected a <think> chain");

  // Layer 0 attention, head 0 (kv head 0), on head dimension `rd` of the lowest-frequency NEOX RoPE pair
  // (rd, rd + headDim/2): θ = freq_base^(-(headDim-2)/headDim) ≈ 5.6e-6 rad per position.
  const rd = headDim / 2 - 1;
  const vd = 0;
  const kNorm = 10; // score = (4·1)·(4·kNorm)/sqrt(headDim) = 40
  const sparse = (entries: ReadonlyArray<readonly [index: number, value: number]>): (() => TensorFill) => () => {
    let pos = 0;
    const sorted = [...entries].sort((x, y) => x[0] - y[0]);
    let k = 0;
    return (out) => {
      out.fill(0);
      const end = pos + out.length;
      for (let e = sorted[k]; e !== undefined && e[0] < end; e = sorted[++k]) out[e[0] - pos] = e[1];
      pos = end;
    };
  };
  // ggml layout: a [in, out] weight stores element (out, in) at out·in_len + in.
  const attnQ = sparse(ambiguous.map((t) => [rd * nEmbd + dim(t), 1] as const));
  const attnK = sparse([[rd * nEmbd + dim(THINK_OPEN), 1]]);
  const attnV = sparse([[vd * nEmbd + dim(THINK_OPEN), 1 / 8]]); // attn_norm makes the lone 1 an 8
  const attnO = sparse([[flagDim * qDim + vd, 1]]);

  /** Row-by-row F32 filler: `row(r, scratch)` fills row r (scratch arrives zeroed). */
  const rowFill = (rowLen: number, row: (r: number, scratch: Float32Array, rnd: () => number) => void, name: string): (() => TensorFill) => () => {
    let x = (fnv1a32(name) ^ seed) | 0;
    if (x === 0) x = 0x2545f491;
    const table = normalTableF32(std);
    const rnd = (): number => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return table[x >>> 16] ?? 0;
    };
    const scratch = new Float32Array(rowLen);
    let r = 0;
    let col = rowLen; // column within `scratch` already emitted
    return (out) => {
      let i = 0;
      while (i < out.length) {
        if (col === rowLen) {
          scratch.fill(0);
          row(r++, scratch, rnd);
          col = 0;
        }
        const n = Math.min(out.length - i, rowLen - col);
        out.set(scratch.subarray(col, col + n), i);
        i += n;
        col += n;
      }
    };
  };
  const reserved = (d: number): boolean => d === flagDim || d < dimOf.size;
  const tokenEmbd = rowFill(nEmbd, (tok, s, rnd) => {
    const d = dimOf.get(tok);
    if (d !== undefined) s[d] = 1;
    else for (let j = 0; j < nEmbd; j++) s[j] = reserved(j) ? 0 : rnd();
  }, "token_embd.weight");
  const output = rowFill(nEmbd, (tok, s, rnd) => {
    const sparseRow = outRows.get(tok);
    if (sparseRow) for (const [d, v] of sparseRow) s[d] = v;
    else if (!dimOf.has(tok)) for (let j = 0; j < nEmbd; j++) s[j] = rnd();
  }, "output.weight");

  const t = (name: string, dims: number[], makeFill: () => TensorFill): GgufTensor => ({ name, dims, dtype: "F32", makeFill });
  const random = (name: string, dims: number[]): GgufTensor => t(name, dims, normalFill("F32", std, seed, name));
  const zeros = (name: string, dims: number[]): GgufTensor => t(name, dims, constFill("F32", 0));
  const fill = (name: string, n: number, value: number): GgufTensor => t(name, [n], constFill("F32", value));

  const tensors: GgufTensor[] = [t("token_embd.weight", [nEmbd, nVocab], tokenEmbd)];
  for (let i = 0; i < shape.nLayer; i++) {
    const b = `blk.${i}`;
    const first = i === 0;
    tensors.push(
      fill(`${b}.attn_norm.weight`, nEmbd, 1),
      first ? t(`${b}.attn_q.weight`, [nEmbd, qDim], attnQ) : random(`${b}.attn_q.weight`, [nEmbd, qDim]),
      first ? t(`${b}.attn_k.weight`, [nEmbd, kvDim], attnK) : random(`${b}.attn_k.weight`, [nEmbd, kvDim]),
      first ? t(`${b}.attn_v.weight`, [nEmbd, kvDim], attnV) : random(`${b}.attn_v.weight`, [nEmbd, kvDim]),
      first ? t(`${b}.attn_output.weight`, [qDim, nEmbd], attnO) : zeros(`${b}.attn_output.weight`, [qDim, nEmbd]),
      fill(`${b}.attn_q_norm.weight`, headDim, 1),
      fill(`${b}.attn_k_norm.weight`, headDim, first ? kNorm : 1),
      fill(`${b}.ffn_norm.weight`, nEmbd, 1),
      random(`${b}.ffn_gate.weight`, [nEmbd, nFf]),
      random(`${b}.ffn_up.weight`, [nEmbd, nFf]),
      zeros(`${b}.ffn_down.weight`, [nFf, nEmbd]),
    );
  }
  tensors.push(fill("output_norm.weight", nEmbd, 1), t("output.weight", [nEmbd, nVocab], output));
  return { kvs, tensors };
}

async function defineBert(shape: BertShape, llamaDir: string): Promise<ModelDefinition> {
  const vocab = await loadVocab(path.join(llamaDir, "models", "ggml-vocab-bert-bge.gguf"));
  const cls = expectToken(vocab, 101, "[CLS]");
  const sep = expectToken(vocab, 102, "[SEP]");
  const unk = expectToken(vocab, 100, "[UNK]");
  const padId = expectToken(vocab, 0, "[PAD]");
  const mask = expectToken(vocab, 103, "[MASK]");
  const a = "bert";
  const kvs: GgufKv[] = [
    ...architectureKvs(a, shape, shape.matrixDtype),
    f32(`${a}.attention.layer_norm_epsilon`, shape.layerNormEps),
    bool(`${a}.attention.causal`, false),
    u32(`${a}.pooling_type`, shape.poolingType),
    // As convert_hf_to_gguf.py writes for sentence-transformers BERTs: [CLS] text [SEP].
    ...tokenizerKvs(vocab, [
      u32("tokenizer.ggml.token_type_count", 2),
      u32("tokenizer.ggml.bos_token_id", cls),
      u32("tokenizer.ggml.eos_token_id", sep),
      u32("tokenizer.ggml.unknown_token_id", unk),
      u32("tokenizer.ggml.seperator_token_id", sep),
      u32("tokenizer.ggml.padding_token_id", padId),
      u32("tokenizer.ggml.cls_token_id", cls),
      u32("tokenizer.ggml.mask_token_id", mask),
      bool("tokenizer.ggml.add_bos_token", true),
      bool("tokenizer.ggml.add_eos_token", true),
    ], ["tokenizer.chat_template"]),
  ];

  const nVocab = vocab.tokens.length;
  const { nEmbd, nFf, std, seed } = shape;
  const matrix = (name: string, dims: number[], dtype: TensorDtype = shape.matrixDtype): GgufTensor => ({
    name, dims, dtype, makeFill: normalFill(dtype, std, seed, name),
  });
  const fill = (name: string, n: number, value: number): GgufTensor => ({ name, dims: [n], dtype: "F32", makeFill: constFill("F32", value) });

  const tensors: GgufTensor[] = [
    matrix("token_embd.weight", [nEmbd, nVocab]),
    // Position and token-type tables stay F32 whatever the matrix dtype: ggml aborts on an F16 position table.
    matrix("token_types.weight", [nEmbd, 2], "F32"),
    matrix("position_embd.weight", [nEmbd, shape.nCtx], "F32"),
    fill("token_embd_norm.weight", nEmbd, 1),
    fill("token_embd_norm.bias", nEmbd, 0),
  ];
  for (let i = 0; i < shape.nLayer; i++) {
    const b = `blk.${i}`;
    for (const p of ["attn_q", "attn_k", "attn_v", "attn_output"]) {
      tensors.push(matrix(`${b}.${p}.weight`, [nEmbd, nEmbd]), fill(`${b}.${p}.bias`, nEmbd, 0));
    }
    tensors.push(
      fill(`${b}.attn_output_norm.weight`, nEmbd, 1),
      fill(`${b}.attn_output_norm.bias`, nEmbd, 0),
      matrix(`${b}.ffn_up.weight`, [nEmbd, nFf]),
      fill(`${b}.ffn_up.bias`, nFf, 0),
      matrix(`${b}.ffn_down.weight`, [nFf, nEmbd]),
      fill(`${b}.ffn_down.bias`, nEmbd, 0),
      fill(`${b}.layer_output_norm.weight`, nEmbd, 1),
      fill(`${b}.layer_output_norm.bias`, nEmbd, 0),
    );
  }
  return { kvs, tensors };
}

/** Cuts a vocabulary array KV to the model's vocab_size (the vocab file is padded with UNUSED [PADn] entries). */
function truncatedArray(vocab: Vocab, key: string, length: number): GgufKv {
  const kv = vocab.kvs.get(key);
  if (kv?.type !== GgufValueType.ARRAY) throw new Error(`vocab: ${key} is not an array`);
  if (kv.value.length < length) throw new Error(`vocab: ${key} has ${kv.value.length} entries, fewer than ${length}`);
  return { ...kv, value: kv.value.slice(0, length) };
}

async function defineXlmr(shape: XlmrShape, llamaDir: string): Promise<ModelDefinition> {
  // The XLM-R SentencePiece vocabulary (250,002 pieces + padding), as converted for nomic-embed-text-v2-moe.
  const vocab = await loadVocab(path.join(llamaDir, "models", "ggml-vocab-nomic-bert-moe.gguf"));
  const bos = expectToken(vocab, 0, "<s>");
  const padId = expectToken(vocab, 1, "<pad>");
  const eos = expectToken(vocab, 2, "</s>");
  const unk = expectToken(vocab, 3, "<unk>");
  const mask = expectToken(vocab, 250001, "<mask>");
  const a = "bert";
  const kvs: GgufKv[] = [
    ...architectureKvs(a, shape, shape.matrixDtype),
    f32(`${a}.attention.layer_norm_epsilon`, shape.layerNormEps),
    bool(`${a}.attention.causal`, false),
    u32(`${a}.pooling_type`, shape.poolingType),
    ...(shape.rankHead
      ? [{ key: `${a}.classifier.output_labels`, type: GgufValueType.ARRAY, subType: GgufValueType.STRING, value: ["LABEL_0"] } as GgufKv]
      : []),
    // As _xlmroberta_set_vocab + SpecialVocab write them: <s> text </s> for one text, and (the tokenizer's pair
    // template <s> A </s></s> B </s>) add_sep, which llama-server's rerank prompt follows.
    ...tokenizerKvs(vocab, [
      truncatedArray(vocab, "tokenizer.ggml.tokens", shape.nVocab),
      truncatedArray(vocab, "tokenizer.ggml.scores", shape.nVocab),
      truncatedArray(vocab, "tokenizer.ggml.token_type", shape.nVocab),
      u32("tokenizer.ggml.token_type_count", shape.tokenTypes),
      u32("tokenizer.ggml.bos_token_id", bos),
      u32("tokenizer.ggml.eos_token_id", eos),
      u32("tokenizer.ggml.unknown_token_id", unk),
      u32("tokenizer.ggml.seperator_token_id", eos),
      u32("tokenizer.ggml.padding_token_id", padId),
      u32("tokenizer.ggml.cls_token_id", bos),
      u32("tokenizer.ggml.mask_token_id", mask),
      bool("tokenizer.ggml.add_bos_token", true),
      bool("tokenizer.ggml.add_eos_token", true),
      bool("tokenizer.ggml.add_sep_token", true),
    ], ["tokenizer.chat_template"]),
  ];

  const { nEmbd, nFf, std, seed } = shape;
  const matrix = (name: string, dims: number[], dtype: TensorDtype = shape.matrixDtype, sd = std): GgufTensor => ({
    name, dims, dtype, makeFill: normalFill(dtype, sd, seed, name),
  });
  const fill = (name: string, n: number, value: number): GgufTensor => ({ name, dims: [n], dtype: "F32", makeFill: constFill("F32", value) });
  // Small random biases and norm gains (not the 0/1 of a fresh init) so that every term of the graph matters.
  const vector = (name: string, n: number, mean: number, sd: number): GgufTensor => {
    const noise = normalFill("F32", sd, seed, name);
    return { name, dims: [n], dtype: "F32", makeFill: () => {
      const draw = noise();
      return (out) => {
        draw(out);
        for (let i = 0; i < out.length; i++) out[i] = (out[i] ?? 0) + mean;
      };
    } };
  };

  const tensors: GgufTensor[] = [
    matrix("token_embd.weight", [nEmbd, shape.nVocab]),
    // Position and token-type tables stay F32 whatever the matrix dtype: ggml aborts on an F16 position table.
    matrix("token_types.weight", [nEmbd, shape.tokenTypes], "F32"),
    matrix("position_embd.weight", [nEmbd, shape.nCtx], "F32"),
    vector("token_embd_norm.weight", nEmbd, 1, 0.1),
    vector("token_embd_norm.bias", nEmbd, 0, 0.02),
  ];
  for (let i = 0; i < shape.nLayer; i++) {
    const b = `blk.${i}`;
    for (const p of ["attn_q", "attn_k", "attn_v", "attn_output"]) {
      tensors.push(matrix(`${b}.${p}.weight`, [nEmbd, nEmbd]), vector(`${b}.${p}.bias`, nEmbd, 0, 0.02));
    }
    tensors.push(
      vector(`${b}.attn_output_norm.weight`, nEmbd, 1, 0.1),
      vector(`${b}.attn_output_norm.bias`, nEmbd, 0, 0.02),
      matrix(`${b}.ffn_up.weight`, [nEmbd, nFf]),
      vector(`${b}.ffn_up.bias`, nFf, 0, 0.02),
      matrix(`${b}.ffn_down.weight`, [nFf, nEmbd]),
      vector(`${b}.ffn_down.bias`, nEmbd, 0, 0.02),
      vector(`${b}.layer_output_norm.weight`, nEmbd, 1, 0.1),
      vector(`${b}.layer_output_norm.bias`, nEmbd, 0, 0.02),
    );
  }
  if (shape.rankHead) {
    tensors.push(
      matrix("cls.weight", [nEmbd, nEmbd], shape.matrixDtype, 1 / Math.sqrt(nEmbd)),
      vector("cls.bias", nEmbd, 0, 0.02),
      matrix("cls.output.weight", [nEmbd, 1], "F32", shape.headStd),
      fill("cls.output.bias", 1, 0),
    );
  }
  return { kvs, tensors };
}

// ---- caching -------------------------------------------------------------------------------------

type Shape = Qwen3Shape | ScriptedQwen3Shape | BertShape | XlmrShape;

interface Stamp {
  generator: number;
  hash: string;
  size: number;
}

/** Everything that determines the file's bytes, cheap to compute (no vocab parsing, no source checkout). */
function stampHash(shape: Shape): string {
  const inputs = { generator: GENERATOR_VERSION, llamaCpp: llamaCppTag(), shape };
  return createHash("sha256").update(JSON.stringify(inputs)).digest("hex");
}

function readStamp(file: string): Stamp | undefined {
  try {
    const s = JSON.parse(readFileSync(`${file}.stamp`, "utf8")) as Partial<Stamp>;
    if (typeof s.generator === "number" && typeof s.hash === "string" && typeof s.size === "number") {
      return { generator: s.generator, hash: s.hash, size: s.size };
    }
  } catch {
    // missing or unreadable: regenerate
  }
  return undefined;
}

function isFresh(file: string, hash: string): boolean {
  const stamp = readStamp(file);
  if (!stamp || stamp.generator !== GENERATOR_VERSION || stamp.hash !== hash) return false;
  try {
    return statSync(file).size === stamp.size;
  } catch {
    return false;
  }
}

function formatBytes(n: number): string {
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(2)} GiB` : `${(n / (1 << 20)).toFixed(1)} MiB`;
}

const inFlight = new Map<string, Promise<string>>();

/** Returns the absolute path of the model, generating it unless a matching stamp says it is current. */
export function ensureModel(shape: Shape, options: { log?: (line: string) => void } = {}): Promise<string> {
  const file = path.join(modelCacheDir, shape.file);
  const running = inFlight.get(file);
  if (running) return running;
  const job = (async (): Promise<string> => {
    const hash = stampHash(shape);
    if (isFresh(file, hash)) return file;
    const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
    const started = Date.now();
    const llamaDir = ensureLlamaSource();
    const def = shape.kind === "qwen3" ? await defineQwen3(shape, llamaDir)
      : shape.kind === "qwen3-scripted" ? await defineScripted(shape, llamaDir)
      : shape.kind === "xlmr" ? await defineXlmr(shape, llamaDir)
      : await defineBert(shape, llamaDir);
    const plan = planGguf(def.kvs, def.tensors);
    mkdirSync(modelCacheDir, { recursive: true });
    const big = plan.fileSize > 256 << 20;
    log(`[make-test-models] generating ${shape.file} (${formatBytes(plan.fileSize)}, ${def.tensors.length} tensors)`);
    let nextReport = 0.05;
    await writeGguf(file, plan, big
      ? ({ written, total }) => {
          if (written / total < nextReport && written !== total) return;
          nextReport = Math.floor((written / total) * 20 + 1) / 20;
          const secs = (Date.now() - started) / 1000;
          log(`[make-test-models]   ${shape.file}: ${((100 * written) / total).toFixed(0).padStart(3)}% ` +
            `${formatBytes(written)} / ${formatBytes(total)} (${(written / (1 << 20) / secs).toFixed(0)} MiB/s)`);
        }
      : undefined);
    const stamp: Stamp = { generator: GENERATOR_VERSION, hash, size: plan.fileSize };
    const stampTmp = `${file}.stamp.tmp-${process.pid}`;
    writeFileSync(stampTmp, `${JSON.stringify(stamp)}\n`);
    renameSync(stampTmp, `${file}.stamp`);
    log(`[make-test-models] wrote ${file} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return file;
  })();
  inFlight.set(file, job);
  job.catch(() => inFlight.delete(file));
  return job;
}

/** Tiny models for unit/integration tests (tens of MB, generated in a few seconds). */
export async function ensureTestModels(): Promise<{ chat: string; embed: string; scripted: string }> {
  const [chat, embed, scripted] = await Promise.all([ensureModel(TEST_CHAT_SHAPE), ensureModel(TEST_EMBED_SHAPE), ensureModel(SCRIPTED_CHAT_SHAPE)]);
  return { chat, embed, scripted };
}

/** test-qwen3-scripted.gguf: a tiny Qwen3 whose generation is `SCRIPTED_OUTPUT` (about 80 MB, F32). */
export function ensureScriptedModel(): Promise<string> {
  return ensureModel(SCRIPTED_CHAT_SHAPE);
}

/** test-qwen3-scripted-tools.gguf: a tiny Qwen3 whose generation is `SCRIPTED_TOOL_OUTPUT` (about 80 MB, F32). */
export function ensureScriptedToolsModel(): Promise<string> {
  return ensureModel(SCRIPTED_TOOLS_CHAT_SHAPE);
}

/** The multilingual fixtures: an XLM-R (multilingual-e5-small-like) embedding model and a bge-reranker-like reranker. */
export async function ensureMultilingualTestModels(): Promise<{ embed: string; rerank: string; qwen3Rerank: string }> {
  const [embed, rerank, qwen3Rerank] = await Promise.all([ensureModel(TEST_XLMR_EMBED_SHAPE), ensureModel(TEST_RERANK_SHAPE), ensureModel(TEST_QWEN3_RERANK_SHAPE)]);
  return { embed, rerank, qwen3Rerank };
}

/** Real-shaped multilingual-e5-small and bge-reranker-v2-m3 files (F16, ~235 MB and ~1.1 GB) for the bench. */
export async function ensureMultilingualBenchModels(): Promise<{ embed: string; rerank: string }> {
  const embed = await ensureModel(BENCH_XLMR_EMBED_SHAPE);
  const rerank = await ensureModel(BENCH_RERANK_SHAPE);
  return { embed, rerank };
}

/** Full-shape F16 source models for benchmarks (the Qwen one is ~3.4 GB; quantize it before benchmarking). */
export async function ensureBenchSourceModels(): Promise<{ chatF16: string; embed: string }> {
  const embed = await ensureModel(BENCH_EMBED_SHAPE);
  const chatF16 = await ensureModel(BENCH_CHAT_SHAPE);
  return { chatF16, embed };
}

// ---- CLI -------------------------------------------------------------------------------------------

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const bench = process.argv.includes("--bench");
  const t0 = Date.now();
  const test = await ensureTestModels();
  console.log(`chat:     ${test.chat}`);
  console.log(`embed:    ${test.embed}`);
  console.log(`scripted: ${test.scripted}`);
  console.log(`scripted tools: ${await ensureScriptedToolsModel()}`);
  const multilingual = await ensureMultilingualTestModels();
  console.log(`xlmrEmbed: ${multilingual.embed}`);
  console.log(`rerank:   ${multilingual.rerank}`);
  console.log(`qwen3Rerank: ${multilingual.qwen3Rerank}`);
  if (bench) {
    const mb = await ensureMultilingualBenchModels();
    console.log(`benchXlmrEmbed: ${mb.embed}`);
    console.log(`benchRerank: ${mb.rerank}`);
    const b = await ensureBenchSourceModels();
    console.log(`chatF16:  ${b.chatF16}`);
    console.log(`benchEmbed: ${b.embed}`);
  }
  process.stderr.write(`[make-test-models] done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
}
