// The prompt cache's JS side: persistence across restarts and the counters /metrics reads.
//
// The tiers themselves live in the native slot loop (src/engine/native/prompt_cache.h): a slot's own KV,
// a copy from another slot, the host-memory cache. This module keeps the most reused host entries on
// disk: written at shutdown (after the drain) and every `saveIntervalS`, read back at start before the
// service turns ready. A file is only ever loaded into the model and context it was made with: its
// header carries a key (model file sha256, llama.cpp build, slots, context per slot, KV type, flash
// attention) and a sha256 of its body, and its size must match. A damaged or foreign file is skipped
// with one warning (node-llama-cpp's docs warn that a state from another model can crash the process).
//
// File layout (little-endian): "BORAPC01" | u32 header length | header JSON | u32 tokens[n] | state bytes.
import type { PromptCacheSettings } from "./settings.js";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { CacheTaskResult, PromptCacheEntryData, PromptCacheNativeStats, PromptCacheTier } from "../native/slotLoop.js";

const MAGIC = Buffer.from("BORAPC01", "latin1");
const FILE_SUFFIX = ".promptcache";
export const PROMPT_CACHE_TIERS: readonly PromptCacheTier[] = ["slot", "copy", "host", "disk"];

/** What a cached KV state depends on: a file made under another key is never loaded. */
export type PromptCacheKey = {
  modelSha256: string;
  llamaCpp: string;
  slots: number;
  contextPerSlot: number;
  kvType: string;
  flashAttention: string;
};

type FileHeader = { key: PromptCacheKey; tokens: number; stateBytes: number; hits: number; sha256: string };

export type PromptCacheOptions = PromptCacheSettings & {
  /** One line per skipped file or failed write (never user text). */
  warn?: (message: string, details: Record<string, unknown>) => void;
};

/** The native side the store drives (SlotLoopBackend implements it). */
export interface PromptCacheHost {
  cacheTask(kind: "snapshot", slot: number, path: string, byteBudget: number): Promise<CacheTaskResult>;
  cacheImport(entry: PromptCacheEntryData): boolean;
  cacheStats(): PromptCacheNativeStats | null;
  /** Tokens decoded on every slot since start: when it moved, an idle slot may hold something new to save. */
  decodedTokens(): number;
}

export type PromptCacheSnapshot = PromptCacheNativeStats & { diskBytes: number; diskFiles: number; loadedFromDisk: number; lastSaveMs: number | null; filesWritten: number };

export function keyHash(key: PromptCacheKey): string {
  return createHash("sha256").update(JSON.stringify([key.modelSha256, key.llamaCpp, key.slots, key.contextPerSlot, key.kvType, key.flashAttention])).digest("hex").slice(0, 16);
}

/**
 * The model file's sha256, remembered in `<dir>/model-sha256.json` by path, size and mtime so a restart
 * does not read a 1 GiB file again.
 */
export async function modelSha256(modelPath: string, dir: string): Promise<string> {
  const info = await stat(modelPath);
  const id = `${path.resolve(modelPath)}|${info.size}|${Math.floor(info.mtimeMs)}`;
  const memoFile = path.join(dir, "model-sha256.json");
  let memo: Record<string, string> = {};
  try {
    const parsed: unknown = JSON.parse(await readFile(memoFile, "utf8"));
    if (typeof parsed === "object" && parsed !== null) memo = parsed as Record<string, string>;
  } catch { /* no memo yet */ }
  const known = memo[id];
  if (typeof known === "string" && /^[0-9a-f]{64}$/.test(known)) return known;
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(modelPath)) hash.update(chunk as Buffer);
  const digest = hash.digest("hex");
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(memoFile, JSON.stringify({ ...memo, [id]: digest }));
  } catch { /* a read-only directory only costs the hash next time */ }
  return digest;
}

/** Serialises one entry into the file layout above. */
export function encodeEntry(key: PromptCacheKey, entry: PromptCacheEntryData): Buffer {
  const tokens = Buffer.alloc(entry.tokens.length * 4);
  entry.tokens.forEach((token, i) => tokens.writeUInt32LE(token, i * 4));
  const state = Buffer.from(entry.state.buffer, entry.state.byteOffset, entry.state.byteLength);
  const sha256 = createHash("sha256").update(tokens).update(state).digest("hex");
  const header: FileHeader = { key, tokens: entry.tokens.length, stateBytes: state.length, hits: entry.hits, sha256 };
  const headerBytes = Buffer.from(JSON.stringify(header), "utf8");
  const length = Buffer.alloc(4);
  length.writeUInt32LE(headerBytes.length);
  return Buffer.concat([MAGIC, length, headerBytes, tokens, state]);
}

/** Checks a file against the key; the entry, or why it cannot be used. */
export function decodeEntry(key: PromptCacheKey, file: Buffer): PromptCacheEntryData | { reason: string } {
  if (file.length < MAGIC.length + 4 || !file.subarray(0, MAGIC.length).equals(MAGIC)) return { reason: "not a prompt cache file" };
  const headerLength = file.readUInt32LE(MAGIC.length);
  const headerEnd = MAGIC.length + 4 + headerLength;
  if (headerEnd > file.length) return { reason: "truncated header" };
  let header: FileHeader;
  try {
    header = JSON.parse(file.subarray(MAGIC.length + 4, headerEnd).toString("utf8")) as FileHeader;
  } catch {
    return { reason: "unreadable header" };
  }
  if (typeof header !== "object" || header === null || typeof header.key !== "object" || header.key === null) return { reason: "unreadable header" };
  if (keyHash(header.key) !== keyHash(key) || JSON.stringify(header.key) !== JSON.stringify(key)) return { reason: "made for another model, llama.cpp build or context" };
  if (!Number.isInteger(header.tokens) || !Number.isInteger(header.stateBytes) || header.tokens <= 0 || header.stateBytes <= 0) return { reason: "bad sizes" };
  if (file.length !== headerEnd + header.tokens * 4 + header.stateBytes) return { reason: `size ${file.length} does not match its header` };
  const tokens = file.subarray(headerEnd, headerEnd + header.tokens * 4);
  const state = file.subarray(headerEnd + header.tokens * 4);
  const sha256 = createHash("sha256").update(tokens).update(state).digest("hex");
  if (sha256 !== header.sha256) return { reason: "checksum mismatch (damaged)" };
  const ids = new Uint32Array(header.tokens);
  for (let i = 0; i < header.tokens; i++) ids[i] = tokens.readUInt32LE(i * 4);
  return { tokens: ids, state: new Uint8Array(state), hits: Number.isInteger(header.hits) && header.hits >= 0 ? header.hits : 0 };
}

/** Persists the host tier of one model and context, and reports the counters of every tier. */
export class PromptCacheStore {
  readonly prefix: string;
  #diskBytes = 0;
  #diskFiles = 0;
  #loadedFromDisk = 0;
  #lastSaveMs: number | null = null;
  #savedAtChange = -1;
  #savedAtDecoded = -1;
  #filesWritten = 0;
  #loading: Promise<{ entries: number; tokens: number; ms: number }> | null = null;
  #timer: NodeJS.Timeout | null = null;
  #saving: Promise<void> | null = null;
  #closed = false;

  constructor(
    private readonly host: PromptCacheHost,
    readonly key: PromptCacheKey,
    private readonly options: PromptCacheOptions,
  ) {
    this.prefix = keyHash(key);
  }

  get persistent(): boolean {
    return this.options.hostMiB > 0 && this.options.diskMiB > 0;
  }

  /**
   * Reads this key's files into the host cache, one at a time (the service serves meanwhile: a request before
   * its prefix is read is only colder), then starts saving as entries appear.
   */
  load(): Promise<{ entries: number; tokens: number; ms: number }> {
    this.#loading ??= this.#load();
    return this.#loading;
  }

  async #load(): Promise<{ entries: number; tokens: number; ms: number }> {
    const started = performance.now();
    let entries = 0;
    let tokens = 0;
    if (this.persistent) {
      for (const name of await this.#newestFirst(await this.#ownFiles())) {
        const file = path.join(this.options.dir, name);
        let bytes: Buffer;
        try {
          bytes = await readFile(file);
        } catch (error) {
          this.#warn("prompt cache file unreadable, skipped", { file, reason: error instanceof Error ? error.message : String(error) });
          continue;
        }
        const entry = decodeEntry(this.key, bytes);
        if ("reason" in entry) {
          this.#warn("prompt cache file skipped", { file, reason: entry.reason });
          continue;
        }
        if (this.host.cacheImport(entry)) {
          entries++;
          tokens += entry.tokens.length;
        }
      }
      this.#loadedFromDisk = entries;
      await this.#measureDisk();
      // Not marked as saved: requests served while the files were read may have made entries to write
      // (the entries read are marked on disk natively, so the first save writes only the new ones).
      if (this.options.saveIntervalS > 0) {
        this.#timer = setInterval(() => void this.save(), this.options.saveIntervalS * 1000);
        this.#timer.unref();
      }
    }
    return { entries, tokens, ms: performance.now() - started };
  }

  /**
   * Writes the most reused entries (idle slots included) within the disk bound and removes this key's
   * older files. Skipped when nothing changed since the last save. Never throws.
   */
  save(): Promise<void> {
    if (!this.persistent || this.#closed) return Promise.resolve();
    this.#saving ??= this.#save().finally(() => { this.#saving = null; });
    return this.#saving;
  }

  /** The last save (at shutdown, after the drain), then no more timers. */
  async close(): Promise<void> {
    await this.#loading;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await this.#saving;
    await this.save();
    this.#closed = true;
  }

  snapshot(): PromptCacheSnapshot | null {
    const stats = this.host.cacheStats();
    if (stats === null) return null;
    return { ...stats, diskBytes: this.#diskBytes, diskFiles: this.#diskFiles, loadedFromDisk: this.#loadedFromDisk, lastSaveMs: this.#lastSaveMs, filesWritten: this.#filesWritten };
  }

  async #save(): Promise<void> {
    const started = performance.now();
    try {
      const changes = this.host.cacheStats()?.changes ?? 0;
      const decoded = this.host.decodedTokens();
      if (changes === this.#savedAtChange && decoded === this.#savedAtDecoded) return;
      const budget = this.options.diskMiB * 2 ** 20;
      const snapshot = await this.host.cacheTask("snapshot", 0, "", budget);
      // The snapshot itself may have saved idle slots: compare after it.
      const after = this.host.cacheStats()?.changes ?? changes;
      await mkdir(this.options.dir, { recursive: true });
      const keep = new Set<string>();
      let written = 0;
      for (const entry of snapshot.entries) {
        const name = `${this.prefix}-${createHash("sha256").update(Buffer.from(entry.tokens.buffer, entry.tokens.byteOffset, entry.tokens.byteLength)).digest("hex").slice(0, 24)}${FILE_SUFFIX}`;
        // An entry handed over without its state has its file already: saved as it appeared, not again.
        if (entry.state === null) {
          keep.add(name);
          continue;
        }
        const bytes = encodeEntry(this.key, { ...entry, state: entry.state });
        if (bytes.length > budget) continue;
        keep.add(name);
        const file = path.join(this.options.dir, name);
        // Write then rename: a crash mid-write leaves the old file or none, never half of one.
        const temporary = `${file}.${process.pid}.tmp`;
        await writeFile(temporary, bytes);
        await rename(temporary, file);
        written++;
      }
      this.#filesWritten += written;
      for (const name of await this.#ownFiles()) {
        if (!keep.has(name)) await rm(path.join(this.options.dir, name), { force: true });
      }
      this.#savedAtChange = after;
      this.#savedAtDecoded = decoded;
      this.#lastSaveMs = performance.now() - started;
      await this.#measureDisk();
    } catch (error) {
      this.#warn("prompt cache not persisted", { dir: this.options.dir, reason: error instanceof Error ? error.message : String(error) });
    }
  }

  /** The service answers while the files are read: the prefixes written last (the conversations just before a stop) first. */
  async #newestFirst(names: string[]): Promise<string[]> {
    const dated = await Promise.all(names.map(async (name) => {
      try {
        return { name, mtimeMs: (await stat(path.join(this.options.dir, name))).mtimeMs };
      } catch {
        return { name, mtimeMs: 0 };
      }
    }));
    return dated.sort((a, b) => b.mtimeMs - a.mtimeMs || a.name.localeCompare(b.name)).map((d) => d.name);
  }

  async #ownFiles(): Promise<string[]> {
    try {
      return (await readdir(this.options.dir)).filter((name) => name.startsWith(`${this.prefix}-`) && name.endsWith(FILE_SUFFIX)).sort();
    } catch {
      return [];
    }
  }

  async #measureDisk(): Promise<void> {
    let bytes = 0;
    const files = await this.#ownFiles();
    for (const name of files) {
      try {
        bytes += (await stat(path.join(this.options.dir, name))).size;
      } catch { /* removed meanwhile */ }
    }
    this.#diskBytes = bytes;
    this.#diskFiles = files.length;
  }

  #warn(message: string, details: Record<string, unknown>): void {
    this.options.warn?.(message, details);
  }
}
