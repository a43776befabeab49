// The native slot loop protects the process (issue 15): a grammar that finishes while ignore_eos bans the
// end token used to throw out of the loop thread (`Unexpected empty grammar stack after accepting piece`)
// and abort the whole process. The loop runs in a child process here, so a crash fails the test instead
// of killing the runner.
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import t from "tap";
import { ensureTestModels } from "../scripts/make-test-models.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const models = await ensureTestModels();

type Line = { name: string; answers?: Record<string, string>; unavailable?: string | null; ok?: boolean; tokens?: unknown; status?: number; code?: string; field?: string; message?: string; states?: unknown; prefix?: number };

function runChild(scenario: string, model = models.chat): Promise<{ code: number | null; signal: string | null; lines: Line[]; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--import", "tsx", path.join(root, "test", "helpers", "loop-guard-child.ts"), model, scenario], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (c: Buffer) => { out += c.toString(); });
    child.stderr.on("data", (c: Buffer) => { err += c.toString(); });
    child.on("exit", (code, signal) => resolve({
      code, signal, output: out + err,
      lines: out.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Line),
    }));
  });
}

t.test("a finished grammar with ignore_eos ends that job with a 400, and the loop goes on", async (t) => {
  const { code, signal, lines, output } = await runChild("grammar-end");
  t.equal(signal, null, "no abort");
  t.equal(code, 0, "the child exits cleanly");
  t.notMatch(output, /terminate called|Unexpected empty grammar stack/);
  const byName = new Map(lines.map((l) => [l.name, l]));
  for (const name of ["finished grammar + ignore_eos", "finished grammar + ignore_eos, sampled", "finished grammar + ignore_eos + penalties"]) {
    const line = byName.get(name);
    t.equal(line?.ok, false, name);
    t.equal(line?.status, 400, `${name}: 400`);
    t.equal(line?.code, "invalid_request");
    t.equal(line?.field, "ignore_eos");
    t.match(line?.message, /grammar allows only tokens this request bans/);
  }
  t.same(byName.get("plain after"), { name: "plain after", ok: true, tokens: 40, cancelled: false }, "slot 0 generates afterwards");
  t.same(byName.get("plain after, slot 1"), { name: "plain after, slot 1", ok: true, tokens: 40, cancelled: false }, "slot 1 generates afterwards");
  t.equal(byName.get("grammar without ignore_eos")?.ok, true, "a grammar that may end still ends normally");
});

t.test("every entry point after dispose answers without touching the freed core", async (t) => {
  const { code, signal, lines } = await runChild("dispose");
  t.equal(signal, null);
  t.equal(code, 0);
  const prefix = lines.find((l) => l.name === "common prefix") as { cached?: number; mismatches?: number } | undefined;
  t.ok((prefix?.cached ?? 0) > 40, "the slot holds prompt and answer");
  t.equal(prefix?.mismatches, 0, "native commonPrefixes agrees with the JS prefix on a copy, 300 generated prompts");
  const after = lines.find((l) => l.name === "after dispose");
  t.same(after?.states, []);
  t.same(after?.tokens, []);
  t.equal(after?.prefix, 0);
  const native = lines.find((l) => l.name === "native after dispose") as { answers?: Record<string, string> } | undefined;
  for (const method of ["slotStates", "slotTokens", "commonPrefixes", "start", "end", "trim"]) {
    t.equal(native?.answers?.[method], "the slot loop is disposed", `${method} after dispose throws a JS error`);
  }
  t.equal(native?.answers?.["dispose again"], "undefined", "a second dispose resolves");
});

t.test("a non-causal model as the chat model is refused at load, not aborted at its first long prompt", async (t) => {
  const { code, signal, lines } = await runChild("non-causal", models.embed);
  t.equal(signal, null);
  t.equal(code, 0);
  t.match(lines.find((l) => l.name === "non-causal")?.unavailable, /not causal/);
});
