// How each server is started. The settings that shape performance are chosen once here and given to both
// sides: threads, slots, context per slot, batch sizes.
import path from "node:path";
import { projectRoot } from "../../scripts/lib/llama-source.ts";
import { benchCacheDir } from "./artifacts.ts";
import type { EnginePath } from "./args.ts";
import type { ServerSpec } from "./processes.ts";

/** Slots on both sides: enough for the 8-client aggregate to decode every client together. */
export const CHAT_SLOTS = 8;
/** The longest bench request is a ~30-token prompt plus 1,024 generated tokens (health, embed latency). */
export const CONTEXT_PER_SLOT = 2048;
/** Prompt-processing batch: our default LLM_BATCH_SIZE, and llama-server's default ubatch. */
const CHAT_BATCH = 512;
/**
 * Embeddings: every text of a batch in one ubatch (BERT attention is not causal). 512 tokens and 32 texts
 * per decode on both sides: CPU flash attention scans a mask that grows with the square of the tokens in
 * a decode, so this shape was faster than 4096 x 64 for llama-server and for ours alike (issue 8's
 * measurements); our service's defaults.
 */
const EMBED_BATCH_TOKENS = 512;
const EMBED_SEQUENCES = 32;
/** MiniLM's trained context: each llama-server embedding slot gets this much. */
const EMBED_CONTEXT_PER_SLOT = 512;
export const logDir = path.join(benchCacheDir, "logs");

export type ServerSetup = { threads: number; port: number };

/**
 * Set once by run.ts before any server starts: `gpu` puts both sides on CUDA with every layer offloaded
 * (scripts/gpu-check.ts); `ourEnv` is the binding choice (bench/lib/binding.ts).
 */
export const serverOptions: { gpu: boolean; ourEnv: Record<string, string> } = { gpu: false, ourEnv: {} };
/** Which server of a side: the main one (1.7B-shaped chat + MiniLM-shaped embed) or the tiny-model one. */
export type ServerRole = "main" | "tiny";

/** Our service's environment; LLM_ENGINE only when the bench was asked for a path (else the service's default). */
export function ourServiceSpec(s: ServerSetup, models: { chat: string; embed: string }, engine: EnginePath | undefined, role: ServerRole = "main"): ServerSpec {
  const env: Record<string, string> = {
    PORT: String(s.port),
    HOST: "127.0.0.1",
    LLM_MODEL: models.chat,
    EMBED_MODEL: models.embed,
    LLM_CONTEXT_SIZE: String(CONTEXT_PER_SLOT),
    LLM_PARALLEL: String(CHAT_SLOTS),
    LLM_BATCH_SIZE: String(CHAT_BATCH),
    LLM_THREADS: String(s.threads),
    LLM_GPU: serverOptions.gpu ? "cuda" : "cpu",
    ...(serverOptions.gpu ? { LLM_GPU_LAYERS: "max" } : {}),
    ...serverOptions.ourEnv,
    EMBED_BATCH_TOKENS: String(EMBED_BATCH_TOKENS),
    EMBED_BATCH_SEQUENCES: String(EMBED_SEQUENCES),
    MODEL_DOWNLOAD: "false",
    LOG_LEVEL: "info",
    // No host-memory prompt cache, as llama-server's --cache-ram 0 below: both sides hold the same things
    // (weights, the slots' KV, compute buffers), so peak RSS compares like for like. The cache rows
    // (ourCacheSpec) turn it back on, on both sides.
    PROMPT_CACHE_MIB: "0",
    PROMPT_CACHE_DISK_MIB: "0",
    ...(engine === undefined ? {} : { LLM_ENGINE: engine }),
  };
  return {
    label: role === "main" ? "ours" : "ours tiny",
    // node itself (not npx/tsx wrappers), so the pid is the process whose RSS and CPU are measured; on the
    // compiled service (dist/, built when the bench starts), as `npm start` and the images run it.
    command: process.execPath,
    args: ["dist/main.js"],
    env: { ...process.env, ...env },
    cwd: projectRoot,
    readyUrl: `http://127.0.0.1:${s.port}/ready`,
    readyTimeoutMs: 300_000,
    logFile: path.join(logDir, role === "main" ? "ours.log" : "ours-tiny.log"),
  };
}

/** The environment our service got, for the results file (without the inherited variables). */
export function ourServiceSettings(spec: ServerSpec): Record<string, string> {
  const keys = ["LLM_ENGINE", "LLAMA_BINDING", "LLAMA_FAST_BUILD", "LLM_CONTEXT_SIZE", "LLM_PARALLEL", "LLM_BATCH_SIZE", "LLM_THREADS", "LLM_GPU", "LLM_GPU_LAYERS", "EMBED_BATCH_TOKENS", "EMBED_BATCH_SEQUENCES", "PROMPT_CACHE_MIB", "PROMPT_CACHE_DIR", "LLM_MODEL", "EMBED_MODEL"];
  return Object.fromEntries(keys.filter((k) => spec.env?.[k] !== undefined).map((k) => [k, spec.env?.[k] ?? ""]));
}

function llamaServer(binary: string, label: string, s: ServerSetup, args: string[], log: string): ServerSpec {
  return {
    label,
    command: binary,
    args: [...args, ...(serverOptions.gpu ? ["-ngl", "999"] : []), "-t", String(s.threads), "-tb", String(s.threads), "--host", "127.0.0.1", "--port", String(s.port), "--no-webui"],
    cwd: projectRoot,
    readyUrl: `http://127.0.0.1:${s.port}/health`,
    readyTimeoutMs: 300_000,
    logFile: path.join(logDir, log),
  };
}

export function llamaChatSpec(binary: string, s: ServerSetup, model: string, role: ServerRole = "main"): ServerSpec {
  // -c is the TOTAL context: without --kv-unified each of the -np slots gets c/np, as our LLM_CONTEXT_SIZE per slot.
  // --cache-ram 0: no host-RAM prompt cache (default up to 8 GiB), as ours gets PROMPT_CACHE_MIB=0 here.
  return llamaServer(binary, role === "main" ? "llama-server chat" : "llama-server tiny", s, [
    "-m", model, "-c", String(CONTEXT_PER_SLOT * CHAT_SLOTS), "-np", String(CHAT_SLOTS),
    "-b", String(CHAT_BATCH), "-ub", String(CHAT_BATCH), "--jinja", "--cache-ram", "0",
  ], role === "main" ? "llama-server-chat.log" : "llama-server-tiny.log");
}

export function llamaEmbedSpec(binary: string, s: ServerSetup, model: string): ServerSpec {
  return llamaServer(binary, "llama-server embed", s, [
    "-m", model, "--embeddings", "--pooling", "mean", "-c", String(EMBED_CONTEXT_PER_SLOT * EMBED_SEQUENCES), "-np", String(EMBED_SEQUENCES),
    "-b", String(EMBED_BATCH_TOKENS), "-ub", String(EMBED_BATCH_TOKENS),
    // Its decode count (llamacpp:n_decode_total) times one decode in the query-during-bulk row.
    "--metrics",
  ], "llama-server-embed.log");
}

/**
 * The prompt-cache rows' servers (issue 18): `slots` slots on both sides. Ours keeps its prompt cache at its
 * defaults (host memory, persisted to `promptCacheDir` on SIGTERM); llama-server gets `--cache-ram` at its
 * default (no flag: its host-memory prompt cache is on) and `--slot-save-path` for the manual save/restore
 * comparison after a restart.
 */
export function ourCacheSpec(s: ServerSetup, models: { chat: string; embed: string }, engine: EnginePath | undefined, slots: number, promptCacheDir: string, label: string): ServerSpec {
  const base = ourServiceSpec(s, models, engine);
  return {
    ...base, label,
    // The service's own cache defaults: the main rows' PROMPT_CACHE_MIB=0 and PROMPT_CACHE_DISK_MIB=0 dropped.
    env: { ...withoutKeys(base.env ?? {}, ["PROMPT_CACHE_MIB", "PROMPT_CACHE_DISK_MIB"]), LLM_PARALLEL: String(slots), PROMPT_CACHE_DIR: promptCacheDir },
    logFile: path.join(logDir, `${label.replace(/\s+/g, "-")}.log`),
  };
}

export function llamaCacheChatSpec(binary: string, s: ServerSetup, model: string, slots: number, slotSavePath: string, label: string): ServerSpec {
  return llamaServer(binary, label, s, [
    "-m", model, "-c", String(CONTEXT_PER_SLOT * slots), "-np", String(slots),
    "-b", String(CHAT_BATCH), "-ub", String(CHAT_BATCH), "--jinja", "--slot-save-path", slotSavePath,
  ], `${label.replace(/\s+/g, "-")}.log`);
}

function withoutKeys(env: NodeJS.ProcessEnv, keys: readonly string[]): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !keys.includes(k)));
}
