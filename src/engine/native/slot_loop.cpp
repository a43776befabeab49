// The slot loop's N-API binding: argument checks, the hand-off of each step's events to JS (one
// ThreadSafeFunction call per step), and the loop's lifetime against Node's. The loop itself is
// slot_loop_core.h; sampling is slot_sampler.h; the prompt cache's marshalling is prompt_cache_napi.h.
//
// JS surface (wrapped by slotLoop.ts, the only caller):
//   new SlotLoop(modelPath, { threads, slots, contextSize, batchSize, gpuLayers, flashAttention?, nice?,
//                 promptCacheKiB?, promptCacheMinTokens? }, onStep)
//   load(): Promise<{ slots, contextSize, batchSize, threads, threadsBatch, vocabSize, gpuLayers }>
//   start(slot, jobId, prompt: Uint32Array, params)   queue a job on an idle slot
//   end(slot, jobId)                                  the job ends within one step (cancel / stop string)
//   trim(slot, length)                                drop an idle slot's cache after `length` tokens
//   slotTokens(slot): Uint32Array                     tokens in the slot's KV cache as of its last idle moment
//   commonPrefixes(prompt: Uint32Array): Int32Array   per slot, the leading prompt tokens its cache holds
//   slotStates(): { busy, cachedTokens, tokensDecoded }[]
//   threads(): { active, max, changes, governed, yieldAborts }   threads of the last decode (thread_governor.h)
//   retrieval(delta)                                  an embedding/rerank decode starts (+1) / ends (-1): the loop yields
//   vocabInfo() / tokenize / detokenize / tokenText / tokenAttributes / isEog   the model's vocabulary (vocabulary.ts)
//   cacheTask / takeCacheTask / cacheImport / cacheStats   the prompt cache (prompt_cache_napi.h)
//   dispose(): Promise<void>
// onStep(events) receives, once per step, an array of per-slot events:
//   { slot, jobId, tokens: Uint32Array, pieces: Uint8Array[], ends: boolean[], logprobs?: Float32Array,
//     top?: { ids: Uint32Array, logprobs: Float32Array, pieces: Uint8Array[] }[],
//     done?: "eog" | "length" | "ended" | "error", error?: string, errorKind?: "request" | "internal",
//     cachedPromptTokens, evaluatedTokens }
//   or { slot, trimmed: true } acknowledging a trim, or { slot, task } naming a finished cache task.

#include <napi.h>

#include <cstdio>
#include <cstring>

#include "ggml-backend.h"
#include "llama_backends.h"
#include "prompt_cache_napi.h"
#include "slot_loop_core.h"

namespace {

using namespace bora::slotloop;

struct LoopHandle;
void deliverStep(Napi::Env env, Napi::Function callback, LoopHandle* core, StepEvents* step);
using StepTsfn = Napi::TypedThreadSafeFunction<LoopHandle, StepEvents, deliverStep>;

// The core plus what only the binding knows: the hand-off to JS and whether it keeps the process alive.
struct LoopHandle : LoopCore {
    StepTsfn tsfn;
    bool tsfnCreated = false;
    bool tsfnReleased = false;
    // Jobs and trims JS still waits for (JS thread only): while any, the hand-off keeps the process alive.
    int32_t jsPending = 0;
    bool cleanupHookAdded = false;

    void holdProcess(Napi::Env env) {
        if (jsPending++ == 0 && tsfnCreated && !tsfnReleased) tsfn.Ref(env);
    }
    void releaseProcess(Napi::Env env) {
        if (jsPending > 0 && --jsPending == 0 && tsfnCreated && !tsfnReleased) tsfn.Unref(env);
    }
    // Node is tearing the environment down (process exit without dispose): the loop thread must not outlive it.
    static void onEnvCleanup(void* arg) { static_cast<LoopHandle*>(arg)->stopThread(); }
};

Napi::Uint8Array bytesOf(Napi::Env env, const std::string& text) {
    auto array = Napi::Uint8Array::New(env, text.size());
    if (!text.empty()) std::memcpy(array.Data(), text.data(), text.size());
    return array;
}

void deliverStep(Napi::Env env, Napi::Function callback, LoopHandle* core, StepEvents* step) {
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
                               InstanceMethod("commonPrefixes", &SlotLoop::CommonPrefixes),
                               InstanceMethod("slotStates", &SlotLoop::SlotStates),
                               InstanceMethod("threads", &SlotLoop::Threads),
                               InstanceMethod("retrieval", &SlotLoop::Retrieval),
                               InstanceMethod("vocabInfo", &SlotLoop::VocabInfo),
                               InstanceMethod("tokenize", &SlotLoop::Tokenize),
                               InstanceMethod("detokenize", &SlotLoop::Detokenize),
                               InstanceMethod("tokenText", &SlotLoop::TokenText),
                               InstanceMethod("tokenAttributes", &SlotLoop::TokenAttributes),
                               InstanceMethod("isEog", &SlotLoop::IsEog),
                               InstanceMethod("dispose", &SlotLoop::Dispose),
                               InstanceMethod("cacheTask", &SlotLoop::CacheTask),
                               InstanceMethod("takeCacheTask", &SlotLoop::TakeCacheTask),
                               InstanceMethod("cacheImport", &SlotLoop::CacheImport),
                               InstanceMethod("cacheStats", &SlotLoop::CacheStats),
                           });
    }

    explicit SlotLoop(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SlotLoop>(info), core(std::make_unique<LoopHandle>()) {
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
        const std::string flash = readChoice(env, options, "flashAttention", {"auto", "on", "off"}, "auto");
        core->flashAttention = flash == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED : flash == "off" ? LLAMA_FLASH_ATTN_TYPE_DISABLED : LLAMA_FLASH_ATTN_TYPE_AUTO;
        core->flashAttentionName = flash;
        const std::string kv = readChoice(env, options, "kvCacheType", {"f16", "q8_0", "q4_0"}, "f16");
        core->kvType = kv == "q8_0" ? GGML_TYPE_Q8_0 : kv == "q4_0" ? GGML_TYPE_Q4_0 : GGML_TYPE_F16;
        core->kvTypeName = kv;
        onStep = Napi::Persistent(info[2].As<Napi::Function>());
    }

    ~SlotLoop() override {
        if (!core) return;
        if (core->cleanupHookAdded) napi_remove_env_cleanup_hook(Env(), LoopHandle::onEnvCleanup, core.get());
        core->release();
        if (core->tsfnCreated) {
            core->tsfnReleased = true;
            core->tsfn.Release();
            (void)core.release();  // freed by the hand-off's finalizer
        }
    }

    std::unique_ptr<LoopHandle> core;
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

    // A string option that must be one of `choices` (absent: `fallback`).
    static std::string readChoice(Napi::Env env, const Napi::Object& options, const char* key, std::initializer_list<const char*> choices, const char* fallback) {
        const auto value = options.Get(key);
        if (value.IsUndefined()) return fallback;
        if (!value.IsString()) throw Napi::TypeError::New(env, std::string("option ") + key + " must be a string");
        const std::string text = value.As<Napi::String>().Utf8Value();
        for (const char* choice : choices) if (text == choice) return text;
        throw Napi::RangeError::New(env, std::string("option ") + key + " has an unknown value: " + text);
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

    void push(Command command) { core->push(std::move(command)); }

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
        core->requestEnd(slot, info[1].As<Napi::Number>().Uint32Value());
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

    std::shared_ptr<const std::vector<llama_token>> snapshotOf(const Slot& slot) { return core->snapshotOf(slot); }

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

    // commonPrefixes(prompt: Uint32Array): per slot, how many leading prompt tokens its published cache
    // holds (slot choice), without building a JS array of any cache.
    Napi::Value CommonPrefixes(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        requireCore(env);
        if (!loaded) throw Napi::Error::New(env, "the slot loop is not running");
        if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "commonPrefixes(prompt: Uint32Array) expected");
        const auto prompt = info[0].As<Napi::Uint32Array>();
        std::vector<llama_token> tokens(prompt.ElementLength());
        for (size_t i = 0; i < tokens.size(); i++) tokens[i] = static_cast<llama_token>(prompt[i]);
        const auto lengths = core->commonPrefixes(tokens.data(), tokens.size());
        auto result = Napi::Int32Array::New(env, lengths.size());
        for (size_t i = 0; i < lengths.size(); i++) result[i] = lengths[i];
        return result;
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

    // ---- the model's vocabulary, for the tokenizer endpoints and prompt rendering (no second vocabulary load).
    // llama.cpp's tokenizer only reads the vocabulary, so these run on the JS thread while the loop decodes,
    // as llama-server tokenizes on its HTTP threads.

    const llama_vocab* vocabArg(Napi::Env env) {
        requireCore(env);
        if (!loaded) throw Napi::Error::New(env, "the slot loop is not running");
        return core->vocab;
    }

    llama_token tokenArg(const Napi::CallbackInfo& info, size_t index) {
        if (info.Length() <= index || !info[index].IsNumber()) throw Napi::TypeError::New(info.Env(), "token id expected");
        const int64_t id = info[index].As<Napi::Number>().Int64Value();
        if (id < 0 || id >= core->nVocab) throw Napi::RangeError::New(info.Env(), "token id outside the vocabulary");
        return static_cast<llama_token>(id);
    }

    // vocabInfo(): { size, bos, eos, eot, sep, nl, addBos, addEos, type } (-1: none; bos/eos only when they are
    // control tokens, the others only when defined, as node-llama-cpp reads them).
    Napi::Value VocabInfo(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const llama_vocab* vocab = vocabArg(env);
        const auto control = [&](llama_token t) {
            if (t < 0) return -1;
            const auto attr = llama_vocab_get_attr(vocab, t);
            return (attr & LLAMA_TOKEN_ATTR_CONTROL) || (attr & LLAMA_TOKEN_ATTR_UNDEFINED) ? static_cast<int32_t>(t) : -1;
        };
        const auto defined = [&](llama_token t) {
            if (t < 0 || t == LLAMA_TOKEN_NULL) return -1;
            const auto attr = llama_vocab_get_attr(vocab, t);
            return (attr & LLAMA_TOKEN_ATTR_UNDEFINED) || (attr & LLAMA_TOKEN_ATTR_UNKNOWN) ? -1 : static_cast<int32_t>(t);
        };
        auto result = Napi::Object::New(env);
        result.Set("size", Napi::Number::New(env, core->nVocab));
        result.Set("bos", Napi::Number::New(env, control(llama_vocab_bos(vocab))));
        result.Set("eos", Napi::Number::New(env, control(llama_vocab_eos(vocab))));
        result.Set("eot", Napi::Number::New(env, defined(llama_vocab_eot(vocab))));
        result.Set("sep", Napi::Number::New(env, defined(llama_vocab_sep(vocab))));
        result.Set("nl", Napi::Number::New(env, defined(llama_vocab_nl(vocab))));
        result.Set("addBos", Napi::Boolean::New(env, llama_vocab_get_add_bos(vocab)));
        result.Set("addEos", Napi::Boolean::New(env, llama_vocab_get_add_eos(vocab)));
        result.Set("type", Napi::Number::New(env, static_cast<int32_t>(llama_vocab_type(vocab))));
        return result;
    }

    // tokenize(text, addSpecial, parseSpecial): Uint32Array — llama_tokenize.
    Napi::Value Tokenize(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const llama_vocab* vocab = vocabArg(env);
        if (info.Length() < 3 || !info[0].IsString()) throw Napi::TypeError::New(env, "tokenize(text, addSpecial, parseSpecial) expected");
        const std::string text = info[0].As<Napi::String>().Utf8Value();
        const bool addSpecial = info[1].ToBoolean().Value();
        const bool parseSpecial = info[2].ToBoolean().Value();
        if (text.size() > static_cast<size_t>(INT32_MAX) / 2) throw Napi::RangeError::New(env, "text too long to tokenize");
        std::vector<llama_token> tokens(text.size() + 2);
        int32_t n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(), static_cast<int32_t>(tokens.size()), addSpecial, parseSpecial);
        if (n < 0) {
            tokens.resize(static_cast<size_t>(-n));
            n = llama_tokenize(vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(), static_cast<int32_t>(tokens.size()), addSpecial, parseSpecial);
        }
        if (n < 0) throw Napi::Error::New(env, "tokenization failed");
        auto result = Napi::Uint32Array::New(env, static_cast<size_t>(n));
        for (int32_t i = 0; i < n; i++) result[static_cast<size_t>(i)] = static_cast<uint32_t>(tokens[static_cast<size_t>(i)]);
        return result;
    }

    // detokenize(ids: Uint32Array, unparseSpecial): string — llama_detokenize (special tokens spelled out when asked).
    Napi::Value Detokenize(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const llama_vocab* vocab = vocabArg(env);
        if (info.Length() < 2 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, "detokenize(ids: Uint32Array, unparseSpecial) expected");
        const auto ids = info[0].As<Napi::Uint32Array>();
        std::vector<llama_token> tokens(ids.ElementLength());
        for (size_t i = 0; i < tokens.size(); i++) {
            if (ids[i] >= static_cast<uint32_t>(core->nVocab)) throw Napi::RangeError::New(env, "token id outside the vocabulary");
            tokens[i] = static_cast<llama_token>(ids[i]);
        }
        const bool special = info[1].ToBoolean().Value();
        std::string text(tokens.size() * 8 + 16, '\0');
        int32_t n = llama_detokenize(vocab, tokens.data(), static_cast<int32_t>(tokens.size()), text.data(), static_cast<int32_t>(text.size()), false, special);
        if (n < 0) {
            text.resize(static_cast<size_t>(-n));
            n = llama_detokenize(vocab, tokens.data(), static_cast<int32_t>(tokens.size()), text.data(), static_cast<int32_t>(text.size()), false, special);
        }
        if (n < 0) throw Napi::Error::New(env, "detokenization failed");
        text.resize(static_cast<size_t>(n));
        return Napi::String::New(env, text);
    }

    // tokenText(id): the vocabulary's own text of a token (llama_vocab_get_text: a byte-level BPE piece as stored).
    Napi::Value TokenText(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const llama_vocab* vocab = vocabArg(env);
        const char* text = llama_vocab_get_text(vocab, tokenArg(info, 0));
        return Napi::String::New(env, text == nullptr ? "" : text);
    }

    Napi::Value TokenAttributes(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const llama_vocab* vocab = vocabArg(env);
        return Napi::Number::New(env, static_cast<int32_t>(llama_vocab_get_attr(vocab, tokenArg(info, 0))));
    }

    Napi::Value IsEog(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        const llama_vocab* vocab = vocabArg(env);
        return Napi::Boolean::New(env, llama_vocab_is_eog(vocab, tokenArg(info, 0)));
    }

    // threads(): { active, max, changes, governed } — what the last decode ran on (thread_governor.h).
    Napi::Value Threads(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        requireCore(env);
        auto result = Napi::Object::New(env);
        result.Set("active", Napi::Number::New(env, core->threadsActive.load()));
        result.Set("max", Napi::Number::New(env, core->threads));
        result.Set("changes", Napi::Number::New(env, core->threadChanges.load()));
        result.Set("governed", Napi::Boolean::New(env, loaded && core->governor.enabled()));
        result.Set("yieldAborts", Napi::Number::New(env, static_cast<double>(core->yieldAborts.load())));
        return result;
    }

    // retrieval(delta): an embedding or rerank decode starts (+1) or ends (-1); the loop gives it the cores.
    Napi::Value Retrieval(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        requireCore(env);
        if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "retrieval(delta) expected");
        const int32_t delta = info[0].As<Napi::Number>().Int32Value();
        if (delta != 1 && delta != -1) throw Napi::RangeError::New(env, "retrieval(delta): delta is 1 or -1");
        core->retrieval(delta);
        return env.Undefined();
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
                                  [](Napi::Env, void*, LoopHandle* finalized) { delete finalized; });
        // An idle loop must not keep the process alive; dispose() releases it for good.
        core.tsfn.Unref(env);
        core.tsfnCreated = true;
        core.deliver = [&core](StepEvents* step) {
            if (core.tsfn.NonBlockingCall(step) != napi_ok) delete step;
        };
        core.startThread();
        if (napi_add_env_cleanup_hook(env, LoopHandle::onEnvCleanup, &core) == napi_ok) core.cleanupHookAdded = true;
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
        result.Set("kvCacheType", Napi::String::New(env, core.kvTypeName));
        result.Set("flashAttention", Napi::String::New(env, core.flashAttentionName));
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
    DisposeWorker(Napi::Env env, SlotLoop* owner, Napi::Object self, std::unique_ptr<LoopHandle> core)
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
    std::unique_ptr<LoopHandle> core;
};

Napi::Value SlotLoop::Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto deferred = Napi::Promise::Deferred::New(env);
    if (!core || disposed || loaded || loading) {
        deferred.Reject(Napi::Error::New(env, "the slot loop is already loaded or disposed").Value());
        return deferred.Promise();
    }
    bora::ensureBackendsLoaded();
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
        napi_remove_env_cleanup_hook(env, LoopHandle::onEnvCleanup, core.get());
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
