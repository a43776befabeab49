// The rows of the paired bench (`npm run bench`, the default mode): what one short block of each metric
// does on one side. The runner (paired.ts) loads both sides' servers at once and alternates blocks
// ours / llama-server in pairs (A B, B A, A B ...); pairing.ts turns the blocks into the median of per-pair
// ratios, its min–max, and the UNSTABLE mark.
//
// HOW TO ADD A PAIRED ROW (e.g. rerank throughput, TTFT after a restart, a Responses follow-up turn):
//  1. Add the metric's name to METRICS in args.ts (that is what `--only=<name>` selects).
//  2. Append a PairedMetric to PAIRED_METRICS below:
//     - `group`: the servers it runs against. "main" = our service (1.7B-shaped chat + MiniLM-shaped embed)
//       and llama-server chat + llama-server embed; "tiny" = the tiny-model pair. A metric that needs
//       another server (a reranker, another model) adds a group to GROUPS in paired.ts: how each side's
//       processes start and which targets they give.
//     - `rows`: one RowSpec per number the block returns (id, label, unit, digits, which way is better,
//       the target as a bound on ours/llama-server, and a drift factor for noisy metrics like p99).
//     - `warmup(side, ctx)` (optional): unmeasured, once per side before the first block.
//     - `block(side, ctx)`: ONE short measurement on ONE side, returning `{ [row id]: value }`. Keep it
//       a few seconds long: long enough to be stable (a few hundred tokens, a few hundred texts), short
//       enough that the machine does not drift within a pair. `ctx.index` is the block's number on that
//       side (use it for prompts that must be new to the server); `side.side` is "ours" or "llama";
//       `side.restart()` restarts that side's processes and resolves with the seconds to ready.
//     Throwing marks that block failed (the row shows ERROR if no pair succeeds); a RequestTimeoutError
//     skips the rest of that side's blocks in the group (the server is stuck).
//     - `check(sides)` (optional): once before the warm-ups, with both sides; throwing (an oracle mismatch)
//       fails every block of the metric and makes the bench exit non-zero; its string goes to the notes.
//     - `oursLimit` on a row: a target on ours' own value (e.g. after-restart TTFT / own warm TTFT), not on
//       the ratio against llama-server.
//  3. That is all: the table, JSON, README and chart pick the rows up in PAIRED_METRICS order. For a
//     sequential-mode value too (`--mode=sequential`), add it to report.ts's buildRows.
import type { MetricName, Workload } from "./args.ts";
import {
  aggregateBlock, aggregateWarmup, decodeBlock, decodeWarmup, embedConcurrentBlock, embedLatency, embedSingleBlock, embedWarmup,
  healthLoad, lateBlock, ttftBlock, whileGenerating,
} from "./measure.ts";
import type { Side } from "./pairing.ts";
import { measureFirstAfterRestart, measureManyPrompts, measureWarmWhileBusy } from "./cache-rows.ts";
import { postJson } from "./http.ts";
import { batchedSpread, checkEmbedOracle, checkRerankOracleExact, type RerankTarget, type VectorTarget } from "./oracle-rerank.ts";
import { bulkPassages, bulkQueryBlock } from "./bulk-query.ts";
import { ensureRagModels, rerankBlock, vectorBlock } from "./rag-rows.ts";
import { followUpBlock } from "./responses-rows.ts";
import type { Direction } from "./report.ts";
import type { ChatTarget, EmbedTarget } from "./targets.ts";

/** What one side of a group offers a block. */
export type SideTargets = {
  readonly side: Side;
  /** "ours" or "llama-server": for logs. */
  readonly name: string;
  readonly chat: ChatTarget;
  /** Absent where that side's group has no embedding server (llama-server's tiny side). */
  readonly embed?: EmbedTarget;
  /** The /health URL of the process serving chat. */
  readonly healthUrl: string;
  /** Pids of this side's processes in the group (CPU accounting); they change after restart(). */
  pids(): number[];
  /** Restarts this side's processes in the group; resolves with the seconds until they were all ready. */
  restart(): Promise<number>;
  /** The rag group's reranker and multilingual embedder, each over HTTP (absent where not selected). */
  readonly rerank?: RerankTarget;
  readonly vectors?: VectorTarget;
  /** Chat slots of this group's servers (the cache group's llama-server saves and restores each one). */
  readonly slots?: number;
};

export type BlockContext = {
  readonly workload: Workload;
  /** 0, 1, 2 ... : this block's number on this side within the metric. */
  readonly index: number;
};

export type RowSpec = {
  id: string;
  label: string;
  unit: string;
  digits: number;
  better: Direction;
  /** Target as a bound on ours/llama-server (at least for "higher", at most for "lower"). */
  limit?: number;
  /** Largest/smallest of one side's blocks above which the row is UNSTABLE; default `--drift-factor`. */
  driftFactor?: number;
  /** Target as a bound on ours' own value instead (a ratio against itself, e.g. after-restart / warm TTFT). */
  oursLimit?: number;
};

export type GroupId = "main" | "tiny" | "cache" | "cache4" | "rag";

/** What a check may start besides the group's servers (the rerank oracle runs its own pair of processes). */
export type CheckContext = { llamaServer: string; threads: number };

export type PairedMetric = {
  metric: MetricName;
  group: GroupId;
  rows: readonly RowSpec[];
  check?: (sides: Readonly<Record<Side, SideTargets>>, ctx: CheckContext) => Promise<string>;
  warmup?: (side: SideTargets, ctx: Omit<BlockContext, "index">) => Promise<void>;
  block: (side: SideTargets, ctx: BlockContext) => Promise<Record<string, number>>;
};

function needEmbed(side: SideTargets): EmbedTarget {
  if (side.embed === undefined) throw new Error(`${side.name}: no embedding server in this group`);
  return side.embed;
}

function needRerank(side: SideTargets): RerankTarget {
  if (side.rerank === undefined) throw new Error(`${side.name}: no reranker in this group`);
  return side.rerank;
}

function needVectors(side: SideTargets): VectorTarget {
  if (side.vectors === undefined) throw new Error(`${side.name}: no multilingual embedder in this group`);
  return side.vectors;
}

/**
 * llama-server's manual persistence around a restart: every slot saved before (the warm prompt sits in
 * whichever slot served it), every saved file restored after (the next request then picks the slot whose
 * prompt it shares). At least one restore must succeed, or the row would time a plain restart.
 */
function llamaSlotHooks(slots: number) {
  const file = (slot: number) => `bench-restart-slot${slot}.bin`;
  const saved = new Set<number>();
  return {
    beforeRestart: async (chat: ChatTarget) => {
      saved.clear();
      for (let slot = 0; slot < slots; slot++) {
        try {
          await postJson(`${chat.baseUrl}/slots/${slot}?action=save`, { filename: file(slot) });
          saved.add(slot);
        } catch { /* an empty slot: nothing to keep */ }
      }
    },
    afterRestart: async (chat: ChatTarget) => {
      let restored = 0;
      const errors: string[] = [];
      for (const slot of saved) {
        try {
          await postJson(`${chat.baseUrl}/slots/${slot}?action=restore`, { filename: file(slot) });
          restored++;
        } catch (error) {
          errors.push(error instanceof Error ? error.message : String(error));
        }
      }
      if (restored === 0) throw new Error(`llama-server restored no slot (saved ${saved.size}): ${errors.join("; ")}`);
    },
  };
}

/** p99 of 64 paced connections and first-token latency with streams running move more than rates do. */
const NOISY = 2.5;

export const PAIRED_METRICS: readonly PairedMetric[] = [
  {
    metric: "decode", group: "main",
    rows: [{ id: "decode", label: "Single-stream decode", unit: "tok/s", digits: 2, better: "higher", limit: 1.0 }],
    warmup: (s) => decodeWarmup(s.chat),
    block: async (s, c) => ({ decode: (await decodeBlock(s.chat, c.workload.decodeTokens, c.index)).tokPerS }),
  },
  {
    metric: "tiny", group: "tiny",
    rows: [
      { id: "tiny_decode", label: "Tiny model decode, overhead-bound", unit: "tok/s", digits: 1, better: "higher", limit: 1.0 },
      { id: "tiny_aggregate4", label: "Tiny model aggregate, 4 clients", unit: "tok/s", digits: 1, better: "higher", limit: 1.0 },
    ],
    warmup: async (s) => {
      await decodeWarmup(s.chat);
      await aggregateWarmup(s.chat, 4);
    },
    block: async (s, c) => ({
      tiny_decode: (await decodeBlock(s.chat, c.workload.tinyTokens, c.index, "tiny decode")).tokPerS,
      tiny_aggregate4: (await aggregateBlock(s.chat, 4, c.workload.tinyTokens / 2, c.index)).tokPerS,
    }),
  },
  {
    metric: "aggregate", group: "main",
    rows: [
      { id: "aggregate4", label: "Aggregate decode, 4 clients", unit: "tok/s", digits: 2, better: "higher", limit: 1.0 },
      { id: "aggregate8", label: "Aggregate decode, 8 clients", unit: "tok/s", digits: 2, better: "higher", limit: 1.0 },
    ],
    warmup: (s) => aggregateWarmup(s.chat, 8),
    block: async (s, c) => ({
      aggregate4: (await aggregateBlock(s.chat, 4, c.workload.decodeTokens, c.index)).tokPerS,
      aggregate8: (await aggregateBlock(s.chat, 8, c.workload.decodeTokens, c.index)).tokPerS,
    }),
  },
  {
    metric: "ttft", group: "main",
    rows: [
      { id: "ttft_cold", label: "TTFT cold (new ~400-tok prompt)", unit: "ms", digits: 0, better: "lower", limit: 1.0 },
      { id: "ttft_warm", label: "TTFT warm (same system prompt)", unit: "ms", digits: 0, better: "lower", limit: 1.0, driftFactor: NOISY },
    ],
    block: async (s, c) => {
      // Prompt ids from 1000 up: never one the sequential numbering or another metric used on this server.
      const r = await ttftBlock(s.chat, 1000 + c.index);
      return { ttft_cold: r.coldMs, ttft_warm: r.warmMs };
    },
  },
  {
    metric: "late", group: "main",
    rows: [{ id: "ttft_late", label: "TTFT late arrival (3 streams running)", unit: "ms", digits: 0, better: "lower", limit: 1.0, driftFactor: NOISY }],
    block: async (s, c) => ({ ttft_late: (await lateBlock(s.chat, c.workload.lateStreamTokens, c.index)).ttftMs }),
  },
  {
    metric: "embed", group: "main",
    rows: [
      { id: "embed_single", label: "Embeddings, 1 request × 256", unit: "texts/s", digits: 0, better: "higher", limit: 1.0 },
      { id: "embed_concurrent", label: "Embeddings, 32 clients × 8", unit: "texts/s", digits: 0, better: "higher", limit: 1.0 },
      { id: "embed_latency_idle", label: "Embed 1 text, both idle", unit: "ms", digits: 1, better: "lower", driftFactor: NOISY },
      // The target: ours while a generation runs against llama-server's embedding server alone.
      { id: "embed_latency", label: "Embed 1 text: ours generating, llama idle", unit: "ms", digits: 1, better: "lower", limit: 1.2, driftFactor: NOISY },
    ],
    warmup: (s) => embedWarmup(needEmbed(s)),
    block: async (s, c) => {
      const embed = needEmbed(s);
      const requests = c.workload.embedLatencyRequests;
      const out: Record<string, number> = {
        embed_single: await embedSingleBlock(embed),
        embed_concurrent: await embedConcurrentBlock(embed),
        embed_latency_idle: (await embedLatency(embed, requests)).medianMs,
      };
      // llama-server's embedding server has no generation beside it: its idle latency is the yardstick.
      out["embed_latency"] = s.side === "ours"
        ? (await whileGenerating(s.chat, () => embedLatency(embed, requests))).result.medianMs
        : out["embed_latency_idle"] as number;
      return out;
    },
  },
  {
    metric: "health", group: "main",
    rows: [
      { id: "health_p50", label: "/health p50, 64 conns, generating", unit: "ms", digits: 2, better: "lower", driftFactor: NOISY },
      { id: "health_p99", label: "/health p99, 64 conns, generating", unit: "ms", digits: 2, better: "lower", limit: 1.5, driftFactor: NOISY },
    ],
    // One unrecorded second of the load: the first requests of a process pay for JIT and lazy setup.
    warmup: async (s) => { await healthLoad(s.healthUrl, 10); },
    block: async (s, c) => {
      const { result } = await whileGenerating(s.chat, () => healthLoad(s.healthUrl, c.workload.healthRequestsPerConnection));
      return { health_p50: result.p50Ms, health_p99: result.p99Ms };
    },
  },
  {
    // The Responses API's follow-up turn (bench/lib/responses-rows.ts): turn 2 right after turn 1 of a
    // ~400-token conversation. llama-server rejects previous_response_id, so its side of the chain row
    // is its own best way: a chat request with the same history.
    metric: "followup", group: "main",
    rows: [
      { id: "followup_chain", label: "Follow-up TTFT: previous_response_id (llama: chat + history)", unit: "ms", digits: 0, better: "lower", driftFactor: NOISY },
      { id: "followup_chat", label: "Follow-up TTFT: chat + same history", unit: "ms", digits: 0, better: "lower", driftFactor: NOISY },
    ],
    block: async (s, c) => {
      const runs = await followUpBlock(s.chat.baseUrl, 1000 + c.index, s.side === "ours" ? ["chain", "chat"] : ["chat"]);
      return { followup_chain: (runs.chain ?? runs.chat)!.ttftMs, followup_chat: runs.chat!.ttftMs };
    },
  },
  // ---- opt-in (args.ts OPT_IN_METRICS) ----
  {
    // Issue 18: a new ~400-token system prompt sent twice (the second TTFT is the warm one), the side
    // restarted (SIGTERM: ours persists its prompt cache), the same prompt again. llama-server twice per
    // block: a plain restart, and one with every slot saved to --slot-save-path and restored by hand.
    metric: "cache-restart", group: "cache",
    rows: [
      { id: "cache_restart_warm", label: "Restart rows: warm TTFT before the restart", unit: "ms", digits: 0, better: "lower", driftFactor: NOISY },
      { id: "cache_restart", label: "TTFT first request after a restart (llama: no restore)", unit: "ms", digits: 0, better: "lower", driftFactor: NOISY },
      { id: "cache_restart_restore", label: "TTFT after a restart (llama: slot save + restore; ours: as above)", unit: "ms", digits: 0, better: "lower", driftFactor: NOISY },
      { id: "cache_restart_over_warm", label: "After-restart TTFT / own warm TTFT (llama: no restore)", unit: "x", digits: 2, better: "lower", oursLimit: 1.2, driftFactor: NOISY },
      { id: "cache_restart_ready", label: "Restart: stop to ready", unit: "s", digits: 1, better: "lower" },
    ],
    block: async (s, c) => {
      let readySeconds = 0;
      const restart = async () => { readySeconds = await s.restart(); return s.chat; };
      // Prompt ids 2i (both sides) and 2i + 1 (llama-server's restore run): new to the server in every block.
      const plain = await measureFirstAfterRestart(s.chat, restart, 1, {}, 2 * c.index);
      const ready = readySeconds;
      const restored = s.side === "ours" ? plain : await measureFirstAfterRestart(s.chat, restart, 1, llamaSlotHooks(s.slots ?? 1), 2 * c.index + 1);
      return {
        cache_restart_warm: plain.warmMs, cache_restart: plain.afterRestartMs, cache_restart_restore: restored.afterRestartMs,
        cache_restart_over_warm: plain.afterRestartOverWarm, cache_restart_ready: ready,
      };
    },
  },
  {
    // Issue 18: one ~400-token system prompt sent once; 3 streams with other prompts keep 3 slots busy; 4
    // clients then send the shared prompt at once (p50 and p90 of their 4 TTFTs).
    metric: "cache-busy", group: "cache",
    rows: [
      { id: "cache_busy_p50", label: "Warm while busy: TTFT p50, 4 clients + 3 streams", unit: "ms", digits: 0, better: "lower", limit: 0.5, driftFactor: NOISY },
      { id: "cache_busy_p90", label: "Warm while busy: TTFT p90", unit: "ms", digits: 0, better: "lower", driftFactor: NOISY },
    ],
    block: async (s, c) => {
      const r = await measureWarmWhileBusy(s.chat, 1, c.index);
      return { cache_busy_p50: r.p50Ms, cache_busy_p90: r.p90Ms };
    },
  },
  {
    // Issue 18: 16 distinct ~400-token system prompts over 4 slots, one unmeasured round then one measured;
    // and the side's own warm TTFT (same slots) for the "<= 1.2x our own warm" target.
    metric: "cache-many", group: "cache4",
    rows: [
      { id: "cache_many_p50", label: "16 prompts over 4 slots: TTFT p50", unit: "ms", digits: 0, better: "lower", limit: 1.0, driftFactor: NOISY },
      { id: "cache_many_p90", label: "16 prompts over 4 slots: TTFT p90", unit: "ms", digits: 0, better: "lower", driftFactor: NOISY },
      { id: "cache_many_cached", label: "16 prompts over 4 slots: prompt tokens cached", unit: "%", digits: 0, better: "higher" },
      { id: "cache_many_over_warm", label: "16 prompts: TTFT p50 / own warm TTFT", unit: "x", digits: 2, better: "lower", oursLimit: 1.2, driftFactor: NOISY },
    ],
    block: async (s, c) => {
      const many = await measureManyPrompts(s.chat, 16, 2);
      const warm = await ttftBlock(s.chat, 2000 + c.index);
      return { cache_many_p50: many.p50Ms, cache_many_p90: many.p90Ms, cache_many_cached: 100 * many.cachedShare, cache_many_over_warm: many.p50Ms / warm.warmMs };
    },
  },
  {
    // Issue 17: rerank throughput over HTTP; first the oracle (scores within 1e-4, same order).
    metric: "rerank", group: "rag",
    rows: [
      { id: "rerank_single", label: "Rerank, 1 request × 64 documents", unit: "pairs/s", digits: 1, better: "higher", limit: 1.0 },
      { id: "rerank_concurrent", label: "Rerank, 8 clients × 16 documents", unit: "pairs/s", digits: 1, better: "higher", limit: 1.0 },
    ],
    check: async (sides, ctx) => {
      // The oracle needs the same arithmetic on both sides (checkRerankOracle): its own in-process reranker and
      // llama-server, one pair per decode, flash attention off; the group's servers stay as they serve.
      const { rerank: file } = await ensureRagModels({ embed: false, rerank: true });
      const r = await checkRerankOracleExact({ ...ctx, file: file! });
      const spread = await batchedSpread(needRerank(sides.ours), needRerank(sides.llama));
      return `oracle: ${r.comparisons} rerank scores equal llama-server's within 1e-4 (max |diff| ${r.maxAbsDiff.toExponential(2)}), same order, ` +
        `one pair per decode, flash attention off on both sides; as served (batched, defaults) ours vs llama-server max |diff| ` +
        `${spread.oursVsReference.toExponential(2)}, llama-server vs itself ${spread.referenceVsItself.toExponential(2)}`;
    },
    warmup: async (s) => { await needRerank(s).rerank("¿Dónde?", ["Aquí.", "Allí."]); },
    block: async (s) => {
      const r = await rerankBlock(needRerank(s));
      return { rerank_single: r.single, rerank_concurrent: r.concurrent };
    },
  },
  {
    // Issue 25 (bench/lib/bulk-query.ts): a 1-text query while a 2,048-text request is being embedded, on
    // the main group's embedding servers (ours: MiniLM-shaped beside the chat model, idle; llama-server embed).
    metric: "bulk-query", group: "main",
    rows: [
      { id: "bulk_query_idle", label: "Query during bulk: 1 text, idle", unit: "ms", digits: 1, better: "lower", driftFactor: NOISY },
      { id: "bulk_query", label: "Query during bulk: 1 text while 2,048 are embedded", unit: "ms", digits: 1, better: "lower", limit: 1.0, driftFactor: NOISY },
      // The target as one number: the query's latency over (1.5 x its idle latency + one decode).
      { id: "bulk_query_target", label: "Query during bulk / (1.5 x idle + one decode)", unit: "x", digits: 2, better: "lower", oursLimit: 1.0, driftFactor: NOISY },
      { id: "bulk_decode", label: "Query during bulk: one decode of the bulk request", unit: "ms", digits: 1, better: "lower" },
      { id: "bulk_alone", label: "Bulk request of 2,048 alone", unit: "texts/s", digits: 0, better: "higher" },
      { id: "bulk_kept", label: "Bulk throughput with queries / alone", unit: "x", digits: 3, better: "higher", oursLimit: 0.95 },
    ],
    warmup: async (s) => { await needEmbed(s).embed(bulkPassages(64)); },
    block: async (s, c) => {
      const r = await bulkQueryBlock(needEmbed(s), bulkPassages(c.workload.bulkTexts), c.index);
      return {
        bulk_query_idle: r.idleMs, bulk_query: r.duringMs, bulk_query_target: r.duringMs / (1.5 * r.idleMs + r.decodeMs),
        bulk_decode: r.decodeMs, bulk_alone: r.bulkAloneTextsPerS, bulk_kept: r.bulkWithQueriesTextsPerS / r.bulkAloneTextsPerS,
      };
    },
  },
  {
    // Issue 17: multilingual embedding throughput over HTTP, the embed rows' shapes; first the oracle.
    metric: "embed-multilingual", group: "rag",
    rows: [
      { id: "embed_ml_single", label: "Multilingual embeddings, 1 request × 256", unit: "texts/s", digits: 0, better: "higher", limit: 1.0 },
      { id: "embed_ml_concurrent", label: "Multilingual embeddings, 32 clients × 8", unit: "texts/s", digits: 0, better: "higher", limit: 1.0 },
    ],
    check: async (sides) => {
      const r = await checkEmbedOracle(needVectors(sides.ours), needVectors(sides.llama));
      return `oracle: ${r.comparisons} embedding components equal llama-server's within 1e-4 (max |diff| ${r.maxAbsDiff.toExponential(2)})`;
    },
    warmup: async (s) => { await needVectors(s).embed(["hola", "¿qué tal?"]); },
    block: async (s) => {
      const r = await vectorBlock(needVectors(s));
      return { embed_ml_single: r.single, embed_ml_concurrent: r.concurrent };
    },
  },
];
