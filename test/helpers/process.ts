// Runs `src/main.ts` as a real process (what `npm start` runs) and reads its JSON log lines.
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TEST_THREADS } from "./threads.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

export type ServiceProcess = {
  child: ChildProcess;
  output: () => string;
  /** Resolves with the first log line that matches. */
  waitForLine: (pattern: RegExp, timeoutMs?: number) => Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
};

export function startServiceProcess(env: Record<string, string>): ServiceProcess {
  const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "src", "main.ts")], {
    cwd: root,
    env: { ...process.env, PORT: "0", LOG_LEVEL: "info", PROMPT_CACHE_DISK_MIB: "0", LLM_THREADS: TEST_THREADS, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString("utf8");
    for (const l of listeners) l();
  };
  child.stdout!.on("data", onData);
  child.stderr!.on("data", onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return {
    child,
    output: () => text,
    exited,
    waitForLine(pattern, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const line = text.split("\n").find((l) => pattern.test(l));
          if (line === undefined) return false;
          cleanup();
          resolve(line);
          return true;
        };
        const timer = setTimeout(() => { cleanup(); reject(new Error(`no line matching ${pattern} in:\n${text}`)); }, timeoutMs);
        const cleanup = () => { clearTimeout(timer); listeners.delete(listener); };
        const listener = () => void check();
        if (!check()) listeners.add(listener);
        void exited.then(() => setTimeout(() => { if (listeners.has(listener)) { cleanup(); reject(new Error(`process exited before ${pattern}:\n${text}`)); } }, 50));
      });
    },
  };
}
