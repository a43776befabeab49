// Shared by the two addons (batch_embed.cpp, slot_loop.cpp): finding the libllama this process loaded,
// registering ggml's backends when node-llama-cpp has not (a standalone test of an addon), systemInfo().
#pragma once

#include <napi.h>

#include <dlfcn.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "ggml-backend.h"
#include "llama.h"

namespace bora {

// Directory of the libllama that is actually loaded in this process (node-llama-cpp's bins dir).
inline std::string loadedLlamaLibraryDir() {
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&llama_model_load_from_file), &info) == 0 || info.dli_fname == nullptr) return "";
    std::string file(info.dli_fname);
    const auto slash = file.find_last_of('/');
    return slash == std::string::npos ? std::string(".") : file.substr(0, slash);
}

// Used only when node-llama-cpp has not initialised llama.cpp in this process (it installs its own
// logger): keep warnings and errors, drop llama.cpp's verbose info/debug output.
inline void quietLog(enum ggml_log_level level, const char* text, void* /*userData*/) {
    static enum ggml_log_level lastLevel = GGML_LOG_LEVEL_INFO;
    if (level != GGML_LOG_LEVEL_CONT) lastLevel = level;
    if (lastLevel == GGML_LOG_LEVEL_WARN || lastLevel == GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
        fflush(stderr);
    }
}

// node-llama-cpp's getLlama() registers the ggml backends of the binding it chose (the CPU variants are
// separate shared objects loaded at run time); only when nobody did, load them from the directory of
// the libllama this addon is linked to.
inline void ensureBackendsLoaded() {
    if (ggml_backend_dev_count() > 0) return;
    llama_log_set(quietLog, nullptr);
    llama_backend_init();
    const std::string dir = loadedLlamaLibraryDir();
    if (!dir.empty()) ggml_backend_load_all_from_path(dir.c_str());
    if (ggml_backend_dev_count() == 0) ggml_backend_load_all();
}

// A persistent CPU threadpool for one context, as llama.cpp's own tools attach one: its threads live as
// long as the context instead of being started and joined inside every llama_decode (the default when
// none is attached). `poll` is ggml's polling level after a graph: 0 sleeps at once, 50 (llama.cpp's
// default) spins a while for the next one. Threads inherit the creating thread's nice value, so create
// the pool on the thread that will run the decodes, after setting its priority. On a build with
// OpenMP the pool only carries the thread count (OpenMP's team does the work) and this changes
// nothing. Without a CPU backend (or its entry points) nothing is attached.
class CpuThreadpool {
   public:
    CpuThreadpool() = default;
    CpuThreadpool(const CpuThreadpool&) = delete;
    CpuThreadpool& operator=(const CpuThreadpool&) = delete;
    ~CpuThreadpool() { release(); }

    bool attach(llama_context* ctx, int32_t threads, uint32_t poll) {
        release();
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        if (cpu == nullptr) return false;
        ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(cpu);
        auto* create = reinterpret_cast<ggml_threadpool_t (*)(ggml_threadpool_params*)>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_new"));
        freePool = reinterpret_cast<void (*)(ggml_threadpool_t)>(ggml_backend_reg_get_proc_address(reg, "ggml_threadpool_free"));
        if (create == nullptr || freePool == nullptr) return false;
        ggml_threadpool_params params = ggml_threadpool_params_default(threads);
        params.poll = poll;
        pool = create(&params);
        if (pool == nullptr) return false;
        llama_attach_threadpool(ctx, pool, pool);
        attachedTo = ctx;
        return true;
    }

    // Call before llama_free of the context it is attached to.
    void release() {
        if (pool == nullptr) return;
        if (attachedTo != nullptr) llama_detach_threadpool(attachedTo);
        freePool(pool);
        pool = nullptr;
        attachedTo = nullptr;
    }

   private:
    ggml_threadpool_t pool = nullptr;
    llama_context* attachedTo = nullptr;
    void (*freePool)(ggml_threadpool_t) = nullptr;
};

// The addons' `systemInfo()`: which backends are registered and which libllama serves them.
inline Napi::Value systemInfo(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto result = Napi::Object::New(env);
    result.Set("backendDevices", Napi::Number::New(env, static_cast<double>(ggml_backend_dev_count())));
    result.Set("llamaLibraryDir", Napi::String::New(env, loadedLlamaLibraryDir()));
    result.Set("llamaSystemInfo", Napi::String::New(env, llama_print_system_info()));
    return result;
}

}  // namespace bora
