// A typed client for the seed API (/api/llm/generate, /api/llm/embed), for the app's backend: per
// attempt timeouts, retries with backoff on connection errors, 429 and 503 honouring Retry-After,
// never a retry once tokens reached the caller, streaming as an async iterator, and a fallback hook
// (the seed's rag_service.py answers from elsewhere when the LLM service is down).
// Import it as `bora-llm-service/client`; it needs only Node's fetch (Node >= 20), no other package.
import type { EmbedResponse, GenerateBody, GenerateResponse } from "../http/schemas/llm.js";

export type { EmbedResponse, GenerateResponse };

/** A generate request: the seed's fields; max_new_tokens, temperature and top_p take the service's defaults. */
export type GenerateInput = Omit<GenerateBody, "stream" | "max_new_tokens" | "temperature" | "top_p">
  & Partial<Pick<GenerateBody, "max_new_tokens" | "temperature" | "top_p">>;

export type StreamEvent =
  | { type: "delta"; text: string }
  | { type: "reasoning"; text: string }
  | { type: "done"; response: GenerateResponse };

/**
 * Per call: cancel it; give it the id that follows it into the service's log (x-request-id, kept across
 * retries); name the conversation it belongs to (`sessionId`, sent as X-Session-Id), so a load balancer
 * sends every turn to the replica that holds its prompt prefix (deploy/nginx/nginx.conf hashes on it).
 */
export type CallOptions = { signal?: AbortSignal; requestId?: string; sessionId?: string };

/** The header deploy/nginx/nginx.conf (and the Kubernetes ingress) route a conversation by. */
export const SESSION_HEADER = "x-session-id";

export type RetryInfo = {
  /** The attempt that failed (1 = the first). */
  attempt: number;
  /** How long the client waits before the next attempt: Retry-After when the service sent one. */
  delayMs: number;
  /** True when delayMs came from the service's Retry-After header. */
  fromRetryAfter: boolean;
  error: LlmClientError;
};

export type LlmFallback = {
  /** Answers when the service cannot (down, overloaded past the retries, 5xx, timeout). Not for 4xx. */
  generate?: (request: GenerateInput, error: LlmClientError) => GenerateResponse | Promise<GenerateResponse>;
  embed?: (texts: readonly string[], error: LlmClientError) => EmbedResponse | Promise<EmbedResponse>;
};

export type LlmClientOptions = {
  /** e.g. http://llm:8001 */
  baseUrl: string;
  /** Sent as Authorization: Bearer (LLM_API_KEY on the service). */
  apiKey?: string;
  /**
   * Per attempt. generate/embed: the whole request. stream: until the first event and between events
   * (a long answer may take minutes, a silent connection may not). Default 60 s, the seed's httpx timeout.
   */
  timeoutMs?: number;
  retry?: {
    /** Attempts in all, the first included (default 4). */
    attempts?: number;
    /** Backoff when the service gave no Retry-After: base * 2^(attempt-1), jittered, capped (defaults 250 ms, 8 s). */
    baseDelayMs?: number;
    maxDelayMs?: number;
    /** A Retry-After longer than this is not waited for: the call fails (or falls back) at once. Default 30 s. */
    maxRetryAfterMs?: number;
  };
  fallback?: LlmFallback;
  /** Called before each retry (logging, metrics). */
  onRetry?: (info: RetryInfo) => void;
  headers?: Record<string, string>;
  fetch?: typeof fetch;
};

/** Every failure the client reports; `attempts` says how many requests were made. */
export class LlmClientError extends Error {
  override name = "LlmClientError";
  attempts = 1;
}

/** The service answered with an error status; code and field come from its error body. */
export class LlmHttpError extends LlmClientError {
  override name = "LlmHttpError";
  constructor(readonly status: number, readonly code: string, message: string, readonly field?: string, readonly retryAfterMs?: number) {
    super(message);
  }
}

/** No response: refused, reset, DNS, or the socket died before any token arrived. */
export class LlmConnectionError extends LlmClientError {
  override name = "LlmConnectionError";
}

export class LlmTimeoutError extends LlmClientError {
  override name = "LlmTimeoutError";
}

/**
 * A stream failed after tokens reached the caller. It is never retried: a second answer would repeat
 * or contradict what the user already saw. `partialText` is the answer so far.
 */
export class LlmStreamInterruptedError extends LlmClientError {
  override name = "LlmStreamInterruptedError";
  constructor(message: string, readonly partialText: string, override readonly cause: LlmClientError) {
    super(message);
  }
}

type Attempt<T> = (signal: AbortSignal, timeout: AttemptTimeout) => Promise<T>;

/** Failures worth another attempt, and how long the service asked us to wait. */
function retryPlan(error: LlmClientError): { retry: boolean; retryAfterMs?: number } {
  if (error instanceof LlmConnectionError) return { retry: true };
  if (error instanceof LlmHttpError) {
    // 502: the proxy could not reach a replica (nginx already tried the others).
    if (error.status === 429 || error.status === 503 || error.status === 502) return { retry: true, retryAfterMs: error.retryAfterMs };
  }
  return { retry: false };
}

/** Retry-After as seconds or an HTTP date. */
export function parseRetryAfter(header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === "") return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - now);
}

/** A timer that aborts an attempt; restartable, for the stream's idle timeout. */
class AttemptTimeout {
  readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly ms: number) {
    this.restart();
  }
  restart(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.controller.abort(), this.ms);
  }
  clear(): void {
    clearTimeout(this.timer);
  }
  get fired(): boolean {
    return this.controller.signal.aborted;
  }
}

async function errorFromResponse(response: Response): Promise<LlmHttpError> {
  const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`;
  let field: string | undefined;
  try {
    const body = await response.json() as { error?: { code?: unknown; message?: unknown; field?: unknown } | string };
    if (typeof body.error === "string") message = body.error;
    else if (body.error) {
      if (typeof body.error.code === "string") code = body.error.code;
      if (typeof body.error.message === "string") message = body.error.message;
      if (typeof body.error.field === "string") field = body.error.field;
    }
  } catch { /* not JSON (a proxy's page): keep the status line */ }
  return new LlmHttpError(response.status, code, message, field, retryAfterMs);
}

export class LlmClient {
  private readonly baseUrl: string;
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly fetchImpl: typeof fetch;

  constructor(private readonly options: LlmClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.timeoutMs = options.timeoutMs ?? 60_000;
    this.attempts = Math.max(1, options.retry?.attempts ?? 4);
    this.baseDelayMs = options.retry?.baseDelayMs ?? 250;
    this.maxDelayMs = options.retry?.maxDelayMs ?? 8_000;
    this.maxRetryAfterMs = options.retry?.maxRetryAfterMs ?? 30_000;
    this.fetchImpl = options.fetch ?? fetch;
  }

  /** The whole answer at once. */
  async generate(request: GenerateInput, { signal, requestId, sessionId }: CallOptions = {}): Promise<GenerateResponse> {
    try {
      return await this.withRetries(signal, async (attemptSignal) => {
        const response = await this.post("/api/llm/generate", { ...request, stream: false }, attemptSignal, requestId, sessionId);
        return await response.json() as GenerateResponse;
      });
    } catch (error) {
      return this.fallBack(error, signal, this.options.fallback?.generate && ((e) => this.options.fallback!.generate!(request, e)));
    }
  }

  /** Vectors in input order, L2-normalised. */
  async embed(texts: readonly string[], { signal, requestId, sessionId, model }: CallOptions & { model?: string } = {}): Promise<EmbedResponse> {
    try {
      return await this.withRetries(signal, async (attemptSignal) => {
        const response = await this.post("/api/llm/embed", { texts, ...(model ? { model } : {}) }, attemptSignal, requestId, sessionId);
        return await response.json() as EmbedResponse;
      });
    } catch (error) {
      return this.fallBack(error, signal, this.options.fallback?.embed && ((e) => this.options.fallback!.embed!(texts, e)));
    }
  }

  /**
   * The answer as it is generated: `delta` (and `reasoning`) events, then one `done` with the full
   * response. Retried like generate until the first token arrives, never after; with a fallback, a
   * failure before the first token yields the fallback's answer as one delta and a done.
   */
  async *stream(request: GenerateInput, { signal, requestId, sessionId }: CallOptions = {}): AsyncGenerator<StreamEvent> {
    let delivered = "";
    let producedTokens = false;
    // Stops the attempt when the caller leaves the loop early (break, return, throw).
    const stop = new AbortController();
    const combined = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
    const events: StreamEvent[] = [];
    let wake: (() => void) | undefined;
    let finished = false;
    let failure: unknown;

    // The attempts run in the background and push events; the generator hands them out. An attempt
    // that has already pushed a token is final: its failure becomes a LlmStreamInterruptedError.
    const run = this.withRetries(combined, async (attemptSignal, timeout) => {
      let sawDone = false;
      const response = await this.post("/api/llm/generate", { ...request, stream: true }, attemptSignal, requestId, sessionId);
      timeout.restart();
      try {
        for await (const event of readSse(response.body!)) {
          timeout.restart();
          if (event.event === "delta" || event.event === "reasoning") {
            const text = (JSON.parse(event.data) as { text: string }).text;
            producedTokens = true;
            if (event.event === "delta") delivered += text;
            events.push({ type: event.event, text });
          } else if (event.event === "done") {
            sawDone = true;
            events.push({ type: "done", response: JSON.parse(event.data) as GenerateResponse });
          } else if (event.event === "error") {
            const { error } = JSON.parse(event.data) as { error: { code: string; message: string } };
            // A drain or a deadline can end a stream with an event instead of a status: 503 semantics.
            throw new LlmHttpError(error.code === "shutting_down" ? 503 : 500, error.code, error.message);
          }
          wake?.();
        }
        if (!sawDone) throw new LlmConnectionError("The stream ended without its done event");
      } catch (error) {
        if (timeout.fired && !signal?.aborted) throw new LlmTimeoutError(`No event from the LLM service for ${this.timeoutMs} ms`);
        if (producedTokens) throw new LlmStreamInterruptedError(`The stream failed after tokens were delivered: ${(error as Error).message}`, delivered, toClientError(error));
        throw toClientError(error);
      }
    }, () => !producedTokens).then(
      () => { finished = true; wake?.(); },
      (error: unknown) => { failure = error; finished = true; wake?.(); },
    );

    try {
      while (true) {
        if (events.length > 0) {
          yield events.shift()!;
          continue;
        }
        if (finished) break;
        await new Promise<void>((resolve) => { wake = resolve; });
        wake = undefined;
      }
    } finally {
      if (!finished) stop.abort(new Error("the caller stopped reading the stream"));
    }
    await run;
    if (failure === undefined) return;
    const fallback = this.options.fallback?.generate;
    if (producedTokens || !fallback || !isFallbackCase(failure, signal)) throw failure;
    const response = await fallback(request, failure as LlmClientError);
    yield { type: "delta", text: response.answer };
    yield { type: "done", response };
  }

  private async post(path: string, body: unknown, signal: AbortSignal, requestId: string | undefined, sessionId: string | undefined): Promise<Response> {
    let response: Response;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${path}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {}),
          ...this.options.headers,
          ...(requestId ? { "x-request-id": requestId } : {}),
          ...(sessionId ? { [SESSION_HEADER]: sessionId } : {}),
        },
        body: JSON.stringify(body),
        signal,
      });
    } catch (error) {
      throw toClientError(error);
    }
    if (!response.ok) throw await errorFromResponse(response);
    return response;
  }

  /**
   * Runs `attempt` until it succeeds, fails for good, or the attempts run out. `mayRetry` lets a
   * stream refuse once it has delivered tokens.
   */
  private async withRetries<T>(signal: AbortSignal | undefined, attempt: Attempt<T>, mayRetry: () => boolean = () => true): Promise<T> {
    for (let n = 1; ; n++) {
      signal?.throwIfAborted();
      const timeout = new AttemptTimeout(this.timeoutMs);
      const attemptSignal = signal ? AbortSignal.any([signal, timeout.controller.signal]) : timeout.controller.signal;
      try {
        return await attempt(attemptSignal, timeout);
      } catch (raw) {
        if (signal?.aborted) throw signal.reason;
        // Our own timer aborted the fetch (which then looks like a connection error): a timeout.
        const error = timeout.fired && !(raw instanceof LlmStreamInterruptedError)
          ? new LlmTimeoutError(`The LLM service did not answer within ${this.timeoutMs} ms`)
          : toClientError(raw);
        error.attempts = n;
        const plan = retryPlan(error);
        const delayMs = plan.retryAfterMs ?? this.backoffMs(n);
        if (!plan.retry || !mayRetry() || n >= this.attempts || (plan.retryAfterMs ?? 0) > this.maxRetryAfterMs) throw error;
        this.options.onRetry?.({ attempt: n, delayMs, fromRetryAfter: plan.retryAfterMs !== undefined, error });
        await sleep(delayMs, signal);
      } finally {
        timeout.clear();
      }
    }
  }

  private backoffMs(attempt: number): number {
    const exponential = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
    // "Equal jitter": at least half the delay, so replicas restarting together are not hit in step.
    return Math.round(exponential / 2 + Math.random() * (exponential / 2));
  }

  private async fallBack<T>(error: unknown, signal: AbortSignal | undefined, fallback: ((e: LlmClientError) => T | Promise<T>) | undefined): Promise<T> {
    if (!fallback || !isFallbackCase(error, signal)) throw error;
    return fallback(error as LlmClientError);
  }
}

/** The service is unavailable (not the caller's mistake): connection, timeout, 429/5xx. */
function isFallbackCase(error: unknown, signal: AbortSignal | undefined): boolean {
  if (signal?.aborted || !(error instanceof LlmClientError)) return false;
  if (error instanceof LlmHttpError) return error.status === 429 || error.status >= 500;
  return true;
}

function toClientError(error: unknown): LlmClientError {
  if (error instanceof LlmClientError) return error;
  // fetch (undici) rejects with a TypeError whose cause names the socket error (ECONNREFUSED, …).
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  const detail = cause?.code ?? cause?.message ?? (error as Error).message;
  const wrapped = new LlmConnectionError(`Could not reach the LLM service: ${detail}`);
  wrapped.cause = error;
  return wrapped;
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { signal?.removeEventListener("abort", onAbort); resolve(); }, ms);
    const onAbort = () => { clearTimeout(timer); reject(signal!.reason); };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Server-sent events from a fetch body; multi-byte characters split across chunks are kept whole. */
async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<{ event: string; data: string }> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n/g, "\n");
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length > 0) yield { event, data: data.join("\n") };
    }
  }
}
