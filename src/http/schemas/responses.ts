// The OpenAI Responses API's wire types (POST /v1/responses and friends), as the `openai` SDK's
// resources/responses types define them: what the official clients, the Agents SDK and LangChain
// (useResponsesApi) send and expect. Only function tools and text parts exist here; unknown fields
// are accepted and ignored, as on the Chat Completions route.
import { Type, type Static } from "@sinclair/typebox";
import { ConversationHints, SamplingControls } from "./common.js";

// ---- input -------------------------------------------------------------------------------------

const InputTextPart = Type.Object({ type: Type.Literal("input_text"), text: Type.String() });
const OutputTextPart = Type.Object({ type: Type.Literal("output_text"), text: Type.String() });
const RefusalPart = Type.Object({ type: Type.Literal("refusal"), refusal: Type.String() });
const ItemStatus = Type.Union([Type.Literal("in_progress"), Type.Literal("completed"), Type.Literal("incomplete")]);

export const InputMessageItemSchema = Type.Object({
  type: Type.Optional(Type.Literal("message")),
  id: Type.Optional(Type.String()),
  role: Type.Union([Type.Literal("user"), Type.Literal("assistant"), Type.Literal("system"), Type.Literal("developer")]),
  content: Type.Union([
    Type.String(),
    Type.Array(Type.Union([InputTextPart, OutputTextPart, RefusalPart]), { description: "Text parts only: input_text, output_text, refusal" }),
  ]),
  status: Type.Optional(ItemStatus),
});

export const FunctionCallItemSchema = Type.Object({
  type: Type.Literal("function_call"),
  id: Type.Optional(Type.String()),
  call_id: Type.String({ minLength: 1 }),
  name: Type.String({ minLength: 1 }),
  arguments: Type.String({ description: "The arguments as JSON text" }),
  status: Type.Optional(ItemStatus),
});

export const FunctionCallOutputItemSchema = Type.Object({
  type: Type.Literal("function_call_output"),
  id: Type.Optional(Type.String()),
  call_id: Type.String({ minLength: 1 }),
  output: Type.Union([Type.String(), Type.Array(InputTextPart)], { description: "The tool's result: text, or input_text parts" }),
  status: Type.Optional(ItemStatus),
});

/** A reasoning item sent back by a client (the Agents SDK does): accepted, and left out of the prompt as Qwen3's template leaves past thoughts out. */
export const ReasoningInputItemSchema = Type.Object({
  type: Type.Literal("reasoning"),
  id: Type.Optional(Type.String()),
  summary: Type.Array(Type.Unknown()),
  content: Type.Optional(Type.Array(Type.Unknown())),
  encrypted_content: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  status: Type.Optional(ItemStatus),
});

export const InputItemSchema = Type.Union([InputMessageItemSchema, FunctionCallItemSchema, FunctionCallOutputItemSchema, ReasoningInputItemSchema]);
export type InputItem = Static<typeof InputItemSchema>;

// ---- request ----------------------------------------------------------------------------------

export const FunctionToolSchema = Type.Object({
  type: Type.Literal("function", { description: "Only function tools are served (no web_search, file_search, mcp, ...)" }),
  name: Type.String({ minLength: 1, maxLength: 64 }),
  description: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  parameters: Type.Optional(Type.Union([Type.Record(Type.String(), Type.Unknown()), Type.Null()], { description: "JSON Schema of the arguments object" })),
  strict: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
});
export type FunctionTool = Static<typeof FunctionToolSchema>;

export const ResponsesToolChoiceSchema = Type.Union([
  Type.Literal("none"), Type.Literal("auto"), Type.Literal("required"),
  Type.Object({ type: Type.Literal("function"), name: Type.String({ minLength: 1 }) }),
], { description: "auto (default with tools), none, required, or {type: 'function', name}; required and named calls are grammar-constrained" });

export const TextFormatSchema = Type.Union([
  Type.Object({ type: Type.Literal("text") }),
  Type.Object({ type: Type.Literal("json_object") }),
  Type.Object({
    type: Type.Literal("json_schema"),
    name: Type.String({ minLength: 1 }),
    schema: Type.Record(Type.String(), Type.Unknown(), { description: "A JSON Schema the output must satisfy (enforced by a grammar)" }),
    description: Type.Optional(Type.String()),
    strict: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  }),
]);

const ReasoningEffort = Type.Union(["none", "minimal", "low", "medium", "high", "xhigh", "max"].map((e) => Type.Literal(e)));

export const ReasoningConfigSchema = Type.Object({
  effort: Type.Optional(Type.Union([ReasoningEffort, Type.Null()], {
    description: "Qwen3 thinks or not: none/minimal (or no reasoning field) = off, low and above = on",
  })),
  summary: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: "Accepted; the thought comes back whole as reasoning_text, never summarised" })),
});

export const MetadataSchema = Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 512 }), {
  description: "Up to 16 string pairs kept with the response",
  maxProperties: 16,
});

const PromptFields = {
  model: Type.Optional(Type.String({ minLength: 1, description: "The served chat model's id (see /v1/models); omitted: the served one" })),
  input: Type.Optional(Type.Union([Type.String(), Type.Array(InputItemSchema, { maxItems: 4096 })], {
    description: "A user message as text, or a list of items: messages (input_text / output_text parts), function_call, function_call_output",
  })),
  instructions: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: "A system message put first; not carried over by previous_response_id" })),
  previous_response_id: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Null()], { description: "Continue from a stored response: its whole chain is the history" })),
  tools: Type.Optional(Type.Array(FunctionToolSchema, { maxItems: 128 })),
  tool_choice: Type.Optional(ResponsesToolChoiceSchema),
  parallel_tool_calls: Type.Optional(Type.Union([Type.Boolean(), Type.Null()], { description: "false: at most one call per answer (default true)" })),
  text: Type.Optional(Type.Object({ format: Type.Optional(TextFormatSchema) })),
  reasoning: Type.Optional(Type.Union([ReasoningConfigSchema, Type.Null()])),
};

export const ResponseCreateBodySchema = Type.Object({
  ...PromptFields,
  max_output_tokens: Type.Optional(Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], { description: "Most tokens to generate, thoughts included" })),
  temperature: Type.Optional(Type.Union([Type.Number({ minimum: 0, maximum: 2 }), Type.Null()], { description: "Default 0.8 (llama-server's)" })),
  top_p: Type.Optional(Type.Union([Type.Number({ exclusiveMinimum: 0, maximum: 1 }), Type.Null()], { description: "Default 0.95" })),
  stream: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  store: Type.Optional(Type.Union([Type.Boolean(), Type.Null()], { description: "Keep the response for previous_response_id and GET (default true); bounded, in memory" })),
  metadata: Type.Optional(Type.Union([MetadataSchema, Type.Null()])),
  background: Type.Optional(Type.Union([Type.Literal(false), Type.Null()], { description: "Background responses are not served" })),
  truncation: Type.Optional(Type.Union([Type.Literal("disabled"), Type.Null()], { description: "Only 'disabled': a history longer than the context is a 400" })),
  ...ConversationHints,
  ...SamplingControls,
}, { $id: "ResponseCreateRequest" });
export type ResponseCreateBody = Static<typeof ResponseCreateBodySchema>;

export const InputTokensBodySchema = Type.Object({ ...PromptFields }, { $id: "ResponseInputTokensRequest" });
export type InputTokensBody = Static<typeof InputTokensBodySchema>;

export const InputTokensResponseSchema = Type.Object({
  object: Type.Literal("response.input_tokens"),
  input_tokens: Type.Integer(),
}, { $id: "ResponseInputTokens" });

// ---- output -----------------------------------------------------------------------------------

export const OutputTextSchema = Type.Object({
  type: Type.Literal("output_text"),
  text: Type.String(),
  annotations: Type.Array(Type.Unknown()),
  logprobs: Type.Array(Type.Unknown()),
});

export const OutputMessageSchema = Type.Object({
  type: Type.Literal("message"),
  id: Type.String(),
  role: Type.Literal("assistant"),
  status: ItemStatus,
  content: Type.Array(OutputTextSchema),
});

export const ReasoningTextSchema = Type.Object({ type: Type.Literal("reasoning_text"), text: Type.String() });

export const ReasoningItemSchema = Type.Object({
  type: Type.Literal("reasoning"),
  id: Type.String(),
  summary: Type.Array(Type.Object({ type: Type.Literal("summary_text"), text: Type.String() })),
  content: Type.Array(ReasoningTextSchema),
  status: ItemStatus,
});

export const FunctionCallSchema = Type.Object({
  type: Type.Literal("function_call"),
  id: Type.String(),
  call_id: Type.String(),
  name: Type.String(),
  arguments: Type.String(),
  status: ItemStatus,
});

export const OutputItemSchema = Type.Union([OutputMessageSchema, ReasoningItemSchema, FunctionCallSchema]);
export type OutputItem = Static<typeof OutputItemSchema>;
export type OutputMessage = Static<typeof OutputMessageSchema>;
export type ReasoningItem = Static<typeof ReasoningItemSchema>;
export type FunctionCallItem = Static<typeof FunctionCallSchema>;

export const ResponseUsageSchema = Type.Object({
  input_tokens: Type.Integer(),
  input_tokens_details: Type.Object({
    cached_tokens: Type.Integer({ description: "Prompt tokens found in the slot's KV cache (not evaluated again)" }),
    cache_write_tokens: Type.Integer({ description: "Prompt tokens evaluated, now in the slot's KV cache" }),
  }),
  output_tokens: Type.Integer(),
  output_tokens_details: Type.Object({ reasoning_tokens: Type.Integer({ description: "The thought's text re-tokenized (its <think> markers not counted)" }) }),
  total_tokens: Type.Integer(),
});

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

export const ResponseObjectSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal("response"),
  created_at: Type.Integer(),
  completed_at: Nullable(Type.Integer()),
  status: Type.Union([Type.Literal("in_progress"), Type.Literal("completed"), Type.Literal("incomplete"), Type.Literal("failed")]),
  error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  incomplete_details: Nullable(Type.Object({ reason: Type.Literal("max_output_tokens") })),
  instructions: Nullable(Type.String()),
  max_output_tokens: Nullable(Type.Integer()),
  model: Type.String(),
  output: Type.Array(OutputItemSchema),
  parallel_tool_calls: Type.Boolean(),
  previous_response_id: Nullable(Type.String()),
  reasoning: Type.Object({ effort: Nullable(Type.String()), summary: Nullable(Type.String()) }),
  store: Type.Boolean(),
  temperature: Type.Number(),
  top_p: Type.Number(),
  text: Type.Object({ format: TextFormatSchema }),
  tool_choice: ResponsesToolChoiceSchema,
  tools: Type.Array(Type.Object({
    type: Type.Literal("function"),
    name: Type.String(),
    description: Nullable(Type.String()),
    parameters: Nullable(Type.Record(Type.String(), Type.Unknown())),
    strict: Nullable(Type.Boolean()),
  })),
  truncation: Type.Literal("disabled"),
  background: Type.Boolean(),
  usage: Nullable(ResponseUsageSchema),
  metadata: Type.Record(Type.String(), Type.String()),
  user: Type.Optional(Type.String()),
}, { $id: "Response" });
export type ResponseObject = Static<typeof ResponseObjectSchema>;

/** An input item as stored and listed (GET /v1/responses/{id}/input_items): every item has an id. */
export type StoredInputItem = InputItem & { id: string };

export const InputItemListSchema = Type.Object({
  object: Type.Literal("list"),
  data: Type.Array(Type.Record(Type.String(), Type.Unknown())),
  first_id: Nullable(Type.String()),
  last_id: Nullable(Type.String()),
  has_more: Type.Boolean(),
}, { $id: "ResponseInputItemList" });

export const InputItemListQuerySchema = Type.Object({
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
  order: Type.Union([Type.Literal("asc"), Type.Literal("desc")], { default: "desc" }),
  after: Type.Optional(Type.String()),
});

export const ResponseDeletedSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal("response"),
  deleted: Type.Literal(true),
}, { $id: "ResponseDeleted" });
