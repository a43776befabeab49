// Command-line flags of `npm run bench`.
import os from "node:os";

export const METRICS = ["decode", "aggregate", "ttft", "embed", "health"] as const;
export type MetricName = (typeof METRICS)[number];

export type BenchOptions = Readonly<{
  only: ReadonlySet<MetricName>;
  /** One repetition per metric instead of three (for development; numbers are noisier). */
  quick: boolean;
  repetitions: number;
  /** Same count for both servers: the CPUs this process may run on. */
  threads: number;
  /** Upper bound on waiting for other processes' CPU load to settle before each server starts. */
  quietWaitSeconds: number;
}>;

const USAGE = `usage: npm run bench -- [--only=${METRICS.join(",")}] [--quick] [--quiet-wait=SECONDS]`;

export function parseArgs(argv: readonly string[]): BenchOptions {
  let only: Set<MetricName> = new Set(METRICS);
  let quick = false;
  let quietWaitSeconds = 90;
  for (const arg of argv) {
    if (arg === "--quick") quick = true;
    else if (arg.startsWith("--only=")) only = parseOnly(arg.slice("--only=".length));
    else if (arg.startsWith("--quiet-wait=")) quietWaitSeconds = parseSeconds(arg.slice("--quiet-wait=".length));
    else if (arg === "--help" || arg === "-h") {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument '${arg}'\n${USAGE}`);
  }
  return Object.freeze({ only, quick, repetitions: quick ? 1 : 3, threads: os.availableParallelism(), quietWaitSeconds });
}

function parseOnly(list: string): Set<MetricName> {
  const names = list.split(",").map((s) => s.trim()).filter((s) => s !== "");
  const bad = names.filter((n) => !(METRICS as readonly string[]).includes(n));
  if (bad.length > 0 || names.length === 0) throw new Error(`--only takes a comma list of ${METRICS.join(", ")}; got '${list}'`);
  return new Set(names as MetricName[]);
}

function parseSeconds(text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value) || value < 0) throw new Error(`--quiet-wait takes a number of seconds; got '${text}'`);
  return value;
}
