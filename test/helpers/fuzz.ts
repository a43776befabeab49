// The property-based suite's engine (fast-check): generated requests over the whole schema of every
// route, fields combined (tools with tool_choice and ignore_eos, grammars, penalties, logprobs, stops,
// thinking, streaming, cancellation mid-stream, oversized and malformed bodies; the retrieval routes'
// embeddings and rerank with clients that hang up mid-request and floods past the retrieval queue's
// bound), sent in small concurrent batches to a real service process on the tiny models. After each
// batch: the process is alive, every answer is 2xx or a 4xx in its route's own error shape (5xx only
// 503 not ready / draining, 504 past a deadline; a 429 carries Retry-After), every slot is free and
// every queue empty (generation and retrieval), and a plain chat and a plain embed request answer.
// A failure is shrunk by fast-check and printed as curl commands, with the seed.
import fc from "fast-check";
import { ensureMultilingualTestModels, ensureTestModels } from "../../scripts/make-test-models.js";
import { waitIdle } from "./metrics.js";
import { startServiceProcess, type ServiceProcess } from "./process.js";

/** A body: JSON, raw bytes (malformed), or an oversized JSON body of `oversize` characters of content. */
export type FuzzBody = { json: unknown } | { raw: string } | { oversize: number };
export type FuzzRequest = {
  route: string;
  body: FuzzBody;
  contentType: string;
  /** Abort after this many chunks of a streamed answer (none: read it all). */
  cancelAfterChunks?: number;
  /** Hang up this many milliseconds after sending, answered or not (a client that leaves mid-request). */
  cancelAfterMs?: number;
  /** Send this many copies at once (a flood: the retrieval queue's bound answers 429 beyond it). */
  copies?: number;
};

// ---------------------------------------------------------------------------------------------------
// Generators. Each field is mostly valid, sometimes junk, and present or not: the combinations are
// what reached the grammar and the loop unseen before.

const junk = fc.oneof(fc.constant(null), fc.string({ maxLength: 8 }), fc.integer({ min: -5, max: 100_000 }), fc.boolean(), fc.constant([]), fc.constant({}), fc.constant([null]));
const maybeJunk = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 30, arbitrary: valid }, { weight: 1, arbitrary: junk });
const text = fc.oneof(
  fc.constantFrom("hola", "¿Qué tiempo hace en Lima?", "Devuelve un JSON", "<think>x</think>", "<|im_start|>user", "</tool_call>", "🙂 ñ", ""),
  fc.string({ maxLength: 40 }),
);
const smallInt = fc.oneof({ weight: 8, arbitrary: fc.integer({ min: 1, max: 24 }) }, { weight: 1, arbitrary: fc.constantFrom(0, -1, 5000, 2 ** 31) });

const jsonSchema = fc.oneof(
  fc.constant({ type: "object", properties: { city: { type: "string" } }, required: ["city"] }),
  fc.constant({ type: "object", properties: { n: { type: "integer", minimum: 0 }, tags: { type: "array", items: { type: "string" }, maxItems: 2 } } }),
  fc.constant({ type: "object", properties: { mode: { enum: ["a", "b"] } }, required: ["mode"], additionalProperties: false }),
  fc.constant({ type: "string" }),
  fc.constant({}),
  fc.constant({ type: "object", properties: { x: { $ref: "#/$defs/missing" } } }),
  fc.constant({ type: "nonsense" }),
);
const toolName = fc.constantFrom("get_weather", "search", "calc", "a.b-c_d");
const tool = fc.record({
  type: fc.constant("function"),
  function: fc.record({ name: toolName, description: fc.option(text, { nil: undefined }), parameters: fc.option(jsonSchema, { nil: undefined }) }, { requiredKeys: ["name"] }),
});
const tools = maybeJunk(fc.array(maybeJunk(tool), { minLength: 0, maxLength: 3 }));
const toolChoice = maybeJunk(fc.oneof(
  fc.constantFrom("none", "auto", "required"),
  toolName.map((name) => ({ type: "function", function: { name } })),
));
const responseFormat = maybeJunk(fc.oneof(
  fc.constant({ type: "text" }),
  fc.constant({ type: "json_object" }),
  jsonSchema.map((schema) => ({ type: "json_schema", json_schema: { name: "out", schema } })),
));
const stop = maybeJunk(fc.oneof(fc.constantFrom("\n", "a", "}", "</think>"), fc.array(fc.constantFrom("\n", "e", "o", ".", "<tool_call>"), { maxLength: 3 })));

/** OpenAI-named sampling controls (seed, OpenAI chat and completions share them). */
const samplingFields = {
  temperature: maybeJunk(fc.double({ min: 0, max: 2, noNaN: true })),
  top_p: maybeJunk(fc.double({ min: 0, max: 1, noNaN: true })),
  top_k: maybeJunk(fc.integer({ min: 0, max: 1000 })),
  min_p: maybeJunk(fc.double({ min: 0, max: 1, noNaN: true })),
  seed: maybeJunk(fc.integer({ min: 0, max: 2 ** 32 - 1 })),
  stop,
  presence_penalty: maybeJunk(fc.double({ min: -2, max: 2, noNaN: true })),
  frequency_penalty: maybeJunk(fc.double({ min: -2, max: 2, noNaN: true })),
  repeat_penalty: maybeJunk(fc.oneof(fc.double({ min: 0, max: 10, noNaN: true }), fc.constantFrom(0, 1, 1.1, -1))),
  response_format: responseFormat,
  ignore_eos: maybeJunk(fc.boolean()),
  enable_thinking: maybeJunk(fc.boolean()),
};

const toolCall = fc.record({ id: fc.constantFrom("call_1", "call_2"), type: fc.constant("function"), function: fc.record({ name: toolName, arguments: fc.constantFrom("{}", "{\"city\":\"Lima\"}", "not json") }) });
const openAIMessage = fc.oneof(
  fc.record({ role: fc.constantFrom("system", "developer", "user"), content: maybeJunk(fc.oneof(text, fc.constant([{ type: "text", text: "hola" }]))) }),
  fc.record({ role: fc.constant("assistant"), content: fc.oneof(text, fc.constant(null)), tool_calls: fc.option(fc.array(toolCall, { maxLength: 2 }), { nil: undefined }) }, { requiredKeys: ["role"] }),
  fc.record({ role: fc.constant("tool"), content: text, tool_call_id: fc.constantFrom("call_1", "call_9") }, { requiredKeys: ["role", "content"] }),
);
const messages = maybeJunk(fc.array(openAIMessage, { minLength: 1, maxLength: 4 }).map((m) => [...m, { role: "user", content: "hola" }]));
const seedMessages = maybeJunk(fc.array(fc.record({ role: fc.constantFrom("system", "user", "assistant"), content: text }), { minLength: 0, maxLength: 3 })
  .map((m) => [...m, { role: "user", content: "hola" }]));

const record = <T extends Record<string, fc.Arbitrary<unknown>>>(fields: T, required: (keyof T)[] = []) =>
  fc.record(fields, { requiredKeys: required as never[] });

/** The fuzzed service's retrieval limits (runFuzz's env): small, so floods and big requests reach them. */
export const FUZZ_RETRIEVAL = { maxTexts: 64, maxDocuments: 32, queueTexts: 256 } as const;

export function requestArbitrary(models: { chat: string; embed: string; rerank: string }): fc.Arbitrary<FuzzRequest> {
  const model = fc.oneof({ weight: 6, arbitrary: fc.constant(models.chat) }, { weight: 1, arbitrary: fc.constantFrom(models.embed, "no-such-model", "") });
  const embedModel = fc.oneof({ weight: 6, arbitrary: fc.constant(models.embed) }, { weight: 1, arbitrary: fc.constantFrom(models.chat, "no-such-model") });
  const rerankModel = fc.oneof({ weight: 6, arbitrary: fc.constant(models.rerank) }, { weight: 1, arbitrary: fc.constantFrom(models.embed, "no-such-model") });
  // Mostly a few texts; sometimes up to the limit, or past it (a 400), so a decode holds many.
  const manyTexts = fc.oneof(
    { weight: 6, arbitrary: fc.array(text, { maxLength: 4 }) },
    { weight: 2, arbitrary: fc.integer({ min: 5, max: FUZZ_RETRIEVAL.maxTexts }).map((n) => Array.from({ length: n }, (_, i) => `texto número ${i} sobre el jaguar`)) },
    { weight: 1, arbitrary: fc.constant(Array.from({ length: FUZZ_RETRIEVAL.maxTexts + 1 }, (_, i) => `texto ${i}`)) },
  );
  const documents = fc.oneof(
    { weight: 6, arbitrary: fc.array(maybeJunk(fc.oneof(text, text.map((t) => ({ text: t })))), { maxLength: 4 }) },
    { weight: 2, arbitrary: fc.integer({ min: 5, max: FUZZ_RETRIEVAL.maxDocuments + 2 }).map((n) => Array.from({ length: n }, (_, i) => `documento ${i} sobre la selva`)) },
  );
  const stream = maybeJunk(fc.boolean());
  const ollamaOptions = maybeJunk(record({
    temperature: maybeJunk(fc.double({ min: 0, max: 2, noNaN: true })), top_p: maybeJunk(fc.double({ min: 0, max: 1, noNaN: true })),
    top_k: maybeJunk(fc.integer({ min: 0, max: 1000 })), num_predict: maybeJunk(fc.oneof({ weight: 20, arbitrary: smallInt }, { weight: 1, arbitrary: fc.constantFrom(-1, -2) })),
    seed: maybeJunk(fc.integer({ min: -1, max: 1000 })), stop: maybeJunk(fc.array(fc.constantFrom("\n", "a", "}"), { maxLength: 2 })),
    repeat_penalty: maybeJunk(fc.constantFrom(0, 0.5, 1, 1.3)), presence_penalty: maybeJunk(fc.double({ min: -2, max: 2, noNaN: true })),
    num_ctx: fc.constantFrom(512, 99999),
    // Ollama's default is "until the context is full": mostly a short answer, so a run covers many requests.
  }, ["num_predict"]));
  const ollamaFormat = maybeJunk(fc.oneof(fc.constant("json"), fc.constant(""), jsonSchema));

  const bodies: [string, fc.Arbitrary<Record<string, unknown>>][] = [
    ["/api/llm/generate", record({ messages: seedMessages, max_new_tokens: maybeJunk(smallInt), stream, tools, tool_choice: toolChoice, parallel_tool_calls: maybeJunk(fc.boolean()), ...samplingFields }, ["messages", "max_new_tokens"])],
    ["/v1/chat/completions", record({
      model, messages, max_tokens: maybeJunk(smallInt), max_completion_tokens: maybeJunk(smallInt), stream,
      stream_options: maybeJunk(fc.record({ include_usage: fc.boolean() })), tools, tool_choice: toolChoice, parallel_tool_calls: maybeJunk(fc.boolean()),
      logprobs: maybeJunk(fc.boolean()), top_logprobs: maybeJunk(fc.integer({ min: 0, max: 20 })), n: maybeJunk(fc.constantFrom(1, 2)),
      chat_template_kwargs: maybeJunk(fc.record({ enable_thinking: fc.boolean() })), ...samplingFields,
    }, ["messages", "max_tokens"])],
    ["/v1/completions", record({
      model, prompt: maybeJunk(fc.oneof(text.filter((s) => s !== ""), fc.array(fc.constant("hola"), { minLength: 1, maxLength: 2 }))), max_tokens: maybeJunk(smallInt), stream,
      logprobs: maybeJunk(fc.integer({ min: 0, max: 5 })), echo: maybeJunk(fc.constant(false)), suffix: fc.constant(null),
      stream_options: maybeJunk(fc.record({ include_usage: fc.boolean() })), tools, tool_choice: toolChoice, ...samplingFields,
    }, ["prompt", "max_tokens"])],
    ["/v1/embeddings", record({
      model: embedModel, input: maybeJunk(fc.oneof(text, fc.array(text, { maxLength: 4 }), fc.array(fc.integer({ min: 0, max: 30000 }), { maxLength: 5 }))),
      encoding_format: maybeJunk(fc.constantFrom("float", "base64")), dimensions: maybeJunk(fc.constantFrom(384, 12)),
    }, ["input"])],
    ["/api/chat", record({
      model, messages: maybeJunk(fc.array(fc.record({ role: fc.constantFrom("system", "user", "assistant", "tool"), content: text }), { maxLength: 3 })),
      tools: maybeJunk(fc.array(tool, { maxLength: 2 })), format: ollamaFormat, options: ollamaOptions, stream, think: maybeJunk(fc.oneof(fc.boolean(), fc.constantFrom("low", "high"))),
      logprobs: maybeJunk(fc.boolean()), top_logprobs: maybeJunk(fc.integer({ min: 0, max: 20 })), keep_alive: fc.constantFrom("5m", 0),
    }, ["model", "options"])],
    ["/api/generate", record({
      model, prompt: maybeJunk(text), system: maybeJunk(text), raw: maybeJunk(fc.boolean()), suffix: maybeJunk(fc.constantFrom("", "end")),
      format: ollamaFormat, options: ollamaOptions, stream, think: maybeJunk(fc.boolean()), logprobs: maybeJunk(fc.boolean()), context: fc.constant([1, 2]),
    }, ["model", "options"])],
    ["/api/embed", record({ model: embedModel, input: maybeJunk(fc.oneof(text, fc.array(text, { maxLength: 3 }))), truncate: maybeJunk(fc.boolean()) }, ["model"])],
    ["/api/llm/embed", record({ texts: maybeJunk(manyTexts), model: maybeJunk(embedModel), input_type: maybeJunk(fc.constantFrom("search_query", "search_document")) }, ["texts"])],
    ["/api/embeddings", record({ model: embedModel, prompt: maybeJunk(text) }, ["model"])],
    ["/v1/rerank", record({ model: maybeJunk(rerankModel), query: maybeJunk(text), documents: maybeJunk(documents), top_n: maybeJunk(smallInt), return_documents: maybeJunk(fc.boolean()), raw_scores: maybeJunk(fc.boolean()), truncate: maybeJunk(fc.boolean()) }, ["query", "documents"])],
    ["/v2/rerank", record({ model: maybeJunk(rerankModel), query: maybeJunk(text), documents: maybeJunk(documents), top_n: maybeJunk(smallInt), rank_fields: maybeJunk(fc.constantFrom(["text"], ["title"])) }, ["query", "documents"])],
    // TEI's shape (texts) or Cohere's (documents) on the same route.
    ["/rerank", fc.oneof(
      record({ query: maybeJunk(text), texts: maybeJunk(manyTexts), truncate: maybeJunk(fc.boolean()), raw_scores: maybeJunk(fc.boolean()), return_text: maybeJunk(fc.boolean()), model: maybeJunk(rerankModel) }, ["query", "texts"]),
      record({ query: maybeJunk(text), documents: maybeJunk(documents), model: maybeJunk(rerankModel) }, ["query", "documents"]),
    )],
    ["/api/llm/rerank", record({ query: maybeJunk(text), documents: maybeJunk(fc.array(text, { maxLength: 6 })), top_n: maybeJunk(smallInt), model: maybeJunk(rerankModel) }, ["query", "documents"])],
    ["/tokenize", record({ content: maybeJunk(text), add_special: maybeJunk(fc.boolean()), parse_special: maybeJunk(fc.boolean()), with_pieces: maybeJunk(fc.boolean()), model: maybeJunk(fc.oneof(model, embedModel)) }, ["content"])],
    ["/detokenize", record({ tokens: maybeJunk(fc.array(fc.oneof(fc.integer({ min: 0, max: 160_000 }), fc.constantFrom(-1, 2 ** 31)), { maxLength: 6 })), model: maybeJunk(fc.oneof(model, embedModel)) }, ["tokens"])],
  ];
  const routes = bodies.map(([route]) => route);
  const retrieval = new Set(["/v1/embeddings", "/api/embed", "/api/llm/embed", "/api/embeddings", "/v1/rerank", "/v2/rerank", "/rerank", "/api/llm/rerank", "/tokenize"]);
  const wellFormed = fc.oneof(...bodies.map(([route, body]) => fc.record({
    route: fc.constant(route),
    body: body.map((json): FuzzBody => ({ json })),
    contentType: fc.constant("application/json"),
    cancelAfterChunks: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined, freq: 4 }),
    ...(retrieval.has(route) ? {
      cancelAfterMs: fc.option(fc.integer({ min: 0, max: 40 }), { nil: undefined, freq: 4 }),
      copies: fc.option(fc.integer({ min: 2, max: 24 }), { nil: undefined, freq: 6 }),
    } : {}),
  }, { requiredKeys: ["route", "body", "contentType"] })));
  const malformed = fc.record({
    route: fc.constantFrom(...routes),
    body: fc.oneof(
      fc.constantFrom("{\"messages\": [", "", "null", "[]", "\"x\"", "{\"model\":", "{}", "{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}").map((raw): FuzzBody => ({ raw })),
      fc.constantFrom(70_000, 300_000).map((oversize): FuzzBody => ({ oversize })),
    ),
    contentType: fc.constantFrom("application/json", "text/plain", "application/x-www-form-urlencoded"),
  });
  return fc.oneof({ weight: 9, arbitrary: wellFormed }, { weight: 1, arbitrary: malformed });
}

// ---------------------------------------------------------------------------------------------------
// Sending and judging.

export function bodyText(body: FuzzBody): string {
  if ("json" in body) return JSON.stringify(body.json);
  if ("raw" in body) return body.raw;
  return JSON.stringify({ messages: [{ role: "user", content: "x".repeat(body.oversize) }] });
}

/** A command a person can paste to send the same request. */
export function toCurl(base: string, r: FuzzRequest): string {
  const data = "oversize" in r.body
    ? `"{\\"messages\\":[{\\"role\\":\\"user\\",\\"content\\":\\"$(head -c ${r.body.oversize} /dev/zero | tr '\\0' x)\\"}]}"`
    : `'${bodyText(r.body).replaceAll("'", "'\\''")}'`;
  const cancel = r.cancelAfterChunks !== undefined ? `  # the client hung up after ${r.cancelAfterChunks} chunk(s)`
    : r.cancelAfterMs !== undefined ? `  # the client hung up after ${r.cancelAfterMs} ms (curl -m ${(r.cancelAfterMs / 1000).toFixed(3)})` : "";
  const curl = `curl -sS -N -X POST '${base}${r.route}' -H 'content-type: ${r.contentType}' --data-raw ${data}`;
  if (r.copies !== undefined) return `for i in $(seq ${r.copies}); do ${curl} & done; wait${cancel}`;
  return `${curl}${cancel}`;
}

/** The error shape each route documents: TEI's on /rerank for a body with `texts`. */
const styleOf = (r: FuzzRequest) => {
  if (r.route === "/rerank" && "json" in r.body && typeof r.body.json === "object" && r.body.json !== null && "texts" in r.body.json) return "tei";
  return r.route.startsWith("/v1/") || r.route.startsWith("/v2/") || ["/tokenize", "/detokenize", "/rerank"].includes(r.route) ? "openai"
    : r.route.startsWith("/api/llm/") ? "seed" : "ollama";
};

/** Whether an error body has the route's own shape. */
function errorShaped(r: FuzzRequest, body: unknown): boolean {
  const error = (body as { error?: unknown } | null)?.error;
  switch (styleOf(r)) {
    case "ollama": return typeof error === "string" && error.length > 0;
    case "tei": return typeof error === "string" && typeof (body as { error_type?: unknown }).error_type === "string";
    case "openai": {
      const e = error as { message?: unknown; type?: unknown; code?: unknown } | undefined;
      return typeof e?.message === "string" && typeof e.type === "string" && typeof e.code === "string";
    }
    default: {
      const e = error as { message?: unknown; code?: unknown } | undefined;
      return typeof e?.message === "string" && typeof e.code === "string";
    }
  }
}

export type Outcome = { status: number; problem: string | null };

async function send(base: string, r: FuzzRequest): Promise<Outcome> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 120_000);
  const hangUp = r.cancelAfterMs === undefined ? undefined : setTimeout(() => abort.abort(), r.cancelAfterMs);
  try {
    const res = await fetch(`${base}${r.route}`, { method: "POST", headers: { "content-type": r.contentType }, body: bodyText(r.body), signal: abort.signal });
    const type = res.headers.get("content-type") ?? "";
    if (res.status >= 200 && res.status < 300) {
      if (r.cancelAfterChunks !== undefined && res.body) {
        const reader = res.body.getReader();
        for (let i = 0; i < r.cancelAfterChunks; i++) if ((await reader.read()).done) break;
        // cancel(), not a last read(): undici can leave a read() after abort() pending forever once the
        // body has ended, which hung a whole run (seed 20261129).
        await reader.cancel().catch(() => undefined);
        abort.abort();
        return { status: res.status, problem: null };
      }
      const text = await res.text();
      if (type.startsWith("application/json")) {
        try { JSON.parse(text); } catch { return { status: res.status, problem: "a 2xx JSON answer that does not parse" }; }
      }
      return { status: res.status, problem: null };
    }
    const text = await res.text();
    let body: unknown = null;
    try { body = JSON.parse(text); } catch { return { status: res.status, problem: `a ${res.status} whose body is not JSON: ${text.slice(0, 200)}` }; }
    if (res.status >= 400 && res.status < 500) {
      if (!errorShaped(r, body)) return { status: res.status, problem: `a ${res.status} not in the route's error shape: ${text.slice(0, 300)}` };
      if (res.status === 429 && !res.headers.get("retry-after")) return { status: 429, problem: "a 429 without Retry-After" };
      return { status: res.status, problem: null };
    }
    const code = (body as { error?: { code?: string } }).error?.code;
    if (res.status === 504 && (code === "deadline_exceeded" || (styleOf(r) !== "openai" && styleOf(r) !== "seed"))) return { status: 504, problem: null };
    return { status: res.status, problem: `an undocumented ${res.status}: ${text.slice(0, 300)}` };
  } catch (error) {
    if (abort.signal.aborted && (r.cancelAfterChunks !== undefined || r.cancelAfterMs !== undefined)) return { status: 0, problem: null };
    return { status: -1, problem: `no answer: ${String((error as Error).cause ?? error)}` };
  } finally {
    clearTimeout(timer);
    clearTimeout(hangUp);
  }
}

/** A request, or its copies sent at once: the first problem found is the outcome (statuses all counted). */
async function sendAll(base: string, r: FuzzRequest): Promise<Outcome[]> {
  return Promise.all(Array.from({ length: r.copies ?? 1 }, () => send(base, r)));
}

// ---------------------------------------------------------------------------------------------------
// The run.

export type FuzzOptions = {
  seed: number;
  /** Stop starting new batches after this long. */
  durationMs: number;
  /** At most this many batches (fast-check runs). */
  maxRuns?: number;
  /** Time for shrinking a failing case (default 3 minutes). */
  shrinkMs?: number;
  log?: (line: string) => void;
};

/** The service's LLM_REQUEST_TIMEOUT_MS, and how late past it an answer may still come (reading the body, a busy runner). */
const DEADLINE_MS = 60_000;
const DEADLINE_SLACK_MS = 5_000;

export type FuzzReport = { seed: number; requests: number; batches: number; statuses: Record<string, number>; failure: string | null };

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const log = options.log ?? (() => undefined);
  const files = await ensureTestModels();
  const env = {
    LLM_MODEL: files.chat, EMBED_MODEL: files.embed, LLM_CONTEXT_SIZE: "1024", LLM_PARALLEL: "2", LLM_QUEUE_SIZE: "3",
    BODY_LIMIT_BYTES: "131072", LLM_REQUEST_TIMEOUT_MS: String(DEADLINE_MS), LOG_LEVEL: "info",
    RERANK_MODELS: (await ensureMultilingualTestModels()).rerank, EMBED_MAX_TEXTS: String(FUZZ_RETRIEVAL.maxTexts),
    RERANK_MAX_DOCUMENTS: String(FUZZ_RETRIEVAL.maxDocuments), RETRIEVAL_QUEUE_TEXTS: String(FUZZ_RETRIEVAL.queueTexts),
  };
  let proc: ServiceProcess | null = null;
  let base = "";
  let names = { chat: "", embed: "", rerank: "" };
  const start = async () => {
    proc = startServiceProcess(env);
    const listening = await proc.waitForLine(/Server listening at/, 120_000);
    base = /http:\/\/[^"\s]+/.exec(listening)![0];
    for (let i = 0; (await fetch(`${base}/ready`).then((r) => r.status, () => 0)) !== 200; i++) {
      if (i > 1200) throw new Error(`the service never became ready:\n${proc.output()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const list = ((await (await fetch(`${base}/v1/models`)).json()) as { data: { id: string }[] }).data;
    names = { chat: list[0]!.id, embed: list[1]!.id, rerank: list[2]!.id };
  };
  /** A crashed process is restarted, so fast-check can shrink a crash against a fresh one. */
  const ensureAlive = async () => {
    if (proc === null || (proc as ServiceProcess).child.exitCode !== null || (proc as ServiceProcess).child.signalCode !== null) await start();
  };
  await start();

  let requests = 0;
  let batches = 0;
  const statuses: Record<string, number> = {};
  const alive = () => proc !== null && (proc as ServiceProcess).child.exitCode === null && (proc as ServiceProcess).child.signalCode === null;
  const property = fc.asyncProperty(fc.array(requestArbitrary({ chat: "\u0000chat", embed: "\u0000embed", rerank: "\u0000rerank" }), { minLength: 1, maxLength: 4 }), async (generated) => {
    await ensureAlive();
    // Model names are known only once the process runs: placeholders in the generated bodies.
    const batch = generated.map((r) => withModelNames(r, names));
    batches++;
    requests += batch.reduce((sum, r) => sum + (r.copies ?? 1), 0);
    const outcomes = await Promise.all(batch.map(async (r) => {
      if (process.env["FUZZ_VERBOSE"] === "2") log(`  -> ${toCurl(base, r).slice(0, 2000)}`);
      const started = Date.now();
      const all = await sendAll(base, r);
      const ms = Date.now() - started;
      all.forEach((o) => { statuses[o.status] = (statuses[o.status] ?? 0) + 1; });
      const outcome = all.find((o) => o.problem !== null) ?? all[0]!;
      if (process.env["FUZZ_VERBOSE"]) log(`  ${r.route}${r.copies ? ` x${r.copies}` : ""} ${all.map((o) => o.status).join(",")} ${ms} ms`);
      // Every request ends by its deadline (queue and generation included), however slow the loop is.
      if (outcome.problem === null && ms > DEADLINE_MS + DEADLINE_SLACK_MS) {
        return { ...outcome, problem: `answered after ${ms} ms, past the ${DEADLINE_MS} ms deadline` };
      }
      return outcome;
    }));
    const problems = outcomes.flatMap((o, i) => o.problem ? [`${batch[i]!.route}: ${o.problem}`] : []);
    // A request with no answer: give a dying process the moment it takes to report its exit.
    if (outcomes.some((o) => o.status === -1)) await Promise.race([(proc as ServiceProcess | null)?.exited, new Promise((r) => setTimeout(r, 2_000))]);
    if (!alive()) problems.push(`the process died:\n${(proc as ServiceProcess | null)?.output().split("\n").slice(-15).join("\n")}`);
    else if (outcomes.some((o) => o.status === -1)) problems.push(`the process is alive but did not answer; its last lines:\n${(proc as ServiceProcess | null)?.output().split("\n").filter((l) => !/"msg":"request"/.test(l)).slice(-15).join("\n")}`);
    if (problems.length === 0) {
      try { await waitIdle(base, 60_000); } catch (error) { problems.push(`slots or queue not released: ${(error as Error).message}`); }
      const plain = await send(base, { route: "/v1/chat/completions", contentType: "application/json", body: { json: { messages: [{ role: "user", content: "hola" }], max_tokens: 2 } } });
      const plainEmbed = await send(base, { route: "/api/llm/embed", contentType: "application/json", body: { json: { texts: ["hola"] } } });
      requests += 2;
      if (plain.status !== 200) problems.push(`the next plain request answered ${plain.status} ${plain.problem ?? ""}`);
      if (plainEmbed.status !== 200) problems.push(`the next plain embed request answered ${plainEmbed.status} ${plainEmbed.problem ?? ""}`);
    }
    if (batches % 50 === 0 || process.env["FUZZ_VERBOSE"]) log(`fuzz: ${batches} batches, ${requests} requests, statuses ${JSON.stringify(statuses)}`);
    if (problems.length > 0) throw new Error(problems.join("\n"));
  });
  // Searching stops at the time limit; a failing case found in time is then replayed (same seed and
  // path) and shrunk with a budget of its own, since fast-check's time limit would cut shrinking too.
  const searched = await fc.check(property, {
    seed: options.seed, numRuns: options.maxRuns ?? 1_000_000, interruptAfterTimeLimit: options.durationMs, markInterruptAsFailure: false, verbose: 0,
  });
  const searchedRequests = requests;
  const result = searched.failed && searched.counterexamplePath !== null
    ? await fc.check(property, { seed: options.seed, path: searched.counterexamplePath, interruptAfterTimeLimit: options.shrinkMs ?? 180_000, verbose: 0 })
    : searched;
  if (result !== searched) log(`fuzz: shrinking sent ${requests - searchedRequests} more requests`);
  let failure: string | null = null;
  if (searched.failed && !result.failed) {
    failure = `seed ${options.seed}, path ${searched.counterexamplePath}: failed once but not when replayed (a timing-dependent failure); the error:\n` +
      String((searched.errorInstance as Error | undefined)?.message ?? searched.errorInstance);
  } else if (result.failed && result.counterexample) {
    const [batch] = result.counterexample;
    failure = [
      `seed ${options.seed}, path ${result.counterexamplePath}, shrunk ${result.numShrinks} times${result.interrupted ? " (shrinking cut by its time limit)" : ""}; the error:`,
      String((result.errorInstance as Error | undefined)?.message ?? result.errorInstance),
      "the requests (sent together), as curl:",
      ...batch.map((r) => toCurl(base, withModelNames(r, names))),
    ].join("\n");
  }
  (proc as ServiceProcess | null)?.child.kill("SIGTERM");
  await (proc as ServiceProcess | null)?.exited;
  return { seed: options.seed, requests, batches, statuses, failure };
}

function withModelNames(r: FuzzRequest, names: { chat: string; embed: string; rerank: string }): FuzzRequest {
  if (!("json" in r.body)) return r;
  const replaced = JSON.parse(JSON.stringify(r.body.json).replaceAll("\\u0000chat", names.chat).replaceAll("\\u0000embed", names.embed)
    .replaceAll("\\u0000rerank", names.rerank)) as unknown;
  return { ...r, body: { json: replaced } };
}
