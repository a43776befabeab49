// Rerank wire types: the shape llama-server, Jina and Cohere share (POST /v1/rerank, /rerank,
// Cohere's /v2/rerank), TEI's shape (/rerank with `texts`), and the seed API's /api/llm/rerank.
import { Type, type Static } from "@sinclair/typebox";

const Query = Type.String({ minLength: 1, description: "What the documents are ranked against" });
const Model = Type.Optional(Type.String({ minLength: 1, description: "One of the served rerankers, by any of its names; default: the first of RERANK_MODELS" }));

/** A document as text, or Jina's/Cohere's object with a `text` field (other fields are ignored). */
const DocumentSchema = Type.Union([
  Type.String(),
  Type.Object({ text: Type.String() }, { additionalProperties: true }),
], { description: "A text, or an object with `text`" });

export const RerankBodySchema = Type.Object({
  model: Model,
  query: Query,
  documents: Type.Optional(Type.Array(DocumentSchema, { minItems: 1, description: "The documents to rank (llama-server, Jina, Cohere)" })),
  texts: Type.Optional(Type.Array(Type.String(), { minItems: 1, description: "TEI: the documents to rank; the response is TEI's bare array" })),
  top_n: Type.Optional(Type.Integer({ minimum: 1, description: "Return only the n best (default: all)" })),
  return_documents: Type.Optional(Type.Boolean({ description: "Each result carries its document as {text} (default false, as Cohere and llama-server; Jina's default is true)" })),
  raw_scores: Type.Optional(Type.Boolean({ description: "The model's raw logit instead of a probability (TEI; on the Cohere/Jina shape: llama-server's raw relevance_score)" })),
  return_text: Type.Optional(Type.Boolean({ description: "TEI: each result carries `text`" })),
  truncate: Type.Optional(Type.Boolean({ description: "Cut a document that does not fit the model's pair limit (the query stays whole). Default: true (as Cohere); with `texts` (TEI) false, and a pair over the limit is a 413" })),
  truncation_direction: Type.Optional(Type.Union([Type.Literal("Right"), Type.Literal("right")], { description: "TEI: only Right (the document's end is cut)" })),
  rank_fields: Type.Optional(Type.Array(Type.String(), { description: "Cohere v1: only [\"text\"] is supported" })),
  // The Cohere SDK sends null for options left out.
  max_chunks_per_doc: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: "Cohere v1: accepted and ignored (a long document is cut to the model's pair limit, never split into chunks)" })),
  max_tokens_per_doc: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: "Cohere v2: accepted and ignored (a long document is cut to the model's pair limit)" })),
}, { $id: "RerankRequest" });
export type RerankBody = Static<typeof RerankBodySchema>;

export const RerankResultSchema = Type.Object({
  index: Type.Integer({ description: "The document's position in the request" }),
  relevance_score: Type.Number({ description: "A probability, 0..1 (Cohere, Jina): sigmoid of a cross-encoder's logit; with raw_scores: the model's own output, as llama-server returns it" }),
  document: Type.Optional(Type.Object({ text: Type.String() })),
});

export const RerankResponseSchema = Type.Object({
  id: Type.String({ description: "Cohere: an id for the request" }),
  object: Type.Literal("list"),
  model: Type.String(),
  results: Type.Array(RerankResultSchema, { description: "Best first" }),
  usage: Type.Object({ prompt_tokens: Type.Integer(), total_tokens: Type.Integer() }),
  meta: Type.Object({
    api_version: Type.Object({ version: Type.String() }),
    billed_units: Type.Object({ search_units: Type.Integer() }),
  }, { description: "Cohere's meta (one search unit per request)" }),
}, { $id: "RerankResponse" });
export type RerankResponse = Static<typeof RerankResponseSchema>;

export const TeiRerankResponseSchema = Type.Array(Type.Object({
  index: Type.Integer(),
  score: Type.Number({ description: "A probability (sigmoid of a cross-encoder's logit), or the model's own output with raw_scores" }),
  text: Type.Optional(Type.String()),
}), { $id: "TeiRerankResponse", description: "TEI: best first" });
export type TeiRerankResponse = Static<typeof TeiRerankResponseSchema>;

/** TEI's error body. */
export const TeiErrorSchema = Type.Object({ error: Type.String(), error_type: Type.String() }, { $id: "TeiError", description: "TEI's error body: 413 for sizes, 422 for other validation" });

export const SeedRerankBodySchema = Type.Object({
  query: Query,
  documents: Type.Array(Type.String(), { minItems: 1, description: "Texts to rank against the query" }),
  model: Model,
  top_n: Type.Optional(Type.Integer({ minimum: 1, description: "Return only the n best (default: all)" })),
  return_documents: Type.Boolean({ default: false, description: "Each result carries its text" }),
}, { additionalProperties: false, $id: "SeedRerankRequest" });
export type SeedRerankBody = Static<typeof SeedRerankBodySchema>;

export const SeedRerankResponseSchema = Type.Object({
  results: Type.Array(Type.Object({
    index: Type.Integer({ description: "The document's position in `documents`" }),
    score: Type.Number({ description: "Relevance, 0..1 (sigmoid of a cross-encoder's logit)" }),
    raw_score: Type.Number({ description: "The model's own output (a cross-encoder's logit), as llama-server returns it" }),
    document: Type.Optional(Type.String()),
  }), { description: "Best first" }),
  model: Type.String(),
  tokens: Type.Integer({ description: "Tokens read, every query + document pair counted" }),
  truncated: Type.Integer({ description: "How many documents were cut to fit the model's pair limit" }),
}, { $id: "SeedRerankResponse" });
export type SeedRerankResponse = Static<typeof SeedRerankResponseSchema>;
