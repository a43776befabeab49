// The seed API (../shared/seed/plan-b-llm-microservice.md): POST /api/llm/generate and /api/llm/embed.
// Every field of the seed keeps its name, default and meaning; the rest are additions.
import { Type, type Static } from "@sinclair/typebox";
import { PromptFields, SamplingControls } from "./common.js";
import { ToolCallSchema, ToolRequestFields } from "./tools.js";

/** The seed's message, plus OpenAI's tool history: assistant tool_calls (content "" beside them) and tool results. */
export const SeedMessageSchema = Type.Object({
  role: Type.Union([Type.Literal("system"), Type.Literal("user"), Type.Literal("assistant"), Type.Literal("tool")], { description: "Who said it" }),
  content: Type.String({ description: "The text of the message (a tool result on a tool message)" }),
  tool_calls: Type.Optional(Type.Array(ToolCallSchema, { description: "The calls an assistant message made" })),
  tool_call_id: Type.Optional(Type.String({ description: "On a tool message: the call it answers" })),
  name: Type.Optional(Type.String()),
}, { additionalProperties: false });

export const GenerateBodySchema = Type.Object({
  messages: Type.Array(SeedMessageSchema, { minItems: 1, maxItems: 4096, description: "The conversation; the model answers the last turn" }),
  max_new_tokens: Type.Integer({ minimum: 1, default: 250, description: "Most tokens to generate (thinking included)" }),
  temperature: Type.Number({ minimum: 0, maximum: 2, default: 0.5, description: "0 is greedy" }),
  top_p: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.9 }),
  stream: Type.Optional(Type.Boolean({ default: false, description: "Server-sent events: delta events, then one done event" })),
  ...SamplingControls,
  ...ToolRequestFields,
}, { additionalProperties: false, $id: "GenerateRequest" });
export type GenerateBody = Static<typeof GenerateBodySchema>;

export const GenerateResponseSchema = Type.Object({
  answer: Type.String({ description: "The answer, without any <think> block" }),
  model: Type.String({ description: "The loaded model's name" }),
  tokens_generated: Type.Integer({ description: "Tokens the model generated (thinking included), never above max_new_tokens" }),
  finish_reason: Type.Union([Type.Literal("stop"), Type.Literal("length"), Type.Literal("tool_calls")]),
  reasoning: Type.Optional(Type.String({ description: "The thinking, when enable_thinking was true" })),
  tool_calls: Type.Optional(Type.Array(ToolCallSchema, { description: "The calls the model made (finish_reason tool_calls); OpenAI's shape" })),
  usage: Type.Object({
    prompt_tokens: Type.Integer(),
    cached_prompt_tokens: Type.Integer({ description: "Prompt tokens reused from the prompt cache (this slot, another slot, host memory or disk) instead of decoded" }),
    completion_tokens: Type.Integer(),
    total_tokens: Type.Integer(),
  }),
}, { $id: "GenerateResponse" });
export type GenerateResponse = Static<typeof GenerateResponseSchema>;

export const EmbedBodySchema = Type.Object({
  texts: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: "Texts to embed, in order" }),
  model: Type.Optional(Type.String({ minLength: 1, description: "One of the served embedding models, by any of its names (either seed spelling of all-MiniLM-L6-v2 works); default: EMBED_MODEL" })),
  ...PromptFields,
}, { additionalProperties: false, $id: "EmbedRequest" });
export type EmbedBody = Static<typeof EmbedBodySchema>;

export const EmbedResponseSchema = Type.Object({
  embeddings: Type.Array(Type.Array(Type.Number()), { description: "L2-normalised vectors, in input order" }),
  dim: Type.Integer(),
  model: Type.String(),
  truncated: Type.Integer({ description: "How many texts were cut to the model's token limit" }),
}, { $id: "EmbedResponse" });
export type EmbedResponse = Static<typeof EmbedResponseSchema>;
