// scripts/gpu-check.ts on a machine without a GPU (this one, and CI): it must stop at once, say why, and
// run nothing. Real processes, with PATH narrowed to what each case needs; a stand-in nvidia-smi (a shell
// script) plays a broken driver and a GPU without the CUDA toolkit.
import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { projectRoot } from "../src/config.js";

async function gpuCheck(pathDirs: string[]): Promise<{ code: number | null; output: string; seconds: number }> {
  const started = Date.now();
  const child = spawn(process.execPath, ["--import", "tsx", path.join(projectRoot, "scripts", "gpu-check.ts")], {
    cwd: projectRoot, env: { ...process.env, PATH: pathDirs.join(path.delimiter) }, stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (d: Buffer) => { output += d.toString(); });
  child.stderr.on("data", (d: Buffer) => { output += d.toString(); });
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  return { code, output, seconds: (Date.now() - started) / 1000 };
}

const fakeBin = (t: { teardown(fn: () => void): void }, smi: string) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), "gpu-check-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(path.join(dir, "nvidia-smi"), `#!/bin/sh\n${smi}\n`);
  chmodSync(path.join(dir, "nvidia-smi"), 0o755);
  return dir;
};
// node itself and the shell the stand-in needs, nothing else (no nvidia-smi, no nvcc, no npm, no cmake).
const base = [path.dirname(process.execPath), "/bin"];

t.test("no nvidia-smi: exit 2 at once, saying so, nothing run", async (t) => {
  t.notOk(base.some((d) => existsSync(path.join(d, "nvidia-smi"))), "no nvidia-smi on that PATH");
  const r = await gpuCheck(base);
  t.equal(r.code, 2, r.output);
  t.match(r.output, /no NVIDIA GPU here: nvidia-smi is not on PATH.*nothing was run/);
  t.notMatch(r.output, /\$ /, "no command was started");
  t.ok(r.seconds < 60, `stopped in ${r.seconds.toFixed(1)} s (the TypeScript loader's start is most of it)`);
});

t.test("nvidia-smi that fails (no driver loaded): exit 2", async (t) => {
  const r = await gpuCheck([fakeBin(t, "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' >&2; exit 9"), ...base]);
  t.equal(r.code, 2, r.output);
  t.match(r.output, /nvidia-smi failed.*no usable GPU; nothing was run/);
});

t.test("a GPU but no CUDA toolkit: exit 2 naming nvcc", { skip: existsSync("/usr/local/cuda/bin/nvcc") ? "this machine has /usr/local/cuda" : false }, async (t) => {
  const r = await gpuCheck([fakeBin(t, "echo 'NVIDIA H100 80GB HBM3, 9.0'"), ...base]);
  t.equal(r.code, 2, r.output);
  t.match(r.output, /NVIDIA H100 80GB HBM3 found, but no nvcc/);
  t.notMatch(r.output, /\$ /, "no command was started");
});
