// llama-server as the oracle for the multilingual engine, and the rerank / multilingual-embedding throughput rows.
//
// Before anything is measured, `checkRerankOracle` and `checkEmbedOracle` put the same inputs through ours and
// through llama-server (`--rerank`, `--embedding`) on the same GGUF files: every score / vector component must
// agree within 1e-4 and the order of the rerank results must be identical, or they throw `OracleMismatch`
// (the bench stops: a faster wrong answer is no result). The throughput functions then time both sides with
// the same workload: rerank 1 request × 64 documents and 8 clients × 16 documents (pairs/s), and multilingual
// embeddings in the shape of the bench's embed rows (1 × 256 texts and 32 clients × 8, texts/s).
//
// Targets are small interfaces so the bench can point them anywhere: `LlamaServerRerank` / `LlamaServerVectors`
// talk to llama-server, `httpRerankTarget` to any server with the same /v1/rerank shape (ours, once its routes
// exist), and `engineRerankTarget` / `engineVectorTarget` call our engine in-process (no HTTP: an in-process
// number is a check of the engine, not a like-for-like comparison with an HTTP server).
//
// CLI (a one-off proof on the test fixtures; numbers from a busy machine are no claims):
//   npx tsx bench/lib/oracle-rerank.ts [--bench-shape] [--reps=N] [--threads=N]
import path from "node:path";
import type { BindingSetting } from "../../src/engine/binding/fastBuild.ts";
import type { Llama } from "node-llama-cpp";
import { ensureMultilingualBenchModels, ensureMultilingualTestModels } from "../../scripts/make-test-models.ts";
import { projectRoot } from "../../scripts/lib/llama-source.ts";
import type { EmbedEngine } from "../../src/engine/embed.ts";
import type { RerankEngine } from "../../src/engine/rerank.ts";
import { benchCacheDir } from "./artifacts.ts";
import { postJson } from "./http.ts";
import { progress } from "./log.ts";
import { freePort, installCleanupHandlers, startServer, type ServerSpec } from "./processes.ts";
import { median } from "./stats.ts";
import { spanishSentences } from "./workload.ts";

export const ORACLE_TOLERANCE = 1e-4;
/** Pairs per decode on both sides: llama-server slots (-np) and our batchSequences. */
export const RERANK_SEQUENCES = 16;
/** Tokens per decode on both sides (-b = -ub, our batchTokens): a cross-encoder's pair must fit one ubatch. */
export const RERANK_BATCH_TOKENS = 1024;
/** Tokens per pair on both sides: llama-server's context per slot, our maxTokens (FlagEmbedding's default max_length). */
export const RERANK_TOKENS_PER_PAIR = 512;
/** The embedding rows' shape (bench/lib/servers.ts: 512 tokens and 32 texts per decode). */
export const EMBED_BATCH_TOKENS = 512;
export const EMBED_SEQUENCES = 32;
const EMBED_CONTEXT_PER_SLOT = 512;
const EMBED_TEXTS = 256;
const EMBED_CLIENTS = 32;

/** Scores in input order (llama-server's /v1/rerank sorts; targets put them back). */
export interface RerankTarget {
  readonly name: string;
  rerank(query: string, documents: readonly string[]): Promise<number[]>;
}

/** L2-normalised vectors in input order. */
export interface VectorTarget {
  readonly name: string;
  embed(texts: readonly string[]): Promise<number[][]>;
}

export class OracleMismatch extends Error {
  override readonly name = "OracleMismatch";
}

type RerankResponse = { results: { index: number; relevance_score: number }[] };

/**
 * llama-server's (and Jina/Cohere's) /v1/rerank; the raw score, i.e. llama.cpp's rank head output. `extraBody`
 * goes into every request (ours: `raw_scores: true`, since its Cohere-shaped default is a probability).
 */
export function httpRerankTarget(name: string, baseUrl: string, model?: string, route = "/v1/rerank", extraBody: Record<string, unknown> = {}, timeoutMs?: number): RerankTarget {
  return {
    name,
    async rerank(query, documents) {
      const body = { ...(model === undefined ? {} : { model }), ...extraBody, query, documents, top_n: documents.length };
      const response = await postJson<RerankResponse>(`${baseUrl}${route}`, body, timeoutMs);
      const scores = new Array<number>(documents.length).fill(NaN);
      for (const r of response.results) scores[r.index] = r.relevance_score;
      if (scores.some(Number.isNaN)) throw new Error(`${name}: ${response.results.length} results for ${documents.length} documents`);
      return scores;
    },
  };
}

export class LlamaServerRerank implements RerankTarget {
  readonly name = "llama-server";
  private readonly target: RerankTarget;
  constructor(baseUrl: string) {
    this.target = httpRerankTarget("llama-server", baseUrl);
  }
  rerank(query: string, documents: readonly string[]): Promise<number[]> {
    return this.target.rerank(query, documents);
  }
}

type EmbeddingsResponse = { data: { index: number; embedding: number[] }[] };

/** llama-server's /v1/embeddings: normalised (embd_normalize 2, the default), tokenized with add_special, parse_special. */
export class LlamaServerVectors implements VectorTarget {
  readonly name = "llama-server";
  constructor(private readonly baseUrl: string) {}
  async embed(texts: readonly string[]): Promise<number[][]> {
    const response = await postJson<EmbeddingsResponse>(`${this.baseUrl}/v1/embeddings`, { input: texts });
    const out = new Array<number[]>(texts.length);
    for (const d of response.data) out[d.index] = d.embedding;
    if (out.some((v) => v === undefined)) throw new Error(`llama-server: ${response.data.length} vectors for ${texts.length} texts`);
    return out;
  }
}

/** Our reranker in-process: the raw head output (a logit), as llama-server's relevance_score. */
export function engineRerankTarget(engine: RerankEngine): RerankTarget {
  return { name: "ours (engine)", rerank: async (query, documents) => (await engine.rerank(query, documents)).map((r) => r.score) };
}

export function engineVectorTarget(engine: EmbedEngine): VectorTarget {
  return { name: "ours (engine)", embed: async (texts) => (await engine.embed(texts)).embeddings };
}

// ---- workloads ----------------------------------------------------------------------------------------------

export const RERANK_QUERY = "¿Qué documentos hacen falta para matricularse y hasta qué fecha se entregan?";

/** `count` Spanish passages of 3–6 sentences (roughly 40–110 tokens), the same for a given seed. */
export function rerankDocuments(count: number, seed = 4242): string[] {
  const sentences = spanishSentences(count * 6, seed);
  return Array.from({ length: count }, (_, i) => sentences.slice(i * 6, i * 6 + 3 + (i % 4)).join(" "));
}

/** Oracle inputs: Spanish, other scripts, special-token text, a one-character document, a long one. */
export function oracleCases(): { query: string; documents: string[] }[] {
  return [
    { query: RERANK_QUERY, documents: rerankDocuments(24) },
    {
      query: "¿Cuál es la capital de Francia?",
      documents: [
        "París es la capital y la ciudad más poblada de Francia.", "Madrid es la capital de España.", "東京は日本の首都です。",
        "</s><s> texto con marcas especiales", "a", "Le château de Versailles se trouve près de Paris. ".repeat(8).trim(),
      ],
    },
  ];
}

export function oracleTexts(): string[] {
  return ["query: ¿Qué significa 'ímihí'?", "passage: 'ímihí' significa agua.", "東京は日本の首都です。", "😀 usuario@ejemplo.com 3,14", ...spanishSentences(28, 99)];
}

// ---- the oracle ---------------------------------------------------------------------------------------------

const order = (scores: readonly number[]): number[] => scores.map((_, i) => i).sort((x, y) => (scores[y] ?? 0) - (scores[x] ?? 0) || x - y);

export type OracleReport = { comparisons: number; maxAbsDiff: number };

/**
 * A target that scores each document in a request of its own: one pair per decode, whichever side it wraps.
 * The rerank oracle compares both sides this way, with flash attention off on both (see `checkRerankOracle`).
 */
export function onePerRequest(target: RerankTarget): RerankTarget {
  return {
    name: `${target.name} (one document per request)`,
    async rerank(query, documents) {
      const scores: number[] = [];
      for (const document of documents) scores.push((await target.rerank(query, [document]))[0] ?? NaN);
      return scores;
    },
  };
}

/**
 * Throws OracleMismatch unless every score is within 1e-4 of the reference and the order is identical.
 *
 * The targets must do the same arithmetic: both one pair per decode (`onePerRequest`) and flash attention off
 * (llama-server `-fa off`). What llama.cpp computes for a pair depends on what else is in its decode: the
 * masked attention over the whole ubatch and the SIMD sums see the pair at another offset, so its floats round
 * differently, and a deep model with random weights magnifies that. Measured 2026-11-30 on the real-shaped
 * bge-reranker-v2-m3 (24 layers, logits ~12): llama-server answered the same 24-document request twice with
 * scores 1.3e-2 apart (its slots batched the pairs differently), and its batched scores were 2e-2 from its own
 * one-per-request scores; ours batched vs ours one at a time was as far. Its CPU flash attention rounds Q, K and
 * V to F16 and differed from ours by 1.7e-2 even one pair per decode. With one pair per decode and flash
 * attention off, ours and llama-server gave identical scores (|diff| 0, F16 and F32 files). The tiny fixtures
 * agree batched as well (2e-6): this is numerical noise a deep random model amplifies, not a different formula.
 */
export async function checkRerankOracle(ours: RerankTarget, reference: RerankTarget, cases = oracleCases()): Promise<OracleReport> {
  let worst = 0;
  let comparisons = 0;
  for (const [c, { query, documents }] of cases.entries()) {
    const [a, b] = [await ours.rerank(query, documents), await reference.rerank(query, documents)];
    for (let i = 0; i < documents.length; i++) {
      const diff = Math.abs((a[i] ?? NaN) - (b[i] ?? NaN));
      if (!(diff <= ORACLE_TOLERANCE)) {
        throw new OracleMismatch(`rerank case ${c}, document ${i}: ${ours.name} ${a[i]} vs ${reference.name} ${b[i]} (|diff| ${diff} > ${ORACLE_TOLERANCE})`);
      }
      worst = Math.max(worst, diff);
      comparisons++;
    }
    const [orderA, orderB] = [order(a), order(b)];
    if (orderA.join() !== orderB.join()) {
      throw new OracleMismatch(`rerank case ${c}: order differs: ${ours.name} [${orderA.join(", ")}] vs ${reference.name} [${orderB.join(", ")}]`);
    }
  }
  return { comparisons, maxAbsDiff: worst };
}

/** Throws OracleMismatch unless every component of every vector is within 1e-4 of the reference. */
export async function checkEmbedOracle(ours: VectorTarget, reference: VectorTarget, texts = oracleTexts()): Promise<OracleReport> {
  const [a, b] = [await ours.embed(texts), await reference.embed(texts)];
  let worst = 0;
  let comparisons = 0;
  for (let i = 0; i < texts.length; i++) {
    const [va, vb] = [a[i] ?? [], b[i] ?? []];
    if (va.length !== vb.length || va.length === 0) throw new OracleMismatch(`embedding ${i}: ${va.length} vs ${vb.length} dimensions`);
    for (let d = 0; d < va.length; d++) {
      const diff = Math.abs((va[d] ?? NaN) - (vb[d] ?? NaN));
      if (!(diff <= ORACLE_TOLERANCE)) {
        throw new OracleMismatch(`embedding ${i} (${JSON.stringify(texts[i]?.slice(0, 40))}), component ${d}: ${va[d]} vs ${vb[d]} (|diff| ${diff} > ${ORACLE_TOLERANCE})`);
      }
      worst = Math.max(worst, diff);
      comparisons++;
    }
  }
  return { comparisons, maxAbsDiff: worst };
}

// ---- throughput ---------------------------------------------------------------------------------------------

export type Throughput = { median: number; runs: number[] };

async function timedSeconds(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return (performance.now() - started) / 1000;
}

/** Pairs per second with `clients` concurrent requests of `documentsPerRequest` documents each (after one warm-up). */
export async function measureRerankThroughput(target: RerankTarget, shape: { clients: number; documentsPerRequest: number }, reps: number): Promise<Throughput> {
  const documents = rerankDocuments(shape.clients * shape.documentsPerRequest);
  const round = () => Promise.all(Array.from({ length: shape.clients }, (_, c) =>
    target.rerank(RERANK_QUERY, documents.slice(c * shape.documentsPerRequest, (c + 1) * shape.documentsPerRequest))));
  await round();
  const runs: number[] = [];
  for (let i = 0; i < reps; i++) runs.push(documents.length / (await timedSeconds(round)));
  return { median: median(runs), runs };
}

/** Texts per second, 1 × 256 texts and 32 clients × 8 texts (the bench's embed rows), after one warm-up each. */
export async function measureVectorThroughput(target: VectorTarget, reps: number): Promise<{ single: Throughput; concurrent: Throughput }> {
  const texts = spanishSentences(EMBED_TEXTS);
  const perClient = EMBED_TEXTS / EMBED_CLIENTS;
  const concurrent = () => Promise.all(Array.from({ length: EMBED_CLIENTS }, (_, c) => target.embed(texts.slice(c * perClient, (c + 1) * perClient))));
  await target.embed(texts);
  await concurrent();
  const single: number[] = [];
  const many: number[] = [];
  for (let i = 0; i < reps; i++) {
    single.push(EMBED_TEXTS / (await timedSeconds(() => target.embed(texts))));
    many.push(EMBED_TEXTS / (await timedSeconds(concurrent)));
  }
  return { single: { median: median(single), runs: single }, concurrent: { median: median(many), runs: many } };
}

// ---- llama-server processes ---------------------------------------------------------------------------------

const logDir = path.join(benchCacheDir, "logs");

function llamaServerSpec(binary: string, label: string, threads: number, port: number, args: string[], log: string): ServerSpec {
  return {
    label,
    command: binary,
    args: [...args, "-t", String(threads), "-tb", String(threads), "--host", "127.0.0.1", "--port", String(port), "--no-webui"],
    cwd: projectRoot,
    readyUrl: `http://127.0.0.1:${port}/health`,
    readyTimeoutMs: 300_000,
    logFile: path.join(logDir, log),
  };
}

/** llama-server --rerank with the same pairs per decode, tokens per decode and tokens per pair as ours. */
export function llamaRerankSpec(binary: string, threads: number, port: number, model: string, extraArgs: readonly string[] = [], log = "llama-server-rerank.log"): ServerSpec {
  return llamaServerSpec(binary, "llama-server rerank", threads, port, [
    "-m", model, "--rerank", "-c", String(RERANK_TOKENS_PER_PAIR * RERANK_SEQUENCES), "-np", String(RERANK_SEQUENCES),
    "-b", String(RERANK_BATCH_TOKENS), "-ub", String(RERANK_BATCH_TOKENS), ...extraArgs,
  ], log);
}

/** llama-server --embedding for the multilingual model, as the bench's embed server. */
export function llamaMultilingualEmbedSpec(binary: string, threads: number, port: number, model: string): ServerSpec {
  return llamaServerSpec(binary, "llama-server embed (multilingual)", threads, port, [
    "-m", model, "--embedding", "--pooling", "mean", "-c", String(EMBED_CONTEXT_PER_SLOT * EMBED_SEQUENCES), "-np", String(EMBED_SEQUENCES),
    "-b", String(EMBED_BATCH_TOKENS), "-ub", String(EMBED_BATCH_TOKENS),
  ], "llama-server-embed-multilingual.log");
}

/** Rerank rows, 1 × 64 and 8 × 16 documents, the two sides alternating (one working at a time). */
async function measureRerankRows(ours: RerankTarget, reference: RerankTarget, reps: number, result: Partial<MultilingualOracleResult>): Promise<void> {
  const shapes = { "1x64": { clients: 1, documentsPerRequest: 64 }, "8x16": { clients: 8, documentsPerRequest: 16 } };
  const rows: NonNullable<MultilingualOracleResult["rerank"]> = { ours: {}, llamaServer: {} };
  for (const [key, shape] of Object.entries(shapes)) {
    rows.llamaServer[key] = await measureRerankThroughput(reference, shape, reps);
    rows.ours[key] = await measureRerankThroughput(ours, shape, reps);
    progress(`rerank ${key}: ours ${rows.ours[key]?.median.toFixed(1)} pairs/s, llama-server ${rows.llamaServer[key]?.median.toFixed(1)} pairs/s`);
  }
  result.rerank = rows;
}

export type MultilingualOracleResult = {
  rerankOracle: OracleReport;
  /** Further rerankers (e.g. a Qwen3-Reranker-shaped file): checked against llama-server, not timed. */
  extraRerankOracles: Record<string, OracleReport>;
  embedOracle: OracleReport;
  rerank?: { ours: Record<string, Throughput>; llamaServer: Record<string, Throughput> };
  embed?: { ours: { single: Throughput; concurrent: Throughput }; llamaServer: { single: Throughput; concurrent: Throughput } };
};

let cpuLlama: Promise<Llama> | undefined;
// The service's own loader, with the binding the bench gives our service (--binding; the fast build by default).
const loadCpuLlama = () => (cpuLlama ??= Promise.all([import("../../src/engine/runtime.ts"), import("./servers.ts")])
  .then(async ([{ loadRuntime }, { serverOptions }]) => (await loadRuntime("cpu", 0, undefined, (serverOptions.ourEnv["LLAMA_BINDING"] ?? "auto") as BindingSetting)).llama));

type RerankFile = { llamaServer: string; threads: number; file: string };

/**
 * Our reranker in-process and llama-server --rerank on the same file, with the same pairs per decode, tokens per
 * decode and tokens per pair, for `work`; `exact` is the oracle's arithmetic (flash attention off on both sides,
 * see checkRerankOracle), otherwise each side's default.
 */
async function withRerankPair<T>(f: RerankFile, exact: boolean, work: (ours: RerankTarget, reference: RerankTarget) => Promise<T>): Promise<T> {
  installCleanupHandlers();
  // The native addon is found next to the libllama node-llama-cpp loaded: load it first (once per process).
  await loadCpuLlama();
  const { RerankEngine } = await import("../../src/engine/rerank.ts");
  const reranker = await RerankEngine.load({
    modelPath: f.file, modelName: "reranker", threads: f.threads, batchTokens: RERANK_BATCH_TOKENS,
    batchSequences: RERANK_SEQUENCES, maxTokens: RERANK_TOKENS_PER_PAIR, maxDocuments: 1000, truncate: false,
    ...(exact ? { flashAttention: false } : {}),
  });
  try {
    const server = await startServer(llamaRerankSpec(f.llamaServer, f.threads, await freePort(), f.file, exact ? ["-fa", "off"] : [], exact ? "llama-server-rerank-oracle.log" : "llama-server-rerank.log"));
    try {
      return await work(engineRerankTarget(reranker), new LlamaServerRerank(server.spec.readyUrl.replace(/\/health$/, "")));
    } finally {
      await server.stop();
    }
  } finally {
    await reranker.dispose();
  }
}

/** The rerank oracle: one pair per decode and flash attention off on both sides; throws OracleMismatch. */
export function checkRerankOracleExact(f: RerankFile): Promise<OracleReport> {
  return withRerankPair(f, true, (ours, reference) => checkRerankOracle(onePerRequest(ours), onePerRequest(reference)));
}

/**
 * How far apart batched scores are when served as each side serves them (default flash attention, many pairs per
 * decode): ours vs llama-server, and llama-server vs itself on the same request sent twice. Information, not a
 * check: batching moves the rounding (see checkRerankOracle).
 */
export async function batchedSpread(ours: RerankTarget, reference: RerankTarget): Promise<{ oursVsReference: number; referenceVsItself: number }> {
  const { query, documents } = oracleCases()[0]!;
  const [a, b, c] = [await ours.rerank(query, documents), await reference.rerank(query, documents), await reference.rerank(query, documents)];
  const maxDiff = (x: number[], y: number[]) => Math.max(...x.map((v, i) => Math.abs(v - (y[i] ?? NaN))));
  return { oursVsReference: maxDiff(a, b), referenceVsItself: maxDiff(b, c) };
}

/**
 * Loads our engines in-process and llama-server on the same files, checks both oracles (throws on a mismatch)
 * and, with `reps > 0`, measures both sides one after the other.
 */
export async function runMultilingualOracle(opts: {
  llamaServer: string; threads: number; models: { embed: string; rerank: string; extraRerankers?: readonly string[] }; reps: number;
}): Promise<MultilingualOracleResult> {
  installCleanupHandlers();
  const { EmbedEngine } = await import("../../src/engine/embed.ts");
  const llama = await loadCpuLlama();
  const extraRerankOracles: Record<string, OracleReport> = {};
  const result: Partial<MultilingualOracleResult> = { extraRerankOracles };

  for (const file of [opts.models.rerank, ...(opts.models.extraRerankers ?? [])]) {
    const report = await checkRerankOracleExact({ llamaServer: opts.llamaServer, threads: opts.threads, file });
    if (file === opts.models.rerank) result.rerankOracle = report;
    else extraRerankOracles[path.basename(file)] = report;
    progress(`rerank oracle (${path.basename(file)}, one pair per decode, flash attention off on both sides): ${report.comparisons} scores equal llama-server's (max |diff| ${report.maxAbsDiff.toExponential(2)}), same order`);
  }
  // The throughput rows: both sides as they serve by default (flash attention "auto"), batched.
  if (opts.reps > 0) await withRerankPair({ llamaServer: opts.llamaServer, threads: opts.threads, file: opts.models.rerank }, false, (ours, reference) => measureRerankRows(ours, reference, opts.reps, result));

  const embedder = await EmbedEngine.load(llama, {
    modelPath: opts.models.embed, modelName: "multilingual-e5", aliases: [], threads: opts.threads, batchTokens: EMBED_BATCH_TOKENS,
    batchSequences: EMBED_SEQUENCES, gpuLayers: 0, maxTokens: EMBED_CONTEXT_PER_SLOT, truncate: true, maxTexts: 1024, preferNative: true,
    onFallback: (reason) => { throw new Error(`the native embedder is required for the oracle: ${reason}`); },
  });
  try {
    const server = await startServer(llamaMultilingualEmbedSpec(opts.llamaServer, opts.threads, await freePort(), opts.models.embed));
    try {
      const reference = new LlamaServerVectors(server.spec.readyUrl.replace(/\/health$/, ""));
      const ours = engineVectorTarget(embedder);
      result.embedOracle = await checkEmbedOracle(ours, reference);
      progress(`embedding oracle: ${result.embedOracle.comparisons} components equal llama-server's (max |diff| ${result.embedOracle.maxAbsDiff.toExponential(2)})`);
      if (opts.reps > 0) {
        const llamaServer = await measureVectorThroughput(reference, opts.reps);
        const mine = await measureVectorThroughput(ours, opts.reps);
        result.embed = { ours: mine, llamaServer };
        progress(`multilingual embed: ours 1x256 ${mine.single.median.toFixed(0)} / 32x8 ${mine.concurrent.median.toFixed(0)} texts/s, ` +
          `llama-server ${llamaServer.single.median.toFixed(0)} / ${llamaServer.concurrent.median.toFixed(0)} texts/s`);
      }
    } finally {
      await server.stop();
    }
  } finally {
    await embedder.dispose();
  }
  if (result.rerankOracle === undefined || result.embedOracle === undefined) throw new Error("oracle did not run");
  return result as MultilingualOracleResult;
}

// ---- CLI ----------------------------------------------------------------------------------------------------

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === path.resolve(projectRoot, "bench/lib/oracle-rerank.ts")) {
  const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1];
  const threads = Number(arg("threads") ?? 2);
  const reps = Number(arg("reps") ?? 1);
  const models = process.argv.includes("--bench-shape")
    ? await ensureMultilingualBenchModels()
    : await ensureMultilingualTestModels().then((m) => ({ ...m, extraRerankers: [m.qwen3Rerank] }));
  const llamaServer = path.join(benchCacheDir, "llama.cpp", "build", "bin", "llama-server");
  progress(`oracle on ${path.basename(models.embed)} and ${path.basename(models.rerank)}, ${threads} threads, ${reps} rep(s)`);
  const result = await runMultilingualOracle({ llamaServer, threads, models, reps });
  console.log(JSON.stringify(result, (_key, value: unknown) => (typeof value === "number" ? Number(value.toPrecision(4)) : value), 2));
  process.exit(0);
}
