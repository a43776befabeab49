// Writes bench/results/: latest.json (+ a timestamped copy), latest.md (the table) and latest.svg (ratios).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { projectRoot } from "../../scripts/lib/llama-source.ts";
import { markdownTable, type Row } from "./report.ts";
import { ratioChartSvg } from "./svg.ts";

export const resultsDir = path.join(projectRoot, "bench", "results");

export type ResultsFile = {
  version: 1;
  startedAt: string;
  finishedAt: string;
  wallSeconds: number;
  rows: Row[];
  notes: string[];
  [key: string]: unknown;
};

export function writeResults(results: ResultsFile, subtitle: string): { json: string; copy: string; md: string; svg: string } {
  mkdirSync(resultsDir, { recursive: true });
  const json = path.join(resultsDir, "latest.json");
  const copy = path.join(resultsDir, `${results.startedAt.replace(/[:.]/g, "-")}.json`);
  const md = path.join(resultsDir, "latest.md");
  const svg = path.join(resultsDir, "latest.svg");
  const text = `${JSON.stringify(results, null, 2)}\n`;
  writeFileSync(json, text);
  writeFileSync(copy, text);
  writeFileSync(md, markdownDocument(results, subtitle));
  writeFileSync(svg, ratioChartSvg(results.rows, subtitle));
  return { json, copy, md, svg };
}

function markdownDocument(results: ResultsFile, subtitle: string): string {
  return [
    "# Benchmark: ours vs llama-server",
    "",
    subtitle,
    "",
    markdownTable(results.rows),
    "",
    ...(results.notes.length > 0 ? ["Notes:", "", ...results.notes.map((n) => `- ${n}`), ""] : []),
    "![ours / llama-server ratios](latest.svg)",
    "",
  ].join("\n");
}

/** Thread counts the servers report in their logs, to confirm both really used the same number. */
export function threadsInLog(logFile: string): string {
  let text: string;
  try {
    text = readFileSync(logFile, "utf8");
  } catch {
    return "no log";
  }
  // Ours logs pino JSON lines; the chat engine's line carries the context's actual thread count.
  const chatLine = text.split("\n").find((l) => l.includes('"msg":"chat model loaded"'));
  if (chatLine !== undefined) {
    const threads = (JSON.parse(chatLine) as { threads?: number }).threads;
    return `chat context threads=${threads ?? "?"}`;
  }
  const llama = [...new Set([...text.matchAll(/n_threads(?:_batch)? = \d+/g)].map((m) => m[0]))];
  return llama.length > 0 ? llama.join(", ") : "not reported";
}
