// Command-line flags of `npm run bench`, and the workload sizes they select.
import os from "node:os";

/**
 * decode: single stream on the 1.7B-shaped model; aggregate: 4 and 8 concurrent clients; ttft: cold and
 * warm prefix; late: first token of a request arriving while 3 stream; health: /health under load while
 * generating; embed: throughput (1×256, 32×8) and one short text's latency (alone, and while generating);
 * tiny: overhead-bound single-stream decode on a tiny Qwen3 (separate server processes on both sides).
 */
export const METRICS = [
  "decode", "aggregate", "ttft", "late", "health", "embed", "tiny", "followup",
  "cache-restart", "cache-busy", "cache-many", "rerank", "embed-multilingual", "bulk-query",
] as const;
export type MetricName = (typeof METRICS)[number];

/**
 * Opt-in (`--only=`): each loads servers of its own and together they would roughly double a full run.
 * cache-restart, cache-busy, cache-many: the prompt-cache rows (issue 18; the 1.7B-shaped model with 8 and
 * 4 slots, llama-server with its host-memory prompt cache and --slot-save-path); rerank, embed-multilingual:
 * the retrieval rows (issue 17; real-shaped bge-reranker-v2-m3 and multilingual-e5-small fixtures, after an
 * oracle check against llama-server); bulk-query: a 1-text query during a 2,048-text embedding request (issue 25;
 * about a minute per block on the MiniLM-shaped model).
 */
export const OPT_IN_METRICS: readonly MetricName[] = ["cache-restart", "cache-busy", "cache-many", "rerank", "embed-multilingual", "bulk-query"];
/** What a plain `npm run bench` measures (and what a README table needs). */
export const DEFAULT_METRICS: readonly MetricName[] = METRICS.filter((m) => !OPT_IN_METRICS.includes(m));

export const ENGINES = ["native", "node-llama-cpp"] as const;
export type EnginePath = (typeof ENGINES)[number];

/** How much work each metric does; `--quick` shrinks it so a smoke run takes a few minutes. */
export type Workload = Readonly<{
  /** Measured repetitions of each metric within one run (the median is the run's value). */
  repetitions: number;
  /** Tokens per stream for single-stream and aggregate decode on the 1.7B-shaped model. */
  decodeTokens: number;
  /** Tokens of the overhead-bound single stream on the tiny model. */
  tinyTokens: number;
  /** Tokens each of the 3 background streams of the late-arrival metric generates. */
  lateStreamTokens: number;
  /** /health requests per connection (one every 100 ms) in each load phase. */
  healthRequestsPerConnection: number;
  /** Single-text embedding requests timed per latency measurement. */
  embedLatencyRequests: number;
  /** Measured repetitions re-run when other processes took the CPU meanwhile. */
  interferenceRepeats: number;
  /** Texts of the bulk request in the query-during-bulk row (the 2,048). */
  bulkTexts: number;
}>;

const FULL: Workload = { repetitions: 3, decodeTokens: 128, tinyTokens: 512, lateStreamTokens: 128, healthRequestsPerConnection: 50, embedLatencyRequests: 30, interferenceRepeats: 2, bulkTexts: 2048 };
const QUICK: Workload = { repetitions: 1, decodeTokens: 64, tinyTokens: 512, lateStreamTokens: 64, healthRequestsPerConnection: 20, embedLatencyRequests: 10, interferenceRepeats: 0, bulkTexts: 2048 };

/**
 * Our side's llama.cpp binding. default: what a user has after the README's first command and the first
 * start's background build (LLAMA_BINDING=auto; the bench makes that build first when it is missing);
 * prebuilt: node-llama-cpp's prebuilt binaries; native / portable: that fast build (made first if missing).
 */
export const BINDINGS = ["default", "prebuilt", "native", "portable"] as const;
export type BenchBinding = (typeof BINDINGS)[number];

export const MODES = ["paired", "sequential"] as const;
export type BenchMode = (typeof MODES)[number];

/** Default drift factor: one side's blocks of a row differing by more than this mark the row UNSTABLE. */
export const DEFAULT_DRIFT_FACTOR = 1.5;

export type BenchOptions = Readonly<{
  /**
   * paired (default): both sides' servers loaded at once, short alternating blocks, median of per-pair
   * ratios; sequential: one server after the other, as before (for comparison with older tables).
   */
  mode: BenchMode;
  /** Paired mode: pairs of blocks (A B or B A) per metric. */
  pairs: number;
  /** Paired mode: the drift factor (see DEFAULT_DRIFT_FACTOR). */
  driftFactor: number;
  only: ReadonlySet<MetricName>;
  /** Fewer tokens, requests and repetitions (for development; numbers are indicative only). */
  quick: boolean;
  workload: Workload;
  /** Whole comparisons (both servers, every metric) run back to back; ratios are reported as median and min–max. */
  runs: number;
  /** Our chat engine path (LLM_ENGINE); undefined leaves the service's default. */
  engine: EnginePath | undefined;
  /** Same count for both servers: the CPUs this process may use, unless --threads says otherwise. */
  threads: number;
  /** Upper bound on waiting for other processes' CPU load to settle before each server starts. */
  quietWaitSeconds: number;
  /** Rewrite the README's table (only ever for a full run of every metric on the real bench models). */
  readme: boolean;
  /** Our side's binding (see BINDINGS). */
  binding: BenchBinding;
  /** Both sides on the GPU (CUDA), every layer offloaded: ours LLM_GPU=cuda LLM_GPU_LAYERS=max, llama-server -ngl 999. */
  gpu: boolean;
  /** llama-server and llama-quantize from this folder instead of the bench's own CPU build (scripts/gpu-check.ts: a CUDA build). */
  llamaBin: string | null;
}>;

const USAGE = `usage: npm run bench -- [--mode=paired|sequential] [--pairs=N] [--drift-factor=X] [--runs=N (sequential)] [--engine=${ENGINES.join("|")}] [--quick] [--only=${METRICS.join(",")}] [--threads=N] [--quiet-wait=SECONDS] [--no-readme] [--binding=${BINDINGS.join("|")}] [--gpu] [--llama-bin=DIR]`;

/** Accepts both `--flag=value` and `--flag value`. */
function splitFlags(argv: readonly string[]): [string, string | undefined][] {
  const out: [string, string | undefined][] = [];
  const takesValue = new Set(["--mode", "--pairs", "--drift-factor", "--runs", "--engine", "--only", "--quiet-wait", "--threads", "--binding", "--llama-bin"]);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const eq = arg.indexOf("=");
    if (eq > 0) out.push([arg.slice(0, eq), arg.slice(eq + 1)]);
    else if (takesValue.has(arg)) {
      const value = argv[i + 1];
      if (value === undefined) throw new Error(`${arg} needs a value\n${USAGE}`);
      out.push([arg, value]);
      i++;
    } else out.push([arg, undefined]);
  }
  return out;
}

export function parseArgs(argv: readonly string[]): BenchOptions {
  let only: Set<MetricName> = new Set(DEFAULT_METRICS);
  let quick = false;
  let runs = 1;
  let engine: EnginePath | undefined;
  let quietWaitSeconds: number | undefined;
  let readme = true;
  let threads = os.availableParallelism();
  let mode: BenchMode = "paired";
  let pairs: number | undefined;
  let driftFactor = DEFAULT_DRIFT_FACTOR;
  let binding: BenchBinding = "default";
  let gpu = false;
  let llamaBin: string | null = null;
  for (const [flag, value] of splitFlags(argv)) {
    if (flag === "--quick") quick = true;
    else if (flag === "--binding") binding = parseBinding(value ?? "");
    else if (flag === "--gpu") gpu = true;
    else if (flag === "--llama-bin") llamaBin = value ?? "";
    else if (flag === "--mode") mode = parseMode(value ?? "");
    else if (flag === "--pairs") pairs = parsePairs(value ?? "");
    else if (flag === "--drift-factor") driftFactor = parseDriftFactor(value ?? "");
    else if (flag === "--no-readme") readme = false;
    else if (flag === "--only") only = parseOnly(value ?? "");
    else if (flag === "--quiet-wait") quietWaitSeconds = parseSeconds(value ?? "");
    else if (flag === "--runs") runs = parseRuns(value ?? "");
    else if (flag === "--engine") engine = parseEngine(value ?? "");
    else if (flag === "--threads") threads = parseThreads(value ?? "");
    else if (flag === "--help" || flag === "-h") {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument '${flag}'\n${USAGE}`);
  }
  if (gpu && binding !== "default") throw new Error(`--gpu runs the CUDA binding; --binding picks among CPU bindings\n${USAGE}`);
  if (mode === "paired" && runs > 1) throw new Error(`--runs is for --mode=sequential; paired mode repeats blocks instead (--pairs=N)\n${USAGE}`);
  return Object.freeze({
    mode, pairs: pairs ?? (quick ? 2 : 4), driftFactor,
    only, quick, workload: quick ? QUICK : FULL, runs, engine, threads,
    // A quick run is a smoke test: it does not wait long for a busy machine to calm down.
    quietWaitSeconds: quietWaitSeconds ?? (quick ? 10 : 90),
    readme, binding, gpu, llamaBin,
  });
}

function parseBinding(text: string): BenchBinding {
  if (!(BINDINGS as readonly string[]).includes(text)) throw new Error(`--binding takes ${BINDINGS.join(", ")}; got '${text}'`);
  return text as BenchBinding;
}

function parseOnly(list: string): Set<MetricName> {
  const names = list.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const bad = names.filter((n) => !(METRICS as readonly string[]).includes(n));
  if (bad.length > 0 || names.length === 0) throw new Error(`--only takes a comma list of ${METRICS.join(", ")}; got '${list}'`);
  return new Set(names as MetricName[]);
}

function parseSeconds(text: string): number {
  const value = Number(text);
  if (text === "" || !Number.isFinite(value) || value < 0) throw new Error(`--quiet-wait takes a number of seconds; got '${text}'`);
  return value;
}

function parseRuns(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > 20) throw new Error(`--runs takes a whole number from 1 to 20; got '${text}'`);
  return value;
}

/**
 * A harness check on a busy shared machine runs best with 1 thread: llama.cpp's threads spin at a barrier,
 * so 2 threads on 2 busy cores crawl.
 */
function parseThreads(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > 1024) throw new Error(`--threads takes a whole number of at least 1; got '${text}'`);
  return value;
}

function parseEngine(text: string): EnginePath {
  if (!(ENGINES as readonly string[]).includes(text)) throw new Error(`--engine takes ${ENGINES.join(" or ")}; got '${text}'`);
  return text as EnginePath;
}

function parseMode(text: string): BenchMode {
  if (!(MODES as readonly string[]).includes(text)) throw new Error(`--mode takes ${MODES.join(" or ")}; got '${text}'`);
  return text as BenchMode;
}

function parsePairs(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1 || value > 50) throw new Error(`--pairs takes a whole number from 1 to 50; got '${text}'`);
  return value;
}

function parseDriftFactor(text: string): number {
  const value = Number(text);
  if (text === "" || !Number.isFinite(value) || value <= 1) throw new Error(`--drift-factor takes a number above 1 (largest/smallest block of a side); got '${text}'`);
  return value;
}
