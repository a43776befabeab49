// The fast binding, by hand or by the service (docs/native-build.md):
//
//   npm run build:llama-native                 llama.cpp for this CPU (-march=native), 8 CPU-minutes (3.4 min on 2 quiet cores)
//   npm run build:llama-native -- --portable   every CPU variant, chosen at load (what Dockerfile.cpu builds), 15 CPU-minutes
//   npm run build:llama-native -- --gpu cuda   a local GPU binding (node-llama-cpp's source build, as before)
//
// node-llama-cpp builds its binding from the llama.cpp source in its own package (offline: cmake, a C++
// compiler, make or ninja, git) with the flavor's cmake options plus a stamp, into a folder of its own
// under its llama/localBuilds; then our addons are rebuilt against that library, a throwaway process loads
// both, and only then the build's record is committed (binding/fastBuild.ts): the service loads it from
// its next start. A build that fails or is interrupted leaves the binding in use as it was. It runs at nice
// 19 (and SCHED_IDLE on Linux), so a service beside it keeps its cores.
//
// The service starts this script itself with --background (LLAMA_FAST_BUILD=auto): JSON lines on stdout
// (binding/backgroundBuild.ts reads them), the tools' output in node_modules/.cache/bora-llama/<id>/build.log.
// Flags for tests: --root DIR (records elsewhere) and --compile-command / --addons-command / --verify-command
// (shell commands run as the steps instead of the real ones; FAST_BUILD_BINDING_DIR says where the binding goes).
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { lowerOwnPriority, runFastBuild, StepFailure, type BuildEvent, type BuildStep } from "../src/engine/binding/buildRun.ts";
import {
  bindingComplete, buildId, buildIdentity, compilerLine, completedBuild, fastBuildRoot, findOnPath, findToolchain, LEGACY_LOCAL_BUILD_OPTIONS, localBuildsDir,
  ourLocalBuilds, stampedCmakeOptions, STAMP_OPTION, type FastBuildFlavor,
} from "../src/engine/binding/fastBuild.ts";
import { findNativeAddon, libraryInDir, loadedLlamaLibrary, NATIVE_ADDONS, nodeLlamaCppPackageDir } from "../src/engine/native/addonBuild.ts";
import { loadRuntime, resolveCpuBudget } from "../src/engine/runtime.ts";
import { ensureNativeAddon } from "./build-native.ts";

const thisScript = fileURLToPath(import.meta.url);
const tsxLoader = import.meta.resolve("tsx");

/** The environment node-llama-cpp's CLI builds with: our options only, node on PATH (its CMakeLists runs node). */
function sourceBuildEnv(options: Readonly<Record<string, string>>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith("NODE_LLAMA_CPP_CMAKE_OPTION_")) env[key] = value;
  for (const [key, value] of Object.entries(options)) env[`NODE_LLAMA_CPP_CMAKE_OPTION_${key}`] = value;
  env["PATH"] = [path.dirname(process.execPath), process.env["PATH"] ?? ""].join(path.delimiter);
  env["NO_COLOR"] = "1";
  env["FORCE_COLOR"] = "0";
  return env;
}

/**
 * Compile jobs: the CPUs this process may use (affinity and cgroup quota, as the service counts them;
 * node-llama-cpp would take os.cpus(), the host's cores even in a 2-CPU container), at most one per GiB of
 * available memory (a compiler takes several hundred MB on ggml's CPU kernels).
 */
export function buildJobs(): number {
  return Math.max(1, Math.min(resolveCpuBudget(0).threads, Math.floor(os.freemem() / 2 ** 30)));
}

/**
 * A `cmake` first on PATH that runs the real one with our -j: node-llama-cpp finds cmake on PATH and hands
 * it to cmake-js, which builds with `--parallel <os.cpus()>`; no option of node-llama-cpp's sets that.
 */
export function cmakeWithJobs(dir: string, realCmake: string, jobs: number): string {
  mkdirSync(dir, { recursive: true });
  const shim = path.join(dir, "cmake");
  writeFileSync(shim, [
    "#!/bin/sh",
    "# scripts/build-llama-native.ts: node-llama-cpp's cmake calls, with --parallel replaced by the build's own job count",
    "first=1; prev=''",
    "for arg in \"$@\"; do",
    "  if [ $first = 1 ]; then set --; first=0; fi",
    `  if [ "$prev" = --parallel ]; then set -- "$@" ${jobs}; else set -- "$@" "$arg"; fi`,
    "  prev=$arg",
    "done",
    `exec ${JSON.stringify(realCmake)} "$@"`,
    "",
  ].join("\n"));
  chmodSync(shim, 0o755);
  return dir;
}

/** The three real steps: node-llama-cpp's source build, our addons against it, a load check in a new process. */
function realSteps(flavor: FastBuildFlavor): BuildStep[] {
  const nlcDir = nodeLlamaCppPackageDir();
  return [
    {
      name: "compile",
      async run(ctx) {
        const options = stampedCmakeOptions(ctx.identity);
        // `source download` clones the bundled source (no network when the bundle matches) and builds;
        // `source build` reuses a checkout that is already there.
        const cloned = existsSync(path.join(nlcDir, "llama", "llama.cpp", ".git")) && existsSync(path.join(nlcDir, "llama", "llama.cpp.info.json"));
        const cli = path.join(nlcDir, "dist", "cli", "cli.js");
        const env = sourceBuildEnv(options);
        const realCmake = findOnPath("cmake");
        const jobs = buildJobs();
        if (realCmake !== null && process.platform !== "win32") env["PATH"] = [cmakeWithJobs(path.join(ctx.workDir, "bin"), realCmake, jobs), env["PATH"] ?? ""].join(path.delimiter);
        ctx.log(`node-llama-cpp ${cloned ? "source build" : "source download"} with ${Object.entries(options).map(([k, v]) => `${k}=${v}`).join(" ")}, -j ${jobs}`);
        await ctx.run(process.execPath, [cli, "source", cloned ? "build" : "download", "--gpu", "false", "--noUsageExample"], { cwd: nlcDir, env, progress: true });
        const bindingDir = [...ourLocalBuilds()].find(([, id]) => id === ctx.id)?.[0];
        if (bindingDir === undefined || !bindingComplete(bindingDir)) throw new StepFailure(`node-llama-cpp reported success but no complete build with ${STAMP_OPTION}=${ctx.id} is in ${localBuildsDir()}`);
        // Only Release/ (the binding) and the done marker are used at run time; the object files are ~100s of MB.
        for (const entry of readdirSync(bindingDir)) if (entry !== "Release" && entry !== "buildDone.status") rmSync(path.join(bindingDir, entry), { recursive: true, force: true });
        ctx.result.bindingDir = bindingDir;
        ctx.result.libraryDir = path.join(bindingDir, "Release");
        ctx.log(`binding: ${bindingDir} (${flavor})`);
      },
    },
    {
      name: "addons",
      async run(ctx) {
        const library = libraryInDir(ctx.result.libraryDir ?? "");
        if (library === null) throw new StepFailure(`no libllama / libggml in ${ctx.result.libraryDir}`);
        for (const name of NATIVE_ADDONS) {
          let why = "";
          const file = await ensureNativeAddon(name, { library, force: true, log: (line) => { why = line; ctx.log(line); } });
          if (file === null) throw new StepFailure(`our ${name} addon did not build against it (${why})`);
        }
      },
    },
    {
      name: "verify",
      async run(ctx) {
        await ctx.run(process.execPath, ["--import", tsxLoader, thisScript, "--verify", ctx.result.libraryDir ?? "", "--cmake-options", JSON.stringify(stampedCmakeOptions(ctx.identity))]);
      },
    },
  ];
}

/** Test steps: shell commands (a tiny real cmake project in test/fast-build.test.ts). */
function commandSteps(commands: { compile: string; addons: string; verify: string }): BuildStep[] {
  const step = (name: string, command: string, progress = false): BuildStep => ({
    name,
    async run(ctx) {
      const bindingDir = path.join(ctx.root, ctx.id, "binding");
      await ctx.run("sh", ["-c", command], { env: { ...process.env, FAST_BUILD_ID: ctx.id, FAST_BUILD_BINDING_DIR: bindingDir }, progress });
      if (name === "compile") {
        if (!bindingComplete(bindingDir)) throw new StepFailure(`the compile command made no complete binding in ${bindingDir}`);
        ctx.result.bindingDir = bindingDir;
        ctx.result.libraryDir = path.join(bindingDir, "Release");
      }
    },
  });
  return [step("compile", commands.compile, true), step("addons", commands.addons), step("verify", commands.verify)];
}

/** --verify: load the new binding in this (throwaway) process and both addons against it. */
async function verify(libraryDir: string, cmakeOptions: Record<string, string>): Promise<void> {
  const runtime = await loadRuntime("cpu", 1, undefined, { setting: "auto", cmakeOptions, build: null });
  const loaded = loadedLlamaLibrary();
  if (runtime.llama.buildType !== "localBuild" || loaded?.dir !== libraryDir) {
    throw new Error(`node-llama-cpp loaded ${runtime.llama.buildType} ${loaded?.dir ?? "?"}, not ${libraryDir}`);
  }
  const require = createRequire(import.meta.url);
  for (const name of NATIVE_ADDONS) {
    const file = findNativeAddon(name);
    if (file === null) throw new Error(`the ${name} addon for ${libraryDir} is not found`);
    require(file);
  }
  console.log(`verified: ${libraryDir} loads (${runtime.llama.systemInfo.trim()}), with ${NATIVE_ADDONS.join(" and ")}`);
}

type Args = {
  flavor: FastBuildFlavor; background: boolean; force: boolean; gpu: string | null; root: string;
  verify: string | null; cmakeOptions: string | null; commands: { compile: string; addons: string; verify: string } | null;
};

function parseArgs(argv: readonly string[]): Args {
  const value = (flag: string) => {
    const i = argv.indexOf(flag);
    if (i >= 0) return argv[i + 1] ?? null;
    return argv.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1) ?? null;
  };
  const flavorFlag = value("--flavor");
  const flavor: FastBuildFlavor = argv.includes("--portable") || flavorFlag === "portable" ? "portable" : "native";
  const compile = value("--compile-command");
  return {
    flavor, background: argv.includes("--background"), force: argv.includes("--force"), gpu: value("--gpu"),
    root: value("--root") ?? fastBuildRoot(), verify: value("--verify"), cmakeOptions: value("--cmake-options"),
    commands: compile === null ? null : { compile, addons: value("--addons-command") ?? "true", verify: value("--verify-command") ?? "true" },
  };
}

/** `--gpu cuda|vulkan|metal`: node-llama-cpp's source build under the options the service asks for with that backend. */
async function legacyGpuBuild(args: readonly string[]): Promise<number> {
  const cmakeEnv = Object.fromEntries(Object.entries(LEGACY_LOCAL_BUILD_OPTIONS).map(([name, v]) => [`NODE_LLAMA_CPP_CMAKE_OPTION_${name}`, v]));
  const cli = ["--no", "node-llama-cpp", "source", "download", ...args];
  console.log(`[build-llama-native] npx ${cli.join(" ")}`);
  const build = spawnSync("npx", cli, { stdio: "inherit", env: { ...process.env, ...cmakeEnv } });
  if (build.status !== 0) {
    console.error(`[build-llama-native] node-llama-cpp's source build failed (exit ${build.status ?? build.signal}); the binding in use stays.`);
    return build.status ?? 1;
  }
  for (const name of NATIVE_ADDONS) if (await ensureNativeAddon(name) === null) return 1;
  return 0;
}

function humanEvent(event: BuildEvent): string {
  switch (event.event) {
    case "started": return `building ${event.id} (${event.priority}); log: ${event.log}`;
    case "phase": return `step: ${event.phase}`;
    case "progress": return `${event.phase}: ${event.percent}%`;
    case "locked": return `another build is running (pid ${event.heldBy.pid}, ${event.heldBy.id}, since ${event.heldBy.startedAt})`;
    case "done": return `done in ${event.record.seconds} s (${Object.entries(event.record.steps).map(([k, v]) => `${k} ${v} s`).join(", ")}): ${event.record.bindingDir}; the service loads it from its next start`;
    case "failed": return `FAILED: ${event.reason}\nlog: ${event.log}; the binding in use stays`;
    case "interrupted": return "interrupted: nothing changed";
  }
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const args = parseArgs(argv);
  if (args.verify !== null) {
    await verify(args.verify, JSON.parse(args.cmakeOptions ?? "{}") as Record<string, string>);
    return 0;
  }
  if (args.gpu !== null && args.gpu !== "false") return legacyGpuBuild(argv);

  const priority = lowerOwnPriority();
  const identity = buildIdentity(args.flavor);
  let lastShown = -10;
  const emit = (event: BuildEvent) => {
    if (args.background) return void process.stdout.write(`${JSON.stringify(event)}\n`);
    if (event.event === "progress" && event.percent < lastShown + 10 && event.percent < 100) return;
    if (event.event === "progress") lastShown = event.percent;
    if (event.event === "phase") lastShown = -10;
    console.log(`[build-llama-native] ${humanEvent(event)}`);
  };
  const existing = completedBuild(args.root, identity);
  if (existing.record !== null && !args.force) {
    emit({ event: "done", record: existing.record });
    return 0;
  }
  const toolchain = args.commands === null ? findToolchain() : { ok: true as const, cxx: "c++" };
  if (!toolchain.ok) {
    emit({ event: "failed", reason: `no toolchain: ${toolchain.missing.join(", ")} not found on PATH`, log: "" });
    return 1;
  }
  const abort = new AbortController();
  for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.once(signal, () => abort.abort());
  const outcome = await runFastBuild({
    root: args.root, identity, compiler: await compilerLine(toolchain.cxx), priority, emit, signal: abort.signal,
    steps: args.commands === null ? realSteps(args.flavor) : commandSteps(args.commands),
  });
  if (outcome === "done" && args.commands === null) {
    // Older builds of this flavor (another node-llama-cpp, another CPU) are dead weight now.
    const keep = buildId(identity);
    for (const [dir, id] of ourLocalBuilds()) if (id !== keep && id.startsWith(`${args.flavor}-`)) rmSync(dir, { recursive: true, force: true });
    for (const entry of existsSync(args.root) ? readdirSync(args.root) : []) {
      if (entry !== keep && entry.startsWith(`${args.flavor}-`)) rmSync(path.join(args.root, entry), { recursive: true, force: true });
    }
  }
  return { done: 0, failed: 1, locked: 3, interrupted: 130 }[outcome];
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (invokedDirectly) {
  let code = 1;
  try {
    code = await main();
  } catch (error) {
    console.error(`[build-llama-native] ${error instanceof Error ? error.message : String(error)}`);
  }
  // getLlama() keeps native handles open.
  process.exit(code);
}
