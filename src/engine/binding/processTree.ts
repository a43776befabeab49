// The processes below one pid (a build: cmake -> make -> the compilers), so that stopping a build stops
// all of it. Its children are not put in a process group of their own on purpose: setsid would also give
// them an autogroup of their own on Linux desktops, where nice 19 then no longer yields to the service.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

/** pid -> parent pid of every process visible here (/proc on Linux, `ps` elsewhere). */
export function parentPids(): Map<number, number> {
  const parents = new Map<number, number>();
  if (process.platform === "linux") {
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
        const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        parents.set(Number(entry), ppid);
      } catch { /* exited meanwhile */ }
    }
    return parents;
  }
  try {
    for (const line of execFileSync("ps", ["-A", "-o", "pid=,ppid="], { encoding: "utf8" }).split("\n")) {
      const [pid, ppid] = line.trim().split(/\s+/).map(Number);
      if (pid !== undefined && ppid !== undefined && Number.isInteger(pid) && Number.isInteger(ppid)) parents.set(pid, ppid);
    }
  } catch { /* no ps: only the direct child is known */ }
  return parents;
}

/** Every descendant of `root`, children before grandchildren. */
export function descendantPids(root: number, parents: Map<number, number> = parentPids()): number[] {
  const out: number[] = [];
  let frontier = [root];
  while (frontier.length > 0) {
    const next: number[] = [];
    for (const [pid, ppid] of parents) if (frontier.includes(ppid) && !out.includes(pid)) next.push(pid);
    out.push(...next);
    frontier = next;
  }
  return out;
}

/** Sends `signal` to every descendant of `root` (deepest first, so a parent does not respawn work). */
export function signalTree(root: number, signal: NodeJS.Signals, includeRoot = false): number[] {
  const pids = [...descendantPids(root).reverse(), ...(includeRoot ? [root] : [])];
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch { /* already gone */ }
  }
  return pids;
}
