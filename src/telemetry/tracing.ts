// OpenTelemetry tracing, on only when the standard OTEL_* variables ask for an exporter. Off, nothing of the
// SDK is loaded and the API stays a no-op: no plugin, no hook, no span, no log field. On, the official
// NodeSDK reads every OTEL_* variable itself (endpoint, protocol, headers, sampler, propagators, resource).
// Depth: docs/operating.md.
import { trace, type Span } from "@opentelemetry/api";
import type { FastifyInstance, FastifyPluginAsync } from "fastify";
import type { Logger } from "pino";

/** What main.ts and the app need from a started SDK. */
export type Tracing = {
  /** Registered first in buildApp: request spans (@fastify/otel) and trace ids on every request log line. */
  plugin: FastifyPluginAsync;
  /** Flushes the spans still batched, then stops the exporter. */
  shutdown(): Promise<void>;
};

type Env = Record<string, string | undefined>;

/** The service name when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one. */
export const DEFAULT_SERVICE_NAME = "bora-llm";

/** Probes are polled many times a second by load balancers and kubelets: not worth a trace each. */
const UNTRACED_PATHS = new Set(["/health", "/ready", "/metrics"]);

/**
 * Why tracing is off, or null when it is on. On when an OTLP endpoint is set or OTEL_TRACES_EXPORTER names
 * an exporter, and OTEL_SDK_DISABLED is not true: without either the SDK would export to localhost:4318,
 * which nobody asked for.
 */
export function tracingOffReason(env: Env = process.env): string | null {
  if ((env["OTEL_SDK_DISABLED"] ?? "").trim().toLowerCase() === "true") return "OTEL_SDK_DISABLED=true";
  const exporters = (env["OTEL_TRACES_EXPORTER"] ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (exporters.includes("none")) return "OTEL_TRACES_EXPORTER=none";
  if (exporters.length > 0) return null;
  if (nonEmpty(env["OTEL_EXPORTER_OTLP_ENDPOINT"]) || nonEmpty(env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"])) return null;
  return "no OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER";
}

const nonEmpty = (value: string | undefined) => value !== undefined && value.trim() !== "";

/** Starts the SDK when the environment asks for it; null (and nothing loaded) when it does not. */
export async function startTracing(log: Logger, env: Env = process.env): Promise<Tracing | null> {
  const off = tracingOffReason(env);
  if (off !== null) {
    log.debug({ reason: off }, "tracing off");
    return null;
  }
  const [{ NodeSDK }, { FastifyOtelInstrumentation }] = await Promise.all([import("@opentelemetry/sdk-node"), import("@fastify/otel")]);
  const fastifyOtel = new FastifyOtelInstrumentation({
    // One request span and one handler span per request; a span per lifecycle hook is noise here.
    instrumentHooks: false,
    ignorePaths: ({ url }) => UNTRACED_PATHS.has(url.split("?")[0]!),
    // HTTP semantic conventions name a server span "METHOD route".
    requestHook: (span, request) => span.updateName(`${request.method} ${request.routeOptions.url ?? request.url.split("?")[0]}`),
  });
  const namesService = nonEmpty(env["OTEL_SERVICE_NAME"]) || /(^|,)\s*service\.name\s*=/.test(env["OTEL_RESOURCE_ATTRIBUTES"] ?? "");
  const sdk = new NodeSDK({
    instrumentations: [fastifyOtel],
    ...(namesService ? {} : { serviceName: DEFAULT_SERVICE_NAME }),
    // Traces only, unless the operator asks for more: metrics are Prometheus' (/metrics), logs are stdout JSON.
    ...(nonEmpty(env["OTEL_METRICS_EXPORTER"]) ? {} : { metricReaders: [] }),
    ...(nonEmpty(env["OTEL_LOGS_EXPORTER"]) ? {} : { logRecordProcessors: [] }),
  });
  sdk.start();
  log.info({ endpoint: env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] ?? env["OTEL_EXPORTER_OTLP_ENDPOINT"] ?? null,
    protocol: env["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] ?? env["OTEL_EXPORTER_OTLP_PROTOCOL"] ?? "http/protobuf" }, "tracing on (OpenTelemetry, OTLP)");

  const plugin: FastifyPluginAsync = async (app) => {
    await app.register(fastifyOtel.plugin());
    bindTraceIdsToRequestLogs(app);
  };
  // Registered without encapsulation (fastify-plugin's skip-override), so its hooks reach every route.
  (plugin as unknown as Record<symbol, boolean>)[Symbol.for("skip-override")] = true;
  return { plugin, shutdown: () => sdk.shutdown() };
}

/**
 * Every line logged through request.log (the "request" line included) carries the request span's
 * trace_id and span_id, the field names of OpenTelemetry's pino instrumentation. A child logger bound once
 * per request: the instrumentation's mixin reads the active context per line, which Fastify does not keep
 * across body parsing and response hooks, and it needs an ESM loader hook before pino is imported.
 */
function bindTraceIdsToRequestLogs(app: FastifyInstance): void {
  app.addHook("onRequest", async (request, reply) => {
    const otel = request.opentelemetry();
    const span: Span | undefined = otel.instrumented && otel.context ? trace.getSpan(otel.context) : undefined;
    const ids = span?.spanContext();
    if (ids === undefined || !trace.isSpanContextValid(ids)) return;
    const bound = request.log.child({ trace_id: ids.traceId, span_id: ids.spanId, trace_flags: `0${ids.traceFlags.toString(16)}` });
    request.log = bound;
    reply.log = bound;
  });
}
