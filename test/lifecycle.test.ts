// The process as `npm start` runs it: health at once, ready after loading and warm-up, 503 before,
// what it logs at start, and a clean stop on SIGTERM/SIGINT.
import t from "tap";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { buildApp } from "../src/http/app.js";
import { ServiceState } from "../src/service.js";
import { startServiceProcess } from "./helpers/process.js";

const models = await ensureTestModels();

t.test("before the models are ready: /health 200, everything else 503 with Retry-After", async (t) => {
  const app = await buildApp({ state: new ServiceState(), bodyLimitBytes: 1 << 20, logger: false });
  t.teardown(() => app.close());
  t.equal((await app.inject({ method: "GET", url: "/health" })).statusCode, 200);
  const ready = await app.inject({ method: "GET", url: "/ready" });
  t.equal(ready.statusCode, 503);
  t.equal(ready.json<{ status: string }>().status, "loading");
  for (const [url, payload] of [["/api/llm/generate", { messages: [{ role: "user", content: "hola" }] }], ["/api/llm/embed", { texts: ["hola"] }]] as const) {
    const res = await app.inject({ method: "POST", url, payload });
    t.equal(res.statusCode, 503, url);
    t.equal(res.headers["retry-after"], "5");
    t.equal(res.json<{ error: { code: string } }>().error.code, "not_ready");
  }
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  t.test(`a real process: starts, logs its setup, serves, stops on ${signal}`, async (t) => {
    const proc = startServiceProcess({ LLM_MODEL: models.chat, EMBED_MODEL: models.embed, LLM_CONTEXT_SIZE: "1024" });
    t.teardown(() => { proc.child.kill("SIGKILL"); });
    const listening = await proc.waitForLine(/Server listening at/);
    const base = /http:\/\/[^"]+/.exec(listening)![0];
    // /health answers while the models load.
    const health = await fetch(`${base}/health`);
    t.equal(health.status, 200);
    const loaded = JSON.parse(await proc.waitForLine(/"chat model loaded"/)) as Record<string, unknown>;
    for (const key of ["backend", "threads", "gpuLayers", "loadMs", "slots", "contextPerSlot", "contextMemoryMiB"]) t.ok(key in loaded, `start log has ${key}`);
    t.equal(loaded.backend, "cpu");
    await proc.waitForLine(/"msg":"ready"/);
    t.equal((await fetch(`${base}/ready`)).status, 200);
    const res = await fetch(`${base}/api/llm/generate`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [{ role: "user", content: "secreto-del-usuario" }], max_new_tokens: 2 }),
    });
    t.equal(res.status, 200);
    const metrics = await (await fetch(`${base}/metrics`)).text();
    t.match(metrics, /bora_generated_tokens_total [1-9]/);
    t.match(metrics, /bora_slots_total 2/);
    t.match(metrics, /bora_http_requests_total\{route="\/api\/llm\/generate",status="200"\} 1/);
    proc.child.kill(signal);
    const exit = await proc.exited;
    t.equal(exit.code, 0, "exit code 0");
    t.match(proc.output(), /shutting down/);
    t.notMatch(proc.output(), /secreto-del-usuario/, "no user text in the info log");
  });
}

t.test("a bad configuration value stops the start with a message", async (t) => {
  const proc = startServiceProcess({ LLM_THREADS: "lots" });
  const exit = await proc.exited;
  t.equal(exit.code, 2);
  t.match(proc.output(), /LLM_THREADS="lots"/);
});
