// A minimal HTTP client on node:http, used identically for both servers so client overhead is equal.
// Event arrival times are taken when each chunk of the response body is read.
import http from "node:http";

export type SseEvent = { event: string; data: string; atMs: number };

/**
 * A connection per request for generation and embedding calls: llama-server closes a connection after a
 * streamed response, and a pooled socket that the server is closing fails the next request ("socket hang
 * up"). Loopback connection setup (~0.1 ms) is negligible next to what those calls measure. Only the
 * /health load uses keep-alive, on its own agent.
 */
const connectionPerRequest = new http.Agent({ keepAlive: false, maxSockets: Infinity });

/** A generation of 128 tokens takes ~6 s alone and ~30 s with 4 at once here; 2 minutes means stuck. */
export const DEFAULT_TIMEOUT_MS = 120_000;

export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(readonly status: number, readonly body: string, url: string) {
    super(`${url} answered ${status}: ${body.slice(0, 300)}`);
  }
}

/** A request that got no complete answer in time: the server is stuck (or far slower than expected). */
export class RequestTimeoutError extends Error {
  override readonly name = "RequestTimeoutError";
  constructor(url: string, ms: number) {
    super(`${url}: no complete answer within ${ms / 1000} s`);
  }
}

type RequestOptions = { method: "GET" | "POST"; body?: unknown; signal?: AbortSignal; agent?: http.Agent };

/** Runs `work` under a deadline covering the whole exchange (body included); a timeout becomes RequestTimeoutError. */
async function withDeadline<T>(url: string, timeoutMs: number, signal: AbortSignal | undefined, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const deadline = AbortSignal.timeout(timeoutMs);
  try {
    return await work(signal ? AbortSignal.any([deadline, signal]) : deadline);
  } catch (error) {
    if (deadline.aborted) throw new RequestTimeoutError(url, timeoutMs);
    throw error;
  }
}

function send(url: string, options: RequestOptions): Promise<http.IncomingMessage> {
  const payload = options.body === undefined ? undefined : Buffer.from(JSON.stringify(options.body));
  return new Promise((resolve, reject) => {
    const request = http.request(url, {
      method: options.method,
      agent: options.agent ?? connectionPerRequest,
      signal: options.signal,
      headers: payload ? { "content-type": "application/json", "content-length": payload.length } : {},
    }, resolve);
    request.on("error", reject);
    request.end(payload);
  });
}

async function readBody(response: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

export function postJson<T>(url: string, body: unknown, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<T> {
  return withDeadline(url, timeoutMs, undefined, async (signal) => {
    const response = await send(url, { method: "POST", body, signal });
    const text = await readBody(response);
    if (response.statusCode !== 200) throw new HttpError(response.statusCode ?? 0, text, url);
    return JSON.parse(text) as T;
  });
}

/** GET returning the status only (body drained so the socket goes back to the pool). */
export function getStatus(url: string, agent: http.Agent, timeoutMs = 30_000): Promise<number> {
  return withDeadline(url, timeoutMs, undefined, async (signal) => {
    const response = await send(url, { method: "GET", agent, signal });
    response.resume();
    await new Promise<void>((resolve, reject) => { response.once("end", resolve); response.once("error", reject); });
    return response.statusCode ?? 0;
  });
}

/**
 * POSTs and reads a server-sent-events response, calling onEvent as each event arrives (stamped with
 * performance.now() at the read of the chunk that completed it). Resolves when the stream ends.
 */
export function postSse(url: string, body: unknown, onEvent: (e: SseEvent) => void, signal?: AbortSignal, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
  return withDeadline(url, timeoutMs, signal, async (combined) => {
    const response = await send(url, { method: "POST", body, signal: combined });
    if (response.statusCode !== 200) throw new HttpError(response.statusCode ?? 0, await readBody(response), url);
    response.setEncoding("utf8");
    let buffer = "";
    for await (const chunk of response) {
      const atMs = performance.now();
      buffer += (chunk as string).replace(/\r\n/g, "\n");
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = parseSseBlock(block, atMs);
        if (event) onEvent(event);
      }
    }
  });
}

function parseSseBlock(block: string, atMs: number): SseEvent | null {
  let event = "message";
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return data.length === 0 ? null : { event, data: data.join("\n"), atMs };
}
