// Wire fields shared by both APIs -> the engine's request. One mapping, so the two adapters
// cannot drift apart.
import type { Static } from "@sinclair/typebox";
import type { ChatMessage, GenerateRequest, ResponseFormat } from "../engine/chat.js";
import type { ResponseFormatSchema, SamplingControls } from "./schemas/common.js";

type Controls = { [K in keyof typeof SamplingControls]?: Static<(typeof SamplingControls)[K]> };

export function toGenerateRequest(
  body: Controls & { messages: readonly ChatMessage[]; temperature: number; top_p: number },
  maxTokens: number | undefined,
  defaultThinking: boolean,
): GenerateRequest {
  return {
    messages: body.messages,
    maxTokens,
    temperature: body.temperature,
    topP: body.top_p,
    topK: body.top_k,
    minP: body.min_p,
    seed: body.seed,
    stop: body.stop === undefined ? undefined : typeof body.stop === "string" ? [body.stop] : body.stop,
    repeatPenalty: body.repeat_penalty,
    presencePenalty: body.presence_penalty,
    frequencyPenalty: body.frequency_penalty,
    responseFormat: toResponseFormat(body.response_format),
    ignoreEos: body.ignore_eos ?? false,
    enableThinking: body.enable_thinking ?? defaultThinking,
  };
}

function toResponseFormat(format: Static<typeof ResponseFormatSchema> | undefined): ResponseFormat | undefined {
  if (format === undefined || format.type !== "json_schema") return format;
  return { type: "json_schema", schema: format.json_schema.schema };
}
