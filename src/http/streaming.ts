// Server-sent events and client-disconnect detection, shared by both APIs' streaming routes.
import type { FastifyReply } from "fastify";
import { EngineError } from "../engine/errors.js";
import { drainFailure, toErrorPayload, type ErrorPayload } from "./errors.js";

/**
 * Aborts when the client goes away before the response is complete, so generation stops within one
 * token and the slot is freed. (The request's own 'close' fires when its body is read, so the
 * response's is the one to watch.) Also aborts when the service's drain deadline passes. The
 * listener on the drain deadline (a signal that lives as long as the process) is removed when the
 * response closes, however it ends: one left per request would pile up without bound.
 */
export function clientDisconnectSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const drainDeadline = reply.server.drainDeadline;
  const onDrainDeadline = () => controller.abort(drainDeadline.reason);
  if (drainDeadline.aborted) controller.abort(drainDeadline.reason);
  else drainDeadline.addEventListener("abort", onDrainDeadline, { once: true });
  const onClose = () => {
    drainDeadline.removeEventListener("abort", onDrainDeadline);
    if (!reply.raw.writableFinished) controller.abort(new EngineError("cancelled", "The client disconnected.", 499));
  };
  // The response's 'close' also fires when the socket dies mid-response; listening on the socket
  // itself would pile up listeners on a keep-alive connection.
  reply.raw.once("close", onClose);
  return controller.signal;
}

/**
 * What a failed stream tells its client in an `error` event: null when the client itself went away
 * (nobody is listening); a shutting_down error when the drain deadline cut it.
 */
export function streamFailure(error: unknown, reply: FastifyReply): ErrorPayload | null {
  const drained = drainFailure(error, reply.server);
  if (drained) return drained;
  if (error instanceof EngineError && error.code === "cancelled") return null;
  return toErrorPayload(error);
}

export type SseStream = {
  /** Writes one event; returns false once the client is gone. */
  send(data: unknown, event?: string): boolean;
  /** Writes a raw `data:` line (OpenAI's `[DONE]`). */
  sendRaw(data: string): boolean;
  end(): void;
};

export function startSse(reply: FastifyReply, headers: Record<string, string> = {}): SseStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache, no-transform",
    Connection: "keep-alive",
    "X-Accel-Buffering": "no",
    ...headers,
  });
  res.flushHeaders();
  const write = (chunk: string) => !res.destroyed && !res.writableEnded && (res.write(chunk), true);
  return {
    send: (data, event) => write(`${event ? `event: ${event}\n` : ""}data: ${JSON.stringify(data)}\n\n`),
    sendRaw: (data) => write(`data: ${data}\n\n`),
    end: () => {
      if (!res.writableEnded) res.end();
    },
  };
}
