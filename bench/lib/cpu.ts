// CPU accounting, because this machine is shared: llama.cpp's threads spin-wait for each other, so any
// other busy process (a test run, a build) on the 2 cores slows decoding many times over. The bench waits
// for quiet before each server and reports how much CPU other processes took during each server's runs.
import { readFileSync } from "node:fs";
import os from "node:os";
import { progress } from "./log.ts";

const TICKS_PER_SECOND = 100; // USER_HZ; 100 on every Linux this runs on

type Snapshot = { at: number; busyTicks: number; ownTicks: number; serverTicks: number };

function machineBusyTicks(): number {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy = everything but idle and iowait.
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return user + nice + system + irq + softirq + steal;
}

function processTicks(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(rest[11]) + Number(rest[12]);
  } catch {
    return 0;
  }
}

/** The server's process, or all processes of one side (llama-server's chat and embedding servers). */
type Pids = number | readonly number[] | null;

function snapshot(serverPid: Pids): Snapshot {
  const pids = serverPid === null ? [] : typeof serverPid === "number" ? [serverPid] : serverPid;
  return {
    at: performance.now(),
    busyTicks: machineBusyTicks(),
    ownTicks: processTicks(process.pid),
    serverTicks: pids.reduce((sum, pid) => sum + processTicks(pid), 0),
  };
}

export type CpuShare = { seconds: number; serverCores: number; benchCores: number; otherCores: number };

/** Measures CPU use between start() and stop(): the server, this bench process, and everything else. */
export class CpuMeter {
  private first: Snapshot;
  constructor(private readonly serverPid: Pids) {
    this.first = snapshot(serverPid);
  }

  read(): CpuShare {
    const last = snapshot(this.serverPid);
    const seconds = (last.at - this.first.at) / 1000;
    const cores = (ticks: number) => (seconds > 0 ? ticks / TICKS_PER_SECOND / seconds : 0);
    const server = cores(last.serverTicks - this.first.serverTicks);
    const bench = cores(last.ownTicks - this.first.ownTicks);
    const busy = cores(last.busyTicks - this.first.busyTicks);
    return { seconds, serverCores: server, benchCores: bench, otherCores: Math.max(0, busy - server - bench) };
  }
}

/**
 * Waits (bounded) until other processes use less than `threshold` cores over a 1 s window.
 * Returns the load seen last, so the report can say the machine was not quiet.
 */
export async function waitForQuietCpu(maxWaitSeconds: number, threshold = 0.25): Promise<number> {
  const deadline = performance.now() + maxWaitSeconds * 1000;
  let announced = false;
  for (;;) {
    const meter = new CpuMeter(null);
    await new Promise((r) => setTimeout(r, 1000));
    const other = meter.read().otherCores;
    if (other < threshold) return other;
    if (performance.now() >= deadline) {
      progress(`WARNING: other processes still use ${other.toFixed(2)} of ${os.availableParallelism()} cores; measuring anyway (numbers will be low)`);
      return other;
    }
    if (!announced) {
      progress(`other processes use ${other.toFixed(2)} cores; waiting up to ${maxWaitSeconds} s for them to finish`);
      announced = true;
    }
  }
}

export type GuardRecord = { label: string; otherCores: number; repeated: number };

/**
 * Runs each measured repetition under a CPU meter; when other processes took more than `threshold` cores
 * during it, waits for quiet and repeats it (at most `maxRepeats` times). Keeps what it saw for the report.
 */
export class InterferenceGuard {
  readonly records: GuardRecord[] = [];
  constructor(private readonly serverPid: number, private readonly quietWaitSeconds: number, private readonly threshold = 0.25, private readonly maxRepeats = 2) {}

  async measure<T>(label: string, run: () => Promise<T>): Promise<T> {
    for (let repeated = 0; ; repeated++) {
      const meter = new CpuMeter(this.serverPid);
      const result = await run();
      const other = meter.read().otherCores;
      if (other <= this.threshold || repeated >= this.maxRepeats) {
        this.records.push({ label, otherCores: other, repeated });
        return result;
      }
      progress(`  ${label}: other processes took ${other.toFixed(2)} cores meanwhile; repeating it once the machine is quiet`);
      await waitForQuietCpu(this.quietWaitSeconds, this.threshold);
    }
  }

  /** Repetitions that stayed disturbed even after repeating. */
  disturbed(): GuardRecord[] {
    return this.records.filter((r) => r.otherCores > this.threshold);
  }
}
