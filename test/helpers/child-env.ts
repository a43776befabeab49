// Loaded into every test file by tap (package.json "tap"."node-arg"), before the test runs.
//
// tap starts a test file as `node --import=@tapjs/mock… --enable-source-maps --import=@tapjs/processinfo…
// --import=tsx file`, and puts the processinfo loader in NODE_OPTIONS too. Every child process a test
// starts inherits both, and coverage is off (package.json "disable-coverage"), so they only cost time:
// - node-llama-cpp's getLlama() forks a child to try the native binding before loading it (always, for
//   the prebuilt binaries on Linux), and fork() passes this process's execArgv on. Measured here, the
//   getLlama() of a test file took 2.7 s with tap's loaders in that child and 0.65 s without them.
// - a service process a test spawns (`node --import tsx src/main.ts`) would load the processinfo hook
//   through NODE_OPTIONS, and so would the binding test it forks in turn.
// The test file itself keeps its loaders; only its children start plain. A child that needs TypeScript
// is spawned with `--import tsx` explicitly (test/helpers/process.ts, test/loop-guard.test.ts).
// tap passes each loader as one `--import=…` argument; this file is one of them too.
process.execArgv = process.execArgv.filter((arg) => !(arg === "--enable-source-maps" || arg.startsWith("--import=")));
delete process.env["NODE_OPTIONS"];
// The fast llama.cpp build (src/engine/binding/) never starts from a test: every service a test starts
// uses whatever binding is installed. test/fast-build.test.ts runs the build's orchestration explicitly.
process.env["LLAMA_FAST_BUILD"] = "off";
