// Server processes: start, wait until ready, read peak RSS, stop. Every child is registered so that an
// error, Ctrl-C or a crash of the bench never leaves one running (they would skew the next run and
// hold gigabytes of RAM).
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { progress } from "./log.ts";

export type ServerSpec = {
  /** Short label for logs: "ours", "llama-server chat", … */
  label: string;
  command: string;
  args: readonly string[];
  env?: NodeJS.ProcessEnv;
  cwd: string;
  /** URL that answers 200 once the server accepts work. */
  readyUrl: string;
  readyTimeoutMs: number;
  logFile: string;
};

export type RunningServer = {
  readonly spec: ServerSpec;
  readonly pid: number;
  /** VmHWM of the process now, in bytes. */
  peakRssBytes(): number;
  /** Whether the process has exited (a crash mid-run fails the measurement that saw it). */
  exited(): boolean;
  stop(): Promise<void>;
};

const live = new Set<ChildProcess>();

/** SIGKILLs every child still running; synchronous so it also works from an 'exit' handler. */
export function killAllChildren(): void {
  for (const child of live) {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  live.clear();
}

let handlersInstalled = false;

/** Kills the children when the bench is interrupted or exits for any reason. */
export function installCleanupHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on("exit", killAllChildren);
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      progress(`${signal}: stopping servers`);
      killAllChildren();
      process.exit(130);
    });
  }
}

/** A free loopback port (the OS picks it; closed again before the server binds it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** Peak resident set size (VmHWM) of a live process, in bytes. */
export function readPeakRss(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const match = /^VmHWM:\s+(\d+)\s+kB/m.exec(status);
  if (!match?.[1]) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

export async function startServer(spec: ServerSpec): Promise<RunningServer> {
  mkdirSync(path.dirname(spec.logFile), { recursive: true });
  // The server writes its log straight into the file: piping it through this process would put the
  // server's logging work on the same event loop that times the requests.
  const logFd = openSync(spec.logFile, "w");
  writeSync(logFd, `$ ${spec.command} ${spec.args.join(" ")}\n`);
  let child: ChildProcess;
  try {
    child = spawn(spec.command, spec.args, { cwd: spec.cwd, env: spec.env ?? process.env, stdio: ["ignore", logFd, logFd] });
  } finally {
    closeSync(logFd); // the child holds its own copy
  }
  live.add(child);
  let exitInfo: string | null = null;
  const exitedPromise = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exitInfo = `exited with ${signal ?? code}`;
      live.delete(child);
      resolve();
    });
  });
  child.once("error", (error) => { exitInfo = `failed to start: ${error.message}`; live.delete(child); });
  if (child.pid === undefined) throw new Error(`${spec.label}: could not start ${spec.command}`);
  const pid = child.pid;

  const server: RunningServer = {
    spec,
    pid,
    peakRssBytes: () => readPeakRss(pid),
    exited: () => exitInfo !== null,
    stop: async () => {
      if (exitInfo === null) {
        child.kill("SIGTERM");
        // Our service drains for up to 10 s (close-with-grace); never wait longer than that.
        const timer = setTimeout(() => child.kill("SIGKILL"), 12_000);
        await exitedPromise;
        clearTimeout(timer);
      }
    },
  };
  try {
    await waitReady(spec, () => exitInfo);
  } catch (error) {
    await server.stop();
    throw error;
  }
  return server;
}

async function waitReady(spec: ServerSpec, exitInfo: () => string | null): Promise<void> {
  const deadline = Date.now() + spec.readyTimeoutMs;
  while (Date.now() < deadline) {
    const info = exitInfo();
    if (info !== null) throw new Error(`${spec.label} ${info} before it was ready; log: ${spec.logFile}\n${logTail(spec.logFile)}`);
    const status = await fetch(spec.readyUrl, { signal: AbortSignal.timeout(2000) }).then((r) => r.status, () => 0);
    if (status === 200) return;
    // 100 ms: start-to-ready is reported, and a tiny model's server is ready in about a second.
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${spec.label} was not ready within ${spec.readyTimeoutMs / 1000} s; log: ${spec.logFile}\n${logTail(spec.logFile)}`);
}

function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}
