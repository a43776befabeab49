// From raw results to the comparison rows, the printed/markdown table and the JSON file.
import type { MetricName } from "./args.ts";
import type { CpuShare, GuardRecord } from "./cpu.ts";
import type { AggregateResult, DecodeResult, EmbedLatency, EmbedLatencyLoaded, EmbedResult, HealthResult, LateResult, TtftResult } from "./measure.ts";
import { median } from "./stats.ts";

/** Everything measured on one side in one run (a metric left out by --only stays undefined). */
export type SideResults = {
  decode?: DecodeResult;
  /** Single stream on the tiny model (its own server process on each side). */
  tiny?: DecodeResult;
  aggregate4?: AggregateResult;
  aggregate8?: AggregateResult;
  ttft?: TtftResult;
  late?: LateResult;
  embed?: EmbedResult;
  /** One short text: on the idle server, and (ours only) while the chat model generates. */
  embedLatency?: { idle?: EmbedLatency; whileGenerating?: EmbedLatencyLoaded };
  health?: HealthResult;
  /** ours: the main process (and the tiny one); llama-server: the chat, embedding (and tiny) processes. */
  peakRssBytes: { total?: number; chat?: number; embed?: number; tiny?: number };
  cpu: Record<string, CpuShare>;
  /** Metrics that failed (message) or were skipped because an earlier one found the server stuck. */
  errors: Partial<Record<MetricName, string>>;
  /** Per server process: each measured repetition and the CPU other processes took during it. */
  interference: Record<string, GuardRecord[]>;
};

export type Direction = "higher" | "lower";

/** Every target is a bound on ours/llama-server: at least `limit` (higher is better) or at most `limit`. */
export type Target = { text: string; limit: number; pass: boolean | null };

export type Row = {
  id: string;
  label: string;
  unit: string;
  digits: number;
  ours: number | null;
  llama: number | null;
  /** ours / llama-server (with several runs: the median of the runs' ratios). */
  ratio: number | null;
  better: Direction;
  target: Target | null;
  /** Set when a side's value is missing because its metric failed. */
  failed: { ours: boolean; llama: boolean };
  /** With several runs (or pairs): how many gave a ratio, and the lowest and highest of them. */
  spread: { runs: number; min: number; max: number } | null;
  /** What `spread` counts: whole sequential runs, or the paired mode's block pairs. */
  spreadOf?: "runs" | "pairs";
  /**
   * Paired mode: a side's blocks differed by more than `factor` (largest over smallest) within the run; the
   * table then shows UNSTABLE instead of the ratio, and no PASS/FAIL.
   */
  unstable?: { ours: number; llama: number; factor: number } | null;
};

/** Which metric produced each row, to mark rows of failed metrics. */
const ROW_METRIC: Record<string, MetricName> = {
  decode: "decode", tiny_decode: "tiny", aggregate4: "aggregate", aggregate8: "aggregate",
  ttft_cold: "ttft", ttft_warm: "ttft", ttft_warm_over_cold: "ttft", ttft_late: "late",
  embed_single: "embed", embed_concurrent: "embed", embed_latency: "embed", embed_latency_idle: "embed",
  health_p50: "health", health_p99: "health",
};

function ratioOf(ours: number | null, llama: number | null): number | null {
  return ours !== null && llama !== null && llama > 0 ? ours / llama : null;
}

function passes(better: Direction, limit: number, ratio: number | null): boolean | null {
  if (ratio === null) return null;
  return better === "higher" ? ratio >= limit : ratio <= limit;
}

type RowInput = Omit<Row, "ratio" | "target" | "failed" | "spread"> & { limit?: number };

function row(input: RowInput): Row {
  const ratio = ratioOf(input.ours, input.llama);
  const { limit, ...rest } = input;
  const target = limit === undefined ? null : { text: `${input.better === "higher" ? "≥" : "≤"} ${limit.toFixed(1)}x`, limit, pass: passes(input.better, limit, ratio) };
  return { ...rest, ratio, target, failed: { ours: false, llama: false }, spread: null };
}

const v = <T>(x: T | undefined, f: (x: T) => number): number | null => (x === undefined ? null : f(x));

export function buildRows(ours: SideResults, llama: SideResults, decodeTokens: number, tinyTokens: number): Row[] {
  const mb = (b: number | undefined) => (b === undefined ? null : b / 1e6);
  const llamaRssSum = llama.peakRssBytes.chat !== undefined && llama.peakRssBytes.embed !== undefined
    ? llama.peakRssBytes.chat + llama.peakRssBytes.embed : undefined;
  const rows = [
    row({ id: "decode", label: `Single-stream decode (${decodeTokens} tok)`, unit: "tok/s", digits: 2, better: "higher", limit: 1.0,
      ours: v(ours.decode, (d) => d.tokPerS), llama: v(llama.decode, (d) => d.tokPerS) }),
    row({ id: "tiny_decode", label: `Tiny model decode, overhead-bound (${tinyTokens} tok)`, unit: "tok/s", digits: 1, better: "higher", limit: 0.9,
      ours: v(ours.tiny, (d) => d.tokPerS), llama: v(llama.tiny, (d) => d.tokPerS) }),
    row({ id: "aggregate4", label: "Aggregate decode, 4 clients", unit: "tok/s", digits: 2, better: "higher", limit: 1.0,
      ours: v(ours.aggregate4, (d) => d.tokPerS), llama: v(llama.aggregate4, (d) => d.tokPerS) }),
    row({ id: "aggregate8", label: "Aggregate decode, 8 clients", unit: "tok/s", digits: 2, better: "higher", limit: 1.0,
      ours: v(ours.aggregate8, (d) => d.tokPerS), llama: v(llama.aggregate8, (d) => d.tokPerS) }),
    row({ id: "ttft_cold", label: "TTFT cold (new ~400-tok prompt)", unit: "ms", digits: 0, better: "lower", limit: 1.0,
      ours: v(ours.ttft, (t) => t.coldMs), llama: v(llama.ttft, (t) => t.coldMs) }),
    row({ id: "ttft_warm", label: "TTFT warm (same system prompt)", unit: "ms", digits: 0, better: "lower", limit: 1.0,
      ours: v(ours.ttft, (t) => t.warmMs), llama: v(llama.ttft, (t) => t.warmMs) }),
    row({ id: "ttft_warm_over_cold", label: "TTFT warm/cold", unit: "ratio", digits: 3, better: "lower",
      ours: v(ours.ttft, (t) => t.warmOverCold), llama: v(llama.ttft, (t) => t.warmOverCold) }),
    row({ id: "ttft_late", label: "TTFT late arrival (3 streams running)", unit: "ms", digits: 0, better: "lower", limit: 1.0,
      ours: v(ours.late, (t) => t.ttftMs), llama: v(llama.late, (t) => t.ttftMs) }),
    row({ id: "embed_single", label: "Embeddings, 1 request × 256", unit: "texts/s", digits: 0, better: "higher", limit: 1.0,
      ours: v(ours.embed, (e) => e.singleTextsPerS), llama: v(llama.embed, (e) => e.singleTextsPerS) }),
    row({ id: "embed_concurrent", label: "Embeddings, 32 clients × 8", unit: "texts/s", digits: 0, better: "higher", limit: 1.0,
      ours: v(ours.embed, (e) => e.concurrentTextsPerS), llama: v(llama.embed, (e) => e.concurrentTextsPerS) }),
    // The issue's target: ours while a generation runs against llama-server's embedding server alone.
    row({ id: "embed_latency", label: "Embed 1 text: ours generating, llama idle", unit: "ms", digits: 1, better: "lower", limit: 1.2,
      ours: v(ours.embedLatency?.whileGenerating, (e) => e.medianMs), llama: v(llama.embedLatency?.idle, (e) => e.medianMs) }),
    row({ id: "embed_latency_idle", label: "Embed 1 text, both idle", unit: "ms", digits: 1, better: "lower",
      ours: v(ours.embedLatency?.idle, (e) => e.medianMs), llama: v(llama.embedLatency?.idle, (e) => e.medianMs) }),
    row({ id: "health_p50", label: "/health p50, 64 conns, generating", unit: "ms", digits: 2, better: "lower",
      ours: v(ours.health, (h) => h.p50Ms), llama: v(llama.health, (h) => h.p50Ms) }),
    row({ id: "health_p99", label: "/health p99, 64 conns, generating", unit: "ms", digits: 2, better: "lower", limit: 1.5,
      ours: v(ours.health, (h) => h.p99Ms), llama: v(llama.health, (h) => h.p99Ms) }),
    row({ id: "rss", label: "Peak RSS (llama-server: chat+embed)", unit: "MB", digits: 0, better: "lower", limit: 1.0,
      ours: mb(ours.peakRssBytes.total), llama: mb(llamaRssSum) }),
    row({ id: "rss_llama_chat", label: "  Peak RSS, llama-server chat", unit: "MB", digits: 0, better: "lower", ours: null, llama: mb(llama.peakRssBytes.chat) }),
    row({ id: "rss_llama_embed", label: "  Peak RSS, llama-server embed", unit: "MB", digits: 0, better: "lower", ours: null, llama: mb(llama.peakRssBytes.embed) }),
  ];
  for (const r of rows) {
    const metric = ROW_METRIC[r.id];
    if (metric === undefined) continue;
    r.failed = { ours: ours.errors[metric] !== undefined, llama: llama.errors[metric] !== undefined };
    // A failed side fails a target that compares against it only if it is ours.
    if (r.failed.ours && r.target) r.target.pass = false;
  }
  return rows;
}

/**
 * Several runs' rows into one: the median of each side's value, the median of the runs' ratios (each run's
 * ratio compares servers measured minutes apart; a ratio of medians would mix runs) with its min–max, and
 * the target judged on that median ratio.
 */
export function combineRuns(perRun: readonly (readonly Row[])[]): Row[] {
  const first = perRun[0];
  if (first === undefined) return [];
  if (perRun.length === 1) return first.map((r) => ({ ...r }));
  return first.map((template) => {
    const same = perRun.map((rows) => rows.find((r) => r.id === template.id)).filter((r): r is Row => r !== undefined);
    const values = (pick: (r: Row) => number | null) => same.map(pick).filter((x): x is number => x !== null && Number.isFinite(x));
    const medianOrNull = (xs: number[]) => (xs.length === 0 ? null : median(xs));
    const ratios = values((r) => r.ratio);
    const ratio = medianOrNull(ratios);
    const failed = { ours: same.every((r) => r.failed.ours), llama: same.every((r) => r.failed.llama) };
    const anyOursFailed = same.some((r) => r.failed.ours);
    const target = template.target === null ? null
      : { ...template.target, pass: anyOursFailed ? false : passes(template.better, template.target.limit, ratio) };
    return {
      ...template, ours: medianOrNull(values((r) => r.ours)), llama: medianOrNull(values((r) => r.llama)), ratio, target, failed,
      spread: ratios.length === 0 ? null : { runs: ratios.length, min: Math.min(...ratios), max: Math.max(...ratios) },
    };
  });
}

function fmt(value: number | null, digits: number, failed = false): string {
  if (failed) return "ERROR";
  if (value === null || !Number.isFinite(value)) return "—";
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/**
 * Two decimals, or three when two would print a ratio as exactly its target's limit (or 1.00) that is
 * not (0.899x fails ≥ 0.9x).
 */
export function formatRatio(ratio: number, limit = 1): string {
  const two = ratio.toFixed(2);
  const onBoundary = (two === limit.toFixed(2) && ratio !== limit) || (two === "1.00" && ratio !== 1);
  return onBoundary ? `${ratio.toFixed(3)}x` : `${two}x`;
}

function passCell(target: Row["target"], unstable: boolean): string {
  if (target === null) return "";
  if (unstable) return "—";
  return target.pass === null ? "n/a" : target.pass ? "PASS" : "FAIL";
}

/** A row some metric produced (or tried to): rows of metrics left out by --only are not shown. */
export function measured(r: Row): boolean {
  return r.ours !== null || r.llama !== null || r.failed.ours || r.failed.llama;
}

function spreadCell(r: Row): string {
  if (r.spread === null) return "—";
  const limit = r.target?.limit;
  return `${formatRatio(r.spread.min, limit).slice(0, -1)}–${formatRatio(r.spread.max, limit)}`;
}

/**
 * The table as markdown (also what is printed: it reads fine in a terminal). Columns are padded. With
 * several runs, the values are medians and a column gives the min–max of the ratio.
 */
export function markdownTable(allRows: readonly Row[]): string {
  const rows = allRows.filter(measured);
  const withSpread = rows.some((r) => r.spread !== null);
  const runs = Math.max(0, ...rows.map((r) => r.spread?.runs ?? 0));
  const spreadOf = rows.find((r) => r.spread !== null)?.spreadOf ?? "runs";
  const header = ["Metric", "Unit", "Ours", "llama-server", "Ours/llama", ...(withSpread ? [`Min–max (${runs} ${spreadOf})`] : []), "Target", "Pass"];
  const ratioCell = (r: Row) => (r.unstable ? "UNSTABLE" : r.ratio === null ? "—" : formatRatio(r.ratio, r.target?.limit));
  const body = rows.map((r) => [
    r.label, r.unit, fmt(r.ours, r.digits, r.failed.ours), fmt(r.llama, r.digits, r.failed.llama), ratioCell(r),
    ...(withSpread ? [spreadCell(r)] : []), r.target?.text ?? "", passCell(r.target, Boolean(r.unstable)),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? "").length)));
  const numeric = new Set(withSpread ? [2, 3, 4, 5] : [2, 3, 4]);
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (numeric.has(i) ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`;
  return [line(header), rule, ...body.map(line)].join("\n");
}
