// OpenAI chat completions' logprobs: the request fields and the `choices[].logprobs` object.
import { Type } from "@sinclair/typebox";

export const ChatLogprobsControls = {
  logprobs: Type.Optional(Type.Union([Type.Boolean(), Type.Null()], { description: "Return each answer token's log-probability (softmax of the raw logits)" })),
  top_logprobs: Type.Optional(Type.Union([Type.Integer({ minimum: 0, maximum: 20 }), Type.Null()], { description: "With logprobs: also the n most likely tokens at each position (0..20)" })),
};

const TokenLogprobSchema = Type.Object({
  token: Type.String(),
  logprob: Type.Number(),
  bytes: Type.Union([Type.Array(Type.Integer()), Type.Null()]),
});

export const ChatLogprobsSchema = Type.Object({
  content: Type.Union([Type.Array(Type.Object({ ...TokenLogprobSchema.properties, top_logprobs: Type.Array(TokenLogprobSchema) })), Type.Null()]),
  refusal: Type.Null(),
});
