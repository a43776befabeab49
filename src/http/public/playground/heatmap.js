// @ts-check
// The similarity heat map: cosine matrix (pure), colour scale (pure) and the canvas drawing.

/**
 * Cosine similarity of every pair. The service's vectors are L2-normalised already; dividing by the
 * norms anyway keeps the picture right for any vectors.
 * @param {readonly (readonly number[])[]} vectors
 * @returns {number[][]}
 */
export function cosineMatrix(vectors) {
  const norms = vectors.map((v) => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0)) || 1);
  return vectors.map((a, i) => vectors.map((b, j) => {
    let dot = 0;
    for (let k = 0; k < a.length; k++) dot += (a[k] ?? 0) * (b[k] ?? 0);
    return dot / ((norms[i] ?? 1) * (norms[j] ?? 1));
  }));
}

// Viridis at five stops: perceptually even, readable for colour-blind people, light at the top.
/** @type {readonly [number, number, number][]} */
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

/**
 * The colour of a similarity: 0 (or below) is dark violet, 1 is yellow.
 * @param {number} value
 * @returns {[number, number, number]}
 */
export function similarityColour(value) {
  const t = Math.min(1, Math.max(0, value)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(t));
  const f = t - i;
  const a = /** @type {[number, number, number]} */ (STOPS[i]);
  const b = /** @type {[number, number, number]} */ (STOPS[i + 1]);
  /** @param {0 | 1 | 2} c */
  const mix = (c) => Math.round(a[c] + (b[c] - a[c]) * f);
  return [mix(0), mix(1), mix(2)];
}

/**
 * Black or white, whichever reads better on `rgb` (WCAG relative luminance).
 * @param {[number, number, number]} rgb
 */
export function textColourOn(rgb) {
  const [r, g, b] = rgb.map((c) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * (r ?? 0) + 0.7152 * (g ?? 0) + 0.0722 * (b ?? 0);
  return luminance > 0.18 ? "#000" : "#fff";
}

/**
 * The most and the least similar pair of different sentences: what the canvas's text alternative says.
 * @param {readonly string[]} labels
 * @param {readonly (readonly number[])[]} matrix
 */
export function describePairs(labels, matrix) {
  /** @type {{ a: string, b: string, value: number } | null} */
  let most = null;
  /** @type {{ a: string, b: string, value: number } | null} */
  let least = null;
  for (let i = 0; i < labels.length; i++) {
    for (let j = i + 1; j < labels.length; j++) {
      const value = matrix[i]?.[j] ?? 0;
      const pair = { a: labels[i] ?? "", b: labels[j] ?? "", value };
      if (most === null || value > most.value) most = pair;
      if (least === null || value < least.value) least = pair;
    }
  }
  return { most, least };
}

/**
 * Draws the matrix: one square per pair, coloured by similarity and labelled with its value; the
 * sentences along the left (numbered) and their numbers along the top; a colour legend below.
 * @param {HTMLCanvasElement} canvas
 * @param {readonly string[]} labels
 * @param {readonly (readonly number[])[]} matrix
 * @param {{ text: string, muted: string, font: string }} theme
 */
export function drawHeatmap(canvas, labels, matrix, theme) {
  const ratio = window.devicePixelRatio || 1;
  const cssWidth = Math.max(240, canvas.parentElement?.clientWidth ?? 480);
  const ctx = canvas.getContext("2d");
  if (ctx === null) return;
  const n = labels.length;
  const fontSize = cssWidth < 420 ? 12 : 14;
  ctx.font = `${fontSize}px ${theme.font}`;
  const rowLabels = labels.map((label, i) => `${i + 1}. ${label}`);
  const labelWidth = Math.min(cssWidth * 0.4, Math.max(...rowLabels.map((l) => ctx.measureText(l).width)) + 12);
  const top = fontSize + 10;
  const cell = Math.max(18, Math.min(72, Math.floor((cssWidth - labelWidth - 4) / n)));
  const legendHeight = 44;
  const cssHeight = top + cell * n + legendHeight;
  // Many sentences: the picture grows wider than its box and the box scrolls (never squeezed).
  const drawWidth = Math.max(cssWidth, Math.ceil(labelWidth + cell * n + 4));

  canvas.width = Math.round(drawWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  canvas.style.width = `${drawWidth}px`;
  canvas.style.height = `${cssHeight}px`;
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, drawWidth, cssHeight);
  ctx.font = `${fontSize}px ${theme.font}`;
  ctx.textBaseline = "middle";

  for (let i = 0; i < n; i++) {
    ctx.fillStyle = theme.text;
    ctx.textAlign = "left";
    ctx.fillText(fitText(ctx, rowLabels[i] ?? "", labelWidth - 10), 0, top + cell * i + cell / 2);
    ctx.textAlign = "center";
    ctx.fillText(String(i + 1), labelWidth + cell * i + cell / 2, top / 2);
    for (let j = 0; j < n; j++) {
      const value = matrix[i]?.[j] ?? 0;
      const rgb = similarityColour(value);
      ctx.fillStyle = `rgb(${rgb.join(",")})`;
      ctx.fillRect(labelWidth + cell * j, top + cell * i, cell - 2, cell - 2);
      if (cell >= 34) {
        ctx.fillStyle = textColourOn(rgb);
        ctx.font = `${Math.min(fontSize, cell / 3)}px ${theme.font}`;
        ctx.fillText(value.toFixed(2), labelWidth + cell * j + (cell - 2) / 2, top + cell * i + (cell - 2) / 2);
        ctx.font = `${fontSize}px ${theme.font}`;
      }
    }
  }

  // Legend: the scale from 0 to 1 with its ends named.
  const legendTop = top + cell * n + 12;
  const legendWidth = Math.min(cssWidth - labelWidth, 260);
  for (let x = 0; x < legendWidth; x++) {
    ctx.fillStyle = `rgb(${similarityColour(x / (legendWidth - 1)).join(",")})`;
    ctx.fillRect(labelWidth + x, legendTop, 1, 12);
  }
  ctx.fillStyle = theme.muted;
  ctx.textAlign = "left";
  ctx.fillText("≤ 0", labelWidth, legendTop + 24);
  ctx.textAlign = "right";
  ctx.fillText("1 (same meaning)", labelWidth + legendWidth, legendTop + 24);
  ctx.textAlign = "right";
  ctx.fillText("cosine", labelWidth - 10, legendTop + 6);
}

/**
 * @param {CanvasRenderingContext2D} ctx
 * @param {string} text
 * @param {number} width
 */
function fitText(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let cut = text;
  while (cut.length > 1 && ctx.measureText(`${cut}…`).width > width) cut = cut.slice(0, -1);
  return `${cut}…`;
}
