// The OpenAI Responses API: POST /v1/responses (and /responses), GET/DELETE /v1/responses/{id},
// its input_items, and POST /v1/responses/input_tokens. Creating a response is a formatter over the
// shared request lifecycle (generation.ts: model, admission before the first byte, stream, errors);
// the items and events live in responseItems.ts and responseEvents.ts, the stored responses
// (previous_response_id) in responseStore.ts.
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { Type } from "@sinclair/typebox";
import type { ChatEngine } from "../../engine/chat/engine.js";
import type { GenerateRequest, GenerationResult } from "../../engine/chat/types.js";
import { EngineError } from "../../engine/errors.js";
import { ApiError, useApiErrors } from "../errors.js";
import { serveGeneration, type GenerationFormatter, type StreamEvent } from "../generation.js";
import { modelOf } from "../models.js";
import { ResponseBuilder, type ResponseStreamEvent } from "../responseEvents.js";
import { checkServedFeatures, itemsToMessages, newItemId, normalizeInput, responseFormatOf, thinkingFor, toolRequestOf } from "../responseItems.js";
import { DEFAULT_RESPONSE_STORE, ResponseStore, type ResponseStoreOptions } from "../responseStore.js";
import { OpenAIErrorSchema } from "../schemas/openai.js";
import {
  InputItemListQuerySchema, InputItemListSchema, InputTokensBodySchema, InputTokensResponseSchema, ResponseCreateBodySchema,
  ResponseDeletedSchema, ResponseObjectSchema,
  type InputItem, type InputTokensBody, type OutputItem, type ResponseCreateBody, type ResponseObject, type StoredInputItem,
} from "../schemas/responses.js";

/** What the store keeps per response: the response itself and the input items it was given. */
type StoredResponse = { response: ResponseObject; input: StoredInputItem[] };

const DEFAULT_TEMPERATURE = 0.8;
const DEFAULT_TOP_P = 0.95;

export const responsesRoutes: FastifyPluginAsyncTypebox<{ store?: ResponseStoreOptions }> = async (app, { store: storeOptions }) => {
  const store = new ResponseStore<StoredResponse>(storeOptions ?? DEFAULT_RESPONSE_STORE);
  const errors = { 400: OpenAIErrorSchema, 404: OpenAIErrorSchema, 429: OpenAIErrorSchema, 500: OpenAIErrorSchema, 503: OpenAIErrorSchema };
  const tags = ["OpenAI Responses API"];

  useApiErrors(app, "openai");

  app.addHook("preValidation", async (request) => checkServedFeatures(request.body));

  /** The items of every stored response behind `previousId`, oldest first: each one's input, then its output. */
  const historyBehind = (previousId: string | null | undefined): (InputItem | OutputItem)[] => {
    const chain: StoredResponse[] = [];
    for (let id = previousId ?? null; id !== null;) {
      const stored = store.get(id);
      if (stored === undefined) {
        const which = id === previousId ? `Previous response with id '${id}'` : `Response '${id}' (earlier in the chain of '${previousId}')`;
        throw new ApiError({ status: 400, code: "previous_response_not_found", field: "previous_response_id",
          message: `${which} not found: it was never stored (store: false), was deleted, or was evicted from the bounded store.` });
      }
      chain.unshift(stored);
      id = stored.response.previous_response_id;
    }
    return chain.flatMap((s) => [...s.input, ...s.response.output]);
  };

  /** The engine request for a create or count body (no sampling, no signal). */
  const promptOf = (body: InputTokensBody, input: readonly StoredInputItem[]) => {
    const history = historyBehind(body.previous_response_id);
    return {
      messages: itemsToMessages(body.instructions, [...history, ...input], history.length),
      enableThinking: thinkingFor(body.reasoning),
      responseFormat: responseFormatOf(body.text?.format),
      ...toolRequestOf(body),
    };
  };

  /** The response as created (status in_progress, no output yet), echoing the request's settings. */
  const createdResponse = (chat: ChatEngine, body: ResponseCreateBody): ResponseObject => ({
    id: newItemId("resp"),
    object: "response",
    created_at: Math.floor(Date.now() / 1000),
    completed_at: null,
    status: "in_progress",
    error: null,
    incomplete_details: null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    model: chat.modelName,
    output: [],
    parallel_tool_calls: body.parallel_tool_calls ?? true,
    previous_response_id: body.previous_response_id ?? null,
    reasoning: { effort: body.reasoning?.effort ?? null, summary: body.reasoning?.summary ?? null },
    store: body.store ?? true,
    temperature: body.temperature ?? DEFAULT_TEMPERATURE,
    top_p: body.top_p ?? DEFAULT_TOP_P,
    text: { format: body.text?.format ?? { type: "text" } },
    tool_choice: body.tool_choice ?? (body.tools?.length ? "auto" : "none"),
    tools: (body.tools ?? []).map((t) => ({ type: "function" as const, name: t.name, description: t.description ?? null, parameters: t.parameters ?? null, strict: t.strict ?? null })),
    truncation: "disabled",
    background: false,
    usage: null,
    metadata: body.metadata ?? {},
    ...(body.user !== undefined ? { user: body.user } : {}),
  });

  const usageOf = (chat: ChatEngine, r: GenerationResult): NonNullable<ResponseObject["usage"]> => ({
    input_tokens: r.promptTokens,
    input_tokens_details: { cached_tokens: r.cachedPromptTokens, cache_write_tokens: r.promptTokens - r.cachedPromptTokens },
    output_tokens: r.tokensGenerated,
    output_tokens_details: { reasoning_tokens: r.reasoning ? chat.vocabulary.tokenize(r.reasoning).length : 0 },
    total_tokens: r.promptTokens + r.tokensGenerated,
  });

  /** The Responses API as a formatter of the shared lifecycle: the builder's events, stored at the end. */
  const formatter = (chat: ChatEngine, body: ResponseCreateBody, input: StoredInputItem[], stream: boolean): GenerationFormatter<ResponseObject> => {
    const pending: ResponseStreamEvent[] = [];
    const builder = new ResponseBuilder(createdResponse(chat, body), stream ? (event) => pending.push(event) : undefined);
    const flush = (): StreamEvent[] => pending.splice(0).map((event) => ({ data: event, event: event.type }));
    const complete = (r: GenerationResult) => {
      const response = builder.finish(r, usageOf(chat, r));
      if (response.store) store.put(response.id, { response, input });
      return response;
    };
    return {
      opening: () => (builder.start(), flush()),
      delta: (d) => (builder.push(d), flush()),
      closing: (r) => (complete(r), flush()),
      collect: (d) => builder.push(d),
      response: complete,
      failure: (payload) => (builder.fail(payload), flush()),
      // The grammar builder names the Chat Completions field; here the schema sits in text.format.
      translateError: (error) => error instanceof EngineError && error.field === "response_format.json_schema.schema"
        ? new EngineError(error.code, error.message.replace("response_format.json_schema.schema", "text.format.schema"), error.status, "text.format.schema")
        : error,
    };
  };

  for (const url of ["/v1/responses", "/responses"]) {
    app.post(url, {
      schema: {
        summary: "OpenAI Responses API: create a response (stream: true for the spec's server-sent events)",
        tags,
        body: ResponseCreateBodySchema,
        response: { 200: ResponseObjectSchema, ...errors },
        ...(url === "/responses" ? { hide: true } : {}),
      },
      config: { model: { kind: "chat" } },
    }, async (request, reply) => {
      const body = request.body;
      const input = normalizeInput(body.input);
      const stream = body.stream === true;
      return serveGeneration(reply, {
        stream,
        style: "openai",
        request: (): Omit<GenerateRequest, "signal" | "onDelta"> => ({
          ...promptOf(body, input),
          ...(body.max_output_tokens !== undefined && body.max_output_tokens !== null ? { maxTokens: body.max_output_tokens } : {}),
          maxTokensField: "max_output_tokens",
          temperature: body.temperature ?? DEFAULT_TEMPERATURE,
          topP: body.top_p ?? DEFAULT_TOP_P,
          topK: body.top_k, minP: body.min_p, seed: body.seed,
          stop: body.stop === undefined ? undefined : typeof body.stop === "string" ? [body.stop] : body.stop,
          repeatPenalty: body.repeat_penalty, presencePenalty: body.presence_penalty, frequencyPenalty: body.frequency_penalty,
          ignoreEos: body.ignore_eos ?? false,
        }),
        format: (chat) => formatter(chat, body, input, stream),
      });
    });
  }

  app.post("/v1/responses/input_tokens", {
    schema: {
      summary: "Count a Responses request's input tokens (the rendered prompt, tools and history included)",
      tags,
      body: InputTokensBodySchema,
      response: { 200: InputTokensResponseSchema, ...errors },
    },
    config: { model: { kind: "chat" } },
  }, async (request) => {
    const body = request.body;
    const chat = modelOf(request, "chat").engine;
    const prompt = promptOf(body, normalizeInput(body.input));
    return { object: "response.input_tokens" as const, input_tokens: chat.countPromptTokens({ ...prompt, temperature: DEFAULT_TEMPERATURE, topP: DEFAULT_TOP_P }) };
  });

  const IdParams = Type.Object({ id: Type.String({ minLength: 1 }) });
  const storedOrNotFound = (id: string): StoredResponse => {
    const stored = store.get(id);
    if (stored === undefined) {
      throw new ApiError({ status: 404, code: "not_found", field: "response_id",
        message: `No response with id '${id}' is stored here (store: false, deleted, or evicted from the bounded store).` });
    }
    return stored;
  };

  app.get("/v1/responses/:id", {
    schema: { summary: "A stored response", tags, params: IdParams, response: { 200: ResponseObjectSchema, 404: OpenAIErrorSchema } },
  }, async (request) => storedOrNotFound(request.params.id).response);

  app.delete("/v1/responses/:id", {
    schema: { summary: "Delete a stored response", tags, params: IdParams, response: { 200: ResponseDeletedSchema, 404: OpenAIErrorSchema } },
  }, async (request) => {
    storedOrNotFound(request.params.id);
    store.delete(request.params.id);
    return { id: request.params.id, object: "response" as const, deleted: true as const };
  });

  app.get("/v1/responses/:id/input_items", {
    schema: {
      summary: "The input items a stored response was given",
      tags, params: IdParams, querystring: InputItemListQuerySchema,
      response: { 200: InputItemListSchema, 400: OpenAIErrorSchema, 404: OpenAIErrorSchema },
    },
  }, async (request) => {
    const { limit, order, after } = request.query;
    const items = [...storedOrNotFound(request.params.id).input];
    if (order === "desc") items.reverse();
    const start = after === undefined ? 0 : items.findIndex((item) => item.id === after) + 1;
    if (after !== undefined && start === 0) throw new EngineError("invalid_request", `No input item '${after}' in this response.`, 400, "after");
    const page = items.slice(start, start + limit);
    return { object: "list" as const, data: page, first_id: page[0]?.id ?? null, last_id: page.at(-1)?.id ?? null, has_more: start + limit < items.length };
  });
};
