// API keys, CORS, request ids and log redaction, over a real port with the real engines.
import OpenAI from "openai";
import t from "tap";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { buildApp } from "../src/http/app.js";
import { usePrettyLogs } from "../src/logging.js";
import { startServiceProcess } from "./helpers/process.js";
import { startTestService } from "./helpers/service.js";

const KEYS = ["key-one-0123456789", "key-two-abcdefghij"];
const service = await startTestService({ LLM_API_KEY: ` ${KEYS[0]}, ${KEYS[1]} `, CORS_ORIGINS: "http://localhost:8000,https://app.example" });
const base = await service.listen();
t.teardown(() => service.close());

const generateBody = JSON.stringify({ messages: [{ role: "user", content: "hola" }], max_new_tokens: 2 });
const generate = (headers: Record<string, string>) =>
  fetch(`${base}/api/llm/generate`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: generateBody });

/** The structure of a JSON value: object keys and leaf types, not the values. */
function shapeOf(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(shapeOf);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)).filter(([k]) => k !== "field" && k !== "param").map(([k, v]) => [k, shapeOf(v)]));
  }
  return value === null ? "null" : typeof value;
}

t.test("seed API: missing or wrong key 401 in the seed error shape; either key in either header 200", async (t) => {
  const missing = await generate({});
  t.equal(missing.status, 401);
  t.match(missing.headers.get("www-authenticate"), /^Bearer/);
  t.same(await missing.json(), { error: { code: "missing_api_key", message: "An API key is required: send Authorization: Bearer <key> or x-api-key: <key>." } });

  for (const headers of [{ authorization: "Bearer wrong-key" }, { "x-api-key": "wrong-key" }, { authorization: `Bearer ${KEYS[0]}x` }, { authorization: KEYS[0]! }] as Record<string, string>[]) {
    const wrong = await generate(headers);
    t.equal(wrong.status, 401, JSON.stringify(headers));
    t.same(await wrong.json(), { error: { code: "invalid_api_key", message: "The API key is not valid." } });
  }
  for (const headers of [{ authorization: `Bearer ${KEYS[0]}` }, { authorization: `bearer ${KEYS[1]}` }, { "x-api-key": KEYS[1]! }, { "x-api-key": KEYS[0]! }] as Record<string, string>[]) {
    const ok = await generate(headers);
    t.equal(ok.status, 200, JSON.stringify(headers));
    t.equal((await ok.json() as { tokens_generated: number }).tokens_generated > 0, true);
  }
});

t.test("OpenAI API: 401 in OpenAI's shape; the official client works with the key and fails without", async (t) => {
  const missing = await fetch(`${base}/v1/models`);
  t.equal(missing.status, 401);
  t.same(await missing.json(), { error: { message: "An API key is required: send Authorization: Bearer <key> or x-api-key: <key>.", type: "invalid_request_error", param: null, code: "missing_api_key" } });

  const good = new OpenAI({ baseURL: `${base}/v1`, apiKey: KEYS[1], maxRetries: 0 });
  const models = await good.models.list();
  t.equal(models.data.length, 2);
  const bad = new OpenAI({ baseURL: `${base}/v1`, apiKey: "nope", maxRetries: 0 });
  const error = await bad.models.list().then(() => null, (e: unknown) => e);
  t.ok(error instanceof OpenAI.AuthenticationError, "AuthenticationError");
  t.equal((error as InstanceType<typeof OpenAI.AuthenticationError>).status, 401);
  t.equal((error as InstanceType<typeof OpenAI.AuthenticationError>).code, "invalid_api_key");
});

t.test("every API's 401 has the shape of that path's own errors", async (t) => {
  // The same path with a key and a bad body gives that API's own error: the 401 must look the same
  // (seed, OpenAI, and Ollama's {error: "..."} on the Ollama-compatible /api/* routes).
  for (const path of ["/api/llm/generate", "/api/llm/embed", "/v1/chat/completions", "/v1/embeddings", "/api/chat", "/api/generate", "/api/embed", "/api/show"]) {
    const post = (headers: Record<string, string>) => fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: "{}" });
    const unauthorized = await post({});
    t.equal(unauthorized.status, 401, path);
    const refused = await post({ authorization: `Bearer ${KEYS[0]}` });
    t.ok(refused.status >= 400 && refused.status !== 401, `${path} with a key: ${refused.status}`);
    t.same(shapeOf(await unauthorized.json()), shapeOf(await refused.json()), `${path}: same error shape`);
  }
});

t.test("probes, the OpenAPI page and static pages need no key; /metrics per METRICS_AUTH", async (t) => {
  for (const path of ["/health", "/ready", "/metrics", "/docs/json"]) t.equal((await fetch(`${base}${path}`)).status, 200, path);
  const doc = await (await fetch(`${base}/docs/json`)).json() as { components: { securitySchemes: Record<string, unknown> } };
  t.same(Object.keys(doc.components.securitySchemes).sort(), ["apiKey", "bearer"], "the OpenAPI doc offers both ways of sending the key");
  // The playground page (static files) must load without a key: it asks for the key itself.
  for (const path of ["/", "/index.html", "/playground/app.js"]) t.not((await fetch(`${base}${path}`)).status, 401, path);

  const locked = await buildApp({ state: service.state, bodyLimitBytes: 1 << 20, logger: false, access: { apiKeys: KEYS, corsOrigins: [], metricsAuth: true } });
  t.teardown(() => locked.close());
  const noKey = await locked.inject({ method: "GET", url: "/metrics" });
  t.equal(noKey.statusCode, 401);
  t.equal(noKey.json<{ error: { code: string } }>().error.code, "missing_api_key");
  t.equal((await locked.inject({ method: "GET", url: "/metrics", headers: { "x-api-key": KEYS[0]! } })).statusCode, 200);
  t.equal((await locked.inject({ method: "GET", url: "/health" })).statusCode, 200);
});

t.test("CORS: an allowed origin gets its preflight and credentials; a refused one gets neither", async (t) => {
  const preflight = (origin: string) => fetch(`${base}/api/llm/generate`, {
    method: "OPTIONS",
    headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
  });
  for (const origin of ["http://localhost:8000", "https://app.example"]) {
    const res = await preflight(origin);
    t.equal(res.status, 204, `preflight answered without a key (${origin})`);
    t.equal(res.headers.get("access-control-allow-origin"), origin);
    t.equal(res.headers.get("access-control-allow-credentials"), "true");
    t.match(res.headers.get("access-control-allow-methods"), /POST/);
    t.match(res.headers.get("access-control-allow-headers"), /authorization/);
    t.match(res.headers.get("access-control-allow-headers"), /x-api-key/);
    t.match(res.headers.get("vary"), /Origin/);
  }
  const refused = await preflight("http://evil.example");
  t.equal(refused.status, 204);
  t.equal(refused.headers.get("access-control-allow-origin"), null, "no Allow-Origin for a refused origin");
  t.equal(refused.headers.get("access-control-allow-credentials"), null, "no credentials for a refused origin");

  const actual = await generate({ origin: "http://localhost:8000", "x-api-key": KEYS[0]! });
  t.equal(actual.status, 200);
  t.equal(actual.headers.get("access-control-allow-origin"), "http://localhost:8000");
  t.match(actual.headers.get("access-control-expose-headers"), /x-request-id/);
  const unauthorized = await generate({ origin: "http://localhost:8000" });
  t.equal(unauthorized.status, 401);
  t.equal(unauthorized.headers.get("access-control-allow-origin"), "http://localhost:8000", "the page can read the 401");
  const evil = await generate({ origin: "http://evil.example", "x-api-key": KEYS[0]! });
  t.equal(evil.headers.get("access-control-allow-origin"), null);
  t.equal(evil.headers.get("access-control-allow-credentials"), null);
});

t.test("CORS with a wildcard: any origin, never with credentials", async (t) => {
  for (const corsOrigins of [["*"], ["*", "http://localhost:8000"]]) {
    const app = await buildApp({ state: service.state, bodyLimitBytes: 1 << 20, logger: false, access: { apiKeys: [], corsOrigins, metricsAuth: false } });
    t.teardown(() => app.close());
    for (const method of ["OPTIONS", "GET"] as const) {
      const res = await app.inject({ method, url: "/v1/models", headers: { origin: "https://anyone.example", "access-control-request-method": "GET" } });
      t.equal(res.headers["access-control-allow-origin"], "*", `${corsOrigins.join(",")} ${method}`);
      t.equal(res.headers["access-control-allow-credentials"], undefined, "no credentials with *");
    }
    const listed = await app.inject({ method: "GET", url: "/v1/models", headers: { origin: "http://localhost:8000" } });
    if (corsOrigins.length > 1) {
      t.equal(listed.headers["access-control-allow-origin"], "http://localhost:8000", "a listed origin is reflected, with credentials");
      t.equal(listed.headers["access-control-allow-credentials"], "true");
    } else {
      t.equal(listed.headers["access-control-allow-origin"], "*");
      t.equal(listed.headers["access-control-allow-credentials"], undefined);
    }
  }
});

t.test("request ids: generated, or an incoming x-request-id honoured; returned on JSON and streamed replies", async (t) => {
  const own = await fetch(`${base}/health`);
  t.match(own.headers.get("x-request-id"), /^[0-9a-f-]{36}$/);
  t.equal((await fetch(`${base}/health`, { headers: { "x-request-id": "trace-42.a:b" } })).headers.get("x-request-id"), "trace-42.a:b");
  const junk = await fetch(`${base}/health`, { headers: { "x-request-id": "has spaces\tand tabs" } });
  t.match(junk.headers.get("x-request-id"), /^[0-9a-f-]{36}$/, "an implausible id is replaced");
  const stream = await fetch(`${base}/api/llm/generate`, {
    method: "POST", headers: { "content-type": "application/json", "x-api-key": KEYS[0]!, "x-request-id": "stream-7" },
    body: JSON.stringify({ messages: [{ role: "user", content: "hola" }], max_new_tokens: 2, stream: true }),
  });
  t.equal(stream.headers.get("x-request-id"), "stream-7");
  await stream.text();
});

t.test("logs: JSON lines off a terminal, the request id on request lines, keys redacted, no user text at info", async (t) => {
  t.equal(usePrettyLogs("auto", true), true);
  t.equal(usePrettyLogs("auto", false), false);
  t.equal(usePrettyLogs("json", true), false);
  t.equal(usePrettyLogs("pretty", false), true);

  const models = await ensureTestModels();
  const secret = "s3cret-api-key-never-logged";
  const proc = startServiceProcess({ LLM_MODEL: models.chat, EMBED_MODEL: models.embed, LLM_CONTEXT_SIZE: "1024", LLM_API_KEY: secret, LOG_LEVEL: "debug", WARMUP: "false" });
  t.teardown(() => { proc.child.kill("SIGKILL"); });
  const listening = await proc.waitForLine(/Server listening at/);
  const url = /http:\/\/[^"]+/.exec(listening)![0];
  await proc.waitForLine(/"msg":"ready"/);
  const res = await fetch(`${url}/api/llm/generate`, {
    method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${secret}`, "x-request-id": "trace-77" },
    body: JSON.stringify({ messages: [{ role: "user", content: "texto-privado-del-usuario" }], max_new_tokens: 2 }),
  });
  t.equal(res.status, 200);
  await fetch(`${url}/api/llm/embed`, { method: "POST", headers: { "content-type": "application/json", "x-api-key": secret, "x-request-id": "trace-78" }, body: JSON.stringify({ texts: ["otro-texto-privado"] }) });
  await proc.waitForLine(/"reqId":"trace-78".*"msg":"request"/);
  proc.child.kill("SIGTERM");
  await proc.exited;

  const lines = proc.output().split("\n").filter((l) => l.trim() !== "");
  const parsed = lines.map((l) => { try { return JSON.parse(l) as Record<string, unknown>; } catch { return null; } });
  t.equal(parsed.filter((p) => p === null).length, 0, "every line is JSON (stdout is not a terminal)");
  const requestLines = parsed.filter((p) => p !== null && (p.msg === "request" || p.msg === "request received"));
  t.ok(requestLines.length >= 4);
  t.ok(requestLines.every((p) => typeof p!.reqId === "string"), "every request line carries its request id");
  t.ok(requestLines.some((p) => p!.reqId === "trace-77" && p!.msg === "request"));
  t.notMatch(proc.output(), secret, "the key never reaches the log, even at debug");
  t.match(proc.output(), /"authorization":"\[redacted\]"/);
  t.match(proc.output(), /"x-api-key":"\[redacted\]"/);
  const info = parsed.filter((p) => p !== null && (p.level as number) >= 30).map((p) => JSON.stringify(p)).join("\n");
  t.notMatch(info, /texto-privado|otro-texto/, "no user text at info");
});
