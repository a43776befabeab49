// The backend client (imported by its package name) against the real service on a real port: stream
// iteration, retries on connection refused, Retry-After on 429 and 503, no retry after tokens,
// fallback, timeouts, 4xx not retried.
import { createServer } from "node:net";
import {
  LlmClient, LlmConnectionError, LlmHttpError, LlmStreamInterruptedError, LlmTimeoutError, parseRetryAfter,
  type GenerateResponse, type RetryInfo, type StreamEvent,
} from "bora-llm-service/client";
import t from "tap";
import { drain } from "../src/drain.js";
import { accessFrom } from "../src/http/access.js";
import { buildApp } from "../src/http/app.js";
import { ServiceState } from "../src/service.js";
import { startTestService } from "./helpers/service.js";
import { collectEvents } from "./helpers/sse-live.js";

// One slot and no queue: a second concurrent generation gets a real 429 with Retry-After.
const service = await startTestService({ LLM_PARALLEL: "1", LLM_QUEUE_SIZE: "0" });
const base = await service.listen();
t.teardown(() => service.close());

const messages = [{ role: "user" as const, content: "Hola, ¿qué tal?" }];

/** A port nothing listens on (yet). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Another app over the same engines, with its own service state (to drain or cancel it alone). */
async function secondApp(t: { teardown: (fn: () => unknown) => void }, state = new ServiceState()) {
  state.setEngines(service.engines);
  state.markReady();
  const app = await buildApp({ state, bodyLimitBytes: 1 << 20, logger: false, access: accessFrom(service.config) });
  t.teardown(() => app.close());
  return { app, state, url: await app.listen({ port: 0, host: "127.0.0.1" }) };
}

/** Holds the only slot with a long stream until released. */
async function occupySlot(url: string) {
  const abort = new AbortController();
  const response = await fetch(`${url}/api/llm/generate`, {
    method: "POST", headers: { "content-type": "application/json" }, signal: abort.signal,
    body: JSON.stringify({ messages, max_new_tokens: 900, ignore_eos: true, stream: true }),
  });
  const stream = collectEvents(response, (e) => e.event === "delta");
  await stream.first;
  return { release: () => abort.abort() };
}

t.test("Retry-After parsing: seconds and HTTP dates", async (t) => {
  t.equal(parseRetryAfter("3"), 3000);
  t.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000);
  t.equal(parseRetryAfter(null), undefined);
  t.equal(parseRetryAfter("soon"), undefined);
});

t.test("stream: an async iterator of deltas, then done with the full response", async (t) => {
  const client = new LlmClient({ baseUrl: base });
  const events: StreamEvent[] = [];
  for await (const event of client.stream({ messages, max_new_tokens: 12, ignore_eos: true, temperature: 0 })) events.push(event);
  const done = events.at(-1)!;
  t.equal(done.type, "done");
  const response = (done as { response: GenerateResponse }).response;
  t.equal(response.tokens_generated, 12);
  const text = events.flatMap((e) => e.type === "delta" ? [e.text] : []).join("");
  t.equal(text, response.answer, "the deltas add up to the answer");
  const whole = await client.generate({ messages, max_new_tokens: 12, ignore_eos: true, temperature: 0 });
  t.equal(whole.answer, response.answer, "generate gives the same answer for the same greedy request");
  const embedded = await client.embed(["uno", "dos"]);
  t.equal(embedded.embeddings.length, 2);
  t.equal(embedded.dim, service.engines.embed.dimension);
});

t.test("connection refused: retried with backoff until the service is up", async (t) => {
  const port = await freePort();
  const retries: RetryInfo[] = [];
  const state = new ServiceState();
  state.setEngines(service.engines);
  state.markReady();
  const late = await buildApp({ state, bodyLimitBytes: 1 << 20, logger: false });
  t.teardown(() => late.close());
  const client = new LlmClient({
    baseUrl: `http://127.0.0.1:${port}`,
    retry: { attempts: 8, baseDelayMs: 100 },
    onRetry: (info) => {
      retries.push(info);
      // The service comes up after the first refused attempt.
      if (retries.length === 1) void late.listen({ port, host: "127.0.0.1" });
    },
  });
  const result = await client.generate({ messages, max_new_tokens: 2 });
  t.equal(result.tokens_generated, 2);
  t.ok(retries.length >= 1);
  t.ok(retries[0]!.error instanceof LlmConnectionError, "the first failure was a connection error");
  t.match(retries[0]!.error.message, /ECONNREFUSED/);
  t.equal(retries[0]!.fromRetryAfter, false, "backoff, not Retry-After");
  t.ok(retries[0]!.delayMs >= 50 && retries[0]!.delayMs <= 100, "equal jitter: half to all of the base delay");
});

t.test("429 from a full service: the client waits Retry-After, then succeeds", async (t) => {
  const slot = await occupySlot(base);
  const raw = await fetch(`${base}/api/llm/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ messages, max_new_tokens: 2 }) });
  t.equal(raw.status, 429, "the service is full");
  const retryAfterMs = Number(raw.headers.get("retry-after")) * 1000;
  t.ok(retryAfterMs >= 1000);

  const retries: { info: RetryInfo; at: number }[] = [];
  const client = new LlmClient({
    baseUrl: base,
    onRetry: (info) => {
      retries.push({ info, at: performance.now() });
      slot.release(); // the slot frees while the client waits
    },
  });
  const result = await client.generate({ messages, max_new_tokens: 2 });
  const finishedAt = performance.now();
  t.equal(result.tokens_generated, 2);
  t.equal(retries.length, 1, "one retry");
  const { info, at } = retries[0]!;
  t.ok(info.error instanceof LlmHttpError && info.error.status === 429 && info.error.code === "queue_full");
  t.equal(info.fromRetryAfter, true);
  t.equal(info.delayMs, retryAfterMs, "waits what Retry-After says");
  t.ok(finishedAt - at >= retryAfterMs - 20, "and really waited that long before the next attempt");
});

t.test("503 while the service drains: Retry-After honoured on each attempt, then the fallback answers", async (t) => {
  const { state, url } = await secondApp(t);
  const slot = await occupySlot(url);
  const drained = drain(state, { timeoutMs: 60_000 });
  const retries: RetryInfo[] = [];
  const fallbackCalls: unknown[] = [];
  const client = new LlmClient({
    baseUrl: url,
    retry: { attempts: 3 },
    onRetry: (info) => retries.push(info),
    fallback: {
      generate: (request, error) => {
        fallbackCalls.push(error);
        return { answer: `fallback for ${request.messages.length} message(s)`, model: "fallback", tokens_generated: 0, finish_reason: "stop", usage: { prompt_tokens: 0, cached_prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } };
      },
    },
  });
  const result = await client.generate({ messages, max_new_tokens: 2 });
  t.equal(result.answer, "fallback for 1 message(s)");
  t.same(retries.map((r) => [r.delayMs, r.fromRetryAfter, (r.error as LlmHttpError).status]), [[1000, true, 503], [1000, true, 503]]);
  t.equal(fallbackCalls.length, 1);
  const error = fallbackCalls[0] as LlmHttpError;
  t.ok(error instanceof LlmHttpError);
  t.equal(error.code, "shutting_down");
  t.equal(error.attempts, 3);
  slot.release();
  await drained;
});

t.test("a stream cut after tokens is never retried", async (t) => {
  const { state, app, url } = await secondApp(t);
  const retries: RetryInfo[] = [];
  const client = new LlmClient({
    baseUrl: url, onRetry: (info) => retries.push(info),
    fallback: { generate: () => { throw new Error("the fallback must not answer after tokens were shown"); } },
  });
  let delivered = "";
  let deltas = 0;
  const error = await (async () => {
    for await (const event of client.stream({ messages, max_new_tokens: 900, ignore_eos: true })) {
      if (event.type !== "delta") continue;
      delivered += event.text;
      // The drain deadline passes while the answer streams: the service sends an error event.
      if (++deltas === 2) state.cancelRunning();
    }
  })().then(() => null, (e: unknown) => e);
  t.ok(error instanceof LlmStreamInterruptedError, "LlmStreamInterruptedError");
  const interrupted = error as LlmStreamInterruptedError;
  t.equal(interrupted.partialText, delivered, "the error carries the text the caller already has");
  t.equal(interrupted.attempts, 1);
  t.ok(interrupted.cause instanceof LlmHttpError && interrupted.cause.code === "shutting_down");
  t.equal(retries.length, 0, "no retry");
  const metrics = (await app.inject({ method: "GET", url: "/metrics" })).body;
  t.match(metrics, /bora_http_requests_total\{route="\/api\/llm\/generate",status="200"\} 1\n/, "the service saw one request");
});

t.test("a stream that fails before its first token is retried, then falls back", async (t) => {
  const port = await freePort();
  const retries: RetryInfo[] = [];
  const client = new LlmClient({
    baseUrl: `http://127.0.0.1:${port}`, retry: { attempts: 2, baseDelayMs: 10 }, onRetry: (info) => retries.push(info),
    fallback: { generate: () => ({ answer: "Lo siento, ahora no puedo responder.", model: "fallback", tokens_generated: 0, finish_reason: "stop", usage: { prompt_tokens: 0, cached_prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 } }) },
  });
  const events: StreamEvent[] = [];
  for await (const event of client.stream({ messages })) events.push(event);
  t.equal(retries.length, 1);
  t.same(events.map((e) => e.type), ["delta", "done"]);
  t.same(events[0], { type: "delta", text: "Lo siento, ahora no puedo responder." });

  const noFallback = new LlmClient({ baseUrl: `http://127.0.0.1:${port}`, retry: { attempts: 2, baseDelayMs: 10 } });
  const error = await noFallback.embed(["hola"]).then(() => null, (e: unknown) => e);
  t.ok(error instanceof LlmConnectionError);
  t.equal((error as LlmConnectionError).attempts, 2);
});

t.test("bad input is the caller's bug: 400 with the field, no retry, no fallback", async (t) => {
  const retries: RetryInfo[] = [];
  let fellBack = false;
  const client = new LlmClient({ baseUrl: base, onRetry: (info) => retries.push(info), fallback: { generate: () => { fellBack = true; throw new Error("no"); } } });
  const error = await client.generate({ messages, max_new_tokens: 0 }).then(() => null, (e: unknown) => e);
  t.ok(error instanceof LlmHttpError);
  t.equal((error as LlmHttpError).status, 400);
  t.equal((error as LlmHttpError).field, "max_new_tokens");
  t.equal(retries.length, 0);
  t.equal(fellBack, false);
});

t.test("timeouts: a generation longer than timeoutMs fails with LlmTimeoutError, not retried", async (t) => {
  const retries: RetryInfo[] = [];
  const client = new LlmClient({ baseUrl: base, timeoutMs: 200, onRetry: (info) => retries.push(info) });
  const error = await client.generate({ messages, max_new_tokens: 900, ignore_eos: true }).then(() => null, (e: unknown) => e);
  t.ok(error instanceof LlmTimeoutError, "LlmTimeoutError");
  t.same(retries.map((r) => r.error.message), [], "no retry");
  // The service saw the client leave and freed its only slot: the next request runs.
  const next = await new LlmClient({ baseUrl: base, retry: { attempts: 20, baseDelayMs: 50, maxDelayMs: 200 } }).generate({ messages, max_new_tokens: 2 });
  t.equal(next.tokens_generated, 2);
});

t.test("a call's request id reaches the service and comes back", async (t) => {
  const echoed: (string | null)[] = [];
  const client = new LlmClient({
    baseUrl: base,
    fetch: async (input, init) => {
      const response = await fetch(input, init);
      echoed.push(response.headers.get("x-request-id"));
      return response;
    },
  });
  await client.embed(["hola"], { requestId: "backend-req-1" });
  for await (const event of client.stream({ messages, max_new_tokens: 2 }, { requestId: "backend-req-2" })) void event;
  t.same(echoed, ["backend-req-1", "backend-req-2"]);
});

t.test("the API key is sent as a bearer token", async (t) => {
  const state = new ServiceState();
  state.setEngines(service.engines);
  state.markReady();
  const app = await buildApp({ state, bodyLimitBytes: 1 << 20, logger: false, access: { apiKeys: ["k-123"], corsOrigins: [], metricsAuth: false } });
  t.teardown(() => app.close());
  const url = await app.listen({ port: 0, host: "127.0.0.1" });
  t.equal((await new LlmClient({ baseUrl: url, apiKey: "k-123" }).embed(["hola"])).embeddings.length, 1);
  const error = await new LlmClient({ baseUrl: url }).embed(["hola"]).then(() => null, (e: unknown) => e);
  t.ok(error instanceof LlmHttpError && error.status === 401 && error.code === "missing_api_key");
});
