// Scale-out for real on loopback: two service processes (what `npm start` and the containers run) behind
// Debian's nginx running the project's own deploy/nginx/nginx.conf. Concurrent generate, stream and embed
// requests go through nginx; one replica is killed (SIGKILL) while generations run on both; then:
// - everything that was not in flight on the killed replica succeeded (before, during and after the kill),
// - both replicas served traffic while up,
// - no generation that had started on the killed replica was re-sent to the survivor (nginx's X-Upstream
//   lists every replica a request was sent to; each replica's /metrics counts the generations it ran),
// - and a POST whose connect is refused (the dead replica) is retried on the next one.
// The second test: conversations routed by X-Session-Id keep their replica (prompt cache share measured
// against least_conn and round robin), and a replica killed mid-conversation loses no turn.
import t from "tap";
import { ensureTestModels } from "../scripts/make-test-models.js";
import { LlmClient, SESSION_HEADER, type GenerateResponse } from "../src/client/index.js";
import { findNginx, startNginx, type NginxProcess } from "./helpers/nginx.js";
import { startServiceProcess, type ServiceProcess } from "./helpers/process.js";

const nginxBinary = findNginx();
const skip = nginxBinary === null ? "nginx is not installed (.ci/run installs Debian's nginx-light; `apt-get install nginx-light`)" : false;

type Kind = "generate" | "stream" | "embed";
type Outcome = {
  kind: Kind;
  phase: "both up" | "at the kill" | "after the kill";
  status: number;
  /** nginx's X-Upstream: every replica the request was sent to, in order. */
  upstreams: string[];
  /** generate/embed: a JSON body of the right shape; stream: a `done` event as the last event. */
  ok: boolean;
  error?: string;
};

const message = [{ role: "user", content: "Cuéntame algo sobre Madrid" }];

function upstreamsOf(response: Response): string[] {
  return (response.headers.get("x-upstream") ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
}

/** Never throws: a refused or reset connection is an outcome like any other. */
async function settle(kind: Kind, phase: Outcome["phase"], run: () => Promise<Outcome>): Promise<Outcome> {
  try {
    return await run();
  } catch (e) {
    return { kind, phase, status: 0, upstreams: [], ok: false, error: (e as Error).message };
  }
}

function generate(base: string, phase: Outcome["phase"], maxTokens: number): Promise<Outcome> {
  return settle("generate", phase, async () => {
    const response = await fetch(`${base}/api/llm/generate`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: message, max_new_tokens: maxTokens, temperature: 0, ignore_eos: true }),
    });
    const body = await response.json() as { tokens_generated?: number };
    return { kind: "generate", phase, status: response.status, upstreams: upstreamsOf(response), ok: response.status === 200 && body.tokens_generated === maxTokens };
  });
}

function embed(base: string, phase: Outcome["phase"]): Promise<Outcome> {
  return settle("embed", phase, async () => {
    const response = await fetch(`${base}/api/llm/embed`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ texts: ["hola", "¿qué tal?", "buenos días"] }),
    });
    const body = await response.json() as { embeddings?: number[][] };
    return { kind: "embed", phase, status: response.status, upstreams: upstreamsOf(response), ok: response.status === 200 && body.embeddings?.length === 3 };
  });
}

/** A streamed generation; `started` resolves at its first SSE event (the generation is running). */
function stream(base: string, phase: Outcome["phase"], maxTokens: number): { started: Promise<string[]>; done: Promise<Outcome> } {
  let markStarted!: (upstreams: string[]) => void;
  const started = new Promise<string[]>((resolve) => { markStarted = resolve; });
  const done = settle("stream", phase, async (): Promise<Outcome> => {
    const response = await fetch(`${base}/api/llm/generate`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: message, max_new_tokens: maxTokens, temperature: 0, ignore_eos: true, stream: true }),
    });
    const upstreams = upstreamsOf(response);
    let text = "";
    let error: string | undefined;
    try {
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        text += Buffer.from(chunk).toString("utf8");
        if (text.includes("event: ")) markStarted(upstreams);
      }
    } catch (e) {
      error = (e as Error).message;
    }
    markStarted(upstreams);
    const events = [...text.matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    const doneData = /event: done\ndata: (.*)\n/.exec(text)?.[1];
    const ok = response.status === 200 && error === undefined && events.at(-1) === "done" &&
      (JSON.parse(doneData ?? "{}") as { tokens_generated?: number }).tokens_generated === maxTokens;
    return { kind: "stream", phase, status: response.status, upstreams, ok, ...(error !== undefined ? { error } : {}) };
  }).finally(() => markStarted([]));
  return { started, done };
}

/** Requests the replica's /metrics counted for a route, all statuses together. */
async function servedByReplica(replica: string, route: string): Promise<number> {
  const text = await (await fetch(`http://${replica}/metrics`)).text();
  let total = 0;
  for (const m of text.matchAll(/^bora_http_requests_total\{([^}]*)\} (\d+)$/gm)) {
    if (m[1]!.includes(`route="${route}"`)) total += Number(m[2]);
  }
  return total;
}

async function slotsInUse(replica: string): Promise<number> {
  const body = await (await fetch(`http://${replica}/ready`)).json() as { slots?: { busy: number; queued: number } };
  return (body.slots?.busy ?? 0) + (body.slots?.queued ?? 0);
}

t.test("two replicas behind nginx: balance, a replica killed mid-run, no generation re-sent", { skip }, async (t) => {
  const models = await ensureTestModels();
  const env = { LLM_MODEL: models.chat, EMBED_MODEL: models.embed, LLM_CONTEXT_SIZE: "1024", LLM_PARALLEL: "2", MODEL_DOWNLOAD: "false",
    // One decode thread each: two replicas share the machine's cores, as they would share a node.
    LLM_THREADS: "1" };
  const replicas: ServiceProcess[] = [startServiceProcess(env), startServiceProcess(env)];
  let nginx: NginxProcess | null = null;
  let nginxAfterKill: NginxProcess | null = null;
  t.teardown(async () => {
    for (const r of replicas) r.child.kill("SIGKILL");
    await nginx?.stop();
    await nginxAfterKill?.stop();
  });
  const addresses = await Promise.all(replicas.map(async (r) => /http:\/\/([^"]+)/.exec(await r.waitForLine(/Server listening at/))![1]!));
  await Promise.all(replicas.map((r) => r.waitForLine(/"msg":"ready"/, 120_000)));
  nginx = await startNginx(nginxBinary!, addresses);
  const base = `http://127.0.0.1:${nginx.port}`;
  const [victim, survivor] = addresses as [string, string];

  // 1. Both up: a concurrent mix, every request answered by exactly one replica, both replicas used.
  const phase1 = await Promise.all([
    ...Array.from({ length: 2 }, () => generate(base, "both up", 4)),
    ...Array.from({ length: 2 }, () => stream(base, "both up", 4).done),
    ...Array.from({ length: 3 }, () => embed(base, "both up")),
  ]);
  t.same(phase1.filter((o) => !o.ok), [], "every request succeeded with both replicas up");
  t.ok(phase1.every((o) => o.upstreams.length === 1), "each was sent to one replica");
  t.same([...new Set(phase1.map((o) => o.upstreams[0]))].sort(), [...addresses].sort(), "both replicas got traffic");
  for (const address of addresses) {
    const generations = phase1.filter((o) => o.kind !== "embed" && o.upstreams[0] === address).length;
    t.equal(await servedByReplica(address, "/api/llm/generate"), generations, `${address} ran exactly the generations nginx sent it`);
    t.equal(await servedByReplica(address, "/api/llm/embed"), phase1.filter((o) => o.kind === "embed" && o.upstreams[0] === address).length);
  }

  // 2. Long generations on both replicas (two streams, two plain), then the victim dies mid-generation.
  // Sent back to back: least_conn gives each replica one stream and one plain generation.
  const longTokens = 120;
  const streams = [stream(base, "at the kill", longTokens), stream(base, "at the kill", longTokens)];
  const plain = [generate(base, "at the kill", longTokens), generate(base, "at the kill", longTokens)];
  const streamUpstreams = await Promise.all(streams.map((s) => s.started));
  t.not(streamUpstreams[0]![0], streamUpstreams[1]![0], "the two streams run on different replicas");
  // Wait (bounded) until all four generations hold a slot or a queue place on one of the replicas.
  let inUse = [0, 0];
  for (let i = 0; i < 400; i++) {
    inUse = await Promise.all(addresses.map(slotsInUse));
    if (inUse[0]! + inUse[1]! === 4) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  replicas[0]!.child.kill("SIGKILL");
  await replicas[0]!.exited;
  t.equal(inUse[0]! + inUse[1]!, 4, `all four long generations were running or queued at the kill (${victim}: ${inUse[0]}, ${survivor}: ${inUse[1]})`);
  t.ok(inUse[0]! >= 1, "the killed replica had generations in flight");

  // 3. After the kill: a new concurrent mix, all of it must succeed on the survivor.
  const phase3 = await Promise.all([
    ...Array.from({ length: 2 }, () => generate(base, "after the kill", 4)),
    ...Array.from({ length: 2 }, () => stream(base, "after the kill", 4).done),
    ...Array.from({ length: 2 }, () => embed(base, "after the kill")),
  ]);
  const phase2 = await Promise.all([...streams.map((s) => s.done), ...plain]);

  const onVictim = phase2.filter((o) => o.upstreams.includes(victim));
  const onSurvivor = phase2.filter((o) => !o.upstreams.includes(victim));
  t.same(onSurvivor.filter((o) => !o.ok), [], "the generations running on the survivor finished");
  for (const o of onVictim) t.same(o.upstreams, [victim], `a ${o.kind} sent to the killed replica was not re-sent to the survivor`);
  // A generation on the victim either finished in the instant between the slot count and the kill, or was
  // cut; at least one was cut (120 tokens take far longer than that instant), and a cut one is a failure.
  const cut = onVictim.filter((o) => !o.ok);
  t.ok(cut.length >= 1, `the kill cut ${cut.length} of the ${onVictim.length} generations on the killed replica`);
  for (const o of cut) {
    if (o.kind === "generate") t.equal(o.status, 502, "nginx answers the cut plain generation with 502 (JSON)");
    if (o.kind === "stream") t.ok(o.error !== undefined, "the cut stream ends with a transport error, no `done`");
  }
  t.same(phase3.filter((o) => !o.ok), [], "every request after the kill succeeded");
  t.ok(phase3.every((o) => o.upstreams.at(-1) === survivor), "and was answered by the survivor");

  // Each generation the survivor ran is one a client received from it: nothing was replayed there.
  const all = [...phase1, ...phase2, ...phase3];
  const toSurvivor = all.filter((o) => o.kind !== "embed" && o.upstreams.at(-1) === survivor).length;
  t.equal(await servedByReplica(survivor, "/api/llm/generate"), toSurvivor, "the survivor's /metrics count equals the generations answered from it");

  // 4. A connect that is refused is retried on the next replica, POST included: a fresh nginx (no failure
  // marks yet) whose first upstream is the dead replica. Two requests one after the other: the first
  // tie-break goes to the first upstream, so at least one of them meets the refused connect.
  nginxAfterKill = await startNginx(nginxBinary!, [victim, survivor]);
  const retried = [
    await generate(`http://127.0.0.1:${nginxAfterKill.port}`, "after the kill", 4),
    await generate(`http://127.0.0.1:${nginxAfterKill.port}`, "after the kill", 4),
  ];
  t.same(retried.filter((o) => !o.ok), [], "both succeeded");
  t.ok(retried.some((o) => o.upstreams.join(" ") === `${victim} ${survivor}`), "a refused connect was retried on the survivor");
});

// ------------------------------------------------------------------------------------------ affinity
// 8 conversations of 6 turns through nginx, each turn's history growing on the last, as the app's backend
// sends them: with an X-Session-Id (the typed client's sessionId) and without. The measurements (cached
// prompt share, TTFT p50) go to the test's comments; docs/operating.md has a run's numbers.

const CONVERSATIONS = 8;
const TURNS = 6;
const ANSWER_TOKENS = 6;

/** A system prompt of ~400 tokens that no other conversation (or run) shares. */
function systemPrompt(run: string, conversation: number): string {
  const words = Array.from({ length: 64 }, (_, i) => `tema${(conversation * 7919 + i * 104729) % 100_003}`);
  return `Eres Mentor Bora (${run}, conversación ${conversation}). Temas de hoy: ${words.join(" ")}.`;
}

type Turn = { session: string; turn: number; upstreams: string[]; ttftMs: number | null; promptTokens: number; cachedTokens: number; ok: boolean; error?: string };

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** The typed client over fetch, remembering which replica(s) nginx sent each session's requests to. */
function recordingClient(base: string, seen: Map<string, string[][]>, retries: { n: number }) {
  const recordingFetch: typeof fetch = async (input, init) => {
    const session = new Headers(init?.headers).get(SESSION_HEADER) ?? "";
    const list = seen.get(session) ?? [];
    seen.set(session, list);
    const response = await fetch(input, init);
    list.push(upstreamsOf(response));
    return response;
  };
  return new LlmClient({ baseUrl: base, fetch: recordingFetch, retry: { attempts: 4, baseDelayMs: 50 }, onRetry: () => { retries.n++; } });
}

async function converse(client: LlmClient, run: string, conversation: number, options: { session: boolean; stream: boolean; beforeTurn?: (turn: number) => Promise<void> }): Promise<Turn[]> {
  const session = `${run}-${conversation}`;
  const messages: { role: "system" | "user" | "assistant"; content: string }[] = [{ role: "system", content: systemPrompt(run, conversation) }];
  const turns: Turn[] = [];
  for (let turn = 0; turn < TURNS; turn++) {
    await options.beforeTurn?.(turn);
    messages.push({ role: "user", content: `Pregunta ${turn + 1}: ¿qué más sabes del tema ${turn + 1}?` });
    const request = { messages: [...messages], max_new_tokens: ANSWER_TOKENS, temperature: 0, ignore_eos: true };
    const call = options.session ? { sessionId: session } : {};
    const sent = performance.now();
    let ttftMs: number | null = null;
    try {
      let response: GenerateResponse | undefined;
      if (options.stream) {
        for await (const event of client.stream(request, call)) {
          if (event.type === "delta" && ttftMs === null) ttftMs = performance.now() - sent;
          if (event.type === "done") response = event.response;
        }
      } else {
        response = await client.generate(request, call);
      }
      messages.push({ role: "assistant", content: response!.answer });
      turns.push({ session, turn, upstreams: [], ttftMs, promptTokens: response!.usage.prompt_tokens, cachedTokens: response!.usage.cached_prompt_tokens, ok: response!.tokens_generated === ANSWER_TOKENS });
    } catch (error) {
      turns.push({ session, turn, upstreams: [], ttftMs, promptTokens: 0, cachedTokens: 0, ok: false, error: (error as Error).message });
      messages.push({ role: "assistant", content: "…" });
    }
  }
  return turns;
}

function summary(turns: readonly Turn[]) {
  // The first turn of a conversation is cold everywhere: the share counts turns 2..6, where affinity matters.
  const later = turns.filter((t) => t.turn > 0 && t.ok);
  const prompt = later.reduce((s, t) => s + t.promptTokens, 0);
  const cached = later.reduce((s, t) => s + t.cachedTokens, 0);
  return {
    cachedShare: prompt === 0 ? 0 : cached / prompt,
    uncachedPerTurn: later.length === 0 ? NaN : (prompt - cached) / later.length,
    ttftP50Ms: median(later.map((t) => t.ttftMs).filter((x): x is number => x !== null)),
  };
}

t.test("conversations keep their replica (X-Session-Id): cached prompt share and TTFT; a replica killed midway", { skip }, async (t) => {
  const models = await ensureTestModels();
  // A slot for every conversation a replica may get (the hash need not split 8 keys 4/4), as a deployment
  // sizes LLM_PARALLEL for its concurrent conversations.
  const env = { LLM_MODEL: models.chat, EMBED_MODEL: models.embed, LLM_CONTEXT_SIZE: "1024", LLM_PARALLEL: String(CONVERSATIONS), MODEL_DOWNLOAD: "false", LLM_THREADS: "1" };
  const replicas: ServiceProcess[] = [startServiceProcess(env), startServiceProcess(env)];
  let nginx: NginxProcess | null = null;
  t.teardown(async () => {
    for (const r of replicas) r.child.kill("SIGKILL");
    await nginx?.stop();
  });
  const addresses = await Promise.all(replicas.map(async (r) => /http:\/\/([^"]+)/.exec(await r.waitForLine(/Server listening at/))![1]!));
  await Promise.all(replicas.map((r) => r.waitForLine(/"msg":"ready"/, 120_000)));
  nginx = await startNginx(nginxBinary!, addresses);
  const base = `http://127.0.0.1:${nginx.port}`;

  const measure = async (run: string, through: string, session: boolean) => {
    const upstreams = new Map<string, string[][]>();
    const client = recordingClient(through, upstreams, { n: 0 });
    const turns = (await Promise.all(Array.from({ length: CONVERSATIONS }, (_, i) => converse(client, run, i, { session, stream: true })))).flat();
    t.same(turns.filter((x) => !x.ok), [], `${run}: every turn answered`);
    return { turns, upstreams, ...summary(turns) };
  };
  const roundRobinNginx = await startNginx(nginxBinary!, addresses, { roundRobin: true });
  t.teardown(() => roundRobinNginx.stop());
  // Unmeasured: each replica's first requests pay for JIT and lazy setup, whichever run came first.
  await Promise.all(Array.from({ length: 8 }, (_, i) => fetch(`${base}/api/llm/generate`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ messages: [{ role: "system", content: systemPrompt("warm-up", i) }, { role: "user", content: "hola" }], max_new_tokens: ANSWER_TOKENS }),
  }).then((r) => r.arrayBuffer())));
  const withKey = await measure("affinity", base, true);
  const leastConn = await measure("least-conn", base, false);
  const roundRobin = await measure("round-robin", `http://127.0.0.1:${roundRobinNginx.port}`, false);
  for (const [session, list] of withKey.upstreams) t.equal(new Set(list.flat()).size, 1, `${session}: all ${list.length} turns on one replica`);
  const split = addresses.map((a) => [...withKey.upstreams.values()].filter((list) => list[0]![0] === a).length);
  t.ok(split.every((n) => n > 0), `the sessions are spread over both replicas (${split.join("/")})`);
  const pct = (x: number) => `${(100 * x).toFixed(0)}%`;
  const line = (name: string, r: ReturnType<typeof summary>) => `${name}: cached ${pct(r.cachedShare)}, uncached ${r.uncachedPerTurn.toFixed(0)} tokens/turn, TTFT p50 ${r.ttftP50Ms.toFixed(1)} ms`;
  t.comment(`turns 2-${TURNS} of ${CONVERSATIONS} conversations (keys split ${split.join("/")}): ${line("X-Session-Id", withKey)}; ` +
    `${line("no key (least_conn)", leastConn)}; ${line("round robin", roundRobin)}`);
  t.ok(withKey.cachedShare > 0.9, `with affinity nearly every later prompt token is cached (${pct(withKey.cachedShare)})`);
  // Counts, not times: each turn's new tokens (question + answer) are uncached either way; a turn sent to the
  // other replica also re-reads the turns it missed there.
  t.ok(withKey.uncachedPerTurn < 0.75 * roundRobin.uncachedPerTurn, "fewer prompt tokens to process per turn than round robin");

  // A replica killed while turn 4 of every conversation runs. What "loses no request" can honestly mean:
  // a request nginx could not connect anywhere with is retried by nginx; a generation cut on the dead
  // replica comes back as 502 (plain) and the typed client sends it again (the user saw nothing of it);
  // a stream that had already delivered tokens would be reported to the caller, never replayed (the first
  // test above). Here plain generations: every turn of every conversation must be answered.
  const upstreams = new Map<string, string[][]>();
  const retries = { n: 0 };
  const client = recordingClient(base, upstreams, retries);
  // Turn 4 starts together in every conversation; the replica holding more of them is killed once it is
  // generating.
  let arrived = 0;
  let release!: () => void;
  const barrier = new Promise<void>((resolve) => { release = resolve; });
  const beforeTurn = async (turn: number) => {
    if (turn !== 3) return;
    if (++arrived === CONVERSATIONS) release();
    await barrier;
  };
  let victim = "";
  let survivor = "";
  const killed = barrier.then(async () => {
    const held = addresses.map((a) => [...upstreams.values()].filter((list) => list[0]?.[0] === a).length);
    const index = held[0]! >= held[1]! ? 0 : 1;
    [victim, survivor] = [addresses[index]!, addresses[1 - index]!];
    for (let i = 0; i < 400 && await slotsInUse(victim) === 0; i++) await new Promise((r) => setTimeout(r, 5));
    replicas[index]!.child.kill("SIGKILL");
    await replicas[index]!.exited;
  });
  const turns = (await Promise.all(Array.from({ length: CONVERSATIONS }, (_, i) => converse(client, "kill", i, { session: true, stream: false, beforeTurn })))).flat();
  await killed;
  t.same(turns.filter((x) => !x.ok), [], `all ${turns.length} turns answered though a replica died during turn 4`);
  t.ok(retries.n >= 1, `the kill cut generations, which the typed client sent again (${retries.n} retries)`);
  const moved = [...upstreams.values()].filter((list) => list.flat().includes(victim));
  t.ok(moved.length >= 1, `${moved.length} conversations were on the killed replica`);
  for (const list of moved) t.equal(list.at(-1)!.at(-1), survivor, `and finished on the survivor: ${JSON.stringify(list)}`);
});
