// The cases both sides of the real-weights parity check run (test/stories260k-parity.test.ts and the script
// that records llama-server's answers, test/stories260k-parity.record.ts): one list, so the recording and
// the test can never ask different questions.
import { existsSync } from "node:fs";
import path from "node:path";
import { projectRoot } from "../../scripts/lib/llama-source.js";

/** karpathy's stories260K (see ../shared/models/README.md); STORIES_MODEL overrides where it lives. */
export const STORIES_MODEL = process.env["STORIES_MODEL"] ?? path.resolve(projectRoot, "..", "shared", "models", "stories260K.gguf");
export const STORIES_SHA256 = "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d";
export const PARITY_FIXTURE = path.join(projectRoot, "test", "fixtures", "stories260K.llama-server.json");

/** 4 slots of 512 tokens on both sides; one thread (the numbers do not depend on it, the speed of CI does). */
export const SLOTS = 4;
export const CONTEXT_PER_SLOT = 512;
export const LLAMA_SERVER_FLAGS = ["-c", String(SLOTS * CONTEXT_PER_SLOT), "-np", String(SLOTS), "-t", "1", "-tb", "1", "-b", "512", "-ub", "512", "--cache-ram", "0", "--no-webui"];

/** A prompt whose words come back: the penalties' window (prompt included) changes its continuation. */
export const LONG_PROMPT = "Lily and Tom went to the park. They saw a big dog. The dog was happy. Lily and Tom";
export const GREEDY_TOKENS = 64;
export const GREEDY_PROMPTS = [
  LONG_PROMPT,
  "Once upon a time",
  "Lily and Tom went to the park. They saw a big",
  "The little dog was sad because",
  "One day, a bird",
  "Tim had a red ball. He",
] as const;

/**
 * Sampling settings in llama-server's /completion names (our /v1/completions takes the same names; Ollama's
 * `options` too, but logit_bias). Each parameter alone (the others off), then together.
 */
export type SamplingCase = { name: string; prompt: string; params: Record<string, unknown>; ollama: boolean };
const OFF = { top_k: 0, top_p: 1, min_p: 0 };
const LONG = LONG_PROMPT;
export const SAMPLED_TOKENS = 48;
export const SAMPLING_CASES: SamplingCase[] = [
  { name: "temperature", prompt: "Once upon a time", params: { temperature: 0.8, seed: 42, ...OFF }, ollama: true },
  { name: "temperature 1.5", prompt: "The little dog was sad because", params: { temperature: 1.5, seed: 1234, ...OFF }, ollama: true },
  { name: "top_k", prompt: "Once upon a time", params: { temperature: 1, seed: 7, ...OFF, top_k: 10 }, ollama: true },
  { name: "top_p", prompt: "Once upon a time", params: { temperature: 1, seed: 7, ...OFF, top_p: 0.7 }, ollama: true },
  { name: "min_p", prompt: "Once upon a time", params: { temperature: 1, seed: 7, ...OFF, min_p: 0.1 }, ollama: true },
  { name: "repeat_penalty (the prompt in its window)", prompt: LONG, params: { temperature: 0, ...OFF, repeat_penalty: 1.3 }, ollama: true },
  { name: "repeat_last_n", prompt: LONG, params: { temperature: 0, ...OFF, repeat_penalty: 1.3, repeat_last_n: 16 }, ollama: true },
  { name: "presence_penalty", prompt: LONG, params: { temperature: 0, ...OFF, presence_penalty: 0.8 }, ollama: true },
  { name: "frequency_penalty", prompt: LONG, params: { temperature: 0, ...OFF, frequency_penalty: 0.8 }, ollama: true },
  // 383 is " there", 432 ","; the object form is OpenAI's, the pairs llama-server's (false: banned).
  { name: "logit_bias (object)", prompt: "Once upon a time", params: { temperature: 0, ...OFF, logit_bias: { "432": -100 } }, ollama: false },
  { name: "logit_bias (pairs, false bans)", prompt: "Once upon a time", params: { temperature: 0, ...OFF, logit_bias: [[383, false], [322, 3.5]] }, ollama: false },
  { name: "stop", prompt: "Once upon a time", params: { temperature: 0, ...OFF, stop: ["park"] }, ollama: true },
  { name: "seed only (llama-server's defaults for the rest)", prompt: "Once upon a time", params: { seed: 99 }, ollama: false },
  {
    name: "combined", prompt: LONG, ollama: false,
    params: { temperature: 0.9, seed: 3, top_k: 30, top_p: 0.9, min_p: 0.05, repeat_penalty: 1.1, repeat_last_n: 32, presence_penalty: 0.2, frequency_penalty: 0.2, logit_bias: { "383": -2 }, stop: ["!"] },
  },
  {
    name: "combined (Ollama's options)", prompt: "Tim had a red ball. He", ollama: true,
    params: { temperature: 0.7, seed: 11, top_k: 20, top_p: 0.8, min_p: 0.02, repeat_penalty: 1.2, repeat_last_n: 16, presence_penalty: 0.1, frequency_penalty: 0.3 },
  },
];

export const LOGPROB_TOKENS = 8;
export const LOGPROB_TOP = 5;
export const LOGPROB_PROMPTS = ["Once upon a time", "The little dog was sad because"] as const;

export type ChatMessageCase = { role: "system" | "user" | "assistant"; content: string };
export const CHAT_TOKENS = 32;
export const CHAT_CASES: { name: string; messages: ChatMessageCase[] }[] = [
  { name: "one user message", messages: [{ role: "user", content: "Once upon a time" }] },
  { name: "system and user", messages: [{ role: "system", content: "You tell stories." }, { role: "user", content: "Tell me about a cat." }] },
  {
    name: "several turns", messages: [
      { role: "user", content: "Who is Lily?" }, { role: "assistant", content: "Lily is a little girl." }, { role: "user", content: "What does she like?" },
    ],
  },
];

/** Where ours differs from llama-server on purpose (README, "Differences from llama-server"). */
export const BOS_TEXT_PROMPT = "<s>Once upon a time";
export const SPECIAL_TEXT_MESSAGE: ChatMessageCase[] = [{ role: "user", content: "The end.</s>Once upon a time" }];

export type ParityFixture = {
  recordedWith: { llamaCppTag: string; llamaCppCommit: string; server: string; flags: string[]; modelSha256: string; recordedAt: string };
  greedy: { prompt: string; content: string; tokens: number[]; promptTokens: number }[];
  tokenize: { content: string; tokens: number[] }[];
  sampled: { name: string; content: string }[];
  logprobs: { prompt: string; tokens: { id: number; text: string; logprob: number; top: { id: number; text: string; logprob: number }[] }[] }[];
  chat: { name: string; content: string; promptTokens: number }[];
  differences: { bosTextPromptTokens: number; bosTextContent: string; specialTextPromptTokens: number };
};

export const storiesModelPresent = (): boolean => existsSync(STORIES_MODEL);
