// Errors the engine raises for a request. The HTTP layer maps them to status codes; the engine
// never knows about HTTP beyond the `status` hint each kind carries.

export type EngineErrorCode =
  | "context_length_exceeded"
  | "invalid_request"
  | "model_not_found"
  | "queue_full"
  | "deadline_exceeded"
  | "cancelled"
  | "not_ready"
  | "shutting_down"
  | "slot_busy";

export class EngineError extends Error {
  override readonly name = "EngineError";
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    readonly status: number,
    /** The request field at fault, as a JSON path such as `messages` or `texts[3]`. */
    readonly field?: string,
    /** Seconds a client should wait before trying again (429/503). */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

export const invalidRequest = (message: string, field?: string) => new EngineError("invalid_request", message, 400, field);
