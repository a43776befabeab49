// A model's tokenizer without its weights: node-llama-cpp loads the GGUF vocabulary only (a few MB),
// so /tokenize and /detokenize never touch a generation slot or the embedding queue.
import type { Llama, LlamaModel, Token } from "node-llama-cpp";
import { invalidRequest } from "./errors.js";

/** A token's text, or its bytes when they are not whole UTF-8 characters (llama-server's `piece`). */
export type TokenPiece = string | number[];

export class ModelTokenizer {
  private constructor(
    private readonly vocab: LlamaModel,
    /** Special tokens the model's own inference adds around a text (BERT's [CLS] and [SEP]). */
    private readonly specialAround: { prefix: Token[]; suffix: Token[] },
  ) {}

  /**
   * `embedding`: the special tokens added are the ones the embedding engine adds ([CLS] … [SEP]),
   * so a count from /tokenize with add_special equals what the embedder reads.
   */
  static async load(llama: Llama, modelPath: string, kind: "chat" | "embedding"): Promise<ModelTokenizer> {
    const vocab = await llama.loadModel({ modelPath, vocabOnly: true });
    const { bos, eos } = vocab.tokens;
    const prefix = (kind === "embedding" || vocab.tokens.shouldPrependBosToken) && bos !== null ? [bos] : [];
    const suffix = (kind === "embedding" || vocab.tokens.shouldAppendEosToken) && eos !== null ? [eos] : [];
    return new ModelTokenizer(vocab, { prefix, suffix });
  }

  /** node-llama-cpp's vocabulary-only model: the file's metadata and insights, and what the chat engine shares. */
  get model(): LlamaModel {
    return this.vocab;
  }

  get vocabularySize(): number {
    return this.vocab.fileInfo.metadata.tokenizer.ggml.tokens.length;
  }

  /**
   * @param addSpecial BOS/EOS as the model's inference adds them (llama-server's `add_special`).
   * @param parseSpecial text such as `<|im_start|>` becomes its special token, not characters.
   */
  tokenize(text: string, { addSpecial, parseSpecial }: { addSpecial: boolean; parseSpecial: boolean }): number[] {
    const inner = this.vocab.tokenize(text, parseSpecial) as number[];
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
    return this.vocab.detokenize(ids as Token[], true);
  }

  /** Each token's text, or its raw bytes where they do not form whole UTF-8 characters. */
  pieces(ids: readonly number[]): TokenPiece[] {
    const decoder = new TextDecoder("utf-8", { fatal: true });
    return ids.map((id) => {
      const text = this.vocab.detokenize([id as Token], true);
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
    const piece = this.vocab.fileInfo.metadata.tokenizer.ggml.tokens[id] ?? "";
    const model = this.vocab.fileInfo.metadata.tokenizer.ggml.model;
    if (model === "gpt2") return Array.from(piece, (ch) => gpt2ByteDecoder.get(ch) ?? 0x3f);
    const byteToken = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
    if (byteToken) return [parseInt(byteToken[1]!, 16)];
    return Array.from(Buffer.from(this.vocab.detokenize([id as Token], true), "utf8"));
  }

  async dispose(): Promise<void> {
    await this.vocab.dispose();
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
