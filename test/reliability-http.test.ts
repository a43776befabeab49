// Issue 15, the HTTP rows: each test names the row of the table it guards. Real engines on the
// tiny fixtures, a real port where the wire matters (headers, streams, sockets).
import { getEventListeners } from "node:events";
import { connect } from "node:net";
import t from "tap";
import { postJson, startTestService, type TestService } from "./helpers/service.js";

const longRun = { messages: [{ role: "user", content: "Cuenta una historia larga." }], max_new_tokens: 3000, ignore_eos: true, temperature: 0.7 };

// The rows that need no setting of their own share one service (each start costs seconds).
let shared: Promise<TestService> | null = null;
let sharedBase: Promise<string> | null = null;
const sharedService = () => (shared ??= startTestService());
const sharedUrl = () => (sharedBase ??= sharedService().then((s) => s.listen()));
t.teardown(async () => { if (shared !== null) await (await shared).close(); });

async function waitFor(condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeoutMs) throw new Error("condition not reached in time");
    await new Promise((r) => setTimeout(r, 5));
  }
}

t.test("row 'stream: true while every slot is busy and the queue is full': 429 + Retry-After on every generating route, as unstreamed", async (t) => {
  const service = await startTestService({ LLM_PARALLEL: "1", LLM_QUEUE_SIZE: "1", LLM_CONTEXT_SIZE: "4096" });
  t.teardown(() => service.close());
  const base = await service.listen();
  const abort = new AbortController();
  const post = (url: string, body: unknown, signal?: AbortSignal) =>
    fetch(`${base}${url}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
  // One running, one queued: the queue is full.
  const running = post("/api/llm/generate", { ...longRun, stream: true }, abort.signal).catch(() => null);
  await waitFor(() => service.engines.chat.stats().slotsBusy === 1);
  const queued = post("/api/llm/generate", longRun, abort.signal).catch(() => null);
  await waitFor(() => service.engines.chat.stats().queued === 1);

  const messages = [{ role: "user", content: "hola" }];
  const routes: [string, Record<string, unknown>, (body: unknown) => boolean][] = [
    ["/api/llm/generate", { messages }, (b) => (b as { error: { code: string } }).error.code === "queue_full"],
    ["/v1/chat/completions", { messages }, (b) => (b as { error: { code: string; type: string } }).error.type === "rate_limit_error"],
    ["/v1/completions", { prompt: "hola" }, (b) => (b as { error: { code: string } }).error.code === "queue_full"],
    ["/api/chat", { model: service.engines.models.chat.name, messages }, (b) => typeof (b as { error: unknown }).error === "string"],
    ["/api/generate", { model: service.engines.models.chat.name, prompt: "hola" }, (b) => typeof (b as { error: unknown }).error === "string"],
  ];
  for (const [url, body, shaped] of routes) {
    for (const stream of [true, false]) {
      const res = await post(url, { ...body, stream });
      t.equal(res.status, 429, `${url} stream=${stream}: 429`);
      t.ok(Number(res.headers.get("retry-after")) >= 1, `${url} stream=${stream}: Retry-After ${res.headers.get("retry-after")}`);
      t.match(res.headers.get("content-type"), /application\/json/, `${url} stream=${stream}: a JSON error, not an event stream`);
      t.ok(shaped(await res.json()), `${url} stream=${stream}: the route's own error shape`);
    }
  }
  abort.abort();
  await Promise.all([running, queued]);
  await waitFor(() => service.engines.chat.stats().slotsBusy === 0 && service.engines.chat.stats().queued === 0);
});

t.test("row 'POST /v1/completions with stray tools / tool_choice': 400 in OpenAI's shape naming the field, not a 500", async (t) => {
  const service = await sharedService();
  const strays: Record<string, unknown>[] = [{ tools: null }, { tools: [null] }, { tools: "x" }, { tool_choice: {} }, { tool_choice: "required" }, { parallel_tool_calls: false }];
  for (const stray of strays) {
    for (const stream of [false, true]) {
      const res = await postJson(service.app, "/v1/completions", { prompt: "hola", max_tokens: 2, stream, ...stray });
      t.equal(res.statusCode, 400, `${JSON.stringify(stray)} stream=${stream}`);
      const body = res.json<{ error: { type: string; param: string; code: string; message: string } }>();
      t.equal(body.error.type, "invalid_request_error");
      t.equal(body.error.param, Object.keys(stray)[0]);
      t.match(body.error.message, /\/v1\/chat\/completions/);
    }
  }
  const plain = await postJson(service.app, "/v1/completions", { prompt: "hola", max_tokens: 2, user: "someone", unknown_field: 1 });
  t.equal(plain.statusCode, 200, "other unknown fields are still accepted and ignored");
});

t.test("row 'POST /tokenize without the key while LLM_API_KEY is set': 401; health stays open", async (t) => {
  const key = "tokenize-key-0123456789";
  const service = await startTestService({ LLM_API_KEY: key });
  t.teardown(() => service.close());
  const base = await service.listen();
  const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${base}${url}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
  for (const [url, body] of [["/tokenize", { content: "hola" }], ["/detokenize", { tokens: [1, 2] }], ["/tokenize?x=1", { content: "hola" }]] as const) {
    const missing = await post(url, body);
    t.equal(missing.status, 401, `${url} without a key`);
    t.match(await missing.json(), { error: { code: "missing_api_key", type: "invalid_request_error" } }, "OpenAI's shape, as llama-server");
    t.equal((await post(url, body, { authorization: "Bearer wrong" })).status, 401, `${url} with a wrong key`);
    t.equal((await post(url, body, { authorization: `Bearer ${key}` })).status, 200, `${url} with the key`);
    t.equal((await post(url, body, { "x-api-key": key })).status, 200, `${url} with x-api-key`);
  }
  t.equal((await fetch(`${base}/health`)).status, 200, "/health needs no key");
});

t.test("row 'a 20 KB request header': 431 in the API's own error shape", async (t) => {
  const base = new URL(await sharedUrl());
  /** A raw request: fetch may refuse to send such a header itself. */
  const rawRequest = (path: string) => new Promise<{ status: number; headers: string; body: string }>((resolve, reject) => {
    const socket = connect(Number(base.port), base.hostname);
    let data = "";
    socket.on("data", (chunk) => { data += chunk.toString("utf8"); });
    socket.on("error", reject);
    socket.on("close", () => {
      const [head = "", body = ""] = data.split("\r\n\r\n");
      resolve({ status: Number(head.split(" ")[1]), headers: head, body });
    });
    socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Big: ${"a".repeat(20_000)}\r\nContent-Length: 2\r\n\r\n{}`);
  });
  const seed = await rawRequest("/api/llm/generate");
  t.equal(seed.status, 431);
  t.match(seed.headers, /content-type: application\/json/i);
  t.same(JSON.parse(seed.body), { error: { code: "headers_too_large", message: JSON.parse(seed.body).error.message } }, "seed shape");
  const openai = await rawRequest("/v1/chat/completions");
  t.equal(openai.status, 431);
  t.match(JSON.parse(openai.body), { error: { type: "invalid_request_error", code: "headers_too_large", param: null } }, "OpenAI shape");
  const ollama = await rawRequest("/api/chat");
  t.equal(ollama.status, 431);
  t.match(JSON.parse(ollama.body), { error: /headers/ }, "Ollama shape");
  t.equal(typeof JSON.parse(ollama.body).error, "string");
  t.equal((await fetch(`${base.origin}/health`)).status, 200, "the server goes on");
});

t.test("row '40 short streamed requests in a row': no listener left on a process-lifetime signal, no MaxListenersExceededWarning", async (t) => {
  const service = await sharedService();
  const base = await sharedUrl();
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on("warning", onWarning);
  t.teardown(() => { process.off("warning", onWarning); });
  const model = service.engines.models.chat.name;
  const bodies: [string, unknown][] = [
    ["/api/llm/generate", { messages: [{ role: "user", content: "hola" }], max_new_tokens: 2, stream: true }],
    ["/v1/chat/completions", { messages: [{ role: "user", content: "hola" }], max_tokens: 2, stream: true }],
    ["/v1/completions", { prompt: "hola", max_tokens: 2, stream: true }],
    ["/api/chat", { model, messages: [{ role: "user", content: "hola" }], options: { num_predict: 2 } }],
    ["/api/generate", { model, prompt: "hola", options: { num_predict: 2 } }],
  ];
  for (let i = 0; i < 40; i++) {
    const [url, body] = bodies[i % bodies.length]!;
    const res = await fetch(`${base}${url}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    t.equal(res.status, 200);
    await res.text();
  }
  // Unstreamed, refused and cancelled requests release theirs too.
  for (let i = 0; i < 12; i++) {
    await (await fetch(`${base}/api/llm/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ messages: [{ role: "user", content: "hola" }], max_new_tokens: 2 }) })).text();
    await (await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ messages: [{ role: "user", content: "hola" }], max_tokens: 99999 }) })).text();
    const abort = new AbortController();
    const res = await fetch(`${base}/api/llm/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...longRun, stream: true }), signal: abort.signal });
    const reader = res.body!.getReader();
    await reader.read();
    abort.abort();
    await reader.read().catch(() => undefined);
  }
  await waitFor(() => service.engines.chat.stats().slotsBusy === 0 && service.state.inFlight === 0);
  await new Promise((r) => setTimeout(r, 50));
  t.equal(getEventListeners(service.state.drainDeadline, "abort").length, 0, "no listener left on the drain deadline");
  t.same(warnings.filter((w) => /MaxListeners/.test(w)), [], "no MaxListenersExceededWarning");
});

t.test("fuzz finding (seed 777): repeat_penalty 0 is a 400 naming the field on every API, not a 500", async (t) => {
  const service = await sharedService();
  const messages = [{ role: "user", content: "hola" }];
  const seed = await postJson(service.app, "/api/llm/generate", { messages, max_new_tokens: 1, repeat_penalty: 0 });
  t.equal(seed.statusCode, 400);
  t.equal(seed.json<{ error: { field: string } }>().error.field, "repeat_penalty");
  const openai = await postJson(service.app, "/v1/chat/completions", { messages, max_tokens: 1, repeat_penalty: 0, stream: true });
  t.equal(openai.statusCode, 400);
  t.equal(openai.json<{ error: { param: string } }>().error.param, "repeat_penalty");
  const ollama = await postJson(service.app, "/api/chat", { model: service.engines.models.chat.name, messages, options: { repeat_penalty: 0, num_predict: 1 } });
  t.equal(ollama.statusCode, 400);
  t.match(ollama.json<{ error: string }>().error, /repeat_penalty/);
  t.equal((await postJson(service.app, "/api/llm/generate", { messages, max_new_tokens: 1, repeat_penalty: 0.5 })).statusCode, 200, "above 0 is fine");
});
