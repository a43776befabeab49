// Warm after a restart, as a real process: a request, SIGTERM (the drain persists the prompt cache), a new
// process on the same directory reports the prefix as cached on its first request and gives the same
// answer. A damaged and a foreign file in the directory are skipped with one warning each.
import { readdir, readFile, writeFile, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { decodeEntry, encodeEntry, type PromptCacheKey } from "../src/engine/chat/promptCacheStore.js";
import { startServiceProcess, type ServiceProcess } from "./helpers/process.js";
import { systemA, question } from "./helpers/prompt-cache.js";

t.setTimeout(900_000);
const models = await ensureTestModels();

async function start(t: { teardown: (fn: () => void) => void }, env: Record<string, string>): Promise<{ proc: ServiceProcess; base: string }> {
  const proc = startServiceProcess({ LLM_MODEL: models.chat, EMBED_MODEL: models.embed, LLM_CONTEXT_SIZE: "1024", LLM_PARALLEL: "1", LOG_FORMAT: "json", ...env });
  t.teardown(() => { proc.child.kill("SIGKILL"); });
  const listening = await proc.waitForLine(/Server listening at/, 240_000);
  await proc.waitForLine(/"msg":"ready"/, 240_000);
  return { proc, base: /http:\/\/[^"]+/.exec(listening)![0] };
}

type Answer = { text: string; usage: { prompt_tokens: number; cached_prompt_tokens: number } };
const askHttp = async (base: string): Promise<Answer> => {
  const response = await fetch(`${base}/api/llm/generate`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [systemA, question], max_new_tokens: 12, temperature: 0.9, seed: 77 }),
  });
  if (response.status !== 200) throw new Error(`status ${response.status}: ${await response.text()}`);
  return await response.json() as Answer;
};

t.test("SIGTERM persists the prompt cache; the next process's first request is warm and the same", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "bora-prompt-cache-restart-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { PROMPT_CACHE_DIR: dir, PROMPT_CACHE_DISK_MIB: "64" };

  let { proc, base } = await start(t, env);
  const first = await askHttp(base);
  t.ok(first.usage.cached_prompt_tokens < 10, `cold: ${first.usage.cached_prompt_tokens} cached`);
  proc.child.kill("SIGTERM");
  t.equal((await proc.exited).code, 0, "a clean exit after the drain");
  const files = (await readdir(dir)).filter((f) => f.endsWith(".promptcache"));
  t.ok(files.length >= 1, `${files.length} prefix file(s) written at shutdown`);

  // A damaged copy and a foreign one under this key's file prefix: both must be skipped.
  const bytes = await readFile(path.join(dir, files[0]!));
  const key = (JSON.parse(bytes.subarray(12, 12 + bytes.readUInt32LE(8)).toString("utf8")) as { key: PromptCacheKey }).key;
  const entry = decodeEntry(key, bytes);
  if ("reason" in entry) throw new Error(entry.reason);
  const prefix = files[0]!.split("-")[0]!;
  const damaged = Buffer.from(bytes);
  damaged.writeUInt8(damaged.readUInt8(damaged.length - 1) ^ 0xff, damaged.length - 1);
  await writeFile(path.join(dir, `${prefix}-damaged.promptcache`), damaged);
  await writeFile(path.join(dir, `${prefix}-foreign.promptcache`), encodeEntry({ ...key, modelSha256: "f".repeat(64) }, entry));

  ({ proc, base } = await start(t, env));
  // The cache loads after /ready turns 200 (the service serves meanwhile); this request waits for it.
  await proc.waitForLine(/prompt cache loaded from disk/, 60_000);
  const after = await askHttp(base);
  t.ok(after.usage.cached_prompt_tokens > 80, `warm after the restart: ${after.usage.cached_prompt_tokens} of ${after.usage.prompt_tokens} cached`);
  t.equal(after.text, first.text, "the same answer");
  const skipped = proc.output().split("\n").filter((line) => line.includes("prompt cache file skipped"));
  t.equal(skipped.length, 2, "one warning per bad file");
  t.ok(skipped.some((line) => /checksum/.test(line)) && skipped.some((line) => /another model/.test(line)), "damaged and foreign, each named");
  const metrics = await (await fetch(`${base}/metrics`)).text();
  t.match(metrics, /bora_prompt_cache_hits_total\{tier="disk"\} 1/, "/metrics counts the disk hit");
  proc.child.kill("SIGTERM");
  await proc.exited;
});
