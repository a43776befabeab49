// Reads a running service's /metrics (Prometheus text) into numbers: the soak and fuzz suites watch
// heap, RSS, handles, listeners, slots and queue of a real process through it.
export type MetricsSnapshot = Map<string, number>;

/** `name{labels} value` lines -> a map keyed by `name{labels}` (or `name`). */
export function parseMetrics(text: string): MetricsSnapshot {
  const out: MetricsSnapshot = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    const value = Number(line.slice(space + 1));
    if (Number.isFinite(value)) out.set(line.slice(0, space), value);
  }
  return out;
}

export async function readMetrics(base: string, headers: Record<string, string> = {}): Promise<MetricsSnapshot> {
  const res = await fetch(`${base}/metrics`, { headers });
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  return parseMetrics(await res.text());
}

/** The figures a leak shows in. */
export function processFigures(m: MetricsSnapshot) {
  return {
    heapUsedBytes: m.get("bora_nodejs_heap_size_used_bytes") ?? NaN,
    rssBytes: m.get("bora_process_resident_memory_bytes") ?? NaN,
    activeHandles: m.get("bora_nodejs_active_handles_total") ?? NaN,
    /** Open sockets: the clients' keep-alive connections come and go with the load, so they are counted apart. */
    socketHandles: m.get('bora_nodejs_active_handles{type="Socket"}') ?? 0,
    drainListeners: m.get("bora_drain_signal_listeners") ?? NaN,
    inFlight: m.get("bora_http_requests_in_flight") ?? NaN,
    slotsBusy: m.get("bora_slots_busy") ?? NaN,
    queued: m.get("bora_queue_waiting") ?? NaN,
    /** Embedding texts and rerank pairs queued, all models together. */
    retrievalQueued: [...m].filter(([key]) => key.startsWith("bora_retrieval_queued_texts")).reduce((sum, [, v]) => sum + v, 0),
  };
}

/** Polls until no slot is busy, nothing waits (generation or retrieval) and no response is open (besides the /metrics read itself). */
export async function waitIdle(base: string, timeoutMs = 30_000): Promise<ReturnType<typeof processFigures>> {
  const started = Date.now();
  for (;;) {
    const figures = processFigures(await readMetrics(base));
    if (figures.slotsBusy === 0 && figures.queued === 0 && figures.retrievalQueued === 0 && figures.inFlight === 0) return figures;
    if (Date.now() - started > timeoutMs) throw new Error(`not idle after ${timeoutMs} ms: ${JSON.stringify(figures)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
