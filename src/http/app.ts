// Builds the Fastify app (no port): tests inject into it, main.ts listens with it.
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Logger } from "pino";
import type { ServiceState } from "../service.js";
import { installErrorHandling } from "./errors.js";
import { installMetrics } from "./metrics.js";
import { healthRoutes } from "./routes/health.js";
import { llmRoutes } from "./routes/llm.js";
import { openaiRoutes } from "./routes/openai.js";
import { ollamaRoutes } from "./routes/ollama.js";
import { tokenizeRoutes } from "./routes/tokenize.js";
import { completionsRoutes } from "./routes/completions.js";

export type AppOptions = {
  state: ServiceState;
  bodyLimitBytes: number;
  logger: Logger | false;
};

export async function buildApp({ state, bodyLimitBytes, logger }: AppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    ...(logger === false ? { logger: false } : { loggerInstance: logger as FastifyBaseLogger }),
    bodyLimit: bodyLimitBytes,
    // Fastify's own per-request lines are replaced by the onResponse line below.
    logController: new LogController({ disableRequestLogging: true }),
    ajv: {
      // The schema is the contract: no silent coercion ("12" is not 12, 5 is not "5") and unknown
      // fields are reported, not stripped.
      customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false, useDefaults: true },
    },
  });

  // Every endpoint takes JSON: any other body type is a 415, not a string that fails validation.
  app.removeContentTypeParser("text/plain");
  installErrorHandling(app);
  const probes = new Set(["/health", "/ready", "/metrics"]);
  app.addHook("onResponse", async (request, reply) => {
    // Method, path, status and time only: never a body, never user text. Probes (polled by load
    // balancers many times a second) only at debug.
    const url = request.routeOptions.url ?? "unknown";
    const line = { method: request.method, url, status: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    if (probes.has(url)) request.log.debug(line, "request");
    else request.log.info(line, "request");
  });

  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: { title: "Bora LLM service", version: "0.1.0", description: "Qwen3 chat and MiniLM embeddings over llama.cpp (node-llama-cpp). The seed API and an OpenAI-compatible API over the same engine." },
    },
  });
  await app.register(swaggerUi, { routePrefix: "/docs" });

  installMetrics(app, state);
  await app.register(healthRoutes, { state });
  await app.register(llmRoutes, { state });
  await app.register(openaiRoutes, { state });
  await app.register(ollamaRoutes, { state });
  await app.register(tokenizeRoutes, { state });
  await app.register(completionsRoutes, { state });
  return app;
}
