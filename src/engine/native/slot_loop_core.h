// The generation slot loop's core: llama-server's `update_slots` shape, in-process, without N-API (the
// binding, slot_loop.cpp, parses arguments, marshals each step's events to JS and owns the threads' lifetime
// against Node's).
//
// One llama_context with n_seq_max = slots and ONE loop thread. Each step:
//   1. apply commands (start a job on a slot, trim a slot's cache, a prompt-cache task) and cancellation flags,
//   2. build ONE batch: the last sampled token of every generating slot, then chunks of waiting prompts up to
//      the batch budget (chunked prefill interleaved with decode),
//   3. llama_decode once (in views of the batch when the KV cache has no room for all of it),
//   4. sample every slot that got logits, in this thread (slot_sampler.h),
//   5. hand all new tokens of the step to `deliver` at once.
// Nothing thrown on the loop thread leaves it: a failing step or slot ends with an error event for the slots
// concerned and the loop goes on (docs/native-guards.md).
#pragma once

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "llama.h"
#include "cpu_threadpool.h"
#include "prompt_cache.h"
#include "slot_sampler.h"

namespace bora::slotloop {

struct Job {
    uint32_t id = 0;
    std::vector<llama_token> prompt;
    int32_t maxTokens = 1;
    SamplingParams sampling;
    std::string grammar;
    int32_t logprobsTop = -1;  // -1: no logprobs
};

struct Command {
    enum Kind { Start, Trim, Task } kind = Start;
    int32_t slot = 0;
    int32_t length = 0;
    std::unique_ptr<Job> job;
    std::unique_ptr<bora::CacheTask> task;  // Task: prompt-cache work (prompt_cache.h)
};

struct TokenOut {
    llama_token id = 0;
    std::string piece;
    bool isEnd = false;
    float logprob = 0.0f;
    std::vector<llama_token> topIds;
    std::vector<float> topLogprobs;
    std::vector<std::string> topPieces;
};

struct SlotEvent {
    int32_t slot = 0;
    uint32_t jobId = 0;
    bool trimmed = false;
    uint32_t taskId = 0;  // a finished prompt-cache task (JS takes its result by id)
    bool withLogprobs = false;
    std::vector<TokenOut> tokens;
    std::string done;  // empty: still running
    std::string error;
    // "request": the request itself made generation impossible (a grammar with no way on, every token
    // banned); "internal": llama.cpp failed. JS maps the first to a 400, the second to a 500.
    std::string errorKind;
    int32_t cachedPromptTokens = 0;
    int32_t evaluatedTokens = 0;
};

struct StepEvents {
    std::vector<SlotEvent> events;
};

enum class SlotPhase { Idle, Prompt, Generating };

struct Slot {
    int32_t id = 0;
    SlotPhase phase = SlotPhase::Idle;
    std::unique_ptr<Job> job;
    std::vector<llama_token> cache;  // tokens in this sequence's KV cache (loop thread only)
    // What JS reads for slot choice: the cache as of the slot's last idle moment, published by the loop
    // (guarded by Loop::stateMutex; readers copy the pointer, never the tokens, under the lock).
    std::shared_ptr<const std::vector<llama_token>> snapshot = std::make_shared<const std::vector<llama_token>>();
    size_t promptPos = 0;            // next prompt token to decode
    llama_token pending = LLAMA_TOKEN_NULL;  // sampled, not yet decoded
    int32_t generated = 0;
    int32_t cachedPromptTokens = 0;
    int32_t evaluated = 0;
    int32_t batchIndex = -1;  // index of this slot's logits row in the current batch
    uint64_t startOrder = 0;
    SlotSampler sampler;
    std::atomic<uint32_t> endJob{0};  // a job id JS asked to end
    std::atomic<bool> busy{false};
    std::atomic<int64_t> tokensDecoded{0};
    std::atomic<int32_t> cachedCount{0};

    void freeSamplers() { sampler.free(); }
};

// Lowers the calling thread's CPU priority to `nice` (Linux: nice is per thread and inherited by threads it
// creates later, such as an OpenMP build's team). Raising the nice value needs no privilege; lowering it again
// does, so a loop at LLM_NICE 19 stays there. Elsewhere it does nothing.
inline void lowerThreadPriority(int32_t nice) {
#if defined(__linux__)
    if (nice > 0) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), nice);
#else
    (void)nice;
#endif
}

struct LoopCore {
    std::string modelPath;
    int32_t threads = 1;
    int32_t slotCount = 1;
    int32_t contextPerSlot = 2048;
    int32_t batchSize = 512;
    int32_t gpuLayers = 0;
    int32_t nice = 0;  // the loop thread's nice value (LLM_NICE); 0: unchanged
    // The pool's helper threads always yield to the rest of the process and to other programs (thread_governor.h).
    static constexpr int32_t kHelperNice = 19;
    enum llama_flash_attn_type flashAttention = LLAMA_FLASH_ATTN_TYPE_AUTO;
    enum ggml_type kvType = GGML_TYPE_F16;  // K and V alike (llama-server's -ctk/-ctv)
    std::string kvTypeName = "f16";
    std::string flashAttentionName = "auto";  // as asked: llama.cpp resolves auto (and turns it on for a quantized V)

    llama_model* model = nullptr;
    llama_context* ctx = nullptr;
    const llama_vocab* vocab = nullptr;
    int32_t nVocab = 0;
    std::vector<llama_logit_bias> noEndBias;  // -inf on every end-of-generation token (ignore_eos)
    llama_batch batch{};
    bool batchAllocated = false;
    bora::CpuThreadpool threadpool;
    bora::ThreadGovernor governor;
    std::atomic<int32_t> threadsActive{1};  // what the last decode ran on (JS reads it for status)
    std::atomic<int32_t> threadChanges{0};
    // Embedding or rerank decodes running now (JS counts them): the loop gives them the cores. A decode of
    // generated tokens only is aborted (llama.cpp's abort callback, between graph nodes) and done again after;
    // before each step the loop waits up to kMaxYield, so a long retrieval burst slows generation, never stops it.
    std::atomic<int32_t> retrievalRunning{0};
    std::atomic<int64_t> yieldAborts{0};
    bool abortableStep = false;  // loop thread: the decode running holds generated tokens only
    static constexpr auto kMaxYield = std::chrono::milliseconds(50);
    std::vector<std::unique_ptr<Slot>> slots;

    std::thread thread;
    std::mutex commandMutex;
    std::condition_variable wake;
    std::deque<Command> commands;
    bool stopping = false;
    std::mutex stateMutex;  // guards Slot::snapshot for readers on the JS thread
    // Takes each step's events (the binding hands them to JS); set before the thread starts.
    std::function<void(StepEvents*)> deliver;
    uint64_t startCounter = 0;
    std::vector<llama_token_data> candidates;
    bora::PromptCache promptCache;
    bora::SlotAccess slotAccess;
    bora::CacheTaskMailbox cacheTasks;

    ~LoopCore() { release(); }

    void startThread() { thread = std::thread([this] { run(); }); }

    // llama.cpp's abort callback (ggml's compute thread 0, between graph nodes).
    static bool abortForRetrieval(void* data) {
        const auto* core = static_cast<const LoopCore*>(data);
        return core->abortableStep && core->retrievalRunning.load(std::memory_order_relaxed) > 0;
    }

    // A retrieval decode starts (+1) or ends (-1) (any thread).
    void retrieval(int32_t delta) {
        retrievalRunning.fetch_add(delta);
        wake.notify_one();
    }

    // Queues a command for the loop thread (any thread).
    void push(Command command) {
        {
            std::lock_guard<std::mutex> lock(commandMutex);
            commands.push_back(std::move(command));
        }
        wake.notify_one();
    }

    // Asks the slot's job `jobId` to end within one step (any thread).
    void requestEnd(Slot& slot, uint32_t jobId) {
        slot.endJob.store(jobId);
        wake.notify_one();
    }

    // The slot's cache as of its last idle moment (the loop publishes it); only the pointer is copied under
    // the lock, never the tokens.
    std::shared_ptr<const std::vector<llama_token>> snapshotOf(const Slot& slot) {
        std::lock_guard<std::mutex> lock(stateMutex);
        return slot.snapshot;
    }

    // How many leading tokens of `prompt` each slot's published cache holds (slot choice), in one pass.
    std::vector<int32_t> commonPrefixes(const llama_token* prompt, size_t length) {
        std::vector<int32_t> out(slots.size(), 0);
        for (size_t s = 0; s < slots.size(); s++) {
            const auto tokens = snapshotOf(*slots[s]);
            const size_t n = std::min(tokens->size(), length);
            size_t i = 0;
            while (i < n && (*tokens)[i] == prompt[i]) i++;
            out[s] = static_cast<int32_t>(i);
        }
        return out;
    }

    void stopThread() {
        if (thread.joinable()) {
            {
                std::lock_guard<std::mutex> lock(commandMutex);
                stopping = true;
            }
            wake.notify_all();
            thread.join();
        }
    }

    void release() {
        stopThread();
        for (auto& slot : slots) slot->freeSamplers();
        if (batchAllocated) {
            llama_batch_free(batch);
            batchAllocated = false;
        }
        threadpool.release();
        if (ctx != nullptr) llama_free(ctx);
        if (model != nullptr) llama_model_free(model);
        ctx = nullptr;
        model = nullptr;
        vocab = nullptr;
    }

    // Settings llama.cpp would meet with GGML_ASSERT/abort() rather than an error (config.ts refuses them
    // first with a message naming the variables; this is the second line for any other caller).
    std::string checkSettings() const {
        if (slotCount > batchSize) return "slots (" + std::to_string(slotCount) + ") above the batch size (" + std::to_string(batchSize) + "): every slot needs a place in each batch";
        if (static_cast<int64_t>(contextPerSlot) * slotCount > (int64_t{1} << 30)) return "the total context (slots x context per slot) is too large";
        return "";
    }

    std::string load() {
        if (auto problem = checkSettings(); !problem.empty()) return problem;
        auto modelParams = llama_model_default_params();
        modelParams.n_gpu_layers = gpuLayers;
        model = llama_model_load_from_file(modelPath.c_str(), modelParams);
        if (model == nullptr) return "failed to load the model file " + modelPath;
        if (llama_model_has_encoder(model)) return "encoder models are not supported by the slot loop";
        // A non-causal model (an embedding model given as the chat model) must see a whole prompt in one
        // ubatch: llama_decode GGML_ASSERTs (aborts) on a longer prompt. It cannot generate anyway.
        if (metaValue("general.architecture") != "" && metaValue(metaValue("general.architecture") + ".attention.causal") == "false") {
            return "the model is not causal (an embedding model?): it cannot generate text";
        }

        auto ctxParams = llama_context_default_params();
        ctxParams.n_ctx = static_cast<uint32_t>(contextPerSlot) * static_cast<uint32_t>(slotCount);
        ctxParams.n_batch = static_cast<uint32_t>(batchSize);
        ctxParams.n_ubatch = static_cast<uint32_t>(std::min(batchSize, 512));
        ctxParams.n_seq_max = static_cast<uint32_t>(slotCount);
        ctxParams.n_threads = threads;
        ctxParams.n_threads_batch = threads;
        ctxParams.kv_unified = false;  // each slot owns n_ctx / n_seq_max cells, as node-llama-cpp's sequences
        ctxParams.no_perf = true;
        ctxParams.flash_attn_type = flashAttention;
        ctxParams.type_k = kvType;
        ctxParams.type_v = kvType;
        // Logits are read for at most one position per slot per decode (a prompt's last token or a slot's
        // next token). Without this llama.cpp sizes the output buffer and the worst-case graph for
        // n_batch outputs: n_batch x n_vocab floats (512 x 151936 x 4 B = 311 MB) that are never read.
        ctxParams.n_outputs_max = static_cast<uint32_t>(slotCount);
        ctx = llama_init_from_model(model, ctxParams);
        if (ctx != nullptr) llama_set_abort_callback(ctx, &LoopCore::abortForRetrieval, this);
        if (ctx == nullptr) {
            return kvType == GGML_TYPE_F16 ? "failed to create the generation context"
                : "failed to create the generation context with a " + kvTypeName + " KV cache (quantized blocks are 32 wide: the model's heads must be a multiple of 32)";
        }
        llama_set_n_threads(ctx, threads, threads);
        // llama.cpp may pad n_ctx; a slot never holds more than was asked for.
        contextPerSlot = std::min(contextPerSlot, static_cast<int32_t>(llama_n_ctx(ctx) / static_cast<uint32_t>(slotCount)));

        vocab = llama_model_get_vocab(model);
        nVocab = llama_vocab_n_tokens(vocab);
        for (llama_token t = 0; t < nVocab; t++) {
            if (llama_vocab_is_eog(vocab, t)) noEndBias.push_back({t, -INFINITY});
        }
        batchSize = static_cast<int32_t>(llama_n_batch(ctx));
        batch = llama_batch_init(batchSize, 0, 1);
        batchAllocated = true;
        candidates.resize(static_cast<size_t>(nVocab));
        for (int32_t i = 0; i < slotCount; i++) {
            auto slot = std::make_unique<Slot>();
            slot->id = i;
            slots.push_back(std::move(slot));
        }
        slotAccess.count = slotCount;
        slotAccess.tokens = [this](int32_t i) -> const std::vector<llama_token>& { return slots[static_cast<size_t>(i)]->cache; };
        slotAccess.idle = [this](int32_t i) { return slots[static_cast<size_t>(i)]->phase == SlotPhase::Idle; };
        slotAccess.setTokens = [this](int32_t i, const std::vector<llama_token>& tokens, size_t length) {
            Slot& slot = *slots[static_cast<size_t>(i)];
            if (&tokens == &slot.cache) slot.cache.resize(length);
            else slot.cache.assign(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(std::min(length, tokens.size())));
            slot.cachedCount.store(static_cast<int32_t>(slot.cache.size()));
            if (slot.phase == SlotPhase::Idle) publish(slot);  // a slot action on an idle slot: JS sees it at once
        };
        return "";
    }

    std::string metaValue(const std::string& key) const {
        char buffer[256];
        const int32_t n = llama_model_meta_val_str(model, key.c_str(), buffer, sizeof(buffer));
        return n < 0 ? std::string() : std::string(buffer, static_cast<size_t>(std::min<int32_t>(n, sizeof(buffer) - 1)));
    }

    std::string piece(llama_token token) const {
        char buffer[256];
        int32_t n = llama_token_to_piece(vocab, token, buffer, sizeof(buffer), 0, true);
        if (n >= 0) return std::string(buffer, static_cast<size_t>(n));
        std::string big(static_cast<size_t>(-n), '\0');
        n = llama_token_to_piece(vocab, token, big.data(), static_cast<int32_t>(big.size()), 0, true);
        return n >= 0 ? big.substr(0, static_cast<size_t>(n)) : std::string();
    }

    // ---- loop thread ------------------------------------------------------------------------------

    void run() {
        lowerThreadPriority(nice);
        // This thread computes at its own priority; the helpers are made at kHelperNice (llama.cpp's polling default).
        threadpool.attach(ctx, threads, 50, std::max(nice, kHelperNice));
        governor.start(threads, threadpool.helpers());
        threadsActive.store(threads);
        llama_memory_t memory = llama_get_memory(ctx);
        for (;;) {
            std::deque<Command> pendingCommands;
            {
                std::unique_lock<std::mutex> lock(commandMutex);
                wake.wait(lock, [&] { return stopping || !commands.empty() || anyActive(); });
                if (stopping) return;
                pendingCommands.swap(commands);
            }
            auto* step = new StepEvents();
            promptCache.beginCommands();
            // Nothing thrown on this thread may escape it (std::terminate would end the process): a step
            // that throws past the per-slot guards fails the slots still active, and the loop goes on.
            try {
                for (auto& command : pendingCommands) applyCommand(command, memory, *step);
                for (auto& slot : slots) {
                    if (slot->phase != SlotPhase::Idle && slot->endJob.load() == slot->job->id) finish(*slot, "ended", "", *step);
                }
                if (anyActive()) {
                    yieldToRetrieval();
                    followLoad();
                    decodeStep(memory, *step);
                    governor.afterDecode();
                }
            } catch (const std::exception& e) {
                failActive(memory, std::string("the generation step failed: ") + e.what(), *step);
            } catch (...) {
                failActive(memory, "the generation step failed", *step);
            }
            if (step->events.empty() || !deliver) delete step;
            else deliver(step);
        }
    }

    // Waits while a retrieval decode runs, at most kMaxYield (new commands wait for the next step meanwhile).
    void yieldToRetrieval() {
        if (retrievalRunning.load() <= 0) return;
        std::unique_lock<std::mutex> lock(commandMutex);
        wake.wait_for(lock, kMaxYield, [&] { return stopping || retrievalRunning.load() <= 0; });
    }

    // The thread count of the next decode, as the governor reads the machine's load.
    void followLoad() {
        const int32_t n = governor.beforeDecode();
        if (n == threadsActive.load()) return;
        llama_set_n_threads(ctx, n, n);
        threadsActive.store(n);
        threadChanges.store(governor.changes());
    }

    void failActive(llama_memory_t memory, const std::string& error, StepEvents& step) noexcept {
        for (auto& slot : slots) {
            if (slot->phase == SlotPhase::Idle) continue;
            try {
                // The cache is no longer known to match the KV cells: drop both.
                llama_memory_seq_rm(memory, slot->id, -1, -1);
                slot->cache.clear();
                finish(*slot, "error", error, step, "internal");
            } catch (...) {
                slot->phase = SlotPhase::Idle;
                slot->busy.store(false);
            }
        }
    }

    bool anyActive() const {
        for (const auto& slot : slots) if (slot->phase != SlotPhase::Idle) return true;
        return false;
    }

    SlotEvent& eventFor(Slot& slot, StepEvents& step) {
        for (auto& event : step.events) {
            if (!event.trimmed && event.slot == slot.id && event.jobId == slot.job->id) return event;
        }
        step.events.emplace_back();
        auto& event = step.events.back();
        event.slot = slot.id;
        event.jobId = slot.job->id;
        event.withLogprobs = slot.job->logprobsTop >= 0;
        return event;
    }

    void setCache(Slot& slot, size_t length) {
        slot.cache.resize(length);
        slot.cachedCount.store(static_cast<int32_t>(length));
    }

    // Publishes an idle slot's cache for slot choice (a copy made here, on the loop thread, outside the lock).
    void publish(Slot& slot) {
        auto snapshot = std::make_shared<const std::vector<llama_token>>(slot.cache);
        std::lock_guard<std::mutex> lock(stateMutex);
        slot.snapshot = std::move(snapshot);
    }

    void applyCommand(Command& command, llama_memory_t memory, StepEvents& step) {
        Slot& slot = *slots[static_cast<size_t>(command.slot)];
        if (command.kind == Command::Task) {
            promptCache.runTask(*command.task, ctx, memory, slotAccess);
            step.events.emplace_back();
            step.events.back().taskId = command.task->id;
            cacheTasks.post(std::move(command.task));
            return;
        }
        if (command.kind == Command::Trim) {
            if (slot.phase == SlotPhase::Idle && command.length < static_cast<int32_t>(slot.cache.size())) {
                if (!llama_memory_seq_rm(memory, slot.id, command.length, -1)) {
                    llama_memory_seq_rm(memory, slot.id, -1, -1);
                    setCache(slot, 0);
                } else {
                    setCache(slot, static_cast<size_t>(command.length));
                }
                publish(slot);
            }
            step.events.emplace_back();
            step.events.back().slot = slot.id;
            step.events.back().trimmed = true;
            return;
        }
        if (slot.phase != SlotPhase::Idle) {
            // JS reserves a slot before starting a job; reaching here is a bug in the caller.
            SlotEvent event;
            event.slot = slot.id;
            event.jobId = command.job->id;
            event.done = "error";
            event.error = "slot is busy";
            event.errorKind = "internal";
            step.events.push_back(std::move(event));
            return;
        }
        slot.job = std::move(command.job);
        const auto& prompt = slot.job->prompt;
        // The longest computed prefix of the prompt from any tier (this slot, another slot, host memory);
        // the prompt's last token is always decoded again, because its logits give the first new token.
        bora::CacheTier tier = bora::CacheTier::None;
        const size_t keep = promptCache.prepareSlot(ctx, memory, slotAccess, slot.id, prompt, tier);
        slot.promptPos = keep;
        slot.cachedPromptTokens = static_cast<int32_t>(keep);
        slot.evaluated = 0;
        slot.generated = 0;
        slot.pending = LLAMA_TOKEN_NULL;
        slot.startOrder = ++startCounter;
        slot.phase = SlotPhase::Prompt;
        std::string error;
        try {
            error = slot.sampler.build(slot.job->sampling, slot.job->grammar, prompt, vocab, nVocab, noEndBias);
        } catch (const std::exception& e) {
            error = std::string("the sampler could not be built: ") + e.what();
        }
        if (!error.empty()) finish(slot, "error", error, step, "request");
    }

    void finish(Slot& slot, const char* reason, const std::string& error, StepEvents& step, const char* errorKind = "") {
        auto& event = eventFor(slot, step);
        event.done = reason;
        event.error = error;
        event.errorKind = errorKind;
        event.cachedPromptTokens = slot.cachedPromptTokens;
        event.evaluatedTokens = slot.evaluated;
        slot.phase = SlotPhase::Idle;
        slot.batchIndex = -1;
        slot.freeSamplers();
        publish(slot);
        slot.busy.store(false);
    }

    // One slot's tokens in this step's batch: [start, start + tokens.size()), contiguous.
    struct BatchEntry {
        Slot* slot;
        int32_t start;
        std::vector<llama_token> tokens;
        size_t decoded = 0;  // how many of them are in the KV cache now
        bool prompt;
    };

    void decodeStep(llama_memory_t memory, StepEvents& step) {
        batch.n_tokens = 0;
        std::vector<BatchEntry> added;
        // 1. one token for every generating slot: streams never wait behind prompts
        for (auto& slotPtr : slots) {
            Slot& slot = *slotPtr;
            slot.batchIndex = -1;
            if (slot.phase != SlotPhase::Generating) continue;
            // Capacity before writing: slots <= batch size is checked at load, so this only guards a bug.
            if (batch.n_tokens >= batchSize) break;
            if (static_cast<int32_t>(slot.cache.size()) >= contextPerSlot) {
                finish(slot, "length", "", step);
                continue;
            }
            added.push_back({&slot, batch.n_tokens, {slot.pending}, 0, false});
            addToken(slot.pending, static_cast<llama_pos>(slot.cache.size()), slot.id, true);
            slot.batchIndex = batch.n_tokens - 1;
        }
        // 2. prompt chunks in arrival order, within what is left of the batch budget
        std::vector<Slot*> prompting;
        for (auto& slotPtr : slots) if (slotPtr->phase == SlotPhase::Prompt) prompting.push_back(slotPtr.get());
        std::sort(prompting.begin(), prompting.end(), [](const Slot* a, const Slot* b) { return a->startOrder < b->startOrder; });
        for (Slot* slot : prompting) {
            const auto& prompt = slot->job->prompt;
            const int32_t room = batchSize - batch.n_tokens;
            if (room <= 0) break;
            const size_t take = std::min(static_cast<size_t>(room), prompt.size() - slot->promptPos);
            std::vector<llama_token> chunk(prompt.begin() + static_cast<std::ptrdiff_t>(slot->promptPos),
                                           prompt.begin() + static_cast<std::ptrdiff_t>(slot->promptPos + take));
            const size_t base = slot->cache.size();
            const int32_t start = batch.n_tokens;
            for (size_t i = 0; i < take; i++) {
                const bool last = slot->promptPos + i + 1 == prompt.size();
                addToken(chunk[i], static_cast<llama_pos>(base + i), slot->id, last);
                if (last) slot->batchIndex = batch.n_tokens - 1;
            }
            slot->promptPos += take;
            added.push_back({slot, start, std::move(chunk), 0, true});
        }
        if (batch.n_tokens == 0) return;

        // 3. decode in views of the batch, as llama-server's update_slots: status 1 (no KV cells for the
        //    ubatch) retries the same tokens with half the view; any other failure ends only the slots
        //    whose tokens were in the failing view. Each view's logits are sampled before the next decode
        //    overwrites them.
        const int32_t total = batch.n_tokens;
        int32_t offset = 0;
        int32_t view = total;
        abortableStep = std::none_of(added.begin(), added.end(), [](const BatchEntry& e) { return e.prompt; });
        while (offset < total) {
            const int32_t n = std::min(view, total - offset);
            llama_batch part{n, batch.token + offset, nullptr, batch.pos + offset, batch.n_seq_id + offset, batch.seq_id + offset, batch.logits + offset};
            int32_t status = 0;
            std::string thrown;
            try {
                status = llama_decode(ctx, part);
            } catch (const std::exception& e) {
                status = -3;
                thrown = e.what();
            }
            if (status == 1 && n > 1) {
                view = n / 2;
                continue;
            }
            if (status == 2) {
                // Aborted for a retrieval decode: llama.cpp dropped the view's cells; what was not decoded is
                // decoded in a later step (a generating slot keeps its pending token).
                abortableStep = false;
                yieldAborts.fetch_add(1);
                for (auto& entry : added) {
                    const int32_t end = entry.start + static_cast<int32_t>(entry.tokens.size());
                    if (end <= offset) continue;
                    Slot& slot = *entry.slot;
                    llama_memory_seq_rm(memory, slot.id, static_cast<llama_pos>(slot.cache.size()), -1);
                    if (entry.prompt) slot.promptPos -= entry.tokens.size() - entry.decoded;
                }
                return;
            }
            if (status != 0) {
                const std::string error = !thrown.empty() ? "llama_decode threw: " + thrown
                    : status == 1 ? "no room in the KV cache for this slot's tokens"
                    : "llama_decode failed with status " + std::to_string(status);
                for (auto& entry : added) {
                    const int32_t end = entry.start + static_cast<int32_t>(entry.tokens.size());
                    if (end <= offset) continue;  // decoded and sampled already
                    Slot& slot = *entry.slot;
                    if (entry.start < offset + n) {
                        // In the failing view: undo what reached the cache, end the slot.
                        llama_memory_seq_rm(memory, slot.id, static_cast<llama_pos>(slot.cache.size()), -1);
                        if (slot.phase != SlotPhase::Idle) finish(slot, "error", error, step, "internal");
                    } else if (entry.prompt) {
                        // Not tried: decoded in a later step.
                        slot.promptPos -= entry.tokens.size();
                    }
                    // A generating slot not tried keeps its pending token for the next step.
                }
                return;
            }
            for (auto& entry : added) {
                const int32_t end = entry.start + static_cast<int32_t>(entry.tokens.size());
                const int32_t from = std::max(entry.start + static_cast<int32_t>(entry.decoded), offset);
                const int32_t to = std::min(end, offset + n);
                if (from >= to) continue;
                Slot& slot = *entry.slot;
                const auto first = entry.tokens.begin() + (from - entry.start);
                slot.cache.insert(slot.cache.end(), first, first + (to - from));
                slot.cachedCount.store(static_cast<int32_t>(slot.cache.size()));
                entry.decoded += static_cast<size_t>(to - from);
                slot.evaluated += to - from;
                slot.tokensDecoded.fetch_add(to - from);
                // 4. sample the slot if its logits row was in this view
                if (slot.phase != SlotPhase::Idle && slot.batchIndex >= offset && slot.batchIndex < offset + n) {
                    sampleGuarded(slot, slot.batchIndex - offset, step);
                }
            }
            offset += n;
        }
        abortableStep = false;
    }

    bool addToken(llama_token token, llama_pos pos, llama_seq_id seq, bool logits) {
        const int32_t i = batch.n_tokens;
        if (i >= batchSize) return false;
        batch.token[i] = token;
        batch.pos[i] = pos;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = seq;
        batch.logits[i] = logits ? 1 : 0;
        batch.n_tokens++;
        return true;
    }

    // llama.cpp's grammar sampler throws (std::runtime_error) when a token it is given to accept leaves
    // the grammar nowhere to go; any sampler may throw on allocation. Either ends this slot only.
    void sampleGuarded(Slot& slot, int32_t row, StepEvents& step) {
        try {
            sampleSlot(slot, row, step);
        } catch (const std::exception& e) {
            finish(slot, "error", std::string("sampling failed: ") + e.what(), step, slot.sampler.hasGrammar() ? "request" : "internal");
        }
    }

    static constexpr const char* kNoCandidate =
        "no token can follow: the grammar allows only tokens this request bans (an end-of-generation token with ignore_eos)";

    void sampleSlot(Slot& slot, int32_t row, StepEvents& step) {
        const float* logits = llama_get_logits_ith(ctx, row);
        if (logits == nullptr) return finish(slot, "error", "no logits for the slot", step, "internal");
        const llama_token id = slot.sampler.sample(logits, candidates, slot.job->sampling.ignoreEos);
        if (id == LLAMA_TOKEN_NULL) return finish(slot, "error", kNoCandidate, step, "request");

        auto& event = eventFor(slot, step);
        TokenOut out;
        out.id = id;
        out.isEnd = llama_vocab_is_eog(vocab, id);
        if (!out.isEnd) out.piece = piece(id);
        if (slot.job->logprobsTop >= 0) {
            auto probs = logprobsOf(logits, nVocab, id, slot.job->logprobsTop);
            out.logprob = probs.logprob;
            out.topIds = std::move(probs.topIds);
            out.topLogprobs = std::move(probs.topLogprobs);
            for (llama_token t : out.topIds) out.topPieces.push_back(piece(t));
        }
        event.tokens.push_back(std::move(out));
        slot.generated++;

        if (event.tokens.back().isEnd) return finish(slot, "eog", "", step);
        if (slot.generated >= slot.job->maxTokens) return finish(slot, "length", "", step);
        if (static_cast<int32_t>(slot.cache.size()) >= contextPerSlot) return finish(slot, "length", "", step);
        slot.pending = id;
        slot.phase = SlotPhase::Generating;
    }
};


}  // namespace bora::slotloop
