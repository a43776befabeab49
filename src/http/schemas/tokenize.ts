// llama-server's /tokenize and /detokenize (tools/server/README.md), plus `model` to choose which of
// the two served models' tokenizer to use.
import { Type, type Static } from "@sinclair/typebox";

const ModelField = Type.Optional(Type.String({ minLength: 1, description: "Whose tokenizer: the chat model (default) or the embedding model, by any of its names" }));

export const TokenizeBodySchema = Type.Object({
  content: Type.String({ description: "The text to tokenize" }),
  add_special: Type.Boolean({ default: false, description: "Add the special tokens the model's inference adds (BOS; for the embedding model [CLS] and [SEP], so the count is what the embedder reads)" }),
  parse_special: Type.Boolean({ default: true, description: "Text such as <|im_start|> becomes its special token" }),
  with_pieces: Type.Boolean({ default: false, description: "Each token as {id, piece}: the piece is text, or its bytes when they are not whole UTF-8 characters" }),
  model: ModelField,
}, { $id: "TokenizeRequest" });
export type TokenizeBody = Static<typeof TokenizeBodySchema>;

export const TokenizeResponseSchema = Type.Object({
  tokens: Type.Union([
    Type.Array(Type.Integer()),
    Type.Array(Type.Object({ id: Type.Integer(), piece: Type.Union([Type.String(), Type.Array(Type.Integer())]) })),
  ]),
  model: Type.String({ description: "The model whose tokenizer was used" }),
}, { $id: "TokenizeResponse" });

export const DetokenizeBodySchema = Type.Object({
  tokens: Type.Array(Type.Integer(), { maxItems: 1_000_000 }),
  model: ModelField,
}, { $id: "DetokenizeRequest" });

export const DetokenizeResponseSchema = Type.Object({
  content: Type.String(),
  model: Type.String(),
}, { $id: "DetokenizeResponse" });
