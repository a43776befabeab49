// Graceful drain: what a rolling update needs from one replica. /ready turns 503 at once (the load
// balancer stops sending), new model requests get 503 + Retry-After while the port stays open,
// running requests finish, and only past the deadline is what is left cancelled, with an error the
// client can read (an SSE `error` event, or a 503 body) instead of a cut connection.
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { ServiceState } from "./service.js";

export type DrainOptions = {
  /** How long running requests may go on (DRAIN_TIMEOUT_MS). */
  timeoutMs: number;
  /** After cancelling, how long the cancelled responses get to write their error and close. */
  cancelGraceMs?: number;
  log?: Pick<Logger, "info" | "warn">;
};

export type DrainOutcome = {
  /** True when every request ended on its own before the deadline. */
  finished: boolean;
  /** Requests still open at the deadline (cancelled). */
  cancelled: number;
  ms: number;
};

const DEFAULT_CANCEL_GRACE_MS = 5_000;

export async function drain(state: ServiceState, { timeoutMs, cancelGraceMs = DEFAULT_CANCEL_GRACE_MS, log }: DrainOptions): Promise<DrainOutcome> {
  const started = performance.now();
  state.markStopping();
  log?.info({ inFlight: state.inFlight, drainTimeoutMs: timeoutMs }, "draining: /ready is 503, new requests get 503, running requests finish");
  const timer = new AbortController();
  const finished = await Promise.race([
    state.whenIdle().then(() => true),
    sleep(timeoutMs, false, { signal: timer.signal }).catch(() => false),
  ]);
  timer.abort();
  let cancelled = 0;
  if (!finished) {
    cancelled = state.inFlight;
    log?.warn({ inFlight: cancelled, drainTimeoutMs: timeoutMs }, "drain deadline passed: cancelling what is still running");
    state.cancelRunning();
    const grace = new AbortController();
    await Promise.race([state.whenIdle(), sleep(cancelGraceMs, undefined, { signal: grace.signal }).catch(() => undefined)]);
    grace.abort();
  }
  const ms = Math.round(performance.now() - started);
  log?.info({ finished, cancelled, ms }, "drained");
  return { finished, cancelled, ms };
}
