// /metrics for the prompt cache: hits, misses and reused tokens by tier (slot, copy from another slot,
// host memory, disk), bytes held per tier, restore time. Read from the engine when scraped.
import { Counter, Gauge, type Registry } from "prom-client";
import { PROMPT_CACHE_TIERS } from "../engine/chat/promptCacheStore.js";
import type { ServiceState } from "../service.js";

export function installPromptCacheMetrics(registry: Registry, state: ServiceState): void {
  const stats = () => state.loaded()?.chat.promptCacheStats() ?? null;
  // The native counters are cumulative: each scrape sets the Prometheus counter to their value.
  const counter = (name: string, help: string, read: (s: NonNullable<ReturnType<typeof stats>>) => number) =>
    new Counter({
      name, help, registers: [registry],
      collect() {
        const s = stats();
        this.reset();
        if (s !== null) this.inc(read(s));
      },
    });
  new Counter({
    name: "bora_prompt_cache_hits_total", help: "Generations that reused a prompt prefix, by the tier it came from", labelNames: ["tier"], registers: [registry],
    collect() {
      const s = stats();
      this.reset();
      if (s !== null) for (const tier of PROMPT_CACHE_TIERS) this.inc({ tier }, s.hits[tier]);
    },
  });
  new Counter({
    name: "bora_prompt_cache_tokens_total", help: "Prompt tokens reused instead of decoded, by tier", labelNames: ["tier"], registers: [registry],
    collect() {
      const s = stats();
      this.reset();
      if (s !== null) for (const tier of PROMPT_CACHE_TIERS) this.inc({ tier }, s.tokens[tier]);
    },
  });
  counter("bora_prompt_cache_misses_total", "Generations that found no cached prefix of their prompt", (s) => s.misses);
  counter("bora_prompt_cache_restore_seconds_total", "Time spent copying or restoring prefixes (copy, host and disk tiers)", (s) => s.restoreSeconds);
  counter("bora_prompt_cache_restores_total", "Prefixes copied or restored (copy, host and disk tiers)", (s) => s.restores);
  counter("bora_prompt_cache_saves_total", "Slot contents saved to host memory before being overwritten", (s) => s.saves);
  counter("bora_prompt_cache_evictions_total", "Host-memory entries dropped to stay within PROMPT_CACHE_MIB", (s) => s.evictions);
  new Gauge({
    name: "bora_prompt_cache_bytes", help: "Bytes of KV state held per tier (slot: estimated from the tokens in slots)", labelNames: ["tier"], registers: [registry],
    collect() {
      const s = stats();
      this.reset();
      if (s === null) return;
      const perToken = s.savedTokens > 0 ? s.savedStateBytes / s.savedTokens : 0;
      const inSlots = (state.loaded()?.chat.slotsSnapshot() ?? []).reduce((sum, slot) => sum + slot.cachedTokens, 0);
      this.set({ tier: "slot" }, Math.round(inSlots * perToken));
      this.set({ tier: "host" }, s.hostBytes);
      this.set({ tier: "disk" }, s.diskBytes);
    },
  });
  new Gauge({
    name: "bora_prompt_cache_entries", help: "Prefixes held in host memory and on disk", labelNames: ["tier"], registers: [registry],
    collect() {
      const s = stats();
      this.reset();
      if (s === null) return;
      this.set({ tier: "host" }, s.hostEntries);
      this.set({ tier: "disk" }, s.diskFiles);
    },
  });
}
