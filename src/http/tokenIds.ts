// OpenAI embeddings `input` given as token ids. Python LangChain's OpenAIEmbeddings sends the
// tiktoken cl100k_base ids of each chunk (unless check_embedding_ctx_length=False); OpenAI decodes
// them with that encoding. So do we: the ids become the text they spell, and that text is embedded
// with the embedding model's own tokenizer, exactly as if the client had sent the text.
import { createRequire } from "node:module";
import { Tiktoken, type TiktokenBPE } from "js-tiktoken/lite";
import { invalidRequest } from "../engine/errors.js";

// The lite entry and only cl100k's ranks, read on first use: js-tiktoken's main entry loads every
// encoding's ranks at start (~16 MB resident in a service that may never see a token id).
const require = createRequire(import.meta.url);

export const TOKEN_ID_ENCODING = "cl100k_base";

let encoding: { tiktoken: Tiktoken; valid: Uint8Array } | undefined;

/** Loaded on first use (about a second): most deployments never receive token ids. */
function cl100k(): { tiktoken: Tiktoken; valid: Uint8Array } {
  if (encoding === undefined) {
    const ranks = require("js-tiktoken/ranks/cl100k_base") as TiktokenBPE & { default?: TiktokenBPE };
    const tiktoken = new Tiktoken(ranks.default ?? ranks);
    // The ids with a meaning: the ranks and the special tokens. js-tiktoken decodes any other id to
    // "" without complaint, so the table is built once to tell them apart.
    const size = 100_277;
    const valid = new Uint8Array(size);
    for (let id = 0; id < size; id++) valid[id] = tiktoken.decode([id]) === "" ? 0 : 1;
    encoding = { tiktoken, valid };
  }
  return encoding;
}

/**
 * `[1, 2, 3]` is one text, `[[1, 2], [3]]` several. An id outside cl100k_base is a 400 naming it
 * (`input[1][0]`); so is an empty list.
 */
export function decodeTokenIdInput(input: readonly number[] | readonly (readonly number[])[], field = "input"): string[] {
  const { tiktoken, valid } = cl100k();
  const decodeOne = (ids: readonly number[], path: string): string => {
    if (ids.length === 0) throw invalidRequest(`${path} is an empty list of token ids`, path);
    ids.forEach((id, index) => {
      if (!(id >= 0 && id < valid.length && valid[id] === 1)) {
        throw invalidRequest(`${path}[${index}] is ${id}, not a ${TOKEN_ID_ENCODING} token id`, `${path}[${index}]`);
      }
    });
    return tiktoken.decode([...ids]);
  };
  if (input.length > 0 && Array.isArray(input[0])) {
    return (input as readonly (readonly number[])[]).map((ids, i) => decodeOne(ids, `${field}[${i}]`));
  }
  return [decodeOne(input as readonly number[], field)];
}
