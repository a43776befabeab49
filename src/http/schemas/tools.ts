// Tool calling on the wire, in OpenAI's shapes: both the OpenAI API and the seed API accept and
// return exactly these, so one client-side tool loop works against either.
import { Type, type Static } from "@sinclair/typebox";

export const FunctionDefinitionSchema = Type.Object({
  name: Type.String({ minLength: 1, maxLength: 64, description: "Letters, digits, '_', '-', '.' or ':'" }),
  description: Type.Optional(Type.String()),
  parameters: Type.Optional(Type.Record(Type.String(), Type.Unknown(), {
    description: "JSON Schema of the arguments object; with tool_choice 'required' or a named function it is enforced by a grammar",
  })),
  strict: Type.Optional(Type.Union([Type.Boolean(), Type.Null()], { description: "Accepted; forced calls always follow the schema" })),
});

export const ToolSchema = Type.Object({
  type: Type.Literal("function"),
  function: FunctionDefinitionSchema,
});

export const ToolChoiceSchema = Type.Union([
  Type.Literal("none"),
  Type.Literal("auto"),
  Type.Literal("required"),
  Type.Object({ type: Type.Literal("function"), function: Type.Object({ name: Type.String({ minLength: 1 }) }) }),
], {
  description: "auto (default with tools): the model decides; none: it answers in text; required: at least one call; " +
    "{type: 'function', function: {name}}: a call of that function. required and named calls are grammar-constrained",
});

/** A call the model made, in an assistant message (history) or a response. */
export const ToolCallSchema = Type.Object({
  id: Type.String(),
  type: Type.Literal("function"),
  function: Type.Object({
    name: Type.String(),
    arguments: Type.String({ description: "The arguments as JSON text" }),
  }),
});

/** Request fields, the same in every API that takes tools. */
export const ToolRequestFields = {
  tools: Type.Optional(Type.Array(ToolSchema, { maxItems: 128, description: "Functions the model may call" })),
  tool_choice: Type.Optional(ToolChoiceSchema),
  parallel_tool_calls: Type.Optional(Type.Boolean({ description: "false: at most one call per answer (default true)" })),
};

/** One streamed piece of a call, as in OpenAI's `delta.tool_calls[]`: first id, type and name, then argument fragments. */
export const ToolCallDeltaSchema = Type.Object({
  index: Type.Integer(),
  id: Type.Optional(Type.String()),
  type: Type.Optional(Type.Literal("function")),
  function: Type.Object({ name: Type.Optional(Type.String()), arguments: Type.String() }),
});

export type ToolWire = Static<typeof ToolSchema>;
export type ToolChoiceWire = Static<typeof ToolChoiceSchema>;
export type ToolCallWire = Static<typeof ToolCallSchema>;
export type ToolCallDeltaWire = Static<typeof ToolCallDeltaSchema>;
