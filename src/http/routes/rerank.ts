// Reranking: POST /v1/rerank, /rerank and /v2/rerank in the shape llama-server, Jina and Cohere share
// (relevance_score is a probability; raw_scores: true gives llama-server's raw logit), TEI's shape on
// /rerank when the body has `texts` (bare array, TEI's errors), and the seed API's /api/llm/rerank.
// Handlers resolve the model, call the reranker (which checks the limits) and format; rerankResults.ts
// turns the head's output into each API's score.
import { randomUUID } from "node:crypto";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { FastifyReply } from "fastify";
import { EngineError, invalidRequest } from "../../engine/errors.js";
import type { ServedModelOf } from "../../engine/registry.js";
import type { ServiceState } from "../../service.js";
import { toErrorPayload } from "../errors.js";
import { rankResults, type RankedResult } from "../rerankResults.js";
import { ErrorBodySchema } from "../schemas/common.js";
import { OpenAIErrorSchema } from "../schemas/openai.js";
import {
  RerankBodySchema, RerankResponseSchema, SeedRerankBodySchema, SeedRerankResponseSchema, TeiRerankResponseSchema,
  type RerankBody, type RerankResponse, type SeedRerankResponse, type TeiRerankResponse,
} from "../schemas/rerank.js";

type Reranker = ServedModelOf<"rerank">;

export const rerankRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (app, { state }) => {
  /** The engine's scores (request order) and how to read them; limits are checked by the engine (400 naming the field). */
  const score = async (served: Reranker, query: string, documents: readonly string[], options: { field: string; truncate: boolean }) => {
    const raw = await served.engine.rerank(query, documents, { field: options.field, truncate: options.truncate });
    return { raw, scoreKind: served.engine.scoreKind, tokens: raw.reduce((sum, r) => sum + r.tokens, 0), truncated: raw.filter((r) => r.truncated).length };
  };

  const resolve = (requested: string | undefined, status: number) => state.engines().models.resolve("rerank", requested, { status });

  const shared = async (body: RerankBody, reply: FastifyReply, version: string): Promise<RerankResponse | TeiRerankResponse | FastifyReply> => {
    if (body.texts !== undefined) return tei(body, reply);
    if (body.documents === undefined) throw invalidRequest("documents is required (a list of texts or {text} objects)", "documents");
    if (body.rank_fields !== undefined && !(body.rank_fields.length === 1 && body.rank_fields[0] === "text")) {
      throw invalidRequest("rank_fields: only [\"text\"] is supported", "rank_fields");
    }
    const served = resolve(body.model, 404);
    const texts = body.documents.map((d) => typeof d === "string" ? d : d.text);
    // As Cohere: a long document is cut to fit the model's pair (truncate: false refuses it instead).
    const { raw, scoreKind, tokens } = await score(served, body.query, texts, { field: "documents", truncate: body.truncate ?? true });
    return {
      id: randomUUID(),
      object: "list",
      model: served.name,
      results: rankResults(raw, { topN: body.top_n, raw: body.raw_scores, scoreKind }).map((r: RankedResult) => ({
        index: r.index,
        relevance_score: r.score,
        ...(body.return_documents ? { document: { text: texts[r.index]! } } : {}),
      })),
      usage: { prompt_tokens: tokens, total_tokens: tokens },
      meta: { api_version: { version }, billed_units: { search_units: 1 } },
    };
  };

  /** TEI's /rerank: a bare array, scores through a sigmoid unless raw_scores, TEI's error bodies and statuses. */
  const tei = async (body: RerankBody, reply: FastifyReply): Promise<TeiRerankResponse | FastifyReply> => {
    try {
      if (body.documents !== undefined) throw invalidRequest("give texts (TEI) or documents, not both", "texts");
      const served = resolve(body.model, 422);
      const texts = body.texts ?? [];
      if (texts.length > served.engine.maxDocuments) {
        throw new TeiSizeError(`batch size ${texts.length} > maximum allowed batch size ${served.engine.maxDocuments} (RERANK_MAX_DOCUMENTS)`, "texts");
      }
      const { raw, scoreKind } = await score(served, body.query, texts, { field: "texts", truncate: body.truncate ?? false });
      return rankResults(raw, { topN: body.top_n, raw: body.raw_scores, scoreKind }).map((r) => ({
        index: r.index, score: r.score, ...(body.return_text ? { text: texts[r.index]! } : {}),
      }));
    } catch (error) {
      const payload = toErrorPayload(error);
      if (payload.status >= 500 && payload.code === "internal_error") throw error; // logged by the shared handler
      // TEI: sizes (documents per request, tokens past the limit without truncate) are 413, other validation 422.
      const tooLarge = error instanceof TeiSizeError || (error instanceof EngineError && error.code === "context_length_exceeded");
      const status = tooLarge ? 413 : payload.status === 400 || payload.status === 404 ? 422 : payload.status;
      if (payload.retryAfterSeconds !== undefined) reply.header("Retry-After", String(payload.retryAfterSeconds));
      const errorType = status === 413 || status === 422 ? "Validation" : status === 503 ? "Unhealthy" : "Backend";
      return reply.code(status).type("application/json").send({ error: payload.message, error_type: errorType });
    }
  };

  // TEI's 413/422 bodies ({error, error_type}) are left out of the schema: a 413 may also be Fastify's body limit, in OpenAI's shape.
  const errors = { 400: OpenAIErrorSchema, 404: OpenAIErrorSchema, 503: OpenAIErrorSchema };
  const description = "The shape llama-server, Jina and Cohere share: `documents` as texts or {text}, `top_n`, `return_documents`; " +
    "`results` best first with `relevance_score` = sigmoid of the model's logit (0..1, Cohere's and Jina's convention; " +
    "`raw_scores: true` gives the logit, as llama-server returns it). On /rerank a body with `texts` is TEI's request and gets TEI's bare array.";
  for (const [url, version] of [["/v1/rerank", "1"], ["/rerank", "1"], ["/v2/rerank", "2"]] as const) {
    app.post(url, {
      schema: {
        summary: url === "/rerank" ? "Rerank documents (llama-server/Jina/Cohere shape, or TEI's with `texts`)" : "Rerank documents (llama-server, Jina and Cohere shape)",
        description,
        tags: ["rerank"],
        body: RerankBodySchema,
        response: { 200: url === "/rerank" ? { anyOf: [RerankResponseSchema, TeiRerankResponseSchema] } : RerankResponseSchema, ...errors },
      },
    }, async (request, reply) => {
      if (url !== "/rerank" && request.body.texts !== undefined) throw invalidRequest("texts is TEI's field, served on POST /rerank; here send documents", "texts");
      return shared(request.body, reply, version);
    });
  }

  app.post("/api/llm/rerank", {
    schema: {
      summary: "Rank documents by relevance to a query (best first)",
      description: "`score` is a probability (sigmoid of a cross-encoder's logit), `raw_score` the model's own output (the logit; a qwen3 reranker's probability), as llama-server returns it. " +
        "A document too long for the model is cut to fit (`truncated` counts them), as /api/llm/embed does.",
      tags: ["seed API"],
      body: SeedRerankBodySchema,
      response: { 200: SeedRerankResponseSchema, 400: ErrorBodySchema, 503: ErrorBodySchema },
    },
  }, async (request): Promise<SeedRerankResponse> => {
    const body = request.body;
    const served = resolve(body.model, 400);
    const { raw, scoreKind, tokens, truncated } = await score(served, body.query, body.documents, { field: "documents", truncate: true });
    return {
      results: rankResults(raw, { topN: body.top_n, scoreKind }).map((r) => ({
        index: r.index, score: r.score, raw_score: r.raw, ...(body.return_documents ? { document: body.documents[r.index]! } : {}),
      })),
      model: served.name,
      tokens,
      truncated,
    };
  });
};

/** More documents than the reranker takes: TEI answers 413 (the other APIs get the engine's 400). */
class TeiSizeError extends EngineError {
  constructor(message: string, field: string) {
    super("invalid_request", message, 413, field);
  }
}
