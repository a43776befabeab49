// Prometheus metrics at /metrics (prom-client): HTTP traffic, tokens, time to first token, slots and
// queue. Gauges are read from the engines when scraped; counters are fed by the engine's events.
import { getEventListeners } from "node:events";
import type { FastifyInstance } from "fastify";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { ServiceState } from "../service.js";
import { installPromptCacheMetrics } from "./promptCacheMetrics.js";

export function installMetrics(app: FastifyInstance, state: ServiceState): void {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "bora_" });
  const requests = new Counter({ name: "bora_http_requests_total", help: "HTTP requests by route and status", labelNames: ["route", "status"], registers: [registry] });
  const duration = new Histogram({
    name: "bora_http_request_duration_seconds", help: "HTTP request duration", labelNames: ["route"], registers: [registry],
    buckets: [0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
  });
  const promptTokens = new Counter({ name: "bora_prompt_tokens_total", help: "Prompt tokens of finished generations", registers: [registry] });
  const cachedTokens = new Counter({ name: "bora_prompt_tokens_cached_total", help: "Prompt tokens reused from the prompt cache (any tier: slot, copy, host memory, disk)", registers: [registry] });
  const generatedTokens = new Counter({ name: "bora_generated_tokens_total", help: "Tokens generated", registers: [registry] });
  const firstToken = new Histogram({
    name: "bora_time_to_first_token_seconds", help: "Queue wait plus prompt processing until the first token", registers: [registry],
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30],
  });
  new Gauge({
    name: "bora_slots_busy", help: "Generation slots in use", registers: [registry],
    collect() { this.set(state.loaded()?.chat.stats().slotsBusy ?? 0); },
  });
  new Gauge({
    name: "bora_slots_total", help: "Generation slots", registers: [registry],
    collect() { this.set(state.loaded()?.chat.stats().slotsTotal ?? 0); },
  });
  new Gauge({
    name: "bora_queue_waiting", help: "Generation requests waiting for a slot", registers: [registry],
    collect() { this.set(state.loaded()?.chat.stats().queued ?? 0); },
  });
  const embedBatchTexts = new Histogram({
    name: "bora_embed_batch_texts", help: "Texts per embedding decode (texts of concurrent requests share a decode), by embedding model", labelNames: ["model"], registers: [registry],
    buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256],
  });
  new Gauge({
    name: "bora_retrieval_queued_texts", help: "Texts (embedding inputs, rerank pairs) admitted and not yet answered, per embedding or rerank model; beyond RETRIEVAL_QUEUE_TEXTS requests get 429", labelNames: ["model", "kind"], registers: [registry],
    collect() {
      for (const m of state.loaded()?.models.list() ?? []) if (m.kind !== "chat") this.set({ model: m.name, kind: m.kind }, m.engine.queueStats().inputs);
    },
  });
  // Per served model: a model label (its name) and its kind, one series per model however many are served.
  new Gauge({
    name: "bora_model_load_seconds", help: "Time to load each model's engine at start", labelNames: ["model", "kind"], registers: [registry],
    collect() {
      for (const m of state.loaded()?.models.list() ?? []) this.set({ model: m.name, kind: m.kind }, m.engine.loadMs / 1000);
    },
  });
  new Gauge({
    name: "bora_model_weights_bytes", help: "RAM each model's weights take once read (llama.cpp's estimate)", labelNames: ["model", "kind"], registers: [registry],
    collect() {
      for (const m of state.loaded()?.models.list() ?? []) this.set({ model: m.name, kind: m.kind }, m.memory.weightsBytes);
    },
  });
  new Gauge({
    name: "bora_model_info", help: "1 for each served model; default=\"true\" for the one a request of its kind gets when it names none", labelNames: ["model", "kind", "default"], registers: [registry],
    collect() {
      for (const m of state.loaded()?.models.list() ?? []) this.set({ model: m.name, kind: m.kind, default: String(m.isDefault) }, 1);
    },
  });
  new Gauge({
    name: "bora_draining", help: "1 while the service drains after SIGTERM (/ready is 503, new requests are refused)", registers: [registry],
    collect() { this.set(state.draining ? 1 : 0); },
  });
  new Gauge({
    name: "bora_http_requests_in_flight", help: "Requests whose responses are still open (probes excluded)", registers: [registry],
    collect() { this.set(state.inFlight); },
  });
  new Gauge({
    name: "bora_drain_signal_listeners", help: "Abort listeners on the process-lifetime drain signal: one per running request, 0 when idle (a leak shows here)", registers: [registry],
    collect() { this.set(getEventListeners(state.drainDeadline, "abort").length); },
  });
  new Gauge({
    name: "bora_generation_engine_info", help: "1 for the generation path that runs (native slot loop or node-llama-cpp)", labelNames: ["engine", "requested"], registers: [registry],
    collect() {
      this.reset();
      const selection = state.loaded()?.chat.selection;
      if (selection) this.set({ engine: selection.kind, requested: selection.requested }, 1);
    },
  });
  new Gauge({
    name: "bora_slot_cached_tokens", help: "Tokens in each generation slot's KV cache", labelNames: ["slot"], registers: [registry],
    collect() { for (const slot of state.loaded()?.chat.slotsSnapshot() ?? []) this.set({ slot: String(slot.id) }, slot.cachedTokens); },
  });
  new Gauge({
    name: "bora_slot_decoded_tokens", help: "Tokens decoded on each generation slot since start (prompt and generated)", labelNames: ["slot"], registers: [registry],
    collect() { for (const slot of state.loaded()?.chat.slotsSnapshot() ?? []) this.set({ slot: String(slot.id) }, slot.tokensDecoded); },
  });
  new Gauge({
    name: "bora_ready", help: "1 when the models are loaded and warmed up", registers: [registry],
    collect() { this.set(state.status === "ready" ? 1 : 0); },
  });

  installPromptCacheMetrics(registry, state);

  state.whenEngines((engines) => {
    engines.chat.onGenerationFinished((r) => {
      promptTokens.inc(r.promptTokens);
      cachedTokens.inc(r.cachedPromptTokens);
      generatedTokens.inc(r.tokensGenerated);
      if (r.timings.firstTokenMs !== null) firstToken.observe((r.timings.queueMs + r.timings.firstTokenMs) / 1000);
    });
    for (const m of engines.models.ofKind("embedding")) m.engine.onBatch((texts) => embedBatchTexts.observe({ model: m.name }, texts));
  });
  app.addHook("onResponse", async (request, reply) => {
    const route = request.routeOptions.url ?? "unmatched";
    requests.inc({ route, status: String(reply.statusCode) });
    duration.observe({ route }, reply.elapsedTime / 1000);
  });

  app.get("/metrics", { config: { access: "metrics" }, schema: { summary: "Prometheus metrics", tags: ["operations"] } }, async (_request, reply) => {
    reply.type(registry.contentType);
    return registry.metrics();
  });
}
