// POST /tokenize and /detokenize in llama-server's shapes, for any served model: a RAG pipeline
// cuts its chunks to the embedding model's limit with the embedding model's own tokenizer.
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { EngineError } from "../../engine/errors.js";
import type { ServedModel } from "../../engine/registry.js";
import type { ServiceState } from "../../service.js";
import { OpenAIErrorSchema } from "../schemas/openai.js";
import { DetokenizeBodySchema, DetokenizeResponseSchema, TokenizeBodySchema, TokenizeResponseSchema } from "../schemas/tokenize.js";

export const tokenizeRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (app, { state }) => {
  const errors = { 400: OpenAIErrorSchema, 404: OpenAIErrorSchema, 413: OpenAIErrorSchema, 415: OpenAIErrorSchema, 503: OpenAIErrorSchema };
  const tags = ["tokenizer"];

  const modelFor = (requested: string | undefined): ServedModel => {
    const { models } = state.engines();
    if (requested === undefined) return models.chat;
    const found = models.find(requested);
    if (found === undefined) {
      throw new EngineError("model_not_found", `The model '${requested}' does not exist here; this server serves ${models.describeServed()}.`, 404, "model");
    }
    return found;
  };

  app.post("/tokenize", {
    schema: { summary: "Text -> token ids of the chat model (or `model`)", tags, body: TokenizeBodySchema, response: { 200: TokenizeResponseSchema, ...errors } },
  }, async (request) => {
    const body = request.body;
    const model = modelFor(body.model);
    const ids = model.tokenizer.tokenize(body.content, { addSpecial: body.add_special, parseSpecial: body.parse_special });
    if (!body.with_pieces) return { tokens: ids, model: model.name };
    const pieces = model.tokenizer.pieces(ids);
    return { tokens: ids.map((id, i) => ({ id, piece: pieces[i]! })), model: model.name };
  });

  app.post("/detokenize", {
    schema: { summary: "Token ids -> text (special tokens spelled out)", tags, body: DetokenizeBodySchema, response: { 200: DetokenizeResponseSchema, ...errors } },
  }, async (request) => {
    const model = modelFor(request.body.model);
    return { content: model.tokenizer.detokenize(request.body.tokens, "tokens"), model: model.name };
  });
};
