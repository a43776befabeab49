// OpenAI's legacy text completions: the prompt is continued as raw text (the chat template is not
// applied), streamed as `text_completion` chunks ending in [DONE], with legacy-shaped logprobs.
import { randomUUID } from "node:crypto";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { GenerationResult, TokenLogprob } from "../../engine/chat/types.js";
import { EngineError } from "../../engine/errors.js";
import type { ServiceState } from "../../service.js";
import { toGenerateRequest } from "../adapt.js";
import { errorBody } from "../errors.js";
import { TextOffsetCursor, toCompletionLogprobs } from "../logprobs.js";
import { CompletionBodySchema, CompletionSchema, type Completion } from "../schemas/completions.js";
import { OpenAIErrorSchema } from "../schemas/openai.js";
import { clientDisconnectSignal, startSse, streamFailure } from "../streaming.js";

export const completionsRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (app, { state }) => {
  const errors = { 400: OpenAIErrorSchema, 404: OpenAIErrorSchema, 413: OpenAIErrorSchema, 415: OpenAIErrorSchema, 429: OpenAIErrorSchema, 500: OpenAIErrorSchema, 503: OpenAIErrorSchema };

  app.post("/v1/completions", {
    schema: {
      summary: "OpenAI text completion of a raw prompt (stream: true for server-sent chunks)",
      description: "The prompt is tokenized as is, without the chat template. `logprobs` (0..5) returns each token's log-probability and its most likely alternatives; `echo` and `suffix` are not supported.",
      tags: ["OpenAI API"],
      body: CompletionBodySchema,
      response: { 200: CompletionSchema, ...errors },
    },
  }, async (request, reply) => {
    const { chat, models } = state.engines();
    const body = request.body;
    if (body.model !== undefined) {
      const found = models.find(body.model);
      if (found === undefined) {
        throw new EngineError("model_not_found", `The model '${body.model}' does not exist here; this server serves ${models.describeServed()}.`, 404, "model");
      }
      if (found !== models.chat) throw new EngineError("model_not_found", `The model '${body.model}' cannot complete text; use '${models.chat.name}'.`, 404, "model");
    }
    const prompt = typeof body.prompt === "string" ? body.prompt : body.prompt[0]!;
    const wantLogprobs = body.logprobs !== undefined && body.logprobs !== null;
    const prepared = await chat.prepare({
      ...toGenerateRequest({ ...body, stop: body.stop ?? undefined, messages: [], enable_thinking: false }, body.max_tokens ?? undefined, false),
      rawPrompt: prompt,
      maxTokensField: "max_tokens",
      ...(wantLogprobs ? { logprobs: { top: body.logprobs! } } : {}),
      signal: clientDisconnectSignal(reply),
    });
    const id = `cmpl-${randomUUID().replaceAll("-", "")}`;
    const created = Math.floor(Date.now() / 1000);
    const usageOf = (r: GenerationResult) => ({
      prompt_tokens: r.promptTokens,
      completion_tokens: r.tokensGenerated,
      total_tokens: r.promptTokens + r.tokensGenerated,
      prompt_tokens_details: { cached_tokens: r.cachedPromptTokens },
    });

    if (body.stream !== true) {
      const tokens: TokenLogprob[] = [];
      const r = await chat.run(prepared, (d) => { if (d.kind === "content" && d.logprobs) tokens.push(...d.logprobs); });
      const completion: Completion = {
        id, object: "text_completion", created, model: chat.modelName,
        choices: [{ index: 0, text: r.text, logprobs: wantLogprobs ? toCompletionLogprobs(tokens) : null, finish_reason: r.finishReason === "length" ? "length" : "stop" }],
        usage: usageOf(r),
      };
      return completion;
    }

    const sse = startSse(reply);
    const chunk = (text: string, logprobs: Completion["choices"][number]["logprobs"], finishReason: "stop" | "length" | null) => ({
      id, object: "text_completion", created, model: chat.modelName,
      choices: [{ index: 0, text, logprobs, finish_reason: finishReason }],
    });
    try {
      const offsets = new TextOffsetCursor();
      const r = await chat.run(prepared, (d) => {
        if (d.kind !== "content") return;
        sse.send(chunk(d.text, wantLogprobs ? toCompletionLogprobs(d.logprobs ?? [], offsets) : null, null));
      });
      sse.send(chunk("", null, r.finishReason === "length" ? "length" : "stop"));
      if (body.stream_options?.include_usage) sse.send({ id, object: "text_completion", created, model: chat.modelName, choices: [], usage: usageOf(r) });
      sse.sendRaw("[DONE]");
    } catch (error) {
      const failure = streamFailure(error, reply);
      if (failure) sse.send(errorBody(failure, "openai"));
    } finally {
      sse.end();
    }
    return reply;
  });
};
