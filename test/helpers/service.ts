// Starts the real service on the generated GGUF fixtures: real engines, real Fastify app.
import type { FastifyInstance } from "fastify";
import { ensureTestModels } from "../../scripts/make-test-models.js";
import { loadConfig, type Config } from "../../src/config.js";
import { disposeEngines, loadEngines, warmUp, type LoadedEngines } from "../../src/composition.js";
import { accessFrom } from "../../src/http/access.js";
import { buildApp } from "../../src/http/app.js";
import { ServiceState } from "../../src/service.js";
import { pino } from "pino";
import { TEST_THREADS } from "./threads.js";

export type TestService = {
  app: FastifyInstance;
  engines: LoadedEngines;
  config: Config;
  state: ServiceState;
  /** Base URL once `listen()` was called. */
  listen(): Promise<string>;
  close(): Promise<void>;
};

export async function testConfig(env: Record<string, string> = {}): Promise<Config> {
  const models = await ensureTestModels();
  // LLM_ENGINE=node-llama-cpp npx tap test/…: the same API tests on the fallback generation path.
  // Tests do not persist the prompt cache unless they ask (PROMPT_CACHE_DISK_MIB): runs stay independent.
  const engine = process.env["LLM_ENGINE"] ? { LLM_ENGINE: process.env["LLM_ENGINE"] } : {};
  return loadConfig({ LLM_MODEL: models.chat, EMBED_MODEL: models.embed, LOG_LEVEL: "silent", MODEL_DOWNLOAD: "false", LLM_CONTEXT_SIZE: "1024", PROMPT_CACHE_DISK_MIB: "0", LLM_THREADS: TEST_THREADS, ...engine, ...env });
}

export async function startTestService(env: Record<string, string> = {}): Promise<TestService> {
  const config = await testConfig(env);
  const log = pino({ level: config.logLevel });
  const engines = await loadEngines(config, log);
  const state = new ServiceState();
  state.setEngines(engines);
  await warmUp(engines);
  state.markReady();
  const app = await buildApp({ state, bodyLimitBytes: config.bodyLimitBytes, logger: false, access: accessFrom(config), responseStore: config.responseStore, retrievalTimeoutMs: config.retrievalTimeoutMs });
  await app.ready();
  return {
    app, engines, config, state,
    async listen() {
      const address = await app.listen({ port: 0, host: "127.0.0.1" });
      return address;
    },
    async close() {
      await app.close();
      await disposeEngines(engines);
    },
  };
}

export const postJson = (app: FastifyInstance, url: string, payload: unknown) =>
  app.inject({ method: "POST", url, payload: payload as object, headers: { "content-type": "application/json" } });
