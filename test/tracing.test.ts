// OpenTelemetry for real: the service as a process (what `npm start` runs) exporting over OTLP/HTTP to a
// receiver this test runs, as a Collector would. A request that carries a W3C traceparent continues that
// trace: a server span under the caller's span, the engine's work under it (queue, prompt processing,
// generation, embedding and rerank batches) with model, slot and token counts and never the user's text;
// its log line carries the trace and span ids. Without a traceparent a trace starts here. The app's Python
// backend (Debian's python3-httpx) sends one too. A second process with OTEL_SDK_DISABLED exports nothing.
import { execFile, spawnSync } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import t from "tap";
import { ensureMultilingualTestModels, ensureTestModels } from "../scripts/make-test-models.js";
import { projectRoot } from "../src/config.js";
import { startTracing, tracingOffReason } from "../src/telemetry/tracing.js";
import { startOtlpReceiver, type ReceivedSpan } from "./helpers/otlp.js";
import { startServiceProcess, type ServiceProcess } from "./helpers/process.js";

const SECRET = "Zanahoria-7f3c: mi contraseña secreta";
const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
const callerSpanId = "00f067aa0ba902b7";

t.test("tracing is on only when an exporter is asked for", async (t) => {
  t.match(tracingOffReason({}), /no OTEL_EXPORTER_OTLP_ENDPOINT/);
  t.equal(tracingOffReason({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }), null);
  t.equal(tracingOffReason({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/v1/traces" }), null);
  t.equal(tracingOffReason({ OTEL_TRACES_EXPORTER: "console" }), null);
  t.equal(tracingOffReason({ OTEL_TRACES_EXPORTER: "none", OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }), "OTEL_TRACES_EXPORTER=none");
  t.equal(tracingOffReason({ OTEL_SDK_DISABLED: "true", OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" }), "OTEL_SDK_DISABLED=true");
  t.equal(await startTracing(pino({ level: "silent" }), {}), null, "off: no SDK, nothing to register");
});

const receiver = await startOtlpReceiver();
t.teardown(() => receiver.close());
const models = await ensureTestModels();
const { rerank: rerankModel } = await ensureMultilingualTestModels();
const baseEnv = {
  LLM_MODEL: models.chat, EMBED_MODEL: models.embed, RERANK_MODELS: rerankModel, LLM_CONTEXT_SIZE: "1024", LLM_PARALLEL: "2",
  MODEL_DOWNLOAD: "false", OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
  // Export within 100 ms instead of 5 s, so the test waits little.
  OTEL_BSP_SCHEDULE_DELAY: "100",
};
const traced = startServiceProcess({ ...baseEnv, OTEL_SERVICE_NAME: "bora-llm-traced" });
const untraced = startServiceProcess({ ...baseEnv, OTEL_SERVICE_NAME: "bora-llm-disabled", OTEL_SDK_DISABLED: "true" });
t.teardown(() => { traced.child.kill("SIGKILL"); untraced.child.kill("SIGKILL"); });

async function baseOf(service: ServiceProcess): Promise<string> {
  const address = /http:\/\/([^"]+)/.exec(await service.waitForLine(/Server listening at/))![1]!;
  await service.waitForLine(/"msg":"ready"/, 120_000);
  return `http://${address}`;
}
const [tracedBase, untracedBase] = await Promise.all([baseOf(traced), baseOf(untraced)]);

const post = (base: string, url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${base}${url}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
const ofTrace = (id: string) => (spans: ReceivedSpan[]) => spans.filter((s) => s.traceId === id && s.resource["service.name"] === "bora-llm-traced");
const requestLines = (service: ServiceProcess) => service.output().split("\n").filter((l) => l.includes('"msg":"request"')).map((l) => JSON.parse(l) as Record<string, unknown>);

t.test("a traceparent continues the caller's trace: request, queue, prompt, generation", async (t) => {
  const response = await post(tracedBase, "/api/llm/generate", { messages: [{ role: "user", content: SECRET }], max_new_tokens: 5, temperature: 0, ignore_eos: true },
    { traceparent: `00-${traceId}-${callerSpanId}-01`, tracestate: "bora=backend,vendor=x1" });
  const body = await response.json() as { answer: string; tokens_generated: number; usage: { prompt_tokens: number } };
  t.equal(response.status, 200);
  const spans = ofTrace(traceId)(await receiver.waitFor((all) => ofTrace(traceId)(all).some((s) => s.name === "POST /api/llm/generate") && ofTrace(traceId)(all).some((s) => s.name === "llm.generate")));
  const byName = (name: string) => spans.find((s) => s.name === name)!;

  const server = byName("POST /api/llm/generate");
  t.equal(server.parentSpanId, callerSpanId, "the request span's parent is the caller's span");
  t.equal(server.kind, 2, "a SERVER span");
  t.equal(server.traceState, "bora=backend,vendor=x1", "tracestate kept");
  t.equal(server.attributes["http.route"], "/api/llm/generate");
  t.equal(server.attributes["http.response.status_code"], 200);

  const chat = spans.find((s) => s.name.startsWith("chat "))!;
  t.ok(chat, "a chat span");
  t.ok(spans.some((s) => s.spanId === chat.parentSpanId && s.parentSpanId === server.spanId), "under the request's handler span");
  t.equal(chat.attributes["gen_ai.request.model"], "test-qwen3-tiny");
  t.equal(chat.attributes["gen_ai.usage.input_tokens"], body.usage.prompt_tokens, "prompt tokens");
  t.equal(chat.attributes["gen_ai.usage.output_tokens"], body.tokens_generated, "generated tokens");
  t.type(chat.attributes["gen_ai.usage.cache_read.input_tokens"], "number", "cached prompt tokens");
  t.same(chat.attributes["gen_ai.response.finish_reasons"], ["length"]);
  t.type(chat.attributes["bora.slot"], "number", "the slot");

  const [queue, prompt, generation] = ["llm.queue", "llm.prompt", "llm.generate"].map(byName) as [ReceivedSpan, ReceivedSpan, ReceivedSpan];
  for (const child of [queue, prompt, generation]) t.equal(child.parentSpanId, chat.spanId, `${child.name} is a child of the chat span`);
  const eps = 0.01;
  t.ok(queue.startMs >= chat.startMs - eps && queue.endMs <= prompt.startMs + eps && prompt.endMs <= generation.startMs + eps && generation.endMs <= chat.endMs + eps,
    `queue, then prompt processing, then generation, inside the chat span: ${JSON.stringify([chat, queue, prompt, generation].map((s) => [s.startMs, s.endMs]))}`);
  // The request span's clock is Date.now()-anchored, the engine's performance.now(): a millisecond or two apart.
  t.ok(chat.endMs <= server.endMs + 5 && chat.startMs >= server.startMs - 5, "inside the request span");
  t.equal(prompt.attributes["gen_ai.usage.input_tokens"], body.usage.prompt_tokens);
  t.equal(generation.attributes["gen_ai.usage.output_tokens"], body.tokens_generated);

  const bodies = receiver.bodies.join("\n");
  t.notOk(bodies.includes("Zanahoria"), "the prompt's text is in no exported span");
  t.notOk(bodies.includes(body.answer), "nor the answer's");

  const line = requestLines(traced).find((l) => l["url"] === "/api/llm/generate" && l["trace_id"] === traceId);
  t.ok(line, "the request's log line carries its trace_id");
  t.equal(line?.["span_id"], server.spanId, "and the request span's id");
});

t.test("without a traceparent a trace starts here; a stream is traced to its end", async (t) => {
  const response = await post(tracedBase, "/v1/chat/completions", { messages: [{ role: "user", content: SECRET }], max_tokens: 3, stream: true });
  t.equal(response.status, 200);
  await response.text();
  const spans = await receiver.waitFor((all) => all.some((s) => s.name === "POST /v1/chat/completions" && s.traceId !== traceId));
  const server = spans.find((s) => s.name === "POST /v1/chat/completions")!;
  t.equal(server.parentSpanId, "", "a root span");
  t.match(server.traceId, /^[0-9a-f]{32}$/);
  const trace = ofTrace(server.traceId)(await receiver.waitFor((all) => ofTrace(server.traceId)(all).some((s) => s.name === "llm.generate")));
  t.ok(trace.some((s) => s.name.startsWith("chat ") && s.attributes["gen_ai.usage.output_tokens"] === 3), "the streamed generation's spans in the new trace");
  t.notOk(receiver.bodies.join("\n").includes("Zanahoria"));
});

t.test("embedding and rerank decode batches are spans of the request", async (t) => {
  const embedTrace = "5bf92f3577b34da6a3ce929d0e0e4737";
  const rerankTrace = "6bf92f3577b34da6a3ce929d0e0e4738";
  const embed = await post(tracedBase, "/api/llm/embed", { texts: [SECRET, "hola"] }, { traceparent: `00-${embedTrace}-${callerSpanId}-01` });
  t.equal(embed.status, 200);
  const rerank = await post(tracedBase, "/v1/rerank", { query: SECRET, documents: ["uno", "dos", "tres"] }, { traceparent: `00-${rerankTrace}-${callerSpanId}-01` });
  t.equal(rerank.status, 200);
  const spans = await receiver.waitFor((all) => ofTrace(embedTrace)(all).some((s) => s.name.endsWith(" batch")) && ofTrace(rerankTrace)(all).some((s) => s.name.endsWith(" batch")));
  const embedBatch = ofTrace(embedTrace)(spans).find((s) => s.name.endsWith(" batch"))!;
  t.equal(embedBatch.name, "embeddings test-minilm-tiny batch");
  t.equal(embedBatch.attributes["bora.batch.inputs"], 2);
  t.ok((embedBatch.attributes["bora.batch.tokens"] as number) > 2, "its token count");
  const rerankBatch = ofTrace(rerankTrace)(spans).find((s) => s.name.endsWith(" batch"))!;
  t.equal(rerankBatch.attributes["gen_ai.operation.name"], "rerank");
  t.equal(rerankBatch.attributes["bora.batch.inputs"], 3);
  t.notOk(receiver.bodies.join("\n").includes("Zanahoria"));
});

const python = [process.env["PYTHON_HTTPX"], "/usr/bin/python3", "python3"].filter((p): p is string => p !== undefined && p !== "")
  .find((p) => spawnSync(p, ["-c", "import httpx"], { stdio: "ignore" }).status === 0);
t.test("the app's backend (Python httpx) sends a traceparent: its trace id is in the spans and the log", {
  skip: python === undefined ? "no python3 with httpx: install Debian's python3-httpx (.ci/run does) or set PYTHON_HTTPX" : false,
}, async (t) => {
  const { stdout } = await promisify(execFile)(python!, [path.join(projectRoot, "test", "python", "traced_call.py"), tracedBase], { timeout: 60_000 });
  const sent = JSON.parse(stdout) as { trace_id: string; parent_span_id: string; request_id: string; tokens: number };
  t.equal(sent.tokens, 3);
  const spans = ofTrace(sent.trace_id)(await receiver.waitFor((all) => ofTrace(sent.trace_id)(all).some((s) => s.name === "POST /api/llm/generate")));
  const server = spans.find((s) => s.name === "POST /api/llm/generate")!;
  t.equal(server.parentSpanId, sent.parent_span_id, "the service's span is a child of the backend's");
  const line = requestLines(traced).find((l) => l["reqId"] === sent.request_id);
  t.equal(line?.["trace_id"], sent.trace_id, "the service's log line for that request (found by its x-request-id) has the backend's trace id");
});

t.test("OTEL_SDK_DISABLED: nothing exported, no trace ids in the logs", async (t) => {
  const response = await post(untracedBase, "/api/llm/generate", { messages: [{ role: "user", content: "hola" }], max_new_tokens: 2 }, { traceparent: `00-${traceId}-${callerSpanId}-01` });
  t.equal(response.status, 200);
  t.equal((await post(untracedBase, "/api/llm/embed", { texts: ["hola"] })).status, 200);
  // The traced process exports within 100 ms; give the other one ten times that.
  await new Promise((r) => setTimeout(r, 1000));
  t.same(receiver.spans.filter((s) => s.resource["service.name"] === "bora-llm-disabled"), [], "no span from the disabled process");
  const lines = requestLines(untraced);
  t.ok(lines.length >= 2, "it logged the requests");
  t.ok(lines.every((l) => !("trace_id" in l)), "without trace ids");
});
