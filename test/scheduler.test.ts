// The admission queue and slot choice (src/engine/chat/scheduler.ts) on their own: no model involved,
// the slots' cached tokens are plain arrays. The native loop's own prefix computation is checked against
// commonPrefixLength in test/loop-guard.test.ts.
import t from "tap";
import { EngineError } from "../src/engine/errors.js";
import { commonPrefixLength } from "../src/engine/chat/backend.js";
import { SlotScheduler } from "../src/engine/chat/scheduler.js";

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
const never = new AbortController().signal;
const aborted = () => new Error("aborted");

t.test("a free slot sharing the longest prefix is chosen; strangers take the least recently used", async (t) => {
  const caches: number[][] = [range(0, 100), range(1000, 100), []];
  const scheduler = new SlotScheduler(3, 4, (prompt) => caches.map((cache) => commonPrefixLength(cache, prompt)));
  t.equal(await scheduler.acquire([...range(1000, 50), 7], never, aborted), 1, "shares 50 tokens with slot 1");
  scheduler.release(1);
  t.equal(await scheduler.acquire([...range(0, 80), 9, 9], never, aborted), 0);
  scheduler.release(0);
  // Shares 5 of 100 tokens with slot 0 (< 10%): the LRU slot (2, never used) instead.
  t.equal(await scheduler.acquire([...range(0, 5), ...range(5000, 95)], never, aborted), 2);
});

t.test("FIFO queue, 429 with Retry-After from the place in the queue, aborts leave the queue", async (t) => {
  const scheduler = new SlotScheduler(2, 2, () => [0, 0]);
  for (let i = 0; i < 4; i++) scheduler.recordServiceTime(4000);
  t.equal(scheduler.retryAfterSeconds(0), 2, "first in line: half a service time with 2 slots");
  t.equal(scheduler.retryAfterSeconds(5), 12, "6th in line: three service times");
  t.equal(scheduler.retryAfterSeconds(1000), 60, "capped at a minute");

  const a = await scheduler.acquire([1], never, aborted);
  const b = await scheduler.acquire([2], never, aborted);
  t.same([a, b].sort(), [0, 1]);
  const order: string[] = [];
  const first = scheduler.acquire([3], never, aborted).then((slot) => { order.push("first"); return slot; });
  const leaving = new AbortController();
  const second = scheduler.acquire([4], leaving.signal, aborted).catch((e: Error) => { order.push(e.message); return -1; });
  t.same(scheduler.stats(), { slotsTotal: 2, slotsBusy: 2, queued: 2, queueCapacity: 2 });

  const full = await scheduler.acquire([5], never, aborted).catch((e: unknown) => e);
  t.ok(full instanceof EngineError && full.status === 429 && full.code === "queue_full");
  t.equal((full as EngineError).retryAfterSeconds, 6, "two waiting ahead: third in line, 2 slots, 4 s each");

  leaving.abort();
  t.equal(await second, -1);
  t.equal(scheduler.stats().queued, 1, "the aborted request left the queue");
  scheduler.release(a);
  t.equal(await first, a);
  t.same(order, ["aborted", "first"]);
  t.same(scheduler.stats(), { slotsTotal: 2, slotsBusy: 2, queued: 0, queueCapacity: 2 });

  scheduler.release(a);
  scheduler.release(b);
  const late = scheduler.acquire([6], never, aborted);
  t.equal(typeof (await late), "number");
  scheduler.rejectWaiting(() => new Error("closing"));
});
