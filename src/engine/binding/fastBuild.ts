// The fast binding: llama.cpp compiled on this machine by node-llama-cpp's own source build, which the
// service then loads instead of node-llama-cpp's prebuilt binaries (docs/native-build.md).
//
// A build is named by a stamp of what it is for (flavor, node-llama-cpp and llama.cpp versions, platform,
// and for a native build this CPU); the stamp is also a cmake option, so node-llama-cpp puts each build in
// a folder of its own under llama/localBuilds and finds it again from the same options. The build is
// committed by one atomic rename of its record (build.json, written after our addons were rebuilt against
// it and checked in a throwaway process); without that record the service never asks for it. Everything
// of ours lives in node_modules/.cache/bora-llama/<id>/: record, failure, progress, log.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { bundledLlamaCppTag, nodeLlamaCppPackageDir, projectRootDir } from "../native/addonBuild.js";

/** LLAMA_FAST_BUILD: auto builds the fast binding in the background when none is there; off never builds. */
export const FAST_BUILD_SETTINGS = ["auto", "off"] as const;
export type FastBuildSetting = (typeof FAST_BUILD_SETTINGS)[number];
/** LLAMA_BINDING: auto (the fast build when there is one, else prebuilt), or one of them by name. */
export const BINDING_SETTINGS = ["auto", "prebuilt", "native", "portable"] as const;
export type BindingSetting = (typeof BINDING_SETTINGS)[number];

/** native: for this CPU only (-march=native); portable: every CPU variant, chosen at load (Dockerfile.cpu). */
export type FastBuildFlavor = "native" | "portable";

/**
 * The cmake options of each flavor. OpenMP off in both: every thread that decodes would own an OpenMP
 * team, and libgomp throttles its spinning once the service's two teams outnumber the cores
 * (docs/performance.md, "Threads"). portable is what node-llama-cpp's CI builds its prebuilt binaries with.
 */
export const FLAVOR_CMAKE_OPTIONS: Readonly<Record<FastBuildFlavor, Readonly<Record<string, string>>>> = Object.freeze({
  native: Object.freeze({ GGML_OPENMP: "OFF", GGML_NATIVE: "ON" }),
  portable: Object.freeze({ GGML_OPENMP: "OFF", GGML_NATIVE: "OFF", GGML_BACKEND_DL: "ON", GGML_CPU_ALL_VARIANTS: "ON" }),
});
/** The cmake option that carries a build's id (unused by llama.cpp; it only gives the build its own folder). */
export const STAMP_OPTION = "BORA_FAST_BUILD";

/**
 * The options the service asked getLlama() for before fast builds existed (`npm run build:llama-native`
 * made such a build by hand): still the request when no fast build is there, so such a build keeps loading.
 */
export const LEGACY_LOCAL_BUILD_OPTIONS: Readonly<Record<string, string>> = Object.freeze({ GGML_OPENMP: "OFF" });
/** Options no local build has: node-llama-cpp then loads its prebuilt binaries (LLAMA_BINDING=prebuilt). */
export const PREBUILT_ONLY_OPTIONS: Readonly<Record<string, string>> = Object.freeze({ [STAMP_OPTION]: "prebuilt" });

export type BuildIdentity = {
  schema: 1;
  flavor: FastBuildFlavor;
  nodeLlamaCppVersion: string;
  llamaCppTag: string;
  platform: string;
  arch: string;
  /** A native build runs only on the CPU it was built for: a digest of its model and feature flags. */
  cpu: string | null;
  cmakeOptions: Readonly<Record<string, string>>;
};

/** What build.json holds: written last, by rename, once the build, our addons and the load check passed. */
export type BuildRecord = {
  id: string;
  identity: BuildIdentity;
  /** node-llama-cpp's folder for this build (llama/localBuilds/<name>). */
  bindingDir: string;
  /** Where its libllama and llama-addon.node are. */
  libraryDir: string;
  compiler: string;
  builtAt: string;
  seconds: number;
  steps: Record<string, number>;
};

/** failed.json: a build that failed keeps failing until its inputs or the compiler change. */
export type FailureRecord = { id: string; reason: string; compiler: string; at: string; logFile: string };

/** The machine facts a stamp depends on (injectable for tests). */
export type MachineFacts = { nodeLlamaCppVersion: string; llamaCppTag: string; platform: string; arch: string; cpu: string };

export function fastBuildRoot(): string {
  return path.join(projectRootDir(), "node_modules", ".cache", "bora-llama");
}

export function localBuildsDir(): string {
  return path.join(nodeLlamaCppPackageDir(), "llama", "localBuilds");
}

/** The CPU a native build is for: model name and instruction-set flags (Linux), else the model string. */
export function cpuIdentity(cpuinfo: string | null = readOptional("/proc/cpuinfo"), model = os.cpus()[0]?.model ?? "unknown"): string {
  if (cpuinfo !== null) {
    const first = cpuinfo.split(/\n\s*\n/)[0] ?? "";
    const field = (name: string) => first.split("\n").find((l) => l.split(":")[0]?.trim() === name)?.split(":").slice(1).join(":").trim();
    const flags = field("flags") ?? field("Features");
    const parts = [field("model name") ?? field("CPU part") ?? model.trim(), field("CPU implementer") ?? "", flags?.split(/\s+/).sort().join(" ") ?? ""];
    return createHash("sha256").update(parts.join("\n")).digest("hex").slice(0, 16);
  }
  return createHash("sha256").update(model.trim()).digest("hex").slice(0, 16);
}

export function machineFacts(): MachineFacts {
  const nlcDir = nodeLlamaCppPackageDir();
  const { version } = JSON.parse(readFileSync(path.join(nlcDir, "package.json"), "utf8")) as { version: string };
  return { nodeLlamaCppVersion: version, llamaCppTag: bundledLlamaCppTag(nlcDir), platform: process.platform, arch: process.arch, cpu: cpuIdentity() };
}

export function buildIdentity(flavor: FastBuildFlavor, facts: MachineFacts = machineFacts()): BuildIdentity {
  return {
    schema: 1, flavor,
    nodeLlamaCppVersion: facts.nodeLlamaCppVersion, llamaCppTag: facts.llamaCppTag, platform: facts.platform, arch: facts.arch,
    cpu: flavor === "native" ? facts.cpu : null,
    cmakeOptions: FLAVOR_CMAKE_OPTIONS[flavor],
  };
}

/** "native-1a2b3c4d5e6f": the flavor and a digest of the whole identity. */
export function buildId(identity: BuildIdentity): string {
  return `${identity.flavor}-${createHash("sha256").update(JSON.stringify(identity)).digest("hex").slice(0, 12)}`;
}

/** The options node-llama-cpp builds with and is asked for: the flavor's plus the stamp. */
export function stampedCmakeOptions(identity: BuildIdentity): Record<string, string> {
  return { ...identity.cmakeOptions, [STAMP_OPTION]: buildId(identity) };
}

function readOptional(file: string): string | null {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return null;
  }
}

function readJson<T>(file: string): T | null {
  const text = readOptional(file);
  if (text === null) return null;
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

/** Written to a temporary name and renamed: a reader sees the old file or the new one, never half of one. */
export function writeJsonAtomic(file: string, value: unknown): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, file);
}

export const recordFile = (root: string, id: string) => path.join(root, id, "build.json");
export const failureFile = (root: string, id: string) => path.join(root, id, "failed.json");
export const progressFile = (root: string, id: string) => path.join(root, id, "progress.json");
export const buildLogFile = (root: string, id: string) => path.join(root, id, "build.log");

/** A node-llama-cpp build folder is complete when its addon and its done marker exist. */
export function bindingComplete(bindingDir: string): boolean {
  return existsSync(path.join(bindingDir, "buildDone.status")) && existsSync(path.join(bindingDir, "Release", "llama-addon.node"));
}

/** The committed build of this identity, or null with the reason. */
export function completedBuild(root: string, identity: BuildIdentity): { record: BuildRecord; reason: null } | { record: null; reason: string } {
  const id = buildId(identity);
  const record = readJson<BuildRecord>(recordFile(root, id));
  if (record === null) return { record: null, reason: `no ${identity.flavor} build for this machine (${id})` };
  if (record.id !== id) return { record: null, reason: `${recordFile(root, id)} names another build (${record.id})` };
  if (!bindingComplete(record.bindingDir)) return { record: null, reason: `the files of build ${id} are gone from ${record.bindingDir}` };
  return { record, reason: null };
}

export function readFailure(root: string, id: string): FailureRecord | null {
  return readJson<FailureRecord>(failureFile(root, id));
}

export type BuildProgress = { id: string; pid: number; phase: string; percent: number | null; startedAt: string; updatedAt: string };

export function readProgress(root: string, id: string): BuildProgress | null {
  return readJson<BuildProgress>(progressFile(root, id));
}

// ------------------------------------------------------------------------------------------------ lock
/** One build at a time per node_modules: node-llama-cpp's source build shares one llama.cpp checkout. */
export type LockInfo = { pid: number; host: string; id: string; startedAt: string };
const lockFile = (root: string) => path.join(root, "build.lock");
/** A lock from another host (a shared volume) is taken over only after this long. */
const FOREIGN_LOCK_MAX_AGE_MS = 3 * 3600_000;

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The live holder of the build lock, or null (a lock whose process is gone does not count). */
export function lockHolder(root: string): LockInfo | null {
  const info = readJson<LockInfo>(lockFile(root));
  if (info === null) return null;
  if (info.host === os.hostname()) return processAlive(info.pid) ? info : null;
  return Date.now() - Date.parse(info.startedAt) < FOREIGN_LOCK_MAX_AGE_MS ? info : null;
}

export type BuildLock = { release(): void };

/** Takes the lock (clearing a stale one), or says who holds it. */
export function tryLock(root: string, id: string): { lock: BuildLock; heldBy: null } | { lock: null; heldBy: LockInfo } {
  mkdirSync(root, { recursive: true });
  const file = lockFile(root);
  const info: LockInfo = { pid: process.pid, host: os.hostname(), id, startedAt: new Date().toISOString() };
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, JSON.stringify(info), { flag: "wx" });
      return {
        heldBy: null,
        lock: {
          release() {
            if (readJson<LockInfo>(file)?.pid === process.pid) rmSync(file, { force: true });
          },
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const holder = lockHolder(root);
      if (holder !== null) return { lock: null, heldBy: holder };
      // Stale (its process is gone): remove and try once more; a racing taker may still win.
      rmSync(file, { force: true });
    }
  }
  const holder = lockHolder(root);
  if (holder !== null) return { lock: null, heldBy: holder };
  throw new Error(`cannot take the build lock ${file}`);
}

// ------------------------------------------------------------------------------------------- toolchain
export type Toolchain = { ok: true; cmake: string; cxx: string; buildTool: string; git: string } | { ok: false; missing: string[] };

/** The executable `name` on PATH (with PATHEXT on Windows), or null. */
export function findOnPath(name: string, env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): string | null {
  if (name.includes("/") || (platform === "win32" && name.includes("\\"))) return isExecutable(name) ? name : null;
  const exts = platform === "win32" ? (env["PATHEXT"] ?? ".EXE;.CMD;.BAT").split(";") : [""];
  for (const dir of (env["PATH"] ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    for (const ext of exts) {
      const candidate = path.join(dir, name + ext);
      if (isExecutable(candidate)) return candidate;
    }
  }
  return null;
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * What node-llama-cpp's source build needs here, found on PATH without running anything: cmake, a C++
 * compiler (CXX, else c++ / g++ / clang++), make or ninja, and git (the bundled source is a git bundle).
 * node-llama-cpp could download cmake, but only from the network.
 */
export function findToolchain(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): Toolchain {
  const missing: string[] = [];
  const cmake = findOnPath("cmake", env, platform);
  if (cmake === null) missing.push("cmake");
  const cxxNames = env["CXX"] ? [env["CXX"].split(/\s+/)[0] ?? ""] : platform === "win32" ? ["cl"] : ["c++", "g++", "clang++"];
  const cxx = cxxNames.map((n) => findOnPath(n, env, platform)).find((p) => p !== null) ?? null;
  if (cxx === null) missing.push(`a C++ compiler (${cxxNames.join(", ")})`);
  const buildTool = ["ninja", "make"].map((n) => findOnPath(n, env, platform)).find((p) => p !== null) ?? null;
  if (buildTool === null && platform !== "win32") missing.push("make or ninja");
  const git = findOnPath("git", env, platform);
  if (git === null) missing.push("git");
  if (cmake === null || cxx === null || git === null || (buildTool === null && platform !== "win32")) return { ok: false, missing };
  return { ok: true, cmake, cxx, buildTool: buildTool ?? "msbuild", git };
}

/** `cxx --version`'s first line: part of a failure record (a new compiler retries a failed build). */
export function compilerLine(cxx: string): Promise<string> {
  return new Promise((resolve) => {
    execFile(cxx, ["--version"], { timeout: 30_000 }, (error, stdout, stderr) => {
      resolve(error === null ? (`${stdout}${stderr}`.split("\n")[0]?.trim() || cxx) : `${cxx} (no --version)`);
    });
  });
}

// -------------------------------------------------------------------------------------------- decision
/**
 * in-use: the loaded binding is a fast build; built: one finished but this process loaded another (the
 * next start uses it); building: a build runs (here or in another process); pending: this process will
 * start one once it is ready; failed: the last attempt with this compiler failed (reason says why);
 * unavailable: no toolchain; not-needed: a GPU backend is loaded; unsupported: the platform; off: LLAMA_FAST_BUILD=off.
 */
export type FastBuildState = "in-use" | "built" | "building" | "pending" | "failed" | "unavailable" | "not-needed" | "unsupported" | "off";

export type DecisionFacts = {
  setting: FastBuildSetting;
  platform: NodeJS.Platform;
  /** The backend the runtime loaded: "cpu", "cuda", ... */
  backend: string;
  /** The loaded binding is this fast build (null: prebuilt or another local build). */
  inUse: BuildRecord | null;
  /** A committed fast build for this machine (native or portable), loaded or not. */
  completed: BuildRecord | null;
  toolchain: Toolchain;
  /** The failure record of the build this machine would make, if any. */
  failure: FailureRecord | null;
  /** The compiler's version line now (a failure with another compiler is retried). */
  compiler: string | null;
  lockHeldBy: LockInfo | null;
};

export type Decision = { state: FastBuildState; build: boolean; reason: string };

/** Whether this start should build the fast binding in the background, and what to report. Pure. */
export function decideFastBuild(f: DecisionFacts): Decision {
  if (f.inUse !== null) return { state: "in-use", build: false, reason: `loaded the ${f.inUse.identity.flavor} build ${f.inUse.id}` };
  if (f.completed !== null) return { state: "built", build: false, reason: `the ${f.completed.identity.flavor} build ${f.completed.id} is there but not loaded (LLAMA_BINDING or LLM_GPU chose another)` };
  if (f.setting === "off") return { state: "off", build: false, reason: "LLAMA_FAST_BUILD=off" };
  if (f.backend !== "cpu") return { state: "not-needed", build: false, reason: `the ${f.backend} backend is loaded; the fast build is a CPU binding` };
  if (f.platform !== "linux" && f.platform !== "darwin") return { state: "unsupported", build: false, reason: `no background build on ${f.platform} (our addons are built on Linux and macOS only)` };
  if (!f.toolchain.ok) return { state: "unavailable", build: false, reason: `no toolchain: ${f.toolchain.missing.join(", ")} not found on PATH` };
  if (f.failure !== null && (f.compiler === null || f.failure.compiler === f.compiler)) {
    return { state: "failed", build: false, reason: `the last build failed (${f.failure.at}): ${f.failure.reason}; log: ${f.failure.logFile}` };
  }
  if (f.lockHeldBy !== null) return { state: "building", build: false, reason: `another process (pid ${f.lockHeldBy.pid}) is building ${f.lockHeldBy.id}` };
  return { state: "pending", build: true, reason: "no fast build for this machine yet" };
}

// -------------------------------------------------------------------------------------- binding choice
export type BindingChoice = {
  setting: BindingSetting;
  /** What getLlama() is asked for. */
  cmakeOptions: Readonly<Record<string, string>>;
  /** The fast build those options select, if any. */
  build: BuildRecord | null;
};

export class BindingChoiceError extends Error {
  override readonly name = "BindingChoiceError";
}

/**
 * The getLlama() options for LLAMA_BINDING. auto: the native build for this CPU, else the portable one,
 * else what was asked for before fast builds (a hand-made local build, else the prebuilt binaries). An
 * explicit GPU backend keeps the latter: fast builds are CPU bindings.
 */
export function resolveBinding(setting: BindingSetting, gpu: string, root = fastBuildRoot(), facts: MachineFacts | null = null): BindingChoice {
  if (setting === "prebuilt") return { setting, cmakeOptions: PREBUILT_ONLY_OPTIONS, build: null };
  const known = facts ?? machineFacts();
  if (setting === "native" || setting === "portable") {
    const found = completedBuild(root, buildIdentity(setting, known));
    if (found.record === null) throw new BindingChoiceError(`LLAMA_BINDING=${setting}: ${found.reason}; make it with \`npm run build:llama-native${setting === "portable" ? " -- --portable" : ""}\``);
    return { setting, cmakeOptions: stampedCmakeOptions(found.record.identity), build: found.record };
  }
  if (gpu === "cuda" || gpu === "vulkan" || gpu === "metal") return { setting, cmakeOptions: LEGACY_LOCAL_BUILD_OPTIONS, build: null };
  for (const flavor of ["native", "portable"] as const) {
    const found = completedBuild(root, buildIdentity(flavor, known));
    if (found.record !== null) return { setting, cmakeOptions: stampedCmakeOptions(found.record.identity), build: found.record };
  }
  return { setting, cmakeOptions: LEGACY_LOCAL_BUILD_OPTIONS, build: null };
}

/** The committed fast build for this machine, whatever was loaded (native first). */
export function anyCompletedBuild(root: string, facts: MachineFacts): BuildRecord | null {
  for (const flavor of ["native", "portable"] as const) {
    const found = completedBuild(root, buildIdentity(flavor, facts));
    if (found.record !== null) return found.record;
  }
  return null;
}

/** Our builds in node-llama-cpp's localBuilds folder: folder name -> the id in its metadata. */
export function ourLocalBuilds(dir = localBuildsDir()): Map<string, string> {
  const found = new Map<string, string>();
  if (!existsSync(dir)) return found;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isDirectory()) continue;
    const meta = readJson<{ buildOptions?: { customCmakeOptions?: Record<string, string> } }>(path.join(dir, entry.name, "Release", "_nlcBuildMetadata.json"));
    const id = meta?.buildOptions?.customCmakeOptions?.[STAMP_OPTION];
    if (typeof id === "string") found.set(path.join(dir, entry.name), id);
  }
  return found;
}

// ------------------------------------------------------------------------------------ build progress
/** make prints "[ 42%] Building ...", ninja "[12/345] Building ...": the share of the build done, or null. */
export function buildProgressOf(line: string): number | null {
  const make = /^\[\s*(\d{1,3})%\]/.exec(line.trim());
  if (make) return Math.min(100, Number(make[1]));
  const ninja = /^\[(\d+)\/(\d+)\]/.exec(line.trim());
  if (ninja && Number(ninja[2]) > 0) return Math.min(100, Math.floor((Number(ninja[1]) / Number(ninja[2])) * 100));
  return null;
}
