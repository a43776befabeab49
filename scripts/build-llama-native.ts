// `npm run build:llama-native [-- --gpu cuda|vulkan|metal]`: node-llama-cpp builds its binding from the
// llama.cpp source in its own package (offline: cmake and a C++ compiler, ~5 minutes on 2 cores), tuned
// for this machine's CPU (node-llama-cpp turns GGML_NATIVE on for a local build), then our addons are
// rebuilt against it. node-llama-cpp prefers such a local build over its prebuilt binaries from then on;
// `npx --no node-llama-cpp source clear` goes back to the prebuilt ones.
//
// OpenMP is turned off: with it every thread that runs llama_decode owns its own OpenMP team, and the
// service has two (the generation loop and the embedder). Once the teams' threads outnumber the cores,
// libgomp cuts its spin-wait to 1,000 rounds and ggml's per-operation barriers go to sleep in the kernel:
// one short text's embedding went from 9–10 ms to 16–20 ms as soon as a second decoding thread existed
// (2 cores; README, "Embeddings: where the time goes"). ggml's own thread pools have no such throttle.
//
// The result runs only on CPUs with the instruction sets of the one it was built on, which is why it is
// optional and not part of `npm install`.
import { spawnSync } from "node:child_process";
import { NATIVE_ADDONS } from "../src/engine/native/addonBuild.ts";
import { LOCAL_BUILD_CMAKE_OPTIONS } from "../src/engine/runtime.ts";
import { ensureNativeAddon } from "./build-native.ts";

const args = process.argv.slice(2);
const gpuGiven = args.some((arg) => arg === "--gpu" || arg.startsWith("--gpu="));
const cli = ["--no", "node-llama-cpp", "source", "download", ...(gpuGiven ? [] : ["--gpu", "false"]), ...args];
// The same options the service asks getLlama() for (runtime.ts): node-llama-cpp names a local build
// after them, which is how the service finds this one.
const cmakeEnv = Object.fromEntries(Object.entries(LOCAL_BUILD_CMAKE_OPTIONS).map(([name, value]) => [`NODE_LLAMA_CPP_CMAKE_OPTION_${name}`, value]));
console.log(`[build-llama-native] npx ${cli.join(" ")} with ${Object.entries(cmakeEnv).map(([k, v]) => `${k}=${v}`).join(" ")}`);
const build = spawnSync("npx", cli, { stdio: "inherit", env: { ...process.env, ...cmakeEnv } });
if (build.status !== 0) {
  console.error(`[build-llama-native] node-llama-cpp's source build failed (exit ${build.status ?? build.signal}); the prebuilt binding stays in use.`);
  process.exit(build.status ?? 1);
}
for (const name of NATIVE_ADDONS) {
  const file = await ensureNativeAddon(name);
  if (file === null) {
    console.error(`[build-llama-native] the ${name} addon did not build against the new library; the service will fall back for it.`);
    process.exit(1);
  }
  console.log(`[build-llama-native] ${name}: ${file}`);
}
process.exit(0);
