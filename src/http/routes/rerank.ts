// Reranking: POST /v1/rerank, /rerank and /v2/rerank in the shape llama-server, Jina and Cohere share
// (relevance_score is a probability; raw_scores: true gives llama-server's raw logit), TEI's shape on
// /rerank when the body has `texts` (bare array, TEI's errors), and the seed API's /api/llm/rerank.
// The model is resolved before the handler (models.ts); handlers call the reranker (which checks the
// limits) through the retrieval lifecycle and format; rerankResults.ts turns the head's output into each
// API's score. Each API's error shape is its scope's error handler (a TEI body on /rerank gets TEI's).
import { randomUUID } from "node:crypto";
import type { FastifyPluginAsyncTypebox, TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { FastifyReply, FastifyRequest } from "fastify";
import { EngineError, invalidRequest } from "../../engine/errors.js";
import type { ServedModelOf } from "../../engine/registry.js";
import { useApiErrors, type ErrorStyle } from "../errors.js";
import { modelOf } from "../models.js";
import { serveRetrieval } from "../retrieval.js";
import { rankResults, type RankedResult } from "../rerankResults.js";
import { Type } from "@sinclair/typebox";
import { ErrorBodySchema } from "../schemas/common.js";
import { OpenAIErrorSchema } from "../schemas/openai.js";
import {
  RerankBodySchema, RerankResponseSchema, SeedRerankBodySchema, SeedRerankResponseSchema, TeiErrorSchema, TeiRerankResponseSchema,
  type RerankBody, type RerankResponse, type SeedRerankResponse, type TeiRerankResponse,
} from "../schemas/rerank.js";

type Reranker = ServedModelOf<"rerank">;

/** TEI's request is the body with `texts`, on /rerank; its errors are TEI's. */
const isTeiRequest = (request: FastifyRequest): boolean =>
  request.routeOptions.url === "/rerank" && typeof request.body === "object" && request.body !== null && "texts" in request.body;

export const rerankRoutes: FastifyPluginAsyncTypebox = async (app) => {
  useApiErrors(app, "openai", (request): ErrorStyle => isTeiRequest(request) ? "tei" : "openai");
  const config = { model: { kind: "rerank" as const } };

  /** The engine's scores (request order) and how to read them; limits are checked by the engine (400 naming the field). */
  const score = async (reply: FastifyReply, served: Reranker, query: string, documents: readonly string[], options: { field: string; truncate: boolean }) => {
    const raw = await serveRetrieval(reply, (signal) => served.engine.rerank(query, documents, { field: options.field, truncate: options.truncate, signal }));
    return { raw, scoreKind: served.engine.scoreKind, tokens: raw.reduce((sum, r) => sum + r.tokens, 0), truncated: raw.filter((r) => r.truncated).length };
  };

  const shared = async (body: RerankBody, served: Reranker, reply: FastifyReply, version: string): Promise<RerankResponse | TeiRerankResponse> => {
    if (body.texts !== undefined) return tei(body, served, reply);
    if (body.documents === undefined) throw invalidRequest("documents is required (a list of texts or {text} objects)", "documents");
    if (body.rank_fields !== undefined && !(body.rank_fields.length === 1 && body.rank_fields[0] === "text")) {
      throw invalidRequest("rank_fields: only [\"text\"] is supported", "rank_fields");
    }
    const texts = body.documents.map((d) => typeof d === "string" ? d : d.text);
    // As Cohere: a long document is cut to fit the model's pair (truncate: false refuses it instead).
    const { raw, scoreKind, tokens } = await score(reply, served, body.query, texts, { field: "documents", truncate: body.truncate ?? true });
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

  /** TEI's /rerank: a bare array, scores through a sigmoid unless raw_scores (errors: TEI's bodies and statuses, errors.ts). */
  const tei = async (body: RerankBody, served: Reranker, reply: FastifyReply): Promise<TeiRerankResponse> => {
    if (body.documents !== undefined) throw invalidRequest("give texts (TEI) or documents, not both", "texts");
    const texts = body.texts ?? [];
    if (texts.length > served.engine.maxDocuments) {
      // TEI: too many documents is a 413 (the other APIs get the engine's 400).
      throw new EngineError("invalid_request", `batch size ${texts.length} > maximum allowed batch size ${served.engine.maxDocuments} (RERANK_MAX_DOCUMENTS)`, 413, "texts");
    }
    const { raw, scoreKind } = await score(reply, served, body.query, texts, { field: "texts", truncate: body.truncate ?? false });
    return rankResults(raw, { topN: body.top_n, raw: body.raw_scores, scoreKind }).map((r) => ({
      index: r.index, score: r.score, ...(body.return_text ? { text: texts[r.index]! } : {}),
    }));
  };

  // /rerank answers TEI's bodies ({error, error_type}) to a TEI request, OpenAI's to the others: either, at every status.
  const errorOf = (url: string) => url === "/rerank" ? Type.Union([OpenAIErrorSchema, TeiErrorSchema]) : OpenAIErrorSchema;
  const errorsOf = (url: string) => Object.fromEntries([400, 404, 413, 422, 429, 503, 504].map((status) => [status, errorOf(url)]));
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
        response: { 200: url === "/rerank" ? { anyOf: [RerankResponseSchema, TeiRerankResponseSchema] } : RerankResponseSchema, ...errorsOf(url) },
      },
      config,
    }, async (request, reply) => {
      if (url !== "/rerank" && request.body.texts !== undefined) throw invalidRequest("texts is TEI's field, served on POST /rerank; here send documents", "texts");
      return shared(request.body, modelOf(request, "rerank"), reply, version);
    });
  }

  // The seed API's route, in the seed API's error shape.
  await app.register(async (scope) => {
    useApiErrors(scope, "seed");
    scope.withTypeProvider<TypeBoxTypeProvider>().post("/api/llm/rerank", {
      schema: {
        summary: "Rank documents by relevance to a query (best first)",
        description: "`score` is a probability (sigmoid of a cross-encoder's logit), `raw_score` the model's own output (the logit; a qwen3 reranker's probability), as llama-server returns it. " +
          "A document too long for the model is cut to fit (`truncated` counts them), as /api/llm/embed does.",
        tags: ["seed API"],
        body: SeedRerankBodySchema,
        response: { 200: SeedRerankResponseSchema, 400: ErrorBodySchema, 429: ErrorBodySchema, 503: ErrorBodySchema, 504: ErrorBodySchema },
      },
      config,
    }, async (request, reply): Promise<SeedRerankResponse> => {
      const body = request.body;
      const served = modelOf(request, "rerank");
      const { raw, scoreKind, tokens, truncated } = await score(reply, served, body.query, body.documents, { field: "documents", truncate: true });
      return {
        results: rankResults(raw, { topN: body.top_n, scoreKind }).map((r) => ({
          index: r.index, score: r.score, raw_score: r.raw, ...(body.return_documents ? { document: body.documents[r.index]! } : {}),
        })),
        model: served.name,
        tokens,
        truncated,
      };
    });
  });
};
