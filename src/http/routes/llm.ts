// The seed API. Handlers only translate between the wire and the engine.
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { promptPrefix } from "../../engine/prompts.js";
import type { GenerationResult } from "../../engine/chat/types.js";
import { toChatMessage, toGenerateRequest, toolCallDeltaToWire, toolCallsToWire } from "../adapt.js";
import { ErrorBodySchema } from "../schemas/common.js";
import {
  EmbedBodySchema, EmbedResponseSchema, GenerateBodySchema, GenerateResponseSchema,
  type EmbedResponse, type GenerateResponse,
} from "../schemas/llm.js";
import { useApiErrors } from "../errors.js";
import { serveGeneration } from "../generation.js";
import { modelOf } from "../models.js";
import { serveRetrieval } from "../retrieval.js";
import { useVectorJson } from "../vectors.js";

export const llmRoutes: FastifyPluginAsyncTypebox = async (app) => {
  useApiErrors(app, "seed");
  const errors = { 400: ErrorBodySchema, 413: ErrorBodySchema, 415: ErrorBodySchema, 429: ErrorBodySchema, 500: ErrorBodySchema, 503: ErrorBodySchema, 504: ErrorBodySchema };

  app.post("/api/llm/generate", {
    schema: {
      summary: "Generate the model's answer to a conversation",
      description: "With `stream: true` the answer arrives as server-sent events: `delta` ({text}), `reasoning` ({text}, when thinking), " +
        "`tool_call` (one item of OpenAI's streamed `delta.tool_calls`: first {index, id, type, function: {name, arguments: \"\"}}, " +
        "then {index, function: {arguments}} fragments), then `done` (the same fields as the JSON response) or `error`.",
      tags: ["seed API"],
      body: GenerateBodySchema,
      response: { 200: GenerateResponseSchema, ...errors },
    },
    config: { model: { kind: "chat" } },
  }, async (request, reply) => {
    const body = request.body;
    const toResponse = (r: GenerationResult, modelName: string): GenerateResponse => ({
      answer: r.text,
      model: modelName,
      tokens_generated: r.tokensGenerated,
      finish_reason: r.finishReason,
      ...(r.reasoning !== null ? { reasoning: r.reasoning } : {}),
      ...(r.toolCalls.length > 0 ? { tool_calls: toolCallsToWire(r.toolCalls) } : {}),
      usage: {
        prompt_tokens: r.promptTokens,
        cached_prompt_tokens: r.cachedPromptTokens,
        completion_tokens: r.tokensGenerated,
        total_tokens: r.promptTokens + r.tokensGenerated,
      },
    });
    return serveGeneration(reply, {
      stream: body.stream === true,
      style: "seed",
      request: () => toGenerateRequest({ ...body, messages: body.messages.map((m, index) => toChatMessage(m, index)) }, body.max_new_tokens, false),
      format: (chat) => ({
        delta: (d) => d.kind === "content" || d.kind === "reasoning"
          ? [{ data: { text: d.text }, event: d.kind === "content" ? "delta" : "reasoning" }]
          : [{ data: toolCallDeltaToWire(d), event: "tool_call" }],
        closing: (r) => [{ data: toResponse(r, chat.modelName), event: "done" }],
        response: (r) => toResponse(r, chat.modelName),
      }),
    });
  });

  app.post("/api/llm/embed", {
    schema: {
      summary: "Embed texts (L2-normalised, input order)",
      tags: ["seed API"],
      body: EmbedBodySchema,
      response: { 200: EmbedResponseSchema, ...errors },
    },
    config: { model: { kind: "embedding" } },
  }, async (request, reply): Promise<EmbedResponse> => {
    const { texts, input_type, prompt_name } = request.body;
    const served = modelOf(request, "embedding");
    const embed = served.engine;
    const prefix = promptPrefix(served, { inputType: input_type, promptName: prompt_name });
    const result = await serveRetrieval(reply, (signal) => embed.embed(texts, { prefix, signal }));
    useVectorJson(reply);
    return { embeddings: result.embeddings, dim: result.dim, model: embed.modelName, truncated: result.truncated };
  });
};
