// The queue in front of a batched native decode (embeddings, rerank pairs): the inputs of every admitted
// request wait here, and one drain loop builds each decode from the waiting requests in turn, so a short
// query never waits behind a bulk request. Bounded (429 + Retry-After beyond it) and cancellable: a
// request whose signal aborts loses its waiting inputs at once, and its share of a running decode is
// dropped when that decode returns. The policy, with numbers, is in docs/http-lifecycle.md (Retrieval).
import { AsyncLocalStorage } from "node:async_hooks";
import { EngineError } from "./errors.js";

/** How much one decode takes; read on every batch (the backend's own getters). */
export type BatchLimits = { readonly maxSequences: number; readonly batchTokens: number };

/**
 * Told when a decode batch starts; may return a callback for when it ends (tracing times the batch). It runs
 * in the async context of the request whose input leads the batch, so a trace span lands under that request.
 */
export type BatchListener = (inputs: number, tokens: number) => void | ((failed: boolean) => void);

/** What may be admitted and not yet answered, over every request of this queue (one model). */
export type QueueBounds = { readonly maxInputs: number; readonly maxTokens: number };

export type QueueStats = {
  /** Requests admitted and not yet answered. */
  requests: number;
  /** Their inputs not yet answered (waiting or in the running decode), and those inputs' tokens. */
  inputs: number;
  tokens: number;
  maxInputs: number;
  maxTokens: number;
};

export type RunOptions = {
  /** Aborting ends the request with the signal's reason (an EngineError: cancelled, deadline, shutdown). */
  signal?: AbortSignal;
  /** How the caller's API names its inputs, for the 429's message (`texts`, `documents`). */
  noun?: string;
};

type Job<R> = {
  readonly inputs: readonly Uint32Array[];
  readonly results: R[];
  readonly tokens: number;
  /** The next input to hand to a decode. */
  next: number;
  /** Inputs not yet answered (waiting or in a decode), and their tokens. */
  unanswered: number;
  unansweredTokens: number;
  /** Decodes that carried any of its inputs: 0 until its first. */
  decodes: number;
  /** Set once it is answered, failed or cancelled: a decode that returns later does nothing for it. */
  settled: boolean;
  /** Runs a function in the async context the request was admitted in (batch listeners: tracing). */
  inContext: <T>(fn: () => T) => T;
  resolve(results: R[]): void;
  reject(error: Error): void;
};

/** Milliseconds per token of the first decodes, before any was timed (a small CPU model's order of magnitude). */
const INITIAL_MS_PER_TOKEN = 0.5;
const RETRY_AFTER_MAX_S = 60;

export class TokenBatchQueue<R> {
  /** Admitted requests in arrival order, answered ones removed. */
  private readonly jobs: Job<R>[] = [];
  private draining = false;
  private closedFlag = false;
  /** The last decode served only requests new to the queue: the next one serves everyone. */
  private lastWasFirstDecodes = false;
  private rotation = 0;
  private unansweredInputs = 0;
  private unansweredTokens = 0;
  /** Decode speed, an exponential moving average, for Retry-After. */
  private msPerToken = INITIAL_MS_PER_TOKEN;
  private readonly batchListeners = new Set<BatchListener>();

  /** `decode` returns one result per input, in order; a throw fails the requests of that batch only. */
  constructor(
    private readonly limits: BatchLimits,
    private readonly decode: (batch: Uint32Array[]) => Promise<R[]>,
    private readonly bounds: QueueBounds = { maxInputs: Infinity, maxTokens: Infinity },
  ) {}

  get closed(): boolean {
    return this.closedFlag;
  }

  stats(): QueueStats {
    return { requests: this.jobs.length, inputs: this.unansweredInputs, tokens: this.unansweredTokens, maxInputs: this.bounds.maxInputs, maxTokens: this.bounds.maxTokens };
  }

  /** Called for every decode batch with its input and token counts (metrics: batch sizes; tracing: its span). */
  onBatch(listener: BatchListener): () => void {
    this.batchListeners.add(listener);
    return () => this.batchListeners.delete(listener);
  }

  /**
   * One request's inputs, answered in order once all are decoded. Refused with a 429 when admitting it
   * would take the queue past its bounds (a request is always admitted into an empty queue, so the
   * largest allowed request runs when nothing else does), with a 503 once the queue is closed.
   */
  run(inputs: readonly Uint32Array[], options: RunOptions = {}): Promise<R[]> {
    const { signal } = options;
    if (this.closedFlag) return Promise.reject(shuttingDown());
    if (signal?.aborted) return Promise.reject(abortReason(signal));
    if (inputs.length === 0) return Promise.resolve([]);
    const tokens = inputs.reduce((sum, input) => sum + input.length, 0);
    const overInputs = this.unansweredInputs + inputs.length - this.bounds.maxInputs;
    const overTokens = this.unansweredTokens + tokens - this.bounds.maxTokens;
    if (this.jobs.length > 0 && (overInputs > 0 || overTokens > 0)) return Promise.reject(this.queueFull(inputs.length, tokens, options.noun ?? "inputs"));

    return new Promise<R[]>((resolve, reject) => {
      const onAbort = () => this.settle(job, abortReason(signal!));
      const job: Job<R> = {
        inputs, results: new Array<R>(inputs.length), tokens, next: 0, unanswered: inputs.length, unansweredTokens: tokens, decodes: 0, settled: false, inContext: AsyncLocalStorage.snapshot(),
        resolve: (results) => { signal?.removeEventListener("abort", onAbort); resolve(results); },
        reject: (error) => { signal?.removeEventListener("abort", onAbort); reject(error); },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.jobs.push(job);
      this.unansweredInputs += inputs.length;
      this.unansweredTokens += tokens;
      void this.drain();
    });
  }

  /** Refuses what waits and anything run later; a decode already running finishes for nobody. */
  close(): void {
    this.closedFlag = true;
    for (const job of [...this.jobs]) this.settle(job, shuttingDown());
  }

  /** Ends a request: answered (`outcome` its results) or failed; its unanswered inputs leave the queue. */
  private settle(job: Job<R>, outcome: R[] | Error): void {
    if (job.settled) return;
    job.settled = true;
    this.jobs.splice(this.jobs.indexOf(job), 1);
    this.unansweredInputs -= job.unanswered;
    this.unansweredTokens -= job.unansweredTokens;
    if (outcome instanceof Error) job.reject(outcome);
    else job.resolve(outcome);
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    // Start one microtask later: every input the caller enqueues in this tick joins the first batch.
    await Promise.resolve();
    try {
      for (let batch = this.takeBatch(); batch.length > 0; batch = this.takeBatch()) {
        const tokens = batch.reduce((sum, item) => sum + item.job.inputs[item.index]!.length, 0);
        const ends = batch[0]!.job.inContext(() => [...this.batchListeners].map((listener) => listener(batch.length, tokens)));
        const end = (failed: boolean) => { for (const e of ends) if (typeof e === "function") e(failed); };
        const started = performance.now();
        let results: R[];
        try {
          results = await this.decode(batch.map((item) => item.job.inputs[item.index]!));
        } catch (error) {
          end(true);
          for (const item of batch) this.settle(item.job, error instanceof Error ? error : new Error(String(error)));
          continue;
        }
        end(false);
        this.msPerToken = 0.8 * this.msPerToken + 0.2 * ((performance.now() - started) / Math.max(1, tokens));
        batch.forEach((item, i) => {
          const { job } = item;
          // A request cancelled while its inputs were decoded: nothing more is done for it.
          if (job.settled) return;
          job.results[item.index] = results[i]!;
          job.unanswered--;
          job.unansweredTokens -= job.inputs[item.index]!.length;
          this.unansweredInputs--;
          this.unansweredTokens -= job.inputs[item.index]!.length;
          if (job.unanswered === 0) {
            job.unansweredTokens = 0;
            this.settle(job, job.results);
          }
        });
      }
    } finally {
      this.draining = false;
    }
  }

  /**
   * The next decode, by round robin over the requests with inputs waiting: one input of each in turn
   * until the decode is full (sequences, tokens). A request's first decode is its own: requests that
   * have not been in a decode yet are served first and alone, so a 1-text query costs a 1-text decode,
   * and such decodes alternate with shared ones, so a stream of new requests cannot starve the rest.
   */
  private takeBatch(): { job: Job<R>; index: number }[] {
    const waiting = this.jobs.filter((job) => job.next < job.inputs.length);
    if (waiting.length === 0) return [];
    const fresh = waiting.filter((job) => job.decodes === 0);
    const firstDecodes = fresh.length > 0 && fresh.length < waiting.length && !this.lastWasFirstDecodes;
    this.lastWasFirstDecodes = firstDecodes;
    const pool = firstDecodes ? fresh : waiting;
    const start = this.rotation++ % pool.length;
    const order = [...pool.slice(start), ...pool.slice(0, start)];

    const batch: { job: Job<R>; index: number }[] = [];
    const full = new Set<Job<R>>();
    let tokens = 0;
    for (let progress = true; progress && batch.length < this.limits.maxSequences;) {
      progress = false;
      for (const job of order) {
        if (batch.length >= this.limits.maxSequences) break;
        if (full.has(job) || job.next >= job.inputs.length) continue;
        const length = job.inputs[job.next]!.length;
        // A longer input than the batch holds is decoded alone.
        if (batch.length > 0 && tokens + length > this.limits.batchTokens) {
          full.add(job);
          continue;
        }
        batch.push({ job, index: job.next++ });
        tokens += length;
        progress = true;
      }
    }
    for (const job of new Set(batch.map((item) => item.job))) job.decodes++;
    return batch;
  }

  /** A 429 whose Retry-After is how long the work ahead takes to drain enough for this request to fit. */
  private queueFull(inputs: number, tokens: number, noun: string): EngineError {
    const overInputs = Math.max(0, this.unansweredInputs + inputs - this.bounds.maxInputs);
    const overTokens = Math.max(0, this.unansweredTokens + tokens - this.bounds.maxTokens);
    const tokensPerInput = this.unansweredTokens / Math.max(1, this.unansweredInputs);
    const waitMs = Math.max(overInputs * tokensPerInput, overTokens) * this.msPerToken;
    return new EngineError("queue_full",
      `${this.unansweredInputs} ${noun} of ${this.jobs.length} requests are queued for this model; ${inputs} more would pass its bound ` +
      `(${this.bounds.maxInputs} ${noun}, ${this.bounds.maxTokens} tokens: RETRIEVAL_QUEUE_TEXTS, RETRIEVAL_QUEUE_TOKENS).`, 429, undefined,
      Math.min(RETRY_AFTER_MAX_S, Math.max(1, Math.ceil(waitMs / 1000))));
  }
}

const shuttingDown = () => new EngineError("shutting_down", "The service is shutting down.", 503, undefined, 5);

function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new EngineError("cancelled", "The request was cancelled.", 499);
}
