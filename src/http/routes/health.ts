// Liveness (/health: the process answers), readiness (/ready: models loaded and warmed up).
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { Type } from "@sinclair/typebox";
import type { ServiceState } from "../../service.js";

const HealthSchema = Type.Object({ status: Type.Literal("ok"), uptime_s: Type.Number() });
const ReadySchema = Type.Object({
  status: Type.Union([Type.Literal("ready"), Type.Literal("loading"), Type.Literal("stopping"), Type.Literal("failed")]),
  models: Type.Optional(Type.Object({ chat: Type.String(), embedding: Type.String() })),
  slots: Type.Optional(Type.Object({ total: Type.Integer(), busy: Type.Integer(), queued: Type.Integer() })),
});

export const healthRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (app, { state }) => {
  // Probes carry no key: open whatever LLM_API_KEY says.
  const config = { access: "open" as const };
  app.get("/health", { config, schema: { summary: "Liveness: answers as soon as the port is open", tags: ["operations"], response: { 200: HealthSchema } } },
    async () => ({ status: "ok" as const, uptime_s: Math.round((Date.now() - state.startedAt) / 1000) }));

  app.get("/ready", {
    config,
    schema: { summary: "Readiness: 200 once both models are loaded and warmed up, else 503", tags: ["operations"], response: { 200: ReadySchema, 503: ReadySchema } },
  }, async (_request, reply) => {
    const engines = state.loaded();
    const body = {
      status: state.status,
      ...(engines ? { models: { chat: engines.chat.modelName, embedding: engines.embed.modelName } } : {}),
      ...(engines ? (({ slotsTotal, slotsBusy, queued }) => ({ slots: { total: slotsTotal, busy: slotsBusy, queued } }))(engines.chat.stats()) : {}),
    };
    if (state.status !== "ready") reply.code(503).header("Retry-After", "5");
    return body;
  });
};
