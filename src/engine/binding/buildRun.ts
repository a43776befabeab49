// One run of the fast build, step by step, in the process that builds (scripts/build-llama-native.ts):
// lock, steps (compile, our addons, a load check), commit. Whatever happens before the commit leaves the
// binding in use as it was: a failure writes failed.json (the reason, said once), an interruption writes
// nothing (the next start builds again). Every command's output goes to the build log.
import { execFileSync, spawn } from "node:child_process";
import { createWriteStream, mkdirSync, rmSync, type WriteStream } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  buildId, buildLogFile, buildProgressOf, failureFile, findOnPath, progressFile, recordFile, tryLock, writeJsonAtomic,
  type BuildIdentity, type BuildProgress, type BuildRecord, type FailureRecord, type LockInfo,
} from "./fastBuild.js";
import { signalTree } from "./processTree.js";

export type BuildEvent =
  | { event: "started"; id: string; flavor: string; pid: number; log: string; priority: string }
  | { event: "phase"; phase: string }
  | { event: "progress"; phase: string; percent: number }
  | { event: "locked"; heldBy: LockInfo }
  | { event: "done"; record: BuildRecord }
  | { event: "failed"; reason: string; log: string }
  | { event: "interrupted" };

/** A step that cannot go on; its message is the reason recorded and reported. */
export class StepFailure extends Error {}

export type RunOptions = { cwd?: string; env?: NodeJS.ProcessEnv; progress?: boolean };

export type BuildContext = {
  id: string;
  identity: BuildIdentity;
  root: string;
  /** root/<id>/work: a scratch folder of this build (test steps build there). */
  workDir: string;
  log(line: string): void;
  /** Runs a command to completion, output to the log; a non-zero exit is a StepFailure naming the first error line. */
  run(command: string, args: readonly string[], options?: RunOptions): Promise<void>;
  /** What the steps found out: the binding's folder and its library folder (the compile step sets them). */
  result: { bindingDir?: string; libraryDir?: string };
};

export type BuildStep = { name: string; run(ctx: BuildContext): Promise<void> };

export type FastBuildOptions = {
  root: string;
  identity: BuildIdentity;
  compiler: string;
  steps: readonly BuildStep[];
  emit(event: BuildEvent): void;
  /** Aborting stops the running command (and everything below it) and ends the run as interrupted. */
  signal: AbortSignal;
  priority: string;
};

export type BuildOutcome = "done" | "failed" | "locked" | "interrupted";

/**
 * Nice 19 for this process and what it starts (the compilers), and on Linux SCHED_IDLE and the idle I/O
 * class where util-linux is there: the service's own decode threads run at LLM_NICE (19 by default), so
 * a compiler at nice 19 alone would still take half their cores. Returns what was applied, for the log.
 */
export function lowerOwnPriority(): string {
  const applied: string[] = [];
  try {
    os.setPriority(19);
    applied.push("nice 19");
  } catch { /* already lower, or not permitted */ }
  if (process.platform === "linux") {
    const tools: [string, string[], string][] = [["chrt", ["--idle", "-p", "0", String(process.pid)], "SCHED_IDLE"], ["ionice", ["-c", "3", "-p", String(process.pid)], "idle I/O"]];
    for (const [tool, args, what] of tools) {
      const found = findOnPath(tool);
      if (found === null) continue;
      try {
        execFileSync(found, args, { stdio: "ignore" });
        applied.push(what);
      } catch { /* not permitted here (some containers): nice alone */ }
    }
  }
  return applied.join(", ") || "normal priority (could not lower it)";
}

function firstErrorLine(lines: readonly string[]): string {
  const meaningful = lines.map((l) => l.trim()).filter((l) => l !== "");
  return meaningful.find((l) => /\berror\b/i.test(l)) ?? meaningful.at(-1) ?? "no output";
}

export async function runFastBuild(o: FastBuildOptions): Promise<BuildOutcome> {
  const id = buildId(o.identity);
  const taken = tryLock(o.root, id);
  if (taken.lock === null) {
    o.emit({ event: "locked", heldBy: taken.heldBy });
    return "locked";
  }
  const dir = path.join(o.root, id);
  const workDir = path.join(dir, "work");
  const logFile = buildLogFile(o.root, id);
  let log: WriteStream | null = null;
  const started = Date.now();
  const startedAt = new Date(started).toISOString();
  let phase = "starting";
  let lastPercent = -1;
  const writeProgress = (percent: number | null) => {
    const progress: BuildProgress = { id, pid: process.pid, phase, percent, startedAt, updatedAt: new Date().toISOString() };
    writeJsonAtomic(progressFile(o.root, id), progress);
  };
  // Everything below this process: the running command's tree, and a compiler a step started itself.
  const onAbort = () => {
    const pids = signalTree(process.pid, "SIGTERM");
    // What ignores SIGTERM gets SIGKILL a little later.
    if (pids.length > 0) setTimeout(() => { for (const pid of pids) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } } }, 3000).unref();
  };
  o.signal.addEventListener("abort", onAbort, { once: true });
  try {
    rmSync(workDir, { recursive: true, force: true });
    mkdirSync(workDir, { recursive: true });
    rmSync(failureFile(o.root, id), { force: true });
    const stream = createWriteStream(logFile, { flags: "w" });
    log = stream;
    stream.write(`fast llama.cpp build ${id}, started ${startedAt} (pid ${process.pid}, ${o.priority})\ncompiler: ${o.compiler}\n${JSON.stringify(o.identity)}\n`);
    o.emit({ event: "started", id, flavor: o.identity.flavor, pid: process.pid, log: logFile, priority: o.priority });
    writeProgress(null);

    const ctx: BuildContext = {
      id, identity: o.identity, root: o.root, workDir, result: {},
      log: (line) => { stream.write(`${line}\n`); },
      run: (command, args, options = {}) => new Promise<void>((resolve, reject) => {
        if (o.signal.aborted) return reject(new StepFailure("interrupted"));
        stream.write(`\n$ ${command} ${args.join(" ")}\n`);
        const child = spawn(command, args, { cwd: options.cwd ?? workDir, env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
        const tail: string[] = [];
        let partial = "";
        const onData = (chunk: Buffer) => {
          stream.write(chunk);
          const lines = (partial + chunk.toString()).split(/\r?\n|\r/);
          partial = lines.pop() ?? "";
          for (const line of lines) {
            tail.push(line);
            if (tail.length > 400) tail.shift();
            const percent = options.progress ? buildProgressOf(line) : null;
            if (percent !== null && percent > lastPercent) {
              lastPercent = percent;
              o.emit({ event: "progress", phase, percent });
              writeProgress(percent);
            }
          }
        };
        child.stdout.on("data", onData);
        child.stderr.on("data", onData);
        child.on("error", (error) => { reject(new StepFailure(`${path.basename(command)}: ${error.message}`)); });
        child.on("close", (code, signal) => {
          if (partial !== "") tail.push(partial);
          if (code === 0) resolve();
          else if (o.signal.aborted) reject(new StepFailure("interrupted"));
          else reject(new StepFailure(`${path.basename(command)} ${signal === null ? `exited with code ${code}` : `was killed (${signal})`}: ${firstErrorLine(tail)}`));
        });
      }),
    };

    const stepSeconds: Record<string, number> = {};
    for (const step of o.steps) {
      phase = step.name;
      lastPercent = -1;
      o.emit({ event: "phase", phase });
      writeProgress(null);
      const stepStarted = Date.now();
      stream.write(`\n== ${step.name}\n`);
      await step.run(ctx);
      if (o.signal.aborted) throw new StepFailure("interrupted");
      stepSeconds[step.name] = Math.round((Date.now() - stepStarted) / 100) / 10;
    }
    const { bindingDir, libraryDir } = ctx.result;
    if (bindingDir === undefined || libraryDir === undefined) throw new StepFailure("the steps did not say where the binding is");
    const record: BuildRecord = {
      id, identity: o.identity, bindingDir, libraryDir, compiler: o.compiler,
      builtAt: new Date().toISOString(), seconds: Math.round((Date.now() - started) / 1000), steps: stepSeconds,
    };
    // The commit: from this rename on, LLAMA_BINDING=auto selects this build.
    writeJsonAtomic(recordFile(o.root, id), record);
    stream.write(`\ncommitted ${recordFile(o.root, id)} after ${record.seconds} s\n`);
    o.emit({ event: "done", record });
    return "done";
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    if (o.signal.aborted) {
      log?.write(`\ninterrupted: nothing committed\n`);
      o.emit({ event: "interrupted" });
      return "interrupted";
    }
    log?.write(`\nfailed: ${reason}\n`);
    const failure: FailureRecord = { id, reason, compiler: o.compiler, at: new Date().toISOString(), logFile };
    writeJsonAtomic(failureFile(o.root, id), failure);
    o.emit({ event: "failed", reason, log: logFile });
    return "failed";
  } finally {
    o.signal.removeEventListener("abort", onAbort);
    rmSync(progressFile(o.root, id), { force: true });
    rmSync(workDir, { recursive: true, force: true });
    const stream = log;
    if (stream !== null) await new Promise<void>((resolve) => stream.end(resolve));
    taken.lock.release();
  }
}
