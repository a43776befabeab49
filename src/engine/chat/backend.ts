// The generation backend at token level: given a slot, a prompt's tokens and sampling settings, it
// decodes and samples and hands every sampled token (id, bytes, end flag, optional logprobs) back. Text
// post-processing (output.ts), prompt rendering (prompt.ts) and scheduling (scheduler.ts) are shared, so
// the native slot loop and the node-llama-cpp fallback differ only in how tokens are produced.

export type BackendKind = "native" | "node-llama-cpp";

export type SamplingParams = {
  /** 0: greedy. */
  temperature: number;
  topP: number;
  /** 0: off. */
  topK: number;
  minP: number;
  seed: number;
  /** Penalties over the last `penaltyLastN` tokens, the prompt's included (llama-server); 1 / 0 / 0 = off. */
  repeatPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  penaltyLastN: number;
  /** Never sample an end-of-generation token. */
  ignoreEos: boolean;
  logitBias: readonly { id: number; bias: number }[];
};

export type TokenAlternative = { id: number; bytes: Uint8Array; logprob: number };

export type BackendToken = {
  id: number;
  bytes: Uint8Array;
  /** An end-of-generation token: generation ends with it. */
  isEnd: boolean;
  /** When the job asked for logprobs: the sampled token's and the top alternatives, best first. */
  logprob?: { logprob: number; top: TokenAlternative[] };
};

export type BackendJob = {
  prompt: readonly number[];
  /** Most tokens to sample (the backend stops after this many). */
  maxTokens: number;
  sampling: SamplingParams;
  /** GBNF grammar text constraining the output. */
  grammar?: string;
  /** Top alternatives per token (0..20) when logprobs are wanted; undefined: none. */
  logprobsTop?: number;
  /** Aborted: the slot stops within one step and `generate` resolves with `cancelled`. */
  signal: AbortSignal;
  /**
   * Receives the new tokens of each step, in order. Returns true when the caller wants no more tokens
   * (a stop string was found): the backend ends the slot at once.
   */
  onTokens(tokens: readonly BackendToken[]): boolean;
};

export type BackendOutcome = {
  /** Prompt tokens that were already in the slot's cache and not decoded again. */
  cachedPromptTokens: number;
  /** Tokens decoded for this job: the uncached prompt tail plus generated tokens fed back. */
  evaluatedTokens: number;
  /** Milliseconds from the start of the job to its first sampled token, or null. */
  firstTokenMs: number | null;
  cancelled: boolean;
};

export type SlotState = {
  id: number;
  busy: boolean;
  /** Tokens in the slot's KV cache. */
  cachedTokens: number;
  /** Tokens decoded on this slot since start (prompt and generated). */
  tokensDecoded: number;
};

export interface GenerationBackend {
  readonly kind: BackendKind;
  readonly slotCount: number;
  /** Threads the backend decodes with. */
  readonly threads: number;
  /**
   * Per slot, how many leading tokens of `prompt` its KV cache holds (slot choice). The native loop computes
   * them on its published caches in one call, without copying a cache across N-API.
   */
  sharedPrefixes(prompt: readonly number[]): readonly number[];
  slotStates(): SlotState[];
  /** Runs one job on an idle slot: keeps the common prefix of its cache, decodes the rest, samples. */
  generate(slot: number, job: BackendJob): Promise<BackendOutcome>;
  /** Drops everything after the first `length` tokens of an idle slot's cache (text after a stop). */
  trimCache(slot: number, length: number): Promise<void>;
  dispose(): Promise<void>;
}

/** The prefix of two token lists that is equal. */
export function commonPrefixLength(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}
