// From raw results to the comparison rows, the printed/markdown table and the JSON file.
import type { MetricName } from "./args.ts";
import type { AggregateResult, DecodeResult, EmbedResult, HealthResult, TtftResult } from "./measure.ts";
import type { CpuShare, GuardRecord } from "./cpu.ts";

export const HEALTH_P99_TARGET_MS = 5;
export const RSS_ALLOWANCE_BYTES = 150e6;

/** Everything measured on one side (a metric left out by --only stays undefined). */
export type SideResults = {
  decode?: DecodeResult;
  aggregate?: AggregateResult;
  ttft?: TtftResult;
  embed?: EmbedResult;
  health?: HealthResult;
  /** ours: the one process; llama-server: the chat and the embedding process. */
  peakRssBytes: { total?: number; chat?: number; embed?: number };
  cpu: Record<string, CpuShare>;
  /** Metrics that failed (message) or were skipped because an earlier one found the server stuck. */
  errors: Partial<Record<MetricName, string>>;
  /** Per server process: each measured repetition and the CPU other processes took during it. */
  interference: Record<string, GuardRecord[]>;
};

export type Direction = "higher" | "lower";

export type Row = {
  id: string;
  label: string;
  unit: string;
  digits: number;
  ours: number | null;
  llama: number | null;
  /** ours / llama-server. */
  ratio: number | null;
  better: Direction;
  target: { text: string; pass: boolean | null; ratioMark: number | null } | null;
  /** Set when a side's value is missing because its metric failed. */
  failed: { ours: boolean; llama: boolean };
};

/** Which metric produced each row, to mark rows of failed metrics. */
const ROW_METRIC: Record<string, MetricName> = {
  decode: "decode", aggregate: "aggregate", ttft_cold: "ttft", ttft_warm: "ttft", ttft_warm_over_cold: "ttft",
  embed_single: "embed", embed_concurrent: "embed", health_p50: "health", health_p99: "health",
};

function ratioOf(ours: number | null, llama: number | null): number | null {
  return ours !== null && llama !== null && llama > 0 ? ours / llama : null;
}

type RowInput = Omit<Row, "ratio" | "target" | "failed"> & { target?: (ratio: number | null) => Row["target"] };

function row(input: RowInput): Row {
  const ratio = ratioOf(input.ours, input.llama);
  const { target, ...rest } = input;
  return { ...rest, ratio, target: target ? target(ratio) : null, failed: { ours: false, llama: false } };
}

/** "ours/llama-server ≥ 1.0" or "≤ 1.0" as a target. */
const ratioTarget = (better: Direction, text: string) => (ratio: number | null): Row["target"] => ({
  text,
  pass: ratio === null ? null : better === "higher" ? ratio >= 1 : ratio <= 1,
  ratioMark: 1,
});

const v = <T>(x: T | undefined, f: (x: T) => number): number | null => (x === undefined ? null : f(x));

export function buildRows(ours: SideResults, llama: SideResults): Row[] {
  const mb = (b: number | undefined) => (b === undefined ? null : b / 1e6);
  const llamaRssSum = llama.peakRssBytes.chat !== undefined && llama.peakRssBytes.embed !== undefined
    ? llama.peakRssBytes.chat + llama.peakRssBytes.embed : undefined;
  const oursP99 = v(ours.health, (h) => h.p99Ms);
  const llamaP99 = v(llama.health, (h) => h.p99Ms);
  const rows = [
    row({ id: "decode", label: "Single-stream decode (128 tok)", unit: "tok/s", digits: 2, better: "higher",
      ours: v(ours.decode, (d) => d.tokPerS), llama: v(llama.decode, (d) => d.tokPerS), target: ratioTarget("higher", "≥ 1.0x") }),
    row({ id: "aggregate", label: "Aggregate decode, 4 clients", unit: "tok/s", digits: 2, better: "higher",
      ours: v(ours.aggregate, (d) => d.tokPerS), llama: v(llama.aggregate, (d) => d.tokPerS), target: ratioTarget("higher", "≥ 1.0x") }),
    row({ id: "ttft_cold", label: "TTFT cold (new ~400-tok prompt)", unit: "ms", digits: 0, better: "lower",
      ours: v(ours.ttft, (t) => t.coldMs), llama: v(llama.ttft, (t) => t.coldMs) }),
    row({ id: "ttft_warm", label: "TTFT warm (same system prompt)", unit: "ms", digits: 0, better: "lower",
      ours: v(ours.ttft, (t) => t.warmMs), llama: v(llama.ttft, (t) => t.warmMs), target: ratioTarget("lower", "≤ llama-server") }),
    row({ id: "ttft_warm_over_cold", label: "TTFT warm/cold", unit: "ratio", digits: 3, better: "lower",
      ours: v(ours.ttft, (t) => t.warmOverCold), llama: v(llama.ttft, (t) => t.warmOverCold) }),
    row({ id: "embed_single", label: "Embeddings, 1 request × 256", unit: "texts/s", digits: 0, better: "higher",
      ours: v(ours.embed, (e) => e.singleTextsPerS), llama: v(llama.embed, (e) => e.singleTextsPerS), target: ratioTarget("higher", "≥ 1.0x") }),
    row({ id: "embed_concurrent", label: "Embeddings, 32 clients × 8", unit: "texts/s", digits: 0, better: "higher",
      ours: v(ours.embed, (e) => e.concurrentTextsPerS), llama: v(llama.embed, (e) => e.concurrentTextsPerS), target: ratioTarget("higher", "≥ 1.0x") }),
    row({ id: "health_p50", label: "/health p50, 64 conns, generating", unit: "ms", digits: 2, better: "lower",
      ours: v(ours.health, (h) => h.p50Ms), llama: v(llama.health, (h) => h.p50Ms) }),
    row({ id: "health_p99", label: "/health p99, 64 conns, generating", unit: "ms", digits: 2, better: "lower",
      ours: oursP99, llama: llamaP99,
      target: () => ({ text: `ours < ${HEALTH_P99_TARGET_MS} ms`, pass: oursP99 === null ? null : oursP99 < HEALTH_P99_TARGET_MS,
        ratioMark: llamaP99 !== null && llamaP99 > 0 ? HEALTH_P99_TARGET_MS / llamaP99 : null }) }),
    row({ id: "rss", label: "Peak RSS (llama-server: chat+embed)", unit: "MB", digits: 0, better: "lower",
      ours: mb(ours.peakRssBytes.total), llama: mb(llamaRssSum),
      target: () => ({ text: "≤ llama-server + 150 MB",
        pass: ours.peakRssBytes.total === undefined || llamaRssSum === undefined ? null : ours.peakRssBytes.total <= llamaRssSum + RSS_ALLOWANCE_BYTES,
        ratioMark: llamaRssSum === undefined ? null : (llamaRssSum + RSS_ALLOWANCE_BYTES) / llamaRssSum }) }),
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

function fmt(value: number | null, digits: number, failed = false): string {
  if (failed) return "ERROR";
  if (value === null || !Number.isFinite(value)) return "—";
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** Two decimals, or three when two would print a ratio as exactly 1.00 that is not (0.999x fails ≥ 1.0x). */
export function formatRatio(ratio: number): string {
  const two = ratio.toFixed(2);
  return two === "1.00" && ratio !== 1 ? `${ratio.toFixed(3)}x` : `${two}x`;
}

function passCell(target: Row["target"]): string {
  if (target === null) return "";
  return target.pass === null ? "n/a" : target.pass ? "PASS" : "FAIL";
}

/** The table as markdown (also what is printed: it reads fine in a terminal). Columns are padded. */
export function markdownTable(rows: readonly Row[]): string {
  const header = ["Metric", "Unit", "Ours", "llama-server", "Ours/llama", "Target", "Pass"];
  const body = rows.map((r) => [
    r.label, r.unit, fmt(r.ours, r.digits, r.failed.ours), fmt(r.llama, r.digits, r.failed.llama), r.ratio === null ? "—" : formatRatio(r.ratio),
    r.target?.text ?? "", passCell(r.target),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => (b[i] ?? "").length)));
  const numeric = new Set([2, 3, 4]);
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (numeric.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (numeric.has(i) ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`;
  return [line(header), rule, ...body.map(line)].join("\n");
}
