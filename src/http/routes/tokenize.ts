// POST /tokenize and /detokenize in llama-server's shapes, for any served model: a RAG pipeline
// cuts its chunks to the embedding model's limit with the embedding model's own tokenizer.
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { useApiErrors } from "../errors.js";
import { modelOf } from "../models.js";
import { serveRetrieval } from "../retrieval.js";
import { OpenAIErrorSchema } from "../schemas/openai.js";
import { DetokenizeBodySchema, DetokenizeResponseSchema, TokenizeBodySchema, TokenizeResponseSchema } from "../schemas/tokenize.js";

export const tokenizeRoutes: FastifyPluginAsyncTypebox = async (app) => {
  // llama-server's routes: its errors are OpenAI-shaped.
  useApiErrors(app, "openai");
  const errors = { 400: OpenAIErrorSchema, 404: OpenAIErrorSchema, 413: OpenAIErrorSchema, 415: OpenAIErrorSchema, 503: OpenAIErrorSchema, 504: OpenAIErrorSchema };
  const tags = ["tokenizer"];
  // Any served model; without `model`, the chat model.
  const config = { model: { kind: "any" as const } };

  app.post("/tokenize", {
    schema: { summary: "Text -> token ids of the chat model (or `model`)", tags, body: TokenizeBodySchema, response: { 200: TokenizeResponseSchema, ...errors } },
    config,
  }, async (request, reply) => {
    const body = request.body;
    const model = modelOf(request, "any");
    // The tokenizer runs on the event loop and cannot be interrupted: the deadline is checked around it.
    return serveRetrieval(reply, () => {
      const ids = model.tokenizer.tokenize(body.content, { addSpecial: body.add_special, parseSpecial: body.parse_special });
      if (!body.with_pieces) return { tokens: ids, model: model.name };
      const pieces = model.tokenizer.pieces(ids);
      return { tokens: ids.map((id, i) => ({ id, piece: pieces[i]! })), model: model.name };
    });
  });

  app.post("/detokenize", {
    schema: { summary: "Token ids -> text (special tokens spelled out)", tags, body: DetokenizeBodySchema, response: { 200: DetokenizeResponseSchema, ...errors } },
    config,
  }, async (request, reply) => {
    const model = modelOf(request, "any");
    return serveRetrieval(reply, () => ({ content: model.tokenizer.detokenize(request.body.tokens, "tokens"), model: model.name }));
  });
};
