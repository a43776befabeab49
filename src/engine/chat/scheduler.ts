// Admission and slot choice: a bounded FIFO queue in front of the slots, deadlines and cancellation
// while waiting, the slot sharing the longest cached prefix with the prompt (llama-server's prompt
// similarity rule), and a Retry-After estimate from the request's place in the queue.
import { EngineError } from "../errors.js";

/** As llama-server's --slot-prompt-similarity: below this shared fraction, take the LRU slot instead. */
export const PREFIX_SIMILARITY = 0.1;
const SERVICE_TIME_SAMPLES = 32;
const DEFAULT_SERVICE_MS = 5000;

type Waiter = {
  prompt: readonly number[];
  resolve: (slot: number) => void;
  reject: (error: Error) => void;
};

export type SchedulerStats = { slotsTotal: number; slotsBusy: number; queued: number; queueCapacity: number };

export class SlotScheduler {
  private readonly busy: boolean[];
  private readonly lastUsed: number[];
  private readonly waiting: Waiter[] = [];
  private readonly serviceTimesMs: number[] = [];
  private useCounter = 0;

  constructor(
    slotCount: number,
    private readonly queueCapacity: number,
    /** Per slot, how many leading tokens of a prompt its cache holds (read when choosing one). */
    private readonly sharedPrefixes: (prompt: readonly number[]) => readonly number[],
  ) {
    this.busy = Array.from({ length: slotCount }, () => false);
    this.lastUsed = Array.from({ length: slotCount }, () => 0);
  }

  get slotCount(): number {
    return this.busy.length;
  }

  isBusy(slot: number): boolean {
    return this.busy[slot] ?? false;
  }

  stats(): SchedulerStats {
    return { slotsTotal: this.busy.length, slotsBusy: this.busy.filter(Boolean).length, queued: this.waiting.length, queueCapacity: this.queueCapacity };
  }

  /**
   * Resolves with a slot now reserved for the caller. Waits in FIFO order when none is free; a full
   * queue is a 429 whose Retry-After reflects the queue ahead. `abortError` says why an aborted wait ended.
   */
  acquire(prompt: readonly number[], signal: AbortSignal, abortError: () => Error): Promise<number> {
    if (signal.aborted) return Promise.reject(abortError());
    const free = this.waiting.length === 0 ? this.pick(prompt) : undefined;
    if (free !== undefined) {
      this.busy[free] = true;
      return Promise.resolve(free);
    }
    if (this.waiting.length >= this.queueCapacity) {
      return Promise.reject(new EngineError("queue_full",
        `All ${this.busy.length} slots are busy and ${this.waiting.length} requests are waiting.`, 429, undefined,
        this.retryAfterSeconds(this.waiting.length)));
    }
    return new Promise<number>((resolve, reject) => {
      const onAbort = () => {
        const index = this.waiting.indexOf(waiter);
        if (index >= 0) this.waiting.splice(index, 1);
        reject(abortError());
      };
      const waiter: Waiter = {
        prompt,
        resolve: (slot) => { signal.removeEventListener("abort", onAbort); resolve(slot); },
        reject: (error) => { signal.removeEventListener("abort", onAbort); reject(error); },
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  /**
   * Takes one named slot for a slot action (llama-server's save/restore/erase) when it is free: no generation
   * starts on it until `release`. False when a request holds it.
   */
  reserve(slot: number): boolean {
    if (this.busy[slot] !== false) return false;
    this.busy[slot] = true;
    return true;
  }

  /** Frees a slot and hands it (or a better-matching free one) to the first waiter. */
  release(slot: number): void {
    this.busy[slot] = false;
    this.lastUsed[slot] = ++this.useCounter;
    const next = this.waiting.shift();
    if (next === undefined) return;
    const chosen = this.pick(next.prompt) ?? slot;
    this.busy[chosen] = true;
    next.resolve(chosen);
  }

  /** A finished request's time from admission to end, for Retry-After. */
  recordServiceTime(ms: number): void {
    this.serviceTimesMs.push(ms);
    if (this.serviceTimesMs.length > SERVICE_TIME_SAMPLES) this.serviceTimesMs.shift();
  }

  /**
   * About when a request with `queuedAhead` requests in front of it would start: the queue drains
   * `slots` requests per mean service time (1..60 s).
   */
  retryAfterSeconds(queuedAhead: number): number {
    const samples = this.serviceTimesMs;
    const mean = samples.length === 0 ? DEFAULT_SERVICE_MS : samples.reduce((a, b) => a + b, 0) / samples.length;
    const waitMs = ((queuedAhead + 1) / this.busy.length) * mean;
    return Math.min(60, Math.max(1, Math.ceil(waitMs / 1000)));
  }

  /** Fails every waiting request (shutdown). */
  rejectWaiting(error: () => Error): void {
    for (const waiter of this.waiting.splice(0)) waiter.reject(error());
  }

  /**
   * The free slot whose cached tokens share the longest prefix with the prompt. When even the best
   * shares under a tenth of the prompt, the least recently used free slot is taken instead, so one
   * conversation's cache is not evicted for a stranger.
   */
  pick(prompt: readonly number[]): number | undefined {
    let lru: number | undefined;
    let best: number | undefined;
    let bestShared = -1;
    const prefixes = this.busy.some((b) => !b) ? this.sharedPrefixes(prompt) : [];
    for (let slot = 0; slot < this.busy.length; slot++) {
      if (this.busy[slot]) continue;
      if (lru === undefined || (this.lastUsed[slot] ?? 0) < (this.lastUsed[lru] ?? 0)) lru = slot;
      const shared = prefixes[slot] ?? 0;
      if (shared > bestShared) {
        best = slot;
        bestShared = shared;
      }
    }
    if (best === undefined) return undefined;
    return bestShared >= PREFIX_SIMILARITY * prompt.length ? best : lru;
  }
}
