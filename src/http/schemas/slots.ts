// llama-server's slot API (tools/server/README.md: GET /slots, POST /slots/{id_slot}?action=...), same shapes.
import { Type, type Static } from "@sinclair/typebox";

export const SlotParamsSchema = Type.Object({
  id_slot: Type.Integer({ minimum: 0, description: "The slot's id (GET /slots lists them)" }),
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

export const SlotSaveResponseSchema = Type.Object({
  id_slot: Type.Integer(),
  filename: Type.String(),
  n_saved: Type.Integer(),
  n_written: Type.Integer(),
  timings: Type.Object({ save_ms: Type.Number() }),
});
export const SlotRestoreResponseSchema = Type.Object({
  id_slot: Type.Integer(),
  filename: Type.String(),
  n_restored: Type.Integer(),
  n_read: Type.Integer(),
  timings: Type.Object({ restore_ms: Type.Number() }),
});
export const SlotEraseResponseSchema = Type.Object({
  id_slot: Type.Integer(),
  n_erased: Type.Integer(),
});
export const SlotActionResponseSchema = Type.Union([SlotSaveResponseSchema, SlotRestoreResponseSchema, SlotEraseResponseSchema], { $id: "SlotActionResponse" });
