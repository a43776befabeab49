// The OpenAI-compatible API (issue 4): filled in by its own change.
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { ServiceState } from "../../service.js";

export const openaiRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (_app, _options) => {};
