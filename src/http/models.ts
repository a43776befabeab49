// One model resolution for every route: a route states the kind of model it needs in its config
// (`{ model: { kind: "embedding" } }`), and a preHandler resolves the request's name through the registry
// before the handler runs, so a handler only reads `modelOf(request, kind)`. An unknown name, a model of
// another kind or a kind not served is a ModelNotFoundError that the route's API words (errors.ts).
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { ModelKind, ServedModel, ServedModelOf } from "../engine/registry.js";
import type { ServiceState } from "../service.js";

/** What a route needs: a model of `kind` (or any kind), named by `name(request)` (default: the body's `model`). */
export type ModelNeed = {
  kind: ModelKind | "any";
  /** The requested name; undefined: the default of the kind (the chat model for "any"). May throw a 400. */
  name?: (request: FastifyRequest) => string | undefined;
};

declare module "fastify" {
  interface FastifyContextConfig {
    /** The model this route serves with; resolved before its handler (models.ts). */
    model?: ModelNeed;
  }
  interface FastifyRequest {
    /** Set by the resolving preHandler for routes that state a `model` need. */
    servedModel: ServedModel | null;
  }
}

const bodyModel = (request: FastifyRequest): string | undefined => {
  const model = (request.body as { model?: unknown } | null | undefined)?.model;
  return typeof model === "string" ? model : undefined;
};

/** Installs the resolution (before any route is registered: hooks apply to the routes after them). */
export function installModelResolution(app: FastifyInstance, state: ServiceState): void {
  app.decorateRequest("servedModel", null);
  app.addHook("preHandler", async (request) => {
    const need = request.routeOptions.config.model;
    if (need === undefined) return;
    const requested = (need.name ?? bodyModel)(request);
    // Not ready or draining: a 503 with Retry-After, before any model is looked up.
    const { models } = state.engines();
    request.servedModel = models.resolve(need.kind === "any" ? undefined : need.kind, requested);
  });
}

/** The model the preHandler resolved for this request's route (which must state a need of `kind`). */
export function modelOf<K extends ModelKind>(request: FastifyRequest, kind: K): ServedModelOf<K>;
export function modelOf(request: FastifyRequest, kind: "any"): ServedModel;
export function modelOf(request: FastifyRequest, kind: ModelKind | "any"): ServedModel {
  const served = request.servedModel;
  if (served === null || (kind !== "any" && served.kind !== kind)) {
    throw new Error(`route ${request.routeOptions.url} reads a ${kind} model but its config states ${JSON.stringify(request.routeOptions.config.model)}`);
  }
  return served;
}
