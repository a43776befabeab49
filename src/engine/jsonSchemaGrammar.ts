// node-llama-cpp builds a GBNF grammar from a JSON Schema subset. A keyword outside that subset is
// silently ignored by the builder, so the output would not be held to it: such schemas are refused
// with a 400 that names the keyword, instead of promising an enforcement that does not happen.
import type { GbnfJsonSchema } from "node-llama-cpp";
import { invalidRequest } from "./errors.js";

const FIELD = "response_format.json_schema.schema";
const SCALAR_TYPES = new Set(["string", "number", "integer", "boolean", "null"]);
/** Annotations that constrain nothing. */
const IGNORED = new Set(["title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly", "strict"]);
const ALLOWED_BY_TYPE: Record<string, ReadonlySet<string>> = {
  string: new Set(["type", "minLength", "maxLength", "format"]),
  object: new Set(["type", "properties", "required", "additionalProperties", "minProperties", "maxProperties", "$defs"]),
  array: new Set(["type", "items", "prefixItems", "minItems", "maxItems", "$defs"]),
  scalar: new Set(["type"]),
};
const STRING_FORMATS = new Set(["date-time", "time", "date"]);

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

function refuse(path: string, what: string): never {
  throw invalidRequest(`${FIELD}${path}: ${what}; the grammar can enforce type, enum, const, oneOf/anyOf, properties, required, ` +
    "additionalProperties, min/maxProperties, items, prefixItems, min/maxItems, min/maxLength, format (date, time, date-time) and $defs/$ref.", FIELD);
}

/** Checks the schema and returns it in the builder's dialect (anyOf is read as oneOf). */
export function toGrammarSchema(schema: unknown, path = ""): GbnfJsonSchema {
  if (schema === true || (isObject(schema) && Object.keys(schema).every((k) => IGNORED.has(k)))) {
    refuse(path, "an unconstrained schema ({} or true) cannot be turned into a grammar; use response_format json_object");
  }
  if (!isObject(schema)) refuse(path, "a schema must be an object");
  const out: Json = {};
  const keys = Object.keys(schema).filter((k) => !IGNORED.has(k));
  const copyDescription = () => {
    if (typeof schema.description === "string") out.description = schema.description;
  };

  if ("$ref" in schema) {
    if (typeof schema.$ref !== "string" || !schema.$ref.startsWith("#/$defs/")) refuse(`${path}.$ref`, "only local references #/$defs/<name> are supported");
    const extra = keys.filter((k) => k !== "$ref" && k !== "$defs");
    if (extra.length > 0) refuse(path, `'${extra[0]}' beside $ref is not supported`);
    out.$ref = schema.$ref;
    if (isObject(schema.$defs)) out.$defs = mapDefs(schema.$defs, path);
    copyDescription();
    return out as GbnfJsonSchema;
  }
  for (const key of ["const", "enum"] as const) {
    if (key in schema) {
      const values = key === "const" ? [schema.const] : schema.enum;
      if (!Array.isArray(values) || values.length === 0 || !values.every((v) => v === null || ["string", "number", "boolean"].includes(typeof v))) {
        refuse(`${path}.${key}`, "only strings, numbers, booleans and null are supported");
      }
      const extra = keys.filter((k) => k !== key && k !== "type");
      if (extra.length > 0) refuse(path, `'${extra[0]}' beside ${key} is not supported`);
      out[key] = schema[key];
      copyDescription();
      return out as GbnfJsonSchema;
    }
  }
  for (const key of ["oneOf", "anyOf"] as const) {
    if (key in schema) {
      const branches = schema[key];
      if (!Array.isArray(branches) || branches.length === 0) refuse(`${path}.${key}`, "must be a non-empty array of schemas");
      const extra = keys.filter((k) => k !== key && k !== "$defs");
      if (extra.length > 0) refuse(path, `'${extra[0]}' beside ${key} is not supported`);
      out.oneOf = branches.map((b, i) => toGrammarSchema(b, `${path}.${key}[${i}]`));
      if (isObject(schema.$defs)) out.$defs = mapDefs(schema.$defs, path);
      copyDescription();
      return out as GbnfJsonSchema;
    }
  }

  const type = schema.type;
  const types = Array.isArray(type) ? type : [type];
  if (type === undefined) refuse(path, "'type' (or const, enum, oneOf, anyOf, $ref) is required");
  if (!types.every((t) => typeof t === "string" && (SCALAR_TYPES.has(t) || t === "object" || t === "array"))) {
    refuse(`${path}.type`, `${JSON.stringify(type)} is not a JSON Schema type`);
  }
  if (Array.isArray(type) && !type.every((t) => SCALAR_TYPES.has(t as string))) {
    refuse(`${path}.type`, "a list of types may only hold scalar types; use anyOf for objects and arrays");
  }
  const kind = Array.isArray(type) ? "scalar" : type === "string" || type === "object" || type === "array" ? (type as string) : "scalar";
  const unsupported = keys.find((k) => !ALLOWED_BY_TYPE[kind]!.has(k));
  if (unsupported !== undefined) refuse(`${path}.${unsupported}`, `'${unsupported}' cannot be enforced by the grammar`);
  Object.assign(out, Object.fromEntries(keys.map((k) => [k, schema[k]])));
  copyDescription();

  if (kind === "string" && "format" in schema && !STRING_FORMATS.has(schema.format as string)) {
    refuse(`${path}.format`, `format '${String(schema.format)}' cannot be enforced`);
  }
  if (kind === "object") {
    if ("properties" in schema) {
      if (!isObject(schema.properties)) refuse(`${path}.properties`, "must be an object");
      out.properties = Object.fromEntries(Object.entries(schema.properties).map(([name, s]) => [name, toGrammarSchema(s, `${path}.properties.${name}`)]));
    }
    if (isObject(schema.additionalProperties)) out.additionalProperties = toGrammarSchema(schema.additionalProperties, `${path}.additionalProperties`);
    if (isObject(schema.$defs)) out.$defs = mapDefs(schema.$defs, path);
  }
  if (kind === "array") {
    if ("items" in schema) out.items = toGrammarSchema(schema.items, `${path}.items`);
    if (Array.isArray(schema.prefixItems)) out.prefixItems = schema.prefixItems.map((s, i) => toGrammarSchema(s, `${path}.prefixItems[${i}]`));
    if (isObject(schema.$defs)) out.$defs = mapDefs(schema.$defs, path);
  }
  return out as GbnfJsonSchema;
}

function mapDefs(defs: Json, path: string): Json {
  return Object.fromEntries(Object.entries(defs).map(([name, s]) => [name, toGrammarSchema(s, `${path}.$defs.${name}`)]));
}

/** The end node-llama-cpp puts after a JSON-schema grammar's value: four newlines, then any more. */
const TRAILING_NEWLINES = ' "\\n\\n\\n\\n" [\\n]*';

/**
 * node-llama-cpp's JSON-schema grammars end with `"\n\n\n\n" [\n]*`: its LlamaChat stops at those newlines
 * and trims them. The slot loop has no such trigger, so the model would spend at least four tokens on
 * newlines (and may go on) after the JSON closes. Without them the grammar ends with the value and only
 * the end-of-generation token may follow.
 */
export function withoutTrailingNewlines(gbnf: string): string {
  const end = gbnf.indexOf("\n");
  const root = end < 0 ? gbnf : gbnf.slice(0, end);
  if (!root.startsWith("root ::= ") || !root.endsWith(TRAILING_NEWLINES)) return gbnf;
  return root.slice(0, root.length - TRAILING_NEWLINES.length) + (end < 0 ? "" : gbnf.slice(end));
}
