// The prompt cache of the slot loop: one cache across slots, a host-memory tier behind them.
//
// When a job starts on a slot, `prepareSlot` finds the longest prefix of its prompt that is already
// computed somewhere and puts it into the slot's sequence:
//   - slot:  the slot's own KV cache (nothing to do but trim),
//   - copy:  another slot's sequence, busy or not (llama_memory_seq_cp within the context, then trim),
//   - host:  an entry of the host-memory cache (llama_state_seq_set_data, then trim),
//   - disk:  the same, for an entry loaded from disk at start and not used since.
// Before a slot's content is overwritten by a stranger's prompt, it is saved to the host cache
// (llama_state_seq_get_data), keyed by its exact tokens; the cache is bounded in bytes, least
// recently used out first. Matching is on token boundaries and the last prompt token is always
// decoded again (its logits give the first new token), so outputs are the same with and without it.
//
// Everything here runs on the loop thread, except what is marked (import, export, stats), which
// holds `mutex`. No N-API here: slot_loop.cpp binds it.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "llama.h"

namespace bora {

enum class CacheTier : int32_t { None = 0, Slot = 1, Copy = 2, Host = 3, Disk = 4 };
constexpr int32_t kCacheTiers = 5;

struct PromptCacheEntry {
    std::vector<llama_token> tokens;
    std::vector<uint8_t> state;  // llama_state_seq_get_data of a sequence holding exactly `tokens`
    uint64_t lastUse = 0;
    uint32_t hits = 0;
    bool fromDisk = false;  // loaded at start and not used since (a hit counts for the disk tier)
    bool persisted = false;  // its file is written (or it was read from one): a snapshot hands over its tokens only
};

/** What the loop exposes of its slots to the cache (all calls on the loop thread). */
struct SlotAccess {
    int32_t count = 0;
    std::function<const std::vector<llama_token>&(int32_t)> tokens;
    std::function<void(int32_t, const std::vector<llama_token>&, size_t)> setTokens;  // (slot, tokens, length)
    std::function<bool(int32_t)> idle;
};

/** Work JS asks of the loop thread (slot save / restore / erase, snapshot for persistence). */
struct CacheTask {
    enum Kind { Snapshot, SlotSave, SlotRestore, SlotErase } kind = Snapshot;
    uint32_t id = 0;
    int32_t slot = 0;
    std::string path;
    size_t byteBudget = 0;  // Snapshot: at most this many bytes of entries
    // results
    std::string error;
    int64_t tokens = 0;
    int64_t bytes = 0;
    double ms = 0.0;
    std::vector<PromptCacheEntry> entries;  // Snapshot: most valuable first; `state` only for entries not persisted yet
};

struct PromptCacheStats {
    std::atomic<int64_t> hits[kCacheTiers] = {};
    std::atomic<int64_t> tokens[kCacheTiers] = {};
    std::atomic<int64_t> misses{0};
    std::atomic<int64_t> restoreNs{0};  // time spent copying / restoring (copy, host, disk tiers)
    std::atomic<int64_t> restores{0};
    std::atomic<int64_t> saves{0};      // slot contents saved to the host cache
    std::atomic<int64_t> evictions{0};  // host entries dropped for room
    std::atomic<int64_t> stateBytes{0};  // sum of state sizes saved (with savedTokens: bytes per token)
    std::atomic<int64_t> savedTokens{0};
};

class PromptCache {
   public:
    size_t limitBytes = 0;     // 0: the host tier is off (slot and copy tiers still work)
    size_t minTokens = 32;     // shorter prefixes are not worth a copy or a save

    PromptCacheStats stats;

    size_t hostBytes() {
        std::lock_guard<std::mutex> lock(mutex);
        return bytes;
    }
    size_t hostEntries() {
        std::lock_guard<std::mutex> lock(mutex);
        return entries.size();
    }

    /** Called before each round of commands: copies queued in the last round were applied by its decode. */
    void beginCommands() { pendingCopySources.clear(); }

    /**
     * Puts the longest cached prefix of `prompt` into `seq` and returns how many tokens it holds
     * (at most prompt.size() - 1). Called when a job starts on the idle slot `seq`.
     */
    size_t prepareSlot(llama_context* ctx, llama_memory_t memory, const SlotAccess& slots, int32_t seq,
                       const std::vector<llama_token>& prompt, CacheTier& tierOut) {
        const size_t cap = prompt.empty() ? 0 : prompt.size() - 1;
        const auto& own = slots.tokens(seq);
        const size_t ownKeep = std::min(commonPrefix(own, prompt), cap);

        // The best other source: another slot's sequence or a host entry.
        int32_t bestSlot = -1;
        size_t bestSlotLen = 0;
        for (int32_t s = 0; s < slots.count; s++) {
            if (s == seq) continue;
            const size_t n = std::min(commonPrefix(slots.tokens(s), prompt), cap);
            if (n > bestSlotLen) {
                bestSlot = s;
                bestSlotLen = n;
            }
        }
        std::shared_ptr<PromptCacheEntry> bestEntry;
        size_t bestEntryLen = 0;
        // A sequence another slot copies from in this round must not have its cells overwritten before
        // the decode performs that copy (llama.cpp copies stream buffers lazily): no restore into it.
        const bool restorable = std::find(pendingCopySources.begin(), pendingCopySources.end(), seq) == pendingCopySources.end();
        if (limitBytes > 0 && restorable) {
            std::lock_guard<std::mutex> lock(mutex);
            for (const auto& entry : entries) {
                const size_t n = std::min(commonPrefix(entry->tokens, prompt), cap);
                if (n > bestEntryLen) {
                    bestEntry = entry;
                    bestEntryLen = n;
                }
            }
        }
        const size_t otherLen = std::max(bestSlotLen, bestEntryLen);
        const bool useOther = otherLen >= minTokens && otherLen > ownKeep;
        const size_t finalKeep = useOther ? otherLen : ownKeep;

        // Save what the slot holds before it is lost, when most of it would be: another source replaces the
        // whole sequence; otherwise what survives is the prefix it shares with the prompt.
        const size_t ownSurvives = useOther ? 0 : ownKeep;
        if (limitBytes > 0 && own.size() >= minTokens && ownSurvives * 2 < own.size()) saveSequence(ctx, seq, own);

        const auto started = std::chrono::steady_clock::now();
        size_t keep = ownKeep;
        CacheTier tier = ownKeep > 0 ? CacheTier::Slot : CacheTier::None;
        if (useOther && bestSlotLen >= bestEntryLen) {
            // A cross-stream copy takes whole sequences (llama.cpp asserts on partial ones): copy, then trim.
            llama_memory_seq_rm(memory, seq, -1, -1);
            llama_memory_seq_cp(memory, bestSlot, seq, -1, -1);
            pendingCopySources.push_back(bestSlot);
            const auto& src = slots.tokens(bestSlot);
            if (!llama_memory_seq_rm(memory, seq, static_cast<llama_pos>(bestSlotLen), -1)) {
                llama_memory_seq_rm(memory, seq, -1, -1);
                keep = 0;
                tier = CacheTier::None;
            } else {
                keep = bestSlotLen;
                tier = CacheTier::Copy;
            }
            slots.setTokens(seq, src, keep);
        } else if (useOther) {
            llama_memory_seq_rm(memory, seq, -1, -1);
            size_t read = 0;
            try {
                read = llama_state_seq_set_data(ctx, bestEntry->state.data(), bestEntry->state.size(), seq);
            } catch (...) {
                read = 0;
            }
            if (read == 0 || !llama_memory_seq_rm(memory, seq, static_cast<llama_pos>(bestEntryLen), -1)) {
                llama_memory_seq_rm(memory, seq, -1, -1);
                keep = 0;
                tier = CacheTier::None;
                drop(bestEntry);  // a state llama.cpp refuses is never offered again
            } else {
                keep = bestEntryLen;
                std::lock_guard<std::mutex> lock(mutex);
                tier = bestEntry->fromDisk ? CacheTier::Disk : CacheTier::Host;
                bestEntry->fromDisk = false;
                bestEntry->hits++;
                bestEntry->lastUse = ++useCounter;
                changes++;
            }
            slots.setTokens(seq, bestEntry->tokens, keep);
        } else if (keep < own.size()) {
            if (!llama_memory_seq_rm(memory, seq, static_cast<llama_pos>(keep), -1)) {
                llama_memory_seq_rm(memory, seq, -1, -1);
                keep = 0;
                tier = CacheTier::None;
            }
            slots.setTokens(seq, own, keep);
        }
        if (tier == CacheTier::Copy || tier == CacheTier::Host || tier == CacheTier::Disk) {
            stats.restoreNs.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
            stats.restores.fetch_add(1);
        }
        if (keep == 0) {
            stats.misses.fetch_add(1);
        } else {
            stats.hits[static_cast<int32_t>(tier)].fetch_add(1);
            stats.tokens[static_cast<int32_t>(tier)].fetch_add(static_cast<int64_t>(keep));
        }
        tierOut = tier;
        return keep;
    }

    /** Runs a task JS queued; fills its results. */
    void runTask(CacheTask& task, llama_context* ctx, llama_memory_t memory, const SlotAccess& slots) {
        const auto started = std::chrono::steady_clock::now();
        const auto elapsedMs = [&] { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count(); };
        if (task.kind == CacheTask::Snapshot) {
            // Idle slots hold the freshest prefixes: put them into the host cache first.
            if (limitBytes > 0) {
                for (int32_t s = 0; s < slots.count; s++) {
                    if (slots.idle(s) && slots.tokens(s).size() >= minTokens) saveSequence(ctx, s, slots.tokens(s));
                }
            }
            std::lock_guard<std::mutex> lock(mutex);
            std::vector<std::shared_ptr<PromptCacheEntry>> order(entries.begin(), entries.end());
            std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
                return a->hits != b->hits ? a->hits > b->hits : a->lastUse > b->lastUse;
            });
            size_t total = 0;
            for (const auto& entry : order) {
                const size_t size = entry->state.size() + entry->tokens.size() * sizeof(llama_token);
                if (total + size > task.byteBudget) continue;
                total += size;
                // Files are written as entries appear (save as you go): one already on disk is named, not copied.
                PromptCacheEntry out;
                out.tokens = entry->tokens;
                out.hits = entry->hits;
                if (!entry->persisted) out.state = entry->state;
                entry->persisted = true;
                task.entries.push_back(std::move(out));
            }
            task.ms = elapsedMs();
            return;
        }
        if (task.slot < 0 || task.slot >= slots.count) {
            task.error = "no such slot";
            return;
        }
        const bool copySource = std::find(pendingCopySources.begin(), pendingCopySources.end(), task.slot) != pendingCopySources.end();
        if (!slots.idle(task.slot) || (task.kind == CacheTask::SlotRestore && copySource)) {
            task.error = "slot " + std::to_string(task.slot) + " is busy";
            return;
        }
        const auto& own = slots.tokens(task.slot);
        if (task.kind == CacheTask::SlotSave) {
            task.tokens = static_cast<int64_t>(own.size());
            try {
                task.bytes = static_cast<int64_t>(llama_state_seq_save_file(ctx, task.path.c_str(), task.slot, own.data(), own.size()));
            } catch (...) {
                task.bytes = 0;
            }
            if (task.bytes == 0) task.error = "could not write the slot file";
        } else if (task.kind == CacheTask::SlotRestore) {
            const size_t capacity = static_cast<size_t>(llama_n_ctx(ctx));
            std::vector<llama_token> tokens(capacity);
            size_t count = 0;
            llama_memory_seq_rm(memory, task.slot, -1, -1);
            size_t read = 0;
            try {
                read = llama_state_seq_load_file(ctx, task.path.c_str(), task.slot, tokens.data(), tokens.size(), &count);
            } catch (...) {
                read = 0;
            }
            if (read == 0) {
                llama_memory_seq_rm(memory, task.slot, -1, -1);
                slots.setTokens(task.slot, tokens, 0);
                task.error = "could not restore the slot from the file (missing, damaged or from another model or context)";
            } else {
                tokens.resize(count);
                slots.setTokens(task.slot, tokens, count);
                task.tokens = static_cast<int64_t>(count);
                task.bytes = static_cast<int64_t>(read);
            }
        } else if (task.kind == CacheTask::SlotErase) {
            task.tokens = static_cast<int64_t>(own.size());
            llama_memory_seq_rm(memory, task.slot, -1, -1);
            slots.setTokens(task.slot, own, 0);
        }
        task.ms = elapsedMs();
    }

    /** JS thread: adds an entry read from disk (already checked against this model and context). */
    bool importEntry(std::vector<llama_token> tokens, std::vector<uint8_t> state, uint32_t hits) {
        auto entry = std::make_shared<PromptCacheEntry>();
        entry->tokens = std::move(tokens);
        entry->state = std::move(state);
        entry->hits = hits;
        entry->fromDisk = true;
        entry->persisted = true;
        std::lock_guard<std::mutex> lock(mutex);
        return insertLocked(entry);
    }

    /** Entries added or used since start (persistence saves only when this moved). */
    uint64_t changeCount() {
        std::lock_guard<std::mutex> lock(mutex);
        return changes;
    }

   private:
    std::vector<int32_t> pendingCopySources;  // loop thread only
    std::mutex mutex;
    std::list<std::shared_ptr<PromptCacheEntry>> entries;
    size_t bytes = 0;
    uint64_t useCounter = 0;
    uint64_t changes = 0;

    static size_t commonPrefix(const std::vector<llama_token>& a, const std::vector<llama_token>& b) {
        const size_t n = std::min(a.size(), b.size());
        size_t i = 0;
        while (i < n && a[i] == b[i]) i++;
        return i;
    }

    static size_t entrySize(const PromptCacheEntry& entry) { return entry.state.size() + entry.tokens.size() * sizeof(llama_token); }

    void saveSequence(llama_context* ctx, int32_t seq, const std::vector<llama_token>& tokens) {
        {
            std::lock_guard<std::mutex> lock(mutex);
            // Already held (the same tokens or a longer run starting with them): refresh it, nothing to copy.
            for (const auto& entry : entries) {
                if (entry->tokens.size() >= tokens.size() && std::equal(tokens.begin(), tokens.end(), entry->tokens.begin())) {
                    entry->lastUse = ++useCounter;
                    return;
                }
            }
        }
        const size_t size = llama_state_seq_get_size(ctx, seq);
        if (size == 0 || size + tokens.size() * sizeof(llama_token) > limitBytes) return;
        auto entry = std::make_shared<PromptCacheEntry>();
        entry->state.resize(size);
        size_t written = 0;
        try {
            written = llama_state_seq_get_data(ctx, entry->state.data(), size, seq);
        } catch (...) {
            written = 0;
        }
        if (written == 0) return;
        entry->state.resize(written);
        entry->tokens = tokens;
        stats.saves.fetch_add(1);
        stats.stateBytes.fetch_add(static_cast<int64_t>(written));
        stats.savedTokens.fetch_add(static_cast<int64_t>(tokens.size()));
        std::lock_guard<std::mutex> lock(mutex);
        insertLocked(entry);
    }

    // An old entry the new one makes (nearly) redundant: the new one holds all of it, or all but a short tail
    // (the question and answer of another turn on the same system prompt: kept, the same prefix would be
    // stored once per question and crowd out other prompts).
    static bool supersedes(const PromptCacheEntry& newer, const PromptCacheEntry& old) {
        const size_t shared = commonPrefix(old.tokens, newer.tokens);
        const size_t tail = old.tokens.size() - shared;
        return tail == 0 || (shared >= newer.tokens.size() / 2 && tail <= std::max<size_t>(32, old.tokens.size() / 8));
    }

    // Holds `mutex`. Entries the new one supersedes are dropped.
    bool insertLocked(const std::shared_ptr<PromptCacheEntry>& entry) {
        const size_t size = entrySize(*entry);
        if (size > limitBytes) return false;
        for (auto it = entries.begin(); it != entries.end();) {
            const auto& old = *it;
            if (supersedes(*entry, *old)) {
                entry->hits = std::max(entry->hits, old->hits);
                bytes -= entrySize(*old);
                it = entries.erase(it);
            } else {
                ++it;
            }
        }
        while (bytes + size > limitBytes && !entries.empty()) {
            auto lru = std::min_element(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a->lastUse < b->lastUse; });
            bytes -= entrySize(**lru);
            entries.erase(lru);
            stats.evictions.fetch_add(1);
        }
        entry->lastUse = ++useCounter;
        entries.push_back(entry);
        bytes += size;
        changes++;
        return true;
    }

    void drop(const std::shared_ptr<PromptCacheEntry>& entry) {
        std::lock_guard<std::mutex> lock(mutex);
        auto it = std::find(entries.begin(), entries.end(), entry);
        if (it == entries.end()) return;
        bytes -= entrySize(**it);
        entries.erase(it);
    }
};

/** Finished tasks waiting for JS to take them (the step event carries only the id). */
class CacheTaskMailbox {
   public:
    void post(std::unique_ptr<CacheTask> task) {
        std::lock_guard<std::mutex> lock(mutex);
        done.push_back(std::move(task));
    }
    std::unique_ptr<CacheTask> take(uint32_t id) {
        std::lock_guard<std::mutex> lock(mutex);
        for (auto it = done.begin(); it != done.end(); ++it) {
            if ((*it)->id != id) continue;
            auto task = std::move(*it);
            done.erase(it);
            return task;
        }
        return nullptr;
    }

   private:
    std::mutex mutex;
    std::vector<std::unique_ptr<CacheTask>> done;
};

}  // namespace bora
