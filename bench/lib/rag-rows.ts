// The retrieval rows of the paired bench (issue 17): rerank throughput (pairs/s, 1 request × 64 documents and
// 8 clients × 16) and multilingual embedding throughput (texts/s, 1 × 256 and 32 clients × 8), ours vs
// llama-server, both over HTTP, on the same real-shaped fixture GGUFs (scripts/make-test-models.ts --bench:
// a bge-reranker-v2-m3-shaped xlm-roberta cross-encoder and a multilingual-e5-small-shaped embedder). Before a
// metric's blocks, the oracle (oracle-rerank.ts) checks that both sides give the same numbers within 1e-4 and
// the same order; the runner turns a mismatch into failed rows and a non-zero exit.
import path from "node:path";
import { BENCH_RERANK_SHAPE, BENCH_XLMR_EMBED_SHAPE, ensureModel } from "../../scripts/make-test-models.ts";
import { projectRoot } from "../../scripts/lib/llama-source.ts";
import type { EnginePath } from "./args.ts";
import { benchCacheDir } from "./artifacts.ts";
import { postJson } from "./http.ts";
import { EMBED_BATCH_TOKENS, EMBED_SEQUENCES, RERANK_QUERY, rerankDocuments, type RerankTarget, type VectorTarget } from "./oracle-rerank.ts";
import type { ServerSpec } from "./processes.ts";
import { ourServiceSpec, type ServerSetup } from "./servers.ts";
import { spanishSentences } from "./workload.ts";

/** A 1 × 64 rerank of the large-shaped cross-encoder takes tens of seconds on 2 busy cores: allow minutes. */
export const RAG_TIMEOUT_MS = 600_000;
/** Tokens per pair / per text on llama-server's slots: every bench pair and text is far shorter. */
const CONTEXT_PER_SLOT = 512;
const logDir = path.join(benchCacheDir, "logs");

/** The names ours serves the fixtures under (a model given by path is named by its file stem). */
export const RAG_EMBED_MODEL = path.basename(BENCH_XLMR_EMBED_SHAPE.file, ".gguf");
export const RAG_RERANK_MODEL = path.basename(BENCH_RERANK_SHAPE.file, ".gguf");

export type RagModels = { embed?: string; rerank?: string };

/** Makes (once, cached under models/.cache) only the fixtures the selected metrics need. */
export async function ensureRagModels(want: { embed: boolean; rerank: boolean }): Promise<RagModels> {
  return {
    ...(want.embed ? { embed: await ensureModel(BENCH_XLMR_EMBED_SHAPE) } : {}),
    ...(want.rerank ? { rerank: await ensureModel(BENCH_RERANK_SHAPE) } : {}),
  };
}

/**
 * Ours: the tiny chat and embedding models (the service always loads a chat model; they stay idle), the
 * multilingual embedder through EMBED_MODELS and the reranker through RERANK_MODELS. The reranker shares the
 * embedder's batch settings (EMBED_BATCH_TOKENS 512, EMBED_BATCH_SEQUENCES 32), so llama-server's --rerank
 * gets the same 512 tokens and 32 pairs per decode (llamaRagRerankSpec).
 */
export function ourRagSpec(s: ServerSetup, tiny: { chat: string; embed: string }, files: RagModels, engine: EnginePath | undefined): ServerSpec {
  const base = ourServiceSpec(s, tiny, engine, "tiny");
  return {
    ...base, label: "ours rag", logFile: path.join(logDir, "ours-rag.log"),
    env: {
      ...base.env,
      EMBED_MODELS: files.embed ?? "", RERANK_MODELS: files.rerank ?? "",
      EMBED_BATCH_TOKENS: String(EMBED_BATCH_TOKENS), EMBED_BATCH_SEQUENCES: String(EMBED_SEQUENCES),
    },
  };
}

/** llama-server --rerank with ours' decode shape: 512 tokens and 32 pairs per decode, 512 tokens per pair. */
export function llamaRagRerankSpec(binary: string, s: ServerSetup, model: string): ServerSpec {
  return {
    label: "llama-server rerank",
    command: binary,
    args: [
      "-m", model, "--rerank", "-c", String(CONTEXT_PER_SLOT * EMBED_SEQUENCES), "-np", String(EMBED_SEQUENCES),
      "-b", String(EMBED_BATCH_TOKENS), "-ub", String(EMBED_BATCH_TOKENS),
      "-t", String(s.threads), "-tb", String(s.threads), "--host", "127.0.0.1", "--port", String(s.port), "--no-webui",
    ],
    cwd: projectRoot,
    readyUrl: `http://127.0.0.1:${s.port}/health`,
    readyTimeoutMs: 300_000,
    logFile: path.join(logDir, "llama-server-rerank.log"),
  };
}

type EmbeddingsResponse = { data: { index: number; embedding: number[] }[] };

/** Any OpenAI-shaped /v1/embeddings (ours names the model; llama-server serves one). Vectors in input order. */
export function httpVectorTarget(name: string, baseUrl: string, model?: string): VectorTarget {
  return {
    name,
    async embed(texts) {
      const response = await postJson<EmbeddingsResponse>(`${baseUrl}/v1/embeddings`, { ...(model === undefined ? {} : { model }), input: texts }, RAG_TIMEOUT_MS);
      const out = new Array<number[]>(texts.length);
      for (const d of response.data) out[d.index] = d.embedding;
      if (out.some((v) => v === undefined)) throw new Error(`${name}: ${response.data.length} vectors for ${texts.length} texts`);
      return out;
    },
  };
}

async function seconds(work: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  await work();
  return (performance.now() - started) / 1000;
}

/** One rerank block: 1 request × 64 documents, then 8 concurrent requests × 16 documents; pairs/s each. */
export async function rerankBlock(target: RerankTarget): Promise<{ single: number; concurrent: number }> {
  const single = rerankDocuments(64);
  const many = rerankDocuments(8 * 16);
  const singleS = await seconds(() => target.rerank(RERANK_QUERY, single));
  const manyS = await seconds(() => Promise.all(Array.from({ length: 8 }, (_, c) => target.rerank(RERANK_QUERY, many.slice(c * 16, (c + 1) * 16)))));
  return { single: single.length / singleS, concurrent: many.length / manyS };
}

/** One multilingual embedding block: 1 request × 256 Spanish texts, then 32 clients × 8; texts/s each. */
export async function vectorBlock(target: VectorTarget): Promise<{ single: number; concurrent: number }> {
  const texts = spanishSentences(256);
  const singleS = await seconds(() => target.embed(texts));
  const manyS = await seconds(() => Promise.all(Array.from({ length: 32 }, (_, c) => target.embed(texts.slice(c * 8, (c + 1) * 8)))));
  return { single: texts.length / singleS, concurrent: texts.length / manyS };
}
