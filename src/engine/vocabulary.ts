// A model's vocabulary, as prompt rendering (node-llama-cpp's chat wrappers, LlamaText) and the tokenizer
// endpoints use it. node-llama-cpp's LlamaModel has one; so does our slot loop, which holds the chat model
// already: NativeVocabulary reads the loop's, so the chat model's vocabulary is loaded once, not twice
// (~140 MiB and ~1 s less for Qwen's 151,936 tokens). Both give the same tokens (test/vocabulary.test.ts).
import type { LlamaModel, Token, Tokenizer } from "node-llama-cpp";

export type VocabularyTokens = {
  readonly bos: Token | null;
  readonly eos: Token | null;
  readonly eot: Token | null;
  readonly nl: Token | null;
  readonly sep: Token | null;
  readonly bosString: string | null;
  readonly eosString: string | null;
  readonly eotString: string | null;
  readonly nlString: string | null;
  /** add_bos_token / add_eos_token as llama.cpp reads them. */
  readonly shouldPrependBosToken: boolean;
  readonly shouldAppendEosToken: boolean;
};

type BuiltinToken = "BOS" | "EOS" | "NL" | "EOT" | "SEP";

export interface Vocabulary {
  readonly size: number;
  /** Byte-level BPE (GPT-2's byte table in its pieces) or another kind (SentencePiece, WordPiece). */
  readonly byteLevel: boolean;
  readonly tokens: VocabularyTokens;
  /** node-llama-cpp's Tokenizer shape, for LlamaText and the chat wrappers. */
  readonly tokenizer: Tokenizer;
  tokenize(text: string, specialTokens?: boolean, options?: "trimLeadingSpace"): Token[];
  detokenize(tokens: readonly Token[], specialTokens?: boolean): string;
  /** The vocabulary's own text of a token (a byte-level piece as stored, e.g. "Ġhola"). */
  tokenText(id: number): string;
  isSpecialToken(token: Token | undefined): boolean;
  isEogToken(token: Token | undefined): boolean;
}

/** node-llama-cpp's model as a Vocabulary (the fallback path, and the embedding models' tokenizers). */
export function llamaModelVocabulary(model: LlamaModel): Vocabulary {
  const tokens = model.fileInfo.metadata.tokenizer.ggml.tokens;
  return {
    size: tokens.length,
    byteLevel: model.fileInfo.metadata.tokenizer.ggml.model === "gpt2",
    tokens: model.tokens,
    tokenizer: model.tokenizer,
    tokenize: (text, specialTokens, options) => model.tokenize(text, specialTokens, options),
    detokenize: (ids, specialTokens) => model.detokenize(ids, specialTokens),
    tokenText: (id) => tokens[id] ?? "",
    isSpecialToken: (token) => model.isSpecialToken(token),
    isEogToken: (token) => model.isEogToken(token),
  };
}

/** What the slot loop addon exposes of its model's vocabulary (slot_loop.cpp). */
export interface NativeVocabularySource {
  vocabInfo(): { size: number; bos: number; eos: number; eot: number; sep: number; nl: number; addBos: boolean; addEos: boolean; type: number };
  tokenize(text: string, addSpecial: boolean, parseSpecial: boolean): Uint32Array;
  detokenize(ids: Uint32Array, unparseSpecial: boolean): string;
  tokenText(id: number): string;
  tokenAttributes(id: number): number;
  isEog(id: number): boolean;
}

/** llama.h's LLAMA_TOKEN_ATTR_CONTROL and LLAMA_VOCAB_TYPE_BPE. */
const ATTR_CONTROL = 1 << 3;
const VOCAB_TYPE_BPE = 2;

const leadingSpaces = (text: string): number => {
  let count = 0;
  while (count < text.length && text[count] === " ") count++;
  return count;
};

export class NativeVocabulary implements Vocabulary {
  readonly size: number;
  readonly byteLevel: boolean;
  readonly tokens: VocabularyTokens;
  readonly tokenizer: Tokenizer;

  constructor(private readonly source: NativeVocabularySource) {
    const info = source.vocabInfo();
    const id = (n: number): Token | null => (n < 0 ? null : n as Token);
    const text = (t: Token | null) => (t === null ? null : source.tokenText(t));
    const bos = id(info.bos);
    const eos = id(info.eos);
    const eot = id(info.eot);
    const nl = id(info.nl);
    this.size = info.size;
    this.byteLevel = info.type === VOCAB_TYPE_BPE;
    this.tokens = {
      bos, eos, eot, nl, sep: id(info.sep),
      bosString: text(bos), eosString: text(eos), eotString: text(eot), nlString: text(nl),
      shouldPrependBosToken: bos !== null && info.addBos,
      shouldAppendEosToken: eos !== null && info.addEos,
    };
    const tokenize = ((value: string, specialTokens?: boolean | "builtin", options?: "trimLeadingSpace") =>
      specialTokens === "builtin" ? this.builtin(value as BuiltinToken) : this.tokenize(value, specialTokens, options)) as Tokenizer;
    Object.assign(tokenize, {
      detokenize: (ids: readonly Token[], specialTokens?: boolean) => this.detokenize(ids, specialTokens),
      isSpecialToken: (token: Token) => this.isSpecialToken(token),
      isEogToken: (token: Token) => this.isEogToken(token),
    });
    this.tokenizer = tokenize;
  }

  /**
   * Text -> tokens without BOS/EOS (`specialTokens`: special-token text becomes its token). "trimLeadingSpace"
   * tokenizes a piece that continues others: a SentencePiece vocabulary would otherwise give it the space it
   * puts before a text's first word. It is done as node-llama-cpp does, by tokenizing after a marker and
   * dropping the marker's tokens, so prompts render to the same tokens on both paths.
   */
  tokenize(text: string, specialTokens = false, options?: "trimLeadingSpace"): Token[] {
    if (text === "") return [];
    if (options === "trimLeadingSpace") {
      const trimmed = specialTokens ? this.afterSpecialMarker(text) ?? this.afterNewline(text, true) : this.afterNewline(text, false);
      if (trimmed !== null) return trimmed;
    }
    return this.raw(text, specialTokens);
  }

  detokenize(ids: readonly Token[], specialTokens = false): string {
    return ids.length === 0 ? "" : this.source.detokenize(Uint32Array.from(ids), specialTokens);
  }

  tokenText(id: number): string {
    return this.source.tokenText(id);
  }

  isEogToken(token: Token | undefined): boolean {
    if (token === undefined) return false;
    return token === this.tokens.eos || token === this.tokens.eot || this.source.isEog(token);
  }

  /** A control or end-of-generation token, or one whose text only shows as a special token's. */
  isSpecialToken(token: Token | undefined): boolean {
    if (token === undefined) return false;
    if ((this.source.tokenAttributes(token) & ATTR_CONTROL) !== 0 || this.isEogToken(token)) return true;
    return this.detokenize([token], false) === "" && this.detokenize([token], true) !== "";
  }

  private raw(text: string, parseSpecial: boolean): Token[] {
    return Array.from(this.source.tokenize(text, false, parseSpecial)) as Token[];
  }

  private builtin(name: BuiltinToken): Token[] {
    const t = { BOS: this.tokens.bos, EOS: this.tokens.eos, NL: this.tokens.nl, EOT: this.tokens.eot, SEP: this.tokens.sep }[name];
    if (t === undefined) throw new Error(`Unknown builtin special token: ${String(name)}`);
    return t === null ? [] : [t];
  }

  /** Tokenized after a special token's text (BOS, else EOS, NL or EOT), which is then dropped. */
  private afterSpecialMarker(text: string): Token[] | null {
    const markers: [Token | null, string | null][] = [
      [this.tokens.bos, this.tokens.bosString], [this.tokens.eos, this.tokens.eosString],
      [this.tokens.nl, this.tokens.nlString], [this.tokens.eot, this.tokens.eotString],
    ];
    const marker = markers.find(([token, string]) => token !== null && string !== null);
    if (marker === undefined) return null;
    const [token, string] = marker as [Token, string];
    const tokens = this.raw(string + text, true);
    const at = tokens.indexOf(token);
    if (at < 0 || at > 1) return null;
    const rest = tokens.slice(at + 1);
    return leadingSpaces(this.detokenize(rest, true)) === leadingSpaces(text) ? rest : null;
  }

  /** Tokenized after a newline, whose tokens are then dropped (the text's own leading newline is kept). */
  private afterNewline(text: string, parseSpecial: boolean): Token[] | null {
    const newline = "\n";
    if (text.startsWith(newline)) {
      const tokens = this.raw(text, parseSpecial);
      if (this.detokenize(tokens, parseSpecial).startsWith(newline)) return tokens;
    }
    const marker = this.raw(newline, parseSpecial);
    const tokens = this.raw(newline + text, parseSpecial);
    if (marker.length === 0 || !marker.every((t, i) => tokens[i] === t)) return null;
    const rest = tokens.slice(marker.length);
    if (parseSpecial && leadingSpaces(this.detokenize(rest, true)) !== leadingSpaces(text)) return null;
    return rest;
  }
}
