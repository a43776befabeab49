// A model's tokenizer for /tokenize and /detokenize, and the counts the APIs report: over the chat engine's own
// vocabulary (the slot loop's, loaded once with the weights), or over node-llama-cpp's vocabulary-only model
// (the embedding models and rerankers, a few MB each), so the endpoints never touch a slot or a decode queue.
import type { Llama, LlamaModel, Token } from "node-llama-cpp";
import { invalidRequest } from "./errors.js";
import { llamaModelVocabulary, type Vocabulary } from "./vocabulary.js";

/** A token's text, or its bytes when they are not whole UTF-8 characters (llama-server's `piece`). */
export type TokenPiece = string | number[];

export class ModelTokenizer {
  private constructor(
    readonly vocabulary: Vocabulary,
    /** Special tokens the model's own inference adds around a text (BERT's [CLS] and [SEP]). */
    private readonly specialAround: { prefix: Token[]; suffix: Token[] },
    /** The vocabulary-only model this tokenizer loaded and frees (null: the vocabulary belongs to an engine). */
    private readonly owned: LlamaModel | null,
  ) {}

  /**
   * A vocabulary-only model of its own. `embedding`: the special tokens added are the ones the embedding
   * engine adds ([CLS] … [SEP]), so a count from /tokenize with add_special equals what the embedder reads.
   */
  static async load(llama: Llama, modelPath: string, kind: "chat" | "embedding"): Promise<ModelTokenizer> {
    const model = await llama.loadModel({ modelPath, vocabOnly: true });
    return ModelTokenizer.build(llamaModelVocabulary(model), kind, model);
  }

  /** Over a vocabulary an engine owns (the chat engine's). */
  static over(vocabulary: Vocabulary, kind: "chat" | "embedding"): ModelTokenizer {
    return ModelTokenizer.build(vocabulary, kind, null);
  }

  private static build(vocabulary: Vocabulary, kind: "chat" | "embedding", owned: LlamaModel | null): ModelTokenizer {
    const { bos, eos } = vocabulary.tokens;
    const prefix = (kind === "embedding" || vocabulary.tokens.shouldPrependBosToken) && bos !== null ? [bos] : [];
    const suffix = (kind === "embedding" || vocabulary.tokens.shouldAppendEosToken) && eos !== null ? [eos] : [];
    return new ModelTokenizer(vocabulary, { prefix, suffix }, owned);
  }

  /** The vocabulary-only model this tokenizer loaded (its GGUF metadata and insights), or null. */
  get llamaModel(): LlamaModel | null {
    return this.owned;
  }

  get vocabularySize(): number {
    return this.vocabulary.size;
  }

  /**
   * @param addSpecial BOS/EOS as the model's inference adds them (llama-server's `add_special`).
   * @param parseSpecial text such as `<|im_start|>` becomes its special token, not characters.
   */
  tokenize(text: string, { addSpecial, parseSpecial }: { addSpecial: boolean; parseSpecial: boolean }): number[] {
    const inner = this.vocabulary.tokenize(text, parseSpecial) as number[];
    return addSpecial ? [...this.specialAround.prefix, ...inner, ...this.specialAround.suffix] : inner;
  }

  /** Checks every id; `field` names the list in errors, e.g. `tokens` -> `tokens[3]`. */
  checkIds(ids: readonly number[], field: string): void {
    const size = this.vocabularySize;
    ids.forEach((id, index) => {
      if (!Number.isInteger(id) || id < 0 || id >= size) {
        throw invalidRequest(`${field}[${index}] is ${id}, not a token id of this model (0..${size - 1}).`, `${field}[${index}]`);
      }
    });
  }

  /** Text of the tokens; special tokens spelled out, as llama-server's /detokenize does. */
  detokenize(ids: readonly number[], field = "tokens"): string {
    this.checkIds(ids, field);
    return this.vocabulary.detokenize(ids as Token[], true);
  }

  /** Each token's text, or its raw bytes where they do not form whole UTF-8 characters. */
  pieces(ids: readonly number[]): TokenPiece[] {
    const decoder = new TextDecoder("utf-8", { fatal: true });
    return ids.map((id) => {
      const text = this.vocabulary.detokenize([id as Token], true);
      if (!text.includes("\uFFFD")) return text;
      const bytes = this.bytesOf(id);
      try {
        return decoder.decode(Uint8Array.from(bytes));
      } catch {
        return bytes;
      }
    });
  }

  /** The raw bytes a token stands for (byte-level BPE pieces map back through GPT-2's byte table). */
  bytesOf(id: number): number[] {
    const piece = this.vocabulary.tokenText(id);
    if (this.vocabulary.byteLevel) return Array.from(piece, (ch) => gpt2ByteDecoder.get(ch) ?? 0x3f);
    const byteToken = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (byteToken) return [parseInt(byteToken[1]!, 16)];
    return Array.from(Buffer.from(this.vocabulary.detokenize([id as Token], true), "utf8"));
  }

  async dispose(): Promise<void> {
    await this.owned?.dispose();
  }
}

/** GPT-2's byte-level BPE writes each byte as a printable character; this maps it back. */
const gpt2ByteDecoder: Map<string, number> = (() => {
  const printable = [
    ...Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => 0x21 + i),
    ...Array.from({ length: 0xac - 0xa1 + 1 }, (_, i) => 0xa1 + i),
    ...Array.from({ length: 0xff - 0xae + 1 }, (_, i) => 0xae + i),
  ];
  const map = new Map<string, number>();
  let extra = 0;
  for (let byte = 0; byte < 256; byte++) {
    if (printable.includes(byte)) map.set(String.fromCodePoint(byte), byte);
    else map.set(String.fromCodePoint(256 + extra++), byte);
  }
  return map;
})();
