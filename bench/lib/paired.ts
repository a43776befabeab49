// The paired runner, the bench's default mode: each group's servers (ours and llama-server's) are loaded
// at once, and only one side works at a time, in short alternating blocks (A B, B A, ...). A ratio then
// compares the two servers seconds apart instead of minutes apart (a drifting VM made sequential ratios
// meaningless: llama-server's own decode fell from 11.4 to 1.5 tok/s within one run). Rows are defined in
// rows.ts; the arithmetic is in pairing.ts.
import { mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import type { BenchOptions } from "./args.ts";
import { benchCacheDir, type BenchModels, type LlamaBuild } from "./artifacts.ts";
import { CpuMeter, waitForQuietCpu } from "./cpu.ts";
import { RequestTimeoutError } from "./http.ts";
import { progress } from "./log.ts";
import { blockOrder, summarizePairs, type PairSample, type Side } from "./pairing.ts";
import { freePort, startServer, type RunningServer, type ServerSpec } from "./processes.ts";
import type { Row } from "./report.ts";
import { settingsInLog } from "./results.ts";
import { PAIRED_METRICS, type GroupId, type PairedMetric, type RowSpec, type SideTargets } from "./rows.ts";
import { LlamaServerVectors, httpRerankTarget, llamaMultilingualEmbedSpec } from "./oracle-rerank.ts";
import { RAG_EMBED_MODEL, RAG_RERANK_MODEL, RAG_TIMEOUT_MS, ensureRagModels, httpVectorTarget, llamaRagRerankSpec, ourRagSpec } from "./rag-rows.ts";
import { CHAT_SLOTS, llamaCacheChatSpec, llamaChatSpec, llamaEmbedSpec, ourCacheSpec, ourServiceSpec } from "./servers.ts";
import { LlamaServerChat, LlamaServerEmbed, OurChat } from "./targets.ts";

/** One block as measured: its side, values per row, the CPU other processes took meanwhile, or its error. */
export type BlockRecord = { pair: number; side: Side; values: Record<string, number>; otherCores: number; seconds: number; error?: string };

export type MetricRecord = {
  metric: string; group: GroupId; blocks: BlockRecord[]; errors: string[];
  /** What the metric's check (an oracle) found, when it has one and it passed. */
  checked?: string;
};

type GroupProcess = { side: Side; label: string; server: RunningServer; readySeconds: number };

export type GroupRecord = {
  group: GroupId;
  /** Seconds from spawn to ready, per process (started one at a time, the others idle). */
  readySeconds: Record<string, number>;
  /** VmHWM per process at the end of the group's blocks. */
  peakRssBytes: Record<string, number>;
  /** Sum of the group's VmHWM: the memory the paired mode needs at once for this group. */
  heldTogetherBytes: number;
  /** What each process's log says it ran with (threads, engine, flash attention). */
  settings: Record<string, string>;
};

export type PairedResult = { rows: Row[]; metrics: MetricRecord[]; groups: GroupRecord[]; notes: string[] };

type GroupDef = {
  /** Each side's processes, started one after the other. */
  specs(opts: BenchOptions, models: BenchModels, build: LlamaBuild): Promise<Record<Side, ServerSpec[]>>;
  /** Each side's targets from its running processes (same order as specs). */
  targets(side: Side, urls: string[], specs: readonly ServerSpec[]): Omit<SideTargets, "pids" | "restart" | "side" | "name">;
};

const origin = (spec: ServerSpec) => new URL(spec.readyUrl).origin;

/** The prompt-cache groups: ours' cache directory starts empty (no prefixes from an earlier run). */
function cacheDirs(group: string): { promptCacheDir: string; slotSavePath: string } {
  const promptCacheDir = path.join(benchCacheDir, `prompt-cache-${group}`);
  const slotSavePath = path.join(benchCacheDir, `slot-save-${group}`);
  rmSync(promptCacheDir, { recursive: true, force: true });
  rmSync(slotSavePath, { recursive: true, force: true });
  mkdirSync(promptCacheDir, { recursive: true });
  mkdirSync(slotSavePath, { recursive: true });
  return { promptCacheDir, slotSavePath };
}

/** The cache groups: the main chat model on both sides with `slots` slots, prompt caches at their defaults. */
function cacheGroup(group: "cache" | "cache4", slots: number): GroupDef {
  return {
    specs: async (opts, models, build) => {
      const dirs = cacheDirs(group);
      return {
        ours: [ourCacheSpec({ threads: opts.threads, port: await freePort() }, models, opts.engine, slots, dirs.promptCacheDir, `ours ${group}`)],
        llama: [llamaCacheChatSpec(build.server, { threads: opts.threads, port: await freePort() }, models.chat, slots, dirs.slotSavePath, `llama-server ${group}`)],
      };
    },
    targets: (side, [chatUrl = ""]) => ({
      chat: side === "ours" ? new OurChat(chatUrl) : new LlamaServerChat(chatUrl), healthUrl: `${chatUrl}/health`, slots,
    }),
  };
}
/**
 * The server groups. A group's processes are all loaded while its metrics run; groups run one after the
 * other, so the peak memory is that of the largest group (main: about ours' 4.3 GB + llama-server chat
 * and embed's 4.0 GB in the 2026-11-25 runs).
 */
export const GROUPS: Record<GroupId, GroupDef> = {
  main: {
    specs: async (opts, models, build) => ({
      ours: [ourServiceSpec({ threads: opts.threads, port: await freePort() }, models, opts.engine)],
      llama: [
        llamaChatSpec(build.server, { threads: opts.threads, port: await freePort() }, models.chat),
        llamaEmbedSpec(build.server, { threads: opts.threads, port: await freePort() }, models.embed),
      ],
    }),
    targets: (side, [chatUrl = "", embedUrl = ""]) => side === "ours"
      ? { chat: new OurChat(chatUrl), embed: new OurChat(chatUrl), healthUrl: `${chatUrl}/health` }
      : { chat: new LlamaServerChat(chatUrl), embed: new LlamaServerEmbed(embedUrl), healthUrl: `${chatUrl}/health` },
  },
  tiny: {
    specs: async (opts, models, build) => ({
      ours: [ourServiceSpec({ threads: opts.threads, port: await freePort() }, { chat: models.tinyChat, embed: models.tinyEmbed }, opts.engine, "tiny")],
      llama: [llamaChatSpec(build.server, { threads: opts.threads, port: await freePort() }, models.tinyChat, "tiny")],
    }),
    targets: (side, [chatUrl = ""]) => side === "ours"
      ? { chat: new OurChat(chatUrl), embed: new OurChat(chatUrl), healthUrl: `${chatUrl}/health` }
      : { chat: new LlamaServerChat(chatUrl), healthUrl: `${chatUrl}/health` },
  },
  // Opt-in groups (args.ts OPT_IN_METRICS). Prompt caches: 8 slots as main (a warm prefix in one slot while
  // others are busy), 4 slots for 16 prompts cycling; llama-server's --cache-ram at its default.
  cache: cacheGroup("cache", CHAT_SLOTS),
  cache4: cacheGroup("cache4", 4),
  // Retrieval: ours with the fixtures in EMBED_MODELS / RERANK_MODELS (tiny chat and embed models beside them);
  // llama-server --rerank and --embedding on the same files. Only the selected metrics' models are loaded.
  rag: {
    specs: async (opts, models, build) => {
      const files = await ensureRagModels({ embed: opts.only.has("embed-multilingual"), rerank: opts.only.has("rerank") });
      const setup = async () => ({ threads: opts.threads, port: await freePort() });
      const llama: ServerSpec[] = [];
      if (files.rerank !== undefined) llama.push(llamaRagRerankSpec(build.server, await setup(), files.rerank));
      if (files.embed !== undefined) {
        const s = await setup();
        llama.push(llamaMultilingualEmbedSpec(build.server, s.threads, s.port, files.embed));
      }
      return { ours: [ourRagSpec(await setup(), { chat: models.tinyChat, embed: models.tinyEmbed }, files, opts.engine)], llama };
    },
    targets: (side, urls, specs) => {
      const urlOf = (label: string) => urls[specs.findIndex((sp) => sp.label.startsWith(label))];
      if (side === "ours") {
        const url = urls[0] ?? "";
        return {
          chat: new OurChat(url), healthUrl: `${url}/health`,
          // raw_scores: llama-server's relevance_score is the head's raw output; ours' default is a probability.
          rerank: httpRerankTarget("ours", url, RAG_RERANK_MODEL, "/v1/rerank", { raw_scores: true }, RAG_TIMEOUT_MS),
          vectors: httpVectorTarget("ours", url, RAG_EMBED_MODEL),
        };
      }
      const rerankUrl = urlOf("llama-server rerank");
      const embedUrl = urlOf("llama-server embed");
      const first = urls[0] ?? "";
      return {
        // No chat server on this side: the rag metrics never use `chat`; /health is the first process's.
        chat: new LlamaServerChat(first), healthUrl: `${first}/health`,
        ...(rerankUrl === undefined ? {} : { rerank: httpRerankTarget("llama-server", rerankUrl, undefined, "/v1/rerank", {}, RAG_TIMEOUT_MS) }),
        ...(embedUrl === undefined ? {} : { vectors: new LlamaServerVectors(embedUrl) }),
      };
    },
  },
};

async function startTimed(spec: ServerSpec, quietWaitSeconds: number): Promise<{ server: RunningServer; readySeconds: number }> {
  await waitForQuietCpu(quietWaitSeconds);
  progress(`starting ${spec.label}`);
  const started = performance.now();
  const server = await startServer(spec);
  const readySeconds = (performance.now() - started) / 1000;
  progress(`${spec.label} ready in ${readySeconds.toFixed(1)} s (pid ${server.pid})`);
  return { server, readySeconds };
}

/** Starts a group's processes one at a time (so each start-to-ready is measured with the others idle). */
async function startGroup(group: GroupId, opts: BenchOptions, models: BenchModels, build: LlamaBuild): Promise<{ processes: GroupProcess[]; sides: Record<Side, SideTargets> }> {
  const def = GROUPS[group];
  const specs = await def.specs(opts, models, build);
  const processes: GroupProcess[] = [];
  try {
    for (const side of ["ours", "llama"] as const) {
      for (const spec of specs[side]) {
        const { server, readySeconds } = await startTimed(spec, opts.quietWaitSeconds);
        processes.push({ side, label: spec.label, server, readySeconds });
      }
    }
  } catch (error) {
    await Promise.all(processes.map((p) => p.server.stop()));
    throw error;
  }
  const sideTargets = (side: Side): SideTargets => ({
    ...def.targets(side, specs[side].map(origin), specs[side]),
    side,
    name: side === "ours" ? "ours" : "llama-server",
    pids: () => processes.filter((p) => p.side === side).map((p) => p.server.pid),
    restart: async () => {
      const started = performance.now();
      for (const p of processes.filter((q) => q.side === side)) {
        await p.server.stop();
        p.server = await startServer(p.server.spec);
      }
      return (performance.now() - started) / 1000;
    },
  });
  return { processes, sides: { ours: sideTargets("ours"), llama: sideTargets("llama") } };
}

/** One side's block: timed under a CPU meter; an error is recorded, not thrown. */
async function runBlock(metric: PairedMetric, side: SideTargets, index: number, pair: number, opts: BenchOptions): Promise<BlockRecord> {
  const meter = new CpuMeter(side.pids());
  const started = performance.now();
  try {
    const values = await metric.block(side, { workload: opts.workload, index });
    const seconds = (performance.now() - started) / 1000;
    const otherCores = meter.read().otherCores;
    const shown = Object.entries(values).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
    progress(`  ${metric.metric} pair ${pair + 1} ${side.name}: ${shown} (${seconds.toFixed(1)} s; other processes ${otherCores.toFixed(2)} cores)`);
    return { pair, side: side.side, values, otherCores, seconds };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    progress(`  ${metric.metric} pair ${pair + 1} ${side.name} FAILED: ${message}`);
    if (error instanceof RequestTimeoutError) throw Object.assign(new Error(message), { stuck: true, pair });
    return { pair, side: side.side, values: {}, otherCores: meter.read().otherCores, seconds: (performance.now() - started) / 1000, error: message };
  }
}

async function runMetric(metric: PairedMetric, sides: Record<Side, SideTargets>, opts: BenchOptions, stuck: Set<Side>, build: LlamaBuild): Promise<MetricRecord> {
  const record: MetricRecord = { metric: metric.metric, group: metric.group, blocks: [], errors: [] };
  if (metric.check !== undefined) {
    try {
      record.checked = await metric.check(sides, { llamaServer: build.server, threads: opts.threads });
      progress(`  ${metric.metric} ${record.checked}`);
    } catch (error) {
      // Loud: no block runs (a faster wrong answer is no result), the rows show ERROR, the bench exits non-zero.
      const message = `CHECK FAILED: ${error instanceof Error ? error.message : String(error)}`;
      progress(`  ${metric.metric} ${message}`);
      process.exitCode = 1;
      record.errors.push(message);
      for (const [pair, order] of blockOrder(opts.pairs).entries()) for (const side of order) record.blocks.push({ pair, side, values: {}, otherCores: 0, seconds: 0, error: message });
      return record;
    }
  }
  for (const side of ["ours", "llama"] as const) {
    if (stuck.has(side) || metric.warmup === undefined) continue;
    try {
      await metric.warmup(sides[side], { workload: opts.workload });
    } catch (error) {
      record.errors.push(`${sides[side].name} warm-up: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  const index: Record<Side, number> = { ours: 0, llama: 0 };
  for (const [pair, order] of blockOrder(opts.pairs).entries()) {
    for (const side of order) {
      if (stuck.has(side)) {
        record.blocks.push({ pair, side, values: {}, otherCores: 0, seconds: 0, error: "skipped: the server timed out earlier" });
        continue;
      }
      try {
        record.blocks.push(await runBlock(metric, sides[side], index[side]++, pair, opts));
      } catch (error) {
        stuck.add(side);
        const message = error instanceof Error ? error.message : String(error);
        record.blocks.push({ pair, side, values: {}, otherCores: 0, seconds: 0, error: message });
        record.errors.push(`${sides[side].name} timed out (${message}); its remaining blocks in this group are skipped`);
      }
    }
  }
  for (const b of record.blocks) if (b.error !== undefined && !record.errors.includes(`${b.side}: ${b.error}`)) record.errors.push(`${b.side}: ${b.error}`);
  return record;
}

/** A row from its blocks: pairs of (ours, llama) values, summarized by pairing.ts (exported for its test). */
export function pairedRow(spec: RowSpec, record: MetricRecord, driftFactor: number): Row {
  const pairs = new Map<number, PairSample>();
  for (const b of record.blocks) {
    const sample = pairs.get(b.pair) ?? { ours: null, llama: null };
    sample[b.side] = b.values[spec.id] ?? null;
    pairs.set(b.pair, sample);
  }
  const summary = summarizePairs([...pairs.values()], spec.driftFactor ?? driftFactor);
  const failedSide = (side: Side) => record.blocks.some((b) => b.side === side) && record.blocks.filter((b) => b.side === side).every((b) => b.error !== undefined);
  const failed = { ours: failedSide("ours"), llama: failedSide("llama") };
  const ratio = summary.ratio;
  const sign = spec.better === "higher" ? "≥" : "≤";
  // 1.0 as before; 0.95 stays 0.95 (toFixed(1) showed it as 0.9).
  const bound = (x: number) => Number.isInteger(Math.round(x * 1000) / 100) ? x.toFixed(1) : String(Number(x.toFixed(2)));
  const within = (value: number | null, limit: number) => (value === null ? null : spec.better === "higher" ? value >= limit : value <= limit);
  // A bound on ours' own value (oursLimit) or on the ratio (limit).
  const target = spec.oursLimit !== undefined
    ? { text: `ours ${sign} ${bound(spec.oursLimit)}x`, limit: spec.oursLimit, pass: failed.ours ? false : within(summary.ours, spec.oursLimit) }
    : spec.limit === undefined ? null
      : { text: `${sign} ${bound(spec.limit)}x`, limit: spec.limit, pass: failed.ours ? false : within(ratio, spec.limit) };
  return {
    id: spec.id, label: spec.label, unit: spec.unit, digits: spec.digits, better: spec.better,
    ours: summary.ours, llama: summary.llama, ratio,
    target,
    failed, spread: summary.spread === null ? null : { runs: summary.spread.pairs, min: summary.spread.min, max: summary.spread.max }, spreadOf: "pairs",
    unstable: summary.drift.unstable ? { ours: summary.drift.ours, llama: summary.drift.llama, factor: summary.drift.factor } : null,
  };
}

/** A single-sample row (peak RSS, start-to-ready): no pairs, no spread. */
function singleRow(id: string, label: string, unit: string, digits: number, ours: number | null, llama: number | null, limit?: number): Row {
  const ratio = ours !== null && llama !== null && llama > 0 ? ours / llama : null;
  return {
    id, label, unit, digits, better: "lower", ours, llama, ratio,
    target: limit === undefined ? null : { text: `≤ ${limit.toFixed(1)}x`, limit, pass: ratio === null ? null : ratio <= limit },
    failed: { ours: false, llama: false }, spread: null, spreadOf: "pairs", unstable: null,
  };
}

export async function runPaired(opts: BenchOptions, models: BenchModels, build: LlamaBuild): Promise<PairedResult> {
  const metrics: MetricRecord[] = [];
  const groups: GroupRecord[] = [];
  const chosen = PAIRED_METRICS.filter((m) => opts.only.has(m.metric));
  for (const group of Object.keys(GROUPS) as GroupId[]) {
    const inGroup = chosen.filter((m) => m.group === group);
    if (inGroup.length === 0) continue;
    progress(`group ${group}: ${inGroup.map((m) => m.metric).join(", ")}; ${opts.pairs} pairs of blocks each`);
    const { processes, sides } = await startGroup(group, opts, models, build);
    try {
      const stuck = new Set<Side>();
      for (const metric of inGroup) metrics.push(await runMetric(metric, sides, opts, stuck, build));
      for (const p of processes) if (p.server.exited()) throw new Error(`${p.label} exited during the runs; log: ${p.server.spec.logFile}`);
      const peak = Object.fromEntries(processes.map((p) => [p.label, p.server.peakRssBytes()]));
      groups.push({
        group, readySeconds: Object.fromEntries(processes.map((p) => [p.label, p.readySeconds])), peakRssBytes: peak,
        heldTogetherBytes: Object.values(peak).reduce((a, b) => a + b, 0),
        settings: Object.fromEntries(processes.map((p) => [p.label, settingsInLog(p.server.spec.logFile)])),
      });
    } finally {
      await Promise.all(processes.map((p) => p.server.stop()));
    }
  }

  const rows: Row[] = [];
  for (const metric of chosen) {
    const record = metrics.find((r) => r.metric === metric.metric);
    if (record) for (const spec of metric.rows) rows.push(pairedRow(spec, record, opts.driftFactor));
  }
  const mb = (b: number | undefined) => (b === undefined ? null : b / 1e6);
  const main = groups.find((g) => g.group === "main");
  if (main) {
    const chat = main.peakRssBytes["llama-server chat"];
    const embed = main.peakRssBytes["llama-server embed"];
    rows.push(
      singleRow("rss", "Peak RSS (llama-server: chat+embed)", "MB", 0, mb(main.peakRssBytes["ours"]), chat !== undefined && embed !== undefined ? mb(chat + embed) : null, 1.0),
      singleRow("rss_llama_chat", "  Peak RSS, llama-server chat", "MB", 0, null, mb(chat)),
      singleRow("rss_llama_embed", "  Peak RSS, llama-server embed", "MB", 0, null, mb(embed)),
      singleRow("ready", "Start to ready (llama-server: chat)", "s", 1, main.readySeconds["ours"] ?? null, main.readySeconds["llama-server chat"] ?? null),
    );
  }
  const tiny = groups.find((g) => g.group === "tiny");
  if (tiny) {
    rows.push(
      singleRow("rss_tiny", "Peak RSS, tiny-model servers", "MB", 0, mb(tiny.peakRssBytes["ours tiny"]), mb(tiny.peakRssBytes["llama-server tiny"]), 1.5),
      singleRow("ready_tiny", "Start to ready, tiny model", "s", 2, tiny.readySeconds["ours tiny"] ?? null, tiny.readySeconds["llama-server tiny"] ?? null),
    );
  }
  return { rows, metrics, groups, notes: pairedNotes(rows, metrics, groups, opts) };
}

function pairedNotes(rows: readonly Row[], metrics: readonly MetricRecord[], groups: readonly GroupRecord[], opts: BenchOptions): string[] {
  const notes = [
    `paired mode: both sides' servers loaded at once, one side working at a time; ${opts.pairs} pairs of blocks per metric in the order A B, B A, ... (A = ours); ` +
    `the ratio is the median of the per-pair ratios, min–max beside it; a row is UNSTABLE when one side's blocks differ by more than ${opts.driftFactor}x ` +
    `(${2.5}x for p99-like rows); peak RSS and start-to-ready are single samples`,
  ];
  for (const g of groups) for (const [label, settings] of Object.entries(g.settings)) notes.push(`${label} log: ${settings}`);
  for (const g of groups) notes.push(`group ${g.group}: held ${(g.heldTogetherBytes / 1e9).toFixed(2)} GB of peak RSS at once (${Object.entries(g.peakRssBytes).map(([k, v]) => `${k} ${(v / 1e6).toFixed(0)} MB`).join(", ")})`);
  for (const r of rows) {
    if (r.unstable) notes.push(`${r.id} UNSTABLE: blocks varied ${r.unstable.ours.toFixed(2)}x on ours and ${r.unstable.llama.toFixed(2)}x on llama-server (limit ${r.unstable.factor}x); median ratio would have been ${r.ratio?.toFixed(2) ?? "—"}`);
  }
  for (const m of metrics) {
    if (m.checked !== undefined) notes.push(`${m.metric}: ${m.checked}`);
    for (const e of m.errors) notes.push(`${m.metric}: ${e}`);
    const busy = m.blocks.filter((b) => b.otherCores > 0.25);
    if (busy.length > 0) notes.push(`${m.metric}: other processes took more than 0.25 cores during ${busy.length}/${m.blocks.length} blocks (up to ${Math.max(...busy.map((b) => b.otherCores)).toFixed(2)})`);
  }
  return notes;
}
