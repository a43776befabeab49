// The fast llama.cpp build's orchestration (src/engine/binding/, scripts/build-llama-native.ts) with real
// files and real processes: the worker script runs as the service starts it, with a tiny real cmake
// project as its compile step instead of node-llama-cpp's 6-minute source build (which `npm run
// build:llama-native` runs; docs/native-build.md has its measured time). What is checked: the decision
// (toolchain, stamps, failures, locks), the commit (no record before every step passed), low priority,
// progress in /api/status, a failure said once, an interrupted build leaving nothing behind.
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { loadConfig, projectRoot } from "../src/config.js";
import { FastBuildMonitor } from "../src/engine/binding/backgroundBuild.js";
import {
  buildId, buildIdentity, buildProgressOf, completedBuild, cpuIdentity, decideFastBuild, failureFile, findToolchain, LEGACY_LOCAL_BUILD_OPTIONS,
  lockHolder, PREBUILT_ONLY_OPTIONS, recordFile, resolveBinding, STAMP_OPTION, tryLock, writeJsonAtomic,
  type BuildRecord, type DecisionFacts, type FailureRecord, type MachineFacts,
} from "../src/engine/binding/fastBuild.js";
import { descendantPids } from "../src/engine/binding/processTree.js";
import { buildJobs, cmakeWithJobs } from "../scripts/build-llama-native.js";
import { pruneStaleBuilds } from "../scripts/build-native.js";
import { buildApp } from "../src/http/app.js";
import { ServiceState } from "../src/service.js";

const facts: MachineFacts = { nodeLlamaCppVersion: "3.22.1", llamaCppTag: "v0.5.0", platform: "linux", arch: "x64", cpu: "cpu-a" };
const fixture = path.join(projectRoot, "test", "fixtures", "fast-build");
const hasCmake = findToolchain().ok;
const tmp = (t: { teardown(fn: () => void): void }) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "fast-build-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
};

/** A committed build of `identity` whose files really exist (a node-llama-cpp-shaped folder). */
function fakeCommittedBuild(root: string, flavor: "native" | "portable", f: MachineFacts = facts): BuildRecord {
  const identity = buildIdentity(flavor, f);
  const id = buildId(identity);
  const bindingDir = path.join(root, id, "binding");
  mkdirSync(path.join(bindingDir, "Release"), { recursive: true });
  writeFileSync(path.join(bindingDir, "Release", "llama-addon.node"), "");
  writeFileSync(path.join(bindingDir, "buildDone.status"), "");
  const record: BuildRecord = { id, identity, bindingDir, libraryDir: path.join(bindingDir, "Release"), compiler: "c++ 12", builtAt: new Date().toISOString(), seconds: 1, steps: {} };
  writeJsonAtomic(recordFile(root, id), record);
  return record;
}

const quietLog = () => {
  const lines: { level: string; msg: string; obj: Record<string, unknown> }[] = [];
  const at = (level: string) => (obj: object, msg: string) => { lines.push({ level, msg, obj: obj as Record<string, unknown> }); };
  return { lines, log: { info: at("info"), warn: at("warn"), debug: at("debug") } };
};

const compileCommand = (extra = "") => [
  `cmake -S ${fixture} -B "$FAST_BUILD_BINDING_DIR/build" -DOUT_DIR="$FAST_BUILD_BINDING_DIR/Release" >/dev/null`,
  `cmake --build "$FAST_BUILD_BINDING_DIR/build"`,
  `nice > "$FAST_BUILD_BINDING_DIR/nice.txt"`,
  ...(extra === "" ? [] : [extra]),
  `touch "$FAST_BUILD_BINDING_DIR/buildDone.status"`,
].join(" && ");

async function until<T>(what: string, probe: () => T | null | undefined, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== null && value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// --------------------------------------------------------------------------------------------- decision
t.test("the decision: what each start does", async (t) => {
  const ok = { ok: true as const, cmake: "/usr/bin/cmake", cxx: "/usr/bin/c++", buildTool: "/usr/bin/make", git: "/usr/bin/git" };
  const base: DecisionFacts = { setting: "auto", platform: "linux", backend: "cpu", inUse: null, completed: null, toolchain: ok, failure: null, compiler: "c++ 12", lockHeldBy: null };
  const record = { id: "native-x", identity: buildIdentity("native", facts) } as BuildRecord;
  const failure: FailureRecord = { id: "native-x", reason: "cc1plus: out of memory", compiler: "c++ 12", at: "2026-12-01T00:00:00Z", logFile: "/x/build.log" };
  const cases: [string, Partial<DecisionFacts>, string, boolean][] = [
    ["nothing built, toolchain there: build", {}, "pending", true],
    ["off", { setting: "off" }, "off", false],
    ["a fast build is loaded", { inUse: record }, "in-use", false],
    ["one is built but another binding was chosen", { completed: record }, "built", false],
    ["a GPU backend", { backend: "cuda" }, "not-needed", false],
    ["Windows", { platform: "win32" }, "unsupported", false],
    ["no toolchain: nothing changes", { toolchain: { ok: false, missing: ["cmake"] } }, "unavailable", false],
    ["failed with this compiler: not again", { failure }, "failed", false],
    ["failed with another compiler: again", { failure, compiler: "c++ 13" }, "pending", true],
    ["another process builds", { lockHeldBy: { pid: 1, host: os.hostname(), id: "native-x", startedAt: "" } }, "building", false],
  ];
  for (const [name, change, state, build] of cases) {
    const d = decideFastBuild({ ...base, ...change });
    t.same([d.state, d.build], [state, build], name);
    t.ok(d.reason.length > 0, `${name}: says why`);
  }
  t.match(decideFastBuild({ ...base, toolchain: { ok: false, missing: ["cmake", "make or ninja"] } }).reason, /cmake, make or ninja not found/);
  t.match(decideFastBuild({ ...base, failure }).reason, /out of memory.*build\.log/);
});

t.test("the toolchain is found on PATH, without running anything", async (t) => {
  const bin = tmp(t);
  const put = (name: string) => { writeFileSync(path.join(bin, name), "#!/bin/sh\n"); chmodSync(path.join(bin, name), 0o755); };
  t.same(findToolchain({ PATH: bin }, "linux"), { ok: false, missing: ["cmake", "a C++ compiler (c++, g++, clang++)", "make or ninja", "git"] });
  for (const name of ["cmake", "g++", "ninja", "git"]) put(name);
  const found = findToolchain({ PATH: bin }, "linux");
  t.ok(found.ok);
  if (found.ok) t.same([found.cxx, found.buildTool], [path.join(bin, "g++"), path.join(bin, "ninja")]);
  writeFileSync(path.join(bin, "clang++"), "not executable");
  t.same(findToolchain({ PATH: bin, CXX: "clang++ -stdlib=libc++" }, "linux"), { ok: false, missing: ["a C++ compiler (clang++)"] }, "CXX is honoured; a file without the exec bit is no compiler");
});

t.test("stamps: a native build is for one CPU and one node-llama-cpp; a portable one for any CPU", async (t) => {
  const id = (flavor: "native" | "portable", f: Partial<MachineFacts> = {}) => buildId(buildIdentity(flavor, { ...facts, ...f }));
  t.not(id("native"), id("native", { cpu: "cpu-b" }), "another CPU: another native build");
  t.equal(id("portable"), id("portable", { cpu: "cpu-b" }), "the portable build does not depend on the CPU");
  t.not(id("native"), id("native", { nodeLlamaCppVersion: "3.23.0" }), "another node-llama-cpp: another build");
  t.not(id("portable"), id("portable", { llamaCppTag: "v0.6.0" }));
  t.match(id("native"), /^native-[0-9a-f]{12}$/);
  const cpuinfo = (flags: string, model = "AMD EPYC 9R14") => `processor\t: 0\nmodel name\t: ${model}\nflags\t\t: ${flags}\n\nprocessor\t: 1\nmodel name\t: ${model}\nflags\t\t: other\n`;
  t.equal(cpuIdentity(cpuinfo("avx2 avx512f fma")), cpuIdentity(cpuinfo("fma avx512f avx2")), "flag order does not matter");
  t.not(cpuIdentity(cpuinfo("avx2 fma")), cpuIdentity(cpuinfo("avx2 avx512f fma")), "other instruction sets: another CPU");
  t.not(cpuIdentity(cpuinfo("avx2"), "x"), cpuIdentity(cpuinfo("avx2", "Intel Xeon")), "another model: another CPU");
  t.equal(cpuIdentity(null, "Apple M2"), cpuIdentity(null, "Apple M2 "), "without /proc/cpuinfo: the model string");
});

t.test("which binding loads: the committed build for this machine, else what was asked for before", async (t) => {
  const root = tmp(t);
  t.same(resolveBinding("auto", "cpu", root, facts), { setting: "auto", cmakeOptions: LEGACY_LOCAL_BUILD_OPTIONS, build: null }, "nothing built: the hand-made local build or the prebuilt binaries");
  t.same(resolveBinding("prebuilt", "cpu", root, facts).cmakeOptions, PREBUILT_ONLY_OPTIONS);
  t.throws(() => resolveBinding("native", "cpu", root, facts), { name: "BindingChoiceError", message: /LLAMA_BINDING=native: no native build .*npm run build:llama-native/ }, "asked for by name and not built: an error, not a silent fallback");

  const portable = fakeCommittedBuild(root, "portable");
  t.equal(resolveBinding("auto", "cpu", root, facts).build?.id, portable.id);
  const native = fakeCommittedBuild(root, "native");
  const auto = resolveBinding("auto", "auto", root, facts);
  t.equal(auto.build?.id, native.id, "native first");
  t.same(auto.cmakeOptions, { GGML_OPENMP: "OFF", GGML_NATIVE: "ON", [STAMP_OPTION]: native.id }, "getLlama is asked for exactly that build's folder");
  t.equal(resolveBinding("portable", "cpu", root, facts).build?.id, portable.id);
  t.equal(resolveBinding("auto", "cuda", root, facts).build, null, "an explicit GPU backend: fast builds are CPU bindings");
  t.equal(resolveBinding("auto", "cpu", root, { ...facts, cpu: "cpu-b" }).build?.id, portable.id, "node_modules moved to another CPU: the native build is not loaded");
  t.equal(resolveBinding("auto", "cpu", root, { ...facts, nodeLlamaCppVersion: "3.23.0" }).build, null, "another node-llama-cpp: neither");

  rmSync(path.join(native.bindingDir, "buildDone.status"));
  t.equal(resolveBinding("auto", "cpu", root, facts).build?.id, portable.id, "a record whose build folder is incomplete (node-llama-cpp source clear) does not count");
  t.match(completedBuild(root, buildIdentity("native", facts)).reason, /files of build .* are gone/);
});

t.test("the lock: one build per node_modules; a dead holder's lock is taken over", async (t) => {
  const root = tmp(t);
  const first = tryLock(root, "native-a");
  t.ok(first.lock);
  const second = tryLock(root, "native-b");
  t.equal(second.lock, null);
  t.equal(second.heldBy?.pid, process.pid);
  first.lock?.release();
  t.equal(lockHolder(root), null);

  const dead = spawn(process.execPath, ["-e", ""]);
  const deadPid = await new Promise<number>((resolve) => dead.on("exit", () => resolve(dead.pid!)));
  writeFileSync(path.join(root, "build.lock"), JSON.stringify({ pid: deadPid, host: os.hostname(), id: "native-a", startedAt: new Date().toISOString() }));
  t.equal(lockHolder(root), null, "its process is gone");
  const taken = tryLock(root, "native-c");
  t.ok(taken.lock, "taken over");
  taken.lock?.release();
});

t.test("build progress from make and ninja lines", async (t) => {
  t.equal(buildProgressOf("[ 42%] Building CXX object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o"), 42);
  t.equal(buildProgressOf("[12/153] Building CXX object CMakeFiles/llama-addon.dir/addon/addon.cpp.o"), 7);
  t.equal(buildProgressOf("[153/153] Linking CXX shared module Release/llama-addon.node"), 100);
  t.equal(buildProgressOf("-- Configuring done"), null);
});

t.test("the compile jobs: node-llama-cpp's cmake calls get ours instead of --parallel <every host core>", async (t) => {
  const dir = tmp(t);
  const real = path.join(dir, "real-cmake");
  writeFileSync(real, "#!/bin/sh\nfor a in \"$@\"; do printf '[%s]' \"$a\"; done\n");
  chmodSync(real, 0o755);
  const shimDir = cmakeWithJobs(path.join(dir, "bin"), real, 3);
  const run = (...args: string[]) => new Promise<string>((resolve) => {
    const child = spawn(path.join(shimDir, "cmake"), args);
    let out = "";
    child.stdout.on("data", (d: Buffer) => { out += d.toString(); });
    child.on("close", () => resolve(out));
  });
  t.equal(await run("--build", "/b u", "--config", "Release", "--parallel", "64"), "[--build][/b u][--config][Release][--parallel][3]");
  t.equal(await run("--version"), "[--version]", "other calls pass through unchanged");
  t.equal(await run(), "");
  const jobs = buildJobs();
  t.ok(jobs >= 1 && jobs <= os.availableParallelism(), `${jobs} jobs: no more than the CPUs this process may use`);
});

t.test("building an addon for one binding keeps the addons of the others (prebuilt, native, portable)", async (t) => {
  const dir = tmp(t);
  const lib = (name: string) => { const file = path.join(dir, "libs", name); mkdirSync(path.dirname(file), { recursive: true }); writeFileSync(file, ""); return file; };
  const build = (key: string, library: string | null) => {
    mkdirSync(path.join(dir, "slot_loop", key), { recursive: true });
    if (library !== null) writeFileSync(path.join(dir, "slot_loop", key, "library.json"), JSON.stringify({ library }));
  };
  const [prebuilt, native, portable] = [lib("prebuilt/libllama.so"), lib("native/libllama.so"), lib("portable/libllama.so")];
  build("prebuilt-new", prebuilt);
  build("prebuilt-old-source", prebuilt);
  build("native", native);
  build("portable", portable);
  build("gone", path.join(dir, "libs", "removed", "libllama.so"));
  build("legacy", null);
  pruneStaleBuilds(path.join(dir, "slot_loop"), "prebuilt-new", prebuilt);
  t.same(readdirSync(path.join(dir, "slot_loop")).sort(), ["native", "portable", "prebuilt-new"], "kept: the new build and the other bindings' builds; gone: an older source for the same library, a removed library, a build without its note");
});

t.test("the process tree below a pid", async (t) => {
  const child = spawn("sh", ["-c", "sleep 30 & sleep 30 & wait"], { stdio: "ignore" });
  t.teardown(() => { try { process.kill(child.pid!, "SIGKILL"); } catch { /* gone */ } });
  const below = await until("two sleeps", () => { const d = descendantPids(child.pid!); return d.length >= 2 ? d : null; }, 10_000);
  t.equal(below.length, 2);
  t.ok(descendantPids(process.pid).includes(child.pid!), "and this process is above all of them");
  for (const pid of below) process.kill(pid, "SIGKILL");
});

t.test("tests run with LLAMA_FAST_BUILD=off; a plain start defaults to auto", async (t) => {
  t.equal(process.env["LLAMA_FAST_BUILD"], "off", "test/helpers/child-env.ts sets it for every test and what it spawns");
  t.equal(loadConfig({}).fastBuild, "auto");
  t.equal(loadConfig({}).binding, "auto");
  t.throws(() => loadConfig({ LLAMA_FAST_BUILD: "sometimes" }), /LLAMA_FAST_BUILD/);
});

// ---------------------------------------------------------------------------- the worker, for real
t.test("a background build, start to commit, as the service runs it", { skip: hasCmake ? false : "needs cmake, a C compiler and make or ninja on PATH" }, async (t) => {
  const root = tmp(t);
  const { lines, log } = quietLog();
  const state = new ServiceState();
  const workerArgs = ["--root", root, "--compile-command", compileCommand(`chrt -p $$ > "$FAST_BUILD_BINDING_DIR/policy.txt" 2>/dev/null || true`), "--addons-command", "sleep 1", "--verify-command", "true"];
  const monitor = new FastBuildMonitor({ setting: "auto", binding: "auto", log, root, workerArgs });
  t.teardown(() => monitor.stop());
  state.bindingStatus = () => monitor.status();
  const app = await buildApp({ state, bodyLimitBytes: 1 << 20, logger: false });
  t.teardown(() => app.close());
  const status = async () => (await app.inject({ url: "/api/status" })).json<{ binding: { loaded: string | null; fast_build: { state: string; phase?: string; percent?: number; reason: string; id?: string; log_file?: string } } }>().binding;

  t.equal((await status()).fast_build.state, "pending", "before the runtime loaded");
  const decision = await monitor.afterLoad({ backend: "cpu", binding: { loaded: "prebuilt", build: null, libraryDir: "/prebuilt" } });
  t.same([decision.state, decision.build], ["pending", true]);
  monitor.start();
  const seenPhases = new Set<string>();
  await until("the build to finish", () => {
    void status().then((s) => { if (s.fast_build.phase) seenPhases.add(s.fast_build.phase); });
    return lines.find((l) => l.msg.startsWith("fast llama.cpp build done")) ?? lines.find((l) => l.level === "warn");
  });
  const done = await status();
  t.equal(done.fast_build.state, "built", JSON.stringify(lines.filter((l) => l.level === "warn")));
  t.equal(done.loaded, "prebuilt", "this process keeps the binding it loaded");
  t.ok(seenPhases.has("addons"), `the steps show in /api/status (${[...seenPhases].join(", ")})`);
  t.ok(lines.some((l) => l.msg === "fast llama.cpp build progress" && typeof l.obj["percent"] === "number"), "progress in the log");

  const id = buildId(buildIdentity("native"));
  const record = JSON.parse(readFileSync(recordFile(root, id), "utf8")) as BuildRecord;
  t.equal(readFileSync(path.join(record.bindingDir, "nice.txt"), "utf8").trim(), "19", "the compiler ran at nice 19");
  const policy = path.join(record.bindingDir, "policy.txt");
  if (existsSync(policy) && readFileSync(policy, "utf8") !== "") t.match(readFileSync(policy, "utf8"), /SCHED_IDLE/, "and SCHED_IDLE (chrt found)");
  t.ok(existsSync(path.join(record.libraryDir, "llama-addon.node")), "the cmake project really built");
  t.match(readFileSync(done.fast_build.log_file!, "utf8"), /\[100%\] Built target llama-addon[\s\S]*committed/, "the tools' output is in the build log");
  t.equal(lockHolder(root), null, "lock released");

  // The next start: the committed build is what loads.
  t.equal(resolveBinding("auto", "cpu", root).build?.id, id);
  const next = new FastBuildMonitor({ setting: "auto", binding: "auto", log, root, workerArgs });
  t.equal((await next.afterLoad({ backend: "cpu", binding: { loaded: "localBuild", build: record, libraryDir: record.libraryDir } })).state, "in-use");
});

t.test("a failed step commits nothing, is said once, and is not retried at the next start", { skip: hasCmake ? false : "needs cmake" }, async (t) => {
  const root = tmp(t);
  const { lines, log } = quietLog();
  const workerArgs = ["--root", root, "--compile-command", compileCommand(), "--addons-command", "echo 'addon.cpp:1: error: llama_vocab_n_tokens was not declared' >&2; exit 1"];
  const monitor = new FastBuildMonitor({ setting: "auto", binding: "auto", log, root, workerArgs });
  t.teardown(() => monitor.stop());
  await monitor.afterLoad({ backend: "cpu", binding: { loaded: "prebuilt", build: null, libraryDir: null } });
  monitor.start();
  await until("the failure", () => lines.find((l) => l.level === "warn"));
  const id = buildId(buildIdentity("native"));
  t.notOk(existsSync(recordFile(root, id)), "the library built, but our addons did not: no record, so nothing loads it");
  const failure = JSON.parse(readFileSync(failureFile(root, id), "utf8")) as FailureRecord;
  t.match(failure.reason, /sh exited with code 1: addon\.cpp:1: error: llama_vocab_n_tokens/, "the first error line is the reason");
  t.equal(monitor.status().fast_build.state, "failed");
  t.equal(lines.filter((l) => l.level === "warn").length, 1, "one warning");
  t.equal(resolveBinding("auto", "cpu", root).build, null, "the prebuilt binding stays");

  const again = quietLog();
  const later = new FastBuildMonitor({ setting: "auto", binding: "auto", log: again.log, root, workerArgs, compiler: async () => failure.compiler });
  const d = await later.afterLoad({ backend: "cpu", binding: { loaded: "prebuilt", build: null, libraryDir: null } });
  t.same([d.state, d.build], ["failed", false], "the next start does not build again");
  t.equal(again.lines.filter((l) => l.level !== "debug").length, 0, "and says nothing above debug (the reason is in /api/status)");
  t.match(later.status().fast_build.reason, /llama_vocab_n_tokens/);
  const upgraded = new FastBuildMonitor({ setting: "auto", binding: "auto", log: again.log, root, workerArgs, compiler: async () => "c++ (Debian 13.1.0) 13.1.0" });
  t.equal((await upgraded.afterLoad({ backend: "cpu", binding: { loaded: "prebuilt", build: null, libraryDir: null } })).build, true, "a new compiler tries again");
});

t.test("stopping the service stops the build and everything under it; the next start builds again", { skip: hasCmake ? false : "needs cmake" }, async (t) => {
  const root = tmp(t);
  const pidFile = path.join(root, "sleep.pid");
  const { lines, log } = quietLog();
  const workerArgs = ["--root", root, "--compile-command", `sleep 300 & echo $! > ${pidFile}; sleep 301`];
  const monitor = new FastBuildMonitor({ setting: "auto", binding: "auto", log, root, workerArgs });
  await monitor.afterLoad({ backend: "cpu", binding: { loaded: "prebuilt", build: null, libraryDir: null } });
  monitor.start();
  const sleepPid = await until("the compile command", () => (existsSync(pidFile) && readFileSync(pidFile, "utf8").trim() !== "" ? Number(readFileSync(pidFile, "utf8")) : null));
  const holder = await until("the lock", () => lockHolder(root));
  t.equal(monitor.status().fast_build.state, "building");
  await monitor.stop();
  const alive = (pid: number) => { try { return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8")); } catch { return false; } };
  await until("the compile command's processes to be gone", () => (!alive(sleepPid) && !alive(holder.pid) ? true : null), 10_000);
  const id = buildId(buildIdentity("native"));
  t.notOk(existsSync(recordFile(root, id)), "nothing committed");
  t.notOk(existsSync(failureFile(root, id)), "an interruption is no failure");
  t.equal(lockHolder(root), null, "lock released");
  t.ok(lines.some((l) => /interrupted/.test(l.msg)));
  const next = new FastBuildMonitor({ setting: "auto", binding: "auto", log, root, workerArgs });
  t.equal((await next.afterLoad({ backend: "cpu", binding: { loaded: "prebuilt", build: null, libraryDir: null } })).build, true, "the next start builds again");
});

t.test("while another process builds, a start does not, and /api/status shows that build's progress", async (t) => {
  const root = tmp(t);
  const held = tryLock(root, "portable-other");
  t.teardown(() => held.lock?.release());
  writeJsonAtomic(path.join(root, "portable-other", "progress.json"), { id: "portable-other", pid: process.pid, phase: "compile", percent: 42, startedAt: "2026-12-08T00:00:00.000Z", updatedAt: "2026-12-08T00:01:00.000Z" });
  const { log } = quietLog();
  const monitor = new FastBuildMonitor({ setting: "auto", binding: "auto", log, root });
  const d = await monitor.afterLoad({ backend: "cpu", binding: { loaded: "prebuilt", build: null, libraryDir: null } });
  t.same([d.state, d.build], ["building", false]);
  t.match(monitor.status().fast_build, { state: "building", phase: "compile", percent: 42, started_at: "2026-12-08T00:00:00.000Z", reason: /another process \(pid \d+\) is building portable-other/ });
});

t.test("the worker exits 3 when the lock is held, without touching anything", { skip: hasCmake ? false : "needs cmake" }, async (t) => {
  const root = tmp(t);
  const held = tryLock(root, "native-other");
  t.teardown(() => held.lock?.release());
  const child = spawn(process.execPath, ["--import", "tsx", path.join(projectRoot, "scripts", "build-llama-native.ts"), "--background", "--root", root, "--compile-command", "exit 9"], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => { out += d.toString(); });
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  t.equal(code, 3);
  t.match(out, /"event":"locked".*"pid":\d+/);
  t.notOk(existsSync(failureFile(root, buildId(buildIdentity("native")))), "no failure recorded for a build that did not run");
});
