// /tokenize and /detokenize (llama-server's shapes, either model), and OpenAI embeddings `input` as
// clients send it: token ids built exactly as Python LangChain's OpenAIEmbeddings builds them, and
// LangChain.js's OpenAIEmbeddings. Real port, real clients, real fixtures.
import t from "tap";
import OpenAI from "openai";
import { OpenAIEmbeddings } from "@langchain/openai";
import { getEncoding } from "js-tiktoken";
import { postJson, startTestService } from "./helpers/service.js";

const service = await startTestService();
t.teardown(() => service.close());
const base = await service.listen();
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
const embedModel = service.engines.models.embedding.name;
const texts = ["hola", "¿Qué significa 'ímihí'? 🦙", "La bora es un viento del noreste."];
const seedVectors = (await postJson(service.app, "/api/llm/embed", { texts })).json<{ embeddings: number[][] }>().embeddings;
const post = (url: string, body: unknown) => fetch(`${base}${url}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const close = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => Math.abs(x - b[i]!) < 1e-6);

t.test("tokenize: the chat model's ids, special tokens parsed, pieces as text or bytes", async (t) => {
  const content = "<|im_start|>user\nHola 🦙<|im_end|>";
  const plain = await (await post("/tokenize", { content })).json() as { tokens: number[]; model: string };
  t.equal(plain.model, service.engines.models.chat.name);
  t.same(plain.tokens, service.engines.chat.vocabulary.tokenize(content, true), "the model's own tokenization");
  t.equal(plain.tokens[0], 151644, "<|im_start|> is one special token");
  const literal = await (await post("/tokenize", { content, parse_special: false })).json() as { tokens: number[] };
  t.ok(literal.tokens.length > plain.tokens.length, "parse_special: false spells it out");
  const pieces = await (await post("/tokenize", { content: " 🦙", with_pieces: true })).json() as { tokens: { id: number; piece: string | number[] }[] };
  // Qwen's tokenizer splits the llama over three tokens: the pieces are bytes, not text.
  t.same(pieces.tokens.map((p) => p.id), [11162, 99, 247]);
  t.same(pieces.tokens.map((p) => p.piece), [[0x20, 0xf0, 0x9f], [0xa6], [0x99]]);
  const words = await (await post("/tokenize", { content: "Hola mundo", with_pieces: true })).json() as { tokens: { id: number; piece: string | number[] }[] };
  t.equal(words.tokens.map((p) => p.piece).join(""), "Hola mundo", "whole-character pieces are text");
});

t.test("tokenize with the embedding model: add_special counts what the embedder reads", async (t) => {
  const r = await (await post("/tokenize", { content: texts[2], model: embedModel, add_special: true })).json() as { tokens: number[]; model: string };
  t.equal(r.model, embedModel);
  const cls = r.tokens[0];
  const sep = r.tokens.at(-1);
  t.equal(cls, 101, "[CLS]");
  t.equal(sep, 102, "[SEP]");
  const usage = await client.embeddings.create({ model: embedModel, input: texts[2]! });
  t.equal(r.tokens.length, usage.usage.prompt_tokens, "the count the embeddings endpoint reports");
  const bare = await (await post("/tokenize", { content: texts[2], model: "sentence-transformers/all-MiniLM-L6-v2-does-not-exist" })).json() as { error: { param: string } };
  t.equal(bare.error.param, "model");
});

t.test("detokenize: round trip for both models; bad ids are a 400 naming the position", async (t) => {
  const ids = service.engines.chat.vocabulary.tokenize("¿Qué significa 'ímihí'?", false);
  const back = await (await post("/detokenize", { tokens: ids })).json() as { content: string };
  t.equal(back.content, "¿Qué significa 'ímihí'?");
  const embedIds = await (await post("/tokenize", { content: "hola mundo", model: embedModel })).json() as { tokens: number[] };
  const embedBack = await (await post("/detokenize", { tokens: embedIds.tokens, model: embedModel })).json() as { content: string };
  t.equal(embedBack.content.trim(), "hola mundo");
  const cases: [string, unknown, string][] = [
    ["/detokenize", { tokens: [1, 151_936] }, "tokens[1]"],
    ["/detokenize", { tokens: [-1] }, "tokens[0]"],
    ["/detokenize", { tokens: [30_522], model: embedModel }, "tokens[0]"],
    ["/detokenize", { tokens: [1.5] }, "tokens[0]"],
    ["/detokenize", { tokens: "1 2" }, "tokens"],
    ["/tokenize", { content: 5 }, "content"],
    ["/tokenize", {}, "content"],
    ["/tokenize", { content: "x", with_pieces: "yes" }, "with_pieces"],
  ];
  for (const [url, body, param] of cases) {
    const res = await post(url, body);
    t.equal(res.status, 400, `${url} ${JSON.stringify(body)}`);
    const json = await res.json() as { error: { param: string; message: string; type: string } };
    t.equal(json.error.param, param, json.error.message);
    t.equal(json.error.type, "invalid_request_error");
  }
});

/**
 * What Python LangChain's OpenAIEmbeddings sends by default (langchain_openai/embeddings/base.py,
 * `_tokenize`): tiktoken `encoding_for_model(model)` falls back to cl100k_base for a model OpenAI does
 * not know; each text is `encoding.encode(text, allowed_special=set(), disallowed_special="all")` and
 * cut into chunks of embedding_ctx_length (8191) tokens; the request's `input` is the list of chunks.
 */
function pythonLangChainInput(inputs: readonly string[]): number[][] {
  const encoding = getEncoding("cl100k_base");
  return inputs.flatMap((text) => {
    const ids = encoding.encode(text, [], "all");
    const chunks: number[][] = [];
    for (let i = 0; i < ids.length; i += 8191) chunks.push(ids.slice(i, i + 8191));
    return chunks;
  });
}

t.test("token ids as Python LangChain sends them embed to the same vectors as the text", async (t) => {
  const input = pythonLangChainInput(texts);
  const r = await client.embeddings.create({ model: embedModel, input });
  t.equal(r.data.length, texts.length);
  r.data.forEach((d, i) => t.ok(close(d.embedding, seedVectors[i]!), `text ${i}`));
  const flat = await client.embeddings.create({ model: embedModel, input: input[1]!, encoding_format: "float" });
  t.ok(close(flat.data[0]!.embedding, seedVectors[1]!), "a flat list of ids is one text");
  t.equal(flat.usage.prompt_tokens, (await client.embeddings.create({ model: embedModel, input: texts[1]! })).usage.prompt_tokens,
    "usage counts the embedding model's tokens");
});

t.test("LangChain.js OpenAIEmbeddings returns the /api/llm/embed vectors", async (t) => {
  const embeddings = new OpenAIEmbeddings({ model: embedModel, apiKey: "not-needed", configuration: { baseURL: `${base}/v1` } });
  const vectors = await embeddings.embedDocuments(texts);
  vectors.forEach((v, i) => t.ok(close(v, seedVectors[i]!), `document ${i}`));
  t.ok(close(await embeddings.embedQuery(texts[0]!), seedVectors[0]!), "query");
});

t.test("bad token ids: a 400 naming input[i][j], never a 500", async (t) => {
  // Wrong types fail the schema's union: the field named is one of the branches' (input[0] or input[1]).
  const cases: [unknown, string | RegExp][] = [
    [[[9906, 100_256]], "input[0][1]"],
    [[[1], [2, 3, 999_999]], "input[1][2]"],
    [[5, -1], "input[1]"],
    [[5, 2.5], /^input\[[01]\]$/],
    [[[1], []], "input[1]"],
    [[[1], ["a"]], "input[1][0]"],
    [[], "input"],
  ];
  for (const [input, param] of cases) {
    const res = await post("/v1/embeddings", { model: embedModel, input });
    t.equal(res.status, 400, JSON.stringify(input));
    const json = await res.json() as { error: { param: string; message: string } };
    t.match(json.error.param, typeof param === "string" ? new RegExp(`^${param.replace(/[[\]]/g, "\\$&")}$`) : param, json.error.message);
  }
});
