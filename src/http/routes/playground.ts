// The playground: static files (HTML, CSS, browser ES modules) served at `/`, no build step, no CDN.
// The page's code is plain JavaScript checked by TypeScript (`// @ts-check` + JSDoc, tsconfig.playground.json),
// so what the browser runs is exactly the reviewed file and production needs no dev tools.
import fastifyStatic from "@fastify/static";
import type { FastifyPluginAsync } from "fastify";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const playgroundRoot = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "public");

export const playgroundRoutes: FastifyPluginAsync = async (app) => {
  await app.register(fastifyStatic, {
    root: playgroundRoot,
    prefix: "/",
    // One route per file found at start (no catch-all GET), so unknown paths keep the JSON 404 of
    // every API and the page's routes never shadow an API route.
    wildcard: false,
    index: "index.html",
    schemaHide: true,
    // The page polls nothing large; a short cache keeps reloads cheap while edits show up soon.
    maxAge: "1m",
  });
};
