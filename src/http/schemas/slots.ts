// llama-server's slot API (tools/server/README.md: GET /slots, POST /slots/{id_slot}?action=...), same shapes.
import { Type, type Static } from "@sinclair/typebox";

export const SlotParamsSchema = Type.Object({
  // A path segment is a string (the app never coerces types): digits only.
  id_slot: Type.String({ pattern: "^[0-9]{1,6}$", description: "The slot's id (GET /slots lists them)" }),
});

export const SlotActionQuerySchema = Type.Object({
  action: Type.Union([Type.Literal("save"), Type.Literal("restore"), Type.Literal("erase")], { description: "save: the slot's KV cache to `filename`; restore: from it; erase: empty the slot" }),
});

export const SlotActionBodySchema = Type.Object({
  filename: Type.Optional(Type.String({ minLength: 1, maxLength: 255, description: "A file name inside SLOT_SAVE_PATH (no directories); needed by save and restore" })),
}, { $id: "SlotActionRequest" });
export type SlotActionBody = Static<typeof SlotActionBodySchema>;

export const SlotSchema = Type.Object({
  id: Type.Integer(),
  n_ctx: Type.Integer({ description: "Context tokens of the slot" }),
  speculative: Type.Boolean(),
  is_processing: Type.Boolean(),
  n_prompt_tokens_cache: Type.Integer({ description: "Tokens held in the slot's KV cache" }),
}, { $id: "Slot" });

export const SlotsResponseSchema = Type.Array(SlotSchema, { $id: "SlotsResponse" });

/** One shape for the three actions (llama-server answers save, restore and erase with different fields). */
export const SlotActionResponseSchema = Type.Object({
  id_slot: Type.Integer(),
  filename: Type.Optional(Type.String({ description: "save and restore" })),
  n_saved: Type.Optional(Type.Integer({ description: "save: tokens written" })),
  n_written: Type.Optional(Type.Integer({ description: "save: bytes written" })),
  n_restored: Type.Optional(Type.Integer({ description: "restore: tokens read back" })),
  n_read: Type.Optional(Type.Integer({ description: "restore: bytes read" })),
  n_erased: Type.Optional(Type.Integer({ description: "erase: tokens dropped" })),
  timings: Type.Optional(Type.Object({ save_ms: Type.Optional(Type.Number()), restore_ms: Type.Optional(Type.Number()) })),
}, { $id: "SlotActionResponse" });
