// Issue 25's "query during bulk" row: an app indexes documents (one request of 2,048 passages of ~45 words)
// while a student asks a question (one short text). Per block, on one side's embedding server: the query's
// idle latency; the bulk request alone (its throughput, and the time of one decode: its duration over the
// decodes the server's /metrics counted); then the bulk request again with queries sent one after the other
// from 0.5 s in until it ends. Ours has to answer each query in <= 1.5x its idle latency plus one decode,
// and keep the bulk request's throughput within 5% of the bulk request alone (which is batched exactly as
// before fair batching: one request's decodes are full either way).
import { median } from "./stats.ts";
import type { EmbedTarget } from "./targets.ts";

/** The pattern: the query starts half a second into the bulk request. */
const QUERY_START_MS = 500;
/** Queries sent during one bulk request, at most (one after the other). */
const MAX_QUERIES = 12;
const IDLE_QUERIES = 10;

const WORDS = ("el jaguar vive en la selva amazónica y caza de noche cerca de los ríos mientras los estudiantes " +
  "leen sobre su hábitat la lluvia cae sobre los árboles altos y las aves cantan al amanecer en el bosque").split(" ");

/** `count` passages of ~45 words, the same on both sides. */
export function bulkPassages(count: number): string[] {
  return Array.from({ length: count }, (_, i) => `Documento ${i}: ${Array.from({ length: 44 }, (_, j) => WORDS[(i * 13 + j * 7) % WORDS.length]).join(" ")}.`);
}

const queryText = (block: number, i: number) => `¿Dónde vive el jaguar? Pregunta ${block}-${i}`;

/** Embedding decodes the server has run so far: ours' bora_embed_batch_texts_count, llama-server's llamacpp:n_decode_total. */
export async function decodesSoFar(baseUrl: string): Promise<number> {
  const text = await (await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  let sum = 0;
  let found = false;
  for (const line of text.split("\n")) {
    if (!/^(bora_embed_batch_texts_count|llamacpp:n_decode_total)[{ ]/.test(line)) continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
    found = true;
  }
  if (!found) throw new Error(`${baseUrl}/metrics counts no decodes (ours: bora_embed_batch_texts_count; llama-server needs --metrics)`);
  return sum;
}

export type BulkQueryRun = {
  idleMs: number;
  /** Median latency of the queries sent while the bulk request was being embedded (a FIFO server answers them after it). */
  duringMs: number;
  queriesDuring: number;
  /** Bulk alone: its duration over its decodes. */
  decodeMs: number;
  bulkAloneTextsPerS: number;
  bulkWithQueriesTextsPerS: number;
};

async function timedMs(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return performance.now() - started;
}

export async function bulkQueryBlock(target: EmbedTarget, texts: readonly string[], block: number): Promise<BulkQueryRun> {
  const idle: number[] = [];
  for (let i = 0; i < IDLE_QUERIES; i++) idle.push(await timedMs(() => target.embed([queryText(block, i)])));

  const before = await decodesSoFar(target.baseUrl);
  const aloneMs = await timedMs(() => target.embed(texts));
  const decodes = (await decodesSoFar(target.baseUrl)) - before;
  if (decodes < 1) throw new Error(`${target.baseUrl}: the bulk request ran no decode by its /metrics`);

  let bulkDone = false;
  const started = performance.now();
  const bulk = target.embed(texts).then(() => { bulkDone = true; return performance.now() - started; });
  await new Promise((r) => setTimeout(r, QUERY_START_MS));
  if (bulkDone) throw new Error(`${target.baseUrl}: the bulk request of ${texts.length} texts ended within ${QUERY_START_MS} ms: too small to query beside`);
  const during: number[] = [];
  // Each query is sent while the bulk request runs; its latency counts however long it waits.
  for (let i = 0; i < MAX_QUERIES && !bulkDone; i++) during.push(await timedMs(() => target.embed([queryText(block, 100 + i)])));
  const withQueriesMs = await bulk;
  return {
    idleMs: median(idle),
    duringMs: median(during),
    queriesDuring: during.length,
    decodeMs: aloneMs / decodes,
    bulkAloneTextsPerS: texts.length / (aloneMs / 1000),
    bulkWithQueriesTextsPerS: texts.length / (withQueriesMs / 1000),
  };
}
