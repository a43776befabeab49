// The fallback generation backend: node-llama-cpp's LlamaContextSequence driven token by token
// (`evaluateWithMetadata`), one sequence per slot of one shared context. Used when the native slot loop
// is not built or LLM_ENGINE=node-llama-cpp. Prompt rendering and text post-processing are shared with
// the native backend; only decoding and sampling happen here.
import {
  LlamaGrammarEvaluationState,
  TokenBias,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaGrammar,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import type { BackendJob, BackendOutcome, BackendToken, GenerationBackend, SlotState, TokenAlternative } from "./backend.js";
import { commonPrefixLength } from "./backend.js";
import { endOfGenerationTokens } from "./prompt.js";
import type { FlashAttention, KvCacheType } from "./settings.js";
import { llamaModelVocabulary } from "../vocabulary.js";

export type NodeLlamaCppBackendOptions = {
  contextSize: number;
  slots: number;
  batchSize: number;
  threads: number;
  kvCacheType?: KvCacheType;
  flashAttention?: FlashAttention;
};

export class NodeLlamaCppBackend implements GenerationBackend {
  readonly kind = "node-llama-cpp" as const;
  readonly slotCount: number;
  private readonly sequences: LlamaContextSequence[];
  private readonly busy: boolean[];
  private readonly decoded: number[];
  private readonly noEndTokens: TokenBias;
  private readonly grammars = new Map<string, Promise<LlamaGrammar>>();
  private readonly utf8 = new TextEncoder();

  private constructor(private readonly llama: Llama, private readonly model: LlamaModel, private readonly context: LlamaContext) {
    this.slotCount = context.totalSequences;
    this.sequences = Array.from({ length: this.slotCount }, () => context.getSequence());
    this.busy = this.sequences.map(() => false);
    this.decoded = this.sequences.map(() => 0);
    this.noEndTokens = new TokenBias(model.tokenizer);
    for (const token of endOfGenerationTokens(llamaModelVocabulary(model))) this.noEndTokens.set(token, "never");
  }

  /** Creates the context on an already loaded (full-weights) model. */
  static async create(llama: Llama, model: LlamaModel, options: NodeLlamaCppBackendOptions): Promise<NodeLlamaCppBackend> {
    const context = await model.createContext({
      contextSize: options.contextSize,
      sequences: options.slots,
      batchSize: options.batchSize,
      threads: options.threads,
      ...(options.kvCacheType === undefined ? {} : { experimentalKvCacheKeyType: options.kvCacheType.toUpperCase() as "F16", experimentalKvCacheValueType: options.kvCacheType.toUpperCase() as "F16" }),
      ...(options.flashAttention === undefined || options.flashAttention === "auto" ? {} : { flashAttention: options.flashAttention === "on" }),
      // Requests must not be silently cut by a context shift: prompts are checked up front.
      failedCreationRemedy: false,
    });
    return new NodeLlamaCppBackend(llama, model, context);
  }

  get threads(): number {
    return this.context.currentThreads;
  }

  get contextSize(): number {
    return this.context.contextSize;
  }

  sharedPrefixes(prompt: readonly number[]): readonly number[] {
    return this.sequences.map((s) => commonPrefixLength(s.contextTokens, prompt));
  }

  slotStates(): SlotState[] {
    return this.sequences.map((s, id) => ({ id, busy: this.busy[id] ?? false, cachedTokens: s.contextTokens.length, tokensDecoded: this.decoded[id] ?? 0 }));
  }

  async generate(slot: number, job: BackendJob): Promise<BackendOutcome> {
    const sequence = this.sequence(slot);
    this.busy[slot] = true;
    const started = performance.now();
    try {
      const prompt = job.prompt as Token[];
      // At least the prompt's last token is decoded again: its logits give the first new token.
      const keep = Math.min(commonPrefixLength(sequence.contextTokens, prompt), prompt.length - 1);
      if (keep < sequence.nextTokenIndex) await sequence.eraseContextTokenRanges([{ start: keep, end: sequence.nextTokenIndex }]);
      const grammar = job.grammar === undefined ? undefined
        : new LlamaGrammarEvaluationState({ model: this.model, grammar: await this.grammarFor(job.grammar) });
      const generated: Token[] = [];
      const s = job.sampling;
      const penalties = s.repeatPenalty !== 1 || s.presencePenalty !== 0 || s.frequencyPenalty !== 0;
      const wantLogprobs = job.logprobsTop !== undefined;
      const pendingPiece: Token[] = [];
      let firstTokenMs: number | null = null;
      let evaluated = prompt.length - keep;
      const evaluation = sequence.evaluateWithMetadata(prompt.slice(keep), { probabilities: wantLogprobs }, {
        temperature: s.temperature,
        topK: s.topK,
        topP: s.topP,
        minP: s.minP,
        seed: s.seed,
        grammarEvaluationState: grammar,
        repeatPenalty: penalties
          ? { punishTokens: () => (s.penaltyLastN > 0 ? [...prompt, ...generated].slice(-s.penaltyLastN) : []), penalty: s.repeatPenalty, presencePenalty: s.presencePenalty, frequencyPenalty: s.frequencyPenalty }
          : undefined,
        tokenBias: this.tokenBiasOf(s),
        yieldEogToken: true,
      });
      let cancelled = false;
      for await (const output of evaluation) {
        if (job.signal.aborted) {
          cancelled = true;
          break;
        }
        firstTokenMs ??= performance.now() - started;
        const id = output.token;
        generated.push(id);
        const isEnd = this.model.isEogToken(id);
        const token: BackendToken = { id, bytes: isEnd ? new Uint8Array() : this.pieceBytes(pendingPiece, id), isEnd };
        if (wantLogprobs && !isEnd) {
          token.logprob = this.logprobOf(id, (output as { probabilities?: Map<Token, number> }).probabilities, job.logprobsTop ?? 0);
        }
        const stop = job.onTokens([token]);
        if (isEnd || stop || generated.length >= job.maxTokens) break;
        evaluated++;
      }
      if (job.signal.aborted) cancelled = true;
      this.decoded[slot] = (this.decoded[slot] ?? 0) + evaluated;
      return { cachedPromptTokens: keep, evaluatedTokens: evaluated, firstTokenMs, cancelled };
    } finally {
      this.busy[slot] = false;
    }
  }

  /** ignore_eos and the request's logit_bias as node-llama-cpp's TokenBias (undefined: none). */
  private tokenBiasOf(s: BackendJob["sampling"]): TokenBias | undefined {
    if (s.logitBias.length === 0) return s.ignoreEos ? this.noEndTokens : undefined;
    const bias = new TokenBias(this.model.tokenizer);
    for (const { id, bias: value } of s.logitBias) bias.set(id as Token, value === -Infinity ? "never" : value);
    if (s.ignoreEos) for (const token of endOfGenerationTokens(llamaModelVocabulary(this.model))) bias.set(token, "never");
    return bias;
  }

  async trimCache(slot: number, length: number): Promise<void> {
    const sequence = this.sequence(slot);
    if (length < sequence.nextTokenIndex) await sequence.eraseContextTokenRanges([{ start: length, end: sequence.nextTokenIndex }]);
  }

  async dispose(): Promise<void> {
    await this.context.dispose();
  }

  private sequence(slot: number): LlamaContextSequence {
    const sequence = this.sequences[slot];
    if (sequence === undefined) throw new RangeError(`no slot ${slot}`);
    return sequence;
  }

  private grammarFor(gbnf: string): Promise<LlamaGrammar> {
    let grammar = this.grammars.get(gbnf);
    if (grammar === undefined) {
      grammar = this.llama.createGrammar({ grammar: gbnf });
      if (this.grammars.size > 64) this.grammars.delete(this.grammars.keys().next().value as string);
      this.grammars.set(gbnf, grammar);
    }
    return grammar;
  }

  /**
   * node-llama-cpp detokenizes to strings only, so a token that ends inside a character yields no bytes
   * yet; the bytes of the whole character go with the token that completes it.
   */
  private pieceBytes(pending: Token[], id: Token): Uint8Array {
    pending.push(id);
    const text = this.model.detokenize(pending, true);
    if (text.endsWith("\uFFFD") && pending.length < 4) return new Uint8Array();
    pending.length = 0;
    return this.utf8.encode(text);
  }

  /**
   * node-llama-cpp exposes the probabilities after its sampler chain (temperature, top-k/p), not the raw
   * softmax the native loop reports; this path reports what it has.
   */
  private logprobOf(id: Token, probabilities: Map<Token, number> | undefined, top: number): { logprob: number; top: TokenAlternative[] } {
    const p = probabilities?.get(id) ?? 1;
    const alternatives: TokenAlternative[] = [];
    if (probabilities !== undefined) {
      for (const [token, prob] of probabilities) {
        if (alternatives.length >= top) break;
        alternatives.push({ id: token, bytes: this.utf8.encode(this.model.detokenize([token], true)), logprob: Math.log(prob) });
      }
    }
    return { logprob: Math.log(p), top: alternatives };
  }
}
