// Drain on a real process (src/main.ts run by node, as `npm start` and the containers run it):
// SIGTERM during a stream lets it finish, /ready 503, /health 200, new requests 503 + Retry-After,
// exit 0; past DRAIN_TIMEOUT_MS the streams get an error event; a second signal stops at once.
import t from "tap";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { startServiceProcess, type ServiceProcess } from "./helpers/process.js";
import { collectEvents } from "./helpers/sse-live.js";

const models = await ensureTestModels();

async function start(t: { teardown: (fn: () => void) => void }, env: Record<string, string> = {}): Promise<{ proc: ServiceProcess; base: string }> {
  const proc = startServiceProcess({ LLM_MODEL: models.chat, EMBED_MODEL: models.embed, LLM_CONTEXT_SIZE: "1024", ...env });
  t.teardown(() => { proc.child.kill("SIGKILL"); });
  const listening = await proc.waitForLine(/Server listening at/);
  await proc.waitForLine(/"msg":"ready"/);
  return { proc, base: /http:\/\/[^"]+/.exec(listening)![0] };
}

const post = (base: string, path: string, body: unknown) =>
  fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

const seedStream = (base: string, tokens: number) => post(base, "/api/llm/generate", {
  messages: [{ role: "user", content: "Cuéntame una historia larga" }], max_new_tokens: tokens, temperature: 0, ignore_eos: true, stream: true,
});

t.test("SIGTERM during a stream: it finishes with done, /ready 503, new requests 503, exit 0", async (t) => {
  const { proc, base } = await start(t);
  const response = await seedStream(base, 120);
  t.equal(response.status, 200);
  const stream = collectEvents(response, (e) => e.event === "delta");
  await stream.first;

  proc.child.kill("SIGTERM");
  await proc.waitForLine(/"msg":"draining/);
  t.notOk(stream.events.some((e) => e.event === "done"), "the stream is still running while the drain is checked");
  const ready = await fetch(`${base}/ready`);
  t.equal(ready.status, 503, "/ready 503 while draining");
  t.equal((await ready.json() as { status: string }).status, "stopping");
  t.equal((await fetch(`${base}/health`)).status, 200, "/health stays 200");

  const refused = await post(base, "/api/llm/generate", { messages: [{ role: "user", content: "hola" }], max_new_tokens: 2 });
  t.equal(refused.status, 503, "a new model request is refused while the port stays open");
  t.equal(refused.headers.get("retry-after"), "1");
  t.equal(refused.headers.get("connection"), "close", "keep-alive clients are sent elsewhere");
  t.equal((await refused.json() as { error: { code: string } }).error.code, "shutting_down");
  const refusedOpenAI = await post(base, "/v1/embeddings", { input: "hola" });
  t.equal(refusedOpenAI.status, 503);
  t.same(await refusedOpenAI.json(), { error: { message: "The service is shutting down; retry (another replica will answer).", type: "service_unavailable_error", param: null, code: "shutting_down" } });

  const { cut } = await stream.ended;
  t.notOk(cut, "the stream ended normally");
  const done = stream.events.at(-1)!;
  t.equal(done.event, "done", "the running stream finished with its done event");
  const result = JSON.parse(done.data) as { tokens_generated: number; finish_reason: string };
  t.equal(result.tokens_generated, 120, "all 120 tokens");
  t.equal(result.finish_reason, "length");
  t.notOk(stream.events.some((e) => e.event === "error"));

  const exit = await proc.exited;
  t.same(exit, { code: 0, signal: null }, "exit code 0, not killed by the signal");
  t.match(proc.output(), /"msg":"drained".*"finished":true|"finished":true.*"msg":"drained"/);
});

t.test("past DRAIN_TIMEOUT_MS: both APIs' streams end with an error event, exit 0", async (t) => {
  const { proc, base } = await start(t, { DRAIN_TIMEOUT_MS: "300" });
  const seed = collectEvents(await seedStream(base, 900), (e) => e.event === "delta");
  const openai = collectEvents(await post(base, "/v1/chat/completions", {
    messages: [{ role: "user", content: "Cuéntame una historia larga" }], max_tokens: 900, temperature: 0, ignore_eos: true, stream: true,
  }), (e) => e.data.includes('"content":"') && !e.data.includes('"content":""'));
  await Promise.all([seed.first, openai.first]);
  // Both slots are busy: a third request waits in the queue.
  const queued = post(base, "/api/llm/generate", { messages: [{ role: "user", content: "hola" }], max_new_tokens: 5 });
  while ((await (await fetch(`${base}/ready`)).json() as { slots: { queued: number } }).slots.queued !== 1) await new Promise((r) => setTimeout(r, 20));

  proc.child.kill("SIGTERM");
  const [seedEnd, openaiEnd] = await Promise.all([seed.ended, openai.ended]);
  t.notOk(seedEnd.cut, "the seed stream was closed by the server, not cut");
  t.notOk(openaiEnd.cut, "the OpenAI stream was closed by the server, not cut");

  const last = seed.events.at(-1)!;
  t.equal(last.event, "error", "the seed stream's last event is an error");
  t.same(JSON.parse(last.data), { error: { code: "shutting_down", message: "The service stopped before this request finished (drain deadline passed)." } });
  t.notOk(seed.events.some((e) => e.event === "done"));
  t.ok(seed.events.filter((e) => e.event === "delta").length >= 1);

  const lastChunk = JSON.parse(openai.events.at(-1)!.data) as { error?: { type: string; code: string } };
  t.same(lastChunk.error && { type: lastChunk.error.type, code: lastChunk.error.code }, { type: "service_unavailable_error", code: "shutting_down" });
  t.notOk(openai.events.some((e) => e.data === "[DONE]"), "no [DONE] after a cancelled stream");

  const queuedResponse = await queued;
  t.equal(queuedResponse.status, 503, "the queued request is cancelled with a 503");
  t.equal(queuedResponse.headers.get("retry-after"), "1");
  t.equal((await queuedResponse.json() as { error: { code: string } }).error.code, "shutting_down");

  t.same(await proc.exited, { code: 0, signal: null });
  t.match(proc.output(), /drain deadline passed: cancelling/);
});

t.test("a second signal stops at once", async (t) => {
  const { proc, base } = await start(t);
  const stream = collectEvents(await seedStream(base, 900), (e) => e.event === "delta");
  await stream.first;
  proc.child.kill("SIGTERM");
  await proc.waitForLine(/"msg":"draining/);
  proc.child.kill("SIGTERM");
  const exit = await proc.exited;
  t.same(exit, { code: 143, signal: null }, "exit 128 + SIGTERM");
  const { cut } = await stream.ended;
  t.ok(cut, "the stream was cut");
  t.notOk(stream.events.some((e) => e.event === "done"), "it did not wait for the stream");
  t.match(proc.output(), /second signal: stopping now/);
});
