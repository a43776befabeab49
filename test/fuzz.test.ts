// Issue 15's property suite, bounded for npm test: generated requests over every route's schema,
// fields combined, against a real service process (see helpers/fuzz.ts for the properties). FUZZ_SEED
// reproduces a run; FUZZ_SECONDS sets its length (default 45: a few hundred requests on an idle machine; the suite must stay under 15 minutes). `npm run fuzz -- --duration=30m` is the long run.
import t from "tap";
import { runFuzz } from "./helpers/fuzz.js";

const seed = Number(process.env["FUZZ_SEED"] ?? Date.now() % 2 ** 31);
const seconds = Number(process.env["FUZZ_SECONDS"] ?? 45);
// The search, a minute to shrink a failing case, and the process start: above tap's 300 s per file.
t.setTimeout(600_000);

t.test(`property suite: every route, fields combined (seed ${seed})`, async (t) => {
  const report = await runFuzz({ seed, durationMs: seconds * 1000, shrinkMs: 60_000, log: (line) => t.comment(line) });
  const summary = `fuzz: seed ${report.seed}, ${report.requests} requests in ${report.batches} batches, statuses ${JSON.stringify(report.statuses)}`;
  console.log(summary);
  t.comment(summary);
  if (report.failure) console.log(report.failure);
  t.equal(report.failure, null, `no failing case (reproduce with FUZZ_SEED=${seed})`);
  t.ok(report.batches >= 10, `at least 10 batches ran (${report.batches})`);
});
