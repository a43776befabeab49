// `npm run bench`: this service against llama-server built from the same llama.cpp source node-llama-cpp
// ships, on the same GGUF files, threads and sampling. The servers run one after the other (never together:
// 2 cores), each in a fresh process; the result is one table of raw numbers and ours/llama-server ratios,
// plus bench/results/latest.{json,md,svg}.
//
//   npm run bench -- [--only=decode,aggregate,ttft,embed,health] [--quick] [--quiet-wait=SECONDS]
//
// Harness check in seconds (meaningless numbers): BENCH_CHAT_MODEL=models/.cache/test-qwen3-tiny.gguf
// BENCH_EMBED_MODEL=models/.cache/test-minilm-tiny.gguf npm run bench -- --quick
import { readFileSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { projectRoot } from "../scripts/lib/llama-source.ts";
import { parseArgs, type BenchOptions, type MetricName } from "./lib/args.ts";
import { ensureBenchModels, ensureLlamaBuild, type BenchModels, type LlamaBuild } from "./lib/artifacts.ts";
import { CpuMeter, InterferenceGuard, waitForQuietCpu, type CpuShare, type GuardRecord } from "./lib/cpu.ts";
import { RequestTimeoutError } from "./lib/http.ts";
import { elapsedSeconds, progress } from "./lib/log.ts";
import { measureAggregate, measureDecode, measureEmbed, measureHealth, measureTtft } from "./lib/measure.ts";
import { freePort, installCleanupHandlers, killAllChildren, startServer, type ServerSpec } from "./lib/processes.ts";
import { buildRows, markdownTable, type SideResults } from "./lib/report.ts";
import { threadsInLog, writeResults, type ResultsFile } from "./lib/results.ts";
import { llamaChatSpec, llamaEmbedSpec, ourServiceSettings, ourServiceSpec } from "./lib/servers.ts";
import { LlamaServerChat, LlamaServerEmbed, OurChat, SAMPLING, type ChatTarget } from "./lib/targets.ts";

const CHAT_METRICS: readonly MetricName[] = ["decode", "aggregate", "ttft", "health"];
/** Other processes using more than this many cores during a server's runs make its numbers suspect. */
const INTERFERENCE_CORES = 0.25;

type ServerRun = { peakRssBytes: number; cpu: CpuShare; readySeconds: number; threads: string; interference: GuardRecord[] };

/**
 * Starts a server (after waiting for the machine to be quiet), runs `work` against it, reads its peak RSS
 * and CPU accounting, and always stops it.
 */
async function withServer(spec: ServerSpec, opts: BenchOptions, work: (guard: InterferenceGuard) => Promise<void>): Promise<ServerRun> {
  await waitForQuietCpu(opts.quietWaitSeconds);
  progress(`starting ${spec.label}`);
  const started = performance.now();
  const server = await startServer(spec);
  const readySeconds = (performance.now() - started) / 1000;
  progress(`${spec.label} ready in ${readySeconds.toFixed(1)} s (pid ${server.pid})`);
  try {
    const meter = new CpuMeter(server.pid);
    const guard = new InterferenceGuard(server.pid, opts.quietWaitSeconds, INTERFERENCE_CORES);
    await work(guard);
    if (server.exited()) throw new Error(`${spec.label} exited during the runs; log: ${spec.logFile}`);
    // VmHWM is read before stopping: after the runs, so it includes every workload's peak.
    const run = { peakRssBytes: server.peakRssBytes(), cpu: meter.read(), readySeconds, threads: threadsInLog(spec.logFile), interference: guard.records };
    progress(`${spec.label}: peak RSS ${(run.peakRssBytes / 1e6).toFixed(0)} MB; CPU: server ${run.cpu.serverCores.toFixed(2)} cores, bench ${run.cpu.benchCores.toFixed(2)}, other processes ${run.cpu.otherCores.toFixed(2)}`);
    return run;
  } finally {
    await server.stop();
  }
}

/**
 * Runs one metric; a failure is recorded (and shown as ERROR) instead of ending the bench, so the other
 * metrics and the other server still get measured. Returns false when the server looks stuck (a request
 * timed out), after which its remaining chat metrics would only time out too.
 */
async function attempt(side: SideResults, label: string, metric: MetricName, work: () => Promise<void>): Promise<boolean> {
  try {
    await work();
    return true;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    side.errors[metric] = message;
    progress(`  ${label} ${metric} FAILED: ${message}`);
    return !(error instanceof RequestTimeoutError);
  }
}

/** The chat metrics, in an order where each leaves the server as the next expects (health last: it aborts a stream). */
async function runChatMetrics(chat: ChatTarget, opts: BenchOptions, side: SideResults, guard: InterferenceGuard): Promise<void> {
  const reps = opts.repetitions;
  const steps: [MetricName, () => Promise<void>][] = [
    ["decode", async () => { side.decode = await measureDecode(chat, reps, guard); }],
    ["aggregate", async () => { side.aggregate = await measureAggregate(chat, reps, guard); }],
    ["ttft", async () => { side.ttft = await measureTtft(chat, reps, guard); }],
    ["health", async () => {
      side.health = await guard.measure(`${chat.name} health`, () => measureHealth(chat, `${chat.baseUrl}/health`));
      const { idle } = side.health;
      progress(`  ${chat.name} /health while generating: p50 ${side.health.p50Ms.toFixed(2)} ms, p99 ${side.health.p99Ms.toFixed(2)} ms over ${side.health.requests} requests (idle: p50 ${idle.p50Ms.toFixed(2)}, p99 ${idle.p99Ms.toFixed(2)})`);
    }],
  ];
  let stuckAfter: MetricName | null = null;
  for (const [metric, work] of steps) {
    if (!opts.only.has(metric)) continue;
    if (stuckAfter !== null) {
      side.errors[metric] = `skipped: the chat engine timed out in ${stuckAfter}`;
      continue;
    }
    if (!(await attempt(side, chat.name, metric, work))) stuckAfter = metric;
  }
}

async function runOurs(opts: BenchOptions, models: BenchModels, settings: Record<string, unknown>): Promise<SideResults> {
  const side: SideResults = { peakRssBytes: {}, cpu: {}, errors: {}, interference: {} };
  const spec = ourServiceSpec({ threads: opts.threads, port: await freePort() }, models);
  settings["ours"] = { command: [spec.command, ...spec.args].join(" "), env: ourServiceSettings(spec) };
  const run = await withServer(spec, opts, async (guard) => {
    const ours = new OurChat(`http://127.0.0.1:${new URL(spec.readyUrl).port}`);
    await runChatMetrics(ours, opts, side, guard);
    if (opts.only.has("embed")) await attempt(side, "ours", "embed", async () => { side.embed = await measureEmbed(ours, "ours", opts.repetitions, guard); });
  });
  side.peakRssBytes.total = run.peakRssBytes;
  side.cpu["process"] = run.cpu;
  side.interference["process"] = run.interference;
  settings["oursRun"] = { readySeconds: run.readySeconds, threads: run.threads };
  return side;
}

async function runLlamaServer(opts: BenchOptions, build: LlamaBuild, models: BenchModels, settings: Record<string, unknown>): Promise<SideResults> {
  const side: SideResults = { peakRssBytes: {}, cpu: {}, errors: {}, interference: {} };
  if (CHAT_METRICS.some((m) => opts.only.has(m))) {
    const spec = llamaChatSpec(build.server, { threads: opts.threads, port: await freePort() }, models.chat);
    settings["llamaServerChat"] = { command: [spec.command, ...spec.args].join(" ") };
    const run = await withServer(spec, opts, (guard) => runChatMetrics(new LlamaServerChat(new URL(spec.readyUrl).origin), opts, side, guard));
    side.peakRssBytes.chat = run.peakRssBytes;
    side.cpu["chat"] = run.cpu;
    side.interference["chat"] = run.interference;
    settings["llamaServerChatRun"] = { readySeconds: run.readySeconds, threads: run.threads };
  }
  if (opts.only.has("embed")) {
    const spec = llamaEmbedSpec(build.server, { threads: opts.threads, port: await freePort() }, models.embed);
    settings["llamaServerEmbed"] = { command: [spec.command, ...spec.args].join(" ") };
    const run = await withServer(spec, opts, (guard) => attempt(side, "llama-server", "embed", async () => {
      side.embed = await measureEmbed(new LlamaServerEmbed(new URL(spec.readyUrl).origin), "llama-server", opts.repetitions, guard);
    }).then(() => undefined));
    side.peakRssBytes.embed = run.peakRssBytes;
    side.cpu["embed"] = run.cpu;
    side.interference["embed"] = run.interference;
    settings["llamaServerEmbedRun"] = { readySeconds: run.readySeconds, threads: run.threads };
  }
  return side;
}

/** Sanity checks that make a number trustworthy or not; printed under the table. */
function collectNotes(ours: SideResults, llama: SideResults, opts: BenchOptions): string[] {
  const notes: string[] = [];
  const oursPrompt = ours.decode?.runs[0]?.promptTokens;
  const llamaPrompt = llama.decode?.runs[0]?.promptTokens;
  if (oursPrompt !== undefined && llamaPrompt !== undefined && oursPrompt !== llamaPrompt) {
    notes.push(`decode prompt differs: ours ${oursPrompt} tokens, llama-server ${llamaPrompt} (chat templates disagree)`);
  }
  for (const [label, side] of [["ours", ours], ["llama-server", llama]] as const) {
    for (const [metric, message] of Object.entries(side.errors)) notes.push(`${label} ${metric}: ${message}`);
    const warm = side.ttft?.runs.map((r) => `${r.warmCachedTokens}/${r.warmPromptTokens}`);
    if (warm) notes.push(`${label}: warm TTFT prompt tokens served from cache per run: ${warm.join(", ")} (cold prompts: ${side.ttft?.runs.map((r) => r.coldPromptTokens).join(", ")} tokens)`);
    if (side.health) notes.push(`${label}: /health p50/p99 with the same load on the idle server: ${side.health.idle.p50Ms.toFixed(2)}/${side.health.idle.p99Ms.toFixed(2)} ms`);
    if (side.health && !side.health.generatingThroughout) notes.push(`${label}: the generation ended before the /health load did; p99 is not fully "while generating"`);
    if (side.health && side.health.non200 > 0) notes.push(`${label}: ${side.health.non200} /health answers were not 200`);
    if (side.health && side.health.timeouts > 0) notes.push(`${label}: ${side.health.timeouts} of ${side.health.requests} /health requests got no answer within 5 s (counted at 5 s)`);
    if (side.health && side.health.reconnects > 0) notes.push(`${label}: ${side.health.reconnects} /health requests found their kept-alive connection closed and reconnected`);
    const disturbed = Object.values(side.interference).flat().filter((r) => r.otherCores > INTERFERENCE_CORES);
    if (disturbed.length > 0) {
      notes.push(`${label}: other processes kept using CPU during ${disturbed.map((r) => `${r.label} (${r.otherCores.toFixed(2)} cores)`).join(", ")}, even after repeating; those numbers are depressed`);
    }
    const repeated = Object.values(side.interference).flat().filter((r) => r.repeated > 0).length;
    if (repeated > 0) notes.push(`${label}: ${repeated} repetition(s) were re-run because other processes used the CPU meanwhile`);
  }
  const serverRates = llama.decode?.runs.map((r) => r.serverTokPerS).filter((x): x is number => x !== null);
  if (serverRates && serverRates.length > 0) notes.push(`llama-server's own decode timings: ${serverRates.map((r) => r.toFixed(2)).join(", ")} tok/s (client-side: ${llama.decode?.runs.map((r) => r.tokPerS.toFixed(2)).join(", ")})`);
  if (opts.quick) notes.push("--quick: one repetition per metric; numbers are indicative only");
  return notes;
}

function nodeLlamaCppVersion(): string {
  const pkg = JSON.parse(readFileSync(path.join(projectRoot, "node_modules", "node-llama-cpp", "package.json"), "utf8")) as { version: string };
  return pkg.version;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  installCleanupHandlers();
  const startedAt = new Date().toISOString();
  progress(`metrics: ${[...opts.only].join(", ")}; ${opts.repetitions} repetition(s); ${opts.threads} threads on both servers`);
  const build = await ensureLlamaBuild();
  progress(`llama-server: llama.cpp ${build.tag} (${build.commit.slice(0, 10)}), ${path.relative(projectRoot, build.server)}`);
  const models = await ensureBenchModels(build);
  progress(`models: ${path.relative(projectRoot, models.chat)} (${(statSync(models.chat).size / 2 ** 30).toFixed(2)} GiB), ${path.relative(projectRoot, models.embed)}`);

  const settings: Record<string, unknown> = {};
  const ours = await runOurs(opts, models, settings);
  const llama = await runLlamaServer(opts, build, models, settings);

  const rows = buildRows(ours, llama);
  const notes = collectNotes(ours, llama, opts);
  const subtitle = `${os.cpus()[0]?.model.trim() ?? "CPU"} · ${opts.threads} threads · chat ${path.basename(models.chat)} · embed ${path.basename(models.embed)} · llama.cpp ${build.tag} · ${startedAt.slice(0, 16).replace("T", " ")} UTC`;
  const results: ResultsFile = {
    version: 1,
    startedAt,
    finishedAt: new Date().toISOString(),
    wallSeconds: Math.round(elapsedSeconds()),
    rows,
    notes,
    options: { only: [...opts.only], quick: opts.quick, repetitions: opts.repetitions, threads: opts.threads },
    machine: { cpu: os.cpus()[0]?.model.trim(), cpus: os.availableParallelism(), memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` },
    llamaCpp: { tag: build.tag, commit: build.commit, nodeLlamaCpp: nodeLlamaCppVersion() },
    models: { chat: path.relative(projectRoot, models.chat), chatBytes: statSync(models.chat).size, embed: path.relative(projectRoot, models.embed) },
    sampling: SAMPLING,
    servers: settings,
    raw: { ours, llamaServer: llama },
  };
  const files = writeResults(results, subtitle);

  console.log(markdownTable(rows));
  if (notes.length > 0) console.log(`\n${notes.map((n) => `* ${n}`).join("\n")}`);
  progress(`wrote ${[files.json, files.copy, files.md, files.svg].map((f) => path.relative(projectRoot, f)).join(", ")}`);
  progress(`done in ${(elapsedSeconds() / 60).toFixed(1)} min`);
}

try {
  await main();
} catch (error) {
  progress(`FAILED: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exitCode = 1;
} finally {
  killAllChildren();
}
