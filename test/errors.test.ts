// Every bad request gets a 4xx JSON body naming what is wrong; the process survives all of them.
import t, { type Test } from "tap";
import { postJson, startTestService } from "./helpers/service.js";

const service = await startTestService({ BODY_LIMIT_BYTES: "65536", LLM_CONTEXT_SIZE: "512", EMBED_MAX_TEXTS: "50" });
t.teardown(() => service.close());
const { app } = service;

const user = (content: unknown) => [{ role: "user", content }];
type ErrorBody = { error: { code: string; message: string; field?: string } };

async function expectError(t: Test, url: string, payload: unknown, status: number, code: string, field?: string) {
  const res = await postJson(app, url, payload);
  t.equal(res.statusCode, status, `status for ${JSON.stringify(payload).slice(0, 80)}`);
  t.match(res.headers["content-type"], /application\/json/);
  const body = res.json<ErrorBody>();
  t.equal(body.error.code, code);
  t.type(body.error.message, "string");
  t.ok(body.error.message.length > 0);
  if (field !== undefined) t.equal(body.error.field, field);
  return body;
}

t.test("malformed JSON", async (t) => {
  const res = await app.inject({ method: "POST", url: "/api/llm/generate", payload: '{"messages": [', headers: { "content-type": "application/json" } });
  t.equal(res.statusCode, 400);
  t.equal(res.json<ErrorBody>().error.code, "invalid_json");
});

t.test("wrong content-type", async (t) => {
  const res = await app.inject({ method: "POST", url: "/api/llm/generate", payload: "hola", headers: { "content-type": "text/plain" } });
  t.equal(res.statusCode, 415);
  t.equal(res.json<ErrorBody>().error.code, "unsupported_media_type");
});

t.test("oversized body is 413", async (t) => {
  const res = await postJson(app, "/api/llm/embed", { texts: ["x".repeat(70_000)] });
  t.equal(res.statusCode, 413);
  t.equal(res.json<ErrorBody>().error.code, "payload_too_large");
});

t.test("messages", async (t) => {
  await expectError(t, "/api/llm/generate", {}, 400, "validation_error", "messages");
  await expectError(t, "/api/llm/generate", { messages: [] }, 400, "validation_error", "messages");
  await expectError(t, "/api/llm/generate", { messages: "hola" }, 400, "validation_error", "messages");
  const role = await expectError(t, "/api/llm/generate", { messages: [{ role: "wizard", content: "hola" }] }, 400, "validation_error", "messages[0].role");
  t.match(role.error.message, /system/);
  await expectError(t, "/api/llm/generate", { messages: user(42) }, 400, "validation_error", "messages[0].content");
  await expectError(t, "/api/llm/generate", { messages: user(null) }, 400, "validation_error", "messages[0].content");
  await expectError(t, "/api/llm/generate", { messages: [{ role: "user" }] }, 400, "validation_error", "messages[0].content");
  await expectError(t, "/api/llm/generate", { messages: user("hola"), max_new_token: 3 }, 400, "validation_error", "max_new_token");
});

t.test("max_new_tokens", async (t) => {
  for (const value of [0, -5, 2.5, "10"]) {
    await expectError(t, "/api/llm/generate", { messages: user("hola"), max_new_tokens: value }, 400, "validation_error", "max_new_tokens");
  }
  const beyond = await expectError(t, "/api/llm/generate", { messages: user("hola"), max_new_tokens: 100_000 }, 400, "context_length_exceeded", "max_new_tokens");
  t.match(beyond.error.message, /512/);
  const sum = await expectError(t, "/api/llm/generate", { messages: user("hola"), max_new_tokens: 500 }, 400, "context_length_exceeded", "max_new_tokens");
  t.match(sum.error.message, /at most \d+/);
});

t.test("temperature and top_p ranges", async (t) => {
  for (const value of [-0.1, 2.01, "0.5"]) {
    await expectError(t, "/api/llm/generate", { messages: user("hola"), temperature: value }, 400, "validation_error", "temperature");
  }
  for (const value of [0, -1, 1.5]) {
    await expectError(t, "/api/llm/generate", { messages: user("hola"), top_p: value }, 400, "validation_error", "top_p");
  }
  const ok = await postJson(app, "/api/llm/generate", { messages: user("hola"), top_p: 1, temperature: 2, max_new_tokens: 2 });
  t.equal(ok.statusCode, 200, "the range ends are accepted");
});

t.test("a prompt longer than the context is a 400, not a crash", async (t) => {
  const long = "palabra ".repeat(2000);
  const body = await expectError(t, "/api/llm/generate", { messages: user(long) }, 400, "context_length_exceeded", "messages");
  t.match(body.error.message, /longer than the context of 512 tokens/);
});

t.test("texts", async (t) => {
  await expectError(t, "/api/llm/embed", { texts: [] }, 400, "validation_error", "texts");
  await expectError(t, "/api/llm/embed", { texts: "hola" }, 400, "validation_error", "texts");
  await expectError(t, "/api/llm/embed", {}, 400, "validation_error", "texts");
  await expectError(t, "/api/llm/embed", { texts: ["hola", 3] }, 400, "validation_error", "texts[1]");
  await expectError(t, "/api/llm/embed", { texts: ["hola", ""] }, 400, "validation_error", "texts[1]");
  const many = await expectError(t, "/api/llm/embed", { texts: Array.from({ length: 51 }, () => "hola") }, 400, "invalid_request", "texts");
  t.match(many.error.message, /at most 50/);
});

t.test("an embedding model that is not served lists the served names", async (t) => {
  const body = await expectError(t, "/api/llm/embed", { texts: ["hola"], model: "text-embedding-3-large" }, 400, "model_not_found", "model");
  t.match(body.error.message, /test-minilm-tiny/);
});

t.test("a text longer than the embedding context is truncated, and says so", async (t) => {
  const res = await postJson(app, "/api/llm/embed", { texts: ["corto", "palabra ".repeat(1500)] });
  t.equal(res.statusCode, 200);
  const body = res.json<{ embeddings: number[][]; truncated: number }>();
  t.equal(body.truncated, 1);
  t.equal(body.embeddings.length, 2);
});

t.test("unknown routes are JSON 404s", async (t) => {
  const res = await app.inject({ method: "GET", url: "/api/llm/nothing" });
  t.equal(res.statusCode, 404);
  t.equal(res.json<ErrorBody>().error.code, "not_found");
});

t.test("the service still works after all of that", async (t) => {
  const res = await postJson(app, "/api/llm/generate", { messages: user("hola"), max_new_tokens: 3 });
  t.equal(res.statusCode, 200);
  t.equal(res.json<{ tokens_generated: number }>().tokens_generated, 3);
});
