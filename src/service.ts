// The engines behind the HTTP layer and whether they are ready. Routes ask `engines()`; before the
// models are loaded and warmed up that answers 503 with Retry-After.
import type { ChatEngine } from "./engine/chat.js";
import type { EmbedEngine } from "./engine/embed.js";
import { EngineError } from "./engine/errors.js";
import type { ServedModels } from "./engine/servedModels.js";

/** `models`: both models' names, GGUF details and tokenizers (every API resolves model names there). */
export type Engines = { chat: ChatEngine; embed: EmbedEngine; models: ServedModels };
export type ServiceStatus = "loading" | "ready" | "stopping" | "failed";

export class ServiceState {
  private current: Engines | null = null;
  private state: ServiceStatus = "loading";
  private readonly engineListeners: ((engines: Engines) => void)[] = [];
  readonly startedAt = Date.now();

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
    this.state = "ready";
  }

  markStopping(): void {
    this.state = "stopping";
  }

  markFailed(): void {
    this.state = "failed";
  }

  /** The engines, or a 503 that says why they cannot be used yet. */
  engines(): Engines {
    if (this.state === "ready" && this.current !== null) return this.current;
    if (this.state === "stopping") throw new EngineError("shutting_down", "The service is shutting down.", 503, undefined, 5);
    throw new EngineError("not_ready", "The models are still loading; try again shortly.", 503, undefined, 5);
  }

  /** Loaded engines even before /ready (for the warm-up and for the start log). */
  loaded(): Engines | null {
    return this.current;
  }
}
