// OpenAI's legacy text completions: the prompt is continued as raw text (the chat template is not
// applied), streamed as `text_completion` chunks ending in [DONE], with legacy-shaped logprobs.
import { randomUUID } from "node:crypto";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { GenerationResult, TokenLogprob } from "../../engine/chat/types.js";
import { invalidRequest } from "../../engine/errors.js";
import { toSamplingRequest } from "../adapt.js";
import { TextOffsetCursor, toCompletionLogprobs } from "../logprobs.js";
import { CompletionBodySchema, CompletionSchema, type Completion } from "../schemas/completions.js";
import { OpenAIErrorSchema } from "../schemas/openai.js";
import { useApiErrors } from "../errors.js";
import { serveGeneration } from "../generation.js";

/** Chat-only fields a client may send here by mistake: a raw-text completion cannot call tools. */
const CHAT_ONLY_FIELDS = ["tools", "tool_choice", "parallel_tool_calls", "functions", "function_call"] as const;

/**
 * Unknown fields are accepted and ignored (clients send many), but these would silently change the
 * meaning of the request: a 400 naming the field, whatever its value (`"tools": null` included).
 */
function refuseToolFields(body: object): void {
  const field = CHAT_ONLY_FIELDS.find((name) => Object.hasOwn(body, name));
  if (field !== undefined) {
    throw invalidRequest(`${field} is not supported by /v1/completions (a raw-text completion cannot call tools); use /v1/chat/completions.`, field);
  }
}

export const completionsRoutes: FastifyPluginAsyncTypebox = async (app) => {
  useApiErrors(app, "openai");
  const errors = { 400: OpenAIErrorSchema, 404: OpenAIErrorSchema, 413: OpenAIErrorSchema, 415: OpenAIErrorSchema, 429: OpenAIErrorSchema, 500: OpenAIErrorSchema, 503: OpenAIErrorSchema };

  app.post("/v1/completions", {
    schema: {
      summary: "OpenAI text completion of a raw prompt (stream: true for server-sent chunks)",
      description: "The prompt is tokenized as is, without the chat template. `logprobs` (0..5) returns each token's log-probability and its most likely alternatives; `echo` and `suffix` are not supported.",
      tags: ["OpenAI API"],
      body: CompletionBodySchema,
      response: { 200: CompletionSchema, ...errors },
    },
    config: { model: { kind: "chat" } },
  }, async (request, reply) => {
    const body = request.body;
    const wantLogprobs = body.logprobs !== undefined && body.logprobs !== null;
    const usageOf = (r: GenerationResult) => ({
      prompt_tokens: r.promptTokens,
      completion_tokens: r.tokensGenerated,
      total_tokens: r.promptTokens + r.tokensGenerated,
      prompt_tokens_details: { cached_tokens: r.cachedPromptTokens },
    });
    const finishOf = (r: GenerationResult) => r.finishReason === "length" ? "length" as const : "stop" as const;
    return serveGeneration(reply, {
      stream: body.stream === true,
      style: "openai",
      // Sampling fields only: this route takes no tools, and unknown fields (a stray `tools: null`) are not read.
      request: () => {
        refuseToolFields(body);
        return {
          ...toSamplingRequest({ ...body, stop: body.stop ?? undefined, messages: [], enable_thinking: false }, body.max_tokens ?? undefined, false),
          rawPrompt: typeof body.prompt === "string" ? body.prompt : body.prompt[0]!,
          maxTokensField: "max_tokens",
          ...(wantLogprobs ? { logprobs: { top: body.logprobs! } } : {}),
        };
      },
      format: (chat) => {
        const id = `cmpl-${randomUUID().replaceAll("-", "")}`;
        const created = Math.floor(Date.now() / 1000);
        const tokens: TokenLogprob[] = [];
        const offsets = new TextOffsetCursor();
        const chunk = (text: string, logprobs: Completion["choices"][number]["logprobs"], finishReason: "stop" | "length" | null) => ({
          data: { id, object: "text_completion", created, model: chat.modelName, choices: [{ index: 0, text, logprobs, finish_reason: finishReason }] },
        });
        return {
          delta: (d) => d.kind !== "content" ? [] : [chunk(d.text, wantLogprobs ? toCompletionLogprobs(d.logprobs ?? [], offsets) : null, null)],
          closing: (r) => [
            chunk("", null, finishOf(r)),
            ...(body.stream_options?.include_usage ? [{ data: { id, object: "text_completion", created, model: chat.modelName, choices: [], usage: usageOf(r) } }] : []),
            { raw: "[DONE]" },
          ],
          collect: (d) => { if (d.kind === "content" && d.logprobs) tokens.push(...d.logprobs); },
          response: (r): Completion => ({
            id, object: "text_completion", created, model: chat.modelName,
            choices: [{ index: 0, text: r.text, logprobs: wantLogprobs ? toCompletionLogprobs(tokens) : null, finish_reason: finishOf(r) }],
            usage: usageOf(r),
          }),
        };
      },
    });
  });
};
