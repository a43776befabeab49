// The chat engine lives in src/engine/chat/; this module keeps the import path routes and tests use.
export { ChatEngine, DEFAULT_MAX_TOKENS, type ChatEngineKind, type ChatEngineOptions, type EngineSelection, type PreparedGeneration } from "./chat/engine.js";
export { toChatHistory } from "./chat/prompt.js";
export type * from "./chat/types.js";
