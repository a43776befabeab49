// One place turns every failure into a JSON error body; the process never dies of a request.
import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { EngineError } from "../engine/errors.js";

declare module "fastify" {
  interface FastifyInstance {
    /** The service's drain deadline (ServiceState.drainDeadline): aborted, it cancels running requests. */
    drainDeadline: AbortSignal;
  }
}

export type ErrorPayload = { status: number; code: string; message: string; field?: string; retryAfterSeconds?: number };

/** `/messages/0/content` -> `messages[0].content` */
export function fieldFromJsonPointer(pointer: string): string {
  return pointer.split("/").filter(Boolean).reduce((acc, part) => /^\d+$/.test(part) ? `${acc}[${part}]` : acc ? `${acc}.${part}` : part, "");
}

type AjvError = { instancePath: string; message?: string; keyword: string; params: Record<string, unknown> };

function describeValidation(errors: readonly AjvError[]): { field: string; message: string } {
  // Unions report one error per branch; the most specific (deepest) path says most.
  const first = [...errors].sort((a, b) => b.instancePath.length - a.instancePath.length)[0]!;
  let field = fieldFromJsonPointer(first.instancePath);
  let message = first.message ?? "is invalid";
  if (first.keyword === "required" && typeof first.params.missingProperty === "string") {
    field = field ? `${field}.${first.params.missingProperty}` : first.params.missingProperty;
    message = "is required";
  } else if (first.keyword === "additionalProperties" && typeof first.params.additionalProperty === "string") {
    field = field ? `${field}.${first.params.additionalProperty}` : first.params.additionalProperty;
    message = "is not a known field";
  } else if (first.keyword === "enum" || first.keyword === "const") {
    const allowed = errors.filter((e) => e.instancePath === first.instancePath && (e.keyword === "const" || e.keyword === "enum"))
      .flatMap((e) => e.params.allowedValue !== undefined ? [e.params.allowedValue] : (e.params.allowedValues as unknown[] | undefined) ?? []);
    message = `must be one of ${allowed.map((v) => JSON.stringify(v)).join(", ")}`;
  }
  return { field: field || "body", message: `${field || "body"} ${message}` };
}

const httpCodes: Record<string, string> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "unsupported_media_type",
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: "invalid_content_length",
  FST_ERR_CTP_BODY_TOO_LARGE: "payload_too_large",
  FST_ERR_CTP_EMPTY_JSON_BODY: "invalid_json",
  FST_ERR_CTP_INVALID_JSON_BODY: "invalid_json",
};

/** Classifies any error thrown while serving a request. */
export function toErrorPayload(error: unknown): ErrorPayload {
  if (error instanceof EngineError) {
    return { status: error.status, code: error.code, message: error.message, field: error.field, retryAfterSeconds: error.retryAfterSeconds };
  }
  const fe = error as Partial<FastifyError> & { validation?: AjvError[] };
  if (Array.isArray(fe.validation) && fe.validation.length > 0) {
    return { status: 400, code: "validation_error", ...describeValidation(fe.validation) };
  }
  if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) {
    const isJsonSyntax = error instanceof SyntaxError || fe.code === "FST_ERR_CTP_INVALID_JSON_BODY";
    const code = isJsonSyntax ? "invalid_json" : httpCodes[fe.code ?? ""] ?? "bad_request";
    const message = code === "invalid_json" ? `The body is not valid JSON: ${fe.message}`
      : code === "unsupported_media_type" ? `${fe.message}; send Content-Type: application/json`
        : fe.message ?? "Bad request";
    return { status: fe.statusCode, code, message };
  }
  return { status: 500, code: "internal_error", message: "The model failed while serving this request; see the service log." };
}

/** Which error body a route speaks: the seed API's `{error: {code, message, field}}`, OpenAI's, or Ollama's `{error: "…"}`. */
export type ErrorStyle = "seed" | "openai" | "ollama";

/** llama-server's /tokenize, /detokenize, /rerank and /slots, Cohere's /v2/rerank and the bare /responses alias answer errors as OpenAI does. */
const openAIPaths = /^\/(v1\/|v2\/rerank(\?|$)|rerank(\?|$)|tokenize(\?|$)|detokenize(\?|$)|responses(\/|\?|$)|slots(\/|\?|$))/;

export const errorStyleFor = (url: string): ErrorStyle =>
  openAIPaths.test(url) ? "openai" : url.startsWith("/api/") && !url.startsWith("/api/llm/") ? "ollama" : "seed";

/**
 * A request cancelled because the drain deadline passed: a 503 (or SSE `error`) that says so, where a
 * client disconnect would get nothing (nobody is listening) or a 499.
 */
export function drainFailure(error: unknown, server: FastifyInstance): ErrorPayload | null {
  if (!server.drainDeadline.aborted || !(error instanceof EngineError && error.code === "cancelled")) return null;
  const reason = server.drainDeadline.reason;
  return reason instanceof EngineError ? toErrorPayload(reason)
    : { status: 503, code: "shutting_down", message: "The service stopped before this request finished." };
}

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const payload = drainFailure(error, request.server) ?? toErrorPayload(error);
    if (payload.status >= 500 && payload.code === "internal_error") {
      // The message of a native failure carries no request text; the request's body is never logged.
      request.log.error({ err: error instanceof Error ? { type: error.name, message: error.message, stack: error.stack } : error }, "request failed");
    }
    return sendError(reply, payload, errorStyleFor(request.url));
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, { status: 404, code: "not_found", message: `No route ${request.method} ${request.url.split("?")[0]}` }, errorStyleFor(request.url)));
}

const openAITypes: Record<number, string> = {
  400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
  408: "invalid_request_error", 429: "rate_limit_error", 431: "invalid_request_error", 499: "invalid_request_error", 503: "service_unavailable_error", 504: "timeout_error",
};

export function errorBody(payload: ErrorPayload, style: ErrorStyle) {
  if (style === "ollama") return { error: payload.message };
  if (style === "openai") {
    return {
      error: {
        message: payload.message,
        type: openAITypes[payload.status] ?? (payload.status >= 500 ? "server_error" : "invalid_request_error"),
        param: payload.field ?? null,
        code: payload.code,
      },
    };
  }
  const error: { code: string; message: string; field?: string } = { code: payload.code, message: payload.message };
  if (payload.field !== undefined) error.field = payload.field;
  return { error };
}

export function sendError(reply: FastifyReply, payload: ErrorPayload, style: ErrorStyle = "seed"): FastifyReply {
  if (payload.retryAfterSeconds !== undefined) reply.header("Retry-After", String(payload.retryAfterSeconds));
  return reply.code(payload.status).type("application/json").send(errorBody(payload, style));
}

/** The path of the request line in the bytes Node could not parse (to choose the API's error shape). */
function requestLinePath(rawPacket: unknown): string {
  if (!Buffer.isBuffer(rawPacket)) return "/";
  const line = rawPacket.subarray(0, Math.min(rawPacket.length, 2048)).toString("latin1").split("\r\n", 1)[0] ?? "";
  const target = line.split(" ")[1];
  return target?.startsWith("/") ? target : "/";
}

/**
 * Fastify's clientErrorHandler: a request Node's parser refused before any route saw it (a header
 * above the size limit, a malformed request line, a header timeout) gets the API's own error body
 * instead of Fastify's default `{"error":"Request Header Fields Too Large",...}`.
 */
export function clientErrorHandler(error: Error & { code?: string; rawPacket?: unknown }, socket: Duplex): void {
  if (error.code === "ECONNRESET" || socket.destroyed) return;
  const payload: ErrorPayload = error.code === "HPE_HEADER_OVERFLOW"
    ? { status: 431, code: "headers_too_large", message: "The request's headers are larger than the server accepts (16 KiB in all); send fewer or shorter headers." }
    : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
      ? { status: 408, code: "request_timeout", message: "The request did not arrive in time." }
      : { status: 400, code: "bad_request", message: "The request is not valid HTTP." };
  if (socket.writable) {
    const body = JSON.stringify(errorBody(payload, errorStyleFor(requestLinePath(error.rawPacket))));
    socket.write(`HTTP/1.1 ${payload.status} ${STATUS_CODES[payload.status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Content-Type: application/json\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}
