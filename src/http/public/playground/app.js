// @ts-check
// The playground page: chat (streamed through the seed API), embeddings heat map, status, API key.
import { ApiClient, ServiceError, toServiceError } from "./api.js";
import { cosineMatrix, describePairs, drawHeatmap } from "./heatmap.js";

const KEY_STORAGE = "bora.apiKey";
const STATUS_POLL_MS = 2000;

const api = new ApiClient("", () => sessionStorage.getItem(KEY_STORAGE));

/**
 * @template {HTMLElement} T
 * @param {string} id
 * @param {{ new (): T, prototype: T }} type
 * @returns {T}
 */
function byId(id, type) {
  const element = document.getElementById(id);
  if (!(element instanceof type)) throw new Error(`#${id} is missing or not a ${type.name}`);
  return element;
}

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 */
function make(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}

// ---------------------------------------------------------------------------------------------
// Errors and the API key

const keyPanel = byId("key-panel", HTMLElement);
const keyInput = byId("api-key", HTMLInputElement);

/** A 401 opens the key field, with the service's own reason. */
function askForKey(/** @type {string} */ reason) {
  byId("key-reason", HTMLElement).textContent = reason;
  keyPanel.hidden = false;
  keyInput.focus();
}

/**
 * Shows an error where it happened, in the service's words.
 * @param {HTMLElement} target
 * @param {unknown} error
 */
function showError(target, error) {
  let message = error instanceof Error ? error.message : String(error);
  if (error instanceof ServiceError) {
    if (error.status === 401) askForKey(error.message);
    const details = [error.status > 0 ? `HTTP ${error.status}` : "", error.code ?? "", error.field ? `field: ${error.field}` : ""].filter(Boolean);
    if (details.length > 0) message = `${error.message} (${details.join(", ")})`;
  }
  target.textContent = message;
  target.hidden = false;
}

/** @param {HTMLElement} target */
function clearError(target) {
  target.hidden = true;
  target.textContent = "";
}

byId("key-form", HTMLFormElement).addEventListener("submit", (event) => {
  event.preventDefault();
  const key = keyInput.value.trim();
  if (key === "") return;
  sessionStorage.setItem(KEY_STORAGE, key);
  keyInput.value = "";
  keyPanel.hidden = true;
  for (const id of ["chat-error", "embed-error", "status-error"]) clearError(byId(id, HTMLElement));
  void refreshStatus();
  byId("message", HTMLTextAreaElement).focus();
});
byId("key-forget", HTMLButtonElement).addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  keyInput.value = "";
  keyInput.focus();
});

// ---------------------------------------------------------------------------------------------
// Tabs (WAI-ARIA tabs pattern: arrow keys, Home and End move between tabs)

const tabs = [...document.querySelectorAll('[role="tab"]')].filter((t) => t instanceof HTMLButtonElement);
/** @type {ReturnType<typeof setInterval> | undefined} */
let statusTimer;

/** @param {HTMLButtonElement} tab */
function selectTab(tab) {
  for (const other of tabs) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    const panel = document.getElementById(other.getAttribute("aria-controls") ?? "");
    if (panel) panel.hidden = !selected;
  }
  clearInterval(statusTimer);
  statusTimer = undefined;
  if (tab.id === "tab-status") {
    void refreshStatus();
    statusTimer = setInterval(() => void refreshStatus(), STATUS_POLL_MS);
  }
  if (tab.id === "tab-embed" && lastHeatmap) redrawHeatmap();
}

for (const tab of tabs) {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const index = tabs.indexOf(tab);
    const next = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: tabs.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    const target = tabs[(next + tabs.length) % tabs.length];
    if (target) {
      selectTab(target);
      target.focus();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Status

/**
 * The parts of GET /api/status the page reads (src/http/schemas/status.ts is the contract).
 * @typedef {{
 *   status: string, uptime_s: number,
 *   runtime?: { backend: string, threads: number, threads_source: string },
 *   binding?: { loaded: string | null, build: { id: string, flavor: string } | null, fast_build: { state: string, reason: string, phase?: string, percent?: number } },
 *   chat?: { model: string, gpu_layers: number, threads: number, context_per_slot: number, slots_total: number,
 *            slots_busy: number, queued: number, queue_capacity: number, slots: { id: number, busy: boolean, cached_tokens: number }[] },
 *   embedding?: { model: string, backend: string, dimension: number, max_tokens_per_text: number },
 *   models?: { name: string, kind: string, default: boolean, weights_bytes: number, dimension?: number, max_tokens?: number }[],
 * }} Status
 */

const statusError = byId("status-error", HTMLElement);

async function refreshStatus() {
  try {
    const status = /** @type {Status} */ (await api.json("/api/status"));
    clearError(statusError);
    renderStatus(status);
    // Opened while the models load: keep the header current until they are ready.
    if (status.status === "loading" && statusTimer === undefined) setTimeout(() => void refreshStatus(), STATUS_POLL_MS);
  } catch (error) {
    showError(statusError, error);
    byId("summary", HTMLElement).textContent = error instanceof ServiceError && error.status === 401 ? "API key needed" : "Status unavailable";
  }
}

/** @param {Status} s */
function renderStatus(s) {
  const backend = s.runtime ? s.runtime.backend.toUpperCase() : "?";
  byId("summary", HTMLElement).textContent = s.chat
    ? `${s.chat.model} · ${backend} · ${plural(s.runtime?.threads ?? s.chat.threads, "thread")} · ${s.chat.slots_busy}/${s.chat.slots_total} slots busy · ${s.status}`
    : `Models ${s.status}…`;

  /** @type {[string, string][]} */
  const rows = [["Service", `${s.status}, up ${formatDuration(s.uptime_s)}`]];
  if (s.runtime) rows.push(["Backend", backend], ["Threads", `${s.runtime.threads} (${s.runtime.threads_source})`]);
  if (s.binding) {
    // The llama.cpp binding, and the fast build made for this machine (docs/native-build.md).
    const fast = s.binding.fast_build;
    const progress = fast.state === "building" && fast.phase ? ` (${fast.phase}${fast.percent === undefined ? "" : ` ${fast.percent}%`})` : "";
    rows.push(["llama.cpp binding", `${s.binding.build ? `${s.binding.build.flavor} fast build` : (s.binding.loaded ?? "loading")} · fast build: ${fast.state}${progress}`]);
  }
  if (s.chat) {
    rows.push(
      ["Chat model", s.chat.model],
      ["GPU layers", String(s.chat.gpu_layers)],
      ["Context per slot", `${s.chat.context_per_slot} tokens`],
      ["Slots busy", `${s.chat.slots_busy} of ${s.chat.slots_total}`],
      ["Queue", `${s.chat.queued} waiting (room for ${s.chat.queue_capacity})`],
    );
  }
  if (s.embedding) {
    rows.push(["Embedding model", `${s.embedding.model} (${s.embedding.dimension} dimensions, ${s.embedding.max_tokens_per_text} tokens per text)`], ["Embedder", s.embedding.backend]);
  }
  // Every served model: its kind, whether it is the default of its kind, and its weights' memory.
  for (const m of s.models ?? []) {
    const facts = [m.kind + (m.default ? ", default" : ""), `${(m.weights_bytes / 2 ** 20).toFixed(0)} MiB`, ...(m.dimension ? [`${m.dimension} dimensions`] : [])];
    rows.push([`Model ${m.name}`, facts.join(" · ")]);
  }
  renderEmbedModels(s.models ?? []);
  const list = byId("status-list", HTMLElement);
  list.replaceChildren(...rows.flatMap(([term, value]) => [make("dt", "", term), make("dd", "", value)]));

  const slots = byId("slot-list", HTMLElement);
  slots.replaceChildren(...(s.chat?.slots ?? []).map((slot) =>
    make("li", slot.busy ? "slot busy" : "slot", `Slot ${slot.id}: ${slot.busy ? "generating" : "idle"} · ${slot.cached_tokens} tokens cached`)));
}

/**
 * @param {number} count
 * @param {string} noun
 */
function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/** @param {number} seconds */
function formatDuration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

byId("refresh-status", HTMLButtonElement).addEventListener("click", () => void refreshStatus());

// ---------------------------------------------------------------------------------------------
// Chat

/** @typedef {{ role: "user" | "assistant", content: string, item: HTMLLIElement }} Turn */
/**
 * The `done` event of POST /api/llm/generate (GenerateResponse in src/http/schemas/llm.ts).
 * @typedef {{ answer: string, tokens_generated: number, finish_reason: string,
 *   usage: { prompt_tokens: number, cached_prompt_tokens: number, completion_tokens: number } }} GenerateDone
 */

/** @type {Turn[]} */
const turns = [];
/** @type {AbortController | null} */
let running = null;

const transcript = byId("transcript", HTMLOListElement);
const messageBox = byId("message", HTMLTextAreaElement);
const sendButton = byId("send", HTMLButtonElement);
const stopButton = byId("stop", HTMLButtonElement);
const regenerateButton = byId("regenerate", HTMLButtonElement);
const chatError = byId("chat-error", HTMLElement);
const chatStatus = byId("chat-status", HTMLElement);

function updateButtons() {
  const busy = running !== null;
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
  // Also offered after a failed answer (the question is then the last turn): it asks again.
  regenerateButton.disabled = busy || turns.length === 0;
  transcript.setAttribute("aria-busy", String(busy));
}

/**
 * @param {"user" | "assistant"} role
 * @param {string} text
 */
function addMessage(role, text) {
  const item = /** @type {HTMLLIElement} */ (make("li", `message ${role}`));
  item.append(make("span", "who", role === "user" ? "You" : "Bora"));
  if (role === "assistant") {
    const reasoning = /** @type {HTMLDetailsElement} */ (make("details", "reasoning"));
    reasoning.hidden = true;
    reasoning.append(make("summary", "", "Reasoning"), make("div", "reasoning-text"));
    item.append(reasoning);
  }
  item.append(make("div", "text", text));
  if (role === "assistant") item.append(make("p", "meta"));
  transcript.append(item);
  /** @type {Turn} */
  const turn = { role, content: text, item };
  turns.push(turn);
  return turn;
}

/**
 * Reads a number field; empty leaves the service's default in place.
 * @param {string} id
 */
function numberField(id) {
  const value = byId(id, HTMLInputElement).valueAsNumber;
  return Number.isNaN(value) ? undefined : value;
}

function requestBody() {
  const system = byId("system-prompt", HTMLTextAreaElement).value.trim();
  const messages = [
    ...(system ? [{ role: "system", content: system }] : []),
    ...turns.map((t) => ({ role: t.role, content: t.content })),
  ];
  return {
    messages,
    stream: true,
    enable_thinking: byId("thinking", HTMLInputElement).checked,
    temperature: numberField("temperature"),
    top_p: numberField("top-p"),
    max_new_tokens: numberField("max-tokens"),
    seed: numberField("seed"),
  };
}

let scrollPending = false;
/** Keeps the newest text in view without a layout per token. */
function scrollToEnd(/** @type {HTMLElement} */ item) {
  if (scrollPending) return;
  scrollPending = true;
  requestAnimationFrame(() => {
    scrollPending = false;
    item.scrollIntoView({ block: "end", behavior: "instant" });
  });
}

/** Streams the model's answer to the conversation so far into a new assistant message. */
async function generate() {
  clearError(chatError);
  const body = requestBody();
  const turn = addMessage("assistant", "");
  const { item } = turn;
  item.classList.add("streaming");
  const text = /** @type {HTMLElement} */ (item.querySelector(".text"));
  const reasoning = /** @type {HTMLDetailsElement} */ (item.querySelector(".reasoning"));
  const reasoningText = /** @type {HTMLElement} */ (item.querySelector(".reasoning-text"));
  const summary = /** @type {HTMLElement} */ (reasoning.querySelector("summary"));
  const meta = /** @type {HTMLElement} */ (item.querySelector(".meta"));
  const controller = new AbortController();
  running = controller;
  updateButtons();
  chatStatus.textContent = "Bora is answering…";

  const started = performance.now();
  /** @type {number | null} */
  let firstTokenAt = null;
  let pieces = 0;
  /** @type {GenerateDone | null} */
  let done = null;
  try {
    for await (const { event, data } of api.stream("/api/llm/generate", body, controller.signal)) {
      if (event === "delta" || event === "reasoning") {
        firstTokenAt ??= performance.now();
        pieces++;
        const piece = /** @type {{ text: string }} */ (data).text;
        if (event === "delta") {
          turn.content += piece;
          text.textContent = turn.content;
        } else {
          reasoning.hidden = false;
          summary.textContent = "Reasoning…";
          reasoningText.textContent += piece;
        }
        scrollToEnd(item);
      } else if (event === "done") {
        done = /** @type {GenerateDone} */ (data);
      } else if (event === "error") {
        throw toServiceError(data, 200);
      }
    }
    if (done === null) throw new ServiceError(0, "The stream ended before the answer was complete.", "stream_incomplete", undefined);
    const finished = performance.now();
    summary.textContent = "Reasoning";
    meta.textContent = answerStats(done, started, firstTokenAt, finished);
    chatStatus.textContent = `Answer complete: ${done.tokens_generated} tokens.`;
  } catch (error) {
    summary.textContent = "Reasoning";
    if (controller.signal.aborted) {
      const ttft = firstTokenAt === null ? "" : ` · first token ${Math.round(firstTokenAt - started)} ms`;
      meta.textContent = `Stopped by you after ${pieces} streamed pieces${ttft}`;
      item.classList.add("stopped");
      chatStatus.textContent = "Stopped.";
    } else {
      showError(chatError, error);
      meta.textContent = "Failed (see the error below)";
      item.classList.add("failed");
      chatStatus.textContent = "The answer failed.";
      // A failed answer with no text is not part of the conversation.
      if (turn.content === "") {
        turns.pop();
        item.remove();
      }
    }
  } finally {
    item.classList.remove("streaming");
    if (running === controller) running = null;
    const hadFocus = document.activeElement === stopButton;
    updateButtons();
    if (hadFocus) messageBox.focus();
    void refreshStatus();
    // After a stop the service frees the slot when it sees the closed connection, a moment later.
    setTimeout(() => void refreshStatus(), 1000);
  }
}

/**
 * "42 tokens · 30 of 45 prompt tokens cached · first token 120 ms · 35.1 tokens/s · stop"
 * @param {GenerateDone} done
 * @param {number} started
 * @param {number | null} firstTokenAt
 * @param {number} finished
 */
function answerStats(done, started, firstTokenAt, finished) {
  const parts = [
    `${done.tokens_generated} tokens`,
    `${done.usage.cached_prompt_tokens} of ${done.usage.prompt_tokens} prompt tokens cached`,
  ];
  if (firstTokenAt !== null) {
    parts.push(`first token ${Math.round(firstTokenAt - started)} ms`);
    // Decode speed: the tokens after the first, over the time after the first.
    const decodeSeconds = (finished - firstTokenAt) / 1000;
    if (done.tokens_generated > 1 && decodeSeconds > 0) parts.push(`${((done.tokens_generated - 1) / decodeSeconds).toFixed(1)} tokens/s`);
  }
  parts.push(`finish: ${done.finish_reason}`);
  return parts.join(" · ");
}

byId("chat-form", HTMLFormElement).addEventListener("submit", (event) => {
  event.preventDefault();
  const content = messageBox.value.trim();
  if (content === "" || running !== null) return;
  addMessage("user", content);
  messageBox.value = "";
  void generate();
});

messageBox.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    byId("chat-form", HTMLFormElement).requestSubmit();
  }
});

stopButton.addEventListener("click", () => running?.abort());

regenerateButton.addEventListener("click", () => {
  if (running !== null || turns.length === 0) return;
  if (turns.at(-1)?.role === "assistant") turns.pop()?.item.remove();
  void generate();
});

// Escape stops a running answer from anywhere on the page.
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && running !== null) {
    event.preventDefault();
    running.abort();
  }
});

byId("clear", HTMLButtonElement).addEventListener("click", () => {
  running?.abort();
  turns.length = 0;
  transcript.replaceChildren();
  clearError(chatError);
  updateButtons();
  messageBox.focus();
});

// ---------------------------------------------------------------------------------------------
// Embeddings

const embedModel = byId("embed-model", HTMLSelectElement);

/**
 * The embedding models to choose from (the first option, empty, is the service's default).
 * @param {NonNullable<Status["models"]>} models
 */
function renderEmbedModels(models) {
  const names = models.filter((m) => m.kind === "embedding").map((m) => m.name);
  const current = [...embedModel.options].slice(1).map((o) => o.value);
  if (names.join("\n") === current.join("\n")) return;
  const chosen = embedModel.value;
  embedModel.replaceChildren(embedModel.options[0] ?? make("option", "", "(default)"), ...names.map((name) => {
    const option = /** @type {HTMLOptionElement} */ (make("option", "", name));
    option.value = name;
    return option;
  }));
  embedModel.value = names.includes(chosen) ? chosen : "";
}

/** @type {{ labels: string[], matrix: number[][] } | null} */
let lastHeatmap = null;
const embedError = byId("embed-error", HTMLElement);
const embedButton = byId("embed", HTMLButtonElement);
const heatmapFigure = byId("heatmap-figure", HTMLElement);
const canvas = byId("heatmap", HTMLCanvasElement);

function redrawHeatmap() {
  if (lastHeatmap === null || heatmapFigure.hidden) return;
  const style = getComputedStyle(document.body);
  drawHeatmap(canvas, lastHeatmap.labels, lastHeatmap.matrix, {
    text: style.getPropertyValue("--text").trim() || "#000",
    muted: style.getPropertyValue("--muted").trim() || "#555",
    font: style.fontFamily,
  });
}

byId("embed-form", HTMLFormElement).addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError(embedError);
  const labels = byId("sentences", HTMLTextAreaElement).value.split("\n").map((s) => s.trim()).filter(Boolean);
  if (labels.length < 2) {
    showError(embedError, new Error("Write at least two sentences, one per line."));
    return;
  }
  embedButton.disabled = true;
  try {
    const body = embedModel.value === "" ? { texts: labels } : { texts: labels, model: embedModel.value };
    const result = /** @type {{ embeddings: number[][] }} */ (await api.json("/api/llm/embed", body));
    const matrix = cosineMatrix(result.embeddings);
    lastHeatmap = { labels, matrix };
    heatmapFigure.hidden = false;
    redrawHeatmap();
    const { most, least } = describePairs(labels, matrix);
    const sentence = most && least
      ? `Most similar: “${most.a}” and “${most.b}” (${most.value.toFixed(2)}). Least similar: “${least.a}” and “${least.b}” (${least.value.toFixed(2)}).`
      : "";
    canvas.setAttribute("aria-label", `Cosine similarity heat map of ${labels.length} sentences. ${sentence}`);
    byId("heatmap-caption", HTMLElement).textContent = sentence;
  } catch (error) {
    showError(embedError, error);
  } finally {
    embedButton.disabled = false;
  }
});

new ResizeObserver(() => redrawHeatmap()).observe(byId("panel-embed", HTMLElement));
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => redrawHeatmap());

// ---------------------------------------------------------------------------------------------

// On a phone the settings would push the conversation off screen: start them folded.
if (matchMedia("(max-width: 30rem)").matches) byId("settings", HTMLDetailsElement).open = false;
updateButtons();
void refreshStatus();
