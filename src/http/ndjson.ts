// Newline-delimited JSON responses (Ollama's streaming): one JSON object a line, flushed as written.
import type { FastifyReply } from "fastify";

export type NdjsonStream = {
  /** Writes one object as one line; returns false once the client is gone. */
  send(data: unknown): boolean;
  end(): void;
};

export function startNdjson(reply: FastifyReply): NdjsonStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "Content-Type": "application/x-ndjson",
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",
  });
  res.flushHeaders();
  const write = (chunk: string) => !res.destroyed && !res.writableEnded && (res.write(chunk), true);
  return {
    send: (data) => write(`${JSON.stringify(data)}\n`),
    end: () => {
      if (!res.writableEnded) res.end();
    },
  };
}
