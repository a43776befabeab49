// The generation slot loop: llama-server's `update_slots` shape, in-process.
//
// One llama_context with n_seq_max = slots and ONE loop thread. Each step:
//   1. apply commands from JS (start a job on a slot, trim a slot's cache) and cancellation flags,
//   2. build ONE batch: the last sampled token of every generating slot, then chunks of waiting
//      prompts up to the batch budget (chunked prefill interleaved with decode),
//   3. llama_decode once,
//   4. sample every slot that got logits, in this thread, with llama.cpp's sampler chain (grammar by
//      rejection sampling as common_sampler does), optional logprobs from the RAW logits,
//   5. hand all new tokens of the step to JS in ONE ThreadSafeFunction call.
// Text work (UTF-8, stop strings, <think>) is done in TypeScript on the token stream.
// Nothing thrown on the loop thread leaves it: a failing step or slot ends with an error event for the
// slots concerned and the loop goes on (docs/native-guards.md).
//
// JS surface (wrapped by slotLoop.ts, the only caller):
//   new SlotLoop(modelPath, { threads, slots, contextSize, batchSize, gpuLayers, flashAttention?, nice? }, onStep)
//   load(): Promise<{ slots, contextSize, batchSize, threads, vocabSize }>   starts the loop thread
//   start(slot, jobId, prompt: Uint32Array, params)   queue a job on an idle slot
//   end(slot, jobId)                                  the job ends within one step (cancel / stop string)
//   trim(slot, length)                                drop an idle slot's cache after `length` tokens
//   slotTokens(slot): Uint32Array                     tokens in the slot's KV cache as of its last idle moment
//   commonPrefix(slot, prompt: Uint32Array): number   leading prompt tokens that cache holds (slot choice)
//   slotStates(): { busy, cachedTokens, tokensDecoded }[]
//   dispose(): Promise<void>
// onStep(events) receives, once per step, an array of per-slot events:
//   { slot, jobId, tokens: Uint32Array, pieces: Uint8Array[], ends: boolean[], logprobs?: Float32Array,
//     top?: { ids: Uint32Array, logprobs: Float32Array, pieces: Uint8Array[] }[],
//     done?: "eog" | "length" | "ended" | "error", error?: string, errorKind?: "request" | "internal",
//     cachedPromptTokens, evaluatedTokens }
//   or { slot, trimmed: true } acknowledging a trim.

#include <napi.h>

#include <dlfcn.h>
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
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ggml-backend.h"
#include "llama.h"
#include "llama_backends.h"
#include "prompt_cache_napi.h"

namespace {

constexpr int32_t kMaxTopLogprobs = 20;

struct SamplingParams {
    float temperature = 0.0f;
    float topP = 1.0f;
    int32_t topK = 0;
    float minP = 0.0f;
    uint32_t seed = 0;
    float repeatPenalty = 1.0f;
    float presencePenalty = 0.0f;
    float frequencyPenalty = 0.0f;
    int32_t penaltyLastN = 64;
    bool ignoreEos = false;
    std::vector<llama_logit_bias> logitBias;  // the request's own biases (OpenAI's logit_bias)
};

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
    llama_sampler* chain = nullptr;
    llama_sampler* grammar = nullptr;
    bool plainGreedy = false;  // temperature 0 and nothing else in the chain: argmax of the logits
    std::atomic<uint32_t> endJob{0};  // a job id JS asked to end
    std::atomic<bool> busy{false};
    std::atomic<int64_t> tokensDecoded{0};
    std::atomic<int32_t> cachedCount{0};

    void freeSamplers() {
        if (chain != nullptr) llama_sampler_free(chain);
        if (grammar != nullptr) llama_sampler_free(grammar);
        chain = nullptr;
        grammar = nullptr;
    }
};

using bora::ensureBackendsLoaded;

// Lowers the calling thread's CPU priority to `nice` (Linux: nice is per thread, and threads it creates
// later inherit it, which covers ggml's compute threads and an OpenMP build's team, both started from
// the loop thread). Raising the nice value needs no privilege. The effect: when an embedding, an HTTP
// request or a health probe needs a core, the kernel runs it ahead of the spinning decode threads;
// with nothing else runnable the decode gets the cores as before. Elsewhere it does nothing.
void lowerThreadPriority(int32_t nice) {
#if defined(__linux__)
    if (nice > 0) setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), nice);
#else
    (void)nice;
#endif
}

struct LoopCore;
void deliverStep(Napi::Env env, Napi::Function callback, LoopCore* core, StepEvents* step);
using StepTsfn = Napi::TypedThreadSafeFunction<LoopCore, StepEvents, deliverStep>;

struct LoopCore {
    std::string modelPath;
    int32_t threads = 1;
    int32_t slotCount = 1;
    int32_t contextPerSlot = 2048;
    int32_t batchSize = 512;
    int32_t gpuLayers = 0;
    int32_t nice = 0;  // the loop thread's (and so its compute threads') nice value; 0: unchanged
    enum llama_flash_attn_type flashAttention = LLAMA_FLASH_ATTN_TYPE_AUTO;

    llama_model* model = nullptr;
    llama_context* ctx = nullptr;
    const llama_vocab* vocab = nullptr;
    int32_t nVocab = 0;
    std::vector<llama_logit_bias> noEndBias;  // -inf on every end-of-generation token (ignore_eos)
    llama_batch batch{};
    bool batchAllocated = false;
    bora::CpuThreadpool threadpool;
    std::vector<std::unique_ptr<Slot>> slots;

    std::thread thread;
    std::mutex commandMutex;
    std::condition_variable wake;
    std::deque<Command> commands;
    bool stopping = false;
    std::mutex stateMutex;  // guards Slot::snapshot for readers on the JS thread
    StepTsfn tsfn;
    bool tsfnCreated = false;
    // Jobs and trims JS still waits for (JS thread only): while any, the hand-off keeps the process alive.
    int32_t jsPending = 0;

    bool tsfnReleased = false;

    void holdProcess(Napi::Env env) {
        if (jsPending++ == 0 && tsfnCreated && !tsfnReleased) tsfn.Ref(env);
    }
    void releaseProcess(Napi::Env env) {
        if (jsPending > 0 && --jsPending == 0 && tsfnCreated && !tsfnReleased) tsfn.Unref(env);
    }
    uint64_t startCounter = 0;
    std::vector<llama_token_data> candidates;
    bora::PromptCache promptCache;
    bora::SlotAccess slotAccess;
    bora::CacheTaskMailbox cacheTasks;

    ~LoopCore() { release(); }

    // Node is tearing the environment down (process exit without dispose): the loop thread must not
    // outlive it.
    static void onEnvCleanup(void* arg) { static_cast<LoopCore*>(arg)->stopThread(); }
    bool cleanupHookAdded = false;

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
        // Logits are read for at most one position per slot per decode (a prompt's last token or a slot's
        // next token). Without this llama.cpp sizes the output buffer and the worst-case graph for
        // n_batch outputs: n_batch x n_vocab floats (512 x 151936 x 4 B = 311 MB) that are never read.
        ctxParams.n_outputs_max = static_cast<uint32_t>(slotCount);
        ctx = llama_init_from_model(model, ctxParams);
        if (ctx == nullptr) return "failed to create the generation context";
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
        // After the priority, on this thread, so the pool's threads inherit it (llama.cpp's polling default).
        threadpool.attach(ctx, threads, 50);
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
                if (anyActive()) decodeStep(memory, *step);
            } catch (const std::exception& e) {
                failActive(memory, std::string("the generation step failed: ") + e.what(), *step);
            } catch (...) {
                failActive(memory, "the generation step failed", *step);
            }
            if (step->events.empty() || !tsfnCreated) {
                delete step;
            } else if (tsfn.NonBlockingCall(step) != napi_ok) {
                delete step;
            }
        }
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
            error = buildSamplers(slot);
        } catch (const std::exception& e) {
            error = std::string("the sampler could not be built: ") + e.what();
        }
        if (!error.empty()) finish(slot, "error", error, step, "request");
    }

    // The chain common_sampler_init builds for llama-server, in its order (logit bias, penalties, top-k,
    // top-p, min-p, temperature, dist; the samplers this API cannot turn on are no-ops there), so the same
    // seed and settings give llama-server's tokens. Samplers at their "off" value are left out: each of
    // them returns at once there without touching the candidates.
    std::string buildSamplers(Slot& slot) {
        slot.freeSamplers();
        const Job& job = *slot.job;
        const SamplingParams& s = job.sampling;
        auto params = llama_sampler_chain_default_params();
        params.no_perf = true;
        slot.chain = llama_sampler_chain_init(params);
        std::vector<llama_logit_bias> bias = s.logitBias;
        if (s.ignoreEos) bias.insert(bias.end(), noEndBias.begin(), noEndBias.end());
        if (!bias.empty()) {
            llama_sampler_chain_add(slot.chain, llama_sampler_init_logit_bias(nVocab, static_cast<int32_t>(bias.size()), bias.data()));
        }
        const bool penalties = s.penaltyLastN != 0 && (s.repeatPenalty != 1.0f || s.presencePenalty != 0.0f || s.frequencyPenalty != 0.0f);
        if (penalties) {
            llama_sampler_chain_add(slot.chain, llama_sampler_init_penalties(nVocab, s.penaltyLastN, s.repeatPenalty, s.frequencyPenalty, s.presencePenalty));
        }
        slot.plainGreedy = s.temperature <= 0.0f && !penalties && bias.empty() && job.grammar.empty();
        if (s.temperature <= 0.0f) {
            // llama-server's temperature 0 keeps only the highest logit (the first of equal ones): greedy.
            llama_sampler_chain_add(slot.chain, llama_sampler_init_greedy());
        } else {
            if (s.topK > 0) llama_sampler_chain_add(slot.chain, llama_sampler_init_top_k(s.topK));
            if (s.topP < 1.0f) llama_sampler_chain_add(slot.chain, llama_sampler_init_top_p(s.topP, 0));
            if (s.minP > 0.0f) llama_sampler_chain_add(slot.chain, llama_sampler_init_min_p(s.minP, 0));
            llama_sampler_chain_add(slot.chain, llama_sampler_init_temp(s.temperature));
            llama_sampler_chain_add(slot.chain, llama_sampler_init_dist(s.seed));
        }
        if (penalties) {
            // As llama-server's init_sampler: the prompt is in the penalty window (only its last n count).
            const auto& prompt = job.prompt;
            const size_t from = prompt.size() > static_cast<size_t>(s.penaltyLastN) ? prompt.size() - static_cast<size_t>(s.penaltyLastN) : 0;
            for (size_t i = from; i < prompt.size(); i++) llama_sampler_accept(slot.chain, prompt[i]);
        }
        if (!job.grammar.empty()) {
            slot.grammar = llama_sampler_init_grammar(vocab, job.grammar.c_str(), "root");
            if (slot.grammar == nullptr) return "the grammar could not be parsed";
        }
        return "";
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

    void fillCandidates(const float* logits) {
        for (int32_t t = 0; t < nVocab; t++) candidates[static_cast<size_t>(t)] = {t, logits[t], 0.0f};
    }

    // llama.cpp's grammar sampler throws (std::runtime_error) when a token it is given to accept leaves
    // the grammar nowhere to go; any sampler may throw on allocation. Either ends this slot only.
    void sampleGuarded(Slot& slot, int32_t row, StepEvents& step) {
        try {
            sampleSlot(slot, row, step);
        } catch (const std::exception& e) {
            finish(slot, "error", std::string("sampling failed: ") + e.what(), step, slot.grammar != nullptr ? "request" : "internal");
        }
    }

    static constexpr const char* kNoCandidate =
        "no token can follow: the grammar allows only tokens this request bans (an end-of-generation token with ignore_eos)";

    void sampleSlot(Slot& slot, int32_t row, StepEvents& step) {
        const float* logits = llama_get_logits_ith(ctx, row);
        if (logits == nullptr) return finish(slot, "error", "no logits for the slot", step, "internal");
        llama_token id = LLAMA_TOKEN_NULL;
        if (slot.plainGreedy) {
            // The chain would only pick the maximum: skip copying the vocabulary into candidates.
            id = static_cast<llama_token>(std::max_element(logits, logits + nVocab) - logits);
        } else {
            fillCandidates(logits);
            llama_token_data_array cur{candidates.data(), candidates.size(), -1, false};
            llama_sampler_apply(slot.chain, &cur);
            id = cur.selected >= 0 && cur.data[cur.selected].logit != -INFINITY ? cur.data[cur.selected].id : LLAMA_TOKEN_NULL;
        }
        if (slot.grammar != nullptr) {
            // Rejection sampling (common_sampler): check the token against the grammar; only when it is
            // not allowed, apply the grammar to the whole vocabulary and sample again.
            llama_token_data single{id, 1.0f, 0.0f};
            llama_token_data_array one{&single, 1, -1, false};
            if (id != LLAMA_TOKEN_NULL) llama_sampler_apply(slot.grammar, &one);
            if (id == LLAMA_TOKEN_NULL || single.logit == -INFINITY) {
                fillCandidates(logits);
                llama_token_data_array cur{candidates.data(), candidates.size(), -1, false};
                llama_sampler_apply(slot.grammar, &cur);
                // Every token the grammar allows may be banned (ignore_eos at the grammar's end): the chain
                // would then pick some -inf token the grammar refuses, and accepting it throws.
                if (!anyAllowed(cur, slot.job->sampling.ignoreEos)) return finish(slot, "error", kNoCandidate, step, "request");
                llama_sampler_apply(slot.chain, &cur);
                id = cur.selected >= 0 && cur.data[cur.selected].logit != -INFINITY ? cur.data[cur.selected].id : LLAMA_TOKEN_NULL;
            }
        }
        if (id == LLAMA_TOKEN_NULL) return finish(slot, "error", kNoCandidate, step, "request");
        if (slot.grammar != nullptr) llama_sampler_accept(slot.grammar, id);
        llama_sampler_accept(slot.chain, id);

        auto& event = eventFor(slot, step);
        TokenOut out;
        out.id = id;
        out.isEnd = llama_vocab_is_eog(vocab, id);
        if (!out.isEnd) out.piece = piece(id);
        if (slot.job->logprobsTop >= 0) addLogprobs(out, logits, slot.job->logprobsTop);
        event.tokens.push_back(std::move(out));
        slot.generated++;

        if (event.tokens.back().isEnd) return finish(slot, "eog", "", step);
        if (slot.generated >= slot.job->maxTokens) return finish(slot, "length", "", step);
        if (static_cast<int32_t>(slot.cache.size()) >= contextPerSlot) return finish(slot, "length", "", step);
        slot.pending = id;
        slot.phase = SlotPhase::Generating;
    }

    bool anyAllowed(const llama_token_data_array& cur, bool ignoreEos) const {
        for (size_t i = 0; i < cur.size; i++) {
            if (cur.data[i].logit == -INFINITY) continue;
            if (ignoreEos && llama_vocab_is_eog(vocab, cur.data[i].id)) continue;
            return true;
        }
        return false;
    }

    // Log-softmax of the raw logits (before penalties, temperature and truncation).
    void addLogprobs(TokenOut& out, const float* logits, int32_t top) const {
        float maxLogit = -INFINITY;
        for (int32_t t = 0; t < nVocab; t++) maxLogit = std::max(maxLogit, logits[t]);
        double sum = 0.0;
        for (int32_t t = 0; t < nVocab; t++) sum += std::exp(static_cast<double>(logits[t] - maxLogit));
        const double logSum = static_cast<double>(maxLogit) + std::log(sum);
        out.logprob = static_cast<float>(static_cast<double>(logits[out.id]) - logSum);
        const int32_t n = std::min(top, std::min(kMaxTopLogprobs, nVocab));
        if (n <= 0) return;
        std::vector<llama_token> best;
        best.reserve(static_cast<size_t>(n) + 1);
        for (int32_t t = 0; t < nVocab; t++) {
            if (static_cast<int32_t>(best.size()) == n && logits[t] <= logits[best.back()]) continue;
            auto at = std::upper_bound(best.begin(), best.end(), t, [&](llama_token a, llama_token b) { return logits[a] > logits[b]; });
            best.insert(at, t);
            if (static_cast<int32_t>(best.size()) > n) best.pop_back();
        }
        for (llama_token t : best) {
            out.topIds.push_back(t);
            out.topLogprobs.push_back(static_cast<float>(static_cast<double>(logits[t]) - logSum));
            out.topPieces.push_back(piece(t));
        }
    }
};

Napi::Uint8Array bytesOf(Napi::Env env, const std::string& text) {
    auto array = Napi::Uint8Array::New(env, text.size());
    if (!text.empty()) std::memcpy(array.Data(), text.data(), text.size());
    return array;
}

void deliverStep(Napi::Env env, Napi::Function callback, LoopCore* core, StepEvents* step) {
    std::unique_ptr<StepEvents> owned(step);
    if (env == nullptr || callback.IsEmpty()) return;
    for (const auto& event : owned->events) {
        if (event.trimmed || event.taskId != 0 || !event.done.empty()) core->releaseProcess(env);
    }
    auto events = Napi::Array::New(env, owned->events.size());
    uint32_t index = 0;
    for (const auto& event : owned->events) {
        auto object = Napi::Object::New(env);
        object.Set("slot", Napi::Number::New(env, event.slot));
        if (event.taskId != 0) {
            object.Set("task", Napi::Number::New(env, event.taskId));
            events.Set(index++, object);
            continue;
        }
        if (event.trimmed) {
            object.Set("trimmed", Napi::Boolean::New(env, true));
            events.Set(index++, object);
            continue;
        }
        object.Set("jobId", Napi::Number::New(env, event.jobId));
        const size_t n = event.tokens.size();
        auto ids = Napi::Uint32Array::New(env, n);
        auto pieces = Napi::Array::New(env, n);
        auto ends = Napi::Array::New(env, n);
        for (size_t i = 0; i < n; i++) {
            const auto& token = event.tokens[i];
            ids[i] = static_cast<uint32_t>(token.id);
            pieces.Set(static_cast<uint32_t>(i), bytesOf(env, token.piece));
            ends.Set(static_cast<uint32_t>(i), Napi::Boolean::New(env, token.isEnd));
        }
        object.Set("tokens", ids);
        object.Set("pieces", pieces);
        object.Set("ends", ends);
        if (event.withLogprobs) {
            auto logprobs = Napi::Float32Array::New(env, n);
            auto tops = Napi::Array::New(env, n);
            for (size_t i = 0; i < n; i++) {
                const auto& token = event.tokens[i];
                logprobs[i] = token.logprob;
                auto top = Napi::Object::New(env);
                auto topIds = Napi::Uint32Array::New(env, token.topIds.size());
                auto topLogprobs = Napi::Float32Array::New(env, token.topLogprobs.size());
                auto topPieces = Napi::Array::New(env, token.topPieces.size());
                for (size_t k = 0; k < token.topIds.size(); k++) {
                    topIds[k] = static_cast<uint32_t>(token.topIds[k]);
                    topLogprobs[k] = token.topLogprobs[k];
                    topPieces.Set(static_cast<uint32_t>(k), bytesOf(env, token.topPieces[k]));
                }
                top.Set("ids", topIds);
                top.Set("logprobs", topLogprobs);
                top.Set("pieces", topPieces);
                tops.Set(static_cast<uint32_t>(i), top);
            }
            object.Set("logprobs", logprobs);
            object.Set("top", tops);
        }
        if (!event.done.empty()) {
            object.Set("done", Napi::String::New(env, event.done));
            if (!event.error.empty()) object.Set("error", Napi::String::New(env, event.error));
            if (!event.errorKind.empty()) object.Set("errorKind", Napi::String::New(env, event.errorKind));
            object.Set("cachedPromptTokens", Napi::Number::New(env, event.cachedPromptTokens));
            object.Set("evaluatedTokens", Napi::Number::New(env, event.evaluatedTokens));
        }
        events.Set(index++, object);
    }
    // A JS exception must not unwind through the thread-safe call (that would terminate the process);
    // slotLoop.ts catches per job, this is the last guard.
    try {
        callback.Call({events});
    } catch (const Napi::Error& e) {
        fprintf(stderr, "[slot_loop] step handler threw: %s\n", e.Message().c_str());
    }
}

class SlotLoop : public Napi::ObjectWrap<SlotLoop> {
   public:
    static Napi::Function Define(Napi::Env env) {
        return DefineClass(env, "SlotLoop",
                           {
                               InstanceMethod("load", &SlotLoop::Load),
                               InstanceMethod("start", &SlotLoop::Start),
                               InstanceMethod("end", &SlotLoop::End),
                               InstanceMethod("trim", &SlotLoop::Trim),
                               InstanceMethod("slotTokens", &SlotLoop::SlotTokens),
                               InstanceMethod("commonPrefix", &SlotLoop::CommonPrefix),
                               InstanceMethod("slotStates", &SlotLoop::SlotStates),
                               InstanceMethod("dispose", &SlotLoop::Dispose),
                               InstanceMethod("cacheTask", &SlotLoop::CacheTask),
                               InstanceMethod("takeCacheTask", &SlotLoop::TakeCacheTask),
                               InstanceMethod("cacheImport", &SlotLoop::CacheImport),
                               InstanceMethod("cacheStats", &SlotLoop::CacheStats),
                           });
    }

    explicit SlotLoop(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SlotLoop>(info), core(std::make_unique<LoopCore>()) {
        Napi::Env env = info.Env();
        if (info.Length() < 3 || !info[0].IsString() || !info[1].IsObject() || !info[2].IsFunction()) {
            throw Napi::TypeError::New(env, "SlotLoop(modelPath: string, options: object, onStep: function) expected");
        }
        core->modelPath = info[0].As<Napi::String>().Utf8Value();
        const auto options = info[1].As<Napi::Object>();
        core->threads = readInt(env, options, "threads", 1, 1024);
        core->slotCount = readInt(env, options, "slots", 1, 256);
        core->contextPerSlot = readInt(env, options, "contextSize", 16, 1 << 24);
        core->batchSize = readInt(env, options, "batchSize", 1, 1 << 20);
        core->gpuLayers = readInt(env, options, "gpuLayers", -1, 1 << 20);
        if (options.Has("nice")) core->nice = readInt(env, options, "nice", 0, 19);
        if (options.Has("promptCacheKiB")) core->promptCache.limitBytes = static_cast<size_t>(readInt(env, options, "promptCacheKiB", 0, 1 << 30)) << 10;
        if (options.Has("promptCacheMinTokens")) core->promptCache.minTokens = static_cast<size_t>(readInt(env, options, "promptCacheMinTokens", 1, 1 << 20));
        const auto flash = options.Get("flashAttention");
        if (flash.IsBoolean()) core->flashAttention = flash.As<Napi::Boolean>().Value() ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
        onStep = Napi::Persistent(info[2].As<Napi::Function>());
    }

    ~SlotLoop() override {
        if (!core) return;
        if (core->cleanupHookAdded) napi_remove_env_cleanup_hook(Env(), LoopCore::onEnvCleanup, core.get());
        core->release();
        if (core->tsfnCreated) {
            core->tsfnReleased = true;
            core->tsfn.Release();
            (void)core.release();  // freed by the hand-off's finalizer
        }
    }

    std::unique_ptr<LoopCore> core;
    Napi::FunctionReference onStep;
    bool loading = false;
    bool loaded = false;
    bool disposed = false;
    uint32_t lastTaskId = 0;

   private:
    static int32_t readInt(Napi::Env env, const Napi::Object& options, const char* key, int32_t min, int32_t max) {
        const auto value = options.Get(key);
        if (!value.IsNumber()) throw Napi::TypeError::New(env, std::string("option ") + key + " must be a number");
        const double number = value.As<Napi::Number>().DoubleValue();
        if (!(number >= min && number <= max) || number != std::floor(number)) {
            throw Napi::RangeError::New(env, std::string("option ") + key + " must be an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
        }
        return static_cast<int32_t>(number);
    }

    // Every entry point that touches the core goes through this: after dispose() the core has moved
    // to the dispose worker (and is freed by the hand-off), so `core` is null.
    void requireCore(Napi::Env env) const {
        if (!core || disposed) throw Napi::Error::New(env, "the slot loop is disposed");
    }

    static double readNumber(Napi::Env env, const Napi::Object& options, const char* key, double min, double max) {
        const auto value = options.Get(key);
        if (!value.IsNumber()) throw Napi::TypeError::New(env, std::string("option ") + key + " must be a number");
        const double number = value.As<Napi::Number>().DoubleValue();
        // NaN fails both comparisons: refused, never handed to a sampler.
        if (!(number >= min && number <= max)) {
            throw Napi::RangeError::New(env, std::string("option ") + key + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
        }
        return number;
    }

    static float readFloat(Napi::Env env, const Napi::Object& options, const char* key, float min, float max) {
        return static_cast<float>(readNumber(env, options, key, min, max));
    }

    // logitBias: token ids and their biases, two arrays of the same length (a bias may be -Infinity: banned).
    std::vector<llama_logit_bias> readLogitBias(Napi::Env env, const Napi::Object& params) const {
        std::vector<llama_logit_bias> out;
        const auto value = params.Get("logitBias");
        if (value.IsUndefined()) return out;
        if (!value.IsObject()) throw Napi::TypeError::New(env, "option logitBias must be {ids, biases}");
        const auto bias = value.As<Napi::Object>();
        const auto ids = bias.Get("ids");
        const auto values = bias.Get("biases");
        if (!ids.IsTypedArray() || !values.IsTypedArray()) throw Napi::TypeError::New(env, "option logitBias must be {ids: Uint32Array, biases: Float32Array}");
        const auto idArray = ids.As<Napi::Uint32Array>();
        const auto biasArray = values.As<Napi::Float32Array>();
        if (idArray.ElementLength() != biasArray.ElementLength()) throw Napi::RangeError::New(env, "logitBias ids and biases differ in length");
        for (size_t i = 0; i < idArray.ElementLength(); i++) {
            if (idArray[i] >= static_cast<uint32_t>(core->nVocab)) throw Napi::RangeError::New(env, "logitBias: token id outside the vocabulary");
            const float b = biasArray[i];
            if (std::isnan(b) || b == INFINITY) throw Napi::RangeError::New(env, "logitBias: a bias must be a number or -Infinity");
            out.push_back({static_cast<llama_token>(idArray[i]), b});
        }
        return out;
    }

    Slot& slotArg(const Napi::CallbackInfo& info, size_t index) {
        Napi::Env env = info.Env();
        requireCore(env);
        if (!loaded) throw Napi::Error::New(env, "the slot loop is not running");
        if (info.Length() <= index || !info[index].IsNumber()) throw Napi::TypeError::New(env, "slot number expected");
        const int32_t slot = info[index].As<Napi::Number>().Int32Value();
        if (slot < 0 || slot >= core->slotCount) throw Napi::RangeError::New(env, "no such slot");
        return *core->slots[static_cast<size_t>(slot)];
    }

    void push(Command command) {
        {
            std::lock_guard<std::mutex> lock(core->commandMutex);
            core->commands.push_back(std::move(command));
        }
        core->wake.notify_one();
    }

    Napi::Value Load(const Napi::CallbackInfo& info);
    Napi::Value Dispose(const Napi::CallbackInfo& info);

    Napi::Value Start(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        Slot& slot = slotArg(info, 0);
        if (info.Length() < 4 || !info[1].IsNumber() || !info[2].IsTypedArray() || !info[3].IsObject()) {
            throw Napi::TypeError::New(env, "start(slot, jobId, prompt: Uint32Array, params: object) expected");
        }
        if (slot.busy.load()) throw Napi::Error::New(env, "slot " + std::to_string(slot.id) + " is busy");
        auto job = std::make_unique<Job>();
        job->id = info[1].As<Napi::Number>().Uint32Value();
        const auto prompt = info[2].As<Napi::Uint32Array>();
        if (prompt.ElementLength() == 0) throw Napi::RangeError::New(env, "the prompt is empty");
        if (prompt.ElementLength() >= static_cast<size_t>(core->contextPerSlot)) throw Napi::RangeError::New(env, "the prompt does not fit the slot's context");
        job->prompt.resize(prompt.ElementLength());
        for (size_t i = 0; i < prompt.ElementLength(); i++) {
            if (prompt[i] >= static_cast<uint32_t>(core->nVocab)) throw Napi::RangeError::New(env, "token id outside the vocabulary");
            job->prompt[i] = static_cast<llama_token>(prompt[i]);
        }
        const auto params = info[3].As<Napi::Object>();
        job->maxTokens = readInt(env, params, "maxTokens", 1, 1 << 24);
        auto& s = job->sampling;
        s.temperature = readFloat(env, params, "temperature", 0.0f, 1e6f);
        s.topP = readFloat(env, params, "topP", 0.0f, 1.0f);
        s.topK = readInt(env, params, "topK", 0, 1 << 30);
        s.minP = readFloat(env, params, "minP", 0.0f, 1.0f);
        s.seed = static_cast<uint32_t>(readNumber(env, params, "seed", 0.0, 4294967295.0));
        // llama.h: penalty_repeat 1.0 = disabled; 0 or below divides logits by zero or flips their sign.
        s.repeatPenalty = readFloat(env, params, "repeatPenalty", 1e-6f, 1e6f);
        s.presencePenalty = readFloat(env, params, "presencePenalty", -1e6f, 1e6f);
        s.frequencyPenalty = readFloat(env, params, "frequencyPenalty", -1e6f, 1e6f);
        s.penaltyLastN = readInt(env, params, "penaltyLastN", 0, 1 << 24);
        s.ignoreEos = params.Get("ignoreEos").ToBoolean().Value();
        s.logitBias = readLogitBias(env, params);
        const auto grammar = params.Get("grammar");
        if (grammar.IsString()) job->grammar = grammar.As<Napi::String>().Utf8Value();
        const auto top = params.Get("logprobsTop");
        if (top.IsNumber()) job->logprobsTop = std::clamp(top.As<Napi::Number>().Int32Value(), 0, kMaxTopLogprobs);
        slot.busy.store(true);
        core->holdProcess(env);
        Command command;
        command.kind = Command::Start;
        command.slot = slot.id;
        command.job = std::move(job);
        push(std::move(command));
        return env.Undefined();
    }

    Napi::Value End(const Napi::CallbackInfo& info) {
        Slot& slot = slotArg(info, 0);
        if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "end(slot, jobId) expected");
        slot.endJob.store(info[1].As<Napi::Number>().Uint32Value());
        core->wake.notify_one();
        return info.Env().Undefined();
    }

    Napi::Value Trim(const Napi::CallbackInfo& info) {
        Slot& slot = slotArg(info, 0);
        if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "trim(slot, length) expected");
        Command command;
        command.kind = Command::Trim;
        command.slot = slot.id;
        command.length = std::max(0, info[1].As<Napi::Number>().Int32Value());
        core->holdProcess(info.Env());
        push(std::move(command));
        return info.Env().Undefined();
    }

    // The slot's cache as of its last idle moment (the loop publishes it); only the pointer is copied
    // under the lock the loop also takes, never the tokens.
    std::shared_ptr<const std::vector<llama_token>> snapshotOf(const Slot& slot) {
        std::lock_guard<std::mutex> lock(core->stateMutex);
        return slot.snapshot;
    }

    Napi::Value SlotTokens(const Napi::CallbackInfo& info) {
        const auto tokens = snapshotOf(slotArg(info, 0));
        auto result = Napi::Uint32Array::New(info.Env(), tokens->size());
        for (size_t i = 0; i < tokens->size(); i++) result[i] = static_cast<uint32_t>((*tokens)[i]);
        return result;
    }

    // Prompt cache (prompt_cache_napi.h): queue a task for the loop thread, take its result once the step
    // event names it, import entries read from disk, read the counters.
    Napi::Value CacheTask(const Napi::CallbackInfo& info) {
        if (!loaded || disposed) throw Napi::Error::New(info.Env(), "the slot loop is not running");
        Command command;
        command.kind = Command::Task;
        command.task = bora::cacheTaskFromJs(info, ++lastTaskId, core->slotCount);
        const uint32_t id = command.task->id;
        core->holdProcess(info.Env());
        push(std::move(command));
        return Napi::Number::New(info.Env(), id);
    }

    Napi::Value TakeCacheTask(const Napi::CallbackInfo& info) {
        if (!core || info.Length() < 1 || !info[0].IsNumber()) return info.Env().Null();
        auto task = core->cacheTasks.take(info[0].As<Napi::Number>().Uint32Value());
        return task ? bora::cacheTaskToJs(info.Env(), *task) : info.Env().Null();
    }

    Napi::Value CacheImport(const Napi::CallbackInfo& info) {
        if (!loaded || disposed) throw Napi::Error::New(info.Env(), "the slot loop is not running");
        return bora::cacheImportFromJs(info, core->promptCache, core->nVocab);
    }

    Napi::Value CacheStats(const Napi::CallbackInfo& info) {
        if (!loaded || disposed) return info.Env().Null();
        return bora::cacheStatsToJs(info.Env(), core->promptCache);
    }

    // commonPrefix(slot, prompt: Uint32Array): how many leading prompt tokens the slot's cache holds, for
    // slot choice, without building a JS array of the cache.
    Napi::Value CommonPrefix(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const auto tokens = snapshotOf(slotArg(info, 0));
        if (info.Length() < 2 || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "commonPrefix(slot, prompt: Uint32Array) expected");
        const auto prompt = info[1].As<Napi::Uint32Array>();
        const size_t n = std::min(tokens->size(), prompt.ElementLength());
        size_t i = 0;
        while (i < n && static_cast<uint32_t>((*tokens)[i]) == prompt[i]) i++;
        return Napi::Number::New(env, static_cast<double>(i));
    }

    Napi::Value SlotStates(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        requireCore(env);
        auto result = Napi::Array::New(env, core->slots.size());
        for (size_t i = 0; i < core->slots.size(); i++) {
            const Slot& slot = *core->slots[i];
            auto state = Napi::Object::New(env);
            state.Set("busy", Napi::Boolean::New(env, slot.busy.load()));
            state.Set("cachedTokens", Napi::Number::New(env, slot.cachedCount.load()));
            state.Set("tokensDecoded", Napi::Number::New(env, static_cast<double>(slot.tokensDecoded.load())));
            result.Set(static_cast<uint32_t>(i), state);
        }
        return result;
    }
};

class LoadWorker : public Napi::AsyncWorker {
   public:
    LoadWorker(Napi::Env env, SlotLoop* owner, Napi::Object self)
        : Napi::AsyncWorker(env, "bora.slotLoop.load"), owner(owner), selfRef(Napi::Persistent(self)), deferred(Napi::Promise::Deferred::New(env)) {}

    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        try {
            error = owner->core->load();
        } catch (const std::exception& e) {
            error = e.what();
        }
        if (!error.empty()) {
            owner->core->release();
            SetError("failed to load the generation model: " + error);
        }
    }

    void OnOK() override {
        Napi::Env env = Env();
        auto& core = *owner->core;
        // The hand-off owns the core from dispose on: steps still queued are delivered before its finalizer
        // frees it.
        core.tsfn = StepTsfn::New(env, owner->onStep.Value(), "bora.slotLoop.step", 0, 1, &core,
                                  [](Napi::Env, void*, LoopCore* finalized) { delete finalized; });
        // An idle loop must not keep the process alive; dispose() releases it for good.
        core.tsfn.Unref(env);
        core.tsfnCreated = true;
        core.thread = std::thread([&core] { core.run(); });
        if (napi_add_env_cleanup_hook(env, LoopCore::onEnvCleanup, &core) == napi_ok) core.cleanupHookAdded = true;
        owner->loading = false;
        owner->loaded = true;
        auto result = Napi::Object::New(env);
        result.Set("slots", Napi::Number::New(env, core.slotCount));
        result.Set("contextSize", Napi::Number::New(env, core.contextPerSlot));
        result.Set("batchSize", Napi::Number::New(env, core.batchSize));
        result.Set("threads", Napi::Number::New(env, llama_n_threads(core.ctx)));
        result.Set("threadsBatch", Napi::Number::New(env, llama_n_threads_batch(core.ctx)));
        result.Set("vocabSize", Napi::Number::New(env, core.nVocab));
        result.Set("gpuLayers", Napi::Number::New(env, core.gpuLayers));
        deferred.Resolve(result);
    }

    void OnError(const Napi::Error& e) override {
        owner->loading = false;
        deferred.Reject(e.Value());
    }

   private:
    SlotLoop* owner;
    Napi::ObjectReference selfRef;
    Napi::Promise::Deferred deferred;
    std::string error;
};

class DisposeWorker : public Napi::AsyncWorker {
   public:
    DisposeWorker(Napi::Env env, SlotLoop* owner, Napi::Object self, std::unique_ptr<LoopCore> core)
        : Napi::AsyncWorker(env, "bora.slotLoop.dispose"), owner(owner), selfRef(Napi::Persistent(self)), deferred(Napi::Promise::Deferred::New(env)), core(std::move(core)) {}

    Napi::Promise Promise() { return deferred.Promise(); }

    // Joins the loop thread (it ends after its current step) and frees the context and the weights.
    void Execute() override { core->release(); }

    void OnOK() override {
        if (core->tsfnCreated) {
            core->tsfnReleased = true;
            core->tsfn.Release();
            (void)core.release();  // freed by the hand-off's finalizer
        } else {
            core.reset();
        }
        deferred.Resolve(Env().Undefined());
    }

    void OnError(const Napi::Error& e) override { deferred.Reject(e.Value()); }

   private:
    SlotLoop* owner;
    Napi::ObjectReference selfRef;
    Napi::Promise::Deferred deferred;
    std::unique_ptr<LoopCore> core;
};

Napi::Value SlotLoop::Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto deferred = Napi::Promise::Deferred::New(env);
    if (!core || disposed || loaded || loading) {
        deferred.Reject(Napi::Error::New(env, "the slot loop is already loaded or disposed").Value());
        return deferred.Promise();
    }
    ensureBackendsLoaded();
    if (ggml_backend_dev_count() == 0) {
        deferred.Reject(Napi::Error::New(env, "no ggml backend device is available").Value());
        return deferred.Promise();
    }
    loading = true;
    auto* worker = new LoadWorker(env, this, info.This().As<Napi::Object>());
    auto promise = worker->Promise();
    worker->Queue();
    return promise;
}

Napi::Value SlotLoop::Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (disposed || loading || !core) {
        auto deferred = Napi::Promise::Deferred::New(env);
        if (loading) deferred.Reject(Napi::Error::New(env, "the slot loop is still loading").Value());
        else deferred.Resolve(env.Undefined());
        return deferred.Promise();
    }
    disposed = true;
    if (core->cleanupHookAdded) {
        napi_remove_env_cleanup_hook(env, LoopCore::onEnvCleanup, core.get());
        core->cleanupHookAdded = false;
    }
    auto* worker = new DisposeWorker(env, this, info.This().As<Napi::Object>(), std::move(core));
    auto promise = worker->Promise();
    worker->Queue();
    return promise;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
    exports.Set("SlotLoop", SlotLoop::Define(env));
    exports.Set("systemInfo", Napi::Function::New(env, bora::systemInfo, "systemInfo"));
    return exports;
}

NODE_API_MODULE(bora_slot_loop, Init)
