// Response encoding for the embedding routes, off Fastify's schema serializer.
//
// fast-json-stringify (what a route's response schema compiles to) writes a number array one element at
// a time; V8's JSON.stringify has a fast path for arrays of doubles. Measured for one response of
// 256 × 384 floats (2.0 MB of JSON): 48-67 ms of CPU with the schema serializer, 13-15 ms with
// JSON.stringify; base64 of the float32 bytes (OpenAI's encoding_format "base64") ~1 ms. The handlers
// build these objects field by field from their TypeBox types, so the schema still describes exactly
// what is sent (and documents it in OpenAPI); only the writer changes.
import type { FastifyReply } from "fastify";
import type { EmbedResponse } from "./schemas/llm.js";
import type { EmbeddingsResponse } from "./schemas/openai.js";

/**
 * Makes this reply's 200 body go through `vectorResponseJson`. A custom serializer bypasses Fastify's
 * content-type default, so it is set here too. Errors thrown later still use the error serializer.
 */
export function useVectorJson(reply: FastifyReply): void {
  reply.type("application/json; charset=utf-8").serializer(vectorResponseJson);
}

/** The JSON of a response whose bulk is number arrays. */
export function vectorResponseJson(payload: EmbedResponse | EmbeddingsResponse): string {
  return JSON.stringify(payload);
}

/** OpenAI's `encoding_format: "base64"`: the vector as little-endian float32 bytes, base64-encoded. */
export function base64Float32(vector: readonly number[]): string {
  const floats = Float32Array.from(vector);
  // Float32Array uses the platform's byte order; every platform Node supports here is little-endian.
  return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength).toString("base64");
}
