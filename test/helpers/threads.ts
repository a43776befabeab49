// (kept apart from service.ts: files that only spawn processes do not load the engine modules)
/**
 * Decode threads of every engine a test loads (TEST_THREADS=2 npx tap … to run them with two). tap runs
 * two test files at a time (package.json "tap"."jobs"): with two decode threads each, four threads
 * wait for each other at ggml's barriers on CI's two cores and a 8 s file took 35 s.
 */
export const TEST_THREADS = process.env["TEST_THREADS"] ?? "1";
