// Prompt-cache bench scenarios (issue 18), as functions over a ChatTarget so both servers run the same
// workload: the first request after a restart against the warm TTFT; 4 clients sharing a ~400-token
// system prompt while 3 streams keep the other slots busy; 16 distinct ~400-token system prompts cycling
// over 4 slots. The restart and llama-server's manual slot save/restore are hooks the caller provides,
// since starting a server is bench/run.ts's job.
import { postJson } from "./http.ts";
import { median, quantile } from "./stats.ts";
import type { ChatTarget, StreamResult } from "./targets.ts";
import { question, systemPrompt } from "./workload.ts";

/** Tokens per answer in these rows: TTFT is what they measure. */
const CACHE_MAX_TOKENS = 8;
/** The streams that keep slots busy in the "warm while busy" row (cancelled once it is measured). */
// Long enough to outlast the four warm requests; prompt + answer within the 2,048-token slot (our service
// refuses max_new_tokens that cannot fit, where llama-server stops at the context's end).
const BUSY_STREAM_TOKENS = 1200;

function ttftMs(r: StreamResult, label: string): number {
  if (r.firstContentAtMs === null) throw new Error(`${label}: no content event in the stream`);
  return r.firstContentAtMs - r.sentAtMs;
}

const ask = (chat: ChatTarget, system: string, q: number, signal?: AbortSignal) =>
  chat.generate({
    messages: [{ role: "system", content: system }, { role: "user", content: question(q) }],
    maxTokens: CACHE_MAX_TOKENS, ignoreEos: true, seed: 11 + q, ...(signal ? { signal } : {}),
  });

// ---- 1. the first request after a restart -----------------------------------------------------------------

export type RestartRun = { warmMs: number; afterRestartMs: number; cachedAfterRestart: number; promptTokens: number };
export type RestartResult = { warmMs: number; afterRestartMs: number; afterRestartOverWarm: number; runs: RestartRun[] };

/**
 * Per repetition: a new system prompt is sent twice (the second TTFT is the warm one), then `restart`
 * stops the server (SIGTERM: ours persists its prompt cache then) and starts it again, `afterRestart`
 * may restore state by hand (llama-server: POST /slots/0?action=restore), and the same prompt is sent.
 * `first`: the first repetition's number, so that each call (a bench block) uses system prompts new to the server.
 */
export async function measureFirstAfterRestart(
  chat: ChatTarget,
  restart: () => Promise<ChatTarget>,
  reps: number,
  hooks: { beforeRestart?: (chat: ChatTarget) => Promise<void>; afterRestart?: (chat: ChatTarget) => Promise<void> } = {},
  first = 0,
): Promise<RestartResult> {
  const runs: RestartRun[] = [];
  let target = chat;
  for (let i = first; i < first + reps; i++) {
    const system = systemPrompt(18_000 + i);
    await ask(target, system, 1);
    const warm = await ask(target, system, 2);
    await hooks.beforeRestart?.(target);
    target = await restart();
    await hooks.afterRestart?.(target);
    const after = await ask(target, system, 3);
    runs.push({ warmMs: ttftMs(warm, "warm"), afterRestartMs: ttftMs(after, "after restart"), cachedAfterRestart: after.cachedPromptTokens, promptTokens: after.promptTokens });
  }
  const warmMs = median(runs.map((r) => r.warmMs));
  const afterRestartMs = median(runs.map((r) => r.afterRestartMs));
  return { warmMs, afterRestartMs, afterRestartOverWarm: afterRestartMs / warmMs, runs };
}

/** llama-server's manual persistence: save slot `slot` to `filename` before the restart, restore it after. */
export const llamaServerSlotHooks = (filename: string, slot = 0) => ({
  beforeRestart: async (chat: ChatTarget) => { await postJson(`${chat.baseUrl}/slots/${slot}?action=save`, { filename }); },
  afterRestart: async (chat: ChatTarget) => { await postJson(`${chat.baseUrl}/slots/${slot}?action=restore`, { filename }); },
});

// ---- 2. warm while busy ----------------------------------------------------------------------------------

export type BusyRun = { ttftMs: number[]; cachedTokens: number[] };
export type BusyResult = { p50Ms: number; p90Ms: number; runs: BusyRun[] };

/**
 * A shared ~400-token system prompt is sent once; then 3 streams with other prompts start (they hold 3
 * slots) and 4 clients send the shared prompt with different questions at once. p50 of their TTFTs.
 */
export async function measureWarmWhileBusy(chat: ChatTarget, reps: number, first = 0): Promise<BusyResult> {
  const runs: BusyRun[] = [];
  for (let i = first; i < first + reps; i++) {
    const shared = systemPrompt(18_100 + i);
    await ask(chat, shared, 100);
    const stop = new AbortController();
    let started = 0;
    // A stream that fails before its first content fails the block (it used to leave it waiting forever).
    const allStarted = new Promise<void>((resolve, reject) => {
      for (let s = 0; s < 3; s++) {
        chat.generate({
          messages: [{ role: "system", content: systemPrompt(18_200 + 10 * i + s) }, { role: "user", content: question(200 + s) }],
          maxTokens: BUSY_STREAM_TOKENS, ignoreEos: true, seed: 5 + s, signal: stop.signal,
          onFirstContent: () => { if (++started === 3) resolve(); },
        }).catch((error: unknown) => { if (!stop.signal.aborted) reject(error instanceof Error ? error : new Error(String(error))); });
      }
    });
    await allStarted;
    const answers = await Promise.all([0, 1, 2, 3].map((c) => ask(chat, shared, 300 + c)));
    stop.abort();
    runs.push({ ttftMs: answers.map((a) => ttftMs(a, "warm while busy")), cachedTokens: answers.map((a) => a.cachedPromptTokens) });
  }
  const all = runs.flatMap((r) => r.ttftMs);
  return { p50Ms: median(all), p90Ms: quantile(all, 0.9), runs };
}

// ---- 3. many prompts over few slots ----------------------------------------------------------------------

export type ManyResult = { p50Ms: number; p90Ms: number; cachedShare: number; ttftMs: number[] };

/**
 * `prompts` distinct ~400-token system prompts (16) sent in turn, `rounds` times (the first round fills
 * the caches and is not counted): with 4 slots, 12 of them live outside the slots at any time.
 */
export async function measureManyPrompts(chat: ChatTarget, prompts = 16, rounds = 3): Promise<ManyResult> {
  const systems = Array.from({ length: prompts }, (_, p) => systemPrompt(18_300 + p));
  for (const [p, system] of systems.entries()) await ask(chat, system, 400 + p);
  const ttft: number[] = [];
  let cached = 0;
  let total = 0;
  for (let r = 1; r < rounds; r++) {
    for (const [p, system] of systems.entries()) {
      const answer = await ask(chat, system, 400 + r * prompts + p);
      ttft.push(ttftMs(answer, "many prompts"));
      cached += answer.cachedPromptTokens;
      total += answer.promptTokens;
    }
  }
  return { p50Ms: median(ttft), p90Ms: quantile(ttft, 0.9), cachedShare: total > 0 ? cached / total : 0, ttftMs: ttft };
}
