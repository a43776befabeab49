// llama-server's slot API on the real engine: GET /slots and POST /slots/{id}?action=save|restore|erase
// with the same shapes; a restored slot serves the next request from its cache; bad input is a 4xx.
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import t from "tap";
import { postJson, startTestService } from "./helpers/service.js";

t.setTimeout(600_000);

const system = { role: "system", content: "Eres Mentor Bora. " + "La lengua bora tiene tonos altos y bajos. ".repeat(20) };
const body = { messages: [system, { role: "user", content: "¿Qué es un tono?" }], max_new_tokens: 4, temperature: 0 };
type Usage = { usage: { prompt_tokens: number; cached_prompt_tokens: number }; text: string };

t.test("slot API: list, save, erase, restore", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "bora-slots-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const service = await startTestService({ LLM_PARALLEL: "2", LLM_CONTEXT_SIZE: "1024", SLOT_SAVE_PATH: dir, PROMPT_CACHE_MIB: "0" });
  t.teardown(() => service.close());
  const { app } = service;

  const list = await app.inject({ method: "GET", url: "/slots" });
  t.equal(list.statusCode, 200);
  const slots = list.json<{ id: number; n_ctx: number; speculative: boolean; is_processing: boolean }[]>();
  t.equal(slots.length, 2);
  t.match(slots[0], { id: 0, n_ctx: 1024, speculative: false, is_processing: false });

  const first = (await postJson(app, "/api/llm/generate", body)).json<Usage>();
  const slot = service.engines.chat.slotsSnapshot().find((s) => s.cachedTokens >= first.usage.prompt_tokens)!;
  t.ok(slot, "the request's slot holds its prompt");

  const saved = await postJson(app, `/slots/${slot.id}?action=save`, { filename: "tutor.bin" });
  t.equal(saved.statusCode, 200, saved.body);
  const save = saved.json<{ id_slot: number; filename: string; n_saved: number; n_written: number; timings: { save_ms: number } }>();
  t.match(save, { id_slot: slot.id, filename: "tutor.bin" });
  t.equal(save.n_saved, slot.cachedTokens);
  t.ok(save.n_written > 0 && typeof save.timings.save_ms === "number");
  t.ok(existsSync(path.join(dir, "tutor.bin")), "written inside SLOT_SAVE_PATH");

  const erased = await app.inject({ method: "POST", url: `/slots/${slot.id}?action=erase` });
  t.equal(erased.statusCode, 200, erased.body);
  t.same(erased.json(), { id_slot: slot.id, n_erased: slot.cachedTokens });
  t.equal(service.engines.chat.slotsSnapshot()[slot.id]!.cachedTokens, 0);

  const restored = await postJson(app, `/slots/${slot.id}?action=restore`, { filename: "tutor.bin" });
  t.equal(restored.statusCode, 200, restored.body);
  const restore = restored.json<{ id_slot: number; filename: string; n_restored: number; n_read: number; timings: { restore_ms: number } }>();
  t.match(restore, { id_slot: slot.id, filename: "tutor.bin", n_restored: save.n_saved, n_read: save.n_written });
  t.ok(typeof restore.timings.restore_ms === "number");
  const again = (await postJson(app, "/api/llm/generate", body)).json<Usage>();
  t.ok(again.usage.cached_prompt_tokens >= first.usage.prompt_tokens - 1, `${again.usage.cached_prompt_tokens} cached after the restore`);
  t.equal(again.text, first.text, "the same answer from the restored cache");

  // errors in llama-server's (OpenAI's) shape
  const badName = await postJson(app, "/slots/0?action=save", { filename: "../escape.bin" });
  t.equal(badName.statusCode, 400);
  t.match(badName.json(), { error: { message: /filename/i, type: "invalid_request_error" } });
  const missing = await postJson(app, "/slots/0?action=restore", { filename: "nothing-here.bin" });
  t.equal(missing.statusCode, 400);
  const badSlot = await postJson(app, "/slots/9?action=erase", {});
  t.equal(badSlot.statusCode, 400);
  const badAction = await postJson(app, "/slots/0?action=fly", {});
  t.equal(badAction.statusCode, 400);
});

t.test("slot actions answer 501 without SLOT_SAVE_PATH, as llama-server without --slot-save-path", async (t) => {
  const service = await startTestService({ LLM_PARALLEL: "1" });
  t.teardown(() => service.close());
  const r = await postJson(service.app, "/slots/0?action=save", { filename: "x.bin" });
  t.equal(r.statusCode, 501);
  t.match(r.json(), { error: { message: /slot-save-path/ } });
});

t.test("a slot that serves a request is not touched by an action: 409 slot_busy, then it works once idle", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "bora-slots-busy-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const service = await startTestService({ LLM_PARALLEL: "1", SLOT_SAVE_PATH: dir, PROMPT_CACHE_MIB: "0" });
  t.teardown(() => service.close());
  const base = await service.listen();
  const controller = new AbortController();
  const running = fetch(`${base}/v1/chat/completions`, {
    method: "POST", headers: { "content-type": "application/json" }, signal: controller.signal,
    body: JSON.stringify({ messages: [{ role: "user", content: "hola" }], max_tokens: 900, ignore_eos: true, stream: true }),
  });
  const response = await running;
  const reader = response.body!.getReader();
  await reader.read(); // the stream has started: the request holds slot 0
  t.ok(service.engines.chat.slotsSnapshot()[0]!.busy);
  for (const action of ["erase", "save"]) {
    const busy = await postJson(service.app, `/slots/0?action=${action}`, { filename: "x.bin" });
    t.equal(busy.statusCode, 409, `${action} while busy`);
    t.match(busy.json(), { error: { code: "slot_busy", param: "id_slot" } });
  }
  controller.abort();
  await reader.cancel().catch(() => undefined);
  for (let i = 0; i < 100 && service.engines.chat.slotsSnapshot()[0]!.busy; i++) await new Promise((r) => setTimeout(r, 20));
  const erased = await postJson(service.app, "/slots/0?action=erase", {});
  t.equal(erased.statusCode, 200, "idle again: erased");
  const after = await postJson(service.app, "/v1/chat/completions", { messages: [{ role: "user", content: "hola" }], max_tokens: 2 });
  t.equal(after.statusCode, 200, "the slot serves requests after the action");
});
