// The app's Python backend for real: Debian's python3-httpx runs the seed's backend snippets verbatim
// (test/python/seed_*.py) against the running service, plus the seed's embedding request, streamed
// reads of /v1/chat/completions and /v1/responses with aiter_lines, and a 400 read back by
// raise_for_status (test/python/run_seed_client.py). Skips, saying why, where no python3 with httpx
// exists (.ci/run installs python3-httpx).
import t from "tap";
import { execFile, spawnSync } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { SCRIPTED_OUTPUT, ensureScriptedModel } from "../scripts/make-test-models.js";
import { projectRoot } from "../src/config.js";
import { startTestService } from "./helpers/service.js";

/** Debian's interpreter first: a pyenv `python3` on PATH may lack the distribution's httpx. */
const candidates = [process.env.PYTHON_HTTPX, "/usr/bin/python3", "python3"].filter((p): p is string => p !== undefined && p !== "");
const python = candidates.find((p) => spawnSync(p, ["-c", "import httpx"], { stdio: "ignore" }).status === 0);

if (python === undefined) {
  t.plan(0, `no python3 with httpx (tried ${candidates.join(", ")}): install Debian's python3-httpx (apt-get install -y python3-httpx; .ci/run does) or set PYTHON_HTTPX`);
} else {
  t.setTimeout(600_000);
  const service = await startTestService({
    LLM_MODEL: await ensureScriptedModel(),
    // The names the seed's embedding request uses, as the production manifest gives them.
    EMBED_MODEL_ALIASES: "sentence-transformers/all-MiniLM-L6-v2,all-MiniLM-L6-v2",
  });
  t.teardown(() => service.close());
  const base = await service.listen();
  const { stdout } = await promisify(execFile)(python, [path.join(projectRoot, "test", "python", "run_seed_client.py"), base], { timeout: 300_000 });
  type Out = {
    httpx: string; python: string; call_flow: string; adapted: string; adapted_fallback: string;
    embed: { embeddings: number[][]; dim: number; model: string };
    chat_stream: { content_type: string; text: string; done: boolean };
    responses_stream: { content_type: string; names: string[]; types: string[]; sequence: number[]; text: string; final_text: string };
    error: { status: number; body: { error: { code: string; field?: string } }; message: string } | null;
  };
  const out = JSON.parse(stdout) as Out;
  t.comment(`${python}: Python ${out.python}, httpx ${out.httpx}`);

  t.test("the seed's snippets, verbatim, get the answer", async (t) => {
    t.equal(out.call_flow, SCRIPTED_OUTPUT.answer, "call flow: result['answer']");
    t.equal(out.adapted, SCRIPTED_OUTPUT.answer, "adapted backend: _post_process_mentor_response(result['answer'])");
    t.match(out.adapted_fallback, /^Error al generar respuesta: Client error '404 Not Found'/, "its httpx.HTTPError fallback");
  });

  t.test("the seed's embedding request", async (t) => {
    t.equal(out.embed.embeddings.length, 2);
    t.equal(out.embed.dim, service.engines.embed.dimension);
    t.equal(out.embed.embeddings[0]!.length, out.embed.dim);
    const norm = Math.hypot(...out.embed.embeddings[0]!);
    t.ok(Math.abs(norm - 1) < 1e-4, `L2-normalised (${norm})`);
  });

  t.test("streams read with aiter_lines", async (t) => {
    t.equal(out.chat_stream.content_type, "text/event-stream; charset=utf-8");
    t.equal(out.chat_stream.text, SCRIPTED_OUTPUT.answer);
    t.ok(out.chat_stream.done, "ends with data: [DONE]");
    const r = out.responses_stream;
    t.equal(r.text, SCRIPTED_OUTPUT.answer);
    t.equal(r.final_text, SCRIPTED_OUTPUT.answer);
    t.same(r.names, r.types, "event: line = the data's type");
    t.same(r.sequence, r.sequence.map((_, i) => i));
    t.equal(r.types[0], "response.created");
    t.equal(r.types.at(-1), "response.completed");
  });

  t.test("a 400 read back by raise_for_status", async (t) => {
    t.equal(out.error?.status, 400);
    t.equal(out.error?.body.error.field, "messages");
    t.match(out.error?.message, /^Client error '400 Bad Request' for url/);
  });
}
