// Server-sent events and client-disconnect detection, shared by both APIs' streaming routes.
import type { FastifyReply } from "fastify";
import { EngineError } from "../engine/errors.js";
import { drainFailure, toErrorPayload, type ErrorPayload } from "./errors.js";

/**
 * Aborts when the client goes away before the response is complete, so generation stops within one
 * token and the slot is freed. (The request's own 'close' fires when its body is read, so the
 * response's is the one to watch.) Also aborts when the service's drain deadline passes.
 */
export function clientDisconnectSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const drainDeadline = reply.server.drainDeadline;
  if (drainDeadline.aborted) controller.abort(drainDeadline.reason);
  else drainDeadline.addEventListener("abort", () => controller.abort(drainDeadline.reason), { once: true, signal: controller.signal });
  const onClose = () => {
    if (!reply.raw.writableFinished) controller.abort(new Error("client disconnected"));
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
