// The Ollama API's wire types (github.com/ollama/ollama api/types.go, docs/api.md): what the official
// `ollama` clients, LangChain's ChatOllama/OllamaEmbeddings, Open WebUI, n8n and Continue send.
// Like Ollama (Go's JSON decoder), unknown fields are accepted and ignored; known fields are checked.
import { Type, type Static } from "@sinclair/typebox";
import { PromptFields } from "./common.js";

const KeepAlive = Type.Optional(Type.Union([Type.String(), Type.Number()], { description: "Accepted and ignored: the models stay loaded" }));

/** Ollama's `think`: a boolean, or an effort level (gpt-oss); any level turns Qwen3's thinking on. */
const Think = Type.Optional(Type.Union([Type.Boolean(), Type.Literal("high"), Type.Literal("medium"), Type.Literal("low")], {
  description: "Qwen3 thinks before answering; the thought comes back in `thinking` (default false)",
}));

const Format = Type.Optional(Type.Union([
  Type.Literal("json"),
  Type.Literal(""),
  Type.Record(Type.String(), Type.Unknown(), { description: "A JSON schema the output must match (enforced by a grammar)" }),
], { description: "\"json\" for any JSON value, or a JSON schema" }));

export const OllamaOptionsSchema = Type.Object({
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
  top_p: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  top_k: Type.Optional(Type.Integer({ minimum: 0, maximum: 1000 })),
  min_p: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  num_predict: Type.Optional(Type.Integer({ minimum: -2, description: "Most tokens to generate; -1 or -2: until the context is full" })),
  seed: Type.Optional(Type.Integer({ minimum: -1, maximum: 4294967294, description: "-1: random; 0..4294967294 (4294967295 is llama.cpp's own 'random')" })),
  stop: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { maxItems: 16 })),
  repeat_penalty: Type.Optional(Type.Number({ minimum: 1e-6, maximum: 10, description: "Above 0 (llama.h): at least 1e-6; 1: off" })),
  repeat_last_n: Type.Optional(Type.Integer({ minimum: -1, maximum: 1_048_576, description: "Tokens the penalties look back over, the prompt's included (default 64; 0: none; -1: num_ctx)" })),
  presence_penalty: Type.Optional(Type.Number({ minimum: -2, maximum: 2 })),
  frequency_penalty: Type.Optional(Type.Number({ minimum: -2, maximum: 2 })),
}, { description: "Sampling options; the others Ollama knows (num_ctx, num_thread, mirostat, …) are accepted and ignored" });
export type OllamaOptions = Static<typeof OllamaOptionsSchema>;

const ToolCallSchema = Type.Object({
  id: Type.Optional(Type.String()),
  function: Type.Object({
    index: Type.Optional(Type.Integer()),
    name: Type.String({ minLength: 1 }),
    arguments: Type.Record(Type.String(), Type.Unknown(), { description: "The arguments as an object" }),
  }),
});

export const OllamaMessageSchema = Type.Object({
  role: Type.Union([Type.Literal("system"), Type.Literal("user"), Type.Literal("assistant"), Type.Literal("tool")]),
  content: Type.String({ default: "" }),
  thinking: Type.Optional(Type.String({ description: "An earlier answer's thought (not sent back to the model, as Qwen3's template drops it)" })),
  images: Type.Optional(Type.Array(Type.String(), { maxItems: 0, description: "Not supported: the chat model reads text only" })),
  tool_calls: Type.Optional(Type.Array(ToolCallSchema)),
  tool_name: Type.Optional(Type.String({ description: "On a tool message: the function whose result it is" })),
  tool_call_id: Type.Optional(Type.String()),
});
export type OllamaMessage = Static<typeof OllamaMessageSchema>;

export const OllamaToolSchema = Type.Object({
  type: Type.Literal("function"),
  function: Type.Object({
    name: Type.String({ minLength: 1, maxLength: 64, pattern: "^[a-zA-Z0-9_.-]+$" }),
    description: Type.Optional(Type.String()),
    parameters: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: "JSON schema of the arguments object" })),
  }),
});

export const OllamaChatBodySchema = Type.Object({
  model: Type.String({ minLength: 1 }),
  messages: Type.Array(OllamaMessageSchema, { default: [], maxItems: 4096, description: "Empty: the model is (already) loaded, done_reason \"load\"" }),
  tools: Type.Optional(Type.Array(OllamaToolSchema, { maxItems: 128 })),
  format: Format,
  options: Type.Optional(OllamaOptionsSchema),
  stream: Type.Boolean({ default: true, description: "NDJSON, one object a line (default), or one JSON object" }),
  think: Think,
  keep_alive: KeepAlive,
  logprobs: Type.Optional(Type.Boolean()),
  top_logprobs: Type.Optional(Type.Integer({ minimum: 0, maximum: 20 })),
}, { $id: "OllamaChatRequest" });
export type OllamaChatBody = Static<typeof OllamaChatBodySchema>;

export const OllamaGenerateBodySchema = Type.Object({
  model: Type.String({ minLength: 1 }),
  prompt: Type.String({ default: "", description: "Empty: the model is (already) loaded, done_reason \"load\"" }),
  system: Type.Optional(Type.String()),
  suffix: Type.Optional(Type.String({ description: "Fill-in-the-middle: not supported by the chat model (400 when not empty)" })),
  template: Type.Optional(Type.String({ description: "Go prompt templates are not supported (400 when not empty); use raw" })),
  context: Type.Optional(Type.Array(Type.Integer(), { description: "Deprecated in Ollama; accepted and ignored" })),
  raw: Type.Optional(Type.Boolean({ description: "The prompt is sent to the model as is, without the chat template" })),
  format: Format,
  images: Type.Optional(Type.Array(Type.String(), { maxItems: 0, description: "Not supported: the chat model reads text only" })),
  options: Type.Optional(OllamaOptionsSchema),
  stream: Type.Boolean({ default: true }),
  think: Think,
  keep_alive: KeepAlive,
  logprobs: Type.Optional(Type.Boolean()),
  top_logprobs: Type.Optional(Type.Integer({ minimum: 0, maximum: 20 })),
}, { $id: "OllamaGenerateRequest" });
export type OllamaGenerateBody = Static<typeof OllamaGenerateBodySchema>;

const Durations = {
  total_duration: Type.Integer({ description: "Nanoseconds" }),
  load_duration: Type.Integer({ description: "Nanoseconds (0: the models stay loaded)" }),
};

/** On the last line of a stream (done: true) and on a whole response. */
const GenerationStats = {
  done_reason: Type.Optional(Type.String({ description: "stop, length, or load" })),
  total_duration: Type.Optional(Durations.total_duration),
  load_duration: Type.Optional(Durations.load_duration),
  prompt_eval_count: Type.Optional(Type.Integer({ description: "Prompt tokens" })),
  prompt_eval_duration: Type.Optional(Type.Integer({ description: "Nanoseconds to the first generated token" })),
  eval_count: Type.Optional(Type.Integer({ description: "Generated tokens (thinking included)" })),
  eval_duration: Type.Optional(Type.Integer({ description: "Nanoseconds" })),
};

const LogprobSchema = Type.Object({
  token: Type.String(),
  logprob: Type.Number(),
  bytes: Type.Array(Type.Integer()),
  top_logprobs: Type.Optional(Type.Array(Type.Object({ token: Type.String(), logprob: Type.Number(), bytes: Type.Array(Type.Integer()) }))),
});

export const OllamaChatResponseSchema = Type.Object({
  model: Type.String(),
  created_at: Type.String(),
  message: Type.Object({
    role: Type.Literal("assistant"),
    content: Type.String(),
    thinking: Type.Optional(Type.String()),
    tool_calls: Type.Optional(Type.Array(ToolCallSchema)),
  }),
  done: Type.Boolean(),
  logprobs: Type.Optional(Type.Array(LogprobSchema)),
  ...GenerationStats,
}, { $id: "OllamaChatResponse" });
export type OllamaChatResponse = Static<typeof OllamaChatResponseSchema>;

export const OllamaGenerateResponseSchema = Type.Object({
  model: Type.String(),
  created_at: Type.String(),
  response: Type.String(),
  thinking: Type.Optional(Type.String()),
  done: Type.Boolean(),
  logprobs: Type.Optional(Type.Array(LogprobSchema)),
  ...GenerationStats,
}, { $id: "OllamaGenerateResponse" });
export type OllamaGenerateResponse = Static<typeof OllamaGenerateResponseSchema>;

export const OllamaEmbedBodySchema = Type.Object({
  model: Type.String({ minLength: 1 }),
  input: Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 100_000 })], { description: "A text or a list of texts" }),
  truncate: Type.Boolean({ default: true, description: "Cut texts to the model's limit; false: a too long text is an error" }),
  dimensions: Type.Optional(Type.Integer({ minimum: 1, description: "Must equal the model's dimension if given" })),
  options: Type.Optional(OllamaOptionsSchema),
  keep_alive: KeepAlive,
  ...PromptFields,
}, { $id: "OllamaEmbedRequest" });
export type OllamaEmbedBody = Static<typeof OllamaEmbedBodySchema>;

export const OllamaEmbedResponseSchema = Type.Object({
  model: Type.String(),
  embeddings: Type.Array(Type.Array(Type.Number()), { description: "L2-normalised, in input order" }),
  ...Durations,
  prompt_eval_count: Type.Integer(),
}, { $id: "OllamaEmbedResponse" });

export const OllamaEmbeddingsBodySchema = Type.Object({
  model: Type.String({ minLength: 1 }),
  prompt: Type.String({ default: "" }),
  options: Type.Optional(OllamaOptionsSchema),
  keep_alive: KeepAlive,
}, { $id: "OllamaEmbeddingsRequest" });

export const OllamaEmbeddingsResponseSchema = Type.Object({
  embedding: Type.Array(Type.Number()),
}, { $id: "OllamaEmbeddingsResponse" });

const DetailsSchema = Type.Object({
  parent_model: Type.String(),
  format: Type.Literal("gguf"),
  family: Type.String(),
  families: Type.Array(Type.String()),
  parameter_size: Type.String(),
  quantization_level: Type.String(),
});

const ModelEntry = {
  name: Type.String(),
  model: Type.String(),
  size: Type.Integer({ description: "File size in bytes" }),
  digest: Type.String(),
  details: DetailsSchema,
};

export const OllamaTagsSchema = Type.Object({
  models: Type.Array(Type.Object({ ...ModelEntry, modified_at: Type.String() })),
}, { $id: "OllamaTags" });

export const OllamaPsSchema = Type.Object({
  models: Type.Array(Type.Object({ ...ModelEntry, expires_at: Type.String(), size_vram: Type.Integer(), context_length: Type.Integer() })),
}, { $id: "OllamaPs" });

export const OllamaShowBodySchema = Type.Object({
  model: Type.Optional(Type.String({ minLength: 1 })),
  name: Type.Optional(Type.String({ minLength: 1, description: "Older clients' spelling of model" })),
  verbose: Type.Optional(Type.Boolean()),
}, { $id: "OllamaShowRequest" });

export const OllamaShowSchema = Type.Object({
  modelfile: Type.String(),
  parameters: Type.String(),
  template: Type.String(),
  details: DetailsSchema,
  model_info: Type.Record(Type.String(), Type.Union([Type.String(), Type.Number(), Type.Boolean()])),
  capabilities: Type.Array(Type.String()),
  modified_at: Type.String(),
}, { $id: "OllamaShow" });

export const OllamaVersionSchema = Type.Object({ version: Type.String() }, { $id: "OllamaVersion" });

export const OllamaErrorSchema = Type.Object({ error: Type.String() }, { $id: "OllamaError" });
