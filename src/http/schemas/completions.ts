// OpenAI's legacy text completions (POST /v1/completions): what LlamaIndex's OpenAILike, LangChain's
// OpenAI (non-chat) LLM and the official client send. The prompt is raw text: no chat template.
import { Type, type Static } from "@sinclair/typebox";
import { LlamaServerSamplingDefaults, SamplingControls, StopSchema, UsageSchema } from "./common.js";

export const CompletionBodySchema = Type.Object({
  model: Type.Optional(Type.String({ minLength: 1, description: "The served chat model, by any of its names; omitted: the served one" })),
  prompt: Type.Union([
    Type.String({ minLength: 1 }),
    Type.Array(Type.String({ minLength: 1 }), { minItems: 1, maxItems: 1, description: "One prompt (batches are not supported)" }),
  ], { description: "Text the model continues, tokenized as is (special-token text such as <|im_start|> included)" }),
  max_tokens: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { default: 16, description: "Most tokens to generate (OpenAI's default, 16); null: what the context leaves, at most 4096" }),
  temperature: Type.Number({ minimum: 0, maximum: 2, default: 0.8, description: "llama-server's default, 0.8" }),
  top_p: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.95 }),
  n: Type.Optional(Type.Integer({ minimum: 1, maximum: 1, description: "Only 1 choice is generated" })),
  best_of: Type.Optional(Type.Integer({ minimum: 1, maximum: 1 })),
  stream: Type.Optional(Type.Boolean()),
  stream_options: Type.Optional(Type.Union([Type.Object({ include_usage: Type.Optional(Type.Boolean()) }), Type.Null()])),
  logprobs: Type.Optional(Type.Union([Type.Integer({ minimum: 0, maximum: 5 }), Type.Null()], { description: "Log-probabilities of each token and of the n most likely alternatives (0..5)" })),
  echo: Type.Optional(Type.Union([Type.Literal(false), Type.Null()], { description: "Only false: the prompt is not repeated" })),
  suffix: Type.Optional(Type.Null({ description: "Insertion is not supported" })),
  user: Type.Optional(Type.String()),
  ...SamplingControls,
  ...LlamaServerSamplingDefaults,
  stop: Type.Optional(Type.Union([StopSchema, Type.Null()])),
}, { $id: "CompletionRequest" });
export type CompletionBody = Static<typeof CompletionBodySchema>;

const FinishReason = Type.Union([Type.Literal("stop"), Type.Literal("length")]);

export const CompletionLogprobsSchema = Type.Object({
  tokens: Type.Array(Type.String()),
  token_logprobs: Type.Array(Type.Number()),
  top_logprobs: Type.Array(Type.Record(Type.String(), Type.Number())),
  text_offset: Type.Array(Type.Integer()),
});

export const CompletionSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal("text_completion"),
  created: Type.Integer(),
  model: Type.String(),
  system_fingerprint: Type.Optional(Type.String()),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    text: Type.String(),
    logprobs: Type.Union([CompletionLogprobsSchema, Type.Null()]),
    finish_reason: Type.Union([FinishReason, Type.Null()]),
  })),
  usage: Type.Optional(UsageSchema),
}, { $id: "Completion" });
export type Completion = Static<typeof CompletionSchema>;
