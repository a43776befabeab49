// Which llama.cpp binding our side runs on, and making sure it is there before the servers start. The
// default is what a user has after `npm install && npm start` once the first start's background build
// finished (src/engine/binding/): when that build would run on this machine and is not there yet, the
// bench runs it first, in the foreground (the same script and record the service uses).
import { spawn } from "node:child_process";
import path from "node:path";
import { projectRoot } from "../../scripts/lib/llama-source.ts";
import {
  anyCompletedBuild, buildId, buildIdentity, compilerLine, completedBuild, decideFastBuild, fastBuildRoot, findToolchain, lockHolder,
  machineFacts, readFailure, readProgress, type FastBuildFlavor,
} from "../../src/engine/binding/fastBuild.ts";
import type { BenchBinding } from "./args.ts";
import { progress } from "./log.ts";

export type PreparedBinding = {
  /** Given to our service (LLAMA_BINDING; LLAMA_FAST_BUILD=off so no build starts during a run). */
  env: Record<string, string>;
  /** One line for the notes: what was asked for and what is there. */
  summary: string;
};

function runBuild(flavor: FastBuildFlavor): Promise<number> {
  return new Promise((resolve) => {
    const args = ["--import", "tsx", path.join(projectRoot, "scripts", "build-llama-native.ts"), ...(flavor === "portable" ? ["--portable"] : [])];
    progress(`building the ${flavor} fast binding first (npm run build:llama-native${flavor === "portable" ? " -- --portable" : ""}; ~6 min on 2 idle cores, at nice 19)`);
    const started = Date.now();
    const child = spawn(process.execPath, args, { cwd: projectRoot, stdio: ["ignore", "pipe", "inherit"] });
    child.stdout.on("data", (d: Buffer) => { for (const line of d.toString().split("\n")) if (line.trim() !== "") progress(`  ${line.trim()}`); });
    child.on("close", (code) => {
      progress(`  build ended after ${((Date.now() - started) / 60_000).toFixed(1)} min (exit ${code})`);
      resolve(code ?? 1);
    });
  });
}

async function waitForOtherBuild(root: string): Promise<void> {
  for (let holder = lockHolder(root); holder !== null; holder = lockHolder(root)) {
    const p = readProgress(root, holder.id);
    progress(`another process (pid ${holder.pid}) is building ${holder.id}: ${p?.phase ?? "starting"}${p?.percent == null ? "" : ` ${p.percent}%`}; waiting`);
    await new Promise((r) => setTimeout(r, 15_000));
  }
}

export async function prepareBinding(binding: BenchBinding, gpu: boolean): Promise<PreparedBinding> {
  const off = { LLAMA_FAST_BUILD: "off" };
  if (gpu) return { env: { ...off, LLAMA_BINDING: "auto" }, summary: "binding: the CUDA binding node-llama-cpp loads (--gpu); fast CPU builds not involved" };
  if (binding === "prebuilt") return { env: { ...off, LLAMA_BINDING: "prebuilt" }, summary: "binding: node-llama-cpp's prebuilt binaries (--binding=prebuilt)" };
  const root = fastBuildRoot();
  const facts = machineFacts();
  if (binding === "native" || binding === "portable") {
    const identity = buildIdentity(binding, facts);
    // A build in progress elsewhere may be this one: wait for it rather than queue behind its lock.
    if (completedBuild(root, identity).record === null) await waitForOtherBuild(root);
    if (completedBuild(root, identity).record === null && await runBuild(binding) !== 0) {
      throw new Error(`--binding=${binding}: the build failed; see ${readFailure(root, buildId(identity))?.logFile ?? "its log"}`);
    }
    const record = completedBuild(root, identity).record;
    return { env: { ...off, LLAMA_BINDING: binding }, summary: `binding: the ${binding} fast build ${record?.id} (--binding=${binding}; built ${record?.builtAt} in ${record?.seconds} s)` };
  }
  // default: what `npm start` on this machine ends up with (its decision, with the CPU backend the bench runs).
  if (anyCompletedBuild(root, facts) === null) await waitForOtherBuild(root);
  const identity = buildIdentity("native", facts);
  const toolchain = findToolchain();
  const failure = readFailure(root, buildId(identity));
  const userSetting = process.env["LLAMA_FAST_BUILD"] === "off" ? "off" : "auto";
  const decision = decideFastBuild({
    setting: userSetting, platform: process.platform, backend: "cpu", inUse: null, completed: anyCompletedBuild(root, facts), toolchain, failure,
    compiler: failure === null || !toolchain.ok ? null : await compilerLine(toolchain.cxx), lockHeldBy: null,
  });
  if (decision.build) await runBuild("native");
  const built = anyCompletedBuild(root, facts);
  const what = built === null ? `node-llama-cpp's prebuilt binaries (no fast build: ${decision.build ? "the build failed" : decision.reason})` : `the ${built.identity.flavor} fast build ${built.id}`;
  return { env: { ...off, LLAMA_BINDING: "auto" }, summary: `binding: the default install after its background build, here ${what}` };
}

/** The binding our service reported in its log ("native runtime loaded": a build id, or prebuilt / localBuild). */
export function bindingInLog(text: string): string | null {
  const line = text.split("\n").find((l) => l.includes('"msg":"native runtime loaded"'));
  if (line === undefined) return null;
  try {
    const fields = JSON.parse(line) as { binding?: unknown; libraryDir?: unknown };
    return typeof fields.binding === "string" ? `${fields.binding}${typeof fields.libraryDir === "string" ? ` (${path.relative(projectRoot, fields.libraryDir)})` : ""}` : null;
  } catch {
    return null;
  }
}
