// Every failure becomes a JSON error body in the shape of the API that owns the route: each API plugin
// installs its own error handler (`useApiErrors`, Fastify encapsulation), and unknown paths get the
// not-found handler of their API's prefix (`notFoundScopes`). The process never dies of a request.
import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from "fastify";
import { EngineError } from "../engine/errors.js";
import { describeNames, ModelNotFoundError, modelNotFoundMessage, type ModelKind } from "../engine/registry.js";

/** Which error body a route speaks: the seed API's `{error: {code, message, field}}`, OpenAI's, Ollama's `{error: "…"}`, or TEI's `{error, error_type}`. */
export type ErrorStyle = "seed" | "openai" | "ollama" | "tei";

declare module "fastify" {
  interface FastifyInstance {
    /** The service's drain deadline (ServiceState.drainDeadline): aborted, it cancels running requests. */
    drainDeadline: AbortSignal;
  }
  interface FastifyContextConfig {
    /** The error shape of the API that registered the route (set by `useApiErrors`). */
    errorStyle?: ErrorStyle;
  }
}

export type ErrorPayload = { status: number; code: string; message: string; field?: string; retryAfterSeconds?: number };

/** An error a route raises with its status and code spelled out (kinds the engine has no code for: not_found, slot_busy, …). */
export class ApiError extends Error {
  override readonly name = "ApiError";
  constructor(readonly payload: ErrorPayload) {
    super(payload.message);
  }
}

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

/** What Ollama calls each kind's use: `"x" does not support embeddings`. */
const ollamaVerb: Record<ModelKind, string> = { chat: "generate", embedding: "embeddings", rerank: "rerank" };

/**
 * One status per API for a model it cannot use (docs/http-lifecycle.md, "Models"): the seed API 400,
 * OpenAI (and llama-server's, Cohere's routes) 404, TEI 422; Ollama 404 `model "x" not found`, and
 * 400 `"x" does not support …` for a model of another kind, as Ollama itself answers.
 */
function modelErrorPayload(error: ModelNotFoundError, style: ErrorStyle): ErrorPayload {
  const { requested, wanted, found, served } = error;
  if (style === "ollama") {
    if (found !== undefined && wanted !== undefined) {
      return { status: 400, code: "invalid_request", field: "model",
        message: `"${requested}" does not support ${ollamaVerb[wanted]}; use ${describeNames(served.filter((m) => m.kind === wanted), '"')}` };
    }
    return { status: 404, code: "model_not_found", field: "model",
      message: requested === undefined ? modelNotFoundMessage(requested, wanted, found, served, '"') : `model "${requested}" not found; this server serves ${describeNames(served, '"')}` };
  }
  const status = style === "seed" ? 400 : style === "tei" ? 422 : 404;
  return { status, code: "model_not_found", field: "model", message: error.message };
}

/** Classifies any error thrown while serving a request, in the terms of the route's API. */
export function toErrorPayload(error: unknown, style: ErrorStyle = "seed"): ErrorPayload {
  if (error instanceof ModelNotFoundError) return modelErrorPayload(error, style);
  if (error instanceof ApiError) return error.payload;
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

/** An error handler that answers in `style` (a function: the style depends on the request, as /rerank's TEI bodies). */
export function apiErrorHandler(style: ErrorStyle | ((request: FastifyRequest) => ErrorStyle)) {
  return (error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const chosen = typeof style === "function" ? style(request) : style;
    const payload = drainFailure(error, request.server) ?? toErrorPayload(error, chosen);
    if (payload.status >= 500 && payload.code === "internal_error") {
      // The message of a native failure carries no request text; the request's body is never logged.
      request.log.error({ err: error instanceof Error ? { type: error.name, message: error.message, stack: error.stack } : error }, "request failed");
    }
    return sendError(reply, payload, chosen);
  };
}

/**
 * Makes `style` the error shape of every route this plugin registers: its error handler (hooks' errors,
 * a 401 included, reach it too) and the route's `errorStyle` (read where no handler runs: a request
 * Node could not parse).
 */
export function useApiErrors(app: FastifyInstance, style: ErrorStyle, perRequest?: (request: FastifyRequest) => ErrorStyle): void {
  app.setErrorHandler(apiErrorHandler(perRequest ?? style));
  app.addHook("onRoute", (route) => { route.config = { ...route.config, errorStyle: style }; });
}

/** Unknown paths under each API's prefix answer in that API's shape; anything else in the seed API's. */
export const API_PREFIXES: readonly { prefix: string; style: ErrorStyle }[] = [
  { prefix: "/api/llm", style: "seed" }, { prefix: "/api", style: "ollama" }, { prefix: "/v1", style: "openai" },
];

const notFound = (style: ErrorStyle) => (request: FastifyRequest, reply: FastifyReply) =>
  sendError(reply, { status: 404, code: "not_found", message: `No route ${request.method} ${request.url.split("?")[0]}` }, style);

/** The app's own (seed-shaped) handlers, and one not-found scope per API prefix. */
export async function installErrorHandling(app: FastifyInstance): Promise<void> {
  app.setErrorHandler(apiErrorHandler("seed"));
  app.setNotFoundHandler(notFound("seed"));
  for (const { prefix, style } of API_PREFIXES) {
    await app.register(async (scope) => {
      scope.setErrorHandler(apiErrorHandler(style));
      scope.setNotFoundHandler(notFound(style));
    }, { prefix });
  }
}

const openAITypes: Record<number, string> = {
  400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
  408: "invalid_request_error", 429: "rate_limit_error", 431: "invalid_request_error", 499: "invalid_request_error", 503: "service_unavailable_error", 504: "timeout_error",
};

/** TEI's statuses: sizes (documents per request, a pair past the limit) 413, other client errors 422. */
function teiStatus(payload: ErrorPayload): number {
  if (payload.code === "context_length_exceeded" || payload.status === 413) return 413;
  return payload.status === 400 || payload.status === 404 ? 422 : payload.status;
}

export function errorBody(payload: ErrorPayload, style: ErrorStyle) {
  if (style === "ollama") return { error: payload.message };
  if (style === "tei") {
    const status = teiStatus(payload);
    return { error: payload.message, error_type: status === 413 || status === 422 ? "Validation" : status === 503 ? "Unhealthy" : status === 429 ? "Overloaded" : "Backend" };
  }
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
  const status = style === "tei" ? teiStatus(payload) : payload.status;
  return reply.code(status).type("application/json").send(errorBody(payload, style));
}

/** The path of the request line in the bytes Node could not parse (to choose the API's error shape). */
function requestLinePath(rawPacket: unknown): string {
  if (!Buffer.isBuffer(rawPacket)) return "/";
  const line = rawPacket.subarray(0, Math.min(rawPacket.length, 2048)).toString("latin1").split("\r\n", 1)[0] ?? "";
  const target = line.split(" ")[1];
  return target?.startsWith("/") ? target.split("?")[0]! : "/";
}

/** A route's URL pattern (`/slots/:id_slot`, `/v1/models/*`) as a test of a path. */
function patternTest(url: string): RegExp {
  const escaped = url.split(/(:[\w-]+|\*)/).map((part) => part === "*" ? ".*" : part.startsWith(":") ? "[^/]+" : part.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("");
  return new RegExp(`^${escaped}$`);
}

/**
 * Fastify's clientErrorHandler, made for an app: a request Node's parser refused before any route saw it
 * (a header above the size limit, a malformed request line, a header timeout) gets the error body of the
 * route its request line names (its `errorStyle`), or of its API prefix, instead of Fastify's default.
 */
export function clientErrorHandlerFor(routes: () => readonly RouteOptions[]) {
  const styleOfPath = (path: string): ErrorStyle => {
    const route = routes().find((r) => patternTest(r.url).test(path));
    return route?.config?.errorStyle ?? API_PREFIXES.find(({ prefix }) => path === prefix || path.startsWith(`${prefix}/`))?.style ?? "seed";
  };
  return (error: Error & { code?: string; rawPacket?: unknown }, socket: Duplex): void => {
    if (error.code === "ECONNRESET" || socket.destroyed) return;
    const payload: ErrorPayload = error.code === "HPE_HEADER_OVERFLOW"
      ? { status: 431, code: "headers_too_large", message: "The request's headers are larger than the server accepts (16 KiB in all); send fewer or shorter headers." }
      : error.code === "ERR_HTTP_REQUEST_TIMEOUT"
        ? { status: 408, code: "request_timeout", message: "The request did not arrive in time." }
        : { status: 400, code: "bad_request", message: "The request is not valid HTTP." };
    if (socket.writable) {
      const body = JSON.stringify(errorBody(payload, styleOfPath(requestLinePath(error.rawPacket))));
      socket.write(`HTTP/1.1 ${payload.status} ${STATUS_CODES[payload.status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `Content-Type: application/json\r\nConnection: close\r\n\r\n${body}`);
    }
    socket.destroy();
  };
}
