// The playground's DOM-free helpers (src/http/public/playground/*.js), run in Node: the SSE parser
// across arbitrary chunk boundaries, error messages from every error shape, the cosine matrix and the
// colour scale. The page itself is tested in a browser by playground.test.ts.
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import t from "tap";
import { errorBody } from "../src/http/errors.js";

// The page's modules are browser JavaScript typed by JSDoc (tsconfig.playground.json), outside this
// Node program: their shapes as used here.
type ServiceError = Error & { status: number; code: string | undefined; field: string | undefined };
type ApiModule = {
  SseParser: new () => { push(chunk: string): { event: string; data: string }[] };
  toServiceError(body: unknown, status: number): ServiceError;
};
type HeatmapModule = {
  cosineMatrix(vectors: number[][]): number[][];
  similarityColour(value: number): [number, number, number];
  textColourOn(rgb: [number, number, number]): string;
  describePairs(labels: string[], matrix: number[][]): { most: { a: string; b: string; value: number } | null; least: { a: string; b: string; value: number } | null };
};
const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "http", "public", "playground");
const api = await import(pathToFileURL(path.join(dir, "api.js")).href) as ApiModule;
const heatmap = await import(pathToFileURL(path.join(dir, "heatmap.js")).href) as HeatmapModule;

t.test("SSE: events split anywhere across chunks come out whole and in order", async (t) => {
  const stream = 'event: delta\ndata: {"text":"Ho"}\n\n: keep-alive\n\nevent: delta\r\ndata: {"text":"la ñ"}\r\n\r\n'
    + 'data: {"choices":[]}\n\nevent: done\ndata: {"answer":"Hola ñ",\ndata: "x":1}\n\ndata: [DONE]\n\n';
  const expected = [
    { event: "delta", data: '{"text":"Ho"}' },
    { event: "delta", data: '{"text":"la ñ"}' },
    { event: "message", data: '{"choices":[]}' },
    { event: "done", data: '{"answer":"Hola ñ",\n"x":1}' },
    { event: "message", data: "[DONE]" },
  ];
  for (const size of [1, 2, 3, 7, 1000]) {
    const parser = new api.SseParser();
    const events = [];
    for (let i = 0; i < stream.length; i += size) events.push(...parser.push(stream.slice(i, i + size)));
    t.same(events, expected, `chunks of ${size}`);
  }
  const parser = new api.SseParser();
  t.same(parser.push('event: delta\ndata: {"text":"a"}\n'), [], "an unfinished event waits for its blank line");
  t.same(parser.push("\n"), [{ event: "delta", data: '{"text":"a"}' }]);
});

t.test("errors: the service's own message from every error shape", async (t) => {
  const payload = { status: 400, code: "validation_error", message: "max_new_tokens must be >= 1", field: "max_new_tokens" };
  // The two shapes this service sends, built by its own error code.
  for (const style of ["seed", "openai"] as const) {
    const error = api.toServiceError(errorBody(payload, style), 400);
    t.equal(error.message, payload.message, style);
    t.equal(error.code, "validation_error", `${style}: code`);
    t.equal(error.field, "max_new_tokens", `${style}: field`);
    t.equal(error.status, 400);
  }
  t.equal(api.toServiceError({ error: "model 'x' not found" }, 404).message, "model 'x' not found", "Ollama's {error: string}");
  t.equal(api.toServiceError({ statusCode: 401, error: "Unauthorized", message: "missing authorization header" }, 401).message,
    "missing authorization header", "Fastify's {statusCode, error, message}");
  t.equal(api.toServiceError("Bad Gateway", 502).message, "Bad Gateway", "a proxy's plain text");
  t.equal(api.toServiceError("", 502).message, "HTTP 502 with no error message");
  t.equal(api.toServiceError({ error: { code: "x" } }, 500).message, "HTTP 500 with no error message", "no message anywhere");
});

t.test("heat map maths: cosine matrix, colour ends, readable label colour, pairs", async (t) => {
  const m = heatmap.cosineMatrix([[1, 0], [3, 4], [0, -2]]);
  t.same(m.map((row) => row.map((v) => Math.round(v * 1000) / 1000)), [[1, 0.6, 0], [0.6, 1, -0.8], [0, -0.8, 1]]);
  t.same(heatmap.similarityColour(1), [253, 231, 37], "1 is yellow");
  t.same(heatmap.similarityColour(0), [68, 1, 84], "0 is dark violet");
  t.same(heatmap.similarityColour(-0.5), [68, 1, 84], "below 0 clamps");
  t.equal(heatmap.textColourOn([253, 231, 37]), "#000");
  t.equal(heatmap.textColourOn([68, 1, 84]), "#fff");
  const pairs = heatmap.describePairs(["a", "b", "c"], m);
  t.match(pairs, { most: { a: "a", b: "b" }, least: { a: "b", b: "c" } });
});
