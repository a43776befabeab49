// GET /api/status: a thin read of the service state and the engines' own describe()/stats(). Answers
// while the models load too (status "loading", no model sections), so a page can show progress.
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { ServedModel } from "../../engine/registry.js";
import type { ServiceState } from "../../service.js";
import { useApiErrors } from "../errors.js";
import { StatusResponseSchema, type StatusResponse } from "../schemas/status.js";

export const statusRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (app, { state }) => {
  // The service's own page reads it: the seed API's shape (a 401 included).
  useApiErrors(app, "seed");
  app.get("/api/status", {
    schema: {
      summary: "Models, backend, threads, GPU layers, slots and queue",
      tags: ["operations"],
      response: { 200: StatusResponseSchema },
    },
  }, async (): Promise<StatusResponse> => {
    const engines = state.loaded();
    const body: StatusResponse = { status: state.status, uptime_s: Math.round((Date.now() - state.startedAt) / 1000) };
    if (state.bindingStatus !== null) body.binding = state.bindingStatus();
    if (engines === null) return body;
    if (engines.runtime) {
      body.runtime = { backend: engines.runtime.backend, threads: engines.runtime.cpu.threads, threads_source: engines.runtime.cpu.source };
    }
    const chat = engines.chat.describe();
    const stats = engines.chat.stats();
    body.chat = {
      model: chat.model,
      gpu_layers: chat.gpuLayers,
      threads: chat.threads,
      ...(chat.threadsActive === undefined ? {} : { threads_active: chat.threadsActive }),
      context_per_slot: chat.contextPerSlot,
      kv_cache_type: chat.kvCacheType,
      flash_attention: chat.flashAttention,
      context_memory_per_slot_mib: chat.contextMemoryPerSlotMiB,
      slots_total: stats.slotsTotal,
      slots_busy: stats.slotsBusy,
      queued: stats.queued,
      queue_capacity: stats.queueCapacity,
      slots: engines.chat.slotsSnapshot().map((s) => ({ id: s.id, busy: s.busy, cached_tokens: s.cachedTokens })),
    };
    const embed = engines.embed.describe();
    body.embedding = { model: embed.model, backend: embed.backend, dimension: embed.dimension, max_tokens_per_text: embed.maxTokensPerText };
    body.models = engines.models.list().map((m) => ({
      name: m.name,
      kind: m.kind,
      aliases: [...m.aliases],
      default: m.isDefault,
      architecture: m.details.architecture,
      quantization: m.details.quantization,
      file_bytes: m.details.fileBytes,
      weights_bytes: m.memory.weightsBytes,
      rss_growth_bytes: m.memory.rssGrowthBytes,
      load_ms: Math.round(m.engine.loadMs),
      ...kindFields(m),
    }));
    return body;
  });
};

/** What each kind adds to its entry in `models`. */
function kindFields(m: ServedModel): Partial<NonNullable<StatusResponse["models"]>[number]> {
  if (m.kind === "embedding") {
    const d = m.engine.describe();
    const prompts = Object.keys(m.prompts.prompts).length > 0 ? { prompts: { ...m.prompts.prompts }, input_types: { ...m.prompts.inputTypes } as Record<string, string> } : {};
    return { backend: d.backend, dimension: d.dimension, max_tokens: d.maxTokensPerText, ...prompts };
  }
  if (m.kind === "rerank") return m.engine.maxTokensPerPair === undefined ? {} : { max_tokens: m.engine.maxTokensPerPair };
  return {};
}
