// The engines behind the HTTP layer and whether they are ready. Routes ask `engines()`; before the
// models are loaded and warmed up that answers 503 with Retry-After.
import type { BindingStatus } from "./engine/binding/backgroundBuild.js";
import type { ChatEngine } from "./engine/chat/engine.js";
import type { EmbedEngine } from "./engine/embed.js";
import { EngineError } from "./engine/errors.js";
import type { ModelRegistry } from "./engine/registry.js";

/**
 * Retry-After while draining: short, because a load balancer sends the retry to another replica, and
 * without one the restarted process is back within seconds.
 */
export const DRAIN_RETRY_AFTER_S = 1;

/**
 * `models`: every served model with its names, GGUF details, tokenizer and engine (every API resolves
 * model names there). `chat` and `embed` are the default chat and embedding engines, kept at hand.
 */
export type Engines = { chat: ChatEngine; embed: EmbedEngine; models: ModelRegistry; runtime?: RuntimeSummary };
/** What /api/status reports about the native runtime (composition.ts passes its Runtime, which has these). */
export type RuntimeSummary = { backend: string; cpu: { threads: number; source: string } };
export type ServiceStatus = "loading" | "ready" | "stopping" | "failed";

export class ServiceState {
  private current: Engines | null = null;
  private state: ServiceStatus = "loading";
  private readonly engineListeners: ((engines: Engines) => void)[] = [];
  private readonly drainDeadlineController = new AbortController();
  private running = 0;
  private idleWaiters: (() => void)[] = [];
  readonly startedAt = Date.now();
  /** The binding and the fast build's state for /api/status (set by main.ts; null in tests that build the app alone). */
  bindingStatus: (() => BindingStatus) | null = null;

  /** Aborted when a drain's deadline passes: whatever still runs is cancelled with a clear error. */
  readonly drainDeadline: AbortSignal = this.drainDeadlineController.signal;

  get status(): ServiceStatus {
    return this.state;
  }

  /** Engines are set once loaded; ready only after the warm-up. */
  setEngines(engines: Engines): void {
    this.current = engines;
    for (const listener of this.engineListeners) listener(engines);
  }

  /** Runs `listener` with the engines once they are set (at once if they already are). */
  whenEngines(listener: (engines: Engines) => void): void {
    if (this.current) listener(this.current);
    else this.engineListeners.push(listener);
  }

  markReady(): void {
    if (this.current === null) throw new Error("markReady before engines are set");
    // A signal that arrived during the load wins: a stopping service never turns ready again.
    if (this.state === "loading") this.state = "ready";
  }

  /** From now on /ready is 503 and new model requests get 503 + Retry-After; running ones go on. */
  markStopping(): void {
    this.state = "stopping";
  }

  get draining(): boolean {
    return this.state === "stopping";
  }

  /** Past the drain deadline: cancels every request still running (they end with a shutting_down error). */
  cancelRunning(): void {
    this.drainDeadlineController.abort(new EngineError("shutting_down", "The service stopped before this request finished (drain deadline passed).", 503, undefined, DRAIN_RETRY_AFTER_S));
  }

  /** Counts a request until the returned function is called (once its response is closed). */
  trackRequest(): () => void {
    this.running++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.running--;
      if (this.running === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
    };
  }

  /** Requests whose responses are still open (probes excluded). */
  get inFlight(): number {
    return this.running;
  }

  /** Resolves when no request is in flight (at once when none is). */
  whenIdle(): Promise<void> {
    if (this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  markFailed(): void {
    this.state = "failed";
  }

  /** The engines, or a 503 that says why they cannot be used yet. */
  engines(): Engines {
    if (this.state === "ready" && this.current !== null) return this.current;
    if (this.state === "stopping") throw new EngineError("shutting_down", "The service is shutting down; retry (another replica will answer).", 503, undefined, DRAIN_RETRY_AFTER_S);
    throw new EngineError("not_ready", "The models are still loading; try again shortly.", 503, undefined, 5);
  }

  /** Loaded engines even before /ready (for the warm-up and for the start log). */
  loaded(): Engines | null {
    return this.current;
  }
}
