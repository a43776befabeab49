// How each server is started. The settings that shape performance are chosen once here and given to both
// sides: threads, slots, context per slot, batch sizes.
import path from "node:path";
import { projectRoot } from "../../scripts/lib/llama-source.ts";
import { benchCacheDir } from "./artifacts.ts";
import type { ServerSpec } from "./processes.ts";

export const CHAT_SLOTS = 4;
export const CONTEXT_PER_SLOT = 4096;
/** Prompt-processing batch: our default LLM_BATCH_SIZE, and llama-server's default ubatch. */
const CHAT_BATCH = 512;
/** Embeddings: every text of a batch in one ubatch (BERT attention is not causal), 64 texts per batch. */
const EMBED_BATCH_TOKENS = 4096;
const EMBED_SEQUENCES = 64;
/** MiniLM's trained context: each llama-server embedding slot gets this much. */
const EMBED_CONTEXT_PER_SLOT = 512;
const logDir = path.join(benchCacheDir, "logs");

export type ServerSetup = { threads: number; port: number };

export function ourServiceSpec(s: ServerSetup, models: { chat: string; embed: string }): ServerSpec {
  const env = {
    PORT: String(s.port),
    HOST: "127.0.0.1",
    LLM_MODEL: models.chat,
    EMBED_MODEL: models.embed,
    LLM_CONTEXT_SIZE: String(CONTEXT_PER_SLOT),
    LLM_PARALLEL: String(CHAT_SLOTS),
    LLM_BATCH_SIZE: String(CHAT_BATCH),
    LLM_THREADS: String(s.threads),
    LLM_GPU: "cpu",
    EMBED_BATCH_TOKENS: String(EMBED_BATCH_TOKENS),
    EMBED_BATCH_SEQUENCES: String(EMBED_SEQUENCES),
    MODEL_DOWNLOAD: "false",
    LOG_LEVEL: "info",
  };
  return {
    label: "ours",
    // node itself (not npx/tsx wrappers), so the pid is the process whose RSS and CPU are measured.
    command: process.execPath,
    args: ["--import", "tsx", "src/main.ts"],
    env: { ...process.env, ...env },
    cwd: projectRoot,
    readyUrl: `http://127.0.0.1:${s.port}/ready`,
    readyTimeoutMs: 300_000,
    logFile: path.join(logDir, "ours.log"),
  };
}

/** The environment our service got, for the results file (without the inherited variables). */
export function ourServiceSettings(spec: ServerSpec): Record<string, string> {
  const keys = ["LLM_CONTEXT_SIZE", "LLM_PARALLEL", "LLM_BATCH_SIZE", "LLM_THREADS", "LLM_GPU", "EMBED_BATCH_TOKENS", "EMBED_BATCH_SEQUENCES", "LLM_MODEL", "EMBED_MODEL"];
  return Object.fromEntries(keys.map((k) => [k, spec.env?.[k] ?? ""]));
}

function llamaServer(binary: string, label: string, s: ServerSetup, args: string[], log: string): ServerSpec {
  return {
    label,
    command: binary,
    args: [...args, "-t", String(s.threads), "-tb", String(s.threads), "--host", "127.0.0.1", "--port", String(s.port), "--no-webui"],
    cwd: projectRoot,
    readyUrl: `http://127.0.0.1:${s.port}/health`,
    readyTimeoutMs: 300_000,
    logFile: path.join(logDir, log),
  };
}

export function llamaChatSpec(binary: string, s: ServerSetup, model: string): ServerSpec {
  // -c is the TOTAL context: without --kv-unified each of the -np slots gets c/np, as our LLM_CONTEXT_SIZE per slot.
  return llamaServer(binary, "llama-server chat", s, [
    "-m", model, "-c", String(CONTEXT_PER_SLOT * CHAT_SLOTS), "-np", String(CHAT_SLOTS),
    "-b", String(CHAT_BATCH), "-ub", String(CHAT_BATCH), "--jinja",
  ], "llama-server-chat.log");
}

export function llamaEmbedSpec(binary: string, s: ServerSetup, model: string): ServerSpec {
  return llamaServer(binary, "llama-server embed", s, [
    "-m", model, "--embeddings", "--pooling", "mean", "-c", String(EMBED_CONTEXT_PER_SLOT * EMBED_SEQUENCES), "-np", String(EMBED_SEQUENCES),
    "-b", String(EMBED_BATCH_TOKENS), "-ub", String(EMBED_BATCH_TOKENS),
  ], "llama-server-embed.log");
}
