// GET /api/status: what the playground's status panel shows (and what an operator asks first): the
// models, the native backend, threads, GPU layers, slots and queue, in one JSON document.
import { Type, type Static } from "@sinclair/typebox";

export const StatusResponseSchema = Type.Object({
  status: Type.Union([Type.Literal("ready"), Type.Literal("loading"), Type.Literal("stopping"), Type.Literal("failed")]),
  uptime_s: Type.Integer(),
  runtime: Type.Optional(Type.Object({
    backend: Type.String({ description: "The llama.cpp backend actually loaded: cpu, cuda, metal or vulkan" }),
    threads: Type.Integer({ description: "CPU threads for decoding" }),
    threads_source: Type.String({ description: "Where the thread count came from: override (LLM_THREADS), affinity or cgroup" }),
  })),
  binding: Type.Optional(Type.Object({
    setting: Type.String({ description: "LLAMA_BINDING: auto, prebuilt, native or portable" }),
    loaded: Type.Union([Type.Literal("prebuilt"), Type.Literal("localBuild"), Type.Null()], { description: "What node-llama-cpp loaded (null while loading): its prebuilt binaries or a local build" }),
    build: Type.Union([Type.Object({
      id: Type.String(),
      flavor: Type.Union([Type.Literal("native"), Type.Literal("portable")]),
      built_at: Type.String(),
    }), Type.Null()], { description: "The fast build that is loaded (null: none of ours)" }),
    library_dir: Type.Union([Type.String(), Type.Null()], { description: "Folder of the loaded libllama" }),
    fast_build: Type.Object({
      setting: Type.Union([Type.Literal("auto"), Type.Literal("off")], { description: "LLAMA_FAST_BUILD" }),
      state: Type.Union(["in-use", "built", "building", "pending", "failed", "unavailable", "not-needed", "unsupported", "off"].map((s) => Type.Literal(s)), {
        description: "in-use: loaded; built: done, used from the next start; building: in the background (here or in another process); pending: starts once ready; failed: reason says why (not retried until the compiler or versions change); unavailable: no toolchain or node_modules not writable; not-needed: a GPU backend is loaded; unsupported: platform; off: LLAMA_FAST_BUILD=off",
      }),
      reason: Type.String(),
      id: Type.Optional(Type.String({ description: "The build this machine gets (flavor and a digest of versions, platform and CPU)" })),
      flavor: Type.Optional(Type.Union([Type.Literal("native"), Type.Literal("portable")])),
      phase: Type.Optional(Type.String({ description: "compile, addons (ours, against the new library) or verify (a throwaway process loads both)" })),
      percent: Type.Optional(Type.Integer({ minimum: 0, maximum: 100, description: "Of the current step, from the build tool's output" })),
      log_file: Type.Optional(Type.String()),
      started_at: Type.Optional(Type.String()),
      seconds: Type.Optional(Type.Integer({ description: "How long the build took" })),
    }),
  }, { description: "The llama.cpp binding and the fast build (docs/native-build.md)" })),
  chat: Type.Optional(Type.Object({
    model: Type.String(),
    gpu_layers: Type.Integer({ description: "Layers offloaded to the GPU" }),
    threads: Type.Integer(),
    threads_active: Type.Optional(Type.Integer({ description: "Threads the last decode ran on: fewer than `threads` while other work or other programs need the cores (native engine, Linux)" })),
    context_per_slot: Type.Integer(),
    kv_cache_type: Type.String({ description: "KV cache element type the slots run with (LLM_KV_CACHE_TYPE): f16, q8_0, q4_0" }),
    flash_attention: Type.String({ description: "Flash attention as set (LLM_FLASH_ATTENTION): auto, on, off" }),
    context_memory_per_slot_mib: Type.Integer({ description: "llama.cpp's estimate of one slot's KV cache and compute buffers" }),
    slots_total: Type.Integer(),
    slots_busy: Type.Integer(),
    queued: Type.Integer({ description: "Requests waiting for a free slot" }),
    queue_capacity: Type.Integer(),
    slots: Type.Array(Type.Object({
      id: Type.Integer(),
      busy: Type.Boolean(),
      cached_tokens: Type.Integer({ description: "Tokens held in this slot's KV cache" }),
    })),
  })),
  embedding: Type.Optional(Type.Object({
    model: Type.String(),
    backend: Type.String({ description: "native (batched addon) or node-llama-cpp's embedding context" }),
    dimension: Type.Integer(),
    max_tokens_per_text: Type.Integer(),
  })),
  models: Type.Optional(Type.Array(Type.Object({
    name: Type.String(),
    kind: Type.Union([Type.Literal("chat"), Type.Literal("embedding"), Type.Literal("rerank")]),
    aliases: Type.Array(Type.String(), { description: "Every other name a request may use for it" }),
    default: Type.Boolean({ description: "What a request of its kind that names no model gets" }),
    architecture: Type.String(),
    quantization: Type.String(),
    file_bytes: Type.Integer(),
    weights_bytes: Type.Integer({ description: "RAM the weights take once read (llama.cpp's estimate)" }),
    rss_growth_bytes: Type.Integer({ description: "How much the process grew while the model's engine loaded (weights are memory-mapped and count once read)" }),
    load_ms: Type.Integer(),
    backend: Type.Optional(Type.String()),
    dimension: Type.Optional(Type.Integer()),
    max_tokens: Type.Optional(Type.Integer({ description: "Tokens per text (embedding) or per query + document pair (rerank)" })),
    prompts: Type.Optional(Type.Record(Type.String(), Type.String(), { description: "Prefixes by name (prompt_name), from the manifest" })),
    input_types: Type.Optional(Type.Record(Type.String(), Type.String(), { description: "input_type -> prompt name" })),
  }), { description: "Every served model, in configuration order" })),
}, { $id: "StatusResponse" });
export type StatusResponse = Static<typeof StatusResponseSchema>;
