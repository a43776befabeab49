// Prompts (instruction prefixes) an embedding model expects before its input, chosen by the request:
// Cohere/Voyage's `input_type` or TEI's `prompt_name`, looked up in the model's manifest entry, so
// multilingual-e5's "query: " / "passage: " are applied here and never pasted by clients. Pure functions.
import { invalidRequest } from "./errors.js";
import type { ManifestEntry } from "./modelFiles.js";

export const INPUT_TYPES = ["search_query", "search_document", "classification", "clustering"] as const;
export type InputType = (typeof INPUT_TYPES)[number];

/** What a model's manifest entry says about its prompts (all empty for a model given by a path the manifest does not know). */
export type ModelPrompts = {
  prompts: Readonly<Record<string, string>>;
  inputTypes: Readonly<Partial<Record<InputType, string>>>;
  defaultPrompt: string | null;
};

export const NO_PROMPTS: ModelPrompts = Object.freeze({ prompts: Object.freeze({}), inputTypes: Object.freeze({}), defaultPrompt: null });

export function promptsOf(entry: ManifestEntry | null): ModelPrompts {
  if (entry === null) return NO_PROMPTS;
  return { prompts: entry.prompts ?? {}, inputTypes: entry.inputTypes ?? {}, defaultPrompt: entry.defaultPrompt ?? null };
}

/** A request's choice, with the names its API gives the two fields (for errors). */
export type PromptChoice = {
  inputType?: InputType | undefined;
  promptName?: string | undefined;
  fields?: { inputType?: string; promptName?: string };
};

/**
 * The text to put before every input of one request. `prompt_name` names a prompt of the model
 * (unknown: 400, as TEI); `input_type` goes through the model's mapping, and a type the model has no
 * prompt for adds nothing (all-MiniLM-L6-v2 reads queries and documents alike); neither: the model's
 * default prompt, if it has one.
 */
export function promptPrefix(model: { name: string; prompts: ModelPrompts }, choice: PromptChoice = {}): string {
  const promptField = choice.fields?.promptName ?? "prompt_name";
  const typeField = choice.fields?.inputType ?? "input_type";
  const { prompts, inputTypes, defaultPrompt } = model.prompts;
  if (choice.promptName !== undefined && choice.inputType !== undefined) {
    throw invalidRequest(`Give ${typeField} or ${promptField}, not both.`, promptField);
  }
  if (choice.promptName !== undefined) {
    const text = prompts[choice.promptName];
    if (text === undefined) {
      const known = Object.keys(prompts);
      throw invalidRequest(`${promptField} '${choice.promptName}' is not a prompt of '${model.name}'; ` +
        (known.length > 0 ? `it has: ${known.map((k) => `'${k}'`).join(", ")}.` : "it has none (it reads every text as it is)."), promptField);
    }
    return text;
  }
  if (choice.inputType !== undefined) {
    const name = inputTypes[choice.inputType];
    return name === undefined ? "" : prompts[name] ?? "";
  }
  return defaultPrompt === null ? "" : prompts[defaultPrompt] ?? "";
}

/** Checks a manifest entry's prompt names point at prompts it has (a typo would silently embed without a prefix). */
export function checkPrompts(name: string, prompts: ModelPrompts): string | null {
  const known = new Set(Object.keys(prompts.prompts));
  const referenced = [...Object.values(prompts.inputTypes), ...(prompts.defaultPrompt === null ? [] : [prompts.defaultPrompt])];
  const missing = referenced.filter((p) => p !== undefined && !known.has(p));
  return missing.length === 0 ? null : `${name}: inputTypes/defaultPrompt name prompts it does not have: ${[...new Set(missing)].join(", ")}`;
}
