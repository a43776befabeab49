// llama-server's slot API: GET /slots, and POST /slots/{id_slot}?action=save|restore|erase with
// {"filename"} (files inside SLOT_SAVE_PATH; without it the actions answer 501, as llama-server does).
// The work runs on the slot loop between steps (ChatEngine.slotAction); every error, validation included,
// speaks OpenAI's shape, as llama-server's do. Both routes need the API key when one is configured: an
// action wipes a slot's cache or writes files into SLOT_SAVE_PATH.
import path from "node:path";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { EngineError } from "../../engine/errors.js";
import type { ServiceState } from "../../service.js";
import { ApiError, useApiErrors } from "../errors.js";
import { OpenAIErrorSchema } from "../schemas/openai.js";
import { SlotActionBodySchema, SlotActionQuerySchema, SlotActionResponseSchema, SlotParamsSchema, SlotsResponseSchema } from "../schemas/slots.js";

/** As llama.cpp's fs_validate_filename: a plain name, never a path. */
export function isPlainFilename(name: string): boolean {
  return name.length > 0 && Buffer.byteLength(name) <= 255 && name !== "." && name !== ".." && name.trim() === name &&
    !/[/\\:\u0000-\u001f\u007f]/.test(name);
}

export const slotsRoutes: FastifyPluginAsyncTypebox<{ state: ServiceState }> = async (app, { state }) => {
  useApiErrors(app, "openai");
  const tags = ["operations"];
  const errors = { 400: OpenAIErrorSchema, 409: OpenAIErrorSchema, 501: OpenAIErrorSchema, 503: OpenAIErrorSchema };
  const notSupported = (message: string) => new ApiError({ status: 501, code: "not_supported", message });

  app.get("/slots", { schema: { summary: "The generation slots (llama-server's shape)", tags, response: { 200: SlotsResponseSchema, 503: OpenAIErrorSchema } } }, async () => {
    const chat = state.engines().chat;
    return chat.slotsSnapshot().map((slot) => ({ id: slot.id, n_ctx: chat.contextSize, speculative: false, is_processing: slot.busy, n_prompt_tokens_cache: slot.cachedTokens }));
  });

  app.post("/slots/:id_slot", {
    schema: {
      summary: "Save, restore or erase a slot's KV cache (llama-server's slot actions)", tags,
      params: SlotParamsSchema, querystring: SlotActionQuerySchema, body: SlotActionBodySchema,
      response: { 200: SlotActionResponseSchema, ...errors },
    },
    // llama-server's clients send erase without a body: that is an empty object here.
    preValidation: async (request) => { request.body ??= {}; },
  }, async (request) => {
    const chat = state.engines().chat;
    const slot = Number(request.params.id_slot);
    const { action } = request.query;
    if (chat.slotSavePath === "") throw notSupported("This server does not support slots action. Start it with SLOT_SAVE_PATH set (llama-server: --slot-save-path).");
    if (slot >= chat.stats().slotsTotal) throw new EngineError("invalid_request", `Invalid slot ID: there are ${chat.stats().slotsTotal} slots.`, 400, "id_slot");
    const filename = request.body?.filename ?? "";
    if (action !== "erase" && !isPlainFilename(filename)) throw new EngineError("invalid_request", "Invalid filename", 400, "filename");
    const result = await chat.slotAction(slot, action, action === "erase" ? "" : path.join(chat.slotSavePath, filename));
    if (result === null) throw notSupported("The slot actions need the native slot loop (LLM_ENGINE=native).");
    if (result.error !== undefined) throw new ApiError({ status: 400, code: "invalid_request", message: result.error, field: "filename" });
    if (action === "save") return { id_slot: slot, filename, n_saved: result.tokens, n_written: result.bytes, timings: { save_ms: result.ms } };
    if (action === "restore") return { id_slot: slot, filename, n_restored: result.tokens, n_read: result.bytes, timings: { restore_ms: result.ms } };
    return { id_slot: slot, n_erased: result.tokens };
  });
};
