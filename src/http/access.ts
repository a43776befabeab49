// Who may call the service: CORS for browsers (@fastify/cors) and an optional API key
// (@fastify/bearer-auth, constant-time compare). With keys configured every route needs one, except
// those whose config says `access: "open"` (the probes, the OpenAPI page, the playground's static files:
// the page asks for the key and sends it) and /metrics unless METRICS_AUTH. A path no route serves is a
// 404 with or without a key (nothing there to protect).
import bearerAuth from "@fastify/bearer-auth";
import cors, { type FastifyCorsOptions } from "@fastify/cors";
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { Config } from "../config.js";
import { ApiError } from "./errors.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** `open`: no key needed; `metrics`: a key only with METRICS_AUTH. Unset: the key is needed (when keys are configured). */
    access?: "open" | "metrics";
  }
}

export type AccessOptions = {
  /** Accepted keys; none: no key is needed. */
  apiKeys: readonly string[];
  /** Allowed browser origins; `*` allows any origin but never with credentials. */
  corsOrigins: readonly string[];
  /** Whether /metrics needs a key as well. */
  metricsAuth: boolean;
};

export const DEFAULT_ACCESS: AccessOptions = { apiKeys: [], corsOrigins: ["http://localhost:8000"], metricsAuth: false };

export const accessFrom = (config: Config): AccessOptions =>
  ({ apiKeys: config.apiKeys, corsOrigins: config.corsOrigins, metricsAuth: config.metricsAuth });

/** Whether a request needs the key (when keys are configured): every route's but the open ones. */
export function needsKey(request: FastifyRequest, metricsAuth: boolean): boolean {
  if (request.method === "OPTIONS" || request.is404) return false;
  const access = request.routeOptions.config.access;
  return access === undefined || (access === "metrics" && metricsAuth);
}

/** Makes every route this plugin registers open (no key): the probes, the docs, static files. */
export function openRoutes(app: FastifyInstance): void {
  app.addHook("onRoute", (route) => { route.config = { ...route.config, access: route.config?.access ?? "open" }; });
}

/** Headers a browser may send and read. */
const ALLOWED_HEADERS = ["content-type", "authorization", "x-api-key", "x-request-id"];
const EXPOSED_HEADERS = ["x-request-id", "retry-after"];

/**
 * Per-request CORS options: a listed origin is reflected with credentials; with `*` configured any
 * other origin gets `*` without credentials (browsers refuse `*` with credentials, and allowing it
 * would hand every site the user's cookies); an unlisted origin gets no Allow-Origin at all, so the
 * browser refuses the response. The preflight is answered (204) either way.
 */
export function corsOptionsFor(origin: string | undefined, allowed: readonly string[]): FastifyCorsOptions {
  const common: FastifyCorsOptions = {
    methods: ["GET", "POST", "OPTIONS"], allowedHeaders: ALLOWED_HEADERS, exposedHeaders: EXPOSED_HEADERS, maxAge: 600,
  };
  const listed = allowed.filter((o) => o !== "*");
  if (origin !== undefined && listed.includes(origin)) return { ...common, origin, credentials: true };
  if (allowed.includes("*")) return { ...common, origin: "*", credentials: false };
  // An array reflects only a matching origin: none matches here, so no Allow-Origin is sent (an
  // `origin: false` would skip the preflight answer altogether and leave it to the 404 handler).
  return { ...common, origin: [...listed], credentials: false };
}

/** The key a client sent: `Authorization: Bearer <key>` (OpenAI clients) or `x-api-key: <key>`. */
function presentedKeyHeader(request: FastifyRequest): void {
  const apiKey = request.headers["x-api-key"];
  // bearer-auth reads the Authorization header only; x-api-key is the same key under another name.
  if (request.headers.authorization === undefined && typeof apiKey === "string" && apiKey !== "") {
    request.raw.headers.authorization = `Bearer ${apiKey}`;
  }
}

export async function installAccess(app: FastifyInstance, options: AccessOptions): Promise<void> {
  // CORS first: its onRequest hook answers preflights before the key is checked (browsers never send
  // credentials on a preflight) and adds its headers to 401s so the page can read them.
  await app.register(cors, {
    hook: "onRequest",
    delegator: (request, callback) => callback(null, corsOptionsFor(request.headers.origin, options.corsOrigins)),
  });

  if (options.apiKeys.length === 0) return;
  await app.register(bearerAuth, {
    keys: new Set(options.apiKeys),
    // Case-insensitive "Bearer" (RFC 6749), as clients spell it either way.
    specCompliance: "rfc6749",
    addHook: false,
    // A wrong key is the client's mistake, not the service's: no error-level line for it.
    verifyErrorLogLevel: "info",
  });
  const verify = app.verifyBearerAuth!;
  app.addHook("onRequest", (request, reply, done) => {
    if (!needsKey(request, options.metricsAuth)) return done();
    presentedKeyHeader(request);
    verify(request, reply, (error) => {
      if (error === undefined) return done();
      reply.header("WWW-Authenticate", 'Bearer realm="bora-llm-service"');
      const missing = request.headers.authorization === undefined;
      // The route's own error handler gives the 401 its API's shape.
      done(new ApiError({
        status: 401,
        code: missing ? "missing_api_key" : "invalid_api_key",
        message: missing
          ? "An API key is required: send Authorization: Bearer <key> or x-api-key: <key>."
          : "The API key is not valid.",
      }));
    });
  });
}
