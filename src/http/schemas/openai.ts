// The OpenAI-compatible API's wire types: what the official client and LangChain send and expect.
// Unknown fields are accepted and ignored, as OpenAI-compatible servers do (clients send many).
import { Type, type Static } from "@sinclair/typebox";
import { ConversationHints, LlamaServerSamplingDefaults, PromptFields, SamplingControls, UsageSchema } from "./common.js";
import { ChatLogprobsControls, ChatLogprobsSchema } from "./logprobs.js";
import { ToolCallDeltaSchema, ToolCallSchema, ToolRequestFields } from "./tools.js";

const TextPart = Type.Object({ type: Type.Literal("text"), text: Type.String() });

export const OpenAIMessageSchema = Type.Object({
  role: Type.Union([Type.Literal("system"), Type.Literal("developer"), Type.Literal("user"), Type.Literal("assistant"), Type.Literal("tool")]),
  content: Type.Optional(Type.Union([Type.String(), Type.Array(TextPart, { minItems: 1 }), Type.Null()], {
    description: "Text, or an array of text parts; may be null on an assistant message with tool_calls",
  })),
  name: Type.Optional(Type.String()),
  tool_calls: Type.Optional(Type.Union([Type.Array(ToolCallSchema), Type.Null()], { description: "The calls an assistant message made" })),
  tool_call_id: Type.Optional(Type.String({ description: "On a tool message: the call it answers" })),
});

export const ChatCompletionBodySchema = Type.Object({
  model: Type.Optional(Type.String({ minLength: 1, description: "The served chat model's id (see /v1/models); omitted: the served one" })),
  messages: Type.Array(OpenAIMessageSchema, { minItems: 1, maxItems: 4096 }),
  max_tokens: Type.Optional(Type.Integer({ minimum: 1, description: "Most tokens to generate (default: what the context leaves, at most 4096)" })),
  max_completion_tokens: Type.Optional(Type.Integer({ minimum: 1, description: "Alias of max_tokens" })),
  temperature: Type.Number({ minimum: 0, maximum: 2, default: 0.8, description: "llama-server's default, 0.8" }),
  top_p: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.95 }),
  n: Type.Optional(Type.Integer({ minimum: 1, maximum: 1, description: "Only 1 choice is generated" })),
  stream: Type.Optional(Type.Boolean()),
  stream_options: Type.Optional(Type.Object({ include_usage: Type.Optional(Type.Boolean()) })),
  chat_template_kwargs: Type.Optional(Type.Object({ enable_thinking: Type.Optional(Type.Boolean()) }, { description: "vLLM / llama-server spelling of enable_thinking" })),
  ...SamplingControls,
  ...LlamaServerSamplingDefaults,
  ...ChatLogprobsControls,
  ...ToolRequestFields,
  ...ConversationHints,
}, { $id: "ChatCompletionRequest" });
export type ChatCompletionBody = Static<typeof ChatCompletionBodySchema>;

const FinishReason = Type.Union([Type.Literal("stop"), Type.Literal("length"), Type.Literal("tool_calls")]);

export const ChatCompletionSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal("chat.completion"),
  created: Type.Integer(),
  model: Type.String(),
  choices: Type.Array(Type.Object({
    index: Type.Integer(),
    message: Type.Object({
      role: Type.Literal("assistant"),
      content: Type.Union([Type.String(), Type.Null()], { description: "The answer; null when the answer is tool calls only" }),
      reasoning_content: Type.Optional(Type.String({ description: "Qwen3's thinking, when enabled" })),
      tool_calls: Type.Optional(Type.Array(ToolCallSchema)),
    }),
    finish_reason: FinishReason,
    logprobs: Type.Union([ChatLogprobsSchema, Type.Null()], { description: "Per answer token, when logprobs: true; else null" }),
  })),
  usage: UsageSchema,
}, { $id: "ChatCompletion" });
export type ChatCompletion = Static<typeof ChatCompletionSchema>;

/** What one streamed chunk's `delta` may carry (documentation and typing of the SSE chunks). */
export const ChatCompletionDeltaSchema = Type.Object({
  role: Type.Optional(Type.Literal("assistant")),
  content: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  reasoning_content: Type.Optional(Type.String()),
  tool_calls: Type.Optional(Type.Array(ToolCallDeltaSchema)),
});
export type ChatCompletionDelta = Static<typeof ChatCompletionDeltaSchema>;

export const EmbeddingsBodySchema = Type.Object({
  input: Type.Union([
    Type.String({ minLength: 1 }),
    Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
    Type.Array(Type.Integer(), { minItems: 1, description: "cl100k_base token ids of one text" }),
    Type.Array(Type.Array(Type.Integer()), { minItems: 1, description: "cl100k_base token ids of several texts (what Python LangChain sends)" }),
  ], { description: "A text, an array of texts, or tiktoken cl100k_base token ids (decoded to text, then embedded as text)" }),
  model: Type.Optional(Type.String({ minLength: 1 })),
  encoding_format: Type.Optional(Type.Union([Type.Literal("float"), Type.Literal("base64")], { default: "float" })),
  dimensions: Type.Optional(Type.Integer({ minimum: 1, description: "Must equal the model's dimension if given" })),
  user: Type.Optional(Type.String()),
  ...PromptFields,
}, { $id: "EmbeddingsRequest" });
export type EmbeddingsBody = Static<typeof EmbeddingsBodySchema>;

export const EmbeddingsResponseSchema = Type.Object({
  object: Type.Literal("list"),
  data: Type.Array(Type.Object({
    object: Type.Literal("embedding"),
    index: Type.Integer(),
    embedding: Type.Union([Type.Array(Type.Number()), Type.String({ description: "base64 of little-endian float32" })]),
  })),
  model: Type.String(),
  usage: Type.Object({ prompt_tokens: Type.Integer(), total_tokens: Type.Integer() }),
}, { $id: "EmbeddingsResponse" });
export type EmbeddingsResponse = Static<typeof EmbeddingsResponseSchema>;

export const ModelListSchema = Type.Object({
  object: Type.Literal("list"),
  data: Type.Array(Type.Object({
    id: Type.String(),
    object: Type.Literal("model"),
    created: Type.Integer(),
    owned_by: Type.String(),
  })),
}, { $id: "ModelList" });

export const OpenAIErrorSchema = Type.Object({
  error: Type.Object({
    message: Type.String(),
    type: Type.String(),
    param: Type.Union([Type.String(), Type.Null()]),
    code: Type.Union([Type.String(), Type.Null()]),
  }),
}, { $id: "OpenAIError" });
