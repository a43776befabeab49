// /metrics after a known set of requests holds exactly those counts (real engines, real port).
import t from "tap";
import { startTestService } from "./helpers/service.js";

const service = await startTestService();
const base = await service.listen();
t.teardown(() => service.close());

const post = (path: string, body: unknown) =>
  fetch(`${base}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

async function scrape(): Promise<(name: string, labels?: Record<string, string>) => number | undefined> {
  const text = await (await fetch(`${base}/metrics`)).text();
  return (name, labels = {}) => {
    for (const line of text.split("\n")) {
      const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!match || match[1] !== name) continue;
      const got = Object.fromEntries([...(match[2] ?? "").matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
      if (Object.entries(labels).every(([k, v]) => got[k] === v) && Object.keys(got).length === Object.keys(labels).length) return Number(match[3]);
    }
    return undefined;
  };
}

t.test("counters and histograms hold exactly the requests made", async (t) => {
  const before = await scrape();
  t.equal(before("bora_generated_tokens_total"), 0, "the warm-up is not counted");
  t.equal(before("bora_draining"), 0);
  t.equal(before("bora_ready"), 1);
  t.equal(before("bora_slots_total"), 2);
  const chatName = service.engines.models.chat.name;
  const embedName = service.engines.models.embedding.name;
  t.ok(before("bora_model_load_seconds", { model: chatName, kind: "chat" })! > 0);
  t.ok(before("bora_model_load_seconds", { model: embedName, kind: "embedding" })! > 0);
  t.ok(before("bora_model_weights_bytes", { model: embedName, kind: "embedding" })! > 0);
  t.equal(before("bora_model_info", { model: chatName, kind: "chat", default: "true" }), 1);

  const decodes: number[] = [];
  const stopListening = service.engines.embed.onBatch((texts) => { decodes.push(texts); });
  t.teardown(stopListening);
  const message = [{ role: "user", content: "hola" }];
  const results: { tokens_generated: number; usage: { prompt_tokens: number } }[] = [];
  for (const tokens of [3, 5]) {
    const res = await post("/api/llm/generate", { messages: message, max_new_tokens: tokens, temperature: 0, ignore_eos: true });
    t.equal(res.status, 200);
    results.push(await res.json() as typeof results[number]);
  }
  const stream = await post("/api/llm/generate", { messages: message, max_new_tokens: 4, ignore_eos: true, stream: true });
  const done = (await stream.text()).split("\n\n").find((b) => b.startsWith("event: done"))!;
  results.push(JSON.parse(done.slice(done.indexOf("data: ") + 6)) as typeof results[number]);
  t.equal((await post("/api/llm/generate", { messages: message, max_new_tokens: "3" })).status, 400);
  t.equal((await post("/api/llm/embed", { texts: ["uno", "dos", "tres"] })).status, 200);
  t.equal((await post("/v1/embeddings", { input: ["cuatro", "cinco"] })).status, 200);
  t.equal((await post("/v1/chat/completions", { messages: message, max_tokens: 2, ignore_eos: true })).status, 200);

  const m = await scrape();
  t.same(results.map((r) => r.tokens_generated), [3, 5, 4]);
  t.equal(m("bora_generated_tokens_total"), 3 + 5 + 4 + 2, "tokens generated");
  t.equal(m("bora_prompt_tokens_total"), results.reduce((sum, r) => sum + r.usage.prompt_tokens, 0) + results[0]!.usage.prompt_tokens, "prompt tokens (the OpenAI call has the same prompt)");
  t.equal(m("bora_http_requests_total", { route: "/api/llm/generate", status: "200" }), 3);
  t.equal(m("bora_http_requests_total", { route: "/api/llm/generate", status: "400" }), 1);
  t.equal(m("bora_http_requests_total", { route: "/api/llm/embed", status: "200" }), 1);
  t.equal(m("bora_http_requests_total", { route: "/v1/embeddings", status: "200" }), 1);
  t.equal(m("bora_http_requests_total", { route: "/v1/chat/completions", status: "200" }), 1);
  t.equal(m("bora_http_request_duration_seconds_count", { route: "/api/llm/generate" }), 4, "latency histogram: every generate request");
  t.equal(m("bora_time_to_first_token_seconds_count"), 4, "TTFT: one per successful generation");
  t.ok(m("bora_time_to_first_token_seconds_sum")! > 0);

  // How texts are split into decodes is the embedding engine's business (and changes with its
  // tuning); the histogram must hold one observation per decode the engine reports, every text once.
  t.equal(m("bora_embed_batch_texts_count", { model: embedName }), decodes.length, "one observation per embedding decode");
  t.equal(m("bora_embed_batch_texts_sum", { model: embedName }), 5, "every text in exactly one decode");
  t.same(decodes.reduce((a, b) => a + b, 0), 5);
  for (const le of ["1", "2", "4"]) {
    t.equal(m("bora_embed_batch_texts_bucket", { le, model: embedName }), decodes.filter((n) => n <= Number(le)).length, `bucket le=${le}`);
  }
  t.equal(m("bora_embed_batch_texts_bucket", { le: "+Inf", model: embedName }), decodes.length);

  t.equal(m("bora_queue_waiting"), 0);
  t.equal(m("bora_slots_busy"), 0);
  t.equal(m("bora_http_requests_in_flight"), 0, "probes (this scrape) are not counted");

  service.state.markStopping();
  const draining = await scrape();
  t.equal(draining("bora_draining"), 1);
  t.equal(draining("bora_ready"), 0);
});
