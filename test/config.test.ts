// Configuration validation and the CPU thread budget.
import t from "tap";
import { ConfigError, loadConfig } from "../src/config.js";
import { cgroupCpuQuota, resolveCpuBudget } from "../src/engine/runtime.js";
import os from "node:os";

t.test("defaults", async (t) => {
  const c = loadConfig({});
  t.equal(c.port, 8001);
  t.equal(c.llmModel, "Qwen3-1.7B-Q4_K_M");
  t.equal(c.embedModel, "all-MiniLM-L6-v2");
  t.equal(c.threads, 0);
  t.equal(c.gpuLayers, "auto");
  t.ok(Object.isFrozen(c));
});

t.test("values are converted and checked", async (t) => {
  const c = loadConfig({ PORT: "9000", LLM_GPU_LAYERS: "12", LLM_GPU: "cpu", WARMUP: "false", LLM_THREADS: "3" });
  t.equal(c.port, 9000);
  t.equal(c.gpuLayers, 12);
  t.equal(c.gpu, "cpu");
  t.equal(c.warmup, false);
  t.equal(c.threads, 3);
  t.equal(loadConfig({ LLM_GPU_LAYERS: "max" }).gpuLayers, "max");
});

t.test("a bad value stops the start with a message naming the variable", async (t) => {
  for (const [key, value] of [["PORT", "http"], ["PORT", "70000"], ["LLM_GPU", "tpu"], ["LLM_THREADS", "-1"], ["LLM_CONTEXT_SIZE", "12.5"], ["LOG_LEVEL", "loud"], ["MODEL_DOWNLOAD", "maybe"]] as const) {
    let error: unknown;
    try {
      loadConfig({ [key]: value });
    } catch (e) {
      error = e;
    }
    t.ok(error instanceof ConfigError, `${key}=${value} is refused`);
    t.match((error as Error).message, key);
    t.match((error as Error).message, value);
  }
});

t.test("threads come from the CPUs this process may use", async (t) => {
  const affinity = os.availableParallelism();
  t.same(resolveCpuBudget(0, null), { threads: affinity, affinity, cgroupQuota: null, source: "affinity" });
  t.equal(resolveCpuBudget(0, 1.5).threads, Math.min(1, affinity), "a 1.5-CPU quota runs 1 thread");
  t.equal(resolveCpuBudget(0, 0.5).threads, 1, "never below one");
  t.equal(resolveCpuBudget(0, 64).threads, affinity, "a quota above the affinity mask changes nothing");
  t.equal(resolveCpuBudget(7, 1).threads, 7, "an explicit override wins");
});

t.test("cgroup quota files", async (t) => {
  const files = (map: Record<string, string>) => (file: string) => map[file] ?? null;
  t.equal(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu.max": "150000 100000\n" })), 1.5);
  t.equal(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu.max": "max 100000\n" })), null);
  t.equal(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "200000", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000" })), 2);
  t.equal(cgroupCpuQuota(files({ "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000" })), null);
  t.equal(cgroupCpuQuota(files({})), null);
});

t.test("access, CORS, drain and log settings", async (t) => {
  const d = loadConfig({});
  t.same(d.apiKeys, [], "no key by default");
  t.same(d.corsOrigins, ["http://localhost:8000"], "the seed's CORS origin");
  t.equal(d.metricsAuth, false);
  t.equal(d.drainTimeoutMs, d.chat.requestTimeoutMs, "a drain lasts as long as one request may");
  t.equal(d.logFormat, "auto");
  t.equal(loadConfig({ LLM_REQUEST_TIMEOUT_MS: "60000" }).drainTimeoutMs, 60_000);
  t.equal(loadConfig({ DRAIN_TIMEOUT_MS: "0" }).drainTimeoutMs, 0);
  const c = loadConfig({ LLM_API_KEY: " a-key , another-key ,", CORS_ORIGINS: "https://app.example, http://localhost:3000", METRICS_AUTH: "true", LOG_FORMAT: "json" });
  t.same(c.apiKeys, ["a-key", "another-key"]);
  t.same(c.corsOrigins, ["https://app.example", "http://localhost:3000"]);
  t.equal(c.metricsAuth, true);
  t.equal(c.logFormat, "json");
  t.same(loadConfig({ CORS_ORIGINS: "*" }).corsOrigins, ["*"]);
  for (const [key, value] of [["CORS_ORIGINS", "https://app.example/"], ["CORS_ORIGINS", "localhost:8000"], ["DRAIN_TIMEOUT_MS", "-1"], ["LOG_FORMAT", "xml"], ["METRICS_AUTH", "yes"]] as const) {
    t.throws(() => loadConfig({ [key]: value }), new RegExp(`${key}=.*${value.replace(/[/*.]/g, "\\$&")}`), `${key}=${value} is refused`);
  }
});

t.test("retrieval queue and deadline settings; a queue smaller than the largest request is refused", async (t) => {
  const defaults = loadConfig({});
  t.same(defaults.retrievalQueue, { maxInputs: 8192, maxTokens: 2_097_152 });
  t.equal(defaults.retrievalTimeoutMs, defaults.chat.requestTimeoutMs, "the retrieval deadline follows LLM_REQUEST_TIMEOUT_MS");
  t.equal(loadConfig({ RETRIEVAL_TIMEOUT_MS: "2500", LLM_REQUEST_TIMEOUT_MS: "60000" }).retrievalTimeoutMs, 2500);
  t.throws(() => loadConfig({ RETRIEVAL_QUEUE_TEXTS: "100" }), /RETRIEVAL_QUEUE_TEXTS=100 is below EMBED_MAX_TEXTS=2048.*set RETRIEVAL_QUEUE_TEXTS=8192/);
  t.same(loadConfig({ RETRIEVAL_QUEUE_TEXTS: "100", EMBED_MAX_TEXTS: "100" }).retrievalQueue.maxInputs, 100, "fine when it holds the largest request");
  t.throws(() => loadConfig({ RETRIEVAL_QUEUE_TEXTS: "2048", RERANK_MODELS: "r.gguf", RERANK_MAX_DOCUMENTS: "4000" }), /below RERANK_MAX_DOCUMENTS=4000/);
  t.throws(() => loadConfig({ RETRIEVAL_TIMEOUT_MS: "5" }), /RETRIEVAL_TIMEOUT_MS/);
});
