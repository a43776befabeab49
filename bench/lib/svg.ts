// The ratios as a hand-written SVG bar chart: one horizontal bar per metric, drawn from the 1.0 line on a
// log scale (so 0.5x and 2x are equally far from parity), a diamond at each target, green/red by pass.
import { formatRatio, measured, type Row } from "./report.ts";

const WIDTH = 1140;
const LABEL_W = 330;
const PLOT_X0 = LABEL_W + 10;
const PLOT_X1 = WIDTH - 260;
/** Right-hand column with the raw numbers behind each ratio. */
const RAW_X = WIDTH - 10;
const ROW_H = 46;
const TOP = 92;
const MIN_RATIO = 1 / 8;
const MAX_RATIO = 8;
const COLORS = { pass: "#2e9e4f", fail: "#d1453b", none: "#8a8f98" } as const;

function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function x(ratio: number): number {
  const clamped = Math.min(MAX_RATIO, Math.max(MIN_RATIO, ratio));
  const t = (Math.log2(clamped) - Math.log2(MIN_RATIO)) / (Math.log2(MAX_RATIO) - Math.log2(MIN_RATIO));
  return PLOT_X0 + t * (PLOT_X1 - PLOT_X0);
}

function gridLines(bottom: number): string[] {
  const ticks = [1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8];
  return ticks.flatMap((t) => {
    const label = `${t}x`;
    return [
      `<line x1="${x(t)}" y1="${TOP - 8}" x2="${x(t)}" y2="${bottom}" stroke="${t === 1 ? "#222" : "#e3e5e8"}" stroke-width="${t === 1 ? 2 : 1}"/>`,
      `<text x="${x(t)}" y="${TOP - 14}" font-size="12" text-anchor="middle" fill="#555">${label}</text>`,
    ];
  });
}

function formatRaw(value: number | null, digits: number, unit: string): string {
  return value === null ? "—" : `${value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })} ${escapeXml(unit)}`;
}

function barColor(r: Row): string {
  if (r.target?.pass === true) return COLORS.pass;
  if (r.target?.pass === false) return COLORS.fail;
  return COLORS.none;
}

function rowElements(r: Row, i: number): string[] {
  const y = TOP + i * ROW_H;
  const mid = y + ROW_H / 2;
  const out = [
    `<text x="10" y="${mid - 3}" font-size="14" fill="#111">${escapeXml(r.label.trim())}</text>`,
    `<text x="10" y="${mid + 14}" font-size="11" fill="#666">${r.better} is better · ${escapeXml(r.unit)}${r.target ? ` · target ${escapeXml(r.target.text)}` : ""}</text>`,
  ];
  out.push(`<text x="${RAW_X}" y="${mid - 3}" font-size="12" text-anchor="end" fill="#111">ours ${formatRaw(r.ours, r.digits, r.unit)}</text>`,
    `<text x="${RAW_X}" y="${mid + 13}" font-size="12" text-anchor="end" fill="#555">llama-server ${formatRaw(r.llama, r.digits, r.unit)}</text>`);
  if (r.ratio === null) {
    const why = r.failed.ours || r.failed.llama ? `failed: ${r.failed.ours ? "ours" : "llama-server"} (see notes)` : "not measured";
    out.push(`<text x="${x(1) + 8}" y="${mid + 4}" font-size="12" fill="${r.failed.ours ? COLORS.fail : "#999"}">${why}</text>`);
    return out;
  }
  const x0 = Math.min(x(1), x(r.ratio));
  const w = Math.max(2, Math.abs(x(r.ratio) - x(1)));
  const offScale = r.ratio > MAX_RATIO || r.ratio < MIN_RATIO ? " (off scale)" : "";
  const labelX = r.ratio >= 1 ? x(r.ratio) + 6 : x(r.ratio) - 6;
  out.push(
    `<rect x="${x0}" y="${mid - 10}" width="${w}" height="20" rx="3" fill="${barColor(r)}"/>`,
    `<text x="${labelX}" y="${mid + 5}" font-size="13" font-weight="bold" text-anchor="${r.ratio >= 1 ? "start" : "end"}" fill="#111">${r.unstable ? "UNSTABLE " : ""}${formatRatio(r.ratio, r.target?.limit)}${offScale}</text>`,
  );
  if (r.spread !== null && r.spread.runs > 1) {
    // The runs' min–max of the ratio, as a whisker across the bar.
    const [lo, hi] = [x(r.spread.min), x(r.spread.max)];
    out.push(`<path d="M ${lo} ${mid - 5} v 10 M ${lo} ${mid} H ${hi} M ${hi} ${mid - 5} v 10" stroke="#222" stroke-width="1.5" fill="none"><title>${r.spread.runs} ${r.spreadOf ?? "runs"}: ${escapeXml(formatRatio(r.spread.min, r.target?.limit))}–${escapeXml(formatRatio(r.spread.max, r.target?.limit))}</title></path>`);
  }
  const mark = r.target?.limit;
  if (mark !== undefined) {
    const mx = x(mark);
    out.push(`<path d="M ${mx} ${mid - 19} l 6 6 l -6 6 l -6 -6 z" fill="#f2b01e" stroke="#222" stroke-width="1"><title>target ${escapeXml(r.target?.text ?? "")}</title></path>`);
  }
  return out;
}

export function ratioChartSvg(rows: readonly Row[], subtitle: string): string {
  const shown = rows.filter((r) => measured(r) && r.id !== "rss_llama_chat" && r.id !== "rss_llama_embed");
  const bottom = TOP + shown.length * ROW_H;
  const height = bottom + 60;
  const legendY = bottom + 30;
  const legend = [
    [COLORS.pass, "meets target"], [COLORS.fail, "misses target"], [COLORS.none, "no target"],
  ].map(([color, text], i) => `<rect x="${10 + i * 150}" y="${legendY - 11}" width="14" height="14" fill="${color}"/><text x="${30 + i * 150}" y="${legendY}" font-size="12">${text}</text>`);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="26" font-size="18" font-weight="bold">Ours ÷ llama-server (log scale; bar from 1.0 = parity)</text>`,
    `<text x="10" y="46" font-size="12" fill="#555">${escapeXml(subtitle)}</text>`,
    `<text x="${x(1) - 8}" y="${TOP - 30}" font-size="11" text-anchor="end" fill="#555">← ours lower</text>`,
    `<text x="${x(1) + 8}" y="${TOP - 30}" font-size="11" fill="#555">ours higher →</text>`,
    ...gridLines(bottom),
    ...shown.flatMap(rowElements),
    ...legend,
    `<path d="M ${480} ${legendY - 12} l 6 6 l -6 6 l -6 -6 z" fill="#f2b01e" stroke="#222"/><text x="${492}" y="${legendY}" font-size="12">target (as a ratio)</text>`,
    `<path d="M 650 ${legendY - 9} v 10 M 650 ${legendY - 4} H 680 M 680 ${legendY - 9} v 10" stroke="#222" stroke-width="1.5" fill="none"/><text x="688" y="${legendY}" font-size="12">min–max over runs</text>`,
    `</svg>`,
    "",
  ].join("\n");
}
