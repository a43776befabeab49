// The process: config -> HTTP (health answers at once) -> engines -> warm-up -> ready; signals; drain;
// shutdown. Run it with node directly (npm start does), so the exit code is the service's own.
import closeWithGrace from "close-with-grace";
import { constants } from "node:os";
import { ConfigError, loadConfig } from "./config.js";
import { drain } from "./drain.js";
import { ModelFileError } from "./engine/modelFiles.js";
import { FastBuildMonitor } from "./engine/binding/backgroundBuild.js";
import { disposeEngines, loadEngines, warmUp, type LoadedEngines } from "./composition.js";
import { accessFrom } from "./http/access.js";
import { buildApp } from "./http/app.js";
import { createLogger } from "./logging.js";
import { ServiceState } from "./service.js";
import { traceEngines } from "./telemetry/engineSpans.js";
import { startTracing } from "./telemetry/tracing.js";

/** After a drain: time for closing the port and freeing the models before close-with-grace gives up. */
const SHUTDOWN_MARGIN_MS = 30_000;

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const log = createLogger(config);
  const state = new ServiceState();
  const tracing = await startTracing(log);
  if (tracing) state.whenEngines(traceEngines);
  const app = await buildApp({
    state, bodyLimitBytes: config.bodyLimitBytes, logger: log,
    access: accessFrom(config), responseStore: config.responseStore, tracing, retrievalTimeoutMs: config.retrievalTimeoutMs,
  });
  if (config.apiKeys.length === 0) log.warn("LLM_API_KEY is not set: the APIs need no key (set it wherever the port is reachable by others)");
  let engines: LoadedEngines | null = null;
  // The fast llama.cpp build (docs/native-build.md): decided once the runtime is loaded, started once ready.
  const fastBuild = new FastBuildMonitor({ setting: config.fastBuild, binding: config.binding, log });
  state.bindingStatus = () => fastBuild.status();

  closeWithGrace({
    // The safety net: a drain that hangs past its own deadline plus this margin ends with exit 1.
    delay: config.drainTimeoutMs + SHUTDOWN_MARGIN_MS,
    logger: { error: (message: unknown) => log.error(message) },
    // A second SIGTERM/SIGINT stops at once, with the conventional 128 + signal number.
    onSecondSignal: (signal) => {
      log.warn({ signal, inFlight: state.inFlight }, "second signal: stopping now");
      process.exit(128 + (constants.signals[signal as NodeJS.Signals] ?? 15));
    },
  }, async ({ signal, err }) => {
    if (err) log.error({ err }, "shutting down after an error");
    else log.info({ signal }, "shutting down");
    // A background build gives its cores back first (it is used from the next start anyway).
    await fastBuild.stop();
    // After an uncaught error the process cannot be trusted for minutes: cancel at once.
    await drain(state, { timeoutMs: err ? 0 : config.drainTimeoutMs, log });
    await app.close();
    if (engines) await disposeEngines(engines);
    // The last spans (the drain's requests) leave before the process does.
    await tracing?.shutdown().catch((error: unknown) => log.warn({ err: error }, "tracing: could not flush the last spans"));
    log.info("stopped");
  });

  await app.listen({ port: config.port, host: config.host });
  try {
    engines = await loadEngines(config, log);
    state.setEngines(engines);
    await fastBuild.afterLoad(engines.runtime);
    if (config.warmup) log.info({ ms: Math.round(await warmUp(engines)) }, "warm-up done");
    state.markReady();
    log.info({ port: config.port, host: config.host }, "ready");
    fastBuild.start();
  } catch (error) {
    state.markFailed();
    if (error instanceof ModelFileError) log.fatal(error.message);
    else log.fatal({ err: error }, "could not load the models");
    await app.close();
    process.exit(1);
  }
}

await main();
