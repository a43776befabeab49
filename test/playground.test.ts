// The playground at `/` in a real headless browser (Debian's chromium through playwright-core), against
// the real service on the test models: streamed chat, stop frees the slot on the server, regenerate,
// errors in the service's words, the embeddings heat map, status. Screenshots go to test/.screenshots/.
import { existsSync, mkdirSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import t, { type Test } from "tap";
import { SCRIPTED_OUTPUT, ensureTestModels } from "../scripts/make-test-models.js";
import { postJson, startTestService } from "./helpers/service.js";

const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const screenshots = path.join(path.dirname(fileURLToPath(import.meta.url)), ".screenshots");
// The closed network of the build machines refuses Chromium's own background connections.
const chromiumArgs = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

// The callbacks given to page.evaluate run in the browser. This program is typed for Node, so the few
// DOM members they touch are declared here (module scope) instead of adding the DOM library to the
// service's own types.
type BrowserText = { id: string; textContent: string | null };
type BrowserCanvas = { width: number; height: number; getContext(kind: "2d"): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } | null };
declare const document: {
  querySelector(selector: string): BrowserText | null;
  getElementById(id: string): object | null;
  activeElement: BrowserText | null;
  documentElement: { scrollWidth: number; clientWidth: number };
  body: object;
};
declare const window: { answerLengths?: number[] };
declare class MutationObserver {
  constructor(callback: () => void);
  observe(target: object, options: { subtree: boolean; childList: boolean; characterData: boolean }): void;
}
declare const sessionStorage: { getItem(key: string): string | null };
declare function getComputedStyle(element: object): { backgroundColor: string; color: string; borderColor: string };

/** WCAG contrast ratio of two computed CSS colours ("rgb(r, g, b)"). */
function contrast(a: string, b: string): number {
  const luminance = (css: string) => {
    const [r, g, bl] = (css.match(/\d+(\.\d+)?/g) ?? []).slice(0, 3).map((v) => {
      const c = Number(v) / 255;
      return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r! + 0.7152 * g! + 0.0722 * bl!;
  };
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi! + 0.05) / (lo! + 0.05);
}

/** Text/background pairs of the page's main elements: [name, element, colour property, background element]. */
const colourChecks: [string, string, "color" | "borderColor", string][] = [
  ["body text", "body", "color", "body"],
  ["header summary", "#summary", "color", "body"],
  ["selected tab", '[aria-selected="true"]', "color", "body"],
  ["primary button", "#send", "color", "#send"],
  ["secondary button", "#clear", "color", "body"],
  ["settings label", ".settings label", "color", ".settings"],
  ["hint text", "#seed-hint", "color", ".settings"],
  ["stop button", "#stop", "borderColor", "body"],
];

/** The computed colours of `colourChecks` (no named functions inside: tsx would wrap them in a helper the page lacks). */
async function colourPairs(page: Page): Promise<[string, string, string][]> {
  return page.evaluate((checks) => checks.map(([name, selector, property, background]) => [
    name,
    getComputedStyle(document.querySelector(selector)!)[property],
    getComputedStyle(document.querySelector(background)!).backgroundColor,
  ] as [string, string, string]), colourChecks);
}

type GenerateResult = { answer: string; tokens_generated: number; finish_reason: string };
type EmbedResult = { embeddings: number[][] };

if (!existsSync(chromiumPath)) {
  t.plan(0, `no browser at ${chromiumPath}: install Debian's chromium (apt-get install -y chromium; .ci/run does) or set CHROMIUM_PATH`);
} else {
  mkdirSync(screenshots, { recursive: true });
  // One decode thread: on a busy shared CI machine two threads spinning at ggml's barrier made the
  // tiny model 15x slower; what this file checks does not depend on the thread count.
  // A second service on the scripted fixture (it always thinks, then answers, with known text) and
  // with an API key set; both load at once to keep the file short.
  const apiKey = "playground-test-key";
  const [service, scripted] = await Promise.all([
    startTestService({ LLM_PARALLEL: "2", LLM_CONTEXT_SIZE: "4096", LLM_THREADS: "1" }),
    ensureTestModels().then(({ scripted }) => startTestService({ LLM_MODEL: scripted, LLM_API_KEY: apiKey, LLM_THREADS: "1" })),
  ]);
  const base = await service.listen();
  const browser: Browser = await chromium.launch({ executablePath: chromiumPath, args: chromiumArgs, headless: true });
  t.teardown(async () => {
    await browser.close();
    await Promise.all([service.close(), scripted.close()]);
  });
  const chat = service.engines.chat;
  let finishedGenerations = 0;
  chat.onGenerationFinished(() => { finishedGenerations++; });

  const openPage = async (t: Test, options: { width?: number; dark?: boolean } = {}): Promise<Page> => {
    const context = await browser.newContext({
      viewport: { width: options.width ?? 1000, height: 900 },
      colorScheme: options.dark ? "dark" : "light",
    });
    t.teardown(() => context.close());
    const page = await context.newPage();
    page.on("pageerror", (error) => t.fail(`page error: ${error.message}`));
    await page.goto(`${base}/`);
    return page;
  };
  const lastAnswer = (page: Page) => page.locator("#transcript li.assistant").last();

  t.test("the page loads from / with its assets and shows the model in the header", async (t) => {
    const page = await openPage(t);
    t.equal(await page.title(), "Bora LLM playground");
    await page.locator("#summary", { hasText: chat.modelName }).waitFor({ timeout: 10_000 });
    t.match(await page.locator("#summary").textContent(), /CPU · \d+ threads? · 0\/2 slots busy · ready/);
    t.match(await page.locator("#system-prompt").inputValue(), /^Eres Mentor Bora/, "system prompt prefilled in Spanish");
    // Every form control has a label a screen reader announces.
    const unlabelled = await page.$$eval("input, textarea", (els) =>
      els.filter((e) => (e as unknown as { labels: unknown[] }).labels.length === 0 && !e.getAttribute("aria-label")).map((e) => e.id));
    t.same(unlabelled, [], "all inputs labelled");
    for (const [name, fg, bg] of await colourPairs(page)) t.ok(contrast(fg, bg) >= 4.5, `light: ${name} contrast ${contrast(fg, bg).toFixed(1)}:1`);
    const missing = await page.request.get(`${base}/no-such-page`);
    t.equal(missing.status(), 404);
    t.match(await missing.json(), { error: { code: "not_found" } }, "unknown paths keep the JSON 404");
      });

  t.test("chat: the answer streams in, matches the API for the same seed, and regenerates identically", async (t) => {
    const page = await openPage(t);
    await page.fill("#max-tokens", "12");
    await page.fill("#temperature", "0.8");
    await page.fill("#seed", "1234");
    // Records every length the answer text passes through, to prove it grew piece by piece.
    await page.evaluate(() => {
      const lengths: number[] = [];
      window.answerLengths = lengths;
      new MutationObserver(() => {
        const text = document.querySelector("#transcript li.assistant:last-child .text");
        if (text) lengths.push(text.textContent?.length ?? 0);
      }).observe(document.getElementById("transcript")!, { subtree: true, childList: true, characterData: true });
    });
    await page.fill("#message", "Hola, ¿qué tal?");
    await page.press("#message", "Enter");
    const meta = lastAnswer(page).locator(".meta");
    await meta.filter({ hasText: "finish:" }).waitFor({ timeout: 60_000 });
    const lengths = await page.evaluate(() => window.answerLengths ?? []);
    const distinct = new Set(lengths.filter((n) => n > 0));
    t.ok(distinct.size >= 3, `the text grew in ${distinct.size} steps before the end`);

    const metaText = (await meta.textContent()) ?? "";
    t.match(metaText, /^(\d+) tokens · (\d+) of (\d+) prompt tokens cached · first token \d+ ms · [\d.]+ tokens\/s · finish: (length|stop)$/);
    const shown = (await lastAnswer(page).locator(".text").textContent()) ?? "";

    // The same request through the API, not streamed: the same seed gives the same text and count.
    const system = await page.locator("#system-prompt").inputValue();
    const api = (await postJson(service.app, "/api/llm/generate", {
      messages: [{ role: "system", content: system }, { role: "user", content: "Hola, ¿qué tal?" }],
      max_new_tokens: 12, temperature: 0.8, top_p: 0.9, seed: 1234, enable_thinking: false,
    })).json() as GenerateResult;
    t.equal(shown, api.answer, "the page shows exactly the service's answer");
    t.ok(metaText.startsWith(`${api.tokens_generated} tokens`), `token count ${api.tokens_generated}`);

    await page.click("#regenerate");
    await lastAnswer(page).locator(".meta").filter({ hasText: "finish:" }).waitFor({ timeout: 60_000 });
    t.equal(await page.locator("#transcript li").count(), 2, "regenerate replaces the last answer");
    t.equal(await lastAnswer(page).locator(".text").textContent(), api.answer, "same seed, same answer");
    t.match(await lastAnswer(page).locator(".meta").textContent(), /[1-9]\d* of \d+ prompt tokens cached/, "the second run reuses the slot's cache");
    await page.screenshot({ path: path.join(screenshots, "chat.png"), fullPage: true });
      });

  t.test("stop: the fetch is aborted and the server stops generating and frees the slot", async (t) => {
    const page = await openPage(t);
    // A generation that would run for thousands of tokens: the end-of-text token is ignored (the page
    // has no such control; the request is amended on its way out).
    await page.route("**/api/llm/generate", async (route) => {
      const body = JSON.parse(route.request().postData() ?? "{}") as Record<string, unknown>;
      await route.continue({ postData: JSON.stringify({ ...body, ignore_eos: true }) });
    });
    await page.fill("#max-tokens", "3500");
    await page.fill("#message", "Cuenta una historia muy larga.");
    const finishedBefore = finishedGenerations;
    await page.click("#send");
    await lastAnswer(page).locator(".text").filter({ hasText: /\S/ }).waitFor({ timeout: 60_000 });
    t.equal(chat.stats().slotsBusy, 1, "one slot generating");
    t.ok(await page.locator("#regenerate").isDisabled(), "regenerate waits while generating");
    await page.click("#stop");
    await lastAnswer(page).locator(".meta", { hasText: "Stopped by you" }).waitFor({ timeout: 5_000 });

    // The server notices the closed connection within a token or so.
    const deadline = Date.now() + 5_000;
    while (chat.stats().slotsBusy > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const metrics = await (await fetch(`${base}/metrics`)).text();
    t.match(metrics, /^bora_slots_busy 0$/m, "/metrics: no slot busy");
    const before = chat.slotsSnapshot().map((s) => s.cachedTokens);
    await new Promise((r) => setTimeout(r, 300));
    t.same(chat.slotsSnapshot().map((s) => s.cachedTokens), before, "no slot's cache grows any more");
    t.ok(Math.max(...before) < 3000, `stopped early: at most ${Math.max(...before)} tokens in a slot`);
    t.equal(finishedGenerations, finishedBefore, "the generation was cancelled, not finished");
    t.notOk(await page.locator("#regenerate").isDisabled(), "regenerate is offered after a stop");
    t.equal(await page.evaluate(() => document.activeElement?.id), "message", "focus goes back to the message box");
    await page.screenshot({ path: path.join(screenshots, "chat-stopped.png"), fullPage: true });
      });

  t.test("errors from the service are shown as the service worded them", async (t) => {
    const page = await openPage(t);
    await page.fill("#max-tokens", "0");
    await page.fill("#message", "Hola");
    await page.click("#send");
    const error = page.locator("#chat-error");
    await error.waitFor({ state: "visible", timeout: 10_000 });
    const api = (await postJson(service.app, "/api/llm/generate", { messages: [{ role: "user", content: "Hola" }], max_new_tokens: 0 })).json() as { error: { message: string; code: string } };
    t.equal(await error.textContent(), `${api.error.message} (HTTP 400, ${api.error.code}, field: max_new_tokens)`);
    t.equal(await page.locator("#transcript li.assistant").count(), 0, "no empty answer is left behind");
    // The question stays; Regenerate asks it again once the setting is fixed.
    await page.fill("#max-tokens", "3");
    await page.click("#regenerate");
    await lastAnswer(page).locator(".meta", { hasText: "finish:" }).waitFor({ timeout: 60_000 });
    t.match(await lastAnswer(page).locator(".meta").textContent(), /^3 tokens · /, "the retry answers");
    t.equal(await page.locator("#transcript li").count(), 2, "one question, one answer");
      });

  t.test("embeddings: three sentences give a drawn similarity matrix", async (t) => {
    const page = await openPage(t);
    await page.focus("#tab-chat");
    await page.keyboard.press("ArrowRight");
    t.equal(await page.getAttribute("#tab-embed", "aria-selected"), "true", "arrow keys move between tabs");
    t.ok(await page.isVisible("#panel-embed"));
    const sentences = ["hola", "buenos días", "verbo irregular"];
    await page.fill("#sentences", sentences.join("\n"));
    await page.click("#embed");
    await page.locator("#heatmap-figure").waitFor({ state: "visible", timeout: 10_000 });

    const pixels = await page.$eval("#heatmap", (canvas) => {
      const c = canvas as unknown as BrowserCanvas;
      const data = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
      let painted = 0;
      let yellow = 0;
      const colours = new Set<number>();
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3]! === 0) continue;
        painted++;
        colours.add((data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!);
        if (data[i]! === 253 && data[i + 1]! === 231 && data[i + 2]! === 37) yellow++;
      }
      return { painted, total: data.length / 4, colours: colours.size, yellow, width: c.width, height: c.height };
    });
    t.ok(pixels.painted > pixels.total * 0.1, `${pixels.painted} of ${pixels.total} pixels painted`);
    t.ok(pixels.colours > 20, `${pixels.colours} colours (cells, labels, legend)`);
    t.ok(pixels.yellow > 300, `${pixels.yellow} pixels of the similarity-1 colour: the diagonal`);

    // The caption names the most similar pair with the value the service's vectors give.
    const { embeddings } = (await postJson(service.app, "/api/llm/embed", { texts: sentences })).json() as EmbedResult;
    const cos = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i]!, 0);
    const pairs = [[0, 1], [0, 2], [1, 2]].map(([i, j]) => ({ i: i!, j: j!, value: cos(embeddings[i!]!, embeddings[j!]!) }));
    const most = pairs.reduce((a, b) => (b.value > a.value ? b : a));
    const caption = (await page.locator("#heatmap-caption").textContent()) ?? "";
    t.ok(caption.startsWith(`Most similar: “${sentences[most.i]}” and “${sentences[most.j]}” (${most.value.toFixed(2)})`), caption);
    t.match(await page.getAttribute("#heatmap", "aria-label"), /^Cosine similarity heat map of 3 sentences\. Most similar/);
    await page.screenshot({ path: path.join(screenshots, "embeddings.png"), fullPage: true });
      });

  t.test("status: models, backend, threads, GPU layers, slots; phone width in dark mode", async (t) => {
    const page = await openPage(t, { width: 390, dark: true });
    await page.click("#tab-status");
    const list = page.locator("#status-list");
    await list.filter({ hasText: chat.modelName }).waitFor({ timeout: 10_000 });
    const text = (await list.textContent()) ?? "";
    const description = chat.describe();
    t.match(text, `Chat model${chat.modelName}`);
    t.match(text, "BackendCPU");
    t.match(text, `Threads${description.threads}`);
    t.match(text, `GPU layers${description.gpuLayers}`);
    t.match(text, "Slots busy0 of 2");
    t.match(text, "Queue0 waiting");
    t.match(text, `Embedding model${service.engines.embed.modelName}`);
    t.equal(await page.locator("#slot-list li").count(), 2);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    t.equal(overflow, 0, "nothing wider than a phone screen");
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    t.equal(background, "rgb(21, 23, 27)", "dark colours when the system asks for them");
    for (const [name, fg, bg] of await colourPairs(page)) t.ok(contrast(fg, bg) >= 4.5, `dark: ${name} contrast ${contrast(fg, bg).toFixed(1)}:1`);
    await page.screenshot({ path: path.join(screenshots, "status-phone-dark.png"), fullPage: true });
    await page.click("#tab-chat");
    t.equal(await page.getAttribute("#settings", "open"), null, "settings start folded on a phone");
    await page.screenshot({ path: path.join(screenshots, "chat-phone-dark.png"), fullPage: true });
    await page.click("#tab-embed");
    await page.click("#embed");
    await page.locator("#heatmap-figure").waitFor({ state: "visible", timeout: 10_000 });
    const embedOverflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    t.equal(embedOverflow, 0, "the heat map fits a phone screen");
    await page.screenshot({ path: path.join(screenshots, "embeddings-phone-dark.png"), fullPage: true });
      });

  t.test("thinking: the reasoning streams apart, collapsed; with an API key set the page asks for it", async (t) => {
    // Where API-key auth is built in, the page must ask for the key before anything works.
    const scriptedBase = await scripted.listen();
    const authRequired = (await fetch(`${scriptedBase}/api/status`)).status === 401;
    const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
    t.teardown(() => context.close());
    const page = await context.newPage();
    page.on("pageerror", (error) => t.fail(`page error: ${error.message}`));
    await page.goto(`${scriptedBase}/`);
    if (authRequired) {
      await page.locator("#key-panel").waitFor({ state: "visible", timeout: 10_000 });
      t.equal(await page.evaluate(() => document.activeElement?.id), "api-key", "the key field has the focus");
      // Whichever error shape the auth layer answers with: its message, word for word.
      const unauthorized = await fetch(`${scriptedBase}/api/status`).then((r) => r.json()) as { error?: string | { message?: string }; message?: string };
      const reason = typeof unauthorized.error === "object" ? unauthorized.error.message : unauthorized.message ?? unauthorized.error;
      t.equal(await page.locator("#key-reason").textContent(), reason, "the service's own reason");
      await page.fill("#api-key", apiKey);
      await page.press("#api-key", "Enter");
      t.ok(await page.locator("#key-panel").isHidden(), "the key panel closes");
    } else {
      t.comment("this build has no API-key auth (LLM_API_KEY ignored): the key prompt is not exercised");
    }
    await page.locator("#summary", { hasText: scripted.engines.chat.modelName }).waitFor({ timeout: 10_000 });

    await page.fill("#temperature", "0");
    await page.check("#thinking");
    await page.fill("#message", "¿Qué significa 'ímihí'?");
    await page.press("#message", "Enter");
    const answer = lastAnswer(page);
    await answer.locator(".meta", { hasText: "finish: stop" }).waitFor({ timeout: 60_000 });
    t.equal(await answer.locator(".text").textContent(), SCRIPTED_OUTPUT.answer, "the answer alone");
    const reasoning = answer.locator("details.reasoning");
    t.ok(await reasoning.isVisible(), "a reasoning section");
    t.equal(await reasoning.getAttribute("open"), null, "collapsed");
    t.equal(await reasoning.locator(".reasoning-text").textContent(), SCRIPTED_OUTPUT.reasoning);
    t.ok(await reasoning.locator(".reasoning-text").isHidden(), "its text hidden until opened");
    await reasoning.locator("summary").click();
    t.ok(await reasoning.locator(".reasoning-text").isVisible(), "a click opens it");
    if (authRequired) t.equal(await page.evaluate(() => sessionStorage.getItem("bora.apiKey")), apiKey, "the key is kept for this tab");
    await page.screenshot({ path: path.join(screenshots, "chat-thinking.png"), fullPage: true });
  });

  t.test("behind a reverse proxy that demands a key, the page asks for it and then works", async (t) => {
    // As an nginx with auth in front of the service would: the page's files are open, the APIs need
    // `Authorization: Bearer <key>` and answer 401 with a JSON reason otherwise.
    const target = new URL(base);
    const reason = "An API key is required: send Authorization: Bearer <key>.";
    const proxy = http.createServer((request, response) => {
      const url = request.url ?? "/";
      const open = url === "/" || url.startsWith("/playground/");
      if (!open && request.headers.authorization !== "Bearer proxy-key") {
        response.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ error: { code: "unauthorized", message: reason } }));
        return;
      }
      const upstream = http.request({ host: target.hostname, port: target.port, path: url, method: request.method, headers: request.headers }, (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      });
      request.pipe(upstream);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    t.teardown(() => new Promise<void>((resolve) => proxy.close(() => resolve())));
    const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
    t.teardown(() => context.close());
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}/`);
    await page.locator("#key-panel").waitFor({ state: "visible", timeout: 10_000 });
    t.equal(await page.locator("#key-reason").textContent(), reason, "the proxy's reason, word for word");
    t.equal(await page.evaluate(() => document.activeElement?.id), "api-key", "the key field has the focus");
    t.equal(await page.locator("#summary").textContent(), "API key needed");
    await page.fill("#api-key", "wrong-key");
    await page.press("#api-key", "Enter");
    await page.locator("#key-panel").waitFor({ state: "visible", timeout: 10_000 });
    await page.fill("#api-key", "proxy-key");
    await page.press("#api-key", "Enter");
    await page.locator("#summary", { hasText: chat.modelName }).waitFor({ timeout: 10_000 });
    t.ok(await page.locator("#key-panel").isHidden(), "a good key closes the panel");
    await page.fill("#max-tokens", "3");
    await page.fill("#message", "Hola");
    await page.press("#message", "Enter");
    await lastAnswer(page).locator(".meta", { hasText: "finish:" }).waitFor({ timeout: 60_000 });
    t.match(await lastAnswer(page).locator(".meta").textContent(), /^3 tokens · /, "a streamed answer through the proxy, key sent");
    t.equal(await page.evaluate(() => sessionStorage.getItem("bora.apiKey")), "proxy-key", "kept for this tab");
  });

  t.test("GET /api/status is the JSON the panel reads", async (t) => {
    const response = await service.app.inject({ method: "GET", url: "/api/status" });
    t.equal(response.statusCode, 200);
    const body = response.json() as Record<string, Record<string, unknown>>;
    t.match(body, {
      status: "ready",
      runtime: { backend: "cpu", threads: service.engines.runtime.cpu.threads },
      chat: { model: chat.modelName, slots_total: 2, slots_busy: 0, queued: 0, gpu_layers: chat.describe().gpuLayers },
      embedding: { model: service.engines.embed.modelName, dimension: service.engines.embed.dimension },
    });
    t.equal((body.chat!.slots as unknown[]).length, 2);
    const doc = (await service.app.inject({ method: "GET", url: "/docs/json" })).json() as { paths: Record<string, unknown> };
    t.ok("/api/status" in doc.paths, "documented in /docs");
    t.same(Object.keys(doc.paths).filter((p) => p === "/" || p.startsWith("/playground")), [], "the page's files are not API routes in /docs");
  });
}
