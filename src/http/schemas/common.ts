// Pieces shared by both APIs' schemas: messages, sampling controls, the error body.
import { Type, type Static } from "@sinclair/typebox";

export const ChatMessageSchema = Type.Object({
  role: Type.Union([Type.Literal("system"), Type.Literal("user"), Type.Literal("assistant")], { description: "Who said it" }),
  content: Type.String({ description: "The text of the message" }),
}, { additionalProperties: false });

export const StopSchema = Type.Union([
  Type.String({ minLength: 1 }),
  Type.Array(Type.String({ minLength: 1 }), { maxItems: 16 }),
], { description: "Text that ends generation; not included in the output" });

export const ResponseFormatSchema = Type.Union([
  Type.Object({ type: Type.Literal("text") }),
  Type.Object({ type: Type.Literal("json_object") }),
  Type.Object({
    type: Type.Literal("json_schema"),
    json_schema: Type.Object({
      name: Type.Optional(Type.String()),
      description: Type.Optional(Type.String()),
      strict: Type.Optional(Type.Boolean()),
      schema: Type.Record(Type.String(), Type.Unknown(), { description: "A JSON Schema the output must satisfy (enforced by a grammar)" }),
    }),
  }),
], { description: "Constrain the output: any JSON object, or JSON matching a schema" });

/**
 * OpenAI's `{"<token id>": bias}` (-100..100), or llama-server's `[[id, bias], ...]` where `false` bans the
 * token. Added to the token's logit before any other sampler, as llama-server does.
 */
export const LogitBiasSchema = Type.Union([
  Type.Record(Type.String({ pattern: "^(0|[1-9][0-9]{0,9})$" }), Type.Number({ minimum: -100, maximum: 100 }), { additionalProperties: false }),
  Type.Array(Type.Tuple([Type.Integer({ minimum: 0 }), Type.Union([Type.Number({ minimum: -100, maximum: 100 }), Type.Literal(false)])]), { maxItems: 1024 }),
], { description: "Token id -> bias added to its logit (-100..100): OpenAI's object, or llama-server's [[id, bias]] pairs where false bans the token" });

/** Sampling controls, named as OpenAI names them, accepted by both APIs. */
export const SamplingControls = {
  top_k: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000, description: "Sample from the k most likely tokens (0: off)" })),
  min_p: Type.Optional(Type.Number({ minimum: 0, maximum: 1, description: "Drop tokens below min_p times the top probability" })),
  // 4294967295 is LLAMA_DEFAULT_SEED, which llama.cpp's sampler reads as "pick a random seed".
  seed: Type.Optional(Type.Integer({ minimum: 0, maximum: 4294967294, description: "Same seed and request give the same text (0..4294967294)" })),
  stop: Type.Optional(StopSchema),
  presence_penalty: Type.Optional(Type.Number({ minimum: -2, maximum: 2 })),
  frequency_penalty: Type.Optional(Type.Number({ minimum: -2, maximum: 2 })),
  repeat_penalty: Type.Optional(Type.Number({ minimum: 1e-6, maximum: 10, description: "llama.cpp repetition penalty (1: off; above 0, as llama.h requires: at least 1e-6, so it stays above 0 as a 32-bit float)" })),
  repeat_last_n: Type.Optional(Type.Integer({ minimum: -1, maximum: 1_048_576, description: "How many of the last tokens, the prompt's included, the penalties look at (llama-server's; default 64; 0: none; -1: the whole context)" })),
  logit_bias: Type.Optional(LogitBiasSchema),
  response_format: Type.Optional(ResponseFormatSchema),
  ignore_eos: Type.Optional(Type.Boolean({ description: "Keep generating past the end-of-text token, up to the token limit (benchmarks)" })),
  enable_thinking: Type.Optional(Type.Boolean({ description: "Qwen3 thinks before answering; the reasoning is returned apart from the answer" })),
};

/**
 * The OpenAI routes sample as llama-server's /v1 endpoints do when a field is left out (its defaults: top_k 40,
 * min_p 0.05, with temperature 0.8 and top_p 0.95 in each route's schema), so the same seed gives its text.
 */
export const LlamaServerSamplingDefaults = {
  top_k: Type.Integer({ minimum: 0, maximum: 1000, default: 40, description: "Sample from the k most likely tokens (0: off; llama-server's default, 40)" }),
  min_p: Type.Number({ minimum: 0, maximum: 1, default: 0.05, description: "Drop tokens below min_p times the top probability (0: off; llama-server's default, 0.05)" }),
};

/**
 * OpenAI's per-conversation hints, accepted so that clients sending them are not refused. They do not route:
 * the load balancer routes by the X-Session-Id header (docs/operating.md), and prompt prefixes are reused by
 * every slot whatever the key.
 */
export const ConversationHints = {
  user: Type.Optional(Type.String({ description: "An end-user id (OpenAI): accepted, not used" })),
  prompt_cache_key: Type.Optional(Type.String({ description: "OpenAI's cache key: accepted; a load balancer in front routes a conversation by the X-Session-Id header instead" })),
};

export const ErrorBodySchema = Type.Object({
  error: Type.Object({
    code: Type.String({ description: "Machine-readable kind, e.g. validation_error, context_length_exceeded" }),
    message: Type.String(),
    field: Type.Optional(Type.String({ description: "The request field at fault, e.g. messages[0].content" })),
  }),
}, { $id: "ErrorBody" });
export type ErrorBody = Static<typeof ErrorBodySchema>;

export const UsageSchema = Type.Object({
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  total_tokens: Type.Integer(),
  prompt_tokens_details: Type.Optional(Type.Object({ cached_tokens: Type.Integer() })),
});

/**
 * How an embedding model should read the texts (Cohere/Voyage `input_type`, TEI `prompt_name`): the
 * server puts the model's own prefix before each text (e.g. multilingual-e5's "query: "); see docs/models.md.
 */
export const PromptFields = {
  input_type: Type.Optional(Type.Union([
    Type.Literal("search_query"), Type.Literal("search_document"), Type.Literal("classification"), Type.Literal("clustering"),
  ], { description: "What the texts are for (Cohere/Voyage): the model's prompt for it is put before each text; a model without one reads them as they are" })),
  prompt_name: Type.Optional(Type.String({ minLength: 1, description: "A prompt of the model by name (TEI, sentence-transformers), e.g. \"query\"; unknown: 400" })),
};
