// The retrieval queue's policy, decode by decode and without a model (as scheduler.test.ts does for the
// slots): which inputs each decode holds. The decode here answers each input with its first token id and
// waits until the test lets it finish, so the order of events is the test's, not the machine's. The same
// queue under the real embedder and reranker: test/retrieval-lifecycle.test.ts.
import t from "tap";
import { EngineError } from "../src/engine/errors.js";
import { TokenBatchQueue } from "../src/engine/tokenBatchQueue.js";

/** Inputs are tagged by their first token: request r's i-th input is [r * 1000 + i, ...]. */
const inputs = (request: number, count: number, length = 4) =>
  Array.from({ length: count }, (_, i) => Uint32Array.from({ length }, (_, j) => (j === 0 ? request * 1000 + i : 1)));
const owner = (tag: number) => Math.floor(tag / 1000);

/** A queue whose decodes the test finishes one at a time with `step()`. */
function steppedQueue(limits = { maxSequences: 8, batchTokens: 64 }, bounds?: { maxInputs: number; maxTokens: number }) {
  const decodes: number[][] = [];
  const pending: (() => void)[] = [];
  const queue = new TokenBatchQueue<number>(limits, (batch) => {
    decodes.push(batch.map((b) => b[0]!));
    return new Promise((resolve) => pending.push(() => resolve(batch.map((b) => b[0]!))));
  }, bounds);
  const tick = () => new Promise((r) => setImmediate(r));
  return {
    queue, decodes,
    /** Lets the queue start its next decode. */
    tick,
    /** Lets the running decode finish and the next one start. */
    async step() {
      await tick();
      pending.shift()?.();
      await tick();
    },
    async drainAll() {
      for (let i = 0; i < 1000 && (pending.length > 0 || queue.stats().requests > 0); i++) await this.step();
    },
  };
}

t.test("a 1-input query during a bulk request gets the next decode to itself; then decodes are shared in turn", async (t) => {
  const q = steppedQueue();
  const bulk = q.queue.run(inputs(1, 100));
  await q.tick();
  t.same(q.decodes[0]!.map(owner), Array(8).fill(1), "the bulk request alone fills its decodes");
  const query = q.queue.run(inputs(2, 1)); // while the bulk request's decode runs
  await q.step();
  t.same(q.decodes[1], [2000], "the next decode holds only the query (a 1-text decode, not a full one)");
  await q.step();
  t.same(await query, [2000], "the query is answered after it");
  const medium = q.queue.run(inputs(3, 20));
  await q.step();
  t.same(q.decodes[3]!.map(owner), Array(8).fill(3), "a new request's first decode is its own");
  await q.step();
  t.same(q.decodes[4]!.map(owner).sort(), [1, 1, 1, 1, 3, 3, 3, 3], "then the two requests alternate, one input each in turn");
  await q.drainAll();
  t.same((await bulk).map((tag) => tag % 1000), Array.from({ length: 100 }, (_, i) => i), "the bulk request's results in input order");
  t.equal((await medium).length, 20);
});

t.test("a stream of new requests cannot starve a running one: first-decodes alternate with shared ones", async (t) => {
  const q = steppedQueue({ maxSequences: 4, batchTokens: 64 });
  void q.queue.run(inputs(1, 40));
  await q.tick();
  for (let r = 2; r < 8; r++) {
    void q.queue.run(inputs(r, 1));
    await q.step();
  }
  const bulkDecodes = q.decodes.filter((d) => d.some((tag) => owner(tag) === 1)).length;
  t.ok(bulkDecodes >= q.decodes.length / 2, `the bulk request was in ${bulkDecodes} of ${q.decodes.length} decodes`);
  await q.drainAll();
});

t.test("cancelled: its waiting inputs leave at once, its share of the running decode is dropped, no later decode holds it", async (t) => {
  const q = steppedQueue();
  const abort = new AbortController();
  const bulk = q.queue.run(inputs(1, 100), { signal: abort.signal });
  const other = q.queue.run(inputs(2, 10));
  await q.tick();
  const seen = q.decodes.length;
  abort.abort(new EngineError("cancelled", "The client disconnected.", 499));
  await t.rejects(bulk, { code: "cancelled" });
  t.same(q.queue.stats(), { ...q.queue.stats(), requests: 1, inputs: 10 }, "only the other request's inputs remain (its share of the running decode included)");
  await q.drainAll();
  t.notOk(q.decodes.slice(seen).flat().some((tag) => owner(tag) === 1), "no decode after the cancel holds its inputs");
  t.equal((await other).length, 10, "the other request is answered");
});

t.test("bounded: a request that would pass the bound is a 429 whose Retry-After grows with the work ahead", async (t) => {
  const q = steppedQueue({ maxSequences: 8, batchTokens: 64 }, { maxInputs: 50, maxTokens: 10_000 });
  const first = q.queue.run(inputs(1, 40));
  const fits = q.queue.run(inputs(2, 10));
  const refused = await q.queue.run(inputs(3, 1)).catch((e: unknown) => e);
  t.match(refused, { code: "queue_full", status: 429 });
  t.ok((refused as EngineError).retryAfterSeconds! >= 1, "with Retry-After");
  t.equal(q.queue.stats().inputs, 50, "the bound is held exactly");
  await q.drainAll();
  await Promise.all([first, fits]);
  // By position: the further past the bound a request would take the queue, the later it is told to come back.
  const tokensBound = steppedQueue({ maxSequences: 8, batchTokens: 64 }, { maxInputs: 1000, maxTokens: 100 });
  const running = tokensBound.queue.run(inputs(5, 25));
  const near = await tokensBound.queue.run(inputs(6, 2)).catch((e: EngineError) => e.retryAfterSeconds!);
  const far = await tokensBound.queue.run(inputs(7, 500, 8)).catch((e: EngineError) => e.retryAfterSeconds!);
  t.ok(far > near, `Retry-After ${near} s just past the bound, ${far} s far past it`);
  await tokensBound.drainAll();
  await running;
  const alone = q.queue.run(inputs(4, 80));
  t.equal(q.queue.stats().inputs, 80, "an idle queue admits even a request larger than the bound");
  await q.drainAll();
  t.equal((await alone).length, 80);
});

t.test("a failed decode fails the requests it held; close refuses the rest and anything later with 503", async (t) => {
  let fail = true;
  const queue = new TokenBatchQueue<number>({ maxSequences: 2, batchTokens: 64 }, async (batch) => {
    if (fail) throw new Error("decode failed");
    return batch.map((b) => b[0]!);
  });
  await t.rejects(queue.run(inputs(1, 1)), /decode failed/);
  fail = false;
  t.same(await queue.run(inputs(2, 3)), [2000, 2001, 2002], "the queue goes on");
  queue.close();
  await t.rejects(queue.run(inputs(3, 1)), { code: "shutting_down", status: 503 });
});
