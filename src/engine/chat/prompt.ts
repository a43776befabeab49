// The prompt a request is answered from, and the grammar that constrains the answer. Both backends
// take these from here: prompt rendering is ONE function (renderPrompt) and grammar selection ONE
// function (selectGrammar), so tool prompts and tool grammars plug in at exactly one place each.
import path from "node:path";
import {
  GeneralChatWrapper,
  LlamaText,
  QwenChatWrapper,
  SpecialTokensText,
  resolveChatWrapper,
  type ChatHistoryItem,
  type ChatWrapper,
  type GgufFileInfo,
  type Llama,
  type Token,
} from "node-llama-cpp";
import type { Vocabulary } from "../vocabulary.js";
import { EngineError, invalidRequest } from "../errors.js";
import { toGrammarSchema, withoutTrailingNewlines } from "../jsonSchemaGrammar.js";
import { checkTools, renderToolPrompt, toolCallGrammarText } from "./toolPrompt.js";
import type { ChatMessage, GenerateRequest, ResponseFormat } from "./types.js";

export type RenderedPrompt = {
  tokens: Token[];
  /** The output is a chat answer that may hold a `<think>` segment (not a raw completion). */
  chat: boolean;
};

/** What llama.cpp's `add_special` adds around a prompt for this vocabulary. */
export type PromptSpecialTokens = { bos: Token | null; eos: Token | null; addBos: boolean; addEos: boolean };

/** The GGUF's add_bos_token / add_eos_token as llama.cpp reads them (its defaults included). */
export function promptSpecialTokens(vocabulary: Vocabulary): PromptSpecialTokens {
  const { bos, eos } = vocabulary.tokens;
  return { bos, eos, addBos: vocabulary.tokens.shouldPrependBosToken, addEos: vocabulary.tokens.shouldAppendEosToken };
}

/**
 * A prompt as llama.cpp tokenizes it with add_special: BOS first and EOS last where the vocabulary asks for
 * them, never twice (a chat template or a raw prompt that already starts with BOS keeps one, as llama-server
 * strips the template's own BOS text before adding its own).
 */
export function withSpecialTokens(tokens: readonly Token[], special: PromptSpecialTokens): Token[] {
  const out = [...tokens];
  if (special.addBos && special.bos !== null) {
    while (out[0] === special.bos) out.shift();
    out.unshift(special.bos);
  }
  if (special.addEos && special.eos !== null && out[out.length - 1] !== special.eos) out.push(special.eos);
  return out;
}

/** The GGUF's own chat template, or null when it has none. */
export function embeddedChatTemplate(fileInfo: GgufFileInfo): string | null {
  const template = (fileInfo.metadata.tokenizer as { chat_template?: unknown } | undefined)?.chat_template;
  return typeof template === "string" && template.length > 0 ? template : null;
}

/**
 * llama-server's template for a model whose GGUF has none (its built-in chatml): each message as
 * `<|im_start|>{role}\n{content}<|im_end|>\n`, then `<|im_start|>assistant\n`. Where the vocabulary has the
 * markers as special tokens they become those tokens; elsewhere the whole text is tokenized in one piece, as
 * llama.cpp does. Either way a message's own text is never read as special tokens (llama-server would turn
 * a `</s>` typed in a message into EOS).
 */
export function chatmlFallbackTokens(model: Vocabulary, messages: readonly ChatMessage[]): Token[] {
  const isSpecial = (text: string) => {
    const found = model.tokenize(text, true);
    return found.length === 1 && model.isSpecialToken(found[0]);
  };
  if (isSpecial("<|im_start|>") && isSpecial("<|im_end|>")) {
    return LlamaText([
      ...messages.flatMap((m) => [new SpecialTokensText(`<|im_start|>${m.role}\n`), m.content, new SpecialTokensText("<|im_end|>\n")]),
      new SpecialTokensText("<|im_start|>assistant\n"),
    ]).tokenize(model.tokenizer);
  }
  const text = messages.map((m) => `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`).join("") + "<|im_start|>assistant\n";
  return model.tokenize(text, false);
}

export const CHATML_FALLBACK_NAME = "ChatML (no template in the GGUF, as llama-server)";

export class PromptBuilder {
  /** null: the GGUF has no chat template, so messages are rendered as llama-server's chatml fallback. */
  private readonly wrappers: { thinking: ChatWrapper; noThinking: ChatWrapper } | null;
  private readonly special: PromptSpecialTokens;
  private readonly grammarCache = new Map<string, Promise<string>>();

  constructor(private readonly llama: Llama, private readonly model: Vocabulary, fileInfo: GgufFileInfo, modelPath: string) {
    this.wrappers = embeddedChatTemplate(fileInfo) === null ? null : resolveWrappers(llama, model, fileInfo, modelPath);
    this.special = promptSpecialTokens(model);
  }

  get chatWrapperName(): string {
    return this.wrappers?.noThinking.wrapperName ?? CHATML_FALLBACK_NAME;
  }

  /** The exact tokens the chat template produces for these messages, generation prompt included. */
  tokenizeMessages(messages: readonly ChatMessage[], enableThinking: boolean): Token[] {
    if (this.wrappers === null) return withSpecialTokens(chatmlFallbackTokens(this.model, messages), this.special);
    const wrapper = enableThinking ? this.wrappers.thinking : this.wrappers.noThinking;
    const { contextText } = wrapper.generateContextState({ chatHistory: toChatHistory(messages) });
    return withSpecialTokens(contextText.tokenize(this.model.tokenizer), this.special);
  }

  /** The one place a request becomes prompt tokens (raw text as is; otherwise the chat template). */
  renderPrompt(request: GenerateRequest): RenderedPrompt {
    if (request.rawPrompt !== undefined) {
      // As llama-server's /completion: special-token text in the prompt is parsed as special tokens, and
      // BOS/EOS are added as the vocabulary asks.
      return { tokens: withSpecialTokens(this.model.tokenize(request.rawPrompt, true), this.special), chat: false };
    }
    checkTools(request.tools, request.toolChoice);
    const toolPrompt = renderToolPrompt(request.messages, { tools: request.tools, toolChoice: request.toolChoice, enableThinking: request.enableThinking });
    if (toolPrompt !== null) {
      if (!(this.wrappers?.noThinking instanceof QwenChatWrapper)) {
        throw invalidRequest(`Tool calling needs a Qwen3-style (Hermes <tool_call>) chat template; ${this.chatWrapperName} has none here.`, "tools");
      }
      return { tokens: withSpecialTokens(toolPrompt.tokenize(this.model.tokenizer), this.special), chat: true };
    }
    return { tokens: this.tokenizeMessages(request.messages, request.enableThinking), chat: true };
  }

  /** The one place a request's output constraint is chosen: GBNF text, or undefined for free text. */
  async selectGrammar(request: GenerateRequest): Promise<string | undefined> {
    const conflict = grammarConflict(request);
    if (conflict !== null) throw conflict;
    // A forced tool call (tool_choice "required" or a named function) takes precedence over response_format.
    if (forcesToolCall(request)) {
      return this.cachedGrammar(`tools:${JSON.stringify([request.tools, request.toolChoice, request.parallelToolCalls ?? true, request.enableThinking])}`,
        async () => (await toolCallGrammarText(this.llama, {
          tools: request.tools!, toolChoice: request.toolChoice, parallel: request.parallelToolCalls ?? true, enableThinking: request.enableThinking,
        }))!);
    }
    return this.grammarForFormat(request.responseFormat);
  }

  private async cachedGrammar(key: string, build: () => Promise<string>): Promise<string> {
    let grammar = this.grammarCache.get(key);
    if (grammar === undefined) {
      grammar = build();
      if (this.grammarCache.size > 64) this.grammarCache.delete(this.grammarCache.keys().next().value as string);
      this.grammarCache.set(key, grammar);
    }
    try {
      return await grammar;
    } catch (error) {
      this.grammarCache.delete(key);
      throw error;
    }
  }

  private async grammarForFormat(format: ResponseFormat | undefined): Promise<string | undefined> {
    if (format === undefined || format.type === "text") return undefined;
    const key = format.type === "json_object" ? "json" : JSON.stringify(format.schema);
    try {
      return await this.cachedGrammar(key, async () => format.type === "json_object"
        ? (await this.llama.getGrammarFor("json")).grammar
        // The const generic infers a literal type from its argument; a runtime schema has none.
        : withoutTrailingNewlines((await this.llama.createGrammarForJsonSchema(toGrammarSchema(format.schema) as Parameters<Llama["createGrammarForJsonSchema"]>[0])).grammar));
    } catch (error) {
      if (error instanceof EngineError) throw error;
      throw invalidRequest(`response_format.json_schema.schema cannot be turned into a grammar: ${(error as Error).message}`,
        "response_format.json_schema.schema");
    }
  }
}

/** tool_choice "required" or a named function with tools offered: the answer is held to a tool-call grammar. */
function forcesToolCall(request: GenerateRequest): boolean {
  return request.rawPrompt === undefined && request.tools !== undefined && (request.toolChoice === "required" || typeof request.toolChoice === "object");
}

/**
 * A grammar that ends (a forced tool call, a JSON answer) leaves only the end-of-generation token once it
 * is complete; ignore_eos bans exactly that token, so the request could never finish properly (the slot
 * loop ends such a job with an error when it gets there). Known before generating: refused here with a
 * 400 naming both fields, as OpenAI refuses its impossible combinations.
 */
export function grammarConflict(request: Pick<GenerateRequest, "ignoreEos" | "rawPrompt" | "tools" | "toolChoice" | "responseFormat">): EngineError | null {
  if (request.ignoreEos !== true) return null;
  if (forcesToolCall(request as GenerateRequest)) {
    const choice = typeof request.toolChoice === "object" ? `a named function (${request.toolChoice.name})` : "\"required\"";
    return invalidRequest(`ignore_eos cannot be combined with tool_choice ${choice}: the tool-call grammar ends with the end-of-text token, which ignore_eos bans. ` +
      "Drop ignore_eos, or use tool_choice \"auto\".", "ignore_eos");
  }
  const format = request.responseFormat;
  if (format !== undefined && format.type !== "text") {
    return invalidRequest(`ignore_eos cannot be combined with response_format ${format.type}: the JSON grammar ends with the end-of-text token, which ignore_eos bans. ` +
      "Drop one of the two.", "ignore_eos");
  }
  return null;
}

export function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = messages.map((m): ChatHistoryItem => {
    if (m.role === "system") return { type: "system", text: m.content };
    if (m.role === "user" || m.role === "tool") return { type: "user", text: m.content };
    return { type: "model", response: [m.content] };
  });
  // The open assistant turn the model answers in (add_generation_prompt in transformers' terms).
  history.push({ type: "model", response: [] });
  return history;
}

/**
 * Qwen3's template turns thinking off by pre-filling an empty think block (`<think>\n\n</think>\n\n`);
 * node-llama-cpp's QwenChatWrapper does exactly that with `thoughts: "discourage"`. Other models get
 * whatever node-llama-cpp resolves from their GGUF (thinking then has no effect on the prompt).
 */
function resolveWrappers(llama: Llama, model: Vocabulary, fileInfo: GgufFileInfo, modelPath: string): { thinking: ChatWrapper; noThinking: ChatWrapper } {
  // As resolveChatWrapper(model) does for a LlamaModel, from the file's metadata and our vocabulary.
  const resolved = resolveChatWrapper({
    fileInfo, architecture: fileInfo.metadata?.general?.architecture, tokenizer: model.tokenizer, bosString: model.tokens.bosString,
    filename: path.basename(modelPath), llama,
  }) ?? new GeneralChatWrapper();
  if (resolved instanceof QwenChatWrapper) {
    return {
      thinking: new QwenChatWrapper({ variation: resolved.variation, thoughts: "auto" }),
      noThinking: new QwenChatWrapper({ variation: resolved.variation, thoughts: "discourage" }),
    };
  }
  return { thinking: resolved, noThinking: resolved };
}

/** The chat template's end-of-turn tokens (e.g. `<|im_end|>`), which are not always the GGUF's EOS. */
export function endOfGenerationTokens(model: Vocabulary): Token[] {
  const tokens = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"].flatMap((text) => {
    const found = model.tokenize(text, true);
    return found.length === 1 && model.isSpecialToken(found[0]) ? found : [];
  });
  for (const token of [model.tokens.eos, model.tokens.eot]) if (token !== null && !tokens.includes(token)) tokens.push(token);
  return tokens;
}
