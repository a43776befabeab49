// `npm run bench`: this service against llama-server built from the same llama.cpp source node-llama-cpp
// ships, on the same GGUF files, threads, slots, context, batch and sampling. The result is one table of raw
// numbers and ours/llama-server ratios, plus bench/results/latest.{json,md,svg} (and, for a full run, the
// README table).
//
//   npm run bench -- [--mode=paired|sequential] [--pairs=N] [--drift-factor=X] [--runs=N] [--engine=native|node-llama-cpp]
//                    [--quick] [--only=decode,aggregate,ttft,late,health,embed,tiny] [--threads=N] [--quiet-wait=SECONDS] [--no-readme]
//   Opt-in, paired mode only: --only=cache-restart,cache-busy,cache-many,rerank,embed-multilingual,bulk-query (lib/args.ts).
//
// Paired mode (the default; lib/paired.ts, rows in lib/rows.ts): each group's servers (ours and llama-server's)
// are loaded at once and only one works at a time, in short alternating blocks A B, B A, ...; each row's
// ratio is the median of its per-pair ratios with their min–max, and a row whose blocks drift by more than
// --drift-factor on one side reads UNSTABLE. About 8.5 GB of RAM for the main group.
// Sequential mode (--mode=sequential): each server alone in a fresh process, one after the other; --runs
// repeats the whole comparison, alternating which side goes first, and reports medians of the runs.
//
// Harness check in a few minutes (meaningless numbers): BENCH_CHAT_MODEL=models/.cache/test-qwen3-tiny.gguf
// BENCH_EMBED_MODEL=models/.cache/test-minilm-tiny.gguf npm run bench -- --quick
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { buildDist } from "../scripts/build-dist.ts";
import { projectRoot } from "../scripts/lib/llama-source.ts";
import { DEFAULT_METRICS, OPT_IN_METRICS, parseArgs, type BenchOptions, type MetricName } from "./lib/args.ts";
import { ensureBenchModels, ensureLlamaBuild, llamaBuildFrom, type BenchModels, type LlamaBuild } from "./lib/artifacts.ts";
import { bindingInLog, prepareBinding } from "./lib/binding.ts";
import { CpuMeter, InterferenceGuard, waitForQuietCpu, type CpuShare, type GuardRecord } from "./lib/cpu.ts";
import { RequestTimeoutError } from "./lib/http.ts";
import { elapsedSeconds, progress } from "./lib/log.ts";
import {
  measureAggregate, measureDecode, measureEmbed, measureEmbedLatency, measureEmbedLatencyWhileGenerating, measureHealth,
  measureLateArrival, measureTtft,
} from "./lib/measure.ts";
import { freePort, installCleanupHandlers, killAllChildren, startServer, type ServerSpec } from "./lib/processes.ts";
import { runPaired, type PairedResult } from "./lib/paired.ts";
import { buildRows, combineRuns, markdownTable, type Row, type SideResults } from "./lib/report.ts";
import { settingsInLog, updateReadme, writeResults, type ResultsFile } from "./lib/results.ts";
import { CHAT_SLOTS, CONTEXT_PER_SLOT, llamaChatSpec, llamaEmbedSpec, logDir, ourServiceSettings, ourServiceSpec, serverOptions } from "./lib/servers.ts";
import { LlamaServerChat, LlamaServerEmbed, OurChat, SAMPLING, type ChatTarget } from "./lib/targets.ts";

const CHAT_METRICS: readonly MetricName[] = ["decode", "aggregate", "ttft", "late", "health"];
/** Other processes using more than this many cores during a server's runs make its numbers suspect. */
const INTERFERENCE_CORES = 0.25;

type ServerRun = { peakRssBytes: number; cpu: CpuShare; readySeconds: number; settings: string; interference: GuardRecord[] };
/** Per run: how long each server took to be ready and what its log says it ran with. */
type RunSettings = Record<string, { readySeconds: number; settings: string; engineReported?: string[] }>;

/**
 * Starts a server (after waiting for the machine to be quiet), runs `work` against it, reads its peak RSS
 * and CPU accounting, and always stops it.
 */
async function withServer(spec: ServerSpec, opts: BenchOptions, work: (guard: InterferenceGuard, baseUrl: string) => Promise<void>): Promise<ServerRun> {
  await waitForQuietCpu(opts.quietWaitSeconds);
  progress(`starting ${spec.label}`);
  const started = performance.now();
  const server = await startServer(spec);
  const readySeconds = (performance.now() - started) / 1000;
  progress(`${spec.label} ready in ${readySeconds.toFixed(1)} s (pid ${server.pid})`);
  try {
    const meter = new CpuMeter(server.pid);
    const guard = new InterferenceGuard(server.pid, opts.quietWaitSeconds, INTERFERENCE_CORES, opts.workload.interferenceRepeats);
    await work(guard, new URL(spec.readyUrl).origin);
    if (server.exited()) throw new Error(`${spec.label} exited during the runs; log: ${spec.logFile}`);
    // VmHWM is read before stopping: after the runs, so it includes every workload's peak.
    const run = { peakRssBytes: server.peakRssBytes(), cpu: meter.read(), readySeconds, settings: settingsInLog(spec.logFile), interference: guard.records };
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
    side.errors[metric] = side.errors[metric] === undefined ? message : `${side.errors[metric]}; ${message}`;
    progress(`  ${label} ${metric} FAILED: ${message}`);
    return !(error instanceof RequestTimeoutError);
  }
}

/**
 * The chat metrics, in an order where each leaves the server as the next expects (health last: it cancels
 * a stream). Returns false when the chat engine got stuck.
 */
async function runChatMetrics(chat: ChatTarget, opts: BenchOptions, side: SideResults, guard: InterferenceGuard): Promise<boolean> {
  const w = opts.workload;
  const steps: [MetricName, () => Promise<void>][] = [
    ["decode", async () => { side.decode = await measureDecode(chat, w.decodeTokens, w.repetitions, guard); }],
    ["aggregate", async () => {
      side.aggregate4 = await measureAggregate(chat, 4, w.decodeTokens, w.repetitions, guard);
      side.aggregate8 = await measureAggregate(chat, 8, w.decodeTokens, w.repetitions, guard);
    }],
    ["ttft", async () => { side.ttft = await measureTtft(chat, w.repetitions, guard); }],
    ["late", async () => { side.late = await measureLateArrival(chat, w.lateStreamTokens, w.repetitions, guard); }],
    ["health", async () => {
      side.health = await guard.measure(`${chat.name} health`, () => measureHealth(chat, `${chat.baseUrl}/health`, w.healthRequestsPerConnection));
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
  return stuckAfter === null;
}

function emptySide(): SideResults {
  return { peakRssBytes: {}, cpu: {}, errors: {}, interference: {} };
}

/** Metric lines of our /metrics that name the chat engine path (whatever the metric is called). */
async function engineReported(baseUrl: string): Promise<string[]> {
  try {
    const text = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) }).then((r) => r.text());
    return text.split("\n").filter((l) => !l.startsWith("#") && /engine/i.test(l)).slice(0, 5);
  } catch {
    return [];
  }
}

/** The single-stream decode on the tiny model, on one side's tiny server. */
async function runTiny(spec: ServerSpec, chatOf: (baseUrl: string) => ChatTarget, opts: BenchOptions, side: SideResults, settings: RunSettings): Promise<void> {
  const run = await withServer(spec, opts, (guard, baseUrl) => attempt(side, spec.label, "tiny", async () => {
    side.tiny = await measureDecode(chatOf(baseUrl), opts.workload.tinyTokens, opts.workload.repetitions, guard, "tiny decode");
  }).then(() => undefined));
  side.peakRssBytes.tiny = run.peakRssBytes;
  side.cpu["tiny"] = run.cpu;
  side.interference["tiny"] = run.interference;
  settings[spec.label] = { readySeconds: run.readySeconds, settings: run.settings };
}

async function runOurs(opts: BenchOptions, models: BenchModels, settings: RunSettings): Promise<SideResults> {
  const side = emptySide();
  if ([...CHAT_METRICS, "embed"].some((m) => opts.only.has(m as MetricName))) {
    const spec = ourServiceSpec({ threads: opts.threads, port: await freePort() }, models, opts.engine);
    let reported: string[] = [];
    const run = await withServer(spec, opts, async (guard, baseUrl) => {
      reported = await engineReported(baseUrl);
      const ours = new OurChat(baseUrl);
      const chatWorks = await runChatMetrics(ours, opts, side, guard);
      if (!opts.only.has("embed")) return;
      await attempt(side, "ours", "embed", async () => { side.embed = await measureEmbed(ours, "ours", opts.workload.repetitions, guard); });
      await attempt(side, "ours", "embed", async () => {
        const idle = await measureEmbedLatency(ours, "ours", opts.workload.embedLatencyRequests, guard);
        side.embedLatency = { idle };
        if (!chatWorks) throw new Error("embedding latency while generating skipped: the chat engine timed out earlier");
        side.embedLatency.whileGenerating = await measureEmbedLatencyWhileGenerating(ours, ours, opts.workload.embedLatencyRequests, guard);
      });
    });
    side.peakRssBytes.total = run.peakRssBytes;
    side.cpu["process"] = run.cpu;
    side.interference["process"] = run.interference;
    settings["ours"] = { readySeconds: run.readySeconds, settings: run.settings, engineReported: reported };
  }
  if (opts.only.has("tiny")) {
    const spec = ourServiceSpec({ threads: opts.threads, port: await freePort() }, { chat: models.tinyChat, embed: models.tinyEmbed }, opts.engine, "tiny");
    await runTiny(spec, (baseUrl) => new OurChat(baseUrl), opts, side, settings);
  }
  return side;
}

async function runLlamaServer(opts: BenchOptions, build: LlamaBuild, models: BenchModels, settings: RunSettings): Promise<SideResults> {
  const side = emptySide();
  if (CHAT_METRICS.some((m) => opts.only.has(m))) {
    const spec = llamaChatSpec(build.server, { threads: opts.threads, port: await freePort() }, models.chat);
    const run = await withServer(spec, opts, async (guard, baseUrl) => { await runChatMetrics(new LlamaServerChat(baseUrl), opts, side, guard); });
    side.peakRssBytes.chat = run.peakRssBytes;
    side.cpu["chat"] = run.cpu;
    side.interference["chat"] = run.interference;
    settings[spec.label] = { readySeconds: run.readySeconds, settings: run.settings };
  }
  if (opts.only.has("embed")) {
    const spec = llamaEmbedSpec(build.server, { threads: opts.threads, port: await freePort() }, models.embed);
    const run = await withServer(spec, opts, async (guard, baseUrl) => {
      const embed = new LlamaServerEmbed(baseUrl);
      await attempt(side, "llama-server", "embed", async () => { side.embed = await measureEmbed(embed, "llama-server", opts.workload.repetitions, guard); });
      await attempt(side, "llama-server", "embed", async () => {
        side.embedLatency = { idle: await measureEmbedLatency(embed, "llama-server", opts.workload.embedLatencyRequests, guard) };
      });
    });
    side.peakRssBytes.embed = run.peakRssBytes;
    side.cpu["embed"] = run.cpu;
    side.interference["embed"] = run.interference;
    settings[spec.label] = { readySeconds: run.readySeconds, settings: run.settings };
  }
  if (opts.only.has("tiny")) {
    const spec = llamaChatSpec(build.server, { threads: opts.threads, port: await freePort() }, models.tinyChat, "tiny");
    await runTiny(spec, (baseUrl) => new LlamaServerChat(baseUrl), opts, side, settings);
  }
  return side;
}

/** Sanity checks that make a number trustworthy or not; printed under the table. */
function collectNotes(ours: SideResults, llama: SideResults, opts: BenchOptions): string[] {
  const notes: string[] = [];
  for (const [what, o, l] of [["decode", ours.decode, llama.decode], ["tiny decode", ours.tiny, llama.tiny]] as const) {
    const oursPrompt = o?.runs[0]?.promptTokens;
    const llamaPrompt = l?.runs[0]?.promptTokens;
    if (oursPrompt !== undefined && llamaPrompt !== undefined && oursPrompt !== llamaPrompt) {
      notes.push(`${what} prompt differs: ours ${oursPrompt} tokens, llama-server ${llamaPrompt} (chat templates disagree)`);
    }
  }
  for (const [label, side] of [["ours", ours], ["llama-server", llama]] as const) {
    for (const [metric, message] of Object.entries(side.errors)) notes.push(`${label} ${metric}: ${message}`);
    const warm = side.ttft?.runs.map((r) => `${r.warmCachedTokens}/${r.warmPromptTokens}`);
    if (warm) notes.push(`${label}: warm TTFT prompt tokens served from cache per repetition: ${warm.join(", ")} (cold prompts: ${side.ttft?.runs.map((r) => r.coldPromptTokens).join(", ")} tokens)`);
    if (side.late) {
      const runs = side.late.runs;
      notes.push(`${label}: late arrival: ${runs.map((r) => `${r.ttftMs.toFixed(0)} ms for ${r.promptTokens} prompt tokens, ${r.streamsStillRunning}/3 streams still running, streams at ${r.streamTokPerS.map((x) => x.toFixed(1)).join("/")} tok/s with longest token gaps ${r.streamMaxGapMs.map((x) => x.toFixed(0)).join("/")} ms`).join("; ")}`);
      if (runs.some((r) => r.streamsStillRunning < 3)) notes.push(`${label}: a background stream ended before the late request's first token: that late-arrival TTFT is not fully "while 3 stream"`);
    }
    for (const agg of [side.aggregate4, side.aggregate8]) {
      if (agg) notes.push(`${label}: ${agg.clients} clients: first tokens spread over ${agg.runs.map((r) => r.firstTokenSpreadMs.toFixed(0)).join(", ")} ms`);
    }
    if (side.health) notes.push(`${label}: /health p50/p99 with the same load on the idle server: ${side.health.idle.p50Ms.toFixed(2)}/${side.health.idle.p99Ms.toFixed(2)} ms`);
    if (side.health && !side.health.generatingThroughout) notes.push(`${label}: the generation ended before the /health load did; p99 is not fully "while generating"`);
    if (side.health && side.health.non200 > 0) notes.push(`${label}: ${side.health.non200} /health answers were not 200`);
    if (side.health && side.health.timeouts > 0) notes.push(`${label}: ${side.health.timeouts} of ${side.health.requests} /health requests got no answer within 5 s (counted at 5 s)`);
    if (side.health && side.health.reconnects > 0) notes.push(`${label}: ${side.health.reconnects} /health requests found their kept-alive connection closed and reconnected`);
    const el = side.embedLatency;
    if (el?.idle) notes.push(`${label}: one short text's embedding latency, idle: median ${el.idle.medianMs.toFixed(1)} ms, p90 ${el.idle.p90Ms.toFixed(1)} ms` +
      (el.whileGenerating ? `; while generating: median ${el.whileGenerating.medianMs.toFixed(1)} ms, p90 ${el.whileGenerating.p90Ms.toFixed(1)} ms` : ""));
    if (el?.whileGenerating && !el.whileGenerating.generatingThroughout) notes.push(`${label}: the generation ended before the embedding requests did; that latency is not fully "while generating"`);
    const disturbed = Object.values(side.interference).flat().filter((r) => r.otherCores > INTERFERENCE_CORES);
    if (disturbed.length > 0) {
      notes.push(`${label}: other processes kept using CPU during ${disturbed.map((r) => `${r.label} (${r.otherCores.toFixed(2)} cores)`).join(", ")}${opts.workload.interferenceRepeats > 0 ? ", even after repeating" : ""}; those numbers are depressed`);
    }
    const repeated = Object.values(side.interference).flat().filter((r) => r.repeated > 0).length;
    if (repeated > 0) notes.push(`${label}: ${repeated} repetition(s) were re-run because other processes used the CPU meanwhile`);
  }
  if (ours.peakRssBytes.tiny !== undefined && llama.peakRssBytes.tiny !== undefined) {
    notes.push(`tiny-model servers' peak RSS (not in the RSS row): ours ${(ours.peakRssBytes.tiny / 1e6).toFixed(0)} MB, llama-server ${(llama.peakRssBytes.tiny / 1e6).toFixed(0)} MB`);
  }
  const serverRates = llama.decode?.runs.map((r) => r.serverTokPerS).filter((x): x is number => x !== null);
  if (serverRates && serverRates.length > 0) notes.push(`llama-server's own decode timings: ${serverRates.map((r) => r.toFixed(2)).join(", ")} tok/s (client-side: ${llama.decode?.runs.map((r) => r.tokPerS.toFixed(2)).join(", ")})`);
  return notes;
}

/** The command line and environment each side gets, for the report. */
function flagsOf(opts: BenchOptions, build: LlamaBuild, models: BenchModels): string[] {
  const setup = { threads: opts.threads, port: 0 };
  const rel = (p: string) => path.relative(projectRoot, p);
  const oursEnv = (spec: ServerSpec) => Object.entries(ourServiceSettings(spec)).map(([k, v]) => `${k}=${k.endsWith("_MODEL") ? rel(v) : v}`).join(" ");
  const llamaArgs = (spec: ServerSpec) => spec.args.join(" ").replace(/ --port \d+/, "").replaceAll(`${projectRoot}${path.sep}`, "");
  const flags = [
    `ours (main): ${oursEnv(ourServiceSpec(setup, models, opts.engine))}${opts.engine === undefined ? " (LLM_ENGINE unset: the service's default path)" : ""}`,
    `ours (tiny): the same with LLM_MODEL=${rel(models.tinyChat)} EMBED_MODEL=${rel(models.tinyEmbed)}`,
    `llama-server chat: ${llamaArgs(llamaChatSpec(build.server, setup, models.chat))}`,
    `llama-server embed: ${llamaArgs(llamaEmbedSpec(build.server, setup, models.embed))}`,
    `llama-server tiny: ${llamaArgs(llamaChatSpec(build.server, setup, models.tinyChat, "tiny"))}`,
    `both: ${CHAT_SLOTS} slots × ${CONTEXT_PER_SLOT} tokens of context, ${opts.threads} threads (generation and batch), per request ${Object.entries(SAMPLING).map(([k, v]) => `${k}=${v}`).join(" ")} ignore_eos=true, seeded; ours via its seed API (/api/llm/generate, /api/llm/embed), llama-server via /v1/chat/completions and /v1/embeddings; thinking off on both`,
    "flash attention: llama-server's default (auto: on where the backend supports it, as the CPU does); ours: whatever its engine sets (node-llama-cpp's context default is off)",
  ];
  return flags;
}

function nodeLlamaCppVersion(): string {
  const pkg = JSON.parse(readFileSync(path.join(projectRoot, "node_modules", "node-llama-cpp", "package.json"), "utf8")) as { version: string };
  return pkg.version;
}

type RunRecord = { run: number; order: string; ours: SideResults; llamaServer: SideResults; rows: Row[]; notes: string[]; settings: RunSettings };

/** `--mode=sequential`: each server alone, one after the other, `--runs` times (alternating who goes first). */
async function runSequential(opts: BenchOptions, build: LlamaBuild, models: BenchModels): Promise<{ rows: Row[]; notes: string[]; runs: RunRecord[] }> {
  const w = opts.workload;
  const runs: RunRecord[] = [];
  for (let r = 0; r < opts.runs; r++) {
    // Alternating which side goes first keeps a slow drift of the machine from favouring one side.
    const oursFirst = r % 2 === 0;
    if (opts.runs > 1) progress(`run ${r + 1}/${opts.runs} (${oursFirst ? "ours" : "llama-server"} first)`);
    const settings: RunSettings = {};
    let ours: SideResults;
    let llama: SideResults;
    if (oursFirst) {
      ours = await runOurs(opts, models, settings);
      llama = await runLlamaServer(opts, build, models, settings);
    } else {
      llama = await runLlamaServer(opts, build, models, settings);
      ours = await runOurs(opts, models, settings);
    }
    const rows = buildRows(ours, llama, w.decodeTokens, w.tinyTokens);
    runs.push({ run: r + 1, order: oursFirst ? "ours first" : "llama-server first", ours, llamaServer: llama, rows, notes: collectNotes(ours, llama, opts), settings });
    if (opts.runs > 1) console.log(`\nrun ${r + 1}/${opts.runs}:\n${markdownTable(rows)}\n`);
  }

  const rows = combineRuns(runs.map((r) => r.rows));
  const notes = runs.flatMap((r) => r.notes.map((n) => (opts.runs > 1 ? `run ${r.run}: ${n}` : n)));
  if (opts.runs > 1) notes.unshift(`values are medians over ${opts.runs} runs (alternating which side went first); the ratio is the median of the runs' ratios, min–max beside it`);
  if (opts.quick) notes.unshift(`--quick: ${w.repetitions} repetition(s) per metric, ${w.decodeTokens}-token streams, no re-runs of disturbed repetitions; numbers are indicative only`);
  if (models.overridden) notes.unshift("BENCH_CHAT_MODEL / BENCH_EMBED_MODEL replaced the bench models: a harness check, the numbers say nothing about performance");
  return { rows, notes, runs };
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  installCleanupHandlers();
  const startedAt = new Date().toISOString();
  const w = opts.workload;
  progress(`metrics: ${[...opts.only].join(", ")}; ${opts.mode === "paired" ? `paired mode, ${opts.pairs} pairs of blocks per metric, drift factor ${opts.driftFactor}` : `sequential mode, ${opts.runs} run(s) of ${w.repetitions} repetition(s) each`}; ${opts.threads} threads on both servers; our engine: ${opts.engine ?? "the service's default"}${opts.quick ? "; --quick" : ""}`);
  // Ours runs as `npm start` runs it: compiled JavaScript, without the TypeScript loader, on the binding
  // a user has (by default: after the first start's background build).
  progress(await buildDist());
  serverOptions.gpu = opts.gpu;
  const binding = await prepareBinding(opts.binding, opts.gpu);
  serverOptions.ourEnv = binding.env;
  progress(binding.summary);
  const build = opts.llamaBin === null ? await ensureLlamaBuild() : await llamaBuildFrom(opts.llamaBin);
  progress(`llama-server: llama.cpp ${build.tag} (${build.commit.slice(0, 10)}), ${path.relative(projectRoot, build.server)}`);
  const models = await ensureBenchModels(build);
  progress(`models: ${path.relative(projectRoot, models.chat)} (${(statSync(models.chat).size / 2 ** 30).toFixed(2)} GiB), ${path.relative(projectRoot, models.embed)}; tiny: ${path.relative(projectRoot, models.tinyChat)}`);

  let rows: Row[];
  let notes: string[];
  let runs: RunRecord[] = [];
  let paired: PairedResult | null = null;
  if (opts.mode === "paired") {
    paired = await runPaired(opts, models, build);
    rows = paired.rows;
    notes = paired.notes;
    if (opts.quick) notes.unshift(`--quick: ${opts.pairs} pair(s) per metric, ${w.decodeTokens}-token streams; numbers are indicative only`);
    if (models.overridden) notes.unshift("BENCH_CHAT_MODEL / BENCH_EMBED_MODEL replaced the bench models: a harness check, the numbers say nothing about performance");
  } else {
    ({ rows, notes, runs } = await runSequential(opts, build, models));
  }
  if (opts.mode === "sequential") {
    const engineLine = runs.map((r) => r.settings["ours"]?.engineReported ?? []).find((l) => l.length > 0);
    notes.push(`our engine path: requested ${opts.engine ?? "(default)"}; /metrics reports ${engineLine ? engineLine.join(" | ") : "no engine metric"}; log: ${runs[0]?.settings["ours"]?.settings ?? "—"}`);
    const llamaLog = runs[0]?.settings["llama-server chat"]?.settings;
    if (llamaLog !== undefined) notes.push(`llama-server chat log: ${llamaLog}`);
  }

  // Which binding each of our servers really loaded, from its own log.
  const ourLogs = existsSync(logDir)
    ? readdirSync(logDir).filter((f) => f.startsWith("ours") && f.endsWith(".log") && statSync(path.join(logDir, f)).mtimeMs >= Date.parse(startedAt))
    : [];
  const reported = Object.fromEntries(ourLogs.map((f) => [f, bindingInLog(readFileSync(path.join(logDir, f), "utf8")) ?? "not reported"]));
  notes.unshift(`${binding.summary}; loaded per server: ${Object.entries(reported).map(([f, b]) => `${f} ${b}`).join(", ") || "—"}`);
  const cpu = os.cpus()[0]?.model.trim() ?? "CPU";
  const subtitle = `${cpu} · ${opts.threads} threads · chat ${path.basename(models.chat)} · embed ${path.basename(models.embed)} · tiny ${path.basename(models.tinyChat)} · llama.cpp ${build.tag} · ${opts.mode === "paired" ? `paired, ${opts.pairs} pairs` : `sequential, ${opts.runs} run(s)`} · ${startedAt.slice(0, 16).replace("T", " ")} UTC`;
  const flags = flagsOf(opts, build, models);
  const results: ResultsFile = {
    version: 2,
    startedAt,
    finishedAt: new Date().toISOString(),
    wallSeconds: Math.round(elapsedSeconds()),
    rows,
    notes,
    flags,
    options: { mode: opts.mode, pairs: opts.pairs, driftFactor: opts.driftFactor, only: [...opts.only], quick: opts.quick, runs: opts.runs, engine: opts.engine ?? null, workload: w, threads: opts.threads, binding: opts.binding, gpu: opts.gpu, llamaBin: opts.llamaBin },
    binding: { requested: opts.binding, env: binding.env, summary: binding.summary, loaded: reported },
    machine: { cpu, cpus: os.availableParallelism(), memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` },
    llamaCpp: { tag: build.tag, commit: build.commit, nodeLlamaCpp: nodeLlamaCppVersion() },
    models: { chat: path.relative(projectRoot, models.chat), chatBytes: statSync(models.chat).size, embed: path.relative(projectRoot, models.embed), tinyChat: path.relative(projectRoot, models.tinyChat) },
    sampling: SAMPLING,
    runs,
    paired,
  };
  // The README's tables are the default install on the CPU: another binding or the GPU writes only its own files.
  const realModels = !opts.quick && !models.overridden && opts.threads === os.availableParallelism() && opts.binding === "default" && !opts.gpu;
  const full = realModels && DEFAULT_METRICS.every((m) => opts.only.has(m));
  const optIn = realModels && OPT_IN_METRICS.every((m) => opts.only.has(m)) && [...opts.only].every((m) => OPT_IN_METRICS.includes(m));
  const files = writeResults(results, subtitle, full ? "latest" : optIn ? "opt-in" : "partial");

  console.log(markdownTable(rows));
  if (notes.length > 0) console.log(`\n${notes.map((n) => `* ${n}`).join("\n")}`);
  progress(`wrote ${[files.json, files.copy, files.md, files.svg].map((f) => path.relative(projectRoot, f)).join(", ")}`);

  // Only a full run of every metric on the real bench models may replace the README's numbers; a run of
  // every opt-in metric (and nothing else) replaces the second table's.
  if (opts.readme && optIn) {
    const summary = [
      `Latest run of the opt-in rows (\`npm run bench -- --only=${OPT_IN_METRICS.join(",")}\`, ${startedAt.slice(0, 16).replace("T", " ")} UTC,`,
      `${(elapsedSeconds() / 60).toFixed(1)} min): ${cpu}, ${os.availableParallelism()} cores; paired mode, ${opts.pairs} pairs of blocks per metric.`,
      "Raw numbers, notes, each server's flags: `bench/results/opt-in.{md,json,svg}`.",
    ].join("\n");
    progress(updateReadme(rows, summary, undefined, "opt-in") ? "README.md: opt-in table updated" : "README.md: opt-in markers not found; table not written");
  } else if (opts.readme && full) {
    const minutes = (elapsedSeconds() / 60).toFixed(1);
    const extra = [
      ...(opts.mode === "sequential" ? ["--mode sequential"] : []),
      ...(opts.runs > 1 ? [`--runs ${opts.runs}`] : []),
      ...(opts.mode === "paired" && opts.pairs !== 4 ? [`--pairs ${opts.pairs}`] : []),
      ...(opts.engine ? [`--engine ${opts.engine}`] : []),
    ];
    const command = `npm run bench${extra.length > 0 ? ` -- ${extra.join(" ")}` : ""}`;
    const how = opts.mode === "paired"
      ? ` Paired mode: all servers of a group loaded at once, one working at a time, ${opts.pairs} alternating pairs of blocks per metric; the ratio is the median of the per-pair ratios with their min–max; UNSTABLE = one side's blocks varied more than ${opts.driftFactor}x.`
      : opts.runs > 1 ? ` Sequential mode: values are medians of ${opts.runs} runs; the ratio is the median of the runs' ratios, with their min–max.` : " Sequential mode (one server after the other).";
    const summary = [
      `Latest full run (\`${command}\`, ${startedAt.slice(0, 16).replace("T", " ")} UTC, ${minutes} min): ${cpu}, ${os.availableParallelism()} cores,`,
      `${Math.round(os.totalmem() / 2 ** 30)} GiB; ${opts.threads} threads on both sides; our engine path: ${opts.engine ?? "default"}; ${binding.summary}; llama-server built from`,
      `node-llama-cpp's bundled llama.cpp (${build.tag}).${how}`,
      "Raw numbers, notes, each server's flags and the chart: `bench/results/latest.{md,json,svg}`.",
    ].join("\n");
    progress(updateReadme(rows, summary) ? "README.md: table between the bench markers updated" : "README.md: bench markers not found; table not written");
  } else if (opts.readme) {
    progress("README.md left alone: only a full run (all metrics, no --quick, real bench models, every CPU) writes its table");
  }
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
