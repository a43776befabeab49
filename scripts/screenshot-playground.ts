// Makes docs/playground.png, the README's picture of the playground: the scripted test model (it
// thinks, then answers in Spanish, whatever the prompt) served on a free port, the page in headless
// chromium, one question with thinking on. Needs chromium (apt-get install chromium); pngquant, when
// present, makes the file smaller. Usage: npx tsx scripts/screenshot-playground.ts
import { execFileSync } from "node:child_process";
import { statSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { projectRoot } from "../src/config.js";
import { startTestService } from "../test/helpers/service.js";
import { ensureTestModels } from "./make-test-models.js";

const output = path.join(projectRoot, "docs", "playground.png");
const service = await startTestService({ LLM_MODEL: (await ensureTestModels()).scripted, LLM_THREADS: "1" });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 860, height: 640 } });
  await page.goto(`${await service.listen()}/`);
  await page.locator("#summary", { hasText: "ready" }).waitFor();
  await page.fill("#temperature", "0");
  await page.check("#thinking");
  await page.fill("#message", "¿Qué significa «ímihí»?");
  await page.press("#message", "Enter");
  await page.locator("#transcript .meta", { hasText: "finish:" }).waitFor({ timeout: 60_000 });
  await page.locator("#transcript details.reasoning summary").click();
  await page.fill("#message", "");
  await page.locator("#message").blur();
  await page.screenshot({ path: output, fullPage: true });
} finally {
  await browser.close();
  await service.close();
}
try {
  execFileSync("pngquant", ["--force", "--skip-if-larger", "--quality", "60-90", "--output", output, output]);
} catch {
  console.log("pngquant not available (or no gain): the PNG is left as chromium wrote it");
}
console.log(`${output}: ${Math.round(statSync(output).size / 1024)} KiB`);
