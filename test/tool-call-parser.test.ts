// The tool-call parser on Qwen3's output text, without a model: every case is fed whole, character
// by character, and split at every one and every pair of points; the deltas must always reassemble
// to the same content and calls.
import t from "tap";
import { ToolCallParser, TOOL_CALL_OPEN, newToolCallId, partialTagLength } from "../src/engine/chat/toolCallParser.js";
import type { GenerationDelta, ToolCall } from "../src/engine/chat/types.js";

type Outcome = { content: string; calls: { name: string; arguments: string }[]; wantsMore: boolean };

/** Feeds the pieces and checks the deltas against the parser's own final state. */
function run(pieces: readonly string[], options: { parallel?: boolean } = {}): Outcome & { problems: string[]; deltas: GenerationDelta[] } {
  let n = 0;
  const parser = new ToolCallParser({ ...options, newId: () => `call_${n++}` });
  const deltas: GenerationDelta[] = [];
  for (const piece of pieces) deltas.push(...parser.push(piece));
  deltas.push(...parser.finish());
  const problems: string[] = [];
  let content = "";
  const streamed: { id: string; name: string; arguments: string }[] = [];
  for (const d of deltas) {
    if (d.kind === "content") {
      if (d.text === "") problems.push("empty content delta");
      content += d.text;
    } else if (d.kind === "tool_call") {
      if (d.index !== streamed.length) problems.push(`call index ${d.index}, expected ${streamed.length}`);
      streamed.push({ id: d.id, name: d.name, arguments: "" });
    } else if (d.kind === "tool_call_arguments") {
      const call = streamed[d.index];
      if (call === undefined) problems.push(`arguments for unannounced call ${d.index}`);
      else if (d.index !== streamed.length - 1) problems.push("arguments for an earlier call");
      else call.arguments += d.text;
    }
  }
  if (content !== parser.content) problems.push(`streamed content ${JSON.stringify(content)} != ${JSON.stringify(parser.content)}`);
  const final: ToolCall[] = [...parser.calls];
  if (JSON.stringify(streamed) !== JSON.stringify(final)) problems.push(`streamed calls ${JSON.stringify(streamed)} != ${JSON.stringify(final)}`);
  return { content, calls: final.map(({ name, arguments: a }) => ({ name, arguments: a })), wantsMore: parser.wantsMore, problems, deltas };
}

/** Every way to cut `text` into 1, 2 or 3 pieces, plus one character at a time. */
function* splits(text: string): Generator<string[]> {
  yield [text];
  yield [...text];
  for (let i = 0; i <= text.length; i++) {
    yield [text.slice(0, i), text.slice(i)];
    for (let j = i; j <= text.length; j++) yield [text.slice(0, i), text.slice(i, j), text.slice(j)];
  }
}

function check(name: string, text: string, expected: Outcome | Omit<Outcome, "wantsMore">, options: { parallel?: boolean } = {}) {
  t.test(name, async (t) => {
    const failures: string[] = [];
    let count = 0;
    for (const pieces of splits(text)) {
      count++;
      const got = run(pieces, options);
      const problems = [...got.problems];
      if (got.content !== expected.content) problems.push(`content ${JSON.stringify(got.content)}`);
      if (JSON.stringify(got.calls) !== JSON.stringify(expected.calls)) problems.push(`calls ${JSON.stringify(got.calls)}`);
      if ("wantsMore" in expected && got.wantsMore !== expected.wantsMore) problems.push(`wantsMore ${got.wantsMore}`);
      if (problems.length > 0 && failures.length < 5) failures.push(`${JSON.stringify(pieces)}: ${problems.join("; ")}`);
    }
    t.same(failures, [], `${count} ways to split the text give the expected result`);
  });
}

const QWEN_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Madrid", "days": [1, 2]}}\n</tool_call>';
const WEATHER = { name: "get_weather", arguments: '{"city": "Madrid", "days": [1, 2]}' };

check("plain text passes through", "Hola, ¿qué tal? 2 < 3 y <b>negrita</b> <tool", { content: "Hola, ¿qué tal? 2 < 3 y <b>negrita</b> <tool", calls: [] });
check("a Qwen3 call: name, then the arguments exactly as written; no content", QWEN_CALL, { content: "", calls: [WEATHER], wantsMore: true });
check("text before a call is content, without the whitespace before the tag", `Voy a mirar el tiempo.\n\n${QWEN_CALL}`,
  { content: "Voy a mirar el tiempo.", calls: [WEATHER] });
check("two calls (parallel): the newline between them is not content",
  `${QWEN_CALL}\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "Europe/Madrid"}}\n</tool_call>`,
  { content: "", calls: [WEATHER, { name: "get_time", arguments: '{"tz": "Europe/Madrid"}' }], wantsMore: true });
check("parallel calls off: the first call only",
  `${QWEN_CALL}\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>`,
  { content: "", calls: [WEATHER], wantsMore: false }, { parallel: false });
check("arguments before the name are buffered",
  '<tool_call>{"arguments": {"a": [1, {"b": "}]"}], "c": null}, "name": "f"}</tool_call>',
  { content: "", calls: [{ name: "f", arguments: '{"a": [1, {"b": "}]"}], "c": null}' }] });
check("escaped quotes, backslashes, braces and tags inside strings",
  '<tool_call>{"name": "f", "arguments": {"q": "a \\"}\\" b\\\\", "r": "<tool_call>"}}</tool_call>',
  { content: "", calls: [{ name: "f", arguments: '{"q": "a \\"}\\" b\\\\", "r": "<tool_call>"}' }] });
check("non-ASCII arguments", '<tool_call>\n{"name": "traducir", "arguments": {"texto": "¿Qué significa ímihí? 🦙"}}\n</tool_call>',
  { content: "", calls: [{ name: "traducir", arguments: '{"texto": "¿Qué significa ímihí? 🦙"}' }] });
check("an escaped name is decoded", '<tool_call>{"name": "f\\u00f1", "arguments": {}}</tool_call>',
  { content: "", calls: [{ name: "fñ", arguments: "{}" }] });
check("no arguments key: {}", '<tool_call>{"name": "ping"}</tool_call>', { content: "", calls: [{ name: "ping", arguments: "{}" }] });
check("'parameters' is read as the arguments", '<tool_call>{"name": "f", "parameters": {"x": 1}}</tool_call>',
  { content: "", calls: [{ name: "f", arguments: '{"x": 1}' }] });
check("scalar arguments stay as written", '<tool_call>{"name": "f", "arguments": 12.5e3}</tool_call>',
  { content: "", calls: [{ name: "f", arguments: "12.5e3" }] });
check("other keys are skipped", '<tool_call>{"id": 3, "meta": {"x": "}"}, "name": "f", "arguments": {"k": true}}</tool_call>',
  { content: "", calls: [{ name: "f", arguments: '{"k": true}' }] });
check("not JSON: the block is content", "Antes <tool_call>no es json</tool_call> después",
  { content: "Antes <tool_call>no es json</tool_call> después", calls: [] });
check("no name: the block is content", '<tool_call>{"arguments": {"a": 1}}</tool_call>',
  { content: '<tool_call>{"arguments": {"a": 1}}</tool_call>', calls: [] });
check("a name that is not a string: the block is content", '<tool_call>{"name": 5}</tool_call>!',
  { content: '<tool_call>{"name": 5}</tool_call>!', calls: [] });
check("a broken block, then a real call inside it", '<tool_call>oops <tool_call>{"name": "f", "arguments": {}}</tool_call>',
  { content: "<tool_call>oops", calls: [{ name: "f", arguments: "{}" }] });
check("named, then broken: the call stands with what it has", '<tool_call>{"name": "f" "arguments": {"a": 1}}</tool_call>Fin',
  { content: "Fin", calls: [{ name: "f", arguments: "{}" }] });
check("invalid arguments JSON is kept verbatim", '<tool_call>{"name": "f", "arguments": {"a": tru, }}</tool_call>',
  { content: "", calls: [{ name: "f", arguments: '{"a": tru, }' }] });
check("missing </tool_call>: the object ends the call, text after it is content",
  '<tool_call>\n{"name": "f", "arguments": {"a": 1}}\nHecho.', { content: "Hecho.", calls: [{ name: "f", arguments: '{"a": 1}' }] });
check("missing </tool_call>, straight into a second call",
  '<tool_call>{"name": "f", "arguments": {}}\n<tool_call>{"name": "g", "arguments": {}}</tool_call>',
  { content: "", calls: [{ name: "f", arguments: "{}" }, { name: "g", arguments: "{}" }] });
check("output ends inside the arguments (max_tokens): the call keeps the prefix",
  '<tool_call>\n{"name": "f", "arguments": {"city": "Ma', { content: "", calls: [{ name: "f", arguments: '{"city": "Ma' }] });
check("output ends before the name: the text is content", '<tool_call>\n{"na', { content: '<tool_call>\n{"na', calls: [] });
check("output ends in a half open tag: it is content", "Hola <tool_ca", { content: "Hola <tool_ca", calls: [] });
check("output ends in a half close tag", '<tool_call>{"name": "f", "arguments": {}}</tool_c',
  { content: "", calls: [{ name: "f", arguments: "{}" }] });
check("whitespace-only answer without calls stays", "\n  \n", { content: "\n  \n", calls: [] });
check("trailing whitespace after a call is dropped, text after a call is kept",
  `${QWEN_CALL}\n\nLo miro.\n`, { content: "Lo miro.", calls: [WEATHER] });

t.test("no content delta ever holds part of a tag when the output is a call", async (t) => {
  const text = `Miro.\n${QWEN_CALL}`;
  const leaks: string[] = [];
  for (const pieces of splits(text)) {
    for (const d of run(pieces).deltas) {
      if (d.kind === "content" && (d.text.includes("<") || d.text.includes("{"))) leaks.push(`${JSON.stringify(pieces)} -> ${JSON.stringify(d.text)}`);
    }
  }
  t.same(leaks.slice(0, 5), []);
});

t.test("the call is announced as soon as its name is complete, before the arguments", async (t) => {
  const parser = new ToolCallParser({ newId: () => "call_x" });
  t.same(parser.push('<tool_call>\n{"name": "get_wea'), []);
  t.same(parser.push('ther", "argu'), [{ kind: "tool_call", index: 0, id: "call_x", name: "get_weather" }]);
  t.same(parser.push('ments": {"city": '), [{ kind: "tool_call_arguments", index: 0, text: '{"city": ' }]);
  t.same(parser.push('"Madrid"}}\n</tool'), [{ kind: "tool_call_arguments", index: 0, text: '"Madrid"}' }]);
  t.same(parser.push("_call>"), []);
  t.same(parser.finish(), []);
  t.same(parser.calls, [{ id: "call_x", name: "get_weather", arguments: '{"city": "Madrid"}' }]);
});

t.test("finish reason: tool_calls when every call ended, nothing when the output was cut inside one", async (t) => {
  const reason = (text: string) => {
    const parser = new ToolCallParser();
    parser.push(text);
    parser.finish();
    return parser.finishReason();
  };
  t.equal(reason(QWEN_CALL), "tool_calls");
  t.equal(reason('<tool_call>{"name": "f", "arguments": {}}'), "tool_calls", "object closed, tag missing");
  t.equal(reason('<tool_call>{"name": "f", "arguments": {"a": '), undefined, "cut in the arguments");
  t.equal(reason("solo texto"), undefined);
  t.equal(reason("<tool_call>roto</tool_call>"), undefined);
});

t.test("ids look like OpenAI's and differ", async (t) => {
  const a = newToolCallId();
  t.match(a, /^call_[A-Za-z0-9]{24}$/);
  t.not(a, newToolCallId());
});

t.test("partialTagLength", async (t) => {
  t.equal(partialTagLength("abc <tool_ca", TOOL_CALL_OPEN), 8);
  t.equal(partialTagLength("abc <", TOOL_CALL_OPEN), 1);
  t.equal(partialTagLength("abc <tool_call", TOOL_CALL_OPEN), 10);
  t.equal(partialTagLength("abc", TOOL_CALL_OPEN), 0);
  t.equal(partialTagLength("<x", TOOL_CALL_OPEN), 0);
});

t.test("push after finish is a programming error", async (t) => {
  const parser = new ToolCallParser();
  parser.finish();
  t.throws(() => parser.push("x"));
});
