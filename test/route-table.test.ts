// Table-driven tests over every route the app registers (read from the app itself, so a new route cannot
// be missed): with LLM_API_KEY set, each answers 401 without the key in its API's error shape unless it
// is documented as open; and every route that takes a model answers an unknown (or wrong-kind) model
// with its API's one status and shape.
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { InjectOptions } from "fastify";
import t from "tap";
import { ensureMultilingualTestModels } from "../scripts/make-test-models.js";
import { playgroundRoot } from "../src/http/routes/playground.js";
import { startTestService } from "./helpers/service.js";

const KEY = "route-table-key-0123456789";
const slotDir = await mkdtemp(path.join(os.tmpdir(), "bora-route-table-"));
const multilingual = await ensureMultilingualTestModels();
const service = await startTestService({ LLM_API_KEY: KEY, RERANK_MODELS: multilingual.rerank, SLOT_SAVE_PATH: slotDir, WARMUP: "false" });
t.teardown(async () => {
  await service.close();
  await rm(slotDir, { recursive: true, force: true });
});
const { app } = service;
const names = { chat: service.engines.models.chat.name, embed: service.engines.models.embedding.name, rerank: service.engines.models.defaultOf("rerank")!.name };

type Style = "seed" | "openai" | "ollama" | "tei";
/** The error shape each API documents (README, docs/http-lifecycle.md), by path: the contract the routes must keep. */
function documentedStyle(url: string): Style {
  if (url.startsWith("/api/llm/") || url === "/api/status") return "seed";
  if (url.startsWith("/api/")) return "ollama";
  return "openai"; // /v1/*, and llama-server's, Cohere's and the Responses alias: /tokenize, /detokenize, /rerank, /v2/rerank, /slots, /responses
}
function hasShape(style: Style, body: unknown): boolean {
  const error = (body as { error?: unknown } | null)?.error;
  if (style === "ollama") return typeof error === "string" && error !== "";
  if (style === "tei") return typeof error === "string" && typeof (body as { error_type?: unknown }).error_type === "string";
  const e = error as { message?: unknown; code?: unknown; type?: unknown; param?: unknown } | undefined;
  if (typeof e?.message !== "string" || typeof e.code !== "string") return false;
  return style === "openai" ? typeof e.type === "string" && "param" in e : !("type" in e);
}

// Open on purpose (README, "API keys"): the probes, /metrics with METRICS_AUTH=false, the OpenAPI page,
// the playground's static files (the page asks for the key itself).
const staticFiles = async (dir: string, prefix = ""): Promise<string[]> =>
  (await Promise.all((await readdir(dir, { withFileTypes: true })).map((e) =>
    e.isDirectory() ? staticFiles(path.join(dir, e.name), `${prefix}/${e.name}`) : Promise.resolve([`${prefix}/${e.name}`])))).flat();
const openPaths = new Set(["/health", "/ready", "/metrics", "/", ...await staticFiles(playgroundRoot)]);
const isDocumentedOpen = (url: string) => openPaths.has(url) || url === "/docs" || url.startsWith("/docs/");

/** A concrete URL for a route pattern: parameters filled in. */
const concrete = (url: string) => url.replace(/:[\w-]+/g, "0").replace("*", "some-model");

t.test("every registered route answers 401 without the key, in its API's shape, unless documented as open", async (t) => {
  const routes = app.registeredRoutes.flatMap((r) => [r.method].flat().map((method) => ({ method, url: r.url })))
    .filter((r) => r.method !== "OPTIONS"); // CORS preflights are answered before the key check (browsers send no credentials)
  t.ok(routes.length >= 40, `${routes.length} routes registered`);
  const opened: string[] = [];
  for (const { method, url } of routes) {
    const request: InjectOptions = { method: method as InjectOptions["method"], url: concrete(url) };
    if (method === "POST") Object.assign(request, { payload: {}, headers: { "content-type": "application/json" } });
    const res = await app.inject(request);
    if (isDocumentedOpen(url)) {
      t.not(res.statusCode, 401, `${method} ${url} is open`);
      opened.push(`${method} ${url}`);
      continue;
    }
    t.equal(res.statusCode, 401, `${method} ${url}: 401 without the key`);
    t.match(res.headers["www-authenticate"], /^Bearer/, `${method} ${url}: WWW-Authenticate`);
    if (method !== "HEAD") t.ok(hasShape(documentedStyle(url), res.json()), `${method} ${url}: ${documentedStyle(url)} shape: ${res.body.slice(0, 120)}`);
    const wrong = await app.inject({ ...request, headers: { ...request.headers, authorization: "Bearer not-the-key" } });
    t.equal(wrong.statusCode, 401, `${method} ${url}: 401 with a wrong key`);
  }
  t.ok(opened.some((r) => r === "GET /health") && opened.some((r) => r === "GET /ready"), "the probes are among the open routes");
  t.notOk(opened.some((r) => r.includes("/slots")), "/slots and its actions need the key");
  // The actions with the key still work (the key is the only change).
  const erase = await app.inject({ method: "POST", url: "/slots/0?action=erase", headers: { authorization: `Bearer ${KEY}` } });
  t.equal(erase.statusCode, 200, erase.body);
});

type Case = { method?: "GET" | "POST"; url: string; body?: (model: string) => unknown; style: Style };
const messages = [{ role: "user", content: "hola" }];
/** Every route that takes a model, with the smallest valid body naming `model`. */
const modelRoutes: Case[] = [
  { url: "/api/llm/embed", body: (model) => ({ texts: ["hola"], model }), style: "seed" },
  { url: "/api/llm/rerank", body: (model) => ({ query: "q", documents: ["a"], model }), style: "seed" },
  { url: "/v1/chat/completions", body: (model) => ({ model, messages, max_tokens: 1 }), style: "openai" },
  { url: "/v1/completions", body: (model) => ({ model, prompt: "hola", max_tokens: 1 }), style: "openai" },
  { url: "/v1/embeddings", body: (model) => ({ model, input: "hola" }), style: "openai" },
  { url: "/v1/responses", body: (model) => ({ model, input: "hola", max_output_tokens: 1 }), style: "openai" },
  { url: "/responses", body: (model) => ({ model, input: "hola", max_output_tokens: 1 }), style: "openai" },
  { url: "/v1/responses/input_tokens", body: (model) => ({ model, input: "hola" }), style: "openai" },
  { method: "GET", url: "/v1/models/*", style: "openai" },
  { url: "/v1/rerank", body: (model) => ({ model, query: "q", documents: ["a"] }), style: "openai" },
  { url: "/rerank", body: (model) => ({ model, query: "q", documents: ["a"] }), style: "openai" },
  { url: "/v2/rerank", body: (model) => ({ model, query: "q", documents: ["a"] }), style: "openai" },
  { url: "/tokenize", body: (model) => ({ model, content: "hola" }), style: "openai" },
  { url: "/detokenize", body: (model) => ({ model, tokens: [1] }), style: "openai" },
  { url: "/api/chat", body: (model) => ({ model, messages, stream: false, options: { num_predict: 1 } }), style: "ollama" },
  { url: "/api/generate", body: (model) => ({ model, prompt: "hola", stream: false, options: { num_predict: 1 } }), style: "ollama" },
  { url: "/api/embed", body: (model) => ({ model, input: "hola" }), style: "ollama" },
  { url: "/api/embeddings", body: (model) => ({ model, prompt: "hola" }), style: "ollama" },
  { url: "/api/show", body: (model) => ({ model }), style: "ollama" },
];
/** One status per API for a name it does not serve (docs/http-lifecycle.md, "Models"). */
const unknownStatus: Record<Style, number> = { seed: 400, openai: 404, ollama: 404, tei: 422 };

const send = (c: Case, model: string) => app.inject(c.method === "GET"
  ? { method: "GET", url: c.url.replace("*", encodeURIComponent(model)), headers: { authorization: `Bearer ${KEY}` } }
  : { method: "POST", url: c.url, payload: c.body!(model) as object, headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` } });

t.test("every route that takes a model answers an unknown model with its API's one status and shape", async (t) => {
  // The seed API's generate has no `model` field: it always serves the chat model.
  const withModel = app.registeredRoutes.filter((r) => r.config?.model !== undefined && r.url !== "/api/llm/generate").map((r) => r.url);
  t.same([...new Set(withModel)].sort(), modelRoutes.map((c) => c.url).sort(), "the table holds every route that resolves a model");
  for (const c of modelRoutes) {
    const res = await send(c, "no-such-model");
    t.equal(res.statusCode, unknownStatus[c.style], `${c.url}: ${unknownStatus[c.style]}`);
    const body = res.json<{ error: string | { code: string; message: string; param?: string; field?: string } }>();
    t.ok(hasShape(c.style, body), `${c.url}: ${c.style} shape: ${res.body.slice(0, 160)}`);
    if (c.style === "ollama") t.match(body.error, /^model "no-such-model" not found; this server serves /);
    else {
      t.match(body.error, { code: "model_not_found", message: /'no-such-model'/ }, `${c.url}: model_not_found naming the model`);
      t.match(body.error, c.style === "openai" ? { param: "model" } : { field: "model" });
    }
    t.ok(res.body.includes(names.chat) || res.body.includes(names.embed) || res.body.includes(names.rerank), `${c.url}: lists what is served`);
  }
  const tei = await app.inject({ method: "POST", url: "/rerank", payload: { model: "no-such-model", query: "q", texts: ["a"] }, headers: { "content-type": "application/json", authorization: `Bearer ${KEY}` } });
  t.equal(tei.statusCode, 422, "TEI's /rerank body: 422");
  t.match(tei.json(), { error: /no-such-model/, error_type: "Validation" });
});

t.test("a model of another kind: OpenAI 404, the seed API 400, Ollama 400 'does not support', TEI 422", async (t) => {
  const wrongKind: [Case, string, number, RegExp][] = [
    [modelRoutes.find((c) => c.url === "/v1/chat/completions")!, names.embed, 404, /is an embedding model, not a chat model/],
    [modelRoutes.find((c) => c.url === "/v1/embeddings")!, names.chat, 404, /is a chat model, not an embedding model/],
    [modelRoutes.find((c) => c.url === "/v1/rerank")!, names.embed, 404, /is an embedding model, not a rerank model/],
    [modelRoutes.find((c) => c.url === "/api/llm/embed")!, names.rerank, 400, /is a rerank model, not an embedding model/],
    [modelRoutes.find((c) => c.url === "/api/chat")!, names.embed, 400, /does not support generate; use/],
    [modelRoutes.find((c) => c.url === "/api/embed")!, names.chat, 400, /does not support embeddings; use/],
  ];
  for (const [c, model, status, message] of wrongKind) {
    const res = await send(c, model);
    t.equal(res.statusCode, status, `${c.url} with ${model}`);
    t.ok(hasShape(c.style, res.json()), `${c.url}: ${c.style} shape`);
    t.match(res.body, message);
  }
});
