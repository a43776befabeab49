// Embeddings keep their lead over decoding by the service's own scheduling (issue 26), not a nice value: while an
// embedding decode runs, the slot loop aborts its step of generated tokens (llama.cpp's abort callback) and waits,
// then decodes the same tokens again. The answer is the one it gives alone, token for token; the embeddings are
// answered about as fast as on an idle service.
import t from "tap";
import { postJson, startTestService } from "./helpers/service.js";

const service = await startTestService({ LLM_THREADS: "2", LLM_PARALLEL: "1", LLM_CONTEXT_SIZE: "2048" });
t.teardown(() => service.close());
const chat = service.engines.chat;
const generation = { messages: [{ role: "user" as const, content: "Cuenta una historia." }], maxTokens: 600, ignoreEos: true, temperature: 0, topP: 1, enableThinking: false };
const embed = async () => {
  const started = performance.now();
  const response = await postJson(service.app, "/api/llm/embed", { texts: ["¿Dónde vive el jaguar?"] });
  if (response.statusCode !== 200) throw new Error(response.body);
  return performance.now() - started;
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const loopThreads = () => (chat as unknown as { backend: { loopThreads(): { yieldAborts: number } } }).backend.loopThreads();

t.test("embeddings during a generation: the answer is the solo one, the steps they interrupted are redone", async (t) => {
  const alone = await chat.generate(generation);
  const idle: number[] = [];
  for (let i = 0; i < 15; i++) idle.push(await embed());
  const abortsBefore = loopThreads().yieldAborts;
  let done = false;
  const running = chat.generate(generation).finally(() => { done = true; });
  const during: number[] = [];
  while (!done && during.length < 40) during.push(await embed());
  const result = await running;
  t.equal(result.text, alone.text, "the same greedy answer as alone");
  t.equal(result.tokensGenerated, alone.tokensGenerated);
  t.ok(during.length >= 5, `${during.length} embeddings answered during the generation`);
  t.ok(loopThreads().yieldAborts > abortsBefore, `the loop gave way (${loopThreads().yieldAborts - abortsBefore} steps aborted and redone)`);
  t.comment(`embed 1 text: idle ${median(idle).toFixed(1)} ms, during generation ${median(during).toFixed(1)} ms (${(median(during) / median(idle)).toFixed(2)}x)`);
  t.ok(median(during) <= 3 * median(idle) + 5, "an embedding during a generation is not held up by it");
});
