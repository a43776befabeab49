// Records llama-server's answers on stories260K for test/stories260k-parity.test.ts: the bench's own build
// (bench/.cache, from node-llama-cpp's bundled llama.cpp; built on first use, ~6 minutes on 2 cores), the
// flags in LLAMA_SERVER_FLAGS, every case of test/helpers/stories-parity.ts. CI does not build llama-server
// for the test: it reads what this wrote. Run again after a llama.cpp update: `npm run record:parity`.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { ensureLlamaBuild } from "../bench/lib/artifacts.ts";
import { freePort, installCleanupHandlers, startServer } from "../bench/lib/processes.ts";
import { projectRoot } from "../scripts/lib/llama-source.ts";
import {
  BOS_TEXT_PROMPT, CHAT_CASES, CHAT_TOKENS, GREEDY_PROMPTS, GREEDY_TOKENS, LLAMA_SERVER_FLAGS, LOGPROB_PROMPTS, LOGPROB_TOKENS, LOGPROB_TOP,
  PARITY_FIXTURE, SAMPLED_TOKENS, SAMPLING_CASES, SPECIAL_TEXT_MESSAGE, STORIES_MODEL, STORIES_SHA256, type ParityFixture,
} from "./helpers/stories-parity.ts";

const sha = createHash("sha256").update(readFileSync(STORIES_MODEL)).digest("hex");
if (sha !== STORIES_SHA256) throw new Error(`${STORIES_MODEL} is not stories260K (sha256 ${sha})`);

installCleanupHandlers();
const build = await ensureLlamaBuild();
const port = await freePort();
const server = await startServer({
  label: "llama-server stories260K",
  command: build.server,
  args: ["-m", STORIES_MODEL, ...LLAMA_SERVER_FLAGS, "--host", "127.0.0.1", "--port", String(port)],
  cwd: projectRoot,
  readyUrl: `http://127.0.0.1:${port}/health`,
  readyTimeoutMs: 60_000,
  logFile: path.join(projectRoot, "bench", ".cache", "logs", "llama-server-stories.log"),
});

async function post<T>(route: string, body: object): Promise<T> {
  const response = await fetch(`http://127.0.0.1:${port}${route}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (!response.ok) throw new Error(`${route}: ${response.status} ${await response.text()}`);
  return await response.json() as T;
}

type Completion = { content: string; tokens: number[]; tokens_evaluated: number; completion_probabilities?: { id: number; token: string; logprob: number; top_logprobs: { id: number; token: string; logprob: number }[] }[] };
// cache_prompt off: every answer is computed from its prompt alone, as a fresh server would.
const complete = (prompt: string, params: object) => post<Completion>("/completion", { prompt, cache_prompt: false, return_tokens: true, ...params });
type Chat = { choices: { message: { content: string } }[]; usage: { prompt_tokens: number } };

try {
  const fixture: ParityFixture = {
    recordedWith: {
      llamaCppTag: build.tag, llamaCppCommit: build.commit, server: "llama-server (bench/.cache, bench/lib/artifacts.ts)",
      flags: LLAMA_SERVER_FLAGS, modelSha256: sha, recordedAt: new Date().toISOString(),
    },
    greedy: [], tokenize: [], sampled: [], logprobs: [], chat: [],
    differences: { bosTextPromptTokens: 0, bosTextContent: "", specialTextPromptTokens: 0 },
  };
  for (const prompt of GREEDY_PROMPTS) {
    const r = await complete(prompt, { n_predict: GREEDY_TOKENS, temperature: 0 });
    fixture.greedy.push({ prompt, content: r.content, tokens: r.tokens, promptTokens: r.tokens_evaluated });
    const t = await post<{ tokens: number[] }>("/tokenize", { content: prompt, add_special: true });
    fixture.tokenize.push({ content: prompt, tokens: t.tokens });
  }
  for (const c of SAMPLING_CASES) {
    const r = await complete(c.prompt, { n_predict: SAMPLED_TOKENS, ...c.params });
    fixture.sampled.push({ name: c.name, content: r.content });
  }
  for (const prompt of LOGPROB_PROMPTS) {
    const r = await complete(prompt, { n_predict: LOGPROB_TOKENS, temperature: 0, n_probs: LOGPROB_TOP });
    fixture.logprobs.push({
      prompt,
      tokens: (r.completion_probabilities ?? []).map((p) => ({
        id: p.id, text: p.token, logprob: p.logprob, top: p.top_logprobs.map((a) => ({ id: a.id, text: a.token, logprob: a.logprob })),
      })),
    });
  }
  for (const c of CHAT_CASES) {
    const r = await post<Chat>("/v1/chat/completions", { messages: c.messages, max_tokens: CHAT_TOKENS, temperature: 0 });
    fixture.chat.push({ name: c.name, content: r.choices[0]!.message.content, promptTokens: r.usage.prompt_tokens });
  }
  const bos = await complete(BOS_TEXT_PROMPT, { n_predict: GREEDY_TOKENS, temperature: 0 });
  const special = await post<Chat>("/v1/chat/completions", { messages: SPECIAL_TEXT_MESSAGE, max_tokens: 1, temperature: 0 });
  fixture.differences = { bosTextPromptTokens: bos.tokens_evaluated, bosTextContent: bos.content, specialTextPromptTokens: special.usage.prompt_tokens };
  mkdirSync(path.dirname(PARITY_FIXTURE), { recursive: true });
  // One line per token list and per flag list: the file stays readable in a diff.
  const text = JSON.stringify(fixture, null, 1).replace(/\[\s*((?:-?[\d.e+-]+|"[^"\n]*"),?\s*)+\]/g, (list) => list.replace(/\s+/g, ""));
  writeFileSync(PARITY_FIXTURE, `${text}\n`);
  console.log(`wrote ${path.relative(projectRoot, PARITY_FIXTURE)}: ${fixture.greedy.length} greedy, ${fixture.sampled.length} sampled, ${fixture.logprobs.length} logprob, ${fixture.chat.length} chat cases`);
} finally {
  await server.stop();
}
