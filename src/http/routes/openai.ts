// The OpenAI-compatible API: a second thin adapter over the same engine calls as the seed API.
import { randomUUID } from "node:crypto";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { Type } from "@sinclair/typebox";
import type { ChatMessage, GenerationResult } from "../../engine/chat/types.js";
import { EngineError } from "../../engine/errors.js";
import { promptPrefix } from "../../engine/prompts.js";
import type { ServiceState } from "../../service.js";
import { useApiErrors } from "../errors.js";
import { modelOf } from "../models.js";
import { serveRetrieval } from "../retrieval.js";
import { toChatMessage, toGenerateRequest, toolCallDeltaToWire, toolCallsToWire } from "../adapt.js";
import {
  ChatCompletionBodySchema, ChatCompletionSchema, EmbeddingsBodySchema, EmbeddingsResponseSchema, ModelListSchema, OpenAIErrorSchema,
  type ChatCompletion, type ChatCompletionBody, type ChatCompletionDelta, type EmbeddingsResponse,
} from "../schemas/openai.js";
import { serveGeneration } from "../generation.js";
import { base64Float32, useVectorJson } from "../vectors.js";
import { decodeTokenIdInput } from "../tokenIds.js";
import { AnswerLogprobs, chatLogprobsRequest, type ChatLogprobs } from "../logprobs.js";

const isTextList = (input: readonly unknown[]): input is string[] => typeof input[0] === "string";

/** Thinking is off unless asked for, as on the seed API: the token budget goes to the answer. */
const DEFAULT_THINKING = false;

function toMessages(messages: ChatCompletionBody["messages"]): ChatMessage[] {
  return messages.map((m, index) => toChatMessage({
    ...m,
    content: Array.isArray(m.content) ? m.content.map((part) => part.text).join("") : m.content,
  }, index));
}

function usageOf(r: GenerationResult) {
  return {
    prompt_tokens: r.promptTokens,
    completion_tokens: r.tokensGenerated,
    total_tokens: r.promptTokens + r.tokensGenerated,
    prompt_tokens_details: { cached_tokens: r.cachedPromptTokens },
  };
}

export const openaiRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (app, { state }) => {
  useApiErrors(app, "openai");
  const errors = { 400: OpenAIErrorSchema, 404: OpenAIErrorSchema, 429: OpenAIErrorSchema, 500: OpenAIErrorSchema, 503: OpenAIErrorSchema, 504: OpenAIErrorSchema };

  app.post("/v1/chat/completions", {
    schema: {
      summary: "OpenAI chat completion (stream: true for server-sent chunks)",
      tags: ["OpenAI API"],
      body: ChatCompletionBodySchema,
      response: { 200: ChatCompletionSchema, ...errors },
    },
    config: { model: { kind: "chat" } },
  }, async (request, reply) => {
    const body = request.body;
    const thinking = body.enable_thinking ?? body.chat_template_kwargs?.enable_thinking ?? DEFAULT_THINKING;
    return serveGeneration(reply, {
      stream: body.stream === true,
      style: "openai",
      request: () => ({
        ...toGenerateRequest({ ...body, messages: toMessages(body.messages), enable_thinking: thinking }, body.max_tokens ?? body.max_completion_tokens, DEFAULT_THINKING),
        maxTokensField: body.max_tokens === undefined && body.max_completion_tokens !== undefined ? "max_completion_tokens" : "max_tokens",
        ...chatLogprobsRequest(body),
      }),
      format: (chat) => {
        const id = `chatcmpl-${randomUUID().replaceAll("-", "")}`;
        const created = Math.floor(Date.now() / 1000);
        const answerLogprobs = new AnswerLogprobs(chatLogprobsRequest(body).logprobs);
        const chunk = (delta: ChatCompletionDelta, finishReason: string | null = null, logprobs: ChatLogprobs | null = null) => ({
          data: { id, object: "chat.completion.chunk", created, model: chat.modelName, choices: [{ index: 0, delta, finish_reason: finishReason, logprobs }] },
        });
        return {
          opening: () => [chunk({ role: "assistant", content: "" })],
          delta: (d) => [
            d.kind === "content" ? chunk({ content: d.text }, null, answerLogprobs.ofDelta(d))
              : d.kind === "reasoning" ? chunk({ reasoning_content: d.text })
                : chunk({ tool_calls: [toolCallDeltaToWire(d)!] }),
          ],
          closing: (r) => [
            chunk({}, r.finishReason),
            ...(body.stream_options?.include_usage
              ? [{ data: { id, object: "chat.completion.chunk", created, model: chat.modelName, choices: [], usage: usageOf(r) } }]
              : []),
            { raw: "[DONE]" },
          ],
          collect: answerLogprobs.collect,
          response: (r): ChatCompletion => ({
            id, object: "chat.completion", created, model: chat.modelName,
            choices: [{
              index: 0,
              message: {
                role: "assistant",
                // As OpenAI: an answer that is only tool calls has content null.
                content: r.toolCalls.length > 0 && r.text === "" ? null : r.text,
                ...(r.reasoning !== null ? { reasoning_content: r.reasoning } : {}),
                ...(r.toolCalls.length > 0 ? { tool_calls: toolCallsToWire(r.toolCalls) } : {}),
              },
              finish_reason: r.finishReason,
              logprobs: answerLogprobs.result(),
            }],
            usage: usageOf(r),
          }),
        };
      },
    });
  });

  app.post("/v1/embeddings", {
    schema: {
      summary: "OpenAI embeddings (L2-normalised; float or base64 float32)",
      description: "`model` picks one of the served embedding models (default: EMBED_MODEL). `input_type` (Cohere/Voyage; the OpenAI SDK sends it in extra_body) or `prompt_name` (TEI) puts the model's own prompt before each text.",
      tags: ["OpenAI API"],
      body: EmbeddingsBodySchema,
      response: { 200: EmbeddingsResponseSchema, ...errors },
    },
    config: { model: { kind: "embedding" } },
  }, async (request, reply): Promise<EmbeddingsResponse> => {
    const body = request.body;
    const served = modelOf(request, "embedding");
    const embed = served.engine;
    if (body.dimensions !== undefined && body.dimensions !== embed.dimension) {
      throw new EngineError("invalid_request", `dimensions must be ${embed.dimension} for ${embed.modelName} (it cannot be shortened).`, 400, "dimensions");
    }
    const texts = typeof body.input === "string" ? [body.input] : isTextList(body.input) ? body.input : decodeTokenIdInput(body.input);
    const prefix = promptPrefix(served, { inputType: body.input_type, promptName: body.prompt_name });
    const result = await serveRetrieval(reply, (signal) => embed.embed(texts, { field: "input", prefix, signal }));
    const base64 = body.encoding_format === "base64";
    useVectorJson(reply);
    return {
      object: "list",
      data: result.embeddings.map((vector, index) => ({
        object: "embedding" as const,
        index,
        embedding: base64 ? base64Float32(vector) : vector,
      })),
      model: embed.modelName,
      usage: { prompt_tokens: result.promptTokens, total_tokens: result.promptTokens },
    };
  });

  app.get("/v1/models", {
    schema: { summary: "The models this server serves", tags: ["OpenAI API"], response: { 200: ModelListSchema, 503: OpenAIErrorSchema } },
  }, async () => {
    const { models } = state.engines();
    const created = Math.floor(state.startedAt / 1000);
    return {
      object: "list" as const,
      data: models.list().map((m) => ({ id: m.name, object: "model" as const, created, owned_by: "bora-llm-service" })),
    };
  });

  // A wildcard, so names with a slash (sentence-transformers/all-MiniLM-L6-v2) work unencoded too.
  app.get("/v1/models/*", {
    schema: {
      summary: "One served model, by any of its names",
      tags: ["OpenAI API"],
      params: Type.Object({ "*": Type.String() }),
      response: { 200: ModelListSchema.properties.data.items, 404: OpenAIErrorSchema, 503: OpenAIErrorSchema },
    },
    config: { model: { kind: "any", name: (request) => (request.params as { "*": string })["*"] } },
  }, async (request) => {
    const found = modelOf(request, "any");
    return { id: found.name, object: "model" as const, created: Math.floor(state.startedAt / 1000), owned_by: "bora-llm-service" };
  });
};
