// One request lifecycle for every retrieval route (embeddings, rerank and tokenize, on every API), the
// counterpart of generation.ts: the model is resolved before the handler (models.ts); the engine admits
// the request into its model's bounded, fair queue (429 + Retry-After beyond it, 503 while loading or
// draining: tokenBatchQueue.ts); and the request's signal ends it when the client leaves, the drain
// deadline passes, or its own deadline does (504). An API only builds the engine call and formats.
//
//   app.post("/my/embed", { schema, config: { model: { kind: "embedding" } } }, (request, reply) =>
//     serveRetrieval(reply, (signal) => modelOf(request, "embedding").engine.embed(texts, { signal })).then(format));
import type { FastifyReply } from "fastify";
import { EngineError } from "../engine/errors.js";
import { clientDisconnectSignal } from "./streaming.js";

declare module "fastify" {
  interface FastifyInstance {
    /** Deadline of a retrieval request from its arrival, waiting included (RETRIEVAL_TIMEOUT_MS). */
    retrievalTimeoutMs: number;
  }
}

const deadlineError = (timeoutMs: number) => new EngineError("deadline_exceeded",
  `The request did not finish within its deadline of ${timeoutMs} ms (RETRIEVAL_TIMEOUT_MS); its texts still waiting were dropped.`, 504);

/**
 * Aborts when the client leaves (499, nobody listening), at the drain deadline (503), or at the request's
 * deadline, counted from its arrival (504). The timer is cleared when the response closes, however it ends.
 */
export function retrievalSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const client = clientDisconnectSignal(reply);
  const timeoutMs = reply.server.retrievalTimeoutMs;
  const onClient = () => controller.abort(client.reason);
  // A response closed already (the client left while its body was read) fires no 'close' again: no timer to leak.
  if (reply.raw.closed) {
    controller.abort(client.aborted ? client.reason : new EngineError("cancelled", "The client disconnected.", 499));
    return controller.signal;
  }
  if (client.aborted) onClient();
  else client.addEventListener("abort", onClient, { once: true });
  const timer = setTimeout(() => controller.abort(deadlineError(timeoutMs)), Math.max(0, timeoutMs - reply.elapsedTime));
  reply.raw.once("close", () => {
    clearTimeout(timer);
    client.removeEventListener("abort", onClient);
  });
  return controller.signal;
}

/**
 * Runs one retrieval request's engine work under its signal. A result that arrives past the deadline or
 * after the client left (work the engine could not interrupt: a tokenization on the event loop, where no
 * timer fires, or a decode already running) is dropped for that error, so no request answers late.
 */
export async function serveRetrieval<T>(reply: FastifyReply, work: (signal: AbortSignal) => Promise<T> | T): Promise<T> {
  const signal = retrievalSignal(reply);
  const check = () => {
    signal.throwIfAborted();
    if (reply.elapsedTime > reply.server.retrievalTimeoutMs) throw deadlineError(reply.server.retrievalTimeoutMs);
  };
  check();
  const result = await work(signal);
  check();
  return result;
}
