// The Responses API's follow-up turn: time to the first answer token of turn 2 of a conversation whose
// turn 1 (a ~400-token system prompt, a question, a 48-token answer) just ran on the same server, so
// the slot that served turn 1 still holds it. Three ways to send turn 2:
//   chain:   POST /v1/responses {previous_response_id, input: question 2} (ours only: llama-server
//            rejects previous_response_id)
//   items:   POST /v1/responses with the whole history as input items (no previous_response_id)
//   chat:    POST /v1/chat/completions with the same history (a fresh chat request)
// Each way gets its own conversation (its own turn 1), so no way finds another's turn 2 cached.
import { postJson, postSse } from "./http.ts";
import { question, systemPrompt } from "./workload.ts";

const TURN1_TOKENS = 48;
/** Turn 2 only needs its first token; a few more make the stream a normal one. */
const TURN2_TOKENS = 4;
const SAMPLING = { temperature: 0.5, top_p: 0.9, top_k: 40, min_p: 0.05 } as const;

export type FollowUpWay = "chain" | "items" | "chat";

export type FollowUpRun = { way: FollowUpWay; ttftMs: number; promptTokens: number | null; cachedTokens: number | null };

type History = { system: string; q1: string; answer: string; q2: string };

/** Turn 1 of conversation `id`; through /v1/responses (stored) when the follow-up is a chain. */
async function firstTurn(baseUrl: string, id: number, way: FollowUpWay): Promise<History & { responseId?: string }> {
  const system = systemPrompt(50_000 + id);
  const q1 = question(2 * id);
  const q2 = question(2 * id + 1);
  if (way === "chain") {
    const r = await postJson<{ id: string; output: { type: string; content?: { text: string }[] }[] }>(`${baseUrl}/v1/responses`, {
      instructions: system, input: q1, max_output_tokens: TURN1_TOKENS, ignore_eos: true, seed: id, ...SAMPLING,
    });
    const answer = r.output.find((o) => o.type === "message")?.content?.[0]?.text ?? "";
    return { system, q1, answer, q2, responseId: r.id };
  }
  const r = await postJson<{ choices: { message: { content: string } }[] }>(`${baseUrl}/v1/chat/completions`, {
    messages: [{ role: "system", content: system }, { role: "user", content: q1 }], max_tokens: TURN1_TOKENS, ignore_eos: true, seed: id, ...SAMPLING,
  });
  return { system, q1, answer: r.choices[0]!.message.content, q2 };
}

/** Turn 2, streamed: milliseconds from sending to the first answer text, and what the server says it reused. */
async function secondTurn(baseUrl: string, h: History & { responseId?: string }, way: FollowUpWay, seed: number): Promise<FollowUpRun> {
  const history = [{ role: "system", content: h.system }, { role: "user", content: h.q1 }, { role: "assistant", content: h.answer }, { role: "user", content: h.q2 }];
  const sentAt = performance.now();
  let firstAt: number | null = null;
  let promptTokens: number | null = null;
  let cachedTokens: number | null = null;
  const common = { stream: true, seed, ...SAMPLING };
  if (way === "chat") {
    await postSse(`${baseUrl}/v1/chat/completions`, { messages: history, max_tokens: TURN2_TOKENS, stream_options: { include_usage: true }, ...common }, (e) => {
      if (e.data === "[DONE]") return;
      const chunk = JSON.parse(e.data) as { choices: { delta: { content?: string } }[]; usage?: { prompt_tokens: number; prompt_tokens_details?: { cached_tokens: number } } };
      if (firstAt === null && chunk.choices[0]?.delta.content) firstAt = e.atMs;
      if (chunk.usage) {
        promptTokens = chunk.usage.prompt_tokens;
        cachedTokens = chunk.usage.prompt_tokens_details?.cached_tokens ?? null;
      }
    });
  } else {
    const body = way === "chain"
      ? { previous_response_id: h.responseId, instructions: h.system, input: h.q2 }
      : { instructions: h.system, input: history.slice(1).map((m) => ({ role: m.role, content: m.content })) };
    await postSse(`${baseUrl}/v1/responses`, { ...body, max_output_tokens: TURN2_TOKENS, ...common }, (e) => {
      const event = JSON.parse(e.data) as { type: string; response?: { usage?: { input_tokens: number; input_tokens_details?: { cached_tokens: number } } } };
      if (firstAt === null && event.type === "response.output_text.delta") firstAt = e.atMs;
      if (event.type === "response.completed" || event.type === "response.incomplete") {
        promptTokens = event.response?.usage?.input_tokens ?? null;
        cachedTokens = event.response?.usage?.input_tokens_details?.cached_tokens ?? null;
      }
    });
  }
  if (firstAt === null) throw new Error(`follow-up (${way}) at ${baseUrl}: no answer text arrived`);
  return { way, ttftMs: firstAt - sentAt, promptTokens, cachedTokens };
}

/**
 * One block of the follow-up rows on one server: each way in turn, each on a conversation of its own
 * (`id` makes the prompts new to the server: use the block's index). `ways` defaults to all three;
 * llama-server gets ["items", "chat"] (it has no previous_response_id).
 */
export async function followUpBlock(baseUrl: string, id: number, ways: readonly FollowUpWay[] = ["chain", "items", "chat"]): Promise<Record<FollowUpWay, FollowUpRun | null>> {
  const out: Record<FollowUpWay, FollowUpRun | null> = { chain: null, items: null, chat: null };
  for (const [i, way] of ways.entries()) {
    const conversation = 3 * id + i;
    out[way] = await secondTurn(baseUrl, await firstTurn(baseUrl, conversation, way), way, conversation);
  }
  return out;
}
