// Writes bench/results/: latest.json (+ a timestamped copy), latest.md (the table, the notes and what each
// server was given) and latest.svg (ratios); and, for a full run, the README's table.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { projectRoot } from "../../scripts/lib/llama-source.ts";
import { bindingInLog } from "./binding.ts";
import { markdownTable, type Row } from "./report.ts";
import { ratioChartSvg } from "./svg.ts";

export const resultsDir = path.join(projectRoot, "bench", "results");
const readmeFile = path.join(projectRoot, "README.md");
const README_START = "<!-- bench:start -->";
const README_END = "<!-- bench:end -->";
// The opt-in rows' table (retrieval models, prompt cache): written by a run of every opt-in metric.
const README_OPT_IN_START = "<!-- bench-opt-in:start -->";
const README_OPT_IN_END = "<!-- bench-opt-in:end -->";

export type ResultsFile = {
  version: 2;
  startedAt: string;
  finishedAt: string;
  wallSeconds: number;
  /** The table: with several runs, medians and each ratio's min–max. */
  rows: Row[];
  notes: string[];
  /** Command lines and environment each server got: "what flags each side gets". */
  flags: string[];
  [key: string]: unknown;
};

/**
 * `name`: "latest" for a full run; "opt-in" for a run of the opt-in rows; "partial" for any other subset,
 * so a partial run never overwrites the files the README's tables come from.
 */
export function writeResults(results: ResultsFile, subtitle: string, name: "latest" | "opt-in" | "partial" = "latest"): { json: string; copy: string; md: string; svg: string } {
  mkdirSync(resultsDir, { recursive: true });
  const json = path.join(resultsDir, `${name}.json`);
  const copy = path.join(resultsDir, `${results.startedAt.replace(/[:.]/g, "-")}.json`);
  const md = path.join(resultsDir, `${name}.md`);
  const svg = path.join(resultsDir, `${name}.svg`);
  const text = `${JSON.stringify(results, null, 2)}\n`;
  writeFileSync(json, text);
  writeFileSync(copy, text);
  writeFileSync(md, markdownDocument(results, subtitle, path.basename(svg)));
  writeFileSync(svg, ratioChartSvg(results.rows, subtitle));
  return { json, copy, md, svg };
}

function markdownDocument(results: ResultsFile, subtitle: string, svgName: string): string {
  return [
    "# Benchmark: ours vs llama-server",
    "",
    subtitle,
    "",
    markdownTable(results.rows),
    "",
    ...(results.notes.length > 0 ? ["Notes:", "", ...results.notes.map((n) => `- ${n}`), ""] : []),
    "What each server got:",
    "",
    ...results.flags.map((f) => `- ${f}`),
    "",
    `![ours / llama-server ratios](${svgName})`,
    "",
  ].join("\n");
}

/**
 * Replaces what lies between the README's bench markers with this run's summary and table. Returns false
 * (and leaves the file alone) when the markers are missing.
 */
export function updateReadme(rows: readonly Row[], summary: string, file = readmeFile, table: "main" | "opt-in" = "main"): boolean {
  const [open, close] = table === "main" ? [README_START, README_END] : [README_OPT_IN_START, README_OPT_IN_END];
  const text = readFileSync(file, "utf8");
  const start = text.indexOf(open);
  const end = text.indexOf(close);
  if (start < 0 || end < start) return false;
  const block = `${open}\n${summary}\n\n${markdownTable(rows)}\n${close}`;
  writeFileSync(file, `${text.slice(0, start)}${block}${text.slice(end + close.length)}`);
  return true;
}

/**
 * What a server's log says it really ran with (threads; llama-server's flash-attention choice), to confirm
 * both sides used the same settings.
 */
export function settingsInLog(logFile: string): string {
  let text: string;
  try {
    text = readFileSync(logFile, "utf8");
  } catch {
    return "no log";
  }
  // Ours logs pino JSON lines; the chat engine's line carries the context's actual thread count.
  const chatLine = text.split("\n").find((l) => l.includes('"msg":"chat model loaded"'));
  if (chatLine !== undefined) {
    try {
      const fields = JSON.parse(chatLine) as Record<string, unknown>;
      const shown = ["threads", "nice", "slots", "contextPerSlot", "engine", "flashAttention", "llamaBuild"].filter((k) => fields[k] !== undefined).map((k) => `${k}=${String(fields[k])}`);
      const binding = bindingInLog(text);
      return `chat model loaded: ${shown.join(", ") || "no settings logged"}${binding === null ? "" : `; binding ${binding}`}`;
    } catch {
      return "unparsable log line";
    }
  }
  const llama = [...new Set([...text.matchAll(/n_threads(?:_batch)? = \d+|n_slots = \d+, n_ctx_slot = \d+, kv_unified = '\w+'|flash_attn\s*= \w+|Flash Attention was \w+, set to \w+/g)].map((m) => m[0].replace(/\s+/g, " ")))];
  return llama.length > 0 ? llama.join(", ") : "not reported";
}
