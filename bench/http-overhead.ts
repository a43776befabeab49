// `npm run bench:overhead`: what HTTP costs per call, the seed plan's "5-20 ms per request" measured. The
// app's backend is Python (httpx), so the calls are made by bench/python/http_overhead.py:
//   - the seed's pattern: a new httpx.AsyncClient per call (a TCP connect per call),
//   - one AsyncClient reused (keep-alive: the connection pool keeps one connection open),
// for a 1-text embedding and a 1-token generation, against the same engine called in this process (same
// GGUF, same threads): HTTP cost = median latency over HTTP - median latency in-process, in blocks that
// alternate in-process and HTTP (drift lands on both). Ours on the seed API and on the OpenAI routes,
// llama-server on its OpenAI routes (its compute is the same llama.cpp; the in-process engine is the
// baseline for both). Then tracing on (OTLP to a local receiver) against off, and HTTP/2 without TLS
// (h2c) against HTTP/1.1 on a bare Fastify server for concurrent calls on one client.
//
//   npm run bench:overhead [-- --rounds=5 --calls=40]      (needs Debian's python3-httpx and python3-h2)
//   BENCH_CHAT_MODEL=models/.cache/test-qwen3-tiny.gguf BENCH_EMBED_MODEL=models/.cache/test-minilm-tiny.gguf npm run bench:overhead -- --rounds=2 --calls=10
//     (checks the harness in a minute; with tiny models the compute is ~1 ms, so the HTTP cost stands out)
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { buildDist } from "../scripts/build-dist.ts";
import { projectRoot } from "../scripts/lib/llama-source.ts";
import { loadConfig } from "../src/config.ts";
import { disposeEngines, loadEngines, warmUp } from "../src/composition.ts";
import { resolveCpuBudget } from "../src/engine/runtime.ts";
import { ensureBenchModels, ensureLlamaBuild } from "./lib/artifacts.ts";
import { progress } from "./lib/log.ts";
import { freePort, installCleanupHandlers, killAllChildren, startServer } from "./lib/processes.ts";
import { llamaChatSpec, llamaEmbedSpec, ourServiceSpec } from "./lib/servers.ts";
import { SAMPLING } from "./lib/targets.ts";

const arg = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const ROUNDS = arg("rounds", 5);
const CALLS = arg("calls", 40);
const python = process.env["PYTHON_HTTPX"] ?? "/usr/bin/python3";

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

const TEXT = "¿Qué significa la fotosíntesis para las plantas?";
const MESSAGES = [{ role: "user", content: "Responde con una palabra: ¿de qué color es el cielo?" }];
const seedGenerate = { messages: MESSAGES, max_new_tokens: 1, temperature: SAMPLING.temperature, top_p: SAMPLING.top_p };
const openaiGenerate = { messages: MESSAGES, max_tokens: 1, temperature: SAMPLING.temperature, top_p: SAMPLING.top_p, chat_template_kwargs: { enable_thinking: false } };

type Target = { name: string; kind: "embed" | "generate"; url: string; body: unknown; pattern: "new" | "reused"; http2?: boolean; concurrency?: number };

function runPython(targets: readonly Target[], calls: number, warmup = 3): Record<string, number[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "bora-overhead-"));
  const spec = path.join(dir, "spec.json");
  writeFileSync(spec, JSON.stringify({ calls, warmup, targets }));
  return JSON.parse(execFileSync(python, [path.join(projectRoot, "bench", "python", "http_overhead.py"), spec], { encoding: "utf8", maxBuffer: 1 << 26 })) as Record<string, number[]>;
}

/** An OTLP/HTTP endpoint that accepts and drops every export: tracing's cost without a collector's. */
async function otlpSink(): Promise<{ endpoint: string; exports: () => number; close: () => void }> {
  let exports = 0;
  const server = http.createServer((req, res) => { req.resume(); req.on("end", () => { exports++; res.writeHead(200).end(); }); });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { endpoint: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, exports: () => exports, close: () => server.close() };
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const open = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => { s.destroy(); resolve(true); });
      s.once("error", () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

installCleanupHandlers();
const build = await ensureLlamaBuild();
const models = await ensureBenchModels(build);
const threads = resolveCpuBudget(0).threads;
progress(await buildDist());
progress(`models ${path.basename(models.chat)} + ${path.basename(models.embed)}, ${threads} threads, ${ROUNDS} rounds x ${CALLS} calls per target`);

// One slot each: single calls, and the processes stay small beside the in-process engines.
const sink = await otlpSink();
const oursSpec = ourServiceSpec({ threads, port: await freePort() }, models, undefined);
const ours = { ...oursSpec, env: { ...oursSpec.env, LLM_PARALLEL: "1", LOG_LEVEL: "warn" } };
const tracedSpec = ourServiceSpec({ threads, port: await freePort() }, models, undefined);
const traced = {
  ...tracedSpec, label: "ours traced", logFile: tracedSpec.logFile.replace(/\.log$/, "-traced.log"),
  env: { ...tracedSpec.env, LLM_PARALLEL: "1", LOG_LEVEL: "warn", OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint, OTEL_BSP_SCHEDULE_DELAY: "1000" },
};
const oneSlot = (args: readonly string[]) => args.map((a, i) => (args[i - 1] === "-np" ? "1" : args[i - 1] === "-c" ? "2048" : a));
const llamaChat = llamaChatSpec(build.server, { threads, port: await freePort() }, models.chat);
const llamaEmbed = llamaEmbedSpec(build.server, { threads, port: await freePort() }, models.embed);
const servers = await Promise.all([ours, traced, { ...llamaChat, args: oneSlot(llamaChat.args) }, llamaEmbed].map((s) => startServer(s)));
const url = (spec: { readyUrl: string }, route: string) => new URL(route, spec.readyUrl).href;

const engines = await loadEngines(loadConfig({
  LLM_MODEL: models.chat, EMBED_MODEL: models.embed, LLM_THREADS: String(threads), LLM_PARALLEL: "1", LLM_CONTEXT_SIZE: "2048",
  LLM_GPU: "cpu", MODEL_DOWNLOAD: "false", PROMPT_CACHE_MIB: "0", PROMPT_CACHE_DISK_MIB: "0", LOG_LEVEL: "silent",
}), pino({ level: "silent" }));
await warmUp(engines);

const targets: Target[] = [];
for (const pattern of ["new", "reused"] as const) {
  targets.push(
    { name: `ours seed embed ${pattern}`, kind: "embed", url: url(ours, "/api/llm/embed"), body: { texts: [TEXT] }, pattern },
    { name: `ours seed generate ${pattern}`, kind: "generate", url: url(ours, "/api/llm/generate"), body: seedGenerate, pattern },
    { name: `ours openai embed ${pattern}`, kind: "embed", url: url(ours, "/v1/embeddings"), body: { input: [TEXT] }, pattern },
    { name: `ours openai generate ${pattern}`, kind: "generate", url: url(ours, "/v1/chat/completions"), body: openaiGenerate, pattern },
    { name: `llama openai embed ${pattern}`, kind: "embed", url: url(llamaEmbed, "/v1/embeddings"), body: { input: [TEXT] }, pattern },
    { name: `llama openai generate ${pattern}`, kind: "generate", url: url(llamaChat, "/v1/chat/completions"), body: openaiGenerate, pattern },
  );
}
targets.push(
  { name: "ours traced seed embed reused", kind: "embed", url: url(traced, "/api/llm/embed"), body: { texts: [TEXT] }, pattern: "reused" },
  { name: "ours traced seed generate reused", kind: "generate", url: url(traced, "/api/llm/generate"), body: seedGenerate, pattern: "reused" },
);

const inProcess = { embed: [] as number[][], generate: [] as number[][] };
const overHttp = new Map<string, number[][]>(targets.map((t) => [t.name, []]));
// Round -1 is unmeasured: the first calls of every process (JIT, lazy setup, the prompt into the slot).
for (let round = -1; round < ROUNDS; round++) {
  const embedTimes: number[] = [];
  const generateTimes: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    let started = performance.now();
    await engines.embed.embed([TEXT]);
    embedTimes.push(performance.now() - started);
    started = performance.now();
    await engines.chat.generate({ messages: MESSAGES as never, maxTokens: 1, temperature: SAMPLING.temperature, topP: SAMPLING.top_p, enableThinking: false });
    generateTimes.push(performance.now() - started);
  }
  // A different order each round: no target always runs right after another one's load.
  const order = targets.map((_, i) => targets[(i + (round + 1) * 3) % targets.length]!);
  const result = runPython(order, CALLS);
  if (round < 0) continue;
  inProcess.embed.push(embedTimes);
  inProcess.generate.push(generateTimes);
  for (const t of targets) overHttp.get(t.name)!.push(result[t.name]!);
  progress(`round ${round + 1}/${ROUNDS}: in-process embed ${median(embedTimes).toFixed(2)} ms, generate ${median(generateTimes).toFixed(2)} ms`);
}

// h2c against HTTP/1.1 on a bare Fastify (the service itself speaks HTTP/1.1): the transport alone.
const probes = await Promise.all((["h1", "h2c"] as const).map(async (mode) => {
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", path.join(projectRoot, "bench", "lib", "h2c-probe.ts"), mode, String(port)], { cwd: projectRoot, stdio: "ignore" });
  await waitForPort(port);
  return { mode, port, child };
}));
const probeTargets: Target[] = probes.flatMap((p) => [1, 16].map((concurrency) => ({
  name: `${p.mode} x${concurrency}`, kind: "embed" as const, url: `http://127.0.0.1:${p.port}/api/llm/embed`, body: { texts: [TEXT] }, pattern: "reused" as const,
  http2: p.mode === "h2c", concurrency,
})));
const probeRuns = Array.from({ length: ROUNDS }, () => runPython(probeTargets, CALLS));
for (const p of probes) p.child.kill("SIGTERM");

// ---- report
const perRound = (name: string, kind: "embed" | "generate") => overHttp.get(name)!.map((calls, r) => median(calls) - median(inProcess[kind][r]!));
const rows: { call: string; pattern: string; httpMs: number; costMs: number; min: number; max: number }[] = [];
for (const t of targets) {
  const costs = perRound(t.name, t.kind);
  rows.push({ call: t.name.replace(/ (new|reused)$/, ""), pattern: t.pattern, httpMs: median(overHttp.get(t.name)!.flat()), costMs: median(costs), min: Math.min(...costs), max: Math.max(...costs) });
}
const lines = [
  `HTTP overhead per call (${path.basename(models.chat)} / ${path.basename(models.embed)}, ${threads} threads, ${ROUNDS} rounds x ${CALLS} calls, Python httpx ${execFileSync(python, ["-c", "import httpx; print(httpx.__version__)"], { encoding: "utf8" }).trim()})`,
  `in-process: embed 1 text ${median(inProcess.embed.flat()).toFixed(2)} ms, generate 1 token ${median(inProcess.generate.flat()).toFixed(2)} ms`,
  "",
  "| call | client | over HTTP, ms | HTTP cost, ms (median of rounds) | min–max |",
  "|---|---|---:|---:|---:|",
  ...rows.map((r) => `| ${r.call} | ${r.pattern === "new" ? "new AsyncClient per call (seed)" : "one AsyncClient, keep-alive"} | ${r.httpMs.toFixed(2)} | ${r.costMs.toFixed(2)} | ${r.min.toFixed(2)}–${r.max.toFixed(2)} |`),
  "",
  ...(["embed", "generate"] as const).map((kind) => {
    const on = median(overHttp.get(`ours traced seed ${kind} reused`)!.flat());
    const off = median(overHttp.get(`ours seed ${kind} reused`)!.flat());
    return `tracing on (OTLP, ${sink.exports()} exports received) vs off, ${kind}: ${on.toFixed(2)} ms vs ${off.toFixed(2)} ms (${(on - off).toFixed(2)} ms per call)`;
  }),
  "",
  "Bare Fastify, one reused client, ms per call:",
  ...probeTargets.map((t) => `  ${t.name}: ${median(probeRuns.flatMap((r) => r[t.name]!)).toFixed(3)}`),
];
console.log(lines.join("\n"));
const resultsDir = path.join(projectRoot, "bench", "results");
mkdirSync(resultsDir, { recursive: true });
writeFileSync(path.join(resultsDir, "http-overhead-latest.json"), JSON.stringify({
  at: new Date().toISOString(), models: { chat: path.basename(models.chat), embed: path.basename(models.embed), overridden: models.overridden }, threads, rounds: ROUNDS, calls: CALLS,
  inProcessMs: { embed: median(inProcess.embed.flat()), generate: median(inProcess.generate.flat()) }, rows,
  tracing: Object.fromEntries(["embed", "generate"].map((k) => [k, { on: median(overHttp.get(`ours traced seed ${k} reused`)!.flat()), off: median(overHttp.get(`ours seed ${k} reused`)!.flat()) }])),
  h2c: Object.fromEntries(probeTargets.map((t) => [t.name, median(probeRuns.flatMap((r) => r[t.name]!))])),
}, null, 2) + "\n");
await disposeEngines(engines);
await Promise.all(servers.map((s) => s.stop()));
sink.close();
killAllChildren();
