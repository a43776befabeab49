// @ts-check
// Talking to the service from the page: JSON calls, server-sent events, the API key and error text.
// No DOM here (only fetch and streams), so Node runs these functions in the tests as the browser does.

/** An error answered by the service, worded as the service worded it. */
export class ServiceError extends Error {
  /**
   * @param {number} status HTTP status (0: no answer at all)
   * @param {string} message the service's own message
   * @param {string | undefined} code machine-readable kind when the body had one
   * @param {string | undefined} field the request field at fault when the body named one
   */
  constructor(status, message, code, field) {
    super(message);
    this.name = "ServiceError";
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

/**
 * The message of any error body the service sends: the seed API's `{error: {code, message, field}}`,
 * OpenAI's `{error: {message, type, param, code}}`, Ollama's `{error: "text"}`, Fastify's own
 * `{statusCode, error, message}`, or an SSE `error` event's data (the same shapes).
 * @param {unknown} body parsed JSON, or the raw text when it was not JSON
 * @param {number} status
 * @returns {ServiceError}
 */
export function toServiceError(body, status) {
  /** @param {unknown} v */
  const text = (v) => (typeof v === "string" && v.trim() !== "" ? v : undefined);
  if (body !== null && typeof body === "object") {
    const record = /** @type {Record<string, unknown>} */ (body);
    const inner = record.error;
    if (inner !== null && typeof inner === "object") {
      const e = /** @type {Record<string, unknown>} */ (inner);
      const message = text(e.message);
      if (message !== undefined) return new ServiceError(status, message, text(e.code) ?? text(e.type), text(e.field) ?? text(e.param));
    }
    // Fastify puts the status text in `error` and the explanation in `message`; Ollama has `error` only.
    const flat = text(record.message) ?? text(inner) ?? text(record.detail);
    if (flat !== undefined) return new ServiceError(status, flat, text(record.code), undefined);
  }
  const raw = text(body);
  return new ServiceError(status, raw ?? `HTTP ${status} with no error message`, undefined, undefined);
}

/**
 * Splits a server-sent event stream into events. Feed it text as it arrives; it returns the events
 * completed so far and keeps the unfinished tail for the next chunk (an event may span chunks).
 */
export class SseParser {
  constructor() {
    this.buffer = "";
    /** A chunk that ended in "\r" may continue with "\n": one line break, not two. */
    this.pendingCr = false;
  }

  /**
   * @param {string} chunk
   * @returns {{ event: string, data: string }[]}
   */
  push(chunk) {
    let text = (this.pendingCr ? "\r" : "") + chunk;
    this.pendingCr = text.endsWith("\r");
    if (this.pendingCr) text = text.slice(0, -1);
    this.buffer += text.replace(/\r\n?/g, "\n");
    /** @type {{ event: string, data: string }[]} */
    const events = [];
    let end;
    while ((end = this.buffer.indexOf("\n\n")) !== -1) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      let event = "message";
      /** @type {string[]} */
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a comment (keep-alive)
        const colon = line.indexOf(":");
        const name = colon === -1 ? line : line.slice(0, colon);
        const value = colon === -1 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "event") event = value;
        else if (name === "data") data.push(value);
      }
      if (data.length > 0) events.push({ event, data: data.join("\n") });
    }
    return events;
  }
}

/**
 * Calls the service with the API key (when one is set) as `Authorization: Bearer`. Non-2xx answers
 * become a ServiceError carrying the service's own message.
 */
export class ApiClient {
  /**
   * @param {string} baseUrl "" for the page's own origin
   * @param {() => string | null} apiKey read on every call, so a key entered later is used at once
   */
  constructor(baseUrl, apiKey) {
    this.baseUrl = baseUrl;
    this.apiKey = apiKey;
  }

  /**
   * @param {string} path
   * @param {{ method?: string, body?: unknown, signal?: AbortSignal, accept?: string }} [options]
   * @returns {Promise<Response>}
   */
  async request(path, options = {}) {
    /** @type {Record<string, string>} */
    const headers = { accept: options.accept ?? "application/json" };
    const key = this.apiKey();
    if (key) headers.authorization = `Bearer ${key}`;
    if (options.body !== undefined) headers["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(this.baseUrl + path, {
        method: options.method ?? (options.body === undefined ? "GET" : "POST"),
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal: options.signal,
      });
    } catch (error) {
      if (error instanceof DOMException && error.name === "AbortError") throw error;
      throw new ServiceError(0, `The service did not answer (${error instanceof Error ? error.message : String(error)}).`, "network_error", undefined);
    }
    if (!response.ok) {
      const raw = await response.text();
      let body = /** @type {unknown} */ (raw);
      try { body = JSON.parse(raw); } catch { /* not JSON: the text is the message */ }
      throw toServiceError(body, response.status);
    }
    return response;
  }

  /**
   * @param {string} path
   * @param {unknown} [body]
   * @returns {Promise<unknown>}
   */
  async json(path, body) {
    const response = await this.request(path, { body });
    return /** @type {unknown} */ (await response.json());
  }

  /**
   * POSTs `body` and yields the server-sent events as they arrive. Aborting `signal` closes the
   * connection, which is what tells the service to stop generating and free the slot.
   * @param {string} path
   * @param {unknown} body
   * @param {AbortSignal} signal
   * @returns {AsyncGenerator<{ event: string, data: unknown }>}
   */
  async *stream(path, body, signal) {
    const response = await this.request(path, { body, signal, accept: "text/event-stream" });
    if (response.body === null) throw new ServiceError(response.status, "The service sent no stream.", undefined, undefined);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        for (const { event, data } of parser.push(value)) {
          if (data === "[DONE]") return;
          yield { event, data: /** @type {unknown} */ (JSON.parse(data)) };
        }
      }
    } finally {
      // Ends the connection when the consumer stops early; a no-op after the stream's own end.
      await reader.cancel().catch(() => undefined);
    }
  }
}
