// The Ollama-compatible API (docs/api.md of github.com/ollama/ollama): a thin adapter over the same
// engine calls as the seed and OpenAI APIs, for clients that speak only Ollama. Mounted at /api/*
// beside the seed API's /api/llm/*; errors in Ollama's `{"error": "…"}` shape (this plugin's error handler).
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { FastifyReply } from "fastify";
import type { ChatMessage, GenerateRequest, GenerationResult, ResponseFormat, TokenLogprob } from "../../engine/chat/types.js";
import { EngineError, invalidRequest } from "../../engine/errors.js";
import { promptPrefix } from "../../engine/prompts.js";
import type { ServedModel } from "../../engine/registry.js";
import type { ServiceState } from "../../service.js";
import { useApiErrors } from "../errors.js";
import { toOllamaLogprobs } from "../logprobs.js";
import { serveGeneration } from "../generation.js";
import { modelOf } from "../models.js";
import { serveRetrieval } from "../retrieval.js";
import {
  OllamaChatBodySchema, OllamaChatResponseSchema, OllamaEmbedBodySchema, OllamaEmbedResponseSchema, OllamaEmbeddingsBodySchema,
  OllamaEmbeddingsResponseSchema, OllamaErrorSchema, OllamaGenerateBodySchema, OllamaGenerateResponseSchema, OllamaPsSchema,
  OllamaShowBodySchema, OllamaShowSchema, OllamaTagsSchema, OllamaVersionSchema,
  type OllamaChatBody, type OllamaChatResponse, type OllamaGenerateResponse, type OllamaMessage, type OllamaOptions,
} from "../schemas/ollama.js";

/** The Ollama API level these routes follow (what clients that check /api/version see). */
export const OLLAMA_API_VERSION = "0.12.0";

/**
 * Sampling defaults where a request leaves them out: those of Ollama's own qwen3 model (its
 * Modelfile), so a client switching from Ollama gets the same behaviour.
 */
export const OLLAMA_DEFAULTS = { temperature: 0.6, top_p: 0.95, top_k: 20, min_p: 0 } as const;

const ns = (ms: number) => Math.round(ms * 1e6);

/** Ollama's `options` -> the engine's sampling fields. num_predict <= 0 means "until the context is full". */
function toSampling(options: OllamaOptions | undefined) {
  const o = options ?? {};
  return {
    temperature: o.temperature ?? OLLAMA_DEFAULTS.temperature,
    topP: o.top_p ?? OLLAMA_DEFAULTS.top_p,
    topK: o.top_k ?? OLLAMA_DEFAULTS.top_k,
    minP: o.min_p ?? OLLAMA_DEFAULTS.min_p,
    seed: o.seed === undefined || o.seed < 0 ? undefined : o.seed,
    stop: o.stop,
    repeatPenalty: o.repeat_penalty,
    presencePenalty: o.presence_penalty,
    frequencyPenalty: o.frequency_penalty,
    ...(o.repeat_last_n !== undefined ? { repeatLastN: o.repeat_last_n } : {}),
    maxTokens: o.num_predict !== undefined && o.num_predict > 0 ? o.num_predict : undefined,
    maxTokensField: "options.num_predict",
  };
}

function toResponseFormat(format: OllamaChatBody["format"]): ResponseFormat | undefined {
  if (format === undefined || format === "") return undefined;
  return format === "json" ? { type: "json_object" } : { type: "json_schema", schema: format };
}

function toMessages(messages: readonly OllamaMessage[]): ChatMessage[] {
  return messages.map((m, index): ChatMessage => {
    if (m.role === "assistant") {
      const toolCalls = m.tool_calls?.map((c, i) => ({ id: c.id ?? `call_${index}_${i}`, name: c.function.name, arguments: JSON.stringify(c.function.arguments) }));
      return { role: "assistant", content: m.content, ...(toolCalls && toolCalls.length > 0 ? { toolCalls } : {}) };
    }
    if (m.role === "tool") return { role: "tool", content: m.content, name: m.tool_name, toolCallId: m.tool_call_id };
    return { role: m.role, content: m.content };
  });
}

/** Ollama's tool_calls: arguments as an object, not JSON text. */
function toOllamaToolCalls(calls: GenerationResult["toolCalls"]) {
  return calls.map((c, index) => {
    let args: Record<string, unknown> = {};
    try {
      const parsed: unknown = JSON.parse(c.arguments);
      if (parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) args = parsed as Record<string, unknown>;
    } catch { /* the engine only reports calls whose arguments parse; an empty object is the safe shape */ }
    return { id: c.id, function: { index, name: c.name, arguments: args } };
  });
}

function statsOf(r: GenerationResult) {
  const firstTokenMs = r.timings.firstTokenMs ?? r.timings.totalMs - r.timings.queueMs;
  return {
    done_reason: r.finishReason === "length" ? "length" : "stop",
    total_duration: ns(r.timings.totalMs),
    load_duration: 0,
    prompt_eval_count: r.promptTokens,
    prompt_eval_duration: ns(firstTokenMs),
    eval_count: r.tokensGenerated,
    eval_duration: ns(Math.max(0, r.timings.totalMs - r.timings.queueMs - firstTokenMs)),
  };
}

/** Names the Ollama field when the engine reports a problem with the (shared) response-format field. */
function inOllamaTerms(error: unknown): unknown {
  if (error instanceof EngineError && error.field?.startsWith("response_format")) {
    return new EngineError(error.code, error.message.replaceAll("response_format.json_schema.schema", "format"), error.status, "format");
  }
  return error;
}

export const ollamaRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (app, { state }) => {
  useApiErrors(app, "ollama");
  const errors = { 400: OllamaErrorSchema, 404: OllamaErrorSchema, 413: OllamaErrorSchema, 415: OllamaErrorSchema, 429: OllamaErrorSchema, 500: OllamaErrorSchema, 503: OllamaErrorSchema, 504: OllamaErrorSchema };
  const tags = ["Ollama API"];

  /**
   * One Ollama generation through the shared lifecycle: `shape` gives the Ollama-shaped body of each
   * streamed line and of the one response; logprobs and the final statistics are added here.
   */
  const generate = <T extends object>(
    reply: FastifyReply,
    stream: boolean,
    request: GenerateRequest,
    shape: {
      delta: (kind: "content" | "reasoning", text: string) => T;
      toolCalls: (calls: ReturnType<typeof toOllamaToolCalls>) => T;
      final: (r: GenerationResult, streamed: boolean) => T;
    },
  ) => serveGeneration(reply, {
    stream,
    style: "ollama",
    request: () => request,
    format: () => {
      const logprobs: TokenLogprob[] = [];
      return {
        translateError: inOllamaTerms,
        delta: (d) => {
          if (d.kind !== "content" && d.kind !== "reasoning") return [];
          const line = shape.delta(d.kind, d.text);
          return [{ data: d.logprobs && request.logprobs ? { ...line, logprobs: toOllamaLogprobs(d.logprobs) } : line }];
        },
        closing: (r) => [
          ...(r.toolCalls.length > 0 ? [{ data: shape.toolCalls(toOllamaToolCalls(r.toolCalls)) }] : []),
          { data: shape.final(r, true) },
        ],
        collect: (d) => { if (d.kind === "content" && d.logprobs) logprobs.push(...d.logprobs); },
        response: (r) => {
          const body = shape.final(r, false);
          const lp = logprobs.length > 0 ? logprobs : r.logprobs;
          return request.logprobs && lp ? { ...body, logprobs: toOllamaLogprobs(lp) } : body;
        },
      };
    },
  });

  app.post("/api/chat", {
    schema: {
      summary: "Ollama chat (NDJSON stream by default; stream: false for one JSON object)",
      description: "Messages with tool calls and tool results, `tools`, `think`, `format` (\"json\" or a JSON schema), `options` (temperature, top_p, top_k, min_p, num_predict, seed, stop, repeat_penalty, presence_penalty, frequency_penalty; other Ollama options are accepted and ignored), `keep_alive` accepted.",
      tags,
      body: OllamaChatBodySchema,
      response: { 200: OllamaChatResponseSchema, ...errors },
    },
    config: { model: { kind: "chat" } },
  }, async (request, reply) => {
    const body = request.body;
    const createdAt = () => new Date().toISOString();
    if (body.messages.length === 0) {
      return { model: body.model, created_at: createdAt(), message: { role: "assistant" as const, content: "" }, done: true, done_reason: "load", ...zeroStats };
    }
    const thinking = body.think !== undefined && body.think !== false;
    const generation: GenerateRequest = {
      messages: toMessages(body.messages),
      ...toSampling(body.options),
      responseFormat: toResponseFormat(body.format),
      enableThinking: thinking,
      ...(body.tools && body.tools.length > 0
        ? { tools: body.tools.map((t) => ({ name: t.function.name, description: t.function.description, parameters: t.function.parameters })), toolChoice: "auto" as const }
        : {}),
      ...(body.logprobs ? { logprobs: { top: body.top_logprobs ?? 0 } } : {}),
    };
    const base = () => ({ model: body.model, created_at: createdAt() });
    return generate<OllamaChatResponse>(reply, body.stream, generation, {
      delta: (kind, text) => ({ ...base(), message: { role: "assistant", content: kind === "content" ? text : "", ...(kind === "reasoning" ? { thinking: text } : {}) }, done: false } as OllamaChatResponse),
      toolCalls: (calls) => ({ ...base(), message: { role: "assistant", content: "", tool_calls: calls }, done: false } as OllamaChatResponse),
      final: (r, streamed) => ({
        ...base(),
        message: streamed
          ? { role: "assistant", content: "" }
          : {
            role: "assistant",
            content: r.text,
            ...(thinking && r.reasoning !== null ? { thinking: r.reasoning } : {}),
            ...(r.toolCalls.length > 0 ? { tool_calls: toOllamaToolCalls(r.toolCalls) } : {}),
          },
        done: true,
        ...statsOf(r),
      }),
    });
  });

  app.post("/api/generate", {
    schema: {
      summary: "Ollama completion of a prompt (NDJSON stream by default)",
      description: "`prompt` with an optional `system`, rendered with the chat template; `raw: true` sends the prompt as is. `think`, `format`, `options` as for /api/chat.",
      tags,
      body: OllamaGenerateBodySchema,
      response: { 200: OllamaGenerateResponseSchema, ...errors },
    },
    config: { model: { kind: "chat" } },
  }, async (request, reply) => {
    const body = request.body;
    if (body.suffix) throw invalidRequest(`"${body.model}" does not support insert (suffix)`, "suffix");
    if (body.template) throw invalidRequest("template: custom prompt templates are not supported; send the prompt with raw: true instead", "template");
    const createdAt = () => new Date().toISOString();
    if (body.prompt === "") {
      return { model: body.model, created_at: createdAt(), response: "", done: true, done_reason: "load", ...zeroStats };
    }
    const thinking = body.raw !== true && body.think !== undefined && body.think !== false;
    const generation: GenerateRequest = {
      messages: [...(body.system ? [{ role: "system" as const, content: body.system }] : []), { role: "user", content: body.prompt }],
      ...(body.raw ? { rawPrompt: body.prompt } : {}),
      ...toSampling(body.options),
      responseFormat: toResponseFormat(body.format),
      enableThinking: thinking,
      ...(body.logprobs ? { logprobs: { top: body.top_logprobs ?? 0 } } : {}),
    };
    const base = () => ({ model: body.model, created_at: createdAt() });
    return generate<OllamaGenerateResponse>(reply, body.stream, generation, {
      delta: (kind, text) => ({ ...base(), response: kind === "content" ? text : "", ...(kind === "reasoning" ? { thinking: text } : {}), done: false }),
      toolCalls: () => ({ ...base(), response: "", done: false }),
      final: (r, streamed) => ({
        ...base(),
        response: streamed ? "" : r.text,
        ...(!streamed && thinking && r.reasoning !== null ? { thinking: r.reasoning } : {}),
        done: true,
        ...statsOf(r),
      }),
    });
  });

  app.post("/api/embed", {
    schema: {
      summary: "Ollama embeddings of a text or a list of texts (L2-normalised)",
      description: "`truncate` (default true) cuts a text to the model's limit; with false a longer text is a 400. `input_type` or `prompt_name` (additions) put the model's own prompt before each text.",
      tags,
      body: OllamaEmbedBodySchema,
      response: { 200: OllamaEmbedResponseSchema, ...errors },
    },
    config: { model: { kind: "embedding" } },
  }, async (request, reply) => {
    const started = performance.now();
    const body = request.body;
    const served = modelOf(request, "embedding");
    const embed = served.engine;
    if (body.dimensions !== undefined && body.dimensions !== embed.dimension) {
      throw invalidRequest(`dimensions must be ${embed.dimension} for ${embed.modelName} (it cannot be shortened)`, "dimensions");
    }
    const texts = typeof body.input === "string" ? (body.input === "" ? [] : [body.input]) : body.input;
    const empty = texts.findIndex((text) => text === "");
    if (empty >= 0) throw invalidRequest(`input[${empty}] is empty`, `input[${empty}]`);
    const prefix = promptPrefix(served, { inputType: body.input_type, promptName: body.prompt_name });
    const result = texts.length === 0 ? { embeddings: [], promptTokens: 0 }
      : await serveRetrieval(reply, (signal) => embed.embed(texts, { truncate: body.truncate, field: "input", prefix, signal }));
    return { model: body.model, embeddings: result.embeddings, total_duration: ns(performance.now() - started), load_duration: 0, prompt_eval_count: result.promptTokens };
  });

  app.post("/api/embeddings", {
    schema: {
      summary: "Ollama's legacy embedding of one prompt (superseded by /api/embed)",
      description: "Unlike Ollama's, the vector is L2-normalised (as sentence-transformers returns it for this model) and a too long prompt is truncated.",
      tags,
      body: OllamaEmbeddingsBodySchema,
      response: { 200: OllamaEmbeddingsResponseSchema, ...errors },
    },
    config: { model: { kind: "embedding" } },
  }, async (request, reply) => {
    const body = request.body;
    const served = modelOf(request, "embedding");
    if (body.prompt === "") return { embedding: [] };
    const result = await serveRetrieval(reply, (signal) => served.engine.embed([body.prompt], { field: "prompt", prefix: promptPrefix(served), signal }));
    return { embedding: result.embeddings[0]! };
  });

  const detailsOf = (m: ServedModel) => ({
    parent_model: "",
    format: "gguf" as const,
    family: m.details.architecture,
    families: [m.details.architecture],
    parameter_size: m.details.parameterSize,
    quantization_level: m.details.quantization,
  });
  const entryOf = (m: ServedModel) => ({ name: m.name, model: m.name, size: m.details.fileBytes, digest: m.details.digest, details: detailsOf(m) });

  app.get("/api/tags", {
    schema: { summary: "Ollama: the models this server has (all of them are always loaded)", tags, response: { 200: OllamaTagsSchema, 503: OllamaErrorSchema } },
  }, async () => ({
    models: state.engines().models.list().map((m) => ({ ...entryOf(m), modified_at: m.details.modifiedAt.toISOString() })),
  }));

  app.get("/api/ps", {
    schema: { summary: "Ollama: the loaded models (all of them, for the life of the process)", tags, response: { 200: OllamaPsSchema, 503: OllamaErrorSchema } },
  }, async () => {
    const engines = state.engines();
    return {
      models: engines.models.list().map((m) => ({ ...entryOf(m), expires_at: neverExpires, size_vram: 0, context_length: contextOf(m) })),
    };
  });

  app.post("/api/show", {
    schema: {
      summary: "Ollama: a model's details, GGUF metadata and capabilities",
      description: "`template` is the GGUF's Jinja chat template (Ollama shows a Go template); `parameters` are the sampling defaults of /api/chat and /api/generate.",
      tags,
      body: OllamaShowBodySchema,
      response: { 200: OllamaShowSchema, ...errors },
    },
    config: {
      model: {
        kind: "any",
        name: (request) => {
          const body = request.body as { model?: string; name?: string };
          const name = body.model ?? body.name;
          if (name === undefined) throw invalidRequest("model is required", "model");
          return name;
        },
      },
    },
  }, async (request) => {
    const m = modelOf(request, "any");
    const template = m.details.chatTemplate ?? "";
    const parameters = m.kind === "chat"
      ? Object.entries(OLLAMA_DEFAULTS).map(([k, v]) => `${k.padEnd(30)} ${v}`).join("\n")
      : "";
    return {
      modelfile: `# Served by bora-llm-service\nFROM ${m.path}\n`,
      parameters,
      template,
      details: detailsOf(m),
      model_info: m.details.info,
      capabilities: capabilitiesOf(m),
      modified_at: m.details.modifiedAt.toISOString(),
    };
  });

  app.get("/api/version", {
    schema: { summary: "Ollama: the API version these routes follow", tags, response: { 200: OllamaVersionSchema } },
  }, async () => ({ version: OLLAMA_API_VERSION }));
};

/** Tokens one request may hold: a chat slot's context, an embedding's text limit, a reranker's pair limit. */
function contextOf(m: ServedModel): number {
  if (m.kind === "chat") return m.engine.contextSize;
  if (m.kind === "embedding") return m.engine.describe().maxTokensPerText;
  return m.engine.maxTokensPerPair ?? m.details.contextLength ?? 0;
}

const zeroStats = { total_duration: 0, load_duration: 0, prompt_eval_count: 0, prompt_eval_duration: 0, eval_count: 0, eval_duration: 0 };

/** Models never unload here (keep_alive is ignored); Ollama shows a far-future expiry for keep_alive -1 too. */
const neverExpires = "9999-12-31T23:59:59Z";

/**
 * Honest capabilities, read off the model as Ollama does: an embedding model embeds; a chat model
 * completes, calls tools when its template renders tools, and thinks when its template knows `<think>`.
 */
export function capabilitiesOf(m: ServedModel): string[] {
  if (m.kind === "embedding") return ["embedding"];
  if (m.kind === "rerank") return ["rerank"];
  const template = m.details.chatTemplate ?? "";
  return ["completion", ...(template.includes("tools") ? ["tools"] : []), ...(template.includes("<think>") ? ["thinking"] : [])];
}
