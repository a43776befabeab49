// The seed API. Handlers only translate between the wire and the engine.
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { promptPrefix } from "../../engine/prompts.js";
import type { ServiceState } from "../../service.js";
import { toChatMessage, toGenerateRequest, toolCallDeltaToWire, toolCallsToWire } from "../adapt.js";
import { ErrorBodySchema } from "../schemas/common.js";
import {
  EmbedBodySchema, EmbedResponseSchema, GenerateBodySchema, GenerateResponseSchema,
  type EmbedResponse, type GenerateResponse,
} from "../schemas/llm.js";
import { clientDisconnectSignal, startSse, streamFailure } from "../streaming.js";
import { useVectorJson } from "../vectors.js";

export const llmRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (app, { state }) => {
  const errors = { 400: ErrorBodySchema, 413: ErrorBodySchema, 415: ErrorBodySchema, 429: ErrorBodySchema, 500: ErrorBodySchema, 503: ErrorBodySchema };

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
  }, async (request, reply) => {
    const { chat } = state.engines();
    const body = request.body;
    const messages = body.messages.map((m, index) => toChatMessage(m, index));
    const generation = { ...toGenerateRequest({ ...body, messages }, body.max_new_tokens, false), signal: clientDisconnectSignal(reply) };
    const toResponse = (r: Awaited<ReturnType<typeof chat.generate>>): GenerateResponse => ({
      answer: r.text,
      model: chat.modelName,
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
    // Checks that need the model (prompt length, grammar) happen before the first byte: still a 4xx.
    const prepared = await chat.prepare(generation);
    if (body.stream !== true) return toResponse(await chat.run(prepared));

    const sse = startSse(reply);
    try {
      const result = await chat.run(prepared, (d) => {
        if (d.kind === "content" || d.kind === "reasoning") sse.send({ text: d.text }, d.kind === "content" ? "delta" : "reasoning");
        else sse.send(toolCallDeltaToWire(d), "tool_call");
      });
      sse.send(toResponse(result), "done");
    } catch (error) {
      const e = streamFailure(error, reply);
      if (e) sse.send({ error: { code: e.code, message: e.message } }, "error");
    } finally {
      sse.end();
    }
    return reply;
  });

  app.post("/api/llm/embed", {
    schema: {
      summary: "Embed texts (L2-normalised, input order)",
      tags: ["seed API"],
      body: EmbedBodySchema,
      response: { 200: EmbedResponseSchema, ...errors },
    },
  }, async (request, reply): Promise<EmbedResponse> => {
    const { texts, model, input_type, prompt_name } = request.body;
    const served = state.engines().models.resolve("embedding", model, { status: 400 });
    const embed = served.engine;
    const result = await embed.embed(texts, { prefix: promptPrefix(served, { inputType: input_type, promptName: prompt_name }) });
    useVectorJson(reply);
    return { embeddings: result.embeddings, dim: result.dim, model: embed.modelName, truncated: result.truncated };
  });
};
