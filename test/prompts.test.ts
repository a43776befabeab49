// Prompts from the request (input_type, prompt_name) resolved against a model's manifest entry: pure.
import t from "tap";
import { checkPrompts, NO_PROMPTS, promptPrefix, promptsOf } from "../src/engine/prompts.js";
import type { ManifestEntry } from "../src/engine/modelFiles.js";

const e5Entry: ManifestEntry = {
  name: "multilingual-e5-small", kind: "embedding", file: "e5.gguf", url: "https://example.invalid/e5.gguf", size: 1, sha256: null,
  prompts: { query: "query: ", passage: "passage: " },
  inputTypes: { search_query: "query", search_document: "passage", classification: "query", clustering: "query" },
};
const e5 = { name: "multilingual-e5-small", prompts: promptsOf(e5Entry) };
const minilm = { name: "all-MiniLM-L6-v2", prompts: NO_PROMPTS };

t.test("input_type goes through the model's mapping", async (t) => {
  t.equal(promptPrefix(e5, { inputType: "search_query" }), "query: ");
  t.equal(promptPrefix(e5, { inputType: "search_document" }), "passage: ");
  t.equal(promptPrefix(e5, { inputType: "clustering" }), "query: ");
  t.equal(promptPrefix(e5, {}), "", "no default prompt: texts as they are");
  t.equal(promptPrefix(minilm, { inputType: "search_query" }), "", "a model without prompts reads queries and documents alike");
});

t.test("prompt_name names a prompt of the model; unknown is a 400 naming what it has", async (t) => {
  t.equal(promptPrefix(e5, { promptName: "passage" }), "passage: ");
  t.throws(() => promptPrefix(e5, { promptName: "document" }), { status: 400, field: "prompt_name", message: /'document' is not a prompt of 'multilingual-e5-small'; it has: 'query', 'passage'/ });
  t.throws(() => promptPrefix(minilm, { promptName: "query" }), { status: 400, message: /it has none/ });
  t.throws(() => promptPrefix(e5, { promptName: "query", inputType: "search_query" }), { status: 400, message: /not both/ });
});

t.test("a default prompt applies when the request names none", async (t) => {
  const qwen = { name: "q", prompts: promptsOf({ ...e5Entry, prompts: { query: "Instruct: x\nQuery:" }, inputTypes: { search_query: "query" }, defaultPrompt: "query" }) };
  t.equal(promptPrefix(qwen, {}), "Instruct: x\nQuery:");
  t.equal(promptPrefix(qwen, { inputType: "search_document" }), "", "documents get no instruction");
});

t.test("checkPrompts: a mapping to a prompt the entry does not have is a manifest error", async (t) => {
  t.equal(checkPrompts("e5", promptsOf(e5Entry)), null);
  t.match(checkPrompts("bad", promptsOf({ ...e5Entry, inputTypes: { search_query: "qury" } })), /qury/);
});
