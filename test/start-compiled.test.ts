// `npm start` runs the compiled service (scripts/build-dist.ts -> dist/main.js) without a TypeScript
// loader: it builds, starts on the test models, becomes ready, generates, embeds and serves the
// playground's static files from dist/, and stops cleanly on SIGTERM.
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import t from "tap";
import { buildDist, distDir } from "../scripts/build-dist.js";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { TEST_THREADS } from "./helpers/threads.js";

const root = path.resolve(import.meta.dirname, "..");
const models = await ensureTestModels();

t.test("package.json: start runs dist/main.js with plain node, prestart builds it", async (t) => {
  const pkg = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { scripts: Record<string, string> };
  t.equal(pkg.scripts["start"], "node dist/main.js");
  t.match(pkg.scripts["prestart"] ?? "", /scripts\/build-dist\.ts/);
});

t.test("the compiled service starts, serves and stops", async (t) => {
  t.match(await buildDist(), /dist\/: \d+ files compiled/);
  t.ok(existsSync(path.join(distDir, "main.js")));
  t.ok(existsSync(path.join(distDir, "http", "public", "index.html")), "the playground's static files are next to the compiled routes");
  t.notOk(readFileSync(path.join(distDir, "main.js"), "utf8").includes(": Promise<"), "type annotations are gone");

  const child = spawn(process.execPath, [path.join(distDir, "main.js")], {
    cwd: root,
    // NODE_OPTIONS cleared: tap runs tests under tsx, the compiled service must not need it.
    env: { ...process.env, NODE_OPTIONS: "", PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info", LLM_MODEL: models.chat, EMBED_MODEL: models.embed, LLM_CONTEXT_SIZE: "1024", LLM_THREADS: TEST_THREADS },
    stdio: ["ignore", "pipe", "pipe"],
  });
  t.teardown(() => { child.kill("SIGKILL"); });
  let out = "";
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const line = (pattern: RegExp) => new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${pattern} in:\n${out}`)), 120_000);
    const check = () => {
      const found = out.split("\n").find((l) => pattern.test(l));
      if (found !== undefined) { clearTimeout(timer); resolve(found); }
    };
    child.stdout.on("data", (c: Buffer) => { out += c.toString(); check(); });
    child.stderr.on("data", (c: Buffer) => { out += c.toString(); check(); });
    void exited.then(() => { clearTimeout(timer); reject(new Error(`exited before ${pattern}:\n${out}`)); });
    check();
  });
  const base = /http:\/\/[^"]+/.exec(await line(/Server listening at/))![0];
  await line(/"msg":"ready"/);
  t.notMatch(out, /tsx/, "no TypeScript loader in the compiled process's output");
  const gen = await fetch(`${base}/api/llm/generate`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "user", content: "hola" }], max_new_tokens: 4, stream: false }),
  });
  t.equal(gen.status, 200);
  const emb = await fetch(`${base}/api/llm/embed`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ texts: ["hola"] }) });
  t.equal(emb.status, 200);
  t.equal(((await emb.json()) as { embeddings: number[][] }).embeddings.length, 1);
  const page = await fetch(`${base}/`);
  t.equal(page.status, 200, "the playground page is served from dist/http/public");
  t.match(await page.text(), /<html/i);
  child.kill("SIGTERM");
  t.equal(await exited, 0, "clean exit on SIGTERM");
});
