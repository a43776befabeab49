// One request lifecycle for every generating route (seed /api/llm/generate, OpenAI chat and text
// completions, Ollama chat and generate): the model resolved before the handler (models.ts), admit,
// start the stream, forward deltas, finish, map errors. An API only supplies a formatter; the order of
// the steps lives here, once.
//
// How an API plugs in (llama-server's one completion handler with a format flag; Ollama's OpenAI
// layer in front of one chat handler):
//
//   app.post("/my/route", { schema, config: { model: { kind: "chat" } } }, (request, reply) => serveGeneration(reply, {
//     stream: request.body.stream === true,
//     style: "openai",                      // the error body of stream events (errors.ts) and the stream framing
//     request: (chat) => ({ ...the engine's GenerateRequest, built from the body... }),
//     format: (chat) => ({                  // a fresh formatter per request (it may hold state)
//       opening: () => [...events before the first delta],
//       delta: (d) => [...events for one delta],
//       closing: (r) => [...events after the last delta],
//       response: (r) => unstreamedBody,
//     }),
//   }));
//
// Guarantees: every failure before the first byte (not ready, unknown model, validation, prompt
// too long, grammar, tool schema, queue full, deadline or shutdown while queued) is a real HTTP
// status with the API's error body and headers (Retry-After included), streamed or not: the
// response starts only once a slot is taken. Failures after the first byte are one error event in
// the stream. The per-request abort wiring is undone when the response closes, however it ends.
import type { FastifyReply } from "fastify";
import type { ChatEngine } from "../engine/chat/engine.js";
import type { GenerateRequest, GenerationDelta, GenerationResult } from "../engine/chat/types.js";
import { errorBody, type ErrorPayload, type ErrorStyle } from "./errors.js";
import { modelOf } from "./models.js";
import { startNdjson } from "./ndjson.js";
import { clientDisconnectSignal, startSse, streamFailure } from "./streaming.js";

/** One event of a streamed answer: a JSON object (an SSE `event:` name optional), or a raw SSE `data:` line. */
export type StreamEvent = { data: unknown; event?: string } | { raw: string };

/** What an API decides: how its wire looks. Everything else is the lifecycle's. */
export type GenerationFormatter<Body> = {
  /** Events written as the stream starts (after admission), e.g. OpenAI's role chunk. */
  opening?(): StreamEvent[];
  /** Events for one delta of a streamed answer (none for a delta this API does not show). */
  delta(delta: GenerationDelta): StreamEvent[];
  /** Events that end a successful stream (the final chunk, usage, `[DONE]`). */
  closing(result: GenerationResult): StreamEvent[];
  /** Sees every delta of an unstreamed answer (to collect logprobs, say). */
  collect?(delta: GenerationDelta): void;
  /** The body of an unstreamed answer. */
  response(result: GenerationResult): Body;
  /** The event(s) a stream ends with when it fails after the first byte (Responses: error, response.failed); default: the API's error body. */
  failure?(payload: ErrorPayload): StreamEvent | StreamEvent[];
  /** Restates an engine error in this API's terms (Ollama says `format` where the engine says response_format). */
  translateError?(error: unknown): unknown;
};

export type GenerationSpec<Body> = {
  stream: boolean;
  /** The API's error body shape in stream events; also its stream framing (Ollama: NDJSON, the others: SSE). */
  style: ErrorStyle;
  /** The engine's request, built from the body (may throw a 400 naming a field). */
  request(chat: ChatEngine): Omit<GenerateRequest, "signal" | "onDelta">;
  format(chat: ChatEngine): GenerationFormatter<Body>;
};

/** Runs one generating request through the lifecycle; returns the unstreamed body, or the hijacked reply. */
export async function serveGeneration<Body>(reply: FastifyReply, spec: GenerationSpec<Body>): Promise<Body | FastifyReply> {
  const chat = modelOf(reply.request, "chat").engine;
  const format = spec.format(chat);
  const translate = (error: unknown) => format.translateError?.(error) ?? error;
  const signal = clientDisconnectSignal(reply);
  // Admission, part one: prompt length, grammar, tool schema, impossible combinations (a 4xx throws).
  const prepared = await chat.prepare({ ...spec.request(chat), signal }).catch((error: unknown) => { throw translate(error); });

  if (!spec.stream) {
    try {
      return format.response(await chat.run(prepared, format.collect));
    } catch (error) {
      throw translate(error);
    }
  }

  // Admission, part two: a slot (or a 429 / 503 / 504 while queued) before the response starts.
  const framing = spec.style === "ollama" ? "ndjson" : "sse";
  let out: { write(event: StreamEvent): void; end(): void } | null = null;
  const write = (events: readonly StreamEvent[]) => { for (const event of events) out?.write(event); };
  try {
    const result = await chat.run(prepared, (d) => write(format.delta(d)), () => {
      out = openStream(reply, framing);
      write(format.opening?.() ?? []);
    });
    write(format.closing(result));
  } catch (error) {
    if (out === null) throw translate(error);
    const payload = streamFailure(translate(error), reply);
    if (payload) write([format.failure?.(payload) ?? defaultFailure(payload, spec.style)].flat());
  } finally {
    (out as { end(): void } | null)?.end();
  }
  return reply;
}

function defaultFailure(payload: ErrorPayload, style: ErrorStyle): StreamEvent {
  if (style === "seed") return { data: { error: { code: payload.code, message: payload.message } }, event: "error" };
  return { data: errorBody(payload, style) };
}

function openStream(reply: FastifyReply, framing: "sse" | "ndjson"): { write(event: StreamEvent): void; end(): void } {
  if (framing === "ndjson") {
    const ndjson = startNdjson(reply);
    return { write: (e) => void ("raw" in e ? undefined : ndjson.send(e.data)), end: () => ndjson.end() };
  }
  const sse = startSse(reply);
  return { write: (e) => void ("raw" in e ? sse.sendRaw(e.raw) : sse.send(e.data, e.event)), end: () => sse.end() };
}
