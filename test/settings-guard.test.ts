// Settings that cannot work together are refused at start with one message naming the variables and a
// working value (issue 15): `LLM_PARALLEL=48 LLM_BATCH_SIZE=32` used to abort the process inside llama.cpp
// (GGML_ASSERT(n_outputs_max <= cparams.n_outputs_max)).
import fc from "fast-check";
import t from "tap";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { ConfigError, loadConfig, settingConflicts } from "../src/config.js";
import { startServiceProcess } from "./helpers/process.js";

const models = await ensureTestModels();

t.test("every slots/batch/context combination in range is either consistent or refused naming its variables", async (t) => {
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 64 }), fc.integer({ min: 32, max: 65536 }), fc.integer({ min: 256, max: 1_048_576 }),
    (parallel, batch, context) => {
      const env = { LLM_PARALLEL: String(parallel), LLM_BATCH_SIZE: String(batch), LLM_CONTEXT_SIZE: String(context) };
      const consistent = parallel <= batch && batch <= context * parallel;
      try {
        const config = loadConfig(env);
        return consistent && config.chat.parallel === parallel && config.chat.batchSize === batch;
      } catch (error) {
        if (!(error instanceof ConfigError) || consistent) return false;
        const message = error.message;
        if (parallel > batch && !/LLM_PARALLEL=\d+ with LLM_BATCH_SIZE=\d+/.test(message)) return false;
        if (batch > context * parallel && !/LLM_BATCH_SIZE=\d+ is above the whole context \(LLM_CONTEXT_SIZE=/.test(message)) return false;
        // The value it proposes works.
        for (const [, name, value] of message.matchAll(/set (LLM_\w+)=(\d+)/g)) {
          const fixed = { ...env, [name!]: value! };
          if (settingConflicts({ LLM_PARALLEL: Number(fixed.LLM_PARALLEL), LLM_BATCH_SIZE: Number(fixed.LLM_BATCH_SIZE), LLM_CONTEXT_SIZE: Number(fixed.LLM_CONTEXT_SIZE) }).length > 0) return false;
        }
        return true;
      }
    },
  ), { seed: 15, numRuns: 2000 });
  t.pass("property holds");
});

t.test("LLM_PARALLEL=48 LLM_BATCH_SIZE=32: a real process exits with the message, no abort", async (t) => {
  const proc = startServiceProcess({ LLM_MODEL: models.chat, EMBED_MODEL: models.embed, MODEL_DOWNLOAD: "false", LLM_PARALLEL: "48", LLM_BATCH_SIZE: "32" });
  t.teardown(() => { proc.child.kill("SIGKILL"); });
  const exit = await proc.exited;
  t.equal(exit.signal, null, "not killed by a signal (no abort)");
  t.equal(exit.code, 2);
  const output = proc.output();
  t.match(output, /LLM_PARALLEL=48 with LLM_BATCH_SIZE=32/);
  t.match(output, /set LLM_BATCH_SIZE=64 \(or LLM_PARALLEL=32\)/);
  t.notMatch(output, /GGML_ASSERT|Aborted|core dumped/);
  t.equal(output.match(/Invalid configuration/g)?.length, 1, "one message");
});

t.test("a batch above the whole context: refused at start", async (t) => {
  const proc = startServiceProcess({ LLM_MODEL: models.chat, EMBED_MODEL: models.embed, MODEL_DOWNLOAD: "false", LLM_PARALLEL: "1", LLM_CONTEXT_SIZE: "256", LLM_BATCH_SIZE: "4096" });
  t.teardown(() => { proc.child.kill("SIGKILL"); });
  const exit = await proc.exited;
  t.equal(exit.signal, null);
  t.equal(exit.code, 2);
  t.match(proc.output(), /LLM_BATCH_SIZE=4096 is above the whole context \(LLM_CONTEXT_SIZE=256 x LLM_PARALLEL=1 = 256 tokens\).*set LLM_BATCH_SIZE=256/);
});

t.test("as many slots as the batch holds: the process starts and serves (outputs sized per slot, not per batch)", async (t) => {
  const proc = startServiceProcess({ LLM_MODEL: models.chat, EMBED_MODEL: models.embed, MODEL_DOWNLOAD: "false", LLM_PARALLEL: "40", LLM_BATCH_SIZE: "40", LLM_CONTEXT_SIZE: "256", WARMUP: "false" });
  t.teardown(() => { proc.child.kill("SIGKILL"); });
  const listening = await proc.waitForLine(/Server listening at/);
  const base = /http:\/\/[^"]+/.exec(listening)![0];
  await proc.waitForLine(/"msg":"ready"/, 120_000);
  const answers = await Promise.all(Array.from({ length: 3 }, () => fetch(`${base}/api/llm/generate`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "hola ".repeat(60) }], max_new_tokens: 4 }),
  })));
  t.same(answers.map((a) => a.status), [200, 200, 200]);
  proc.child.kill("SIGTERM");
  t.equal((await proc.exited).code, 0);
});
