// The native runtime: which llama.cpp backend to load and how many CPU threads it may use.
import { readFileSync } from "node:fs";
import os from "node:os";
import { getLlama, LlamaLogLevel, type Llama } from "node-llama-cpp";
import type { GpuChoice } from "../config.js";

export type CpuBudget = {
  /** Threads the engine will use. */
  threads: number;
  /** CPUs in this process's affinity mask. */
  affinity: number;
  /** CPUs granted by the cgroup quota, or null when there is no quota. */
  cgroupQuota: number | null;
  source: "override" | "affinity" | "cgroup";
};

/** CPU count granted by the cgroup CPU quota (v2 `cpu.max`, v1 `cfs_quota_us`), or null without one. */
export function cgroupCpuQuota(readText: (file: string) => string | null = readOptional): number | null {
  const v2 = readText("/sys/fs/cgroup/cpu.max");
  if (v2 !== null) {
    const [quota, period] = v2.trim().split(/\s+/);
    if (quota === undefined || quota === "max") return null;
    const q = Number(quota);
    const p = Number(period ?? "100000");
    return q > 0 && p > 0 ? q / p : null;
  }
  const q = Number(readText("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?.trim());
  const p = Number(readText("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?.trim());
  return q > 0 && p > 0 ? q / p : null;
}

function readOptional(file: string): string | null {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return null;
  }
}

/**
 * llama.cpp's CPU threads spin while they wait for each other, so one thread more than there are
 * CPUs to run on makes decoding collapse (0.3 tok/s instead of 23 on two cores). The count is the
 * smaller of the affinity mask and the whole CPUs of the cgroup quota, never below one.
 */
export function resolveCpuBudget(override: number, quota = cgroupCpuQuota()): CpuBudget {
  const affinity = os.availableParallelism();
  if (override > 0) return { threads: override, affinity, cgroupQuota: quota, source: "override" };
  const quotaCpus = quota === null ? Infinity : Math.max(1, Math.floor(quota));
  return quotaCpus < affinity
    ? { threads: quotaCpus, affinity, cgroupQuota: quota, source: "cgroup" }
    : { threads: affinity, affinity, cgroupQuota: quota, source: "affinity" };
}

export type Runtime = {
  llama: Llama;
  cpu: CpuBudget;
  /** The backend actually loaded: "cuda", "metal", "vulkan" or "cpu". */
  backend: string;
};

/**
 * The cmake options of the optional local llama.cpp build (scripts/build-llama-native.ts passes them
 * to node-llama-cpp's source build): ggml's own thread pool instead of OpenMP. OpenMP gives each
 * thread that decodes its own team, and with two of them (generation and embeddings) libgomp throttles
 * its spinning once the teams outnumber the cores.
 */
export const LOCAL_BUILD_CMAKE_OPTIONS: Readonly<Record<string, string>> = Object.freeze({ GGML_OPENMP: "OFF" });

/**
 * Loads the native binding. Never builds from source at run time (that would need a toolchain and
 * minutes on a server start); binding-config/README.md explains how to build one ahead of time.
 */
export async function loadRuntime(gpu: GpuChoice, threadsOverride: number, onLog?: (level: string, message: string) => void): Promise<Runtime> {
  const cpu = resolveCpuBudget(threadsOverride);
  const llama = await getLlama({
    gpu: gpu === "cpu" ? false : gpu,
    build: "never",
    // Selects the local build `npm run build:llama-native` makes (when there is one; otherwise the
    // prebuilt binaries): node-llama-cpp names a local build after its cmake options.
    cmakeOptions: LOCAL_BUILD_CMAKE_OPTIONS,
    maxThreads: cpu.threads,
    progressLogs: false,
    logLevel: LlamaLogLevel.warn,
    logger: (level, message) => onLog?.(String(level), message.trimEnd()),
  });
  return { llama, cpu, backend: llama.gpu === false ? "cpu" : llama.gpu };
}
