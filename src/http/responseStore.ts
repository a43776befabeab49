// The Responses API's store: responses created with `store: true` (OpenAI's default), kept so that
// `previous_response_id`, GET /v1/responses/{id} and its input_items can find them. Bounded by count
// and by bytes (the JSON size of what is kept); the least recently used goes first.
//
// In memory only: a restart forgets every stored response. (The issue asks for a copy on disk under
// the models cache directory once a persistent prompt cache exists; none does yet, and a stored
// response without its KV on disk would buy little.)

export type ResponseStoreOptions = {
  /** Most responses kept (RESPONSES_STORE_MAX_ITEMS). 0 turns storing off. */
  maxItems: number;
  /** Most bytes kept, counted as the JSON text of each entry (RESPONSES_STORE_MAX_BYTES). */
  maxBytes: number;
};

export const DEFAULT_RESPONSE_STORE: ResponseStoreOptions = { maxItems: 1000, maxBytes: 64 * 1024 * 1024 };

type Entry<T> = { value: T; bytes: number };

export class ResponseStore<T> {
  /** Map order is recency order: the first key is the least recently used. */
  private readonly entries = new Map<string, Entry<T>>();
  private totalBytes = 0;
  private evictedCount = 0;

  constructor(readonly options: ResponseStoreOptions = DEFAULT_RESPONSE_STORE) {}

  /**
   * Keeps `value` under `id`, evicting the least recently used entries until both bounds hold.
   * Returns false (and keeps nothing) when the entry alone is larger than the byte bound.
   */
  put(id: string, value: T): boolean {
    const bytes = Buffer.byteLength(JSON.stringify(value), "utf8");
    this.delete(id);
    if (this.options.maxItems === 0 || bytes > this.options.maxBytes) return false;
    this.entries.set(id, { value, bytes });
    this.totalBytes += bytes;
    while (this.entries.size > this.options.maxItems || this.totalBytes > this.options.maxBytes) {
      const oldest = this.entries.keys().next().value as string;
      this.delete(oldest);
      this.evictedCount++;
    }
    return true;
  }

  /** The entry, now the most recently used; undefined when never stored, deleted or evicted. */
  get(id: string): T | undefined {
    const entry = this.entries.get(id);
    if (entry === undefined) return undefined;
    this.entries.delete(id);
    this.entries.set(id, entry);
    return entry.value;
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  delete(id: string): boolean {
    const entry = this.entries.get(id);
    if (entry === undefined) return false;
    this.entries.delete(id);
    this.totalBytes -= entry.bytes;
    return true;
  }

  stats(): { items: number; bytes: number; evicted: number } {
    return { items: this.entries.size, bytes: this.totalBytes, evicted: this.evictedCount };
  }
}
