// The measurements. Each takes a server adapter and returns raw samples plus the summary the table uses;
// both servers go through exactly the same code.
import http from "node:http";
import type { InterferenceGuard } from "./cpu.ts";
import { getStatus, RequestTimeoutError } from "./http.ts";
import { progress } from "./log.ts";
import { median, quantile, sum } from "./stats.ts";
import type { ChatTarget, EmbedTarget, StreamResult } from "./targets.ts";
import { decodePrompt, question, spanishSentences, systemPrompt } from "./workload.ts";

export const EMBED_TEXTS = 256;
export const EMBED_CLIENTS = 32;
export const HEALTH_CONNECTIONS = 64;
/** Background streams the late request arrives among. */
export const LATE_STREAMS = 3;
/** Per connection: one request every 100 ms (a slow answer delays that connection's next one). */
const HEALTH_INTERVAL_MS = 100;
const HEALTH_TIMEOUT_MS = 5000;
const TTFT_MAX_TOKENS = 8;
/** The long generation that health and embedding latency are measured under (cancelled once they are done). */
const BACKGROUND_TOKENS = 1024;

function firstContent(r: StreamResult, label: string): number {
  if (r.firstContentAtMs === null) throw new Error(`${label}: no content event in the stream`);
  return r.firstContentAtMs;
}

/** Decode rate of one stream: tokens after the first over the time from the first to the last. */
function streamDecodeRate(r: StreamResult, label: string): number {
  const seconds = (r.finishedAtMs - firstContent(r, label)) / 1000;
  if (r.tokens < 2 || seconds <= 0) throw new Error(`${label}: ${r.tokens} tokens in ${seconds} s; cannot compute a decode rate`);
  return (r.tokens - 1) / seconds;
}

function checkTokens(r: StreamResult, want: number, label: string): void {
  // ignore_eos must hold on both sides, or the rates are over different token counts.
  if (r.tokens !== want) throw new Error(`${label}: generated ${r.tokens} tokens, expected ${want} (ignore_eos not honoured?)`);
}

// ---- 1. single-stream decode (the 1.7B-shaped model, and the tiny overhead-bound one) -------------------

export type DecodeRun = { tokPerS: number; tokens: number; promptTokens: number; serverTokPerS: number | null };
export type DecodeResult = { tokPerS: number; tokens: number; runs: DecodeRun[] };

const decodeMessages = [{ role: "user" as const, content: decodePrompt(0) }];

/** Warm-up before decode blocks: the prompt is cached and the slot has run once. */
export async function decodeWarmup(chat: ChatTarget): Promise<void> {
  await chat.generate({ messages: decodeMessages, maxTokens: 32, ignoreEos: true, seed: 1 });
}

/** One single-stream decode of `tokens` tokens (one block of the paired bench, one repetition of the sequential one). */
export async function decodeBlock(chat: ChatTarget, tokens: number, i: number, label = "decode"): Promise<DecodeRun> {
  const r = await chat.generate({ messages: decodeMessages, maxTokens: tokens, ignoreEos: true, seed: 100 + i });
  checkTokens(r, tokens, `${chat.name} ${label}`);
  return { tokPerS: streamDecodeRate(r, `${chat.name} ${label}`), tokens: r.tokens, promptTokens: r.promptTokens, serverTokPerS: r.serverDecodeTokPerS };
}

export async function measureDecode(chat: ChatTarget, tokens: number, reps: number, guard: InterferenceGuard, label = "decode"): Promise<DecodeResult> {
  await decodeWarmup(chat);
  const runs: DecodeRun[] = [];
  for (let i = 0; i < reps; i++) {
    const run = await guard.measure(`${chat.name} ${label} ${i + 1}`, () => decodeBlock(chat, tokens, i, label));
    runs.push(run);
    progress(`  ${chat.name} ${label} ${i + 1}/${reps}: ${run.tokPerS.toFixed(2)} tok/s` + (run.serverTokPerS !== null ? ` (server-reported ${run.serverTokPerS.toFixed(2)})` : ""));
  }
  return { tokPerS: median(runs.map((r) => r.tokPerS)), tokens, runs };
}

// ---- 2. aggregate decode, N concurrent clients -----------------------------------------------------------

export type AggregateClient = { firstTokenMs: number; finishedMs: number; promptTokens: number; cachedPromptTokens: number };
export type AggregateRun = {
  tokPerS: number; tokens: number; decodeWindowMs: number; wallMs: number; firstTokenSpreadMs: number;
  /** Per client, times from the moment the requests were sent: shows a request that had to wait. */
  clients: AggregateClient[];
};
export type AggregateResult = { clients: number; tokPerS: number; runs: AggregateRun[] };

function concurrentStreams(chat: ChatTarget, clients: number, maxTokens: number, seedBase: number): Promise<StreamResult[]> {
  return Promise.all(Array.from({ length: clients }, (_, c) =>
    chat.generate({ messages: [{ role: "user", content: decodePrompt(c + 1) }], maxTokens, ignoreEos: true, seed: seedBase + c })));
}

/** Warm-up before aggregate blocks: every slot used has run once. */
export async function aggregateWarmup(chat: ChatTarget, clients: number): Promise<void> {
  await concurrentStreams(chat, clients, 8, 1);
}

export async function measureAggregate(chat: ChatTarget, clients: number, tokens: number, reps: number, guard: InterferenceGuard): Promise<AggregateResult> {
  await aggregateWarmup(chat, clients);
  const runs: AggregateRun[] = [];
  for (let i = 0; i < reps; i++) {
    const run = await guard.measure(`${chat.name} aggregate×${clients} ${i + 1}`, () => aggregateBlock(chat, clients, tokens, i));
    runs.push(run);
    progress(`  ${chat.name} aggregate ${i + 1}/${reps}: ${run.tokPerS.toFixed(2)} tok/s over ${clients} clients (first tokens spread over ${run.firstTokenSpreadMs.toFixed(0)} ms)`);
  }
  return { clients, tokPerS: median(runs.map((r) => r.tokPerS)), runs };
}

/** `clients` concurrent streams of `tokens` tokens: one block (or repetition). */
export async function aggregateBlock(chat: ChatTarget, clients: number, tokens: number, i: number): Promise<AggregateRun> {
  const started = performance.now();
  const results = await concurrentStreams(chat, clients, tokens, 1000 + 10 * i);
  results.forEach((r) => checkTokens(r, tokens, `${chat.name} aggregate×${clients}`));
  const firsts = results.map((r) => firstContent(r, `${chat.name} aggregate×${clients}`));
  const last = Math.max(...results.map((r) => r.finishedAtMs));
  // The decode phase runs from the first token any client saw to the last token of all; each client's
  // first token is excluded, as in the single-stream rate.
  const decodeWindowMs = last - Math.min(...firsts);
  const generated = sum(results.map((r) => r.tokens - 1));
  const perClient = results.map((r, c) => ({
    firstTokenMs: (firsts[c] ?? Number.NaN) - started, finishedMs: r.finishedAtMs - started, promptTokens: r.promptTokens, cachedPromptTokens: r.cachedPromptTokens,
  }));
  return { tokPerS: generated / (decodeWindowMs / 1000), tokens: generated, decodeWindowMs, wallMs: last - started, firstTokenSpreadMs: Math.max(...firsts) - Math.min(...firsts), clients: perClient };
}

// ---- 3. time to first token, cold and warm prefix -------------------------------------------------------

export type TtftRun = { coldMs: number; warmMs: number; coldPromptTokens: number; warmPromptTokens: number; warmCachedTokens: number };
export type TtftResult = { coldMs: number; warmMs: number; warmOverCold: number; runs: TtftRun[] };

/**
 * One cold request (a system prompt never sent before: `promptId` must be new to this server) and one warm
 * one (the same system prompt, another question).
 */
export async function ttftBlock(chat: ChatTarget, promptId: number): Promise<TtftRun> {
  const system = { role: "system" as const, content: systemPrompt(promptId) };
  const ask = (q: number) => chat.generate({ messages: [system, { role: "user", content: question(q) }], maxTokens: TTFT_MAX_TOKENS, ignoreEos: true, seed: 7 + q });
  const cold = await ask(2 * promptId);
  const warm = await ask(2 * promptId + 1);
  return {
    coldMs: firstContent(cold, `${chat.name} ttft cold`) - cold.sentAtMs,
    warmMs: firstContent(warm, `${chat.name} ttft warm`) - warm.sentAtMs,
    coldPromptTokens: cold.promptTokens,
    warmPromptTokens: warm.promptTokens,
    warmCachedTokens: warm.cachedPromptTokens,
  };
}

export async function measureTtft(chat: ChatTarget, reps: number, guard: InterferenceGuard): Promise<TtftResult> {
  const runs: TtftRun[] = [];
  let promptId = 0;
  for (let i = 0; i < reps; i++) {
    // A system prompt never sent before: a repeated repetition gets a new one too.
    const run = await guard.measure(`${chat.name} ttft ${i + 1}`, () => ttftBlock(chat, ++promptId));
    runs.push(run);
    progress(`  ${chat.name} ttft ${i + 1}/${reps}: cold ${run.coldMs.toFixed(0)} ms (${run.coldPromptTokens} prompt tokens), warm ${run.warmMs.toFixed(0)} ms (${run.warmCachedTokens}/${run.warmPromptTokens} cached)`);
  }
  const coldMs = median(runs.map((r) => r.coldMs));
  const warmMs = median(runs.map((r) => r.warmMs));
  return { coldMs, warmMs, warmOverCold: warmMs / coldMs, runs };
}

// ---- 3b. late arrival: first token of a request sent while 3 others stream -------------------------------

/** How long the background streams decode together before the late request is sent. */
const LATE_DELAY_MS = 1000;

export type LateRun = {
  ttftMs: number; promptTokens: number;
  /** Background streams still generating when the late request's first token arrived (all 3 = a fair measurement). */
  streamsStillRunning: number;
  /** Background streams' decode rate (tokens over first-to-last), to see whether the late prompt stalled them. */
  streamTokPerS: number[];
  /** Each background stream's longest wait between two tokens (reading the late prompt in one go stalls them). */
  streamMaxGapMs: number[];
};
export type LateResult = { ttftMs: number; runs: LateRun[] };

export async function measureLateArrival(chat: ChatTarget, streamTokens: number, reps: number, guard: InterferenceGuard): Promise<LateResult> {
  const runs: LateRun[] = [];
  for (let i = 0; i < reps; i++) {
    const run = await guard.measure(`${chat.name} late arrival ${i + 1}`, () => lateBlock(chat, streamTokens, i));
    runs.push(run);
    progress(`  ${chat.name} late arrival ${i + 1}/${reps}: first token after ${run.ttftMs.toFixed(0)} ms (${run.promptTokens} prompt tokens; ${run.streamsStillRunning}/${LATE_STREAMS} streams still running)`);
  }
  return { ttftMs: median(runs.map((r) => r.ttftMs)), runs };
}

/** One late arrival: 3 streams decode, then a new question is sent; `i` keeps its prompts new to the server. */
export async function lateBlock(chat: ChatTarget, streamTokens: number, i: number): Promise<LateRun> {
  const { late, streams } = await (async () => {
    let started = 0;
    let allStarted!: () => void;
    const decoding = new Promise<void>((resolve) => { allStarted = resolve; });
    // Cancelled only if this measurement fails, so no stream outlives it into the next one.
    const cancel = new AbortController();
    const background = Array.from({ length: LATE_STREAMS }, (_, c) => chat.generate({
      messages: [{ role: "user", content: decodePrompt(40 + LATE_STREAMS * i + c) }], maxTokens: streamTokens, ignoreEos: true, seed: 300 + c,
      signal: cancel.signal, onFirstContent: () => { if (++started === LATE_STREAMS) allStarted(); },
    }));
    const all = Promise.all(background);
    try {
      await Promise.race([
        decoding,
        all.then(() => { throw new Error(`${chat.name}: the ${LATE_STREAMS} background streams ended before all had started`); }),
        rejectAfter(120_000, `${chat.name}: the ${LATE_STREAMS} background streams did not all start within 120 s`, decoding),
      ]);
      await new Promise((r) => setTimeout(r, LATE_DELAY_MS));
      // A question never sent before: its whole prompt must be read while the others decode.
      const lateResult = await chat.generate({ messages: [{ role: "user", content: question(5000 + i) }], maxTokens: TTFT_MAX_TOKENS, ignoreEos: true, seed: 400 + i });
      return { late: lateResult, streams: await all };
    } catch (error) {
      cancel.abort();
      await all.catch(() => undefined);
      throw error;
    }
  })();
  const firstAt = firstContent(late, `${chat.name} late arrival`);
  return {
    ttftMs: firstAt - late.sentAtMs, promptTokens: late.promptTokens,
    streamsStillRunning: streams.filter((r) => r.finishedAtMs > firstAt).length,
    streamTokPerS: streams.map((r) => streamDecodeRate(r, `${chat.name} late-arrival stream`)),
    streamMaxGapMs: streams.map((r) => r.maxContentGapMs),
  };
}

// ---- 4. embeddings throughput -----------------------------------------------------------------------------

export type EmbedResult = { singleTextsPerS: number; concurrentTextsPerS: number; singleRuns: number[]; concurrentRuns: number[] };

async function timed(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return (performance.now() - started) / 1000;
}

const embedTexts = spanishSentences(EMBED_TEXTS);
const perClient = EMBED_TEXTS / EMBED_CLIENTS;
const concurrentEmbeds = (target: EmbedTarget) =>
  Promise.all(Array.from({ length: EMBED_CLIENTS }, (_, c) => target.embed(embedTexts.slice(c * perClient, (c + 1) * perClient))));

/** Warm-up before embedding blocks: one request of all texts and one round of concurrent clients. */
export async function embedWarmup(target: EmbedTarget): Promise<void> {
  await target.embed(embedTexts);
  await concurrentEmbeds(target);
}

/** Texts per second of one request carrying all EMBED_TEXTS texts. */
export async function embedSingleBlock(target: EmbedTarget): Promise<number> {
  return EMBED_TEXTS / (await timed(() => target.embed(embedTexts)));
}

/** Texts per second of EMBED_CLIENTS concurrent requests sharing the same texts. */
export async function embedConcurrentBlock(target: EmbedTarget): Promise<number> {
  return EMBED_TEXTS / (await timed(() => concurrentEmbeds(target)));
}

export async function measureEmbed(target: EmbedTarget, label: string, reps: number, guard: InterferenceGuard): Promise<EmbedResult> {
  await embedWarmup(target);
  const singleRuns: number[] = [];
  const concurrentRuns: number[] = [];
  for (let i = 0; i < reps; i++) {
    singleRuns.push(await guard.measure(`${label} embed 1×${EMBED_TEXTS} ${i + 1}`, () => embedSingleBlock(target)));
    concurrentRuns.push(await guard.measure(`${label} embed ${EMBED_CLIENTS}×${perClient} ${i + 1}`, () => embedConcurrentBlock(target)));
    progress(`  ${label} embed ${i + 1}/${reps}: 1×${EMBED_TEXTS} ${singleRuns[i]?.toFixed(0)} texts/s, ${EMBED_CLIENTS}×${perClient} ${concurrentRuns[i]?.toFixed(0)} texts/s`);
  }
  return { singleTextsPerS: median(singleRuns), concurrentTextsPerS: median(concurrentRuns), singleRuns, concurrentRuns };
}

// ---- 4b. latency of one short text, alone and while a generation streams ----------------------------------

export type EmbedLatency = { medianMs: number; p90Ms: number; samplesMs: number[] };
export type EmbedLatencyLoaded = EmbedLatency & { generatingThroughout: boolean };

/** One short text per request, sequentially (the texts differ, the same list on both sides). */
export async function embedLatency(target: EmbedTarget, requests: number, seed = 777): Promise<EmbedLatency> {
  const texts = spanishSentences(requests + 2, seed);
  for (const text of texts.slice(0, 2)) await target.embed([text]); // warm-up
  const samplesMs: number[] = [];
  for (const text of texts.slice(2)) {
    const started = performance.now();
    await target.embed([text]);
    samplesMs.push(performance.now() - started);
  }
  return { medianMs: median(samplesMs), p90Ms: quantile(samplesMs, 0.9), samplesMs };
}

export async function measureEmbedLatency(target: EmbedTarget, label: string, requests: number, guard: InterferenceGuard): Promise<EmbedLatency> {
  const result = await guard.measure(`${label} embed latency`, () => embedLatency(target, requests));
  progress(`  ${label} embed latency, one short text, idle: median ${result.medianMs.toFixed(1)} ms, p90 ${result.p90Ms.toFixed(1)} ms`);
  return result;
}

/** The same requests while the chat model streams a long generation in the same server. */
export async function measureEmbedLatencyWhileGenerating(chat: ChatTarget, target: EmbedTarget, requests: number, guard: InterferenceGuard): Promise<EmbedLatencyLoaded> {
  const { result, generatingThroughout } = await guard.measure(`${chat.name} embed latency while generating`,
    () => whileGenerating(chat, () => embedLatency(target, requests)));
  progress(`  ${chat.name} embed latency, one short text, while generating: median ${result.medianMs.toFixed(1)} ms, p90 ${result.p90Ms.toFixed(1)} ms`);
  return { ...result, generatingThroughout };
}

/**
 * Starts a long generation, runs `work` once its first token arrived, then cancels it (the client
 * disconnects). Reports whether the generation was still streaming when `work` ended.
 */
export async function whileGenerating<T>(chat: ChatTarget, work: () => Promise<T>): Promise<{ result: T; generatingThroughout: boolean }> {
  const stop = new AbortController();
  let decoding!: () => void;
  const started = new Promise<void>((resolve) => { decoding = resolve; });
  let finished = false;
  const generation = chat.generate({
    messages: [{ role: "user", content: decodePrompt(99) }], maxTokens: BACKGROUND_TOKENS, ignoreEos: true, seed: 5, signal: stop.signal, timeoutMs: 300_000, onFirstContent: () => decoding(),
  }).then(() => { finished = true; }, (error: unknown) => {
    finished = true;
    if (!stop.signal.aborted) throw error;
  });
  try {
    await Promise.race([started, generation, rejectAfter(60_000, `${chat.name}: the background generation produced no token within 60 s`, started)]);
    const result = await work();
    return { result, generatingThroughout: !finished };
  } finally {
    stop.abort();
    await generation;
    // Give the server a moment to notice the disconnect and free the slot before the next measurement.
    await new Promise((r) => setTimeout(r, 500));
  }
}

// ---- 5. /health latency while a generation streams -------------------------------------------------------

export type HealthLoad = {
  p50Ms: number; p99Ms: number; maxMs: number; requests: number; seconds: number; non200: number;
  /** Requests retried on a new connection because the server had closed the kept-alive one. */
  reconnects: number;
  /** Requests unanswered after HEALTH_TIMEOUT_MS; counted in the percentiles at that latency (a lower bound). */
  timeouts: number;
};

export type HealthResult = HealthLoad & {
  /** Whether the generation was still streaming when the load ended (else the latency was not "while generating"). */
  generatingThroughout: boolean;
  /** The same load on the idle server first: the floor that HTTP (and this client) set by themselves. */
  idle: HealthLoad;
};

/**
 * 64 keep-alive connections each send `requestsPerConnection` requests, one every HEALTH_INTERVAL_MS (640
 * requests/s in all; 5 s for 50 each). Paced rather than back-to-back: a closed loop of 64 connections
 * saturates the HTTP stack (client included) and its p99 is then just 64 / throughput, not how long a
 * probe waits.
 */
export async function healthLoad(healthUrl: string, requestsPerConnection: number): Promise<HealthLoad> {
  // One agent of one socket per connection: each connection then carries exactly its own requests
  // (a shared pool hands out sockets LIFO, so a few would carry most requests and hit llama-server's
  // keep-alive limit of 100 requests per connection).
  const agents = Array.from({ length: HEALTH_CONNECTIONS }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  try {
    // Open the keep-alive connections first: connection setup is not what this measures.
    await Promise.all(agents.map((agent) => getStatus(healthUrl, agent).catch(() => 0)));
    const t0 = performance.now();
    const perConnection = await Promise.all(agents.map((agent, c) =>
      pacedProbes(healthUrl, agent, t0 + (c * HEALTH_INTERVAL_MS) / HEALTH_CONNECTIONS, requestsPerConnection)));
    const latencies = perConnection.flatMap((p) => p.latencies);
    return {
      p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99), maxMs: Math.max(...latencies), requests: latencies.length,
      seconds: (performance.now() - t0) / 1000, non200: sum(perConnection.map((p) => p.non200)),
      reconnects: sum(perConnection.map((p) => p.reconnects)), timeouts: sum(perConnection.map((p) => p.timeouts)),
    };
  } finally {
    for (const agent of agents) agent.destroy();
  }
}

/** /health under load on the idle server, then again once a long generation is decoding. */
export async function measureHealth(chat: ChatTarget, healthUrl: string, requestsPerConnection: number): Promise<HealthResult> {
  // One second of the same load first, unrecorded: the first requests of a process pay for JIT and lazy setup.
  await healthLoad(healthUrl, 10);
  const idle = await healthLoad(healthUrl, requestsPerConnection);
  const { result, generatingThroughout } = await whileGenerating(chat, () => healthLoad(healthUrl, requestsPerConnection));
  return { ...result, generatingThroughout, idle };
}

/** Rejects after `ms` unless `until` settles first (then it never settles, holding no timer). */
function rejectAfter(ms: number, message: string, until: Promise<unknown>): Promise<never> {
  return new Promise<never>((_, reject) => {
    const timer = setTimeout(() => reject(new Error(message)), ms);
    void until.then(() => clearTimeout(timer), () => clearTimeout(timer));
  });
}

function isConnectionClosed(error: unknown): boolean {
  const e = error as { code?: string; message?: string };
  return e.code === "ECONNRESET" || e.message === "socket hang up";
}

/** One connection's probes: a request every HEALTH_INTERVAL_MS from `firstAt` (staggered across connections). */
type ProbeStats = { latencies: number[]; non200: number; reconnects: number; timeouts: number };

async function pacedProbes(url: string, agent: http.Agent, firstAt: number, requests: number): Promise<ProbeStats> {
  const latencies: number[] = [];
  let non200 = 0;
  let reconnects = 0;
  let timeouts = 0;
  const giveUpAt = firstAt + 3 * requests * HEALTH_INTERVAL_MS; // bounded even if the server stalls
  for (let n = 0; n < requests && performance.now() < giveUpAt; n++) {
    const wait = firstAt + n * HEALTH_INTERVAL_MS - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const t0 = performance.now();
    const status = await getStatus(url, agent, HEALTH_TIMEOUT_MS).catch((error: unknown) => {
      // The server may close a kept-alive connection just as it is reused; a client then reconnects,
      // and that latency (reconnect included) is what this request cost.
      if (!isConnectionClosed(error)) throw error;
      reconnects++;
      return getStatus(url, agent, HEALTH_TIMEOUT_MS);
    }).catch((error: unknown) => {
      // A server that leaves a connection waiting (llama-server can, with many kept-alive connections)
      // gets the timeout as that request's latency, instead of failing the whole metric.
      if (!(error instanceof RequestTimeoutError)) throw error;
      timeouts++;
      return 0;
    });
    if (status !== 200 && status !== 0) non200++;
    latencies.push(performance.now() - t0);
  }
  return { latencies, non200, reconnects, timeouts };
}
