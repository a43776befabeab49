// Builds the Fastify app (no port): tests inject into it, main.ts listens with it.
import { randomUUID } from "node:crypto";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type RouteOptions } from "fastify";
import type { Logger } from "pino";
import type { ServiceState } from "../service.js";
import type { Tracing } from "../telemetry/tracing.js";
import { DEFAULT_ACCESS, installAccess, openRoutes, type AccessOptions } from "./access.js";
import { clientErrorHandlerFor, installErrorHandling } from "./errors.js";
import { installMetrics } from "./metrics.js";
import { installModelResolution } from "./models.js";
import { healthRoutes } from "./routes/health.js";
import { llmRoutes } from "./routes/llm.js";
import { openaiRoutes } from "./routes/openai.js";
import { playgroundRoutes } from "./routes/playground.js";
import { statusRoutes } from "./routes/status.js";
import { ollamaRoutes } from "./routes/ollama.js";
import { tokenizeRoutes } from "./routes/tokenize.js";
import { completionsRoutes } from "./routes/completions.js";
import { rerankRoutes } from "./routes/rerank.js";
import { responsesRoutes } from "./routes/responses.js";
import type { ResponseStoreOptions } from "./responseStore.js";
import { slotsRoutes } from "./routes/slots.js";

export type AppOptions = {
  state: ServiceState;
  bodyLimitBytes: number;
  logger: Logger | false;
  /** API keys, CORS origins, /metrics access (default: no key, the seed's CORS origin). */
  access?: AccessOptions;
  /** Bounds of the Responses API's store (RESPONSES_STORE_MAX_ITEMS / _BYTES); default DEFAULT_RESPONSE_STORE. */
  responseStore?: ResponseStoreOptions;
  /** OpenTelemetry, when the OTEL_* variables turned it on (src/telemetry/tracing.ts); absent: no tracing code runs. */
  tracing?: Tracing | null;
  /** Deadline of an embedding, rerank or tokenize request (RETRIEVAL_TIMEOUT_MS); default DEFAULT_RETRIEVAL_TIMEOUT_MS. */
  retrievalTimeoutMs?: number;
};

/** LLM_REQUEST_TIMEOUT_MS's default, which RETRIEVAL_TIMEOUT_MS follows. */
export const DEFAULT_RETRIEVAL_TIMEOUT_MS = 300_000;

declare module "fastify" {
  interface FastifyInstance {
    /** Every route registered, in order (the key test walks them; a request Node could not parse finds its API's shape here). */
    registeredRoutes: readonly RouteOptions[];
  }
}

/** An incoming x-request-id is kept when it is a plausible id (it ends up in every log line). */
const REQUEST_ID = /^[\w.:@-]{1,128}$/;

export function requestIdFor(header: string | string[] | undefined): string {
  return typeof header === "string" && REQUEST_ID.test(header) ? header : randomUUID();
}

export async function buildApp({ state, bodyLimitBytes, logger, access = DEFAULT_ACCESS, responseStore, tracing, retrievalTimeoutMs = DEFAULT_RETRIEVAL_TIMEOUT_MS }: AppOptions): Promise<FastifyInstance> {
  const routes: RouteOptions[] = [];
  const app = Fastify({
    ...(logger === false ? { logger: false } : { loggerInstance: logger as FastifyBaseLogger }),
    bodyLimit: bodyLimitBytes,
    // Requests Node's parser refuses (a 20 KB header: 431) answer in the API's error shape too.
    clientErrorHandler: clientErrorHandlerFor(() => routes),
    // Fastify's own per-request lines are replaced by the onResponse line below.
    logController: new LogController({ disableRequestLogging: true }),
    // Every line logged for a request carries its id; a proxy's or client's x-request-id is honoured.
    genReqId: (req) => requestIdFor(req.headers["x-request-id"]),
    ajv: {
      // The schema is the contract: no silent coercion ("12" is not 12, 5 is not "5") and unknown
      // fields are reported, not stripped.
      customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false, useDefaults: true },
    },
  });

  // First, so that every later hook and route is inside the request span.
  if (tracing) await app.register(tracing.plugin);
  app.decorate("drainDeadline", state.drainDeadline);
  app.decorate("retrievalTimeoutMs", retrievalTimeoutMs);
  app.decorate("registeredRoutes", routes);
  // The same options object each plugin's own onRoute hooks complete (its error style, its access).
  app.addHook("onRoute", (route) => { routes.push(route); });
  // Every endpoint takes JSON: any other body type is a 415, not a string that fails validation.
  app.removeContentTypeParser("text/plain");
  await installErrorHandling(app);
  installModelResolution(app, state);
  const probes = new Set(["/health", "/ready", "/metrics"]);
  app.addHook("onRequest", async (request, reply) => {
    // On the raw response, so streamed (hijacked) replies carry it too.
    reply.raw.setHeader("x-request-id", request.id);
    // Headers only at debug (credentials redacted by the logger), never at info.
    request.log.debug({ method: request.method, url: request.url, headers: request.headers }, "request received");
    if (state.draining) reply.raw.setHeader("Connection", "close"); // keep-alive clients reconnect elsewhere
    if (probes.has(request.url.split("?")[0]!)) return;
    // A drain waits for every open response, streams included; 'close' fires however it ends.
    reply.raw.once("close", state.trackRequest());
  });
  app.addHook("onResponse", async (request, reply) => {
    // Method, path, status and time only: never a body, never user text. Probes (polled by load
    // balancers many times a second) only at debug.
    const url = request.routeOptions.url ?? "unknown";
    const line = { method: request.method, url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    if (probes.has(url)) request.log.debug(line, "request");
    else request.log.info(line, "request");
  });

  await installAccess(app, access);
  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: { title: "Bora LLM service", version: "0.1.0", description: "Qwen3 chat and MiniLM embeddings over llama.cpp (node-llama-cpp). The seed API and an OpenAI-compatible API over the same engine." },
      // With LLM_API_KEY set, the docs page offers both ways of sending the key.
      ...(access.apiKeys.length > 0 ? {
        components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" }, apiKey: { type: "apiKey", in: "header", name: "x-api-key" } } },
        security: [{ bearer: [] }, { apiKey: [] }],
      } : {}),
    },
  });
  await app.register(async (docs) => {
    openRoutes(docs);
    await docs.register(swaggerUi, { routePrefix: "/docs" });
  });

  installMetrics(app, state);
  await app.register(healthRoutes, { state });
  await app.register(llmRoutes);
  await app.register(openaiRoutes, { state });
  await app.register(statusRoutes, { state });
  await app.register(async (page) => {
    openRoutes(page);
    await page.register(playgroundRoutes);
  });
  await app.register(ollamaRoutes, { state });
  await app.register(tokenizeRoutes);
  await app.register(completionsRoutes);
  await app.register(rerankRoutes);
  await app.register(responsesRoutes, responseStore ? { store: responseStore } : {});
  await app.register(slotsRoutes, { state });
  return app;
}
