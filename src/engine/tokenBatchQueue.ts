// The queue in front of a batched native decode (embeddings, rerank pairs): inputs from any number of
// requests wait here, and one drain loop hands each decode as many of them as fit by count and tokens,
// so concurrent requests share batches instead of queueing behind each other's decodes.
import { AsyncLocalStorage } from "node:async_hooks";
import { EngineError } from "./errors.js";

/** How much one decode takes; read on every batch (the backend's own getters). */
export type BatchLimits = { readonly maxSequences: number; readonly batchTokens: number };

/**
 * Told when a decode batch starts; may return a callback for when it ends (tracing times the batch). It runs
 * in the async context of the batch's first input, so a trace span lands under the request that input came from.
 */
export type BatchListener = (inputs: number, tokens: number) => void | ((failed: boolean) => void);

type Pending<R> = { tokens: Uint32Array; resolve: (result: R) => void; reject: (error: Error) => void; inContext: <T>(fn: () => T) => T };

export class TokenBatchQueue<R> {
  private readonly pending: Pending<R>[] = [];
  private draining = false;
  private closedFlag = false;
  private readonly batchListeners = new Set<BatchListener>();

  /** `decode` returns one result per input, in order; a throw rejects that batch's inputs only. */
  constructor(private readonly limits: BatchLimits, private readonly decode: (batch: Uint32Array[]) => Promise<R[]>) {}

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Called for every decode batch with its input and token counts (metrics: batch sizes; tracing: its span). */
  onBatch(listener: BatchListener): () => void {
    this.batchListeners.add(listener);
    return () => this.batchListeners.delete(listener);
  }

  enqueue(tokens: Uint32Array): Promise<R> {
    return new Promise((resolve, reject) => {
      if (this.closedFlag) return reject(shuttingDown());
      this.pending.push({ tokens, resolve, reject, inContext: AsyncLocalStorage.snapshot() });
      void this.drain();
    });
  }

  /** Refuses what waits and anything enqueued later; a decode already running finishes. */
  close(): void {
    this.closedFlag = true;
    for (const p of this.pending.splice(0)) p.reject(shuttingDown());
  }

  private async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    // Start one microtask later: every input the caller enqueues in this tick joins the first batch
    // (started synchronously, the first input of each request was decoded alone).
    await Promise.resolve();
    try {
      while (this.pending.length > 0) {
        const batch = this.takeBatch();
        const tokens = batch.reduce((sum, p) => sum + p.tokens.length, 0);
        const ends = batch[0]!.inContext(() => [...this.batchListeners].map((listener) => listener(batch.length, tokens)));
        try {
          const results = await this.decode(batch.map((p) => p.tokens));
          for (const end of ends) if (typeof end === "function") end(false);
          batch.forEach((p, i) => p.resolve(results[i]!));
        } catch (error) {
          for (const end of ends) if (typeof end === "function") end(true);
          for (const p of batch) p.reject(error as Error);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private takeBatch(): Pending<R>[] {
    let tokens = 0;
    let count = 0;
    while (count < this.pending.length && count < this.limits.maxSequences) {
      const next = this.pending[count]!.tokens.length;
      if (count > 0 && tokens + next > this.limits.batchTokens) break;
      tokens += next;
      count++;
    }
    return this.pending.splice(0, count);
  }
}

const shuttingDown = () => new EngineError("shutting_down", "The service is shutting down.", 503);
