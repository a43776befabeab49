// How the chat engine runs, as one structure: the configuration builds it once (src/config.ts), and it goes
// unchanged to the engine, which hands the loop its part; status, the start log and the prompt cache's key
// read back what the loop reports it runs with (llama.cpp's common_params, Ollama's server config).

/** KV cache element types llama-server's -ctk/-ctv and Ollama's OLLAMA_KV_CACHE_TYPE offer: q8_0 halves a slot's memory, q4_0 quarters it. */
export const KV_CACHE_TYPES = ["f16", "q8_0", "q4_0"] as const;
export type KvCacheType = (typeof KV_CACHE_TYPES)[number];
/** llama.cpp's flash attention: auto (on where the backend has it; always on for a quantized V cache), on, off. */
export type FlashAttention = "auto" | "on" | "off";

export type PromptCacheSettings = Readonly<{
  /** Host-memory bound in MiB (0: off; then nothing is persisted either). */
  hostMiB: number;
  minTokens: number;
  dir: string;
  /** Disk bound in MiB per key (0: not persisted). */
  diskMiB: number;
  /** Also persist this often (0: only at shutdown). */
  saveIntervalS: number;
}>;

export type ChatEngineSettings = Readonly<{
  /** Context tokens per slot. */
  contextSize: number;
  parallel: number;
  batchSize: number;
  gpuLayers: "auto" | "max" | number;
  /** Nice value of the native loop's threads (Linux; 0: unchanged). */
  nice: number;
  kvCacheType: KvCacheType;
  flashAttention: FlashAttention;
  queueSize: number;
  requestTimeoutMs: number;
  /** Which backend; "native" falls back to node-llama-cpp when the addon is unavailable. */
  engine: "native" | "node-llama-cpp";
  /** Where llama-server's slot save/restore files go (empty: those actions are off). */
  slotSavePath: string;
  promptCache: PromptCacheSettings;
}>;
