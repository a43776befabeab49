// The service's side of the fast build: after the runtime loaded, decide (fastBuild.ts decideFastBuild);
// once the service is ready, start scripts/build-llama-native.ts --background as a child at low priority,
// follow its JSON events into the log and /api/status, and stop it with the service. The build is used
// from the next start; this process keeps the binding it loaded.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { projectRoot } from "../../config.js";
import { nodeLlamaCppPackageDir } from "../native/addonBuild.js";
import type { BuildEvent } from "./buildRun.js";
import {
  anyCompletedBuild, buildId, compilerLine, buildIdentity, buildLogFile, decideFastBuild, fastBuildRoot, findToolchain, lockHolder, machineFacts,
  readFailure, readProgress, type BindingSetting, type BuildRecord, type Decision, type FastBuildFlavor, type FastBuildSetting,
  type FastBuildState, type MachineFacts, type Toolchain,
} from "./fastBuild.js";
import { signalTree } from "./processTree.js";

/** What /api/status shows (binding.fast_build). */
export type FastBuildStatus = {
  setting: FastBuildSetting;
  state: FastBuildState;
  reason: string;
  id?: string;
  flavor?: FastBuildFlavor;
  phase?: string;
  percent?: number;
  log_file?: string;
  started_at?: string;
  /** Seconds the build took (state built, after this process built it). */
  seconds?: number;
};

/** What /api/status shows about the loaded binding (the runtime's BindingInfo, in the API's words). */
export type BindingStatus = {
  setting: BindingSetting;
  loaded: "prebuilt" | "localBuild" | null;
  build: { id: string; flavor: FastBuildFlavor; built_at: string } | null;
  library_dir: string | null;
  fast_build: FastBuildStatus;
};

type Log = { info(obj: object, msg: string): void; warn(obj: object, msg: string): void; debug(obj: object, msg: string): void };

export type FastBuildMonitorOptions = {
  setting: FastBuildSetting;
  binding: BindingSetting;
  log: Log;
  root?: string;
  flavor?: FastBuildFlavor;
  /** Extra worker arguments (tests: --root and injected step commands). */
  workerArgs?: readonly string[];
  facts?: MachineFacts;
  toolchain?: Toolchain;
  /** The compiler line a failure is compared with (default: asked of the compiler when a failure exists). */
  compiler?: () => Promise<string>;
};

type LoadedBinding = { loaded: "prebuilt" | "localBuild"; build: BuildRecord | null; libraryDir: string | null };

const WORKER = path.join(projectRoot, "scripts", "build-llama-native.ts");

/** node_modules must be writable for node-llama-cpp's build and our records (not in the images' runtime user). */
function writableProblem(root: string): string | null {
  for (const dir of [path.join(nodeLlamaCppPackageDir(), "llama"), existsSync(root) ? root : path.dirname(root)]) {
    try {
      if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
      accessSync(dir, constants.W_OK);
    } catch {
      return `${dir} is not writable`;
    }
  }
  return null;
}

export class FastBuildMonitor {
  readonly #o: FastBuildMonitorOptions;
  readonly #root: string;
  readonly #flavor: FastBuildFlavor;
  #loaded: LoadedBinding | null = null;
  #decision: Decision = { state: "pending", build: false, reason: "the runtime is loading" };
  #id: string | null = null;
  #child: ChildProcess | null = null;
  #exited: Promise<void> | null = null;
  #stopping = false;
  #progress: { phase?: string; percent?: number; startedAt?: string; seconds?: number } = {};
  #lastLoggedPercent = -100;

  constructor(options: FastBuildMonitorOptions) {
    this.#o = options;
    this.#root = options.root ?? fastBuildRoot();
    this.#flavor = options.flavor ?? "native";
  }

  /** Decides, from the binding the runtime loaded, whether to build; logs the outcome in one line. */
  async afterLoad(runtime: { backend: string; binding: LoadedBinding }): Promise<Decision> {
    this.#loaded = runtime.binding;
    try {
      return await this.#decide(runtime);
    } catch (error) {
      this.#decision = { state: "unavailable", build: false, reason: `cannot tell: ${error instanceof Error ? error.message : String(error)}` };
      this.#o.log.warn({ fastBuild: "unavailable", reason: this.#decision.reason }, "fast llama.cpp build");
      return this.#decision;
    }
  }

  async #decide(runtime: { backend: string; binding: LoadedBinding }): Promise<Decision> {
    const facts = this.#o.facts ?? machineFacts();
    const identity = buildIdentity(this.#flavor, facts);
    this.#id = buildId(identity);
    const toolchain = this.#o.toolchain ?? findToolchain();
    const failure = readFailure(this.#root, this.#id);
    // Running the compiler costs a few milliseconds: only when there is a failure to compare with.
    const compiler = failure === null ? null : await (this.#o.compiler ?? (() => compilerLine(toolchain.ok ? toolchain.cxx : "c++")))();
    this.#decision = decideFastBuild({
      setting: this.#o.setting, platform: process.platform, backend: runtime.backend,
      inUse: runtime.binding.build, completed: anyCompletedBuild(this.#root, facts),
      toolchain, failure, compiler, lockHeldBy: lockHolder(this.#root),
    });
    if (this.#decision.build) {
      const problem = writableProblem(this.#root);
      if (problem !== null) this.#decision = { state: "unavailable", build: false, reason: problem };
    }
    const { state, reason } = this.#decision;
    const fields = { fastBuild: state, reason };
    // A failure was reported when it happened; later starts only keep it in /api/status.
    if (state === "pending") this.#o.log.info(fields, "fast llama.cpp build: starts in the background once the service is ready");
    else if (state === "unavailable" || state === "building" || state === "built") this.#o.log.info(fields, "fast llama.cpp build");
    else this.#o.log.debug(fields, "fast llama.cpp build");
    return this.#decision;
  }

  /** Starts the decided build (once the service is ready). Never throws: a failure to start is a state. */
  start(): void {
    if (!this.#decision.build || this.#child !== null || this.#stopping) return;
    const args = ["--import", import.meta.resolve("tsx"), WORKER, "--background", "--flavor", this.#flavor, ...(this.#o.workerArgs ?? [])];
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, args, { cwd: projectRoot, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NODE_OPTIONS: "" } });
    } catch (error) {
      this.#fail(`could not start the build: ${error instanceof Error ? error.message : String(error)}`, "");
      return;
    }
    this.#child = child;
    this.#decision = { state: "building", build: false, reason: "building in the background" };
    this.#progress = { startedAt: new Date().toISOString() };
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      let event: BuildEvent;
      try {
        event = JSON.parse(line) as BuildEvent;
      } catch {
        return;
      }
      this.#onEvent(event);
    });
    this.#exited = new Promise((resolve) => {
      child.on("close", (code, signal) => {
        this.#child = null;
        if (this.#decision.state === "building") {
          if (this.#stopping || signal !== null || code === 130) {
            this.#decision = { state: "pending", build: false, reason: "interrupted (the service stopped); the next start builds again" };
            this.#o.log.info({ fastBuild: "interrupted" }, "fast llama.cpp build interrupted: nothing changed; the next start builds again");
          } else this.#fail(`the build process exited with code ${code}${stderr.trim() === "" ? "" : `: ${stderr.trim().split("\n").at(-1)}`}`, this.#id === null ? "" : buildLogFile(this.#root, this.#id));
        }
        resolve();
      });
    });
  }

  #fail(reason: string, logFile: string): void {
    this.#decision = { state: "failed", build: false, reason };
    this.#o.log.warn({ fastBuild: "failed", reason, logFile }, "fast llama.cpp build failed; the prebuilt binding stays (this is reported once; /api/status keeps the reason)");
  }

  #onEvent(event: BuildEvent): void {
    const log = this.#o.log;
    switch (event.event) {
      case "started":
        this.#progress.startedAt = new Date().toISOString();
        log.info({ fastBuild: "building", id: event.id, flavor: event.flavor, pid: event.pid, priority: event.priority, logFile: event.log }, "fast llama.cpp build started in the background");
        break;
      case "phase":
        this.#progress.phase = event.phase;
        delete this.#progress.percent;
        this.#lastLoggedPercent = -100;
        log.info({ fastBuild: "building", phase: event.phase }, "fast llama.cpp build: next step");
        break;
      case "progress":
        this.#progress.percent = event.percent;
        if (event.percent >= this.#lastLoggedPercent + 10) {
          this.#lastLoggedPercent = event.percent - (event.percent % 10);
          log.info({ fastBuild: "building", phase: event.phase, percent: event.percent }, "fast llama.cpp build progress");
        }
        break;
      case "locked":
        this.#decision = { state: "building", build: false, reason: `another process (pid ${event.heldBy.pid}) is building ${event.heldBy.id}` };
        log.info({ fastBuild: "building", pid: event.heldBy.pid }, "fast llama.cpp build: another process is already building");
        break;
      case "done":
        this.#decision = { state: "built", build: false, reason: `built ${event.record.id}; the next start loads it` };
        this.#progress = { seconds: event.record.seconds };
        log.info({ fastBuild: "built", id: event.record.id, seconds: event.record.seconds, steps: event.record.steps }, "fast llama.cpp build done: the next start uses it");
        break;
      case "failed":
        this.#fail(event.reason, event.log);
        break;
      case "interrupted":
        break;
    }
  }

  /** For /api/status: this process's build, or another process's (from its progress file). */
  status(): BindingStatus {
    const { state, reason } = this.#decision;
    const fast: FastBuildStatus = { setting: this.#o.setting, state, reason };
    if (this.#id !== null) {
      fast.id = this.#id;
      fast.flavor = this.#flavor;
      if (state === "building" || state === "failed" || state === "built") fast.log_file = buildLogFile(this.#root, this.#id);
    }
    if (state === "building") {
      // Another process's build (it may be another flavor): its own progress file.
      const holder = this.#child === null ? lockHolder(this.#root) : null;
      const other = holder === null ? null : readProgress(this.#root, holder.id);
      const phase = other?.phase ?? this.#progress.phase;
      const percent = other?.percent ?? this.#progress.percent;
      const startedAt = other?.startedAt ?? this.#progress.startedAt;
      if (phase !== undefined) fast.phase = phase;
      if (percent !== undefined && percent !== null) fast.percent = percent;
      if (startedAt !== undefined) fast.started_at = startedAt;
    }
    if (state === "built" && this.#progress.seconds !== undefined) fast.seconds = this.#progress.seconds;
    const build = this.#loaded?.build ?? null;
    return {
      setting: this.#o.binding,
      loaded: this.#loaded?.loaded ?? null,
      build: build === null ? null : { id: build.id, flavor: build.identity.flavor, built_at: build.builtAt },
      library_dir: this.#loaded?.libraryDir ?? null,
      fast_build: fast,
    };
  }

  /** Stops a running build and everything it started; resolves once it is gone. */
  async stop(): Promise<void> {
    this.#stopping = true;
    const child = this.#child;
    if (child === null || child.pid === undefined) return;
    child.kill("SIGTERM");
    const pid = child.pid;
    const killer = setTimeout(() => signalTree(pid, "SIGKILL", true), 5000);
    await this.#exited;
    clearTimeout(killer);
  }
}
