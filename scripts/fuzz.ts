// The long property run: `npm run fuzz -- --duration=30m [--seed=N]`. Same properties as
// test/fuzz.test.ts; prints the seed, the requests sent and any shrunk failing case (as curl).
import { parseArgs } from "node:util";
import { runFuzz } from "../test/helpers/fuzz.js";

const { values } = parseArgs({ options: { duration: { type: "string", default: "30m" }, seed: { type: "string" } } });
const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(values.duration ?? "30m");
if (!match) {
  process.stderr.write(`--duration=${values.duration}: use e.g. 90s, 30m, 2h\n`);
  process.exit(2);
}
const durationMs = Number(match[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(match[2] ?? "s") as "ms" | "s" | "m" | "h"];
const seed = values.seed !== undefined ? Number(values.seed) : Date.now() % 2 ** 31;
console.log(`fuzz: seed ${seed}, duration ${values.duration}`);
const report = await runFuzz({ seed, durationMs, log: (line) => console.log(line) });
console.log(report.failure ?? "fuzz: no failing case");
console.log(`fuzz: done; seed ${report.seed}, ${report.requests} requests in ${report.batches} batches, statuses ${JSON.stringify(report.statuses)}`);
process.exit(report.failure ? 1 : 0);
