// The engine's work as spans under the request that asked for it, made from what the engine already
// reports (a generation's result with its timings, a batch's start and end), with explicit start and end
// times: the engine knows nothing of OpenTelemetry. Counts, model and slot only: never the user's text.
//
//   POST /api/llm/generate            (@fastify/otel: request span, then its handler span)
//     chat <model>                    gen_ai.* usage, finish reason, slot
//       llm.queue                     admission: waiting for a slot
//       llm.prompt                    prompt processing until the first token: prompt and cached tokens
//       llm.generate                  sampling the answer: tokens, finish reason
//   POST /api/llm/embed
//     embeddings <model> batch        one decode batch (inputs of concurrent requests share it)
import { SpanKind, SpanStatusCode, trace, type Attributes, type Context, type HrTime, context as otelContext } from "@opentelemetry/api";
import type { GenerationResult } from "../engine/chat/types.js";
import type { Engines } from "../service.js";

const tracer = trace.getTracer("bora-llm-engine");

// GenAI semantic conventions (incubating, so spelled out here rather than imported, as OpenTelemetry advises).
export const ATTR = {
  operation: "gen_ai.operation.name",
  provider: "gen_ai.provider.name",
  model: "gen_ai.request.model",
  inputTokens: "gen_ai.usage.input_tokens",
  cachedInputTokens: "gen_ai.usage.cache_read.input_tokens",
  outputTokens: "gen_ai.usage.output_tokens",
  finishReasons: "gen_ai.response.finish_reasons",
  // This service's own.
  slot: "bora.slot",
  evaluatedTokens: "bora.evaluated_tokens",
  batchInputs: "bora.batch.inputs",
  batchTokens: "bora.batch.tokens",
} as const;

const PROVIDER = "llama.cpp";

/** Subscribes to every served engine; spans are made only inside a traced request (warm-up is not). */
export function traceEngines(engines: Engines): void {
  for (const served of engines.models.ofKind("chat")) {
    served.engine.onGenerationFinished((result) => recordGeneration(served.name, result));
  }
  for (const served of engines.models.ofKind("embedding")) {
    served.engine.onBatch((inputs, tokens) => startBatch("embeddings", served.name, inputs, tokens));
  }
  for (const served of engines.models.ofKind("rerank")) {
    served.engine.onBatch((inputs, tokens) => startBatch("rerank", served.name, inputs, tokens));
  }
}

/**
 * A performance.now() reading as an absolute time. Given a number, the SDK re-anchors each span on Date.now()
 * (millisecond steps), which can put a child before its parent; one base keeps the spans in order.
 */
function hrTime(performanceMs: number): HrTime {
  const epochMs = performance.timeOrigin + performanceMs;
  const seconds = Math.floor(epochMs / 1000);
  return [seconds, Math.round((epochMs - seconds * 1000) * 1e6)];
}

/** The active context when it holds a recording span (a traced request), else null. */
function tracedContext(): Context | null {
  const active = otelContext.active();
  return trace.getSpan(active)?.isRecording() === true ? active : null;
}

/**
 * Called as the generation finishes, inside the request's async context: `totalMs` counts from admission
 * start (the prepared request) to now, `queueMs` the wait for a slot, `firstTokenMs` from the slot to the
 * first token.
 */
export function recordGeneration(model: string, result: GenerationResult, endMs = performance.now()): void {
  const parent = tracedContext();
  if (parent === null) return;
  const { queueMs, firstTokenMs, totalMs } = result.timings;
  const startMs = endMs - totalMs;
  const admittedMs = startMs + queueMs;
  const firstTokenAtMs = firstTokenMs === null ? endMs : Math.min(endMs, admittedMs + firstTokenMs);
  const [start, admitted, firstToken, finished] = [hrTime(startMs), hrTime(admittedMs), hrTime(firstTokenAtMs), hrTime(endMs)];
  const common: Attributes = { [ATTR.model]: model, [ATTR.slot]: result.slot };
  const chat = tracer.startSpan(`chat ${model}`, {
    kind: SpanKind.INTERNAL, startTime: start,
    attributes: {
      ...common, [ATTR.operation]: "chat", [ATTR.provider]: PROVIDER,
      [ATTR.inputTokens]: result.promptTokens, [ATTR.cachedInputTokens]: result.cachedPromptTokens,
      [ATTR.outputTokens]: result.tokensGenerated, [ATTR.finishReasons]: [result.finishReason],
      [ATTR.evaluatedTokens]: result.evaluatedTokens,
    },
  }, parent);
  const inChat = trace.setSpan(parent, chat);
  tracer.startSpan("llm.queue", { startTime: start, attributes: { [ATTR.model]: model } }, inChat).end(admitted);
  tracer.startSpan("llm.prompt", {
    startTime: admitted,
    attributes: { ...common, [ATTR.inputTokens]: result.promptTokens, [ATTR.cachedInputTokens]: result.cachedPromptTokens },
  }, inChat).end(firstToken);
  tracer.startSpan("llm.generate", {
    startTime: firstToken,
    attributes: { ...common, [ATTR.outputTokens]: result.tokensGenerated, [ATTR.finishReasons]: [result.finishReason] },
  }, inChat).end(finished);
  chat.end(finished);
}

/** A decode batch's span, started now under the request of its first input; ended by the returned callback. */
export function startBatch(operation: "embeddings" | "rerank", model: string, inputs: number, tokens: number): ((failed: boolean) => void) | undefined {
  const parent = tracedContext();
  if (parent === null) return undefined;
  const span = tracer.startSpan(`${operation} ${model} batch`, {
    attributes: {
      [ATTR.operation]: operation, [ATTR.provider]: PROVIDER, [ATTR.model]: model,
      [ATTR.batchInputs]: inputs, [ATTR.batchTokens]: tokens, [ATTR.inputTokens]: tokens,
    },
  }, parent);
  return (failed) => {
    if (failed) span.setStatus({ code: SpanStatusCode.ERROR, message: "decode failed" });
    span.end();
  };
}
