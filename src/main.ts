// The process: config -> HTTP (health answers at once) -> engines -> warm-up -> ready; signals; shutdown.
import closeWithGrace from "close-with-grace";
import { pino } from "pino";
import { ConfigError, loadConfig } from "./config.js";
import { ModelFileError } from "./engine/modelFiles.js";
import { disposeEngines, loadEngines, warmUp, type LoadedEngines } from "./engines.js";
import { buildApp } from "./http/app.js";
import { ServiceState } from "./service.js";

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
  const log = pino({ level: config.logLevel });
  const state = new ServiceState();
  const app = await buildApp({ state, bodyLimitBytes: config.bodyLimitBytes, logger: log });
  let engines: LoadedEngines | null = null;

  closeWithGrace({ delay: 10_000, logger: log }, async ({ signal, err }) => {
    if (err) log.error({ err }, "shutting down after an error");
    else log.info({ signal }, "shutting down");
    state.markStopping();
    await app.close();
    if (engines) await disposeEngines(engines);
  });

  await app.listen({ port: config.port, host: config.host });
  try {
    engines = await loadEngines(config, log);
    state.setEngines(engines);
    if (config.warmup) log.info({ ms: Math.round(await warmUp(engines)) }, "warm-up done");
    state.markReady();
    log.info({ port: config.port, host: config.host }, "ready");
  } catch (error) {
    state.markFailed();
    if (error instanceof ModelFileError) log.fatal(error.message);
    else log.fatal({ err: error }, "could not load the models");
    await app.close();
    process.exit(1);
  }
}

await main();
