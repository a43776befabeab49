// The native runtime: which llama.cpp backend to load and how many CPU threads it may use.
import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { getLlama, LlamaLogLevel, NoBinaryFoundError, type Llama } from "node-llama-cpp";
import type { GpuChoice } from "../config.js";
import { LEGACY_LOCAL_BUILD_OPTIONS, resolveBinding, type BindingChoice, type BindingSetting, type BuildRecord } from "./binding/fastBuild.js";
import { loadedLlamaLibrary } from "./native/addonBuild.js";

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

/** Which binding node-llama-cpp loaded, and whether it is the fast build that was asked for. */
export type BindingInfo = {
  setting: BindingSetting;
  /** node-llama-cpp's word: its prebuilt binaries, or a local build (ours or one made by hand). */
  loaded: "prebuilt" | "localBuild";
  /** The fast build that was loaded (null: prebuilt, or a local build that is not one of ours). */
  build: BuildRecord | null;
  /** The fast build that was asked for but did not load (node-llama-cpp fell back), else null. */
  notLoaded: BuildRecord | null;
  /** Where the loaded libllama is. */
  libraryDir: string | null;
};

export type Runtime = {
  llama: Llama;
  cpu: CpuBudget;
  /** The backend actually loaded: "cuda", "metal", "vulkan" or "cpu". */
  backend: string;
  binding: BindingInfo;
};

/**
 * The cmake options of a hand-made local build (`npm run build:llama-native -- --gpu ...`); the fast
 * builds add their flavor's options and a stamp (binding/fastBuild.ts).
 */
export const LOCAL_BUILD_CMAKE_OPTIONS: Readonly<Record<string, string>> = LEGACY_LOCAL_BUILD_OPTIONS;

const inside = (file: string, dir: string) => !path.relative(dir, file).startsWith("..");

/**
 * Loads the native binding: the fast build for this machine when there is one (LLAMA_BINDING, see
 * binding/fastBuild.ts), else node-llama-cpp's prebuilt binaries. Never builds at load time: the build
 * runs in the background (binding/backgroundBuild.ts) and is used from the next start.
 */
export async function loadRuntime(gpu: GpuChoice, threadsOverride: number, onLog?: (level: string, message: string) => void, binding: BindingSetting | BindingChoice = "auto"): Promise<Runtime> {
  const cpu = resolveCpuBudget(threadsOverride);
  const choice = typeof binding === "string" ? resolveBinding(binding, gpu) : binding;
  const load = (cmakeOptions: Readonly<Record<string, string>>) => getLlama({
    gpu: gpu === "cpu" ? false : gpu,
    build: "never",
    // node-llama-cpp names a local build after its cmake options: these select the fast build (or none).
    cmakeOptions: { ...cmakeOptions },
    maxThreads: cpu.threads,
    progressLogs: false,
    logLevel: LlamaLogLevel.warn,
    logger: (level, message) => onLog?.(String(level), message.trimEnd()),
  });
  let llama: Llama;
  try {
    llama = await load(choice.cmakeOptions);
  } catch (error) {
    // No prebuilt binding for this platform in the registry (macOS, Windows: docs/native-build.md):
    // node-llama-cpp's install step may have built one from source, under its own default options.
    if (!(error instanceof NoBinaryFoundError) || choice.setting !== "auto") throw error;
    llama = await load({});
  }
  const library = loadedLlamaLibrary();
  const libraryDir = library?.dir ?? null;
  const loadedOurs = choice.build !== null && llama.buildType === "localBuild" && libraryDir !== null && inside(libraryDir, choice.build.bindingDir);
  return {
    llama, cpu, backend: llama.gpu === false ? "cpu" : llama.gpu,
    binding: { setting: choice.setting, loaded: llama.buildType, build: loadedOurs ? choice.build : null, notLoaded: loadedOurs ? null : choice.build, libraryDir },
  };
}
