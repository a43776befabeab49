// Batched embedding addon for the service.
//
// node-llama-cpp's embedding context decodes one text per llama_decode and reads the pooled vector of
// sequence 0 only. This addon links against the very same libllama that node-llama-cpp's prebuilt
// binaries ship (same llama.cpp release, headers taken from the bundled source) and packs many texts
// into ONE llama_decode, each text being its own sequence id, then reads every sequence's pooled vector
// with llama_get_embeddings_seq (the same approach llama-server uses for /embeddings).
//
// JS surface (wrapped by batchEmbedder.ts, which is the only intended caller):
//   new BatchEmbedder(modelPath: string, { threads, maxSequences, batchTokens, maxTokensPerText?, gpuLayers, flashAttention?, pooling? })
//   load(): Promise<{ dimension, trainContextSize, poolingType, maxSequences, batchTokens, contextTokens, maxTokensPerText,
//                     hasMemory, special: { bos, eos, sep, addBos, addEos, addSep }, architecture, rerankTemplate }>
//
// Rank pooling (rerankers: a classification head over [CLS], or qwen3's last token) works the same way: each
// query+document pair is one sequence, many pairs share one llama_decode, and each sequence's pooled
// output is its n_cls_out scores (dimension = n_cls_out; score = element 0, as llama-server reads it).
//   lastStats(): { texts, tokens, decodes, packMs, decodeMs, readMs, returnMs }   (the last embed call's phases)
//
// batchTokens is how many tokens one decode packs; it never limits a text: the context holds the longest
// text the model reads (maxTokensPerText, default its trained context) and a longer text than
// batchTokens is decoded alone. So no batch setting can cut a text shorter or change its vector.
//   tokenize(text: string, addSpecial = true, parseSpecial = true): Uint32Array
//                                                  (embeddings: true/true; rerank pairs are assembled in JS from
//                                                   false/false pieces, as llama-server's format_prompt_rerank does)
//   embed(tokens: Uint32Array, lengths: Uint32Array): Promise<Float32Array>   (flat, lengths.length * dimension)
//   dispose(): Promise<void>
//
// Concurrency: one operation (load/embed/dispose) at a time per instance; an overlapping call is rejected
// with an Error (the TypeScript wrapper queues calls so this never happens in practice). The heavy work
// never runs on the JS thread: each operation is a Napi::AsyncWorker whose Execute hands it to the
// embedder's own compute thread and waits. One thread for every decode, as llama-server's loop, keeps
// ggml's (or OpenMP's) worker team on one owner: run straight on whichever libuv worker was free, one
// short text took a median 19 ms to decode against 8 ms from one thread (24 tokens, 2 cores).

#include <napi.h>

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ggml-backend.h"
#include "llama.h"
#include "llama_backends.h"

namespace {

// Where the time of one embed() call went (the embedder's own per-phase timers, read with lastStats()).
struct EmbedStats {
    int32_t texts = 0;
    int32_t tokens = 0;
    int32_t decodes = 0;
    double packMs = 0;    // filling llama_batch
    double decodeMs = 0;  // llama_decode (the model itself)
    double readMs = 0;    // llama_get_embeddings_seq + copy into the output
    double returnMs = 0;  // handing the vectors to JS (on the JS thread)
};

double msSince(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// One long-lived thread that runs the embedder's work items one at a time; `run` blocks its caller (a
// libuv worker) until the item is done.
class ComputeThread {
   public:
    ComputeThread() : thread([this] { loop(); }) {}
    ~ComputeThread() {
        {
            std::lock_guard<std::mutex> lock(mutex);
            stopping = true;
        }
        wake.notify_all();
        thread.join();
    }
    ComputeThread(const ComputeThread&) = delete;
    ComputeThread& operator=(const ComputeThread&) = delete;

    void run(const std::function<void()>& work) {
        std::unique_lock<std::mutex> lock(mutex);
        idle.wait(lock, [&] { return item == nullptr; });
        item = &work;
        done = false;
        wake.notify_all();
        idle.wait(lock, [&] { return done; });
        item = nullptr;
        idle.notify_all();
    }

   private:
    void loop() {
        std::unique_lock<std::mutex> lock(mutex);
        for (;;) {
            wake.wait(lock, [&] { return stopping || (item != nullptr && !done); });
            if (stopping) return;
            const auto* work = item;
            lock.unlock();
            try {
                (*work)();  // the work items report their own errors; nothing may end this thread
            } catch (...) {
            }
            lock.lock();
            done = true;
            idle.notify_all();
        }
    }

    std::mutex mutex;
    std::condition_variable wake;
    std::condition_variable idle;
    const std::function<void()>* item = nullptr;
    bool done = false;
    bool stopping = false;
    std::thread thread;  // last: started after the fields above exist
};

struct EmbedderCore {
    // configuration
    std::string modelPath;
    int32_t threads = 1;
    int32_t requestedSequences = 1;
    int32_t requestedBatchTokens = 512;
    int32_t requestedTextTokens = 0;  // 0: the model's trained context
    int32_t gpuLayers = 0;
    enum llama_flash_attn_type flashAttention = LLAMA_FLASH_ATTN_TYPE_AUTO;
    enum llama_pooling_type requestedPooling = LLAMA_POOLING_TYPE_UNSPECIFIED;  // unspecified: the model's own

    // runtime
    llama_model* model = nullptr;
    llama_context* ctx = nullptr;
    const llama_vocab* vocab = nullptr;
    llama_batch batch{};
    bool batchAllocated = false;
    bora::CpuThreadpool threadpool;
    bool hasMemory = false;
    enum llama_pooling_type pooling = LLAMA_POOLING_TYPE_UNSPECIFIED;
    int32_t dimension = 0;
    int32_t trainContextSize = 0;
    int32_t nVocab = 0;
    int32_t maxSequences = 0;      // effective, from the created context
    int32_t batchTokens = 0;       // tokens packed into one llama_decode (a longer text goes alone)
    int32_t contextTokens = 0;     // n_ctx = n_batch = n_ubatch: the most tokens one decode can hold
    int32_t maxTokensPerText = 0;  // the model's limit: requestedTextTokens capped at trainContextSize

    void release() {
        if (batchAllocated) {
            llama_batch_free(batch);
            batch = llama_batch{};
            batchAllocated = false;
        }
        threadpool.release();
        if (ctx != nullptr) {
            llama_free(ctx);
            ctx = nullptr;
        }
        if (model != nullptr) {
            llama_model_free(model);
            model = nullptr;
        }
        vocab = nullptr;
    }
};

const char* poolingName(enum llama_pooling_type type) {
    switch (type) {
        case LLAMA_POOLING_TYPE_NONE: return "none";
        case LLAMA_POOLING_TYPE_MEAN: return "mean";
        case LLAMA_POOLING_TYPE_CLS: return "cls";
        case LLAMA_POOLING_TYPE_LAST: return "last";
        case LLAMA_POOLING_TYPE_RANK: return "rank";
        default: return "unspecified";
    }
}

bool poolingFromName(const std::string& name, enum llama_pooling_type& out) {
    if (name == "none") out = LLAMA_POOLING_TYPE_NONE;
    else if (name == "mean") out = LLAMA_POOLING_TYPE_MEAN;
    else if (name == "cls") out = LLAMA_POOLING_TYPE_CLS;
    else if (name == "last") out = LLAMA_POOLING_TYPE_LAST;
    else if (name == "rank") out = LLAMA_POOLING_TYPE_RANK;
    else return false;
    return true;
}

using bora::ensureBackendsLoaded;

class LoadWorker;
class EmbedWorker;
class DisposeWorker;

class BatchEmbedder : public Napi::ObjectWrap<BatchEmbedder> {
   public:
    static Napi::Function Define(Napi::Env env) {
        return DefineClass(env, "BatchEmbedder",
                           {
                               InstanceMethod("load", &BatchEmbedder::Load),
                               InstanceMethod("tokenize", &BatchEmbedder::Tokenize),
                               InstanceMethod("embed", &BatchEmbedder::Embed),
                               InstanceMethod("dispose", &BatchEmbedder::Dispose),
                               InstanceMethod("lastStats", &BatchEmbedder::LastStats),
                           });
    }

    explicit BatchEmbedder(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BatchEmbedder>(info) {
        Napi::Env env = info.Env();
        if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject()) {
            throw Napi::TypeError::New(env, "BatchEmbedder(modelPath: string, options: object) expected");
        }
        core.modelPath = info[0].As<Napi::String>().Utf8Value();
        const auto options = info[1].As<Napi::Object>();
        core.threads = readPositiveInt(env, options, "threads", 1, 1024);
        core.requestedSequences = readPositiveInt(env, options, "maxSequences", 1, 256);
        core.requestedBatchTokens = readPositiveInt(env, options, "batchTokens", 1, 1 << 20);
        if (!options.Get("maxTokensPerText").IsUndefined()) {
            core.requestedTextTokens = readPositiveInt(env, options, "maxTokensPerText", 1, 1 << 20);
        }
        const auto gpu = options.Get("gpuLayers");
        if (gpu.IsNumber()) core.gpuLayers = gpu.As<Napi::Number>().Int32Value();
        const auto pooling = options.Get("pooling");
        if (pooling.IsString()) {
            const std::string name = pooling.As<Napi::String>().Utf8Value();
            if (!poolingFromName(name, core.requestedPooling)) {
                throw Napi::RangeError::New(env, "option pooling must be one of none, mean, cls, last, rank");
            }
        }
        const auto flash = options.Get("flashAttention");
        if (flash.IsBoolean()) {
            core.flashAttention = flash.As<Napi::Boolean>().Value() ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
        }
    }

    ~BatchEmbedder() override {
        // Finalizer: a running worker holds a reference to this object, so no work can be in flight here.
        core.release();
    }

    EmbedderCore core;
    ComputeThread compute;
    EmbedStats lastStats;
    bool busy = false;
    bool loaded = false;
    bool disposed = false;

   private:
    static int32_t readPositiveInt(Napi::Env env, const Napi::Object& options, const char* key, int32_t min, int32_t max) {
        const auto value = options.Get(key);
        if (!value.IsNumber()) throw Napi::TypeError::New(env, std::string("option ") + key + " must be a number");
        const double number = value.As<Napi::Number>().DoubleValue();
        if (!(number >= min && number <= max) || number != static_cast<double>(static_cast<int64_t>(number))) {
            throw Napi::RangeError::New(env, std::string("option ") + key + " must be an integer in [" + std::to_string(min) + ", " +
                                                 std::to_string(max) + "]");
        }
        return static_cast<int32_t>(number);
    }

    Napi::Value Rejected(Napi::Env env, const std::string& message) {
        auto deferred = Napi::Promise::Deferred::New(env);
        deferred.Reject(Napi::Error::New(env, message).Value());
        return deferred.Promise();
    }

    Napi::Value Load(const Napi::CallbackInfo& info);
    Napi::Value Embed(const Napi::CallbackInfo& info);
    Napi::Value Dispose(const Napi::CallbackInfo& info);

    Napi::Value LastStats(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        auto result = Napi::Object::New(env);
        result.Set("texts", Napi::Number::New(env, lastStats.texts));
        result.Set("tokens", Napi::Number::New(env, lastStats.tokens));
        result.Set("decodes", Napi::Number::New(env, lastStats.decodes));
        result.Set("packMs", Napi::Number::New(env, lastStats.packMs));
        result.Set("decodeMs", Napi::Number::New(env, lastStats.decodeMs));
        result.Set("readMs", Napi::Number::New(env, lastStats.readMs));
        result.Set("returnMs", Napi::Number::New(env, lastStats.returnMs));
        return result;
    }

    Napi::Value Tokenize(const Napi::CallbackInfo& info) {
        Napi::Env env = info.Env();
        if (disposed) throw Napi::Error::New(env, "BatchEmbedder is disposed");
        if (!loaded) throw Napi::Error::New(env, "BatchEmbedder is not loaded");
        if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "tokenize(text: string, addSpecial?, parseSpecial?) expected");
        const std::string text = info[0].As<Napi::String>().Utf8Value();
        const bool addSpecial = info.Length() < 2 || !info[1].IsBoolean() || info[1].As<Napi::Boolean>().Value();
        const bool parseSpecial = info.Length() < 3 || !info[2].IsBoolean() || info[2].As<Napi::Boolean>().Value();
        if (text.size() > static_cast<size_t>(INT32_MAX)) throw Napi::RangeError::New(env, "text is too long to tokenize");

        // Defaults as llama-server for embeddings: add_special = true ([CLS] ... [SEP] for WordPiece),
        // parse_special = true. The vocabulary is read-only, so this is safe while a decode runs.
        std::vector<llama_token> tokens(text.size() + 8);
        int32_t n = llama_tokenize(core.vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                                   static_cast<int32_t>(tokens.size()), addSpecial, parseSpecial);
        if (n == INT32_MIN) throw Napi::RangeError::New(env, "tokenization result is too large");
        if (n < 0) {
            tokens.resize(static_cast<size_t>(-n));
            n = llama_tokenize(core.vocab, text.data(), static_cast<int32_t>(text.size()), tokens.data(),
                               static_cast<int32_t>(tokens.size()), addSpecial, parseSpecial);
            if (n < 0) throw Napi::Error::New(env, "llama_tokenize failed");
        }
        auto result = Napi::Uint32Array::New(env, static_cast<size_t>(n));
        for (int32_t i = 0; i < n; i++) result[static_cast<size_t>(i)] = static_cast<uint32_t>(tokens[static_cast<size_t>(i)]);
        return result;
    }
};

class LoadWorker : public Napi::AsyncWorker {
   public:
    LoadWorker(Napi::Env env, BatchEmbedder* owner, Napi::Object self)
        : Napi::AsyncWorker(env, "bora.batchEmbed.load"),
          owner(owner),
          selfRef(Napi::Persistent(self)),
          deferred(Napi::Promise::Deferred::New(env)) {}

    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        owner->compute.run([this] {
            try {
                run();
            } catch (const std::exception& e) {
                owner->core.release();
                SetError(std::string("failed to load the embedding model: ") + e.what());
            } catch (...) {
                owner->core.release();
                SetError("failed to load the embedding model");
            }
        });
    }

    void OnOK() override {
        owner->busy = false;
        owner->loaded = true;
        Napi::Env env = Env();
        const auto& core = owner->core;
        auto result = Napi::Object::New(env);
        result.Set("dimension", Napi::Number::New(env, core.dimension));
        result.Set("trainContextSize", Napi::Number::New(env, core.trainContextSize));
        result.Set("poolingType", Napi::String::New(env, poolingName(core.pooling)));
        result.Set("maxSequences", Napi::Number::New(env, core.maxSequences));
        result.Set("batchTokens", Napi::Number::New(env, core.batchTokens));
        result.Set("contextTokens", Napi::Number::New(env, core.contextTokens));
        result.Set("maxTokensPerText", Napi::Number::New(env, core.maxTokensPerText));
        result.Set("hasMemory", Napi::Boolean::New(env, core.hasMemory));
        // What a rerank pair is built from (llama-server's format_prompt_rerank); -1 = the vocabulary has none.
        auto special = Napi::Object::New(env);
        special.Set("bos", Napi::Number::New(env, llama_vocab_bos(core.vocab)));
        special.Set("eos", Napi::Number::New(env, llama_vocab_eos(core.vocab)));
        special.Set("sep", Napi::Number::New(env, llama_vocab_sep(core.vocab)));
        special.Set("addBos", Napi::Boolean::New(env, llama_vocab_get_add_bos(core.vocab)));
        special.Set("addEos", Napi::Boolean::New(env, llama_vocab_get_add_eos(core.vocab)));
        special.Set("addSep", Napi::Boolean::New(env, llama_vocab_get_add_sep(core.vocab)));
        result.Set("special", special);
        char arch[64] = {0};
        const int32_t archLength = llama_model_meta_val_str(core.model, "general.architecture", arch, sizeof(arch));
        result.Set("architecture", Napi::String::New(env, archLength > 0 ? arch : ""));
        const char* rerankTemplate = llama_model_chat_template(core.model, "rerank");
        result.Set("rerankTemplate", rerankTemplate == nullptr ? env.Null() : Napi::String::New(env, rerankTemplate));
        deferred.Resolve(result);
    }

    void OnError(const Napi::Error& error) override {
        owner->busy = false;
        deferred.Reject(error.Value());
    }

   private:
    void fail(const std::string& message) {
        owner->core.release();
        SetError(message);
    }

    void run() {
        auto& core = owner->core;

        auto modelParams = llama_model_default_params();
        modelParams.n_gpu_layers = core.gpuLayers;
        core.model = llama_model_load_from_file(core.modelPath.c_str(), modelParams);
        if (core.model == nullptr) return fail("failed to load the model file " + core.modelPath);

        if (llama_model_has_encoder(core.model) && llama_model_has_decoder(core.model)) {
            return fail("encoder-decoder models are not supported for embeddings");
        }

        // The longest text the model reads must fit into one decode whatever batchTokens says.
        const int32_t trained = llama_model_n_ctx_train(core.model);
        int32_t textLimit = core.requestedTextTokens > 0 ? core.requestedTextTokens : (trained > 0 ? trained : core.requestedBatchTokens);
        if (trained > 0) textLimit = std::min(textLimit, trained);

        // llama_context's worst-case graph reservation rounds n_ubatch up to a multiple of n_seq_max but
        // keeps n_outputs = n_ubatch; with pooling that builds a graph whose shapes do not match and
        // GGML_ASSERT(ggml_can_mul_mat) aborts the process (e.g. n_seq_max = 3, n_ubatch = 2048). So the
        // context size is rounded UP to a multiple of the sequence count.
        const int32_t sequences = std::min(core.requestedSequences, core.requestedBatchTokens);
        const int32_t needed = std::max(core.requestedBatchTokens, textLimit);
        const int32_t budget = (needed + sequences - 1) / sequences * sequences;

        auto ctxParams = llama_context_default_params();
        ctxParams.embeddings = true;
        ctxParams.pooling_type = core.requestedPooling;  // unspecified: the model's own pooling type
        // Non-causal (BERT-like) models must see each whole sequence inside one ubatch, and llama.cpp
        // encodes such batches in a single shot, so n_ctx = n_batch = n_ubatch.
        ctxParams.n_ctx = static_cast<uint32_t>(budget);
        ctxParams.n_batch = static_cast<uint32_t>(budget);
        ctxParams.n_ubatch = static_cast<uint32_t>(budget);
        ctxParams.n_seq_max = static_cast<uint32_t>(sequences);
        ctxParams.n_threads = core.threads;
        ctxParams.n_threads_batch = core.threads;
        // For models with a KV cache (causal embedding models): let every sequence use the whole cache
        // instead of n_ctx / n_seq_max cells each.
        ctxParams.kv_unified = true;
        ctxParams.no_perf = true;
        ctxParams.flash_attn_type = core.flashAttention;

        core.ctx = llama_init_from_model(core.model, ctxParams);
        if (core.ctx == nullptr) return fail("failed to create the embedding context");
        // Created here, on the compute thread that runs every decode. No polling: between requests the
        // threads sleep instead of spinning on cores a running generation needs.
        core.threadpool.attach(core.ctx, core.threads, 0);

        core.pooling = llama_pooling_type(core.ctx);

        core.vocab = llama_model_get_vocab(core.model);
        core.nVocab = llama_vocab_n_tokens(core.vocab);
        core.hasMemory = llama_get_memory(core.ctx) != nullptr;
        if (core.pooling == LLAMA_POOLING_TYPE_RANK) {
            // a reranker's pooled output is its classification head: n_cls_out scores per sequence
            core.dimension = static_cast<int32_t>(llama_model_n_cls_out(core.model));
        } else {
            core.dimension = llama_model_n_embd_out(core.model);
            if (core.dimension <= 0) core.dimension = llama_model_n_embd(core.model);
        }
        core.trainContextSize = llama_model_n_ctx_train(core.model);

        const auto nBatch = static_cast<int32_t>(std::min(llama_n_batch(core.ctx), llama_n_ubatch(core.ctx)));
        core.contextTokens = std::min(nBatch, budget);
        core.batchTokens = std::min(core.requestedBatchTokens, core.contextTokens);
        core.maxSequences = std::min(static_cast<int32_t>(llama_n_seq_max(core.ctx)), sequences);
        core.maxTokensPerText = textLimit;
        if (core.dimension <= 0 || core.batchTokens <= 0 || core.maxSequences <= 0) {
            return fail("the created context has unusable parameters");
        }
        if (core.contextTokens < textLimit) {
            return fail("the context holds " + std::to_string(core.contextTokens) + " tokens, fewer than the " + std::to_string(textLimit) +
                        " tokens of the longest text the model reads");
        }

        core.batch = llama_batch_init(core.contextTokens, 0, 1);
        core.batchAllocated = true;
    }

    BatchEmbedder* owner;
    Napi::ObjectReference selfRef;  // keeps the wrapper alive while the worker runs
    Napi::Promise::Deferred deferred;
};

class EmbedWorker : public Napi::AsyncWorker {
   public:
    EmbedWorker(Napi::Env env, BatchEmbedder* owner, Napi::Object self, std::vector<llama_token>&& tokens,
                std::vector<int32_t>&& lengths)
        : Napi::AsyncWorker(env, "bora.batchEmbed.embed"),
          owner(owner),
          selfRef(Napi::Persistent(self)),
          deferred(Napi::Promise::Deferred::New(env)),
          tokens(std::move(tokens)),
          lengths(std::move(lengths)) {}

    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        owner->compute.run([this] {
            try {
                run();
            } catch (const std::exception& e) {
                SetError(std::string("batched embedding failed: ") + e.what());
            } catch (...) {
                SetError("batched embedding failed");
            }
        });
    }

    void OnOK() override {
        owner->busy = false;
        Napi::Env env = Env();
        const auto started = std::chrono::steady_clock::now();
        auto result = Napi::Float32Array::New(env, output.size());
        if (!output.empty()) std::memcpy(result.Data(), output.data(), output.size() * sizeof(float));
        stats.returnMs = msSince(started);
        owner->lastStats = stats;
        deferred.Resolve(result);
    }

    void OnError(const Napi::Error& error) override {
        owner->busy = false;
        deferred.Reject(error.Value());
    }

   private:
    void run() {
        auto& core = owner->core;
        const size_t count = lengths.size();
        const size_t dim = static_cast<size_t>(core.dimension);
        output.assign(count * dim, 0.0f);

        llama_memory_t memory = core.hasMemory ? llama_get_memory(core.ctx) : nullptr;
        llama_batch& batch = core.batch;
        std::vector<int32_t> lastIndex(static_cast<size_t>(core.maxSequences));

        stats.texts = static_cast<int32_t>(count);
        size_t next = 0;        // next text to place
        size_t tokenOffset = 0;  // offset of that text in `tokens`
        while (next < count) {
            auto phase = std::chrono::steady_clock::now();
            // Greedily pack texts in input order: <= maxSequences sequences and <= batchTokens tokens; a
            // text longer than batchTokens (<= maxTokensPerText <= contextTokens) is decoded alone.
            const size_t first = next;
            int32_t used = 0;
            batch.n_tokens = 0;
            while (next < count && static_cast<int32_t>(next - first) < core.maxSequences &&
                   (next == first ? lengths[next] <= core.contextTokens : used + lengths[next] <= core.batchTokens)) {
                const auto seq = static_cast<llama_seq_id>(next - first);
                const int32_t length = lengths[next];
                for (int32_t p = 0; p < length; p++) {
                    const int32_t i = batch.n_tokens;
                    batch.token[i] = tokens[tokenOffset + static_cast<size_t>(p)];
                    batch.pos[i] = p;
                    batch.n_seq_id[i] = 1;
                    batch.seq_id[i][0] = seq;
                    batch.logits[i] = 1;  // pooled embeddings need every token as output
                    batch.n_tokens++;
                }
                lastIndex[static_cast<size_t>(seq)] = batch.n_tokens - 1;
                used += length;
                tokenOffset += static_cast<size_t>(length);
                next++;
            }
            if (next == first) {
                // validated on the JS thread; guard anyway so we never submit an oversized batch
                SetError("text " + std::to_string(first) + " does not fit into one batch");
                return;
            }

            if (memory != nullptr) llama_memory_clear(memory, false);
            stats.packMs += msSince(phase);
            stats.tokens += batch.n_tokens;
            stats.decodes++;

            phase = std::chrono::steady_clock::now();
            const int32_t status = llama_decode(core.ctx, batch);
            stats.decodeMs += msSince(phase);
            if (status != 0) {
                if (memory != nullptr) llama_memory_clear(memory, false);
                SetError("llama_decode failed with status " + std::to_string(status));
                return;
            }

            phase = std::chrono::steady_clock::now();
            for (size_t s = 0; s < next - first; s++) {
                const float* embedding = core.pooling == LLAMA_POOLING_TYPE_NONE
                                             ? llama_get_embeddings_ith(core.ctx, lastIndex[s])
                                             : llama_get_embeddings_seq(core.ctx, static_cast<llama_seq_id>(s));
                if (embedding == nullptr) {
                    SetError("no embedding was produced for text " + std::to_string(first + s));
                    return;
                }
                std::memcpy(output.data() + (first + s) * dim, embedding, dim * sizeof(float));
            }
            stats.readMs += msSince(phase);
        }
        if (memory != nullptr) llama_memory_clear(memory, false);
    }

    BatchEmbedder* owner;
    Napi::ObjectReference selfRef;
    Napi::Promise::Deferred deferred;
    std::vector<llama_token> tokens;
    std::vector<int32_t> lengths;
    std::vector<float> output;
    EmbedStats stats;
};

class DisposeWorker : public Napi::AsyncWorker {
   public:
    DisposeWorker(Napi::Env env, BatchEmbedder* owner, Napi::Object self)
        : Napi::AsyncWorker(env, "bora.batchEmbed.dispose"),
          owner(owner),
          selfRef(Napi::Persistent(self)),
          deferred(Napi::Promise::Deferred::New(env)) {}

    Napi::Promise Promise() { return deferred.Promise(); }

    void Execute() override {
        owner->compute.run([this] { owner->core.release(); });
    }

    void OnOK() override {
        owner->busy = false;
        deferred.Resolve(Env().Undefined());
    }

    void OnError(const Napi::Error& error) override {
        owner->busy = false;
        deferred.Reject(error.Value());
    }

   private:
    BatchEmbedder* owner;
    Napi::ObjectReference selfRef;
    Napi::Promise::Deferred deferred;
};

Napi::Value BatchEmbedder::Load(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (disposed) return Rejected(env, "BatchEmbedder is disposed");
    if (loaded) return Rejected(env, "BatchEmbedder is already loaded");
    if (busy) return Rejected(env, "BatchEmbedder is busy: another operation is in progress");
    ensureBackendsLoaded();
    if (ggml_backend_dev_count() == 0) return Rejected(env, "no ggml backend device is available");
    busy = true;
    auto* worker = new LoadWorker(env, this, info.This().As<Napi::Object>());
    auto promise = worker->Promise();
    worker->Queue();
    return promise;
}

Napi::Value BatchEmbedder::Embed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (disposed) return Rejected(env, "BatchEmbedder is disposed");
    if (!loaded) return Rejected(env, "BatchEmbedder is not loaded");
    if (busy) return Rejected(env, "BatchEmbedder is busy: another operation is in progress");
    if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsTypedArray()) {
        return Rejected(env, "embed(tokens: Uint32Array, lengths: Uint32Array) expected");
    }
    const auto tokenArray = info[0].As<Napi::TypedArray>();
    const auto lengthArray = info[1].As<Napi::TypedArray>();
    if (tokenArray.TypedArrayType() != napi_uint32_array || lengthArray.TypedArrayType() != napi_uint32_array) {
        return Rejected(env, "embed(tokens: Uint32Array, lengths: Uint32Array) expected");
    }
    const auto tokenView = tokenArray.As<Napi::Uint32Array>();
    const auto lengthView = lengthArray.As<Napi::Uint32Array>();
    const size_t count = lengthView.ElementLength();
    if (count == 0) return Rejected(env, "embed() needs at least one text");

    std::vector<int32_t> lengths(count);
    size_t total = 0;
    for (size_t i = 0; i < count; i++) {
        const uint32_t length = lengthView[i];
        if (length == 0) return Rejected(env, "text " + std::to_string(i) + " has no tokens");
        if (length > static_cast<uint32_t>(core.maxTokensPerText)) {
            return Rejected(env, "text " + std::to_string(i) + " has " + std::to_string(length) + " tokens, more than the maximum of " +
                                     std::to_string(core.maxTokensPerText) + " tokens per text");
        }
        lengths[i] = static_cast<int32_t>(length);
        total += length;
    }
    if (total != tokenView.ElementLength()) return Rejected(env, "the token count does not match the sum of the lengths");

    std::vector<llama_token> tokens(total);
    for (size_t i = 0; i < total; i++) {
        const uint32_t token = tokenView[i];
        if (token >= static_cast<uint32_t>(core.nVocab)) {
            return Rejected(env, "token id " + std::to_string(token) + " is outside the vocabulary (" + std::to_string(core.nVocab) + ")");
        }
        tokens[i] = static_cast<llama_token>(token);
    }

    busy = true;
    auto* worker = new EmbedWorker(env, this, info.This().As<Napi::Object>(), std::move(tokens), std::move(lengths));
    auto promise = worker->Promise();
    worker->Queue();
    return promise;
}

Napi::Value BatchEmbedder::Dispose(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (busy) return Rejected(env, "BatchEmbedder is busy: another operation is in progress");
    if (disposed) {
        auto deferred = Napi::Promise::Deferred::New(env);
        deferred.Resolve(env.Undefined());
        return deferred.Promise();
    }
    disposed = true;
    busy = true;
    auto* worker = new DisposeWorker(env, this, info.This().As<Napi::Object>());
    auto promise = worker->Promise();
    worker->Queue();
    return promise;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
    exports.Set("BatchEmbedder", BatchEmbedder::Define(env));
    exports.Set("systemInfo", Napi::Function::New(env, bora::systemInfo, "systemInfo"));
    return exports;
}

NODE_API_MODULE(bora_batch_embed, Init)
